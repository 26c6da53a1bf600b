"""What stec-audio evaluates of a manifest or a folder: clips listed but absent, clips
without a label, data of one class (each named, counted or refused in one line)."""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from stec_audio.cli import main
from tests.audio_data.conftest import tone
from tests.cli.test_audio_cli import TINY

pytestmark = pytest.mark.usefixtures("isolated")


def manifest_rows(folder, n: int, label=lambda i: i % 2) -> list[str]:
    """``n`` clips of two tones written to ``folder``, and their manifest's rows (a header,
    then ``clips/c<i>.wav,<label(i)>,<fold>``)."""
    folder.mkdir()
    rows = ["path,label,fold"]
    for i in range(n):
        sf.write(folder / f"c{i}.wav", tone(300.0 + 900 * (i % 2), 16000), 16000)
        rows.append(f"{folder.name}/c{i}.wav,{label(i)},{1 + i % 5}")
    return rows


def test_manifest_clips_listed_but_absent_are_named_in_the_summary(tmp_path, capsys):
    rows = manifest_rows(tmp_path / "clips", 10)
    rows += ["clips/gone_a.wav,0,1", "clips/gone_b.wav,1,2"]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    data = ["data=manifest", f"data.root={tmp_path / 'list.csv'}", "data.prepared=prep"]
    assert main(["evaluate", "checkpoint=random", *data, *TINY]) == 0
    out = capsys.readouterr().out
    assert "2 listed clip(s) have no audio file: clips/gone_a.wav, clips/gone_b.wav" in out
    assert (
        json.loads((tmp_path / "runs/audio/random-manifest/results.json").read_text())["n_clips"]
        == 10
    )


def test_manifest_clips_without_a_label_are_left_out_of_the_probe_and_named(tmp_path, capsys):
    # unlabelled clips are data for pretraining; the class probe leaves them out, says so,
    # and scores the labelled ones as it would without them
    rows = manifest_rows(tmp_path / "clips", 12, label=lambda i: "" if i >= 10 else i % 2)
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "labelled.csv").write_text("\n".join(rows[:11]) + "\n")
    common = ["checkpoint=random", "data=manifest", "data.prepared=prep", *TINY]
    assert main(["evaluate", *common, "data.root=list.csv", "out=all.json"]) == 0
    out = capsys.readouterr().out
    assert (
        "2 clip(s) have no class label and are left out of the probe: clips/c10.wav, clips/c11.wav"
        in out
    )
    assert main(["evaluate", *common, "data.root=labelled.csv", "out=labelled.json"]) == 0
    every, labelled = (
        json.loads((tmp_path / f).read_text()) for f in ("all.json", "labelled.json")
    )
    assert every["n_clips"] == 12 and every["n_labelled"] == 10 and labelled["n_clips"] == 10
    assert every["per_fold"] == labelled["per_fold"]
    assert every["knn_accuracy_mean"] == labelled["knn_accuracy_mean"]
    # no label at all: one line, nothing written
    (tmp_path / "bare.csv").write_text("path\n" + "\n".join(r.split(",")[0] for r in rows[1:]))
    assert main(["evaluate", *common, "data.root=bare.csv", "out=bare.json"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no clip has a class label" in error[0], error
    assert "label column" in error[0] and not (tmp_path / "bare.json").exists()


def test_evaluating_data_of_one_class_is_one_line_not_a_perfect_score(tmp_path, capsys):
    # every clip in one class folder: any probe scores 1.0, whatever the features
    folder = tmp_path / "clips" / "birds"
    folder.mkdir(parents=True)
    for i in range(6):
        sf.write(folder / f"c{i}.wav", tone(300.0 + 100 * i, 16000), 16000)
    data = ["data=folder", f"data.root={tmp_path / 'clips'}", "data.prepared=prep"]
    assert main(["evaluate", "checkpoint=random", *data, "out=r.json", *TINY]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        "stec-audio evaluate: error: the evaluated clips hold one class ('birds', 6 of them): "
        "a linear probe needs two or more, or it scores 1.0 whatever the features; give data "
        "of at least two classes (data=folder: one folder of clips per class)"
    ]
    assert not (tmp_path / "r.json").exists()
