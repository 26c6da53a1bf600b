"""Train-step time of SimCLR with the inverse model (efference="inverse") vs plain SimCLR,
ResNet-18 (CIFAR stem) at 32 px, the official S-TEC action space (crop+flip affine, colour
factors and order, grayscale). The two modes alternate step by step on the same batch of
views; prints the median step time of each and their ratio.

    python benchmarks/bench_vision_overhead.py [--batch 64] [--steps 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from stec.methods import SimCLR
from stec_vision.augment_presets import build_two_views
from stec_vision.encoders import build_vision_encoder


def build(efference: str, space):
    torch.manual_seed(0)
    encoder, dim = build_vision_encoder("resnet18", cifar_stem=True)
    method = SimCLR(encoder, dim, space, efference=efference, temperature=0.5)
    return method, torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)


def step(method, opt, batch) -> float:
    start = time.perf_counter()
    loss, _, _ = method(*batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    views = build_two_views("cifar", 32)
    images = torch.rand(args.batch, 3, 32, 32)
    batch = views(images)
    modes = {m: build(m, views.action_space()) for m in ("off", "inverse")}
    times: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(args.warmup + args.steps):
        for mode, (method, opt) in modes.items():
            elapsed = step(method, opt, batch)
            if i >= args.warmup:
                times[mode].append(elapsed)
    off, inv = statistics.median(times["off"]), statistics.median(times["inverse"])
    print(f"ResNet-18 32px SimCLR, batch {args.batch}, {args.threads} threads")
    print(f"efference=off      {off * 1000:8.1f} ms/step")
    print(f"efference=inverse  {inv * 1000:8.1f} ms/step")
    print(f"ratio inverse/off  {inv / off:8.3f}")


if __name__ == "__main__":
    main()
