"""Train-step time of BYOL with the inverse model (efference="inverse") vs plain BYOL.

Backbone AudioNTT2020 (d=512), BYOL-A's projector (4096 -> 256), Adam; the same batch of
two 64 x 96 views (made once by the composed audio pipeline from 5 s clips, with their
action records) is used for every step. Six modes: no efference copy, the inverse
model on the pooled backbone features (``inverse_input=backbone``), on the frame
sequences as well (``inverse_input=frames``), and the same with the action loss's weight
ramped over the first half of the run (``lambda_manip_warmup=0.5``; each step sets the
ramp as the Trainer does), and that with the forward model's own head as well
(``efference=both``, ``forward_head=own``), or with the read gate (``read_gate=0.05``: the
inverse model runs twice; what ``augment=composed`` ships). Prints the
median step time of each mode over ``--steps`` steps after ``--warmup`` steps (the modes
take turns step by step, in a rotating order), and each inverse mode's ratio to plain BYOL.

    python benchmarks/bench_efference_overhead.py [--batch 64] [--steps 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from stec.augment import TwoViews
from stec.methods import BYOL
from stec_audio.augment import COMPOSED_AUDIO_PIPELINE, COMPOSED_EFFERENCE, build_audio_pipeline
from stec_audio.encoders import AudioNTT2020

# the BYOL keywords of each mode; the last is what augment=composed ships: the frame
# reader, its loss weight ramped over the first half of the run, the read gate
UNGATED = {"efference": "inverse", **COMPOSED_EFFERENCE, "read_gate": 0.0}
CONSTANT = {**UNGATED, "lambda_manip_warmup": 0.0}
MODES: dict[str, dict] = {
    "off": {"efference": "off"},
    "inverse": {**CONSTANT, "inverse_input": "backbone"},
    "inverse_frames": CONSTANT,
    "inverse_frames_warmup": UNGATED,
    # the same with the forward model's own head beside the inverse model (EquiMod)
    "both_own_head": {**UNGATED, "efference": "both", "forward_head": "own"},
    # what ships: the same with the read gate (a second pass of the inverse model)
    "inverse_read_gate": {"efference": "inverse", **COMPOSED_EFFERENCE},
}


def build(mode: str, space) -> tuple[BYOL, torch.optim.Optimizer]:
    torch.manual_seed(0)
    method = BYOL(
        AudioNTT2020(d=512), 512, action_space=space, proj_hidden=4096, proj_dim=256, **MODES[mode]
    )
    optimiser = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=3e-4)
    return method, optimiser


def train_step(
    method: BYOL, optimiser: torch.optim.Optimizer, batch: tuple, progress: float
) -> float:
    start = time.perf_counter()
    method.set_progress(progress)  # what the Trainer does before each step
    loss, _, _ = method(*batch)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    method.on_step_end(progress)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pipeline = build_audio_pipeline(COMPOSED_AUDIO_PIPELINE)
    batch = TwoViews(pipeline)(torch.randn(args.batch, 1, 64, 501))
    space = pipeline.action_space()
    print(f"device cpu, {args.threads} threads, batch {args.batch} x 2 views of 64x96, {space}")
    runs = {mode: build(mode, space) for mode in MODES}
    times: dict[str, list[float]] = {mode: [] for mode in runs}
    total = args.warmup + args.steps
    for i in range(total):
        # rotate the order every step, so that every mode sees the same machine load
        names = list(runs)
        order = names[i % len(names) :] + names[: i % len(names)]
        for mode in order:
            elapsed = train_step(*runs[mode], batch, i / total)
            if i >= args.warmup:
                times[mode].append(elapsed)
    medians = {mode: statistics.median(t) for mode, t in times.items()}
    for mode, t in times.items():
        print(
            f"efference={mode:21s}: median {medians[mode] * 1000:7.1f} ms/step (min {min(t) * 1000:.1f})"
        )
    for mode in [name for name in MODES if name != "off"]:
        print(f"ratio {mode:21s} / off: {medians[mode] / medians['off']:.3f}")


if __name__ == "__main__":
    main()
