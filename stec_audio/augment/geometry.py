"""One composed time-frequency map per view: crop, time scale, pitch and frequency scale.

A view of a whole-clip log-mel is made by a single resampling whose map is an affine
function on the (time, frequency) plane, in coordinates where every geometric action of
the audio pipeline is affine and composes exactly:

- **time** in crop lengths (``frames`` input frames): the crop's offset, BYOL-A's
  random-resize time scale and a time stretch are one scale and one shift;
- **frequency** in semitones: a pitch shift multiplies every frequency by ``2^(s/12)``,
  a shift of ``s`` semitones; a frequency scale ``h`` about ``f_ref`` maps an interval of
  ``n`` semitones in the source to ``n / h`` semitones in the view (BYOL-A's scaling of
  the mel axis is this warp in all but name where the mel scale is logarithmic, above
  about 700 Hz, and a mixture of it and a shift below).

The view's sampling map (view -> source) is ``θ = [[w, 0, c], [0, h, b], [0, 0, 1]]``:
view time ``τ'`` (crop lengths from the view's centre) reads source time ``w τ' + c``
(crop lengths from the clip's start) and view pitch ``φ'`` (semitones from ``f_ref``) reads
source pitch ``h φ' + b``. It is recorded as an :class:`~stec.actions.Affine`, so the
action is the exact relative map ``θ_b⁻¹ θ_a`` from view-a to view-b coordinates: the
time ratio ``w_a / w_b`` and shift ``(c_a - c_b) / w_b`` crop lengths, the interval ratio
``h_a / h_b`` and the pitch shift ``(b_a - b_b) / h_b`` semitones (``s_b - s_a`` for pure
pitch shifts).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from stec.actions import ActionComponent, Affine, ViewParams
from stec.augment import Augmenter
from stec_audio.augment.ops import check_range, check_spectrogram, draw_offsets, uniform
from stec_audio.augment.pitch import hz_to_mel, mel_axis

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


class TimeFrequencyCrop(Augmenter):
    """Crop, stretch and pitch-shift whole clips ``[B, C, F, T]`` into views
    ``[B, C, F, frames]`` with one resampling, recording the composed map.

    Time: each view covers ``w * frames`` input frames (``w`` log-uniform in
    ``time_scale``; ``w < 1`` stretches, ``w > 1`` compresses) centred at ``c``. With
    ``span`` set, both views of a clip are placed around one *anchor* segment drawn once
    per training step (energy-weighted with ``energy_weighted``, as
    :class:`~stec_audio.augment.time.TimeCrop` draws its offsets), each view's centre
    ``U(-span/2, span/2)`` crop lengths from it, so that the two views overlap and their
    relative time shift can be read from their content; ``span=None`` draws every view's
    crop independently anywhere in the clip. A view that would run past the clip is moved
    inside it (a clip shorter than the view is centred and padded with ``fill``).

    Frequency: ``s ~ U(-max_semitones, max_semitones)`` semitones of pitch shift and an
    interval scale ``h`` log-uniform in ``freq_scale`` about ``f_ref`` (the centre
    frequency of the middle mel bin), read through the front end's mel <-> Hz mapping
    (``n_mels``, ``f_min``, ``f_max``, HTK mel). Bins whose source lies outside the band get
    ``fill`` (0 = the dataset mean after normalisation).

    ``p``: the probability of the random warp (time scale, offset from the anchor, pitch
    and frequency scale); other examples take their anchor segment as it is.

    Targets (an ``Affine`` named ``name`` with per-axis bins): ``scale_x`` (time ratio,
    when ``time_scale`` is a range), ``shift_x`` (time shift in crop lengths, binned over
    ``±time_shift_range``), ``scale_y`` (interval ratio, when ``freq_scale`` is a range),
    ``shift_y`` (pitch shift in semitones, over ``±2 max_semitones`` unless given).
    """

    def __init__(
        self,
        frames: int = 96,
        p: float = 1.0,
        span: float | None = 1.0,
        time_scale: tuple[float, float] = (1.0, 1.0),
        max_semitones: float = 12.0,
        freq_scale: tuple[float, float] = (1.0, 1.0),
        energy_weighted: bool = True,
        norm_std: float | None = None,
        uniform_mix: float = 0.1,
        n_mels: int = 64,
        f_min: float = 60.0,
        f_max: float = 7800.0,
        interpolation: str = "bilinear",
        fill: float = 0.0,
        time_shift_range: float | None = None,
        n_bins: int = 6,
        name: str = "geometry",
    ) -> None:
        super().__init__(p)
        who = type(self).__name__
        if int(frames) != frames or frames < 1:
            raise ValueError(f"{who}: frames must be a positive integer, got {frames}")
        if span is not None and not span >= 0:
            raise ValueError(f"{who}: span must be >= 0 crop lengths (or null), got {span}")
        if not max_semitones >= 0:
            raise ValueError(f"{who}: max_semitones must be >= 0, got {max_semitones}")
        if norm_std is not None and not norm_std > 0:
            raise ValueError(f"{who}: norm_std must be positive, got {norm_std}")
        if not 0.0 <= uniform_mix <= 1.0:
            raise ValueError(f"{who}: uniform_mix must lie in [0, 1], got {uniform_mix}")
        if int(n_mels) != n_mels or n_mels < 2 or not 0 <= f_min < f_max:
            raise ValueError(
                f"{who}: need n_mels >= 2 and 0 <= f_min < f_max, got {n_mels}, {f_min}, {f_max}"
            )
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"{who}: interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}"
            )
        self.frames, self.span = int(frames), None if span is None else float(span)
        self.time_scale = check_range(who, "time_scale", time_scale, low=1e-3)
        self.freq_scale = check_range(who, "freq_scale", freq_scale, low=1e-3)
        self.max_semitones = float(max_semitones)
        self.energy_weighted, self.uniform_mix = bool(energy_weighted), float(uniform_mix)
        self.norm_std = None if norm_std is None else float(norm_std)
        self.interpolation, self.fill = interpolation, float(fill)
        self.mel_first, self.mel_step, centres = mel_axis(int(n_mels), f_min, f_max)
        self.f_ref = float(centres[int(n_mels) // 2])
        # every view bin's pitch in semitones from f_ref (float64 for exact round trips)
        self.register_buffer(
            "bin_semitones", 12.0 * torch.log2(centres / self.f_ref), persistent=False
        )
        self.component = Affine(
            name,
            n_bins=n_bins,
            linear_range=(ratio_range(self.time_scale), ratio_range(self.freq_scale)),
            translation_range=(
                symmetric(time_shift_range or max(self.span or 0.0, 0.5)),
                symmetric(2 * self.max_semitones or 1.0),
            ),
            targets=self._targets(),
        )
        self._in_step, self._anchor = False, None

    def _targets(self) -> list[str]:
        targets = ["shift_x"]
        if self.time_scale[0] < self.time_scale[1]:
            targets.insert(0, "scale_x")
        if self.freq_scale[0] < self.freq_scale[1]:
            targets.append("scale_y")
        if self.max_semitones > 0 or self.freq_scale[0] < self.freq_scale[1]:
            targets.append("shift_y")
        return targets

    def components(self) -> list[ActionComponent]:
        return [self.component]

    @contextmanager
    def one_step(self) -> Iterator[None]:
        """The calls inside make one training step: with ``span`` set, both views of a clip
        are placed around the same anchor, drawn by the first call."""
        if self._in_step:
            yield
            return
        self._in_step, self._anchor = True, None
        try:
            yield
        finally:
            self._in_step, self._anchor = False, None

    def anchor_centres(self, x: Tensor) -> Tensor:
        """``[B]`` centres (in input frames) of a ``frames``-long segment of each clip."""
        b, t = x.shape[0], x.shape[-1]
        n_offsets = t - self.frames + 1
        if n_offsets <= 1:
            return torch.full((b,), t / 2.0, device=x.device)
        offsets = draw_offsets(
            x, self.frames, self.energy_weighted, self.norm_std, self.uniform_mix
        )
        return offsets.float() + self.frames / 2.0

    def _anchors(self, x: Tensor) -> Tensor:
        shared = self.span is not None and self._in_step
        if shared and self._anchor is not None and self._anchor.shape[0] == x.shape[0]:
            return self._anchor
        anchor = self.anchor_centres(x)
        if shared:
            self._anchor = anchor
        return anchor

    def sample_theta(self, x: Tensor) -> Tensor:
        """``[B, 3, 3]`` sampling maps (view -> source) for clips ``x [B, C, F, T]``."""
        b, t, dev = x.shape[0], x.shape[-1], x.device
        applied = self.applied(b, dev)
        w = log_uniform(b, self.time_scale, dev)
        h = log_uniform(b, self.freq_scale, dev)
        s = uniform(b, -self.max_semitones, self.max_semitones, dev)
        jitter = uniform(b, -(self.span or 0.0) / 2, (self.span or 0.0) / 2, dev)
        w, h = torch.where(applied, w, 1.0), torch.where(applied, h, 1.0)
        s, jitter = s * applied, jitter * applied
        centre = self._anchors(x) + jitter * self.frames
        half = w * self.frames / 2.0
        inside = torch.minimum(torch.maximum(centre, half), t - half)
        centre = torch.where(2 * half <= t, inside, torch.full_like(centre, t / 2.0))
        # float64 where the device has it: the relative map is then exact to rounding
        theta = torch.zeros(b, 3, 3, device=dev, dtype=_precise_dtype(dev))
        theta[:, 0, 0], theta[:, 0, 2] = w, centre / self.frames
        theta[:, 1, 1], theta[:, 1, 2] = h, -s
        theta[:, 2, 2] = 1.0
        return theta

    def grid(self, theta: Tensor, n_mels: int, t: int) -> Tensor:
        """``F.grid_sample`` grid ``[B, F, frames, 2]`` of the sampling maps ``theta``."""
        dev = theta.device
        view_time = torch.arange(self.frames, device=dev, dtype=theta.dtype) + 0.5
        view_time = view_time / self.frames - 0.5  # crop lengths from the view's centre
        src_frame = (theta[:, 0, 0, None] * view_time + theta[:, 0, 2, None]) * self.frames
        gx = 2.0 * src_frame / t - 1.0  # [B, frames]; frame i spans [i, i + 1)
        bins = self.bin_semitones.to(dev, theta.dtype)
        semitones = theta[:, 1, 1, None] * bins + theta[:, 1, 2, None]
        src_mel = hz_to_mel(self.f_ref * torch.exp2(semitones / 12.0))
        src_bin = (src_mel - self.mel_first) / self.mel_step  # fractional bin index
        gy = (2.0 * src_bin + 1.0) / n_mels - 1.0  # [B, F]
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
        return grid.float()

    def forward(self, x: Tensor) -> tuple[Tensor, ViewParams]:
        """``[B, C, F, T] -> ([B, C, F, frames], {name: [B, 3, 3] θ, ...})``."""
        check_spectrogram(x, type(self).__name__)
        n_mels = self.bin_semitones.shape[0]
        if x.shape[2] != n_mels:
            raise ValueError(
                f"{type(self).__name__}: built for {n_mels} mel bins, got {x.shape[2]}"
            )
        theta = self.sample_theta(x)
        grid = self.grid(theta, n_mels, x.shape[-1]).to(x.dtype)
        view = x if self.fill == 0.0 else x - self.fill
        out = F.grid_sample(
            view, grid, mode=self.interpolation, padding_mode="zeros", align_corners=False
        )
        if self.fill != 0.0:
            out = out + self.fill
        return out, self.component.record(view_to_source=theta)


def log_uniform(batch: int, bounds: tuple[float, float], device: torch.device) -> Tensor:
    """``[B]`` draws whose log is uniform over ``log(bounds)`` (1 draw = the bound if fixed)."""
    lo, hi = bounds
    return uniform(batch, math.log(lo), math.log(hi), device).exp()


def ratio_range(bounds: tuple[float, float]) -> tuple[float, float]:
    """Bins of the ratio of two log-uniform draws from ``bounds``: ``[lo/hi, hi/lo]``."""
    lo, hi = bounds
    return (lo / hi, hi / lo) if lo < hi else (0.5, 2.0)


def symmetric(reach: float) -> tuple[float, float]:
    return (-float(reach), float(reach))


def _precise_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64
