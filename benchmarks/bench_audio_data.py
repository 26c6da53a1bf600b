"""Audio data throughput: log-mel cache vs decoding 44.1 kHz WAVs, and AudioSet indexing.

Run: ``python benchmarks/bench_audio_data.py [--clips 200] [--rows 2000000] [--files 100000]``

1. Writes ``--clips`` 5 s, 44.1 kHz, 16-bit mono WAVs (ESC-50's format) and reads them as
   64 x 501 log-mels through a DataLoader: decode + resample + log-mel on the fly, versus
   reading the float16 cache made by ``prepare_cache`` (whose conversion rate is shown
   too). Each read is timed over one full pass after a warm-up pass.
2. Writes an AudioSet-style segment list of ``--rows`` rows (527 classes, 1-3 labels a
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
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from stec_audio.audioset import audioset_entries, find_audio_files
from stec_audio.cache import CachedLogMelDataset, prepare_cache
from stec_audio.datasets import (
    ClipEntry,
    ClipIndex,
    LogMelClipDataset,
    collate_skip_bad,
    compute_norm_stats,
)

ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", "S1")


def write_wavs(folder: Path, n: int, rate: int = 44100, seconds: float = 5.0) -> ClipIndex:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(rate * seconds)) / rate
    entries = []
    for i in range(n):
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(
            t.size
        )
        path = folder / f"{i % 5 + 1}-{i:05d}-A-{i % 10}.wav"
        sf.write(path, wave.astype(np.float32), rate, subtype="PCM_16")
        entries.append(ClipEntry(path.name, path, i % 10, i % 5 + 1))
    return ClipIndex.from_entries(entries)


def clips_per_second(dataset, workers: int, batch_size: int = 32) -> float:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_skip_bad,
        persistent_workers=workers > 0,
    )
    for _ in loader:  # warm-up: worker start, page cache, resampling kernels
        pass
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch[0])
    return n / (time.perf_counter() - start)


def bench_loading(work: Path, n_clips: int) -> None:
    index = write_wavs(work / "wav44k", n_clips)
    print(f"\n== {n_clips} clips, 5 s, 44.1 kHz 16-bit WAV -> 64 x 501 log-mel ==")
    raw = LogMelClipDataset(index, clip_seconds=5.0)
    t0 = time.perf_counter()
    norm = compute_norm_stats(raw, num_workers=2)
    print(f"norm stats (2 workers):            {n_clips / (time.perf_counter() - t0):8.0f} clips/s")
    t0 = time.perf_counter()
    prepare_cache(index, work / "cache", clip_seconds=5.0, norm=norm, workers=2, progress=False)
    print(f"prepare_cache (2 workers):         {n_clips / (time.perf_counter() - t0):8.0f} clips/s")
    live = LogMelClipDataset(index, clip_seconds=5.0, norm=norm)
    cached = CachedLogMelDataset(work / "cache")
    size = sum(p.stat().st_size for p in (work / "cache" / "items").rglob("*.npy")) / n_clips
    print(f"cache item size: {size / 1024:.0f} KiB a clip (float16)")
    print(f"{'workers':>12} {'decode+resample+logmel':>24} {'log-mel cache':>15}")
    for workers, threads in ((0, 1), (0, 2), (2, 1)):
        # Workers always compute with one torch thread each; the main process uses `threads`.
        torch.set_num_threads(threads)
        a, b = clips_per_second(live, workers), clips_per_second(cached, workers)
        label = f"{workers} ({threads}t)" if workers == 0 else str(workers)
        print(f"{label:>12} {a:>18.0f} clips/s {b:>9.0f} clips/s   ({b / a:.0f}x)")
    torch.set_num_threads(2)


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
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        bench_loading(Path(tmp), args.clips)
    with tempfile.TemporaryDirectory() as tmp:
        bench_audioset(Path(tmp), args.rows, args.files)


if __name__ == "__main__":
    main()
