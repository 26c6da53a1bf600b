"""stec-audio sound event detection end to end: frame embeddings against HEAR, task=sed on
generated ESC-50 and manifest layouts with planted events, the demo set, and errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from stec.engine.export import export_backbone
from stec_audio import hear
from stec_audio.cli import main
from stec_audio.data.frontend import FrontEndConfig, NormStats
from stec_audio.data.io import load_audio
from stec_audio.encoders import AudioNTT2020
from tests.audio_data.conftest import make_esc50

SR = 16000
FAST = ["trainer.progress=false", "trainer.num_workers=0", "data.prepared=prep"]
TONES = {"beep": 1000.0, "whistle": 3000.0}


pytestmark = pytest.mark.usefixtures("isolated")


def planted_corpus(root, n_clips=20, seconds=2.0):
    """ESC-50 layout: ``n_clips`` clips of faint noise with 1-2 tone bursts each (a 1 kHz
    beep, a 3 kHz whistle, 0.25-0.5 s), and their strong labels in ``meta/strong.tsv``."""
    g = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    meta, strong = ["filename,fold,target,category,esc10,src_file,take"], []
    t = np.arange(int(seconds * SR)) / SR
    for i in range(n_clips):
        name = f"{i % 5 + 1}-{100 + i}-A-{i % 2}.wav"
        wave = 0.005 * g.standard_normal(t.size)
        for label, start in (("beep", g.uniform(0.1, 0.7)), ("whistle", g.uniform(0.9, 1.4))):
            if label == "whistle" and i % 3 == 0:
                continue  # some clips hold one event only
            length = g.uniform(0.25, 0.5)
            on = (t >= start) & (t < start + length)
            wave[on] += 0.3 * np.sin(2 * np.pi * TONES[label] * t[on])
            strong.append(f"{name}\t{start:.3f}\t{start + length:.3f}\t{label}\n")
        sf.write(root / "audio" / name, wave.astype(np.float32), SR, subtype="PCM_16")
        meta.append(f"{name},{i % 5 + 1},{i % 2},{['a', 'b'][i % 2]},False,{100 + i},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(meta) + "\n")
    (root / "meta" / "strong.tsv").write_text(
        "filename\tonset\toffset\tevent_label\n" + "".join(strong)
    )
    return root


def sed_results(tmp_path, *args):
    out = tmp_path / f"sed{len(list(tmp_path.glob('sed*.json')))}.json"  # out= replaces no file
    assert main(["evaluate", "task=sed", f"out={out}", *FAST, *args]) == 0
    return json.loads(out.read_text())


def test_planted_events_in_esc50_layout_are_detected_by_the_logmel_floor(tmp_path):
    root = planted_corpus(tmp_path / "corpus")
    data = ["data=esc50", f"data.root={root}", "data.strong_labels=meta/strong.tsv"]
    results = sed_results(tmp_path, "checkpoint=logmel_stats", *data)
    assert results["classes"] == ["beep", "whistle"] and results["n_folds"] == 5
    assert results["frame_f1_mean"] > 0.9 and results["event_f1_mean"] > 0.9
    assert results["n_clips"] == 20 and results["n_events"] == 33 and results["feature_dim"] == 128
    assert results["head"]["kind"] == "linear" and results["hop_ms"] == pytest.approx(40.0)
    assert results["event_rule"]["onset_collar_s"] == 0.2
    assert results["event_rule"]["offset_collar_rate"] == 0.2
    temporal = sed_results(
        tmp_path, "checkpoint=logmel_stats", *data, "evaluate.sed.context_frames=1"
    )
    assert temporal["head"]["kind"] == "temporal" and temporal["head"]["context_frames"] == 1
    assert temporal["frame_f1_mean"] > 0.9


def test_a_manifest_with_a_train_eval_split_and_bare_names(tmp_path):
    root = planted_corpus(tmp_path / "corpus")
    rows = [
        f"audio/{p.name},{1 if i < 15 else 2}"
        for i, p in enumerate(sorted((root / "audio").iterdir()))
    ]
    (root / "list.csv").write_text("path,fold\n" + "\n".join(rows) + "\n")
    data = ["data=manifest", f"data.root={root / 'list.csv'}", "data.strong_labels=meta/strong.tsv"]
    results = sed_results(tmp_path, "checkpoint=logmel_stats", *data, "evaluate.sed.eval_folds=[2]")
    assert list(results["per_fold"]) == ["2"] and results["frame_f1_mean"] > 0.9
    assert results["split"] == "train on the other folds, evaluate on folds [2]"


def test_frame_embeddings_are_the_hear_timestamp_embeddings(tmp_path):
    files = {
        "1-001-A-0.wav": "pcm16_44k",
        "2-002-A-1.wav": "pcm16_22k",
        "3-003-A-0.wav": "half_second",
    }
    root = make_esc50(tmp_path / "ESC-50", files)
    encoder = AudioNTT2020(d=16)
    export = export_backbone(
        encoder,
        tmp_path / "exp",
        hear.audio_export_meta(encoder, FrontEndConfig(), NormStats(-2.0, 3.0)),
    )
    data = ["data=esc50", f"data.root={root}", f"checkpoint={export}", "frames=true", *FAST]
    assert main(["embed", *data, "out=frames.parquet"]) == 0
    assert main(["embed", *data, "out=frames.npy"]) == 0
    table = pd.read_parquet(tmp_path / "frames.parquet")
    stored = np.load(tmp_path / "frames.npy", allow_pickle=True).item()
    model = hear.load_model(str(export))
    for name in files:
        rows = table[table["id"] == name]
        audio = torch.from_numpy(load_audio(root / "audio" / name, SR))[None]
        expected, timestamps = hear.get_timestamp_embeddings(audio, model)
        assert rows["frame"].tolist() == list(range(expected.shape[1]))
        assert rows["timestamp_ms"].tolist() == timestamps[0].tolist()
        assert (rows["hop_ms"] == 40.0).all() and rows["label"].iloc[0] == name[-5]
        assert np.allclose(np.stack(rows["embedding"]), expected[0].numpy(), atol=1e-5)
        in_npy = stored["ids"] == name
        assert np.allclose(stored["embeddings"][in_npy], expected[0].numpy(), atol=1e-5)
        assert stored["timestamps_ms"][in_npy].tolist() == timestamps[0].tolist()
    assert stored["hop_ms"] == 40.0 and len(stored["ids"]) == len(table) == 24 + 24 + 11


def test_demo_sed_for_the_floors_beside_the_clip_evaluation(tmp_path):
    demo = ["data.n_per_class=3", "encoder.kwargs.d=32", "evaluate.embed_batch_size=8", *FAST]
    for floor, dim in (("random", 32), ("logmel_stats", 128)):
        assert main(["evaluate", "task=sed", f"checkpoint={floor}", *demo]) == 0
        results = json.loads((tmp_path / f"runs/audio/{floor}-demo/sed/results.json").read_text())
        assert results["checkpoint"] == floor and results["feature_dim"] == dim
        assert results["classes"] == ["beep_event", "chirp_event", "knock_event"]
        assert results["n_clips"] == 30 and results["n_events"] == 9
        assert 0.0 <= results["frame_f1_mean"] <= 1.0 and 0.0 <= results["event_f1_mean"] <= 1.0
    # the default task is still the clip-level probe, in its own results file
    assert main(["evaluate", "checkpoint=random", *demo, "data.labels=[]"]) == 0
    clip = json.loads((tmp_path / "runs/audio/random-demo/results.json").read_text())
    assert "accuracy_mean" in clip and "frame_f1_mean" not in clip
    # with_sed: the same SED evaluation, beside the clip-level tasks in one results file
    # (elsewhere: the folder holds both evaluations already, and they are kept)
    args = ["evaluate", "checkpoint=random", *demo, "evaluate.with_sed=true", "out=both.json"]
    assert main(args) == 0
    both = json.loads((tmp_path / "both.json").read_text())
    sed = json.loads((tmp_path / "sed/both.json").read_text())
    assert {"class", "pitch_register", "loudness_band", "sed_frame_f1", "sed_event_f1"} <= set(
        both["tasks"]
    )
    assert both["tasks"]["sed_frame_f1"]["per_fold"] == sed["per_fold"]
    assert both["tasks"]["sed_event_f1"]["f1_mean"] == sed["event_f1_mean"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["data=esc50", "data.root={root}"], "task=sed needs strong labels: data.strong_labels=PATH"),
        (["data=esc50", "data.root={root}", "data.strong_labels=nope.tsv"], "nope.tsv: strong-label file not found"),
        (["data=esc50", "data.root={root}", "data.strong_labels=meta/overlap.tsv"],
         "overlap.tsv: rows 2 and 3: two 'beep' events of one clip overlap"),
        (["data=esc50", "data.root={root}", "data.strong_labels=meta/late.tsv"],
         "late.tsv: row 2: the event ends at 2.5 s, past the end of '1-100-A-0.wav' (2 s)"),
        (["task=segment"], "task='segment' is not valid; allowed values: clip, sed"),
        (["evaluate.sed.context_frames=-2"], "evaluate.sed.context_frames=-2 is not valid: expected an integer >= 0"),
    ],
)  # fmt: skip
def test_sed_input_errors_are_one_line_naming_key_file_and_row(tmp_path, capsys, args, message):
    root = planted_corpus(tmp_path / "corpus", n_clips=5)
    (root / "meta" / "overlap.tsv").write_text(
        "filename\tonset\toffset\tevent_label\n1-100-A-0.wav\t0.1\t0.5\tbeep\n"
        "1-100-A-0.wav\t0.4\t0.6\tbeep\n"
    )
    (root / "meta" / "late.tsv").write_text(
        "filename\tonset\toffset\tevent_label\n1-100-A-0.wav\t1.5\t2.5\tbeep\n"
    )
    args = [a.format(root=root) for a in args]
    assert main(["evaluate", "task=sed", "checkpoint=logmel_stats", *args, *FAST]) == 2
    assert message in capsys.readouterr().err
