from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stec_audio.cache import CachedLogMelDataset, LogMelStore, prepare_cache
from stec_audio.datasets import (
    LogMelClipDataset,
    collate_skip_bad,
    compute_norm_stats,
    esc50_entries,
)
from stec_audio.frontend import FrontEndConfig, NormStats
from stec_audio.io import TooManyBadFiles

from .conftest import BAD, GOOD


def test_cache_round_trip_equals_on_the_fly_logmels(esc50_dir, tmp_path):
    index = esc50_entries(esc50_dir)
    report = prepare_cache(index, tmp_path / "c", clip_seconds=1.0, workers=2, progress=False)
    assert (report.n_clips, report.n_cached, report.n_new, report.n_reused) == (16, 10, 10, 0)
    assert report.n_bad == len(BAD) and "silent" in report.bad_summary
    bad_lines = (tmp_path / "c" / "bad_files.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[1].rsplit("/", 1)[1] for line in bad_lines) == sorted(BAD)

    # The statistics were computed first, over the usable clips, and stored.
    raw = LogMelClipDataset(index, clip_seconds=1.0)
    stored = NormStats.load(tmp_path / "c" / "stats.json")
    assert stored == report.norm
    expected = compute_norm_stats(raw)
    assert stored.mean == pytest.approx(expected.mean, rel=1e-6)
    assert stored.std == pytest.approx(expected.std, rel=1e-6)

    cached = CachedLogMelDataset(tmp_path / "c")
    live = LogMelClipDataset(index, clip_seconds=1.0, norm=stored)
    assert len(cached) == len(GOOD) and cached.class_names == index.class_names
    assert cached.norm == stored and cached.num_frames == live.num_frames == 101
    live_by_id = {index.id(i): live[i] for i in range(len(index)) if live[i] is not None}
    for j in range(len(cached)):
        x, label, k = cached[j]
        assert k == j and x.dtype == torch.float32 and x.shape == (1, 64, 101)
        x_live, label_live, _ = live_by_id[cached.index.id(j)]
        assert label == label_live
        # float16 keeps about 3 significant digits of the normalised values.
        assert torch.allclose(x, x_live, atol=2e-2, rtol=1e-3)
        assert (x - x_live).abs().max() > 0  # really read from float16
    assert np.array_equal(
        cached.index.folds,
        index.subset([i for i in range(len(index)) if index.id(i) in live_by_id]).folds,
    )
    x, y, idx = collate_skip_bad([cached[0], cached[1]])
    assert x.shape == (2, 1, 64, 101) and y.dtype == torch.long


def test_resume_skips_done_clips(esc50_dir, tmp_path):
    index = esc50_entries(esc50_dir)
    norm = NormStats(-5.0, 4.0)
    prepare_cache(index, tmp_path / "c", clip_seconds=1.0, norm=norm, workers=0, progress=False)
    store = LogMelStore(tmp_path / "c", FrontEndConfig(), 1.0)
    items = {index.id(i): store.item_path(index.id(i)) for i in range(len(index))}
    done = {k: p.stat().st_mtime_ns for k, p in items.items() if p.exists()}
    assert len(done) == len(GOOD)
    removed = sorted(done)[0]
    items[removed].unlink()

    report = prepare_cache(index, tmp_path / "c", clip_seconds=1.0, workers=0, progress=False)
    assert (report.n_new, report.n_reused, report.n_cached) == (1, len(GOOD) - 1, len(GOOD))
    assert report.norm == norm  # the stored statistics are reused
    for k, stamp in done.items():
        if k != removed:
            assert items[k].stat().st_mtime_ns == stamp
    assert report.n_bad == len(BAD)  # failed clips are tried again (a fixed file gets in)
    again = prepare_cache(index, tmp_path / "c", clip_seconds=1.0, workers=0, progress=False)
    assert (again.n_new, again.n_reused) == (0, len(GOOD))


def test_cache_refuses_other_config_or_stats(esc50_dir, tmp_path):
    index = esc50_entries(esc50_dir)
    prepare_cache(
        index, tmp_path / "c", clip_seconds=1.0, norm=NormStats(0.0, 1.0), workers=0, progress=False
    )
    with pytest.raises(ValueError, match="different configuration.*clip_seconds"):
        prepare_cache(index, tmp_path / "c", clip_seconds=2.0, workers=0, progress=False)
    with pytest.raises(ValueError, match="normalised with"):
        prepare_cache(
            index,
            tmp_path / "c",
            clip_seconds=1.0,
            norm=NormStats(1.0, 2.0),
            workers=0,
            progress=False,
        )
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["frontend"]["n_mels"] == 64 and config["dtype"] == "float16"
    with pytest.raises(FileNotFoundError, match="not a finished log-mel cache"):
        CachedLogMelDataset(tmp_path / "nothing")


def test_dataset_reads_through_and_writes_the_cache(esc50_dir, tmp_path):
    index = esc50_entries(esc50_dir)
    with pytest.raises(ValueError, match="needs normalisation statistics"):
        LogMelClipDataset(index, clip_seconds=1.0, cache_dir=tmp_path / "w")
    norm = NormStats(-4.0, 3.0)
    ds = LogMelClipDataset(index, clip_seconds=1.0, norm=norm, cache_dir=tmp_path / "w")
    first = [ds[i] for i in range(len(ds))]
    assert len(list((tmp_path / "w" / "items").rglob("*.npy"))) == len(GOOD)
    # A new dataset on the same folder reads the stored statistics and the items.
    ds2 = LogMelClipDataset(index, clip_seconds=1.0, cache_dir=tmp_path / "w")
    assert ds2.norm == norm
    ds2.load = None  # decoding is not needed for cached clips
    for i, item in enumerate(first):
        if item is not None:
            x2 = ds2[i][0]
            assert torch.allclose(item[0], x2, atol=2e-2) and x2.dtype == torch.float32
    # The cache folder is also a valid prepare_cache folder: nothing left to convert.
    report = prepare_cache(index, tmp_path / "w", clip_seconds=1.0, workers=0, progress=False)
    assert report.n_new == 0 and len(CachedLogMelDataset(tmp_path / "w")) == len(GOOD)


def test_prepare_stops_when_most_files_are_bad(mostly_bad_dir, tmp_path):
    with pytest.raises(TooManyBadFiles, match="cannot decode audio"):
        prepare_cache(esc50_entries(mostly_bad_dir), tmp_path / "c", clip_seconds=1.0,
                      norm=NormStats(0.0, 1.0), workers=0, progress=False)  # fmt: skip
