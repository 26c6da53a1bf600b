from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stec_audio.data import audioset
from stec_audio.data.audioset import audioset_entries, read_class_labels
from stec_audio.data.datasets import LogMelClipDataset

MIDS = ["/m/09x0r", "/m/05zppz", "/m/02zsn", "/m/0ytgt", "/t/dd00088", "/m/04rlf"]
NAMES = ["Speech", "Male speech, man speaking", "Female speech, woman speaking",
         "Child speech, kid speaking", "Breathing", "Music"]  # fmt: skip
ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


def write_labels(path: Path) -> None:
    lines = ["index,mid,display_name"]
    lines += [f'{i},{m},"{n}"' for i, (m, n) in enumerate(zip(MIDS, NAMES, strict=True))]
    path.write_text("\n".join(lines) + "\n")


def write_segments(path: Path, rows: list[tuple[str, float, list[int]]]) -> None:
    lines = [
        "# Segments csv created Sun Mar  5 10:54:25 2017",
        f"# num_ytids={len(rows)}, num_segs={len(rows)}, num_unique_labels=6, num_positive_labels=9",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    for ytid, start, labels in rows:
        mids = ",".join(MIDS[k] for k in labels)
        lines.append(f'{ytid}, {start:.3f}, {start + 10:.3f}, "{mids}"')
    path.write_text("\n".join(lines) + "\n")


def short_wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.sin(np.arange(3200) * 0.3).astype(np.float32) * 0.3, 16000)


@pytest.fixture
def audioset_dir(tmp_path):
    """50 segments, every naming scheme, 1 in 6 clips absent; returns (root, rows, files)."""
    rng = np.random.default_rng(3)
    rows, files = [], {}
    for i in range(50):
        ytid = "".join(rng.choice(ALPHABET, 11))
        if i == 7:
            ytid = "Y" + ytid[1:]  # an id that itself starts with Y
        start = float(rng.integers(0, 30)) + (0.5 if i % 4 == 0 else 0.0)
        labels = sorted(rng.choice(6, rng.integers(1, 4), replace=False).tolist())
        rows.append((ytid, start, labels))
        scheme = i % 6
        names = {
            0: f"{ytid}.wav",
            1: f"Y{ytid}.flac",
            2: f"shard{i % 3}/{ytid}_{round(start * 1000)}.wav",
            3: f"{ytid}_{start:.3f}.wav",
            4: f"deep/er/Y{ytid}_{start:.3f}_{start + 10:.3f}.wav",
        }
        if scheme in names:
            files[ytid] = tmp_path / "audio" / names[scheme]
            short_wav(files[ytid])
    (tmp_path / "audio" / "README.txt").write_text("not audio")
    write_segments(tmp_path / "balanced_train_segments.csv", rows)
    write_labels(tmp_path / "class_labels_indices.csv")
    return tmp_path, rows, files


def test_index_finds_files_counts_missing_and_multilabels(audioset_dir, tmp_path):
    root, rows, files = audioset_dir
    index = audioset_entries(
        root / "balanced_train_segments.csv", root / "audio", cache_dir=tmp_path / "c"
    )
    assert index.multilabel and index.class_names == NAMES
    listed = [y for y, _, _ in rows]
    assert len(index) == len(files) and len(index.missing) == len(rows) - len(files)
    assert sorted(index.missing) == sorted(y for y in listed if y not in files)
    by_id = {e.id: e for e in index}
    for ytid, _, labels in rows:
        if ytid in files:
            assert by_id[ytid].path == files[ytid]
            assert by_id[ytid].label == labels
    hot = index.targets()
    assert hot.shape == (len(files), 6) and hot.dtype == np.float32
    assert hot.sum() == sum(len(lab) for y, _, lab in rows if y in files)
    x, y, i = LogMelClipDataset(index, clip_seconds=1.0)[0]
    assert x.shape == (1, 64, 101) and y.tolist() == hot[0].tolist()


