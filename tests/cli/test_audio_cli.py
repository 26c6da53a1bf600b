"""stec-audio end to end on generated data in the real layouts (ESC-50 with bad files,
AudioSet with missing clips, the demo set), plus config errors and HEAR on the export."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from stec.engine.checkpoint import load_checkpoint
from stec_audio import hear
from stec_audio.cli import main
from stec_audio.frontend import NormStats
from tests.audio_data.conftest import ABSENT, BAD, GOOD, make_esc50
from tests.audio_data.test_audioset import short_wav, write_labels, write_segments

TINY = [
    "encoder.kwargs.d=32", "method.proj_hidden=32", "method.proj_dim=16",
    "efference.inverse_hidden=32", "efference.action_embed_dim=8", "augment.mixup.n_memory=16",
    "trainer.batch_size=4", "trainer.max_steps=3", "trainer.num_workers=0",
    "trainer.progress=false", "trainer.log_every=1", "trainer.warmup_steps=0",
    "evaluate.epochs=3", "evaluate.embed_batch_size=4",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STEC_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)


@pytest.fixture
def esc50(tmp_path):
    files = dict(GOOD)
    files.update({name: kind for name, (kind, _) in BAD.items()})
    return make_esc50(tmp_path / "ESC-50", files, [ABSENT])


def test_esc50_prepare_pretrain_resume_evaluate_embed(esc50, tmp_path, capsys):
    data = ["data=esc50", f"data.root={esc50}", "data.cache=true", "data.prepared=prep"]
    assert main(["prepare", *data, "trainer.num_workers=0", *TINY]) == 0
    out = capsys.readouterr().out
    assert "10 usable clips of 16" in out
    prepared = list((tmp_path / "prep").glob("esc50-*"))
    assert len(prepared) == 1 and len(list(prepared[0].glob("stats-*.json"))) == 1
    assert len(list((prepared[0] / "cache" / "items").rglob("*.npy"))) == 10
    run = ["run_dir=run", "method=simclr", "efference=both"]
    assert main(["pretrain", *data, *run, *TINY]) == 0
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["step"] == 3
    # resume=auto continues from the checkpoint up to the new budget
    assert main(["pretrain", *data, *run, *TINY, "trainer.max_steps=5", "trainer.resume=auto"]) == 0
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["step"] == 5
    assert main(["evaluate", *data, "checkpoint=run", *TINY]) == 0
    results = json.loads((tmp_path / "run/results.json").read_text())
    assert {"accuracy_mean", "accuracy_std", "per_fold"} <= set(results)
    assert len(results["per_fold"]) == 5 and results["n_clips"] == 10
    assert main(["embed", *data, "checkpoint=run", "out=emb.parquet", *TINY]) == 0
    frame = pd.read_parquet(tmp_path / "emb.parquet")
    assert len(frame) == 10 and len(frame["embedding"][0]) == 32
    # the export is what HEAR kits load
    model = hear.load_model(str(tmp_path / "run/export"))
    scene = hear.get_scene_embeddings(torch.randn(2, 16000) * 0.1, model)
    assert scene.shape == (2, model.scene_embedding_size)


def test_esc50_pretrain_without_prepare_reads_audio_and_reports_bad_files(esc50, tmp_path, capsys):
    data = ["data=esc50", f"data.root={esc50}", "data.prepared=prep2"]
    assert main(["pretrain", *data, "run_dir=r", "efference=inverse", *TINY]) == 0
    out = capsys.readouterr().out
    assert "1-011-A-0.wav" in out  # a corrupt file is named in the summary
    (stored,) = (tmp_path / "prep2").glob("esc50-*/stats-*.json")  # computed once, stored
    assert NormStats.load(tmp_path / "r/stats.json") == NormStats.load(stored)
    provenance = json.loads(stored.read_text())
    assert provenance["n_clips"] == 16 and provenance["root"] == str(esc50.resolve())
    meta = json.loads((tmp_path / "r/export/encoder.json").read_text())
    assert meta["norm"]["std"] > 0 and meta["frontend"]["n_mels"] == 64


def test_audioset_pretrain_and_map_evaluation_with_missing_clips(tmp_path, capsys):
    root = tmp_path / "AudioSet"
    rows = []
    for i in range(24):
        ytid = f"clip{i:07d}"
        rows.append((ytid, 0.0, [i % 3, 3 + i % 2]))
        if i % 4 != 0:  # a quarter of the listed clips is missing
            short_wav(root / "audio" / f"{ytid}.wav")
    write_segments(root / "balanced_train_segments.csv", rows[:16])
    write_segments(root / "eval_segments.csv", rows[16:])
    write_labels(root / "class_labels_indices.csv")
    data = [
        "data=audioset",
        f"data.root={root}",
        "data.cache=false",
        "data.clip_seconds=1.0",
        "augment.time_crop.frames=48",
    ]
    assert main(["pretrain", *data, "run_dir=as", *TINY]) == 0
    assert main(["evaluate", *data, "checkpoint=as", *TINY]) == 0
    results = json.loads((tmp_path / "as/results.json").read_text())
    assert results["metric"] == "map" and 0.0 <= results["map"] <= 1.0
    assert results["n_train"] == 12 and results["n_eval"] == 6


def test_demo_random_floor_and_embed_npy(tmp_path):
    demo = ["data.n_per_class=5", "data.prepared=prep"]
    assert main(["evaluate", "checkpoint=random", *demo, *TINY]) == 0
    results = json.loads((tmp_path / "runs/audio/random-demo/results.json").read_text())
    assert results["checkpoint"] == "random" and 0 <= results["accuracy_mean"] <= 1
    assert main(["embed", "checkpoint=random", "out=e.npy", *demo, *TINY]) == 0
    stored = np.load(tmp_path / "e.npy", allow_pickle=True).item()
    assert stored["embeddings"].shape[0] == len(stored["ids"]) == len(stored["labels"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["pretrain", "trainer.epochz=3"], "trainer.epochz"),
        (["pretrain", "method=moco"], "allowed values for method: byol, relic, simclr"),
        (
            ["pretrain", "efference=sideways"],
            "allowed values for efference: both, forward, inverse, off",
        ),
        (
            ["pretrain", "trainer.optimizer=adam"],
            "trainer.optimizer='adam' is not valid; allowed values: lars, sgd, adamw",
        ),
        (
            ["pretrain", "efference.inverse_input=head"],
            "efference.inverse_input='head' is not valid",
        ),
        (["pretrain", "augment.rrc.bogus=1"], "bogus"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["evaluate"], "checkpoint is required"),
    ],
)
def test_config_errors_name_the_key(args, message, capsys):
    assert main([*args, "data.n_per_class=2"]) == 2
    assert message in capsys.readouterr().err


def test_help_lists_commands_and_groups(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in (
        "pretrain",
        "evaluate",
        "embed",
        "prepare",
        "method",
        "efference",
        "data",
        "esc50",
        "audioset",
    ):
        assert word in out


def test_a_mostly_broken_dataset_stops_early_with_a_message(tmp_path, capsys):
    files = {f"{1 + i % 5}-{i:03d}-A-{i % 2}.wav": "corrupt" for i in range(24)}
    files.update({f"{1 + i % 5}-{i:03d}-A-{i % 2}.wav": "pcm16_44k" for i in range(24, 30)})
    root = make_esc50(tmp_path / "broken", files)
    assert main(["pretrain", "data=esc50", f"data.root={root}", "data.prepared=p", *TINY]) == 1
    err = capsys.readouterr().err
    assert "bad audio file(s) skipped" in err and "cannot decode audio" in err


def test_evaluate_with_a_missing_checkpoint_names_it(tmp_path, capsys):
    assert main(["evaluate", "checkpoint=nowhere", "data.n_per_class=2", *TINY]) == 2
    assert "nowhere" in capsys.readouterr().err


def _random_floor(tmp_path, folder, *args) -> dict:
    out = tmp_path / folder / "results.json"
    assert (
        main(["evaluate", "checkpoint=random", "data.prepared=prep", f"out={out}", *args, *TINY])
        == 0
    )
    return json.loads(out.read_text())


def test_two_corpora_with_the_same_name_never_share_prepared_data(tmp_path):
    # two ESC-50-layout corpora, prepared into the same folder one after the other
    first = make_esc50(
        tmp_path / "A", {f"{1 + i % 5}-{i:03d}-A-{i % 2}.wav": "pcm16_44k" for i in range(10)}
    )
    second = make_esc50(
        tmp_path / "B", {f"{1 + i % 5}-{i:03d}-A-{i % 2}.wav": "u8_16k" for i in range(10)}
    )
    shared_a = _random_floor(tmp_path, "a", "data=esc50", f"data.root={first}")
    shared_b = _random_floor(tmp_path, "b", "data=esc50", f"data.root={second}")
    assert len(list((tmp_path / "prep").glob("esc50-*"))) == 2
    stats = sorted((tmp_path / "prep").glob("esc50-*/stats-*.json"))
    assert len(stats) == 2 and NormStats.load(stats[0]) != NormStats.load(stats[1])
    # the second corpus scores exactly what it scores in a fresh folder
    shutil.rmtree(tmp_path / "prep")
    alone_b = _random_floor(tmp_path, "b2", "data=esc50", f"data.root={second}")
    assert alone_b["per_fold"] == shared_b["per_fold"]
    assert shared_a["n_clips"] == shared_b["n_clips"] == 10


def test_esc10_with_the_full_cache_present_reads_only_its_clips(tmp_path):
    demo = ["data.n_per_class=5"]
    assert main(["prepare", "data.prepared=prep", *demo, *TINY]) == 0
    full = _random_floor(tmp_path, "full", *demo)
    esc10 = _random_floor(tmp_path, "esc10", *demo, "data.esc10=true")
    assert full["n_clips"] == 50 and esc10["n_clips"] == 25  # the first 5 classes
    assert (
        main(
            [
                "embed",
                "checkpoint=random",
                "data.prepared=prep",
                "data.esc10=true",
                "out=e.npy",
                *demo,
                *TINY,
            ]
        )
        == 0
    )
    stored = np.load(tmp_path / "e.npy", allow_pickle=True).item()
    assert sorted(set(stored["labels"].tolist())) == [0, 1, 2, 3, 4]
    # the ESC-10 statistics are its own, next to the full set's
    assert len(list((tmp_path / "prep").glob("demo-*/stats-*.json"))) == 2


def test_audioset_random_floor_is_evaluated_on_the_eval_list(tmp_path):
    root = tmp_path / "AudioSet"
    rows = [(f"clip{i:07d}", 0.0, [i % 3, 3 + i % 2]) for i in range(20)]
    for ytid, _, _ in rows:
        short_wav(root / "audio" / f"{ytid}.wav")
    write_segments(root / "balanced_train_segments.csv", rows[:14])
    write_segments(root / "eval_segments.csv", rows[14:])
    write_labels(root / "class_labels_indices.csv")
    data = [
        "data=audioset",
        f"data.root={root}",
        "data.clip_seconds=1.0",
        "augment.time_crop.frames=48",
    ]
    results = _random_floor(tmp_path, "as", *data)
    assert results["n_train"] == 14 and results["n_eval"] == 6
