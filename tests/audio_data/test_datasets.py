from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stec_audio.data.datasets import (
    ClipEntry,
    ClipIndex,
    InMemoryLogMels,
    LogMelClipDataset,
    collate_skip_bad,
    compute_norm_stats,
    esc50_entries,
    folder_entries,
    manifest_entries,
)
from stec_audio.data.frontend import FrontEndConfig, LogMel, LogMelNormalizer
from stec_audio.data.io import TooManyBadFiles, fit_length, load_audio

from .conftest import ABSENT, BAD, GOOD, make_esc50, write_kind


def test_esc50_index(esc50_dir):
    index = esc50_entries(esc50_dir)
    assert len(index) == len(GOOD) + len(BAD)
    assert index.missing == [ABSENT]
    assert index.class_names == ["low_tone", "high_tone"] and not index.multilabel
    entry = index[0]
    assert isinstance(entry, ClipEntry) and entry.path.is_file()
    assert entry.label == int(entry.id.split("-")[-1][0]) and entry.fold == int(entry.id[0])
    assert sorted(set(index.folds.tolist())) == [1, 2, 3, 4, 5]
    train, test = index.split_fold(3)
    assert len(train) + len(test) == len(index) and set(test.folds.tolist()) == {3}
    assert [e.id for e in test] == [e.id for e in index if e.fold == 3]
    esc10 = esc50_entries(esc50_dir, esc10=True)
    assert esc10.class_names == ["low_tone"] and set(esc10.targets().tolist()) == {0}


def test_esc50_errors_name_the_problem(tmp_path, esc50_dir):
    with pytest.raises(FileNotFoundError, match="audio"):
        esc50_entries(tmp_path)
    (tmp_path / "audio").mkdir()
    with pytest.raises(FileNotFoundError, match=r"meta/esc50\.csv"):
        esc50_entries(tmp_path)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("filename,fold,category\na.wav,1,dog\n")
    with pytest.raises(
        ValueError, match=r"missing column\(s\) \['target', 'esc10', 'src_file', 'take'\]"
    ):
        esc50_entries(tmp_path)
    (tmp_path / "meta" / "esc50.csv").write_text(
        "filename,fold,target,category,esc10,src_file,take\na.wav,one,0,dog,False,1,A\n"
    )
    with pytest.raises(ValueError, match="'fold' row 2 must be an integer, got 'one'"):
        esc50_entries(tmp_path)


def expected_logmel(path, seconds=1.0):
    wave = fit_length(load_audio(path), int(16000 * seconds))
    return LogMel(FrontEndConfig())(torch.from_numpy(wave))[0]


def test_logmel_dataset_items_and_bad_files(esc50_dir):
    index = esc50_entries(esc50_dir)
    ds = LogMelClipDataset(index, clip_seconds=1.0)
    assert ds.num_frames == 101
    items = [ds[i] for i in range(len(ds))]
    good = [it for it in items if it is not None]
    assert len(good) == len(GOOD)
    for x, label, i in good:
        assert x.shape == (1, 64, 101) and x.dtype == torch.float32 and torch.isfinite(x).all()
        assert label == index.label(i) and isinstance(label, int)
    x, _, i = good[0]
    assert torch.allclose(x, expected_logmel(index.path(i)), atol=1e-5)
    bad = {index.id(i) for i, it in enumerate(items) if it is None}
    assert bad == set(BAD)
    reasons = ds.bad_log.reasons()
    assert len(reasons) == len(BAD) and ds.bad_log.n_ok == len(GOOD)
    for path, reason in reasons.items():
        name = path.rsplit("/", 1)[-1]
        assert BAD[name][1] in reason
    assert "silent" in ds.bad_log.summary() and "3-013-A-0.wav" in ds.bad_log.summary()
    # Bad files are remembered: a second epoch does not decode them or count them twice.
    assert ds[next(iter(i for i, it in enumerate(items) if it is None))] is None
    assert ds.bad_log.n_bad == len(BAD)


def test_keep_silent_and_short_when_asked(esc50_dir):
    index = esc50_entries(esc50_dir)
    ds = LogMelClipDataset(index, clip_seconds=1.0, skip_silent=False, min_seconds=0.0)
    kept = {index.id(i) for i in range(len(ds)) if ds[i] is not None}
    assert {"3-013-A-0.wav", "5-015-A-0.wav"} <= kept


