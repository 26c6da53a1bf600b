"""AudioSet indexing: parsing 2M segment rows, the index cache and the folder scan.

Run: ``python benchmarks/bench_audio_data.py [--rows 2000000] [--files 100000]``

(The pretraining data path, decoding vs the log-mel cache, is
``benchmarks/bench_pretrain_data.py``.) Writes an AudioSet-style segment list of ``--rows`` rows (527 classes, 1-3 labels a
   row, quoted, with spaces after the separators) and times ``audioset_entries`` with a
   ``YTID,path`` mapping of 90% of the rows: cold (parsing the CSV) and warm (the ``.npz``
   index cache). Then times the recursive folder scan over ``--files`` empty audio files.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stec_audio.data.audioset import audioset_entries, find_audio_files

ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", "S1")


def write_segments(path: Path, rows: int, mids: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    ytids = ALPHABET[rng.integers(0, 64, (rows, 11))].view("S11").ravel().astype(str)
    starts = rng.integers(0, 300, rows)
    n_labels = rng.integers(1, 4, rows)
    picks = mids[rng.integers(0, len(mids), (rows, 3))]
    labels = [",".join(picks[i, : n_labels[i]]) for i in range(rows)]
    with open(path, "w") as f:
        f.write("# Segments csv created Sun Mar  5 10:54:25 2017\n")
        f.write(f"# num_ytids={rows}, num_segs={rows}, num_unique_labels=527\n")
        f.write("# YTID, start_seconds, end_seconds, positive_labels\n")
        f.writelines(
            f'{y}, {s}.000, {s + 10}.000, "{lab}"\n'
            for y, s, lab in zip(ytids, starts, labels, strict=True)
        )
    return ytids


def bench_audioset(work: Path, rows: int, n_files: int) -> None:
    print(f"\n== AudioSet index, {rows:,} segment rows ==")
    mids = np.array([f"/m/{i:05x}" for i in range(527)])
    labels_csv = work / "class_labels_indices.csv"
    labels_csv.write_text(
        "index,mid,display_name\n"
        + "".join(f'{i},{m},"Class {i}, long name"\n' for i, m in enumerate(mids))
    )
    t0 = time.perf_counter()
    ytids = write_segments(work / "unbalanced_train_segments.csv", rows, mids)
    keep = ytids[np.random.default_rng(2).random(rows) < 0.9]
    (work / "mapping.csv").write_text("YTID,path\n" + "".join(f"{y},audio/{y}.wav\n" for y in keep))
    print(f"(writing the CSVs took {time.perf_counter() - t0:.1f} s)")
    for label in ("cold (parse CSV)", "warm (.npz cache)"):
        t0 = time.perf_counter()
        index = audioset_entries(
            work / "unbalanced_train_segments.csv",
            mapping_csv=work / "mapping.csv",
            cache_dir=work / "index_cache",
        )
        elapsed = time.perf_counter() - t0
        print(
            f"{label:<20} {elapsed:6.1f} s  ({len(index):,} clips, {len(index.missing):,} missing)"
        )
    t0 = time.perf_counter()
    hot = index.targets(np.arange(100_000))
    print(f"multi-hot targets, first 100k: {time.perf_counter() - t0:.2f} s, shape {hot.shape}")

    scan_root = work / "scan"
    for i in range(n_files):
        sub = scan_root / f"{i % 100:02d}"
        if i < 100:
            sub.mkdir(parents=True)
        (sub / f"Y{ytids[i]}.wav").touch()
    t0 = time.perf_counter()
    found = find_audio_files(scan_root)
    elapsed = time.perf_counter() - t0
    print(
        f"folder scan: {n_files:,} files in {elapsed:.2f} s ({n_files / elapsed:,.0f} files/s, {len(found):,} keys)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        bench_audioset(Path(tmp), args.rows, args.files)


if __name__ == "__main__":
    main()