def test_same_ytid_twice_matched_by_start(tmp_path):
    write_labels(tmp_path / "class_labels_indices.csv")
    rows = [("abcdefghijk", 10.0, [0]), ("abcdefghijk", 30.0, [5]), ("zzzzzzzzzzz", 0.0, [1])]
    write_segments(tmp_path / "eval_segments.csv", rows)
    short_wav(tmp_path / "a" / "abcdefghijk_30000.wav")
    short_wav(tmp_path / "a" / "abcdefghijk_10000.wav")
    index = audioset_entries(tmp_path / "eval_segments.csv", tmp_path / "a", use_cache=False)
    assert [(e.id, e.path.name, e.label) for e in index] == [
        ("abcdefghijk_10000", "abcdefghijk_10000.wav", [0]),
        ("abcdefghijk_30000", "abcdefghijk_30000.wav", [5]),
    ]
    assert index.missing == ["zzzzzzzzzzz"]


def test_mapping_csv_and_several_segment_lists(audioset_dir, tmp_path):
    root, rows, files = audioset_dir
    write_segments(root / "eval_segments.csv", [("evalclip001", 0.0, [2, 4])])
    (root / "map").mkdir()
    short_wav(root / "map" / "e.wav")
    (root / "map" / "mapping.csv").write_text(f"YTID,path\nevalclip001,e.wav\n{rows[5][0]},e.wav\n")
    index = audioset_entries(
        [root / "balanced_train_segments.csv", root / "eval_segments.csv"],
        mapping_csv=root / "map" / "mapping.csv",
        use_cache=False,
    )
    assert [e.id for e in index] == [rows[5][0], "evalclip001"]
    assert index[1].path == root / "map" / "e.wav" and index[1].label == [2, 4]
    assert len(index.missing) == len(rows) - 1
    both = audioset_entries(
        [root / "balanced_train_segments.csv", root / "eval_segments.csv"],
        root / "audio",
        mapping_csv=root / "map" / "mapping.csv",
        use_cache=False,
    )
    assert len(both) == len(files) + 1 + (rows[5][0] not in files)
    assert {e.id: e.path for e in both}[rows[5][0]] == root / "map" / "e.wav"  # mapping wins


def test_parsed_segments_are_cached_by_csv_stat(audioset_dir, tmp_path, monkeypatch):
    root, rows, files = audioset_dir
    csv, cache = root / "balanced_train_segments.csv", tmp_path / "cache"
    first = audioset_entries(csv, root / "audio", cache_dir=cache)
    assert len(list(cache.glob("segments-*.npz"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("parsed again despite the cache")

    monkeypatch.setattr(audioset, "read_segments", fail)
    again = audioset_entries(csv, root / "audio", cache_dir=cache)
    assert [e.id for e in again] == [e.id for e in first]
    assert np.array_equal(again.targets(), first.targets())
    monkeypatch.undo()
    write_segments(csv, rows[:10])  # the list changed: the cache key changes
    assert len(audioset_entries(csv, root / "audio", cache_dir=cache).missing) < len(first.missing)
    assert len(list(cache.glob("segments-*.npz"))) == 2


def test_errors_name_the_file(audioset_dir):
    root, rows, _ = audioset_dir
    tmp_path = root / "other"
    tmp_path.mkdir()
    write_segments(tmp_path / "s.csv", [("abcdefghijk", 0.0, [0])])
    with pytest.raises(FileNotFoundError, match="class_labels_indices.csv"):
        audioset_entries(tmp_path / "s.csv", root / "audio", use_cache=False)
    (tmp_path / "s.csv").write_text(
        '# c\n# c\n# c\nabcdefghijk, 0.000, 10.000, "/m/09x0r,/m/nope"\n'
    )
    with pytest.raises(
        ValueError, match=r"s\.csv: 1 label id\(s\) not in the class label file.*/m/nope"
    ):
        audioset_entries(
            tmp_path / "s.csv", root / "audio", root / "class_labels_indices.csv", use_cache=False
        )
    with pytest.raises(ValueError, match="audio_root and/or mapping_csv"):
        audioset_entries(tmp_path / "s.csv")
    mids, names = read_class_labels(root / "class_labels_indices.csv")
    assert mids == MIDS and names[1] == "Male speech, man speaking"