def test_collate_skip_bad_through_dataloader(esc50_dir):
    ds = LogMelClipDataset(esc50_entries(esc50_dir), clip_seconds=1.0)
    loader = DataLoader(ds, batch_size=6, num_workers=2, collate_fn=collate_skip_bad)
    seen = []
    for batch in loader:
        if batch is None:
            continue
        x, y, idx = batch
        assert (
            x.shape[1:] == (1, 64, 101) and y.dtype == torch.long and len(y) == len(idx) == len(x)
        )
        seen += idx.tolist()
    assert len(seen) == len(GOOD)
    # The worker processes' skipped files reach the main process's log.
    assert ds.bad_log.n_bad == len(BAD) and "5-016-A-1.wav" in ds.bad_log.summary()
    assert collate_skip_bad([None, None]) is None


def test_too_many_bad_files_stop_with_clear_error(mostly_bad_dir):
    ds = LogMelClipDataset(esc50_entries(mostly_bad_dir), clip_seconds=1.0)
    with pytest.raises(TooManyBadFiles, match=r"could not be used[\s\S]*cannot decode audio"):
        for i in range(len(ds)):
            ds[i]
    assert ds.bad_log.n_bad + ds.bad_log.n_ok == 20  # stopped at the 20th file
    with pytest.raises(TooManyBadFiles):
        compute_norm_stats(LogMelClipDataset(esc50_entries(mostly_bad_dir), clip_seconds=1.0))


def test_one_bad_file_of_three_does_not_stop(tmp_path):
    root = make_esc50(
        tmp_path, {"1-1-A-0.wav": "pcm16_44k", "2-2-A-1.wav": "corrupt", "3-3-A-0.wav": "u8_16k"}
    )
    ds = LogMelClipDataset(esc50_entries(root), clip_seconds=1.0)
    assert [ds[i] is None for i in range(3)] == [False, True, False]


def test_compute_norm_stats_matches_direct_computation(esc50_dir):
    index = esc50_entries(esc50_dir)
    ds = LogMelClipDataset(index, clip_seconds=1.0)
    stats = compute_norm_stats(ds)
    values = torch.cat(
        [expected_logmel(esc50_dir / "audio" / n).flatten().double() for n in sorted(GOOD)]
    )
    assert stats.mean == pytest.approx(values.mean().item(), rel=1e-5)
    assert stats.std == pytest.approx(values.std(unbiased=False).item(), rel=1e-5)
    normalise = LogMelNormalizer(stats)
    xs = torch.cat(
        [normalise(it[0]).flatten() for it in map(ds.__getitem__, range(len(index))) if it]
    )
    assert abs(xs.mean().item()) < 1e-3 and abs(xs.std().item() - 1) < 1e-3
    sub = compute_norm_stats(ds, max_items=4)
    assert sub != stats and sub.std > 0


def test_in_memory_dataset_holds_the_usable_clips(esc50_dir):
    index = esc50_entries(esc50_dir)
    source = LogMelClipDataset(index, clip_seconds=1.0)
    memory = InMemoryLogMels(source, workers=2)
    assert len(memory) == len(GOOD) and memory.data.dtype == torch.float16
    assert InMemoryLogMels.nbytes(source) == len(index) * 64 * 101 * 2
    assert sorted(memory.index.id(i) for i in range(len(memory))) == sorted(GOOD)
    assert memory.bad_log.n_bad == len(BAD)
    for i in range(len(memory)):
        x, label, k = memory[i]
        position = [j for j in range(len(index)) if index.id(j) == memory.index.id(i)][0]
        expected = expected_logmel(index.path(position))
        assert k == i and label == index.label(position) and x.shape == (1, 64, 101)
        assert torch.allclose(x.float(), expected, atol=1e-2)  # float16 of the raw log-mel


def test_manifest_string_int_and_multi_labels(tmp_path):
    (tmp_path / "clips").mkdir()
    for name in ("a", "b", "c"):
        write_kind(tmp_path / "clips" / f"{name}.wav", "pcm16_22k", 440.0)
    (tmp_path / "m.csv").write_text(
        "path,label,fold\nclips/a.wav,dog,1\nclips/b.wav,cat,2\n"
        f"{tmp_path / 'clips' / 'c.wav'},,\nclips/gone.wav,dog,1\n"
    )
    index = manifest_entries(tmp_path / "m.csv")
    assert index.class_names == ["cat", "dog"] and not index.multilabel
    assert [e.label for e in index] == [1, 0, None] and [e.fold for e in index] == [1, 2, None]
    assert index.missing == ["clips/gone.wav"] and index[0].path == tmp_path / "clips" / "a.wav"
    ds = LogMelClipDataset(index, clip_seconds=1.0)
    assert ds[2][1] == -1

    (tmp_path / "n.csv").write_text("path,label\nclips/a.wav,3\nclips/b.wav,0\n")
    index = manifest_entries(tmp_path / "n.csv")
    assert index.class_names == ["0", "1", "2", "3"] and index.targets().tolist() == [3, 0]

    (tmp_path / "ml.csv").write_text(
        "path,label\nclips/a.wav,dog;cat\nclips/b.wav,bird\nclips/c.wav,\n"
    )
    index = manifest_entries(tmp_path / "ml.csv")
    assert index.multilabel and index.class_names == ["bird", "cat", "dog"]
    assert index.targets().tolist() == [[0, 1, 1], [1, 0, 0], [0, 0, 0]]
    x, y, i = LogMelClipDataset(index, clip_seconds=1.0)[0]
    assert y.dtype == torch.float32 and y.tolist() == [0, 1, 1]
    batch = collate_skip_bad([LogMelClipDataset(index, clip_seconds=1.0)[j] for j in range(3)])
    assert batch[1].shape == (3, 3)

    (tmp_path / "bad.csv").write_text("file,label\nclips/a.wav,dog\n")
    with pytest.raises(ValueError, match=r"bad\.csv: missing column\(s\) \['path'\]"):
        manifest_entries(tmp_path / "bad.csv")


