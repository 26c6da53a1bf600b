"""Two views + action records per second: batched stec_vision ops vs per-image PIL transforms.

Both sides do the same work for every source image: two views, each a random resized crop
+ horizontal flip, colour jitter (p 0.8, random order), grayscale (p 0.2) and, at 96 px,
Gaussian blur (p 0.5), then normalisation; both record every view's parameters (crop
matrix, flip, jitter factors and order, flags, sigma) and turn them into the same action
targets. The per-image side is the usual torchvision-transforms pipeline on PIL images
(``Image.fromarray`` per item as torchvision's CIFAR/STL datasets do), run as a
``DataLoader`` with as many worker processes as threads, so both sides get the same cores.

    python benchmarks/bench_vision_augment.py [--threads 2] [--batch 256] [--sizes 32 96]

A second table compares the same work per CPU-second on one core (process time, one
thread, one process), which other jobs on the machine barely disturb.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import time

# Passive OpenMP waiting (unless set): on a machine shared with other jobs, spinning
# intra-op threads stall every small parallel region when a core is taken away. It must be
# set before torch loads its OpenMP runtime. The per-image workers run single-threaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from stec_vision.augment import (
    ColorJitter,
    GaussianBlur,
    Normalize,
    RandomGrayscale,
    RandomResizedCropFlip,
    VisionCompose,
)
from stec_vision.augment_color import JITTER_OPS

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def settings(size: int) -> dict:
    """SimCLR's recipe: colour strength 0.5 and no blur at 32 px, strength 1.0 + blur at 96."""
    s = 0.5 if size <= 32 else 1.0
    return {"jitter": (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s), "blur": size > 32}


def batched_pipeline(size: int) -> VisionCompose:
    cfg = settings(size)
    steps = [RandomResizedCropFlip(size), ColorJitter(*cfg["jitter"], p=0.8), RandomGrayscale(0.2)]
    if cfg["blur"]:
        steps.append(GaussianBlur((0.1, 2.0), p=0.5))
    return VisionCompose(steps)


class PerImageViews(Dataset):
    """torchvision transforms on one PIL image at a time, recording the parameters."""

    def __init__(self, images: np.ndarray, size: int) -> None:
        self.images, self.size = images, size
        cfg = settings(size)
        self.jitter = T.ColorJitter(*cfg["jitter"])
        self.blur, self.kernel = cfg["blur"], max(3, int(0.1 * size) | 1)
        self.normalize = T.Normalize(MEAN, STD)

    def __len__(self) -> int:
        return len(self.images)

    def view(self, img: Image.Image) -> tuple[torch.Tensor, dict]:
        width, height = img.size
        i, j, h, w = T.RandomResizedCrop.get_params(img, (0.08, 1.0), (3 / 4, 4 / 3))
        img = TF.resized_crop(img, i, j, h, w, [self.size, self.size], T.InterpolationMode.BILINEAR)
        flip = random.random() < 0.5
        if flip:
            img = TF.hflip(img)
        # the crop as a source->view matrix in normalised coordinates, flip folded in
        hw, hh = w / width, h / height
        cx, cy = (2 * j + w) / width - 1, (2 * i + h) / height - 1
        sign = -1.0 if flip else 1.0
        theta = torch.tensor([[sign / hw, 0, -sign * cx / hw], [0, 1 / hh, -cy / hh], [0, 0, 1.0]])
        factors, order, jittered = (
            torch.tensor([1.0, 1.0, 1.0, 0.0]),
            torch.arange(4),
            random.random() < 0.8,
        )
        if jittered:
            fn_idx, b, c, s, hue = T.ColorJitter.get_params(
                self.jitter.brightness,
                self.jitter.contrast,
                self.jitter.saturation,
                self.jitter.hue,
            )
            factors, order = torch.tensor([b, c, s, hue]), fn_idx
            fns = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
            for op in fn_idx.tolist():
                img = fns[op](img, float(factors[op]))
        gray = random.random() < 0.2
        if gray:
            img = TF.rgb_to_grayscale(img, num_output_channels=3)
        params = {
            "crop": theta,
            "color_order": int(_perm_index(order)),
            "color_order.valid": jittered,
        }
        params.update({op: factors[k : k + 1] for k, op in enumerate(JITTER_OPS)})
        params["grayscale"] = float(gray)
        if self.blur:
            sigma = random.uniform(0.1, 2.0) if random.random() < 0.5 else 0.0
            if sigma > 0:
                img = TF.gaussian_blur(img, [self.kernel, self.kernel], [sigma, sigma])
            params["blur"] = torch.tensor([sigma])
        return self.normalize(TF.to_tensor(img)), params

    def __getitem__(self, index: int):
        img = Image.fromarray(self.images[index])
        (view_a, params_a), (view_b, params_b) = self.view(img), self.view(img)
        return view_a, view_b, params_a, params_b


