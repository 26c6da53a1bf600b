"""Batched tensor helpers shared by the spectrogram augmenters.

All helpers work on log-mel batches ``[B, C, F, T]`` and take one parameter per example,
so that an augmenter is a handful of vectorised ops with no loop over the batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

FILL_MODES = ("edge",)


def check_spectrogram(x: Tensor, who: str) -> None:
    """Raise a ValueError unless ``x`` is a floating ``[B, C, F, T]`` batch."""
    if x.dim() != 4:
        raise ValueError(
            f"{who}: expected log-mels of shape [B, C, F, T], got a tensor of shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{who}: expected a floating-point tensor, got {x.dtype}")


def check_range(
    who: str, key: str, value: tuple[float, float], low: float | None = None
) -> tuple[float, float]:
    """Validate a ``(min, max)`` pair; ``low`` is an optional lower bound for both ends."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{who}: {key} must be a pair (min, max), got {value!r}") from err
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"{who}: {key}=({lo}, {hi}) must satisfy min <= max")
    if low is not None and lo < low:
        raise ValueError(f"{who}: {key}=({lo}, {hi}) must not go below {low}")
    return lo, hi


def check_fill(who: str, fill: float | str) -> float | str:
    """``fill`` is a number (the value put where no input exists) or ``"edge"``."""
    if isinstance(fill, str):
        if fill not in FILL_MODES:
            raise ValueError(f"{who}: fill must be a number or one of {FILL_MODES}, got {fill!r}")
        return fill
    return float(fill)


def uniform(batch: int, low: float, high: float, device: torch.device) -> Tensor:
    """``[B]`` samples of U(low, high) from the global RNG on ``device``."""
    return low + (high - low) * torch.rand(batch, device=device)


def keep_where(applied: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """Per-example select: ``applied [B]`` bool; ``new``/``old`` ``[B, ...]``."""
    mask = applied.reshape(-1, *([1] * (new.dim() - 1)))
    return torch.where(mask, new, old)


def resample_axis(x: Tensor, pos: Tensor, dim: int, fill: float | str = 0.0) -> Tensor:
    """Linear interpolation of ``x`` along one axis at fractional source positions.

    Args:
        x: ``[B, C, F, T]``.
        pos: ``[B, L]`` source indices (in samples of the axis ``dim``) of the ``L`` outputs.
        dim: 2 (frequency) or 3 (time).
        fill: value for positions outside ``[0, N - 1]``, or ``"edge"`` to repeat the border.
    Returns:
        ``[B, C, F, L]`` for ``dim=3`` or ``[B, C, L, T]`` for ``dim=2``. Integer positions
        reproduce the input values exactly (the interpolation weight is then 0).
    """
    n = x.shape[dim]
    pos = pos.to(x.dtype)
    if fill == "edge":
        pos = pos.clamp(0, n - 1)
    i0 = pos.floor()
    frac = pos - i0
    i0 = i0.long()
    i1 = i0 + 1
    v0 = _gather_axis(x, i0.clamp(0, n - 1), dim)
    v1 = _gather_axis(x, i1.clamp(0, n - 1), dim)
    w = _expand_axis(frac, x, dim)
    out = v0 * (1.0 - w) + v1 * w
    if fill != "edge":
        # an output is defined when both neighbours exist, or when it sits exactly on the last
        # sample (frac == 0), so that integer positions never read outside the input
        inside = (i0 >= 0) & ((i1 < n) | ((i0 == n - 1) & (frac == 0)))
        out = torch.where(_expand_axis(inside, x, dim), out, torch.full_like(out, float(fill)))
    return out


def _expand_axis(values: Tensor, x: Tensor, dim: int) -> Tensor:
    """``[B, L]`` -> broadcastable against the output of a gather along ``dim``."""
    b, c, f, t = x.shape
    length = values.shape[1]
    if dim == 3:
        return values.reshape(b, 1, 1, length).expand(b, c, f, length)
    if dim == 2:
        return values.reshape(b, 1, length, 1).expand(b, c, length, t)
    raise ValueError(f"resample_axis: dim must be 2 (frequency) or 3 (time), got {dim}")


def _gather_axis(x: Tensor, index: Tensor, dim: int) -> Tensor:
    return x.gather(dim, _expand_axis(index, x, dim))


def segment_sums(frame_values: Tensor, length: int) -> Tensor:
    """Sums of every window of ``length`` consecutive frames via a cumulative sum.

    Args:
        frame_values: ``[B, T]``.
    Returns:
        ``[B, T - length + 1]``: entry ``o`` is ``frame_values[:, o:o + length].sum(1)``.
    """
    csum = torch.nn.functional.pad(frame_values.double().cumsum(dim=1), (1, 0))
    return (csum[:, length:] - csum[:, :-length]).to(frame_values.dtype)


def draw_offsets(
    x: Tensor,
    frames: int,
    energy_weighted: bool,
    norm_std: float | None = None,
    uniform_mix: float = 0.0,
) -> Tensor:
    """``[B]`` int64 offsets in ``[0, T - frames]`` of ``frames``-long segments of clips
    ``x [B, C, F, T]``: uniform, or with probability proportional to the segment's energy
    (blended with ``uniform_mix`` of the uniform distribution).

    A frame's energy is the mean over mels of ``exp(x * norm_std)``: with ``norm_std`` the
    dataset std of the log-mels this is the mel power up to a constant. Needs
    ``T >= frames + 1``."""
    b, t = x.shape[0], x.shape[-1]
    n_offsets = t - frames + 1
    if not energy_weighted:
        offsets = (torch.rand(b, device=x.device) * n_offsets).long()
        return offsets.clamp_(max=n_offsets - 1)
    # subtract the per-clip maximum first: exp never overflows and proportions stay
    scaled = x.detach().float() * (norm_std or 1.0)
    peak = scaled.flatten(1).amax(dim=1).reshape(-1, 1, 1, 1)
    energy = (scaled - peak).exp_().mean(dim=(1, 2))  # [B, T]
    weights = segment_sums(energy, frames).clamp_min(0.0)  # [B, n_offsets]
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-30)
    weights = (1.0 - uniform_mix) * weights + uniform_mix / n_offsets
    # argmax of weight / Exp(1) noise draws an offset with probability proportional to its
    # weight, like torch.multinomial, without the host read-back of the probabilities that
    # multinomial's accelerator kernel does
    return (weights / torch.empty_like(weights).exponential_()).argmax(dim=1)
