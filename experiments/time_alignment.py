"""Can the time shift between two views be read from what they share, and at what resolution?

Draws one view pair of every demo clip with the composed map (``augment=composed``; other
``key=value`` overrides as for ``stec-audio``), takes each view's envelope (the mean over
mel bins per frame), optionally averaged over blocks of ``--block`` frames (8 frames =
80 ms, the resolution of the encoders' output frames; 2 = 20 ms, their first block), and
finds the lag that best aligns the two envelopes (Pearson correlation over the frames both
views have). It prints how often that lag is within ``--tolerance`` frames of the true
shift, for the envelope's levels and for its frame-to-frame changes:

    python experiments/time_alignment.py                       # 10 ms, fader on
    python experiments/time_alignment.py --block 8             # 80 ms
    python experiments/time_alignment.py augment.fader.enabled=false

About a minute on 2 cores per setting.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import Tensor

MAX_LAG = 80  # frames; views up to one crop length (96 frames) apart


def best_lags(a: Tensor, b: Tensor, max_lag: int = MAX_LAG) -> Tensor:
    """``[N, T]`` x2 -> ``[N]``: the lag ``l`` maximising the correlation of ``a[t]`` and
    ``b[t + l]`` over the frames both have."""
    length, scores = a.shape[-1], []
    for lag in range(-max_lag, max_lag + 1):
        x = a[:, max(-lag, 0) : length - max(lag, 0)]
        y = b[:, max(lag, 0) : length - max(-lag, 0)]
        x, y = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
        scores.append((x * y).mean(-1) / (x.std(-1) * y.std(-1) + 1e-6))
    return torch.stack(scores, 1).argmax(1) - max_lag


def envelope(views: Tensor, block: int) -> Tensor:
    """``[N, 1, F, T]`` -> ``[N, T]``: the mean over mel bins, block-averaged (and held)."""
    e = views[:, 0].mean(1)
    n, t = e.shape
    e = e[:, : t - t % block].reshape(n, -1, block).mean(-1)
    return e.repeat_interleave(block, dim=-1)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Returns the share of pairs aligned within the tolerance, for ``levels`` and
    ``changes`` of the envelope."""
    from stec import TwoViews
    from stec.cli import compose_config
    from stec_audio import app
    from stec_audio.augment import build_audio_pipeline
    from stec_audio.data.frontend import LogMelNormalizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--block", type=int, default=1, help="frames averaged (10 ms each)")
    parser.add_argument("--tolerance", type=int, default=3, help="frames")
    parser.add_argument("--clips", type=int, default=0, help="the first N clips (0: all)")
    parser.add_argument("overrides", nargs="*", help="stec-audio key=value overrides")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cfg = compose_config(
        "audio",
        [
            "augment=composed",
            "trainer.num_workers=0",
            "trainer.progress=false",
            *args.overrides,
        ],  # fmt: skip
    )
    index = app.build_index(cfg)
    dataset = app.clip_dataset(cfg, index)
    norm = app.norm_stats(cfg, index, dataset)
    views = TwoViews(
        build_audio_pipeline(app.pipeline_config(cfg, norm)), prepare=LogMelNormalizer(norm)
    )
    n = min(args.clips or len(dataset), len(dataset))
    clips = torch.stack([dataset[i][0] for i in range(n)])
    with torch.no_grad():
        view_a, view_b, params_a, params_b = views(clips)
    component = views.action_space()["geometry"]
    shift = component.relative(params_a["geometry"], params_b["geometry"])
    true = shift[:, component.target_labels.index("geometry.shift_x")] * view_a.shape[-1]
    a, b = envelope(view_a, args.block), envelope(view_b, args.block)
    aligned = {
        "levels": best_lags(a, b),
        "changes": best_lags(a.diff(dim=-1), b.diff(dim=-1)),
    }
    rates = {
        k: float(((lag - true).abs() <= args.tolerance).float().mean())
        for k, lag in aligned.items()
    }
    print(
        f"{' '.join(args.overrides) or '(defaults)'}, {10 * args.block} ms: aligned within "
        f"{args.tolerance} frames: levels {rates['levels']:.2f}, changes {rates['changes']:.2f}"
    )
    return rates


if __name__ == "__main__":
    main()
