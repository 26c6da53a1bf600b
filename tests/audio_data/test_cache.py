"""The float16 log-mel cache: decode once, resume, and never serve an item for other audio."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from stec_audio.data.cache import LogMelStore, prepare_cache
from stec_audio.data.datasets import LogMelClipDataset, esc50_entries
from stec_audio.data.frontend import FrontEndConfig
from stec_audio.data.io import TooManyBadFiles

from .conftest import BAD, GOOD, write_kind


def cached_dataset(index, folder, **kwargs):
    return LogMelClipDataset(index, clip_seconds=1.0, cache_dir=folder, **kwargs)


def test_cache_round_trip_equals_on_the_fly_logmels(esc50_dir, tmp_path):
    index = esc50_entries(esc50_dir)
    ds = cached_dataset(index, tmp_path / "c")
    report = prepare_cache(ds, workers=2, progress=False)
    assert (report.n_clips, report.n_cached, report.n_new, report.n_reused) == (16, 10, 10, 0)
    assert report.n_bad == len(BAD) and "silent" in report.bad_summary
    bad_lines = (tmp_path / "c" / "bad_files.tsv").read_text().splitlines()
    assert sorted(line.rsplit("\t", 1)[1].rsplit("/", 1)[1] for line in bad_lines) == sorted(BAD)
    live = LogMelClipDataset(index, clip_seconds=1.0)
    reader = cached_dataset(index, tmp_path / "c")
    reader.load = None  # every usable clip comes from the cache: nothing is decoded
    for i in range(len(index)):
        if index.id(i) not in GOOD:
            continue
        x, label, k = reader[i]
        x_live, label_live, _ = live[i]
        assert k == i and label == label_live and x.dtype == torch.float16
        # float16 keeps the raw log-mels to about 1e-2 (values of magnitude up to 16)
        assert torch.allclose(x.float(), x_live, atol=2e-2)
        assert (x.float() - x_live).abs().max() > 0  # really read from float16


def test_resume_skips_done_clips(esc50_dir, tmp_path):
    index = esc50_entries(esc50_dir)
    prepare_cache(cached_dataset(index, tmp_path / "c"), workers=0, progress=False)
    store = LogMelStore(tmp_path / "c", FrontEndConfig(), 1.0)
    items = {
        index.id(i): store.item_path(store.key(index.id(i), index.path(i)))
        for i in range(len(index))
    }
    done = {k: p.stat().st_mtime_ns for k, p in items.items() if p.exists()}
    assert len(done) == len(GOOD)
    removed = sorted(done)[0]
    items[removed].unlink()
    report = prepare_cache(cached_dataset(index, tmp_path / "c"), workers=0, progress=False)
    assert (report.n_new, report.n_reused, report.n_cached) == (1, len(GOOD) - 1, len(GOOD))
    for k, stamp in done.items():
        if k != removed:
            assert items[k].stat().st_mtime_ns == stamp
    assert report.n_bad == len(BAD)  # failed clips are tried again (a fixed file gets in)
    again = prepare_cache(cached_dataset(index, tmp_path / "c"), workers=0, progress=False)
    assert (again.n_new, again.n_reused) == (0, len(GOOD))


def test_an_item_is_only_served_for_the_file_it_was_made_from(esc50_dir, tmp_path):
    root = tmp_path / "esc"
    shutil.copytree(esc50_dir, root)
    index = esc50_entries(root)
    prepare_cache(cached_dataset(index, tmp_path / "c"), workers=0, progress=False)
    i = next(j for j in range(len(index)) if index.id(j) == "1-001-A-0.wav")
    before = cached_dataset(index, tmp_path / "c")[i][0].float()
    # the file is replaced in place by another sound (same name, new content and time)
    write_kind(root / "audio" / "1-001-A-0.wav", "pcm16_44k", 2500.0)
    stat = os.stat(root / "audio" / "1-001-A-0.wav")
    os.utime(root / "audio" / "1-001-A-0.wav", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = cached_dataset(index, tmp_path / "c")[i][0].float()
    fresh = LogMelClipDataset(index, clip_seconds=1.0)[i][0]
    assert not torch.allclose(before, after, atol=0.5)
    assert torch.allclose(after, fresh, atol=2e-2)
    # the same clip id under another root is another file: another item
    other = LogMelStore(tmp_path / "c", FrontEndConfig(), 1.0)
    assert other.key("1-001-A-0.wav", str(esc50_dir / "audio" / "1-001-A-0.wav")) != other.key(
        "1-001-A-0.wav", str(root / "audio" / "1-001-A-0.wav")
    )


def test_cache_refuses_another_configuration(esc50_dir, tmp_path):
    index = esc50_entries(esc50_dir)
    prepare_cache(cached_dataset(index, tmp_path / "c"), workers=0, progress=False)
    with pytest.raises(ValueError, match="different configuration.*clip_seconds"):
        LogMelClipDataset(index, clip_seconds=2.0, cache_dir=tmp_path / "c")
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["frontend"]["n_mels"] == 64 and config["dtype"] == "float16"
    assert config["version"] == 2 and "not normalised" in config["values"]
    with pytest.raises(ValueError, match="cache_dir"):
        prepare_cache(LogMelClipDataset(index, clip_seconds=1.0), progress=False)


def test_dataset_reads_through_and_writes_the_cache(esc50_dir, tmp_path):
    index = esc50_entries(esc50_dir)
    ds = cached_dataset(index, tmp_path / "w")
    first = [ds[i] for i in range(len(ds))]
    assert len(list((tmp_path / "w" / "items").rglob("*.npy"))) == len(GOOD)
    ds2 = cached_dataset(index, tmp_path / "w")
    ds2.load = None  # decoding is not needed for cached clips
    for i, item in enumerate(first):
        if item is not None:
            # the first read returns what the cache holds: both epochs see the same values
            assert torch.equal(item[0], ds2[i][0]) and item[0].dtype == torch.float16
    report = prepare_cache(cached_dataset(index, tmp_path / "w"), workers=0, progress=False)
    assert report.n_new == 0 and report.n_reused == len(GOOD)
    assert np.isfinite(np.load(next((tmp_path / "w" / "items").rglob("*.npy")))).all()


def test_prepare_stops_when_most_files_are_bad(mostly_bad_dir, tmp_path):
    with pytest.raises(TooManyBadFiles, match="cannot decode audio"):
        prepare_cache(cached_dataset(esc50_entries(mostly_bad_dir), tmp_path / "c"), workers=0, progress=False)  # fmt: skip


def test_an_index_without_clips_fills_nothing(esc50_dir, tmp_path):
    index = esc50_entries(esc50_dir).subset(np.array([], dtype=np.int64))
    report = prepare_cache(cached_dataset(index, tmp_path / "c"), workers=0, progress=False)
    assert (report.n_clips, report.n_cached, report.n_new, report.n_bad) == (0, 0, 0, 0)
