"""Time-frequency augmenters: random resize crop (affine), frequency shift and SpecAugment."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stec.actions import ActionComponent, Affine, Continuous, ViewParams
from stec.augment import Augmenter
from stec_audio.augment.ops import (
    check_fill,
    check_range,
    check_spectrogram,
    keep_where,
    resample_axis,
    uniform,
)

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")

# Binning of the relative affine of two BYOL-A crops (see RandomResizeCrop). With the
# default scales the time ratio w_a / w_b spans [0.4, 2.5] (1-99 %: 0.46-2.19) and the
# frequency ratio [0.6, 1.67]; the time shift (c_a - c_b) / w_b spans about ±2.4 (5-95 %:
# ±0.84) and the frequency shift ±1.0 (5-95 %: ±0.28). One range serves both axes. Over
# [0.4, 2.2] and [-1, 1] (6 bins) the time ratio and time shift occupy all six bins (none
# above 33 %); the frequency entries fall mostly in two (80-93 %). Vision's [-2, 2] and
# [-0.5, 0.5] would put most time ratios and frequency ratios in one bin, and about half of
# the time shifts in the two clamped edge bins.
RRC_LINEAR_RANGE = (0.4, 2.2)
RRC_TRANSLATION_RANGE = (-1.0, 1.0)


class RandomResizeCrop(Augmenter):
    """BYOL-A's random resize crop, as one affine map per example (``grid_sample``).

    The input (``[B, C, F, T]``) is placed at the centre of a virtual canvas of
    ``virtual_crop_scale = (freq, time)`` times its size, zero outside (0 = the dataset mean
    after normalisation, as in BYOL-A). A crop of ``U(freq_scale) x U(time_scale)`` times
    the input size, clipped to the canvas, is taken at a uniform position in the canvas and
    resized back to the input size (``interpolation``: bicubic as in BYOL-A, or bilinear).

    In normalised coordinates (``[-1, 1]`` spans the input, pixel-edge convention,
    ``align_corners=False``) the crop is the sampling matrix
    ``θ = [[w, 0, c_t], [0, h, c_f], [0, 0, 1]]`` with ``x`` along time and ``y`` along
    frequency: output coordinate ``u`` samples the input at ``θ u``. It is recorded as what
    it is, a view -> source map (:meth:`~stec.actions.Affine.record` stores its inverse,
    the source -> view map), so the action is the egocentric relative map from view-a to
    view-b coordinates, ``θ_b⁻¹ θ_a``: time ratio ``w_a / w_b`` and shift
    ``(c_a - c_b) / w_b`` on each axis, which depend on how the two crops relate and not on
    where they sit. Its four targets (the off-diagonal entries are always 0 and are not
    predicted) are binned by default over ``linear_range = (0.4, 2.2)`` and
    ``translation_range = (-1, 1)`` (see ``RRC_LINEAR_RANGE``). Untouched views record the
    identity and are returned unchanged.
    """

    def __init__(
        self,
        virtual_crop_scale: tuple[float, float] = (1.0, 1.5),
        freq_scale: tuple[float, float] = (0.6, 1.5),
        time_scale: tuple[float, float] = (0.6, 1.5),
        p: float = 1.0,
        interpolation: str = "bicubic",
        linear_range: tuple[float, float] = RRC_LINEAR_RANGE,
        translation_range: tuple[float, float] = RRC_TRANSLATION_RANGE,
        n_bins: int = 6,
        name: str = "rrc",
    ) -> None:
        super().__init__(p)
        who = type(self).__name__
        try:
            self.canvas = tuple(float(v) for v in virtual_crop_scale)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{who}: virtual_crop_scale must be a pair (freq, time)") from err
        if len(self.canvas) != 2 or min(self.canvas) < 1.0:
            raise ValueError(
                f"{who}: virtual_crop_scale={virtual_crop_scale!r} must be a pair (freq, time) of "
                "values >= 1 (the canvas holds the whole input)"
            )
        self.freq_scale = check_range(who, "freq_scale", freq_scale, low=1e-3)
        self.time_scale = check_range(who, "time_scale", time_scale, low=1e-3)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"{who}: interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}"
            )
        self.interpolation = interpolation
        self.component = Affine(
            name,
            n_bins=n_bins,
            linear_range=tuple(linear_range),
            translation_range=tuple(translation_range),
        )

    def components(self) -> list[ActionComponent]:
        return [self.component]

    def sample_theta(self, batch: int, device: torch.device) -> Tensor:
        """``[B, 3, 3]`` crop matrices (identity where the augmentation is not applied)."""
        canvas_f, canvas_t = self.canvas
        h = uniform(batch, *self.freq_scale, device).clamp(max=canvas_f)
        w = uniform(batch, *self.time_scale, device).clamp(max=canvas_t)
        # the crop's half-extent is h (w) and must stay inside the canvas' half-extent
        c_f = (torch.rand(batch, device=device) * 2 - 1) * (canvas_f - h)
        c_t = (torch.rand(batch, device=device) * 2 - 1) * (canvas_t - w)
        theta = torch.zeros(batch, 3, 3, device=device)
        theta[:, 0, 0], theta[:, 0, 2] = w, c_t
        theta[:, 1, 1], theta[:, 1, 2] = h, c_f
        theta[:, 2, 2] = 1.0
        eye = torch.eye(3, device=device).expand(batch, 3, 3)
        return keep_where(self.applied(batch, device), theta, eye)

    def forward(self, x: Tensor) -> tuple[Tensor, ViewParams]:
        """``[B, C, F, T] -> ([B, C, F, T], {name: [B, 3, 3] θ})``."""
        check_spectrogram(x, type(self).__name__)
        theta = self.sample_theta(x.shape[0], x.device)
        grid = diagonal_grid(theta, x.shape[2], x.shape[3]).to(x.dtype)
        out = F.grid_sample(
            x, grid, mode=self.interpolation, padding_mode="zeros", align_corners=False
        )
        if self.p < 1.0:  # untouched examples stay bit-exact
            identity = (theta == torch.eye(3, device=x.device)).flatten(1).all(dim=1)
            out = keep_where(identity, x, out)
        # θ samples the input (view -> source); the record states it
        return out, self.component.record(view_to_source=theta)


def diagonal_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """``F.affine_grid(theta[:, :2], align_corners=False)`` for axis-aligned maps, without
    the batched matrix product over every grid point.

    Args:
        theta: ``[B, 3, 3]`` with zero off-diagonal linear entries.
    Returns:
        ``[B, height, width, 2]`` sampling grid; ``[..., 0]`` is the time (x) coordinate.
    """
    dev, dtype = theta.device, theta.dtype
    u = (2 * torch.arange(width, device=dev, dtype=dtype) + 1) / width - 1
    v = (2 * torch.arange(height, device=dev, dtype=dtype) + 1) / height - 1
    gx = theta[:, 0, 0, None, None] * u[None, None, :] + theta[:, 0, 2, None, None]  # [B, 1, W]
    gy = theta[:, 1, 1, None, None] * v[None, :, None] + theta[:, 1, 2, None, None]  # [B, H, 1]
    return torch.stack(torch.broadcast_tensors(gx, gy), dim=-1)


class FrequencyShift(Augmenter):
    """Shift the spectrogram along the mel axis by ``k`` bins (``k > 0``: towards higher mels).

    ``out[f] = in[f - k]``; integer ``k`` by default, fractional ``k`` (``integer=False``)
    by linear interpolation. Bins shifted in from outside get ``fill`` (0 = the dataset mean
    after normalisation, or ``"edge"``); the content is not wrapped around, since a roll
    would move the highest bands into the lowest. This is a shift on the mel scale, not a
    waveform pitch shift (no resynthesis).

    ``k ~ U(-max_shift, max_shift)``. Recorded parameter (``[B, 1]``): ``k`` in bins; the
    relative action ``k_b - k_a`` is a ``Continuous(relation="difference")`` over
    ``±2 max_shift``. Untouched views record 0.
    """

    def __init__(
        self,
        max_shift: float = 2.0,
        p: float = 1.0,
        integer: bool = True,
        fill: float | str = 0.0,
        n_bins: int = 6,
        name: str = "freq_shift",
    ) -> None:
        super().__init__(p)
        who = type(self).__name__
        if not max_shift > 0:
            raise ValueError(f"{who}: max_shift must be > 0, got {max_shift}")
        self.max_shift, self.integer, self.fill = (
            float(max_shift),
            bool(integer),
            check_fill(who, fill),
        )
        if self.integer and self.max_shift < 1:
            raise ValueError(f"{who}: max_shift must be >= 1 for integer shifts, got {max_shift}")
        span = 2 * self.max_shift
        self.component = Continuous(name, -span, span, n_bins=n_bins, relation="difference")

    def components(self) -> list[ActionComponent]:
        return [self.component]

    def forward(self, x: Tensor) -> tuple[Tensor, ViewParams]:
        """``[B, C, F, T] -> ([B, C, F, T], {name: [B, 1] shift in bins})``."""
        check_spectrogram(x, type(self).__name__)
        b, f = x.shape[0], x.shape[2]
        if self.integer:
            m = int(self.max_shift)
            k = torch.randint(-m, m + 1, (b,), device=x.device).float()
        else:
            k = uniform(b, -self.max_shift, self.max_shift, x.device)
        k = torch.where(self.applied(b, x.device), k, torch.zeros_like(k))
        pos = torch.arange(f, device=x.device, dtype=torch.float32)[None, :] - k[:, None]
        # k = 0 reads every bin at an integer position: the input comes back exactly
        out = resample_axis(x, pos, dim=2, fill=self.fill)
        return out, {self.component.name: k.unsqueeze(1)}


class SpecAugmentMask(Augmenter):
    """SpecAugment time and frequency masks (set to ``fill``, 0 = the dataset mean).

    Each view gets ``time_masks`` masks of width ``U{0..max_time_width}`` frames and
    ``freq_masks`` masks of width ``U{0..max_freq_width}`` bins, each at a uniform start.

    Masking is not invertible: nothing maps the masked view a onto view b. So the action
    records each view's masks and the inverse model predicts the *pair*: for every mask,
    ``start / axis_length`` and ``width / max_width`` (both in ``[0, 1]``), as a
    ``Continuous(relation="pair")`` with ``dim = 2 * n_masks`` binned over ``[0, 1]``
    (components ``time_mask`` and ``freq_mask``, parameters ``[B, 2 * n_masks]`` ordered
    ``[start_1, width_1, start_2, width_2, ...]``). A view without a mask (``p``, or
    width 0 drawn) records width 0 and start 0.
    """

    def __init__(
        self,
        time_masks: int = 1,
        max_time_width: int = 20,
        freq_masks: int = 1,
        max_freq_width: int = 8,
        p: float = 1.0,
        fill: float = 0.0,
        n_bins: int = 6,
        time_name: str = "time_mask",
        freq_name: str = "freq_mask",
    ) -> None:
        super().__init__(p)
        who = type(self).__name__
        for key, value in (
            ("time_masks", time_masks),
            ("max_time_width", max_time_width),
            ("freq_masks", freq_masks),
            ("max_freq_width", max_freq_width),
        ):
            if int(value) != value or value < 0:
                raise ValueError(f"{who}: {key} must be a non-negative integer, got {value}")
        if time_masks and max_time_width < 1 or freq_masks and max_freq_width < 1:
            raise ValueError(f"{who}: a maximum mask width must be >= 1 when masks are enabled")
        if time_masks + freq_masks == 0:
            raise ValueError(f"{who}: enable at least one time or frequency mask")
        self.fill = float(fill)
        self.axes: list[tuple[int, int, Continuous]] = []  # (tensor dim, max width, component)
        if time_masks:
            comp = Continuous(
                time_name, 0.0, 1.0, n_bins=n_bins, dim=2 * int(time_masks), relation="pair"
            )
            self.axes.append((3, int(max_time_width), comp))
        if freq_masks:
            comp = Continuous(
                freq_name, 0.0, 1.0, n_bins=n_bins, dim=2 * int(freq_masks), relation="pair"
            )
            self.axes.append((2, int(max_freq_width), comp))

    def components(self) -> list[ActionComponent]:
        return [comp for _, _, comp in self.axes]

    def forward(self, x: Tensor) -> tuple[Tensor, ViewParams]:
        """``[B, C, F, T] -> ([B, C, F, T], {time_mask: [B, 2 n_t], freq_mask: [B, 2 n_f]})``."""
        check_spectrogram(x, type(self).__name__)
        b, dev = x.shape[0], x.device
        applied = self.applied(b, dev)
        params: ViewParams = {}
        masked = torch.zeros(b, 1, x.shape[2], x.shape[3], dtype=torch.bool, device=dev)
        for dim, max_width, comp in self.axes:
            n_axis, n_masks = x.shape[dim], comp.dim // 2
            limit = min(max_width, n_axis)
            width = (torch.rand(b, n_masks, device=dev) * (limit + 1)).long().clamp_(max=limit)
            width = width * applied[:, None]
            start = (torch.rand(b, n_masks, device=dev) * (n_axis - width + 1)).long()
            start = torch.minimum(start, n_axis - width) * (width > 0)
            steps = torch.arange(n_axis, device=dev)
            hit = ((steps >= start[..., None]) & (steps < (start + width)[..., None])).any(dim=1)
            masked |= hit[:, None, None, :] if dim == 3 else hit[:, None, :, None]
            record = torch.stack([start.float() / n_axis, width.float() / max_width], dim=2)
            params[comp.name] = record.reshape(b, 2 * n_masks)
        return x.masked_fill(masked, self.fill), params