def test_folder_entries_classes_and_flat(tmp_path):
    for cls in ("dog", "cat"):
        (tmp_path / "lab" / cls / "sub").mkdir(parents=True)
        write_kind(tmp_path / "lab" / cls / "x.wav", "pcm16_22k", 440.0)
        write_kind(tmp_path / "lab" / cls / "sub" / "y.flac", "flac_16k", 440.0)
    (tmp_path / "lab" / "notes.txt").write_text("not audio")
    index = folder_entries(tmp_path / "lab")
    assert index.class_names == ["cat", "dog"] and len(index) == 4
    assert {e.id: e.label for e in index} == {
        "cat/sub/y.flac": 0,
        "cat/x.wav": 0,
        "dog/sub/y.flac": 1,
        "dog/x.wav": 1,
    }
    write_kind(tmp_path / "lab" / "loose.wav", "pcm16_22k", 440.0)
    with pytest.warns(UserWarning, match="1 audio file"):
        assert len(folder_entries(tmp_path / "lab")) == 4
    flat = folder_entries(tmp_path / "lab", labels=False)
    assert len(flat) == 5 and flat.num_classes == 0 and flat.targets().tolist() == [-1] * 5
    (tmp_path / "flat").mkdir()
    write_kind(tmp_path / "flat" / "a.ogg", "ogg_16k", 440.0)
    assert [e.label for e in folder_entries(tmp_path / "flat")] == [None]


def test_clip_index_subset_keeps_multilabels():
    entries = [
        ClipEntry(f"c{i}", f"/x/{i}.wav", [i % 3, (i + 1) % 3][: i % 3], i % 2) for i in range(7)
    ]
    index = ClipIndex.from_entries(entries, ["a", "b", "c"], multilabel=True)
    sub = index.subset([5, 1, 3])
    assert [e.id for e in sub] == ["c5", "c1", "c3"]
    assert [e.label for e in sub] == [entries[5].label, entries[1].label, entries[3].label]
    assert np.array_equal(sub.targets(), index.targets()[[5, 1, 3]])
    assert len(index.subset([])) == 0


def test_label_columns_become_tasks_and_name_their_problems(tmp_path):
    from stec_audio.data.clip_index import add_label_columns

    (tmp_path / "clips").mkdir()
    for name in ("a", "b", "c"):
        write_kind(tmp_path / "clips" / f"{name}.wav", "pcm16_22k", 440.0)
    (tmp_path / "m.csv").write_text(
        "path,label,pitch,mood\nclips/a.wav,dog,3,calm\nclips/b.wav,cat,,tense\nclips/c.wav,dog,0,calm\n"
    )
    index = add_label_columns(
        manifest_entries(tmp_path / "m.csv"), tmp_path / "m.csv", "path", ["pitch", "mood"]
    )
    assert index.tasks["pitch"].tolist() == [3, -1, 0]
    assert index.tasks["mood"].tolist() == [0, 1, 0]  # names numbered in sorted order
    with pytest.raises(ValueError, match=r"missing column\(s\) \['tempo'\]"):
        add_label_columns(
            manifest_entries(tmp_path / "m.csv"), tmp_path / "m.csv", "path", ["tempo"]
        )
    (tmp_path / "short.csv").write_text("path,pitch\nclips/a.wav,1\n")
    with pytest.raises(ValueError, match="no row for clip 'clips/b.wav'"):
        add_label_columns(
            manifest_entries(tmp_path / "m.csv"), tmp_path / "short.csv", "path", ["pitch"]
        )
