"""Prepared data keyed to what it was made from, and the further label sets of a corpus,
through stec-audio on generated data in the real layouts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from stec.compose import compose_config
from stec_audio import app
from stec_audio.cli import main
from stec_audio.data.frontend import NormStats
from tests.audio_data.conftest import make_esc50
from tests.audio_data.test_audioset import short_wav, write_labels, write_segments
from tests.cli.test_audio_cli import TINY

pytestmark = pytest.mark.usefixtures("isolated")


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


def test_demo_evaluation_reports_every_label_set_and_the_action_probe(tmp_path, monkeypatch):
    import stec.augment

    # the probe's pairs: which clips come together (the loader's shuffle) and the actions
    # drawn for them must come from streams of their own, or a clip's place in the order
    # (the demo's clips are listed class by class) would decide its action
    seeds = {"order": set(), "actions": set()}

    class Loader(torch.utils.data.DataLoader):
        def __init__(self, *args, generator=None, **kwargs):
            if generator is not None:
                seeds["order"].add(generator.initial_seed())
            super().__init__(*args, generator=generator, **kwargs)

    two_views = stec.augment.TwoViews.__call__

    def views(self, *args, **kwargs):
        seeds["actions"].add(torch.initial_seed())
        return two_views(self, *args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", Loader)
    monkeypatch.setattr(stec.augment.TwoViews, "__call__", views)
    demo = ["data.n_per_class=6", "data.prepared=prep", "evaluate.action_probe=true"]
    results = _random_floor(tmp_path, "tasks", *demo)
    assert len(seeds["order"]) == len(seeds["actions"]) == 1
    assert seeds["order"] != seeds["actions"]
    tasks = results["tasks"]
    assert set(tasks) == {"class", "pitch_register", "loudness_band"}
    assert tasks["class"]["per_fold"] == results["per_fold"]  # the class is the top level
    # the pitch register is only defined for the 5 pitched classes
    assert tasks["class"]["n_clips"] == 60 and tasks["pitch_register"]["n_clips"] == 30
    probe = results["action_probe"]
    # the default composed map: its time and pitch shift, each with its majority rate
    targets = [f"{kind}/geometry.shift_{axis}" for kind in ("target_acc", "target_majority")
               for axis in "xy"]  # fmt: skip
    assert {"action_acc/geometry", "majority_acc/geometry", *targets} <= set(probe)
    assert all(0.0 <= v <= 1.0 for v in probe.values())
    assert main(["evaluate", "checkpoint=random", *demo, "data.labels=[tempo]", *TINY]) == 2


def test_only_rank_0_computes_the_statistics_and_the_others_read_them(tmp_path, monkeypatch):
    cfg = compose_config("audio", ["data.n_per_class=1", "data.prepared=prep", *TINY])
    index = app.build_index(cfg)
    dataset = app.clip_dataset(cfg, index)
    path = app.prepared_dir(cfg) / f"stats-{app.index_key(index)}.json"
    computed = []
    real = app.compute_norm_stats
    monkeypatch.setattr(
        app, "compute_norm_stats", lambda *a, **k: computed.append(1) or real(*a, **k)
    )
    # rank 1: rank 0 writes the statistics while the others wait at the barrier
    monkeypatch.setattr(app, "is_main", lambda: False)
    monkeypatch.setattr(app, "barrier", lambda: NormStats(1.5, 2.5).save(path))
    assert app.norm_stats(cfg, index, dataset) == NormStats(1.5, 2.5) and not computed
    # rank 0 computes them once, and every later call reads them
    path.unlink()
    monkeypatch.setattr(app, "is_main", lambda: True)
    monkeypatch.setattr(app, "barrier", lambda: None)
    stats = app.norm_stats(cfg, index, dataset)
    assert computed == [1] and NormStats.load(path) == stats
    assert app.norm_stats(cfg, index, dataset) == stats and computed == [1]
