"""Time-axis augmenters: segment cropping (optionally energy-aware) and time stretching."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stec.actions import ActionComponent, Continuous, ViewParams
from stec.augment import Augmenter
from stec_audio.augment.ops import (
    check_fill,
    check_range,
    check_spectrogram,
    draw_offsets,
    keep_where,
    resample_axis,
    uniform,
)


class TimeCrop(Augmenter):
    """Crop a segment of ``frames`` frames out of whole clips, at a random offset per example.

    This is the first augmenter of an audio pipeline: it turns whole clips ``[B, C, F, T]``
    into training segments ``[B, C, F, frames]``. Clips shorter than ``frames`` are padded
    on the right with ``pad_value`` (offset 0).

    Recorded parameter (``[B, 1]`` under ``name``): the offset of the segment's first frame
    in units of the segment length, ``t / frames``. The relative action from view a to
    view b, ``(t_b - t_a) / frames``, is a ``Continuous(relation="difference")`` binned over
    ``action_range`` (choose it from the clip length: a 5 s clip (501 frames) cut into
    96-frame segments has offsets in ``[0, 4.2]``, so differences in ``[-4.2, 4.2]``).

    ``p`` is the probability of a *random* offset; the other examples take the centre
    segment and record its true offset, so relative actions stay exact.

    ``energy_weighted``: draw the offset with probability proportional to the segment's
    energy instead of uniformly, so that crops of a long clip with a short event do not
    keep landing on background. A frame's energy is the mean over mels of
    ``exp(x * norm_std)``: with ``norm_std`` the dataset std of the log-mels this is the
    mel power (up to a constant), the true energy. Without ``norm_std`` it is ``exp(x)``,
    the power raised to ``1 / std``, a much softer weighting (a 20 dB louder event then
    weighs about 2.8x more for std 4.5). ``uniform_mix`` blends in the uniform
    distribution, so quiet parts of a clip keep some chance.
    """

    def __init__(
        self,
        frames: int = 96,
        p: float = 1.0,
        energy_weighted: bool = False,
        norm_std: float | None = None,
        uniform_mix: float = 0.0,
        pad_value: float = 0.0,
        action_range: tuple[float, float] = (-4.0, 4.0),
        n_bins: int = 6,
        name: str = "time_crop",
    ) -> None:
        super().__init__(p)
        who = type(self).__name__
        if int(frames) != frames or frames < 1:
            raise ValueError(f"{who}: frames must be a positive integer, got {frames}")
        if norm_std is not None and not norm_std > 0:
            raise ValueError(f"{who}: norm_std must be positive, got {norm_std}")
        if not 0.0 <= uniform_mix <= 1.0:
            raise ValueError(f"{who}: uniform_mix must lie in [0, 1], got {uniform_mix}")
        self.frames, self.energy_weighted = int(frames), bool(energy_weighted)
        self.norm_std = None if norm_std is None else float(norm_std)
        self.uniform_mix = float(uniform_mix)
        self.pad_value = float(pad_value)
        lo, hi = check_range(who, "action_range", action_range)
        self.component = Continuous(name, lo, hi, n_bins=n_bins, relation="difference")

    def components(self) -> list[ActionComponent]:
        return [self.component]

    def sample_offsets(self, x: Tensor) -> Tensor:
        """``[B]`` int64 offsets in ``[0, T - frames]`` for clips ``x [B, C, F, T]``."""
        b, t = x.shape[0], x.shape[-1]
        n_offsets = t - self.frames + 1
        if n_offsets <= 1:
            return torch.zeros(b, dtype=torch.long, device=x.device)
        centre = torch.full((b,), (t - self.frames) // 2, dtype=torch.long, device=x.device)
        offsets = draw_offsets(
            x, self.frames, self.energy_weighted, self.norm_std, self.uniform_mix
        )
        return keep_where(self.applied(b, x.device), offsets, centre)

    def forward(self, x: Tensor) -> tuple[Tensor, ViewParams]:
        """``[B, C, F, T] -> ([B, C, F, frames], {name: [B, 1] offset / frames})``."""
        check_spectrogram(x, type(self).__name__)
        b, c, f, t = x.shape
        if t < self.frames:
            x = torch.nn.functional.pad(x, (0, self.frames - t), value=self.pad_value)
        offsets = self.sample_offsets(x)
        # every window as a view of x, then one window per example: no [B, C, F, frames]
        # int64 index as a gather needs (about 1.7x faster on the CPU)
        windows = x.unfold(3, self.frames, 1)  # [B, C, F, T - frames + 1, frames]
        crop = windows[torch.arange(b, device=x.device), :, :, offsets]
        return crop, {self.component.name: (offsets.float() / self.frames).unsqueeze(1)}


class TimeStretch(Augmenter):
    """Stretch (``s > 1``) or compress (``s < 1``) time around the centre of the view.

    The output keeps the input's length: ``out[t] = in[c + (t - c) / s]`` with ``c`` the
    centre frame, by linear interpolation along time. Where a compressed view runs past the
    input, ``fill`` is used (0 = the dataset mean after normalisation, or ``"edge"``).

    ``s`` is drawn log-uniformly from ``scale``. Recorded parameter (``[B, 1]``): ``s``;
    the relative action ``log(s_b / s_a)`` is a ``Continuous(relation="log_ratio")`` binned
    over ``±log(max / min)`` of ``scale``. Untouched views record ``s = 1``.
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.8, 1.25),
        p: float = 1.0,
        fill: float | str = 0.0,
        n_bins: int = 6,
        name: str = "time_stretch",
    ) -> None:
        super().__init__(p)
        who = type(self).__name__
        lo, hi = check_range(who, "scale", scale)
        if lo <= 0:
            raise ValueError(f"{who}: scale=({lo}, {hi}) must be positive")
        self.scale, self.fill = (lo, hi), check_fill(who, fill)
        span = max(math.log(hi / lo), 1e-3)
        self.component = Continuous(name, -span, span, n_bins=n_bins, relation="log_ratio")

    def components(self) -> list[ActionComponent]:
        return [self.component]

    def forward(self, x: Tensor) -> tuple[Tensor, ViewParams]:
        """``[B, C, F, T] -> ([B, C, F, T], {name: [B, 1] stretch factor})``."""
        check_spectrogram(x, type(self).__name__)
        b, t = x.shape[0], x.shape[-1]
        applied = self.applied(b, x.device)
        lo, hi = self.scale
        s = uniform(b, math.log(lo), math.log(hi), x.device).exp()
        s = torch.where(applied, s, torch.ones_like(s))
        centre = (t - 1) / 2.0
        steps = torch.arange(t, device=x.device, dtype=torch.float32) - centre
        pos = centre + steps[None, :] / s[:, None]
        out = resample_axis(x, pos, dim=3, fill=self.fill)
        if self.p < 1.0:  # untouched examples stay bit-exact
            out = keep_where(applied, out, x)
        return out, {self.component.name: s.unsqueeze(1)}
