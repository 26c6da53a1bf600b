"""Two augmented views with actions: the batched pipelines vs a per-sample BYOL-A-style loop.

All make two 64 x 96 log-mel views of every 5 s clip (501 frames) of a batch of 256 and
record every parameter they draw:

- the per-sample loop and the *separate* pipeline (``augment=separate``): a random 96-frame
  crop, mixup with a memory bank of past clips (exp domain, ratio up to 0.4), BYOL-A's
  random resize crop (canvas 1.0 x 1.5, scales 0.6-1.5, bicubic) and a random linear fader;
- the *composed* pipeline (``augment.geometry``): one resampling per view for the crop, a
  time scale of 0.6-1.5 and a pitch shift of up to 12 semitones (bilinear), then mixup and
  the fader: the work of the separate pipeline (``augment=composed`` as shipped has no time
  scale and no mixup, so it is cheaper still);
- the same composed pipeline with mixup at ``stage="clip"``: one background per clip, mixed
  into the whole clip (501 frames) before the two views are cut.

The batched pipelines also turn the parameters into the binned relative-action targets;
they are timed with and without that step.

    python benchmarks/bench_audio_augment.py [--batch 256] [--iters 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from stec.augment import TwoViews
from stec_audio.augment import build_audio_pipeline


class PerSampleBYOLA:
    """BYOL-A's augmentations as written there: one clip at a time, NumPy random numbers."""

    def __init__(self, frames: int = 96, ratio: float = 0.4, n_memory: int = 2048) -> None:
        self.frames, self.ratio, self.n_memory = frames, ratio, n_memory
        self.bank: list[torch.Tensor] = []

    def crop(self, lms: torch.Tensor) -> tuple[torch.Tensor, int]:
        offset = np.random.randint(0, lms.shape[-1] - self.frames + 1)
        return lms[..., offset : offset + self.frames], offset

    def mixup(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        alpha = self.ratio * np.random.random()
        mixed = x
        if self.bank:
            z = self.bank[np.random.randint(len(self.bank))]
            mixed = torch.log((1.0 - alpha) * x.exp() + alpha * z.exp() + torch.finfo(x.dtype).eps)
        self.bank = (self.bank + [x])[-self.n_memory :]
        return mixed, alpha

    @staticmethod
    def random_resize_crop(lms: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        c, f, t = lms.shape
        canvas_f, canvas_t = f, int(t * 1.5)
        canvas = torch.zeros(c, canvas_f, canvas_t)
        y, x = (canvas_f - f) // 2, (canvas_t - t) // 2
        canvas[:, y : y + f, x : x + t] = lms
        h = int(np.clip(int(np.random.uniform(0.6, 1.5) * f), 1, canvas_f))
        w = int(np.clip(int(np.random.uniform(0.6, 1.5) * t), 1, canvas_t))
        i = random.randint(0, canvas_f - h) if canvas_f > h else 0
        j = random.randint(0, canvas_t - w) if canvas_t > w else 0
        crop = canvas[:, i : i + h, j : j + w]
        out = F.interpolate(crop.unsqueeze(0), size=(f, t), mode="bicubic", align_corners=True)
        return out.squeeze(0), (i, j, h, w)

    @staticmethod
    def fader(lms: torch.Tensor, gain: float = 1.0) -> tuple[torch.Tensor, tuple[float, float]]:
        head, tail = gain * (2.0 * np.random.rand(2) - 1.0)
        slope = torch.linspace(head, tail, lms.shape[-1], dtype=lms.dtype).reshape(1, 1, -1)
        return lms + slope, (float(head), float(tail))

    def view(self, clip: torch.Tensor) -> tuple[torch.Tensor, dict]:
        x, offset = self.crop(clip)
        x, alpha = self.mixup(x)
        x, box = self.random_resize_crop(x)
        x, gains = self.fader(x)
        return x, {"offset": offset, "alpha": alpha, "crop": box, "gain": gains}

    def __call__(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list, list]:
        views_a, views_b, params_a, params_b = [], [], [], []
        for clip in clips:
            a, pa = self.view(clip)
            b, pb = self.view(clip)
            views_a.append(a)
            views_b.append(b)
            params_a.append(pa)
            params_b.append(pb)
        return torch.stack(views_a), torch.stack(views_b), params_a, params_b


def throughputs(fns: dict, clips: torch.Tensor, rounds: int) -> dict[str, float]:
    """Median clips/s of each function; the functions take turns round by round, so that
    all of them see the same machine load."""
    for fn in fns.values():
        fn(clips)  # warm-up; also fills the memory banks
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(clips)
            times[name].append(time.perf_counter() - start)
    return {name: clips.shape[0] / statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--iters", type=int, default=7, help="timed rounds (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=96)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    clips = torch.randn(args.batch, 1, 64, 501)

    pipelines = {
        "separate": build_audio_pipeline(
            {"time_crop": {"frames": args.frames}, "mixup": {}, "rrc": {}, "fader": {}}
        ),
        "composed": build_audio_pipeline(
            {
                # a time scale as RRC's, so that the map does the work the crop and RRC do
                "geometry": {
                    "frames": args.frames,
                    "energy_weighted": False,
                    "time_scale": (0.6, 1.5),
                },
                "mixup": {"predict": False},
                "fader": {},
            }
        ),
        # the same, with the background mixed into the whole clip before the views
        # (mixup's stage=clip): each view mixes 501 frames instead of 96
        "composed-clip-mix": build_audio_pipeline(
            {
                "geometry": {
                    "frames": args.frames,
                    "energy_weighted": False,
                    "time_scale": (0.6, 1.5),
                },
                "mixup": {"predict": False, "stage": "clip"},
                "fader": {},
            }
        ),
    }
    fns = {"loop": PerSampleBYOLA(frames=args.frames)}
    for name, pipeline in pipelines.items():
        fns[name] = make_views(pipeline, targets=False)
        fns[f"{name}+targets"] = make_views(pipeline, targets=True)
    rates = throughputs(fns, clips, args.iters)
    print(
        f"device cpu, {args.threads} threads, batch {args.batch}, clips 64x501 -> views 64x{args.frames}"
    )
    print(f"per-sample BYOL-A-style loop            : {rates['loop']:8.0f} clips/s")
    for name, pipeline in pipelines.items():
        print(f"{name} pipeline, action space {pipeline.action_space()}")
        for suffix, what in (("", "views + params"), ("+targets", "+ action targets")):
            rate = rates[name + suffix]
            print(f"  {what:37s}: {rate:8.0f} clips/s  ({rate / rates['loop']:.1f}x)")


def make_views(pipeline, targets: bool):
    """Two views of a batch with the pipeline (and their relative-action targets)."""
    views, space = TwoViews(pipeline), pipeline.action_space()

    def run(x: torch.Tensor) -> None:
        _, _, pa, pb = views(x)
        if targets:
            space.targets(pa, pb)

    return run


if __name__ == "__main__":
    main()