_PERMS = {tuple(p): i for i, p in enumerate(itertools.permutations(range(4)))}


def _perm_index(order: torch.Tensor) -> int:
    return _PERMS[tuple(order.tolist())]


def time_batched(images: torch.Tensor, size: int, batches: int, clock=time.perf_counter) -> float:
    """Images per second of ``clock`` time for two views + action targets of a batch."""
    pipe, norm = batched_pipeline(size), Normalize(MEAN, STD)
    space = pipe.action_space()

    def step() -> None:
        view_a, params_a = pipe(images)
        view_b, params_b = pipe(images)
        norm(view_a), norm(view_b)
        space.targets(params_a, params_b)

    step()
    start = clock()
    for _ in range(batches):
        step()
    return batches * images.shape[0] / (clock() - start)


def time_per_image(images: np.ndarray, size: int, batch: int, batches: int, workers: int) -> float:
    """Steady-state wall-clock throughput of a ``DataLoader`` with ``workers`` processes: the
    first wave of batches (one per worker, started together) is not counted."""
    space = batched_pipeline(size).action_space()
    loader = DataLoader(PerImageViews(images, size), batch_size=batch, num_workers=workers)
    wave = max(workers, 1)
    timed = -(-batches // wave) * wave
    it = iter(loader)
    for _ in range(wave):
        next(it)
    start = time.perf_counter()
    done = 0
    for _ in range(timed):
        view_a, view_b, params_a, params_b = next(it)
        space.targets(params_a, params_b)
        done += view_a.shape[0]
    return done / (time.perf_counter() - start)


def cpu_time_per_image(images: np.ndarray, size: int, batch: int) -> float:
    """Images per CPU-second of the per-image pipeline in this process (one core)."""
    space = batched_pipeline(size).action_space()
    views = PerImageViews(images, size)
    collate = torch.utils.data.default_collate
    collate([views[i] for i in range(8)])
    start = time.process_time()
    _, _, params_a, params_b = collate([views[i] for i in range(batch)])
    space.targets(params_a, params_b)
    return batch / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 96])
    parser.add_argument("--batches", type=int, default=4, help="batches timed per round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds; the best is kept"
    )
    parser.add_argument(
        "--no-cpu-time", action="store_true", help="skip the one-core CPU-time comparison"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    pools = {}
    for size in args.sizes:
        rng = np.random.default_rng(size)
        # sources at the view size (CIFAR 32 px, STL-10 96 px); the loader walks a pool
        n_pool = args.batch * (args.batches + 2 * max(args.threads, 1))
        pools[size] = rng.integers(0, 256, (n_pool, size, size, 3), dtype=np.uint8)
    header = f"{'size':>5} {'batched (img/s)':>16} {'per-image PIL (img/s)':>22} {'ratio':>7}"

    torch.set_num_threads(args.threads)
    print(
        f"two views + actions, batch {args.batch}, wall clock, {args.threads} CPU threads "
        f"(batched: {args.threads} intra-op threads; per-image: {args.threads} loader workers; "
        f"best of {args.rounds} rounds; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']})"
    )
    print(header)
    for size, pool in pools.items():
        batch = torch.from_numpy(pool[: args.batch]).permute(0, 3, 1, 2).contiguous()
        ours, theirs = 0.0, 0.0
        for _ in range(args.rounds):
            ours = max(ours, time_batched(batch, size, args.batches))
            theirs = max(theirs, time_per_image(pool, size, args.batch, args.batches, args.threads))
        print(f"{size:>5} {ours:>16.0f} {theirs:>22.0f} {ours / theirs:>6.1f}x")

    if args.no_cpu_time:
        return
    # CPU seconds on one core: insensitive to other load on the machine
    torch.set_num_threads(1)
    print(f"\nsame work per CPU-second on one core (1 thread, 1 process; best of {args.rounds})")
    print(header)
    for size, pool in pools.items():
        batch = torch.from_numpy(pool[: args.batch]).permute(0, 3, 1, 2).contiguous()
        ours = max(
            time_batched(batch, size, 2, clock=time.process_time) for _ in range(args.rounds)
        )
        theirs = max(cpu_time_per_image(pool, size, args.batch) for _ in range(args.rounds))
        print(f"{size:>5} {ours:>16.0f} {theirs:>22.0f} {ours / theirs:>6.1f}x")


if __name__ == "__main__":
    main()
