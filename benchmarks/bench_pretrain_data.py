"""Pretraining data path: decoding every epoch vs the default (decode once, hold in memory).

Run: ``python benchmarks/bench_pretrain_data.py [--clips 400] [--steps 12]``

Writes ``--clips`` clips in the ESC-50 layout (5 s, 44.1 kHz, 16-bit mono WAV, as the real
corpus) and measures, side by side in one run:

1. the data path alone, as the trainer's loader delivers it to the step (batches of 32,
   2 workers where the path uses workers): ``data.cache=false data.in_memory=false`` (every
   epoch decodes, resamples and computes log-mels) against the default (``data.cache=true
   data.in_memory=auto``: decoded once into the float16 cache, then held in memory), whose
   one-off preparation time is reported separately;
2. training throughput of ``stec-audio pretrain`` (the default audio model: AudioNTT2020
   d=512, SimCLR + inverse model, batch 32) over ``--steps`` steps with each path, read
   from the run's ``metrics.csv`` (the first logged interval, which includes start-up, is
   left out).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from stec.cli import compose_config
from stec_audio import app
from stec_audio.cli import main as stec_audio
from stec_audio.data.datasets import InMemoryLogMels, collate_skip_bad

OLD = ["data.cache=false", "data.in_memory=false"]
NEW: list[str] = []  # the defaults


def write_esc50(root: Path, n: int, rate: int = 44100, seconds: float = 5.0) -> None:
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(int(rate * seconds)) / rate
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for i in range(n):
        target, fold = i % 10, i % 5 + 1
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t)
        wave = tone + 0.05 * rng.standard_normal(t.size)
        name = f"{fold}-{i:05d}-A-{target}.wav"
        sf.write(root / "audio" / name, wave.astype(np.float32), rate, subtype="PCM_16")
        rows.append(f"{name},{fold},{target},class{target},{target < 5},{i},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")


def data_path(overrides: list[str], root: Path, prepared: Path) -> tuple[float, float]:
    """``(preparation seconds, clips/s of one epoch after a warm-up epoch)``."""
    cfg = compose_config(
        "audio",
        ["data=esc50", f"data.root={root}", f"data.prepared={prepared}", *overrides,
         "trainer.num_workers=2", "trainer.progress=false"],
    )  # fmt: skip
    start = time.perf_counter()
    dataset = app.clip_dataset(cfg, app.build_index(cfg))
    prepare = time.perf_counter() - start
    workers = 0 if isinstance(dataset, InMemoryLogMels) else 2
    loader = DataLoader(
        dataset,
        batch_size=32,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        collate_fn=collate_skip_bad,
        persistent_workers=workers > 0,
    )
    for _ in loader:  # warm-up: worker start, page cache, resampling kernels
        pass
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch[0])
    return prepare, n / (time.perf_counter() - start)


def training(overrides: list[str], root: Path, prepared: Path, run: Path, steps: int) -> float:
    """Mean samples/s of ``stec-audio pretrain`` after its first logged interval."""
    code = stec_audio(
        ["pretrain", "data=esc50", f"data.root={root}", f"data.prepared={prepared}",
         f"run_dir={run}", f"trainer.max_steps={steps}", "trainer.log_every=4",
         "trainer.progress=false", *overrides]
    )  # fmt: skip
    if code != 0:
        raise SystemExit(f"pretrain failed with {overrides}")
    with open(run / "metrics.csv", newline="") as f:
        rates = [float(row["samples_per_s"]) for row in csv.DictReader(f)]
    return float(np.mean(rates[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=400)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_esc50(work / "ESC-50", args.clips)
        print(f"== {args.clips} ESC-50-layout clips (5 s, 44.1 kHz WAV -> 64 x 501 log-mels) ==")
        prep_old, old = data_path(OLD, work / "ESC-50", work / "prep")
        prep_new, new = data_path(NEW, work / "ESC-50", work / "prep")
        prep_again, _ = data_path(NEW, work / "ESC-50", work / "prep")
        print(f"{'data path alone':<44} {'clips/s':>10}")
        print(f"{'decode every epoch (cache=false)':<44} {old:>10.0f}")
        print(f"{'default: cache + in memory':<44} {new:>10.0f}   ({new / old:.0f}x)")
        print(
            f"preparation: first run {prep_new:.1f} s (decode, cache, load), later runs "
            f"{prep_again:.1f} s (load); decode-every-epoch set-up {prep_old:.1f} s"
        )
        train_old = training(OLD, work / "ESC-50", work / "prep", work / "run_old", args.steps)
        train_new = training(NEW, work / "ESC-50", work / "prep", work / "run_new", args.steps)
        print(f"\n{'training, SimCLR + inverse, AudioNTT2020 d=512':<44} {'clips/s':>10}")
        print(f"{'decode every epoch':<44} {train_old:>10.1f}")
        print(f"{'default':<44} {train_new:>10.1f}   ({train_new / train_old:.2f}x)")


if __name__ == "__main__":
    main()
