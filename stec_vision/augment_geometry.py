"""Geometry: random resized crop + flip as one batched affine resampling per example.

θ convention: each view records one 3x3 matrix ``θ`` in normalised coordinates (``[-1, 1]``,
``align_corners=False``) mapping **source coordinates to view coordinates** (the source
point ``s`` appears in the view at ``u = θ·s``); a horizontal flip negates θ's first row.
The sampling matrix for :func:`F.affine_grid` is ``θ⁻¹`` (view pixel ``u`` samples the
source at ``θ⁻¹·u``; there a flip negates only the entry ``[0, 0]``, as in the official
code). Then the core's ``θ_rel = θ_b·θ_a⁻¹`` maps view-a coordinates to view-b
coordinates, ``θ_rel·θ_a == θ_b``, and ``warp_affine(view_a, θ_rel)`` reproduces view b
wherever view b sees inside view a.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from stec.actions import ActionComponent, Affine, ViewParams, invert_affine
from stec.augment import Augmenter
from stec_vision.canvas import unpack_canvas

INTERPOLATIONS = ("bilinear", "nearest", "bicubic")


def to_float_images(x: Tensor, who: str = "augmenter") -> Tensor:
    """Check ``x`` is ``[B, 3, H, W]`` and return it as float in ``[0, 1]``.

    uint8 input is converted on its own device (``/255``); float input is returned as is.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{who}: expected images [B, 3, H, W], got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise ValueError(f"{who}: expected float images in [0, 1] or uint8, got dtype {x.dtype}")
    return x


def _pair(value: float | Sequence[float], key: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    values = tuple(float(v) for v in value)
    if len(values) != 2:
        raise ValueError(f"{key} must be a number or a pair (low, high), got {value!r}")
    return values  # type: ignore[return-value]


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        out = (size, size)
    else:
        out = tuple(int(s) for s in size)
        if len(out) != 2:
            raise ValueError(f"size must be an int or (height, width), got {size!r}")
    if min(out) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return out  # type: ignore[return-value]


def sampling_matrix(theta: Tensor) -> Tensor:
    """``θ⁻¹`` of affine matrices (last row ``[0, 0, 1]``): ``[B, 3, 3]`` -> ``[B, 3, 3]``.

    Closed form in θ's dtype (:func:`stec.actions.invert_affine`): no host synchronisation,
    and no float64 (which some accelerators lack).
    """
    return invert_affine(theta)


def warp_affine(
    x: Tensor,
    theta: Tensor,
    size: int | Sequence[int] | None = None,
    mode: str = "bilinear",
    padding_mode: str = "border",
) -> Tensor:
    """Resample images by source->view matrices ``θ``: ``[B, C, H, W]`` -> ``[B, C, h, w]``.

    The output pixel at normalised coordinate ``u`` takes the input at ``θ⁻¹·u``
    (``align_corners=False``, so coordinates do not depend on the resolution). Applied to
    view a with ``θ_rel = θ_b·θ_a⁻¹`` it reproduces view b (inside view a's field).
    """
    height, width = _size(size) if size is not None else (x.shape[-2], x.shape[-1])
    grid_theta = sampling_matrix(theta)[:, :2, :].to(x.dtype)
    grid = F.affine_grid(grid_theta, [x.shape[0], x.shape[1], height, width], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


class RandomResizedCropFlip(Augmenter):
    """RandomResizedCrop + horizontal flip as one affine resampling per example.

    Crop sampling follows torchvision's ``RandomResizedCrop`` (area fraction in ``scale``,
    log-uniform aspect ratio in ``ratio``, 10 attempts, then its centred fallback), all
    attempts drawn at once for the whole batch; crop sizes and positions are continuous.

    With ``canvas=True`` the input is a batch of packed canvases
    (:mod:`stec_vision.canvas`): whole images resized to ``C x C`` with their original
    sizes. Boxes are then sampled per image in original-pixel units (area as a share of
    ``H·W``, aspect ratio in original pixels), so each view is torchvision's crop of the
    original image, taken at the canvas's resolution.

    Records ``params[name]``: ``[B, 3, 3]`` source->view matrix θ (see the module doc).
    Component: :class:`stec.Affine` ``(name)`` with the paper's binning by default.

    Args:
        size: output size, int or ``(height, width)``.
        scale: range of the crop's area as a fraction of the source image.
        ratio: range of the crop's aspect ratio (width / height, in source pixels).
        flip_p: probability of a horizontal flip.
        interpolation: ``bilinear`` | ``nearest`` | ``bicubic``.
        n_bins, linear_range, translation_range: binning of the relative action.
        canvas: the input is packed canvases (see above) instead of images.
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        flip_p: float = 0.5,
        interpolation: str = "bilinear",
        name: str = "crop",
        n_bins: int = 6,
        linear_range: tuple[float, float] = (-2.0, 2.0),
        translation_range: tuple[float, float] = (-0.5, 0.5),
        attempts: int = 10,
        canvas: bool = False,
    ) -> None:
        super().__init__(p=1.0)
        self.size = _size(size)
        self.scale, self.ratio = _pair(scale, "scale"), _pair(ratio, "ratio")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {self.scale}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < low <= high, got {self.ratio}")
        if not 0.0 <= flip_p <= 1.0:
            raise ValueError(f"flip_p must lie in [0, 1], got {flip_p}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation={interpolation!r} is not one of {INTERPOLATIONS}")
        self.flip_p, self.interpolation, self.attempts = float(flip_p), interpolation, int(attempts)
        self.canvas = bool(canvas)
        self.component = Affine(name, n_bins, linear_range, translation_range)
        self.name = name

    def components(self) -> list[ActionComponent]:
        return [self.component]

    def sample_boxes(
        self, batch: int, height: float | Tensor, width: float | Tensor, device: torch.device
    ) -> Tensor:
        """Crop boxes in normalised source coordinates: ``[B, 4]`` = (cx, cy, half_w, half_h).

        ``height`` and ``width`` are the source size in pixels, one for the batch or a
        ``[B]`` tensor per image. A box spans ``[cx - half_w, cx + half_w]`` horizontally
        (the image spans [-1, 1]).
        """
        h = torch.as_tensor(height, dtype=torch.float32, device=device).expand(batch)
        w = torch.as_tensor(width, dtype=torch.float32, device=device).expand(batch)
        lo_s, hi_s = self.scale
        lo_r, hi_r = math.log(self.ratio[0]), math.log(self.ratio[1])
        min_ratio, max_ratio = self.ratio
        shape = (batch, self.attempts)
        area = (h * w).unsqueeze(1)
        target = area * (lo_s + (hi_s - lo_s) * torch.rand(shape, device=device))
        aspect = torch.exp(lo_r + (hi_r - lo_r) * torch.rand(shape, device=device))
        crop_w = torch.sqrt(target * aspect)
        crop_h = torch.sqrt(target / aspect)
        ok = (crop_w <= w.unsqueeze(1)) & (crop_h <= h.unsqueeze(1))
        # the first successful attempt of each row (argmax returns the first maximum)
        first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)
        crop_w = crop_w.gather(1, first).squeeze(1)
        crop_h = crop_h.gather(1, first).squeeze(1)
        # torchvision's fallback: the largest centred crop with a ratio inside the range
        in_ratio = w / h
        too_tall, too_wide = in_ratio < min_ratio, in_ratio > max_ratio
        fb_w = torch.where(too_wide, h * max_ratio, w)
        fb_h = torch.where(too_tall, w / min_ratio, h)
        found = ok.any(dim=1)
        half_w = torch.where(found, crop_w, fb_w) / w
        half_h = torch.where(found, crop_h, fb_h) / h
        centre = (2.0 * torch.rand(batch, 2, device=device) - 1.0) * found.unsqueeze(1)
        cx = centre[:, 0] * (1.0 - half_w)
        cy = centre[:, 1] * (1.0 - half_h)
        return torch.stack([cx, cy, half_w, half_h], dim=1)

    @staticmethod
    def boxes_to_theta(boxes: Tensor, flip: Tensor) -> Tensor:
        """Boxes ``[B, 4]`` (cx, cy, half_w, half_h) and flips ``[B]`` bool -> source->view
        matrices ``[B, 3, 3]``: the view shows the box, mirrored where ``flip``."""
        cx, cy, half_w, half_h = boxes.unbind(1)
        sign = 1.0 - 2.0 * flip.to(boxes.dtype)
        theta = torch.zeros(boxes.shape[0], 3, 3, device=boxes.device, dtype=boxes.dtype)
        # view u = (s - c) / half, and a flip negates the whole first row
        theta[:, 0, 0] = sign / half_w
        theta[:, 0, 2] = -sign * cx / half_w
        theta[:, 1, 1] = 1.0 / half_h
        theta[:, 1, 2] = -cy / half_h
        theta[:, 2, 2] = 1.0
        return theta

    def sample_theta(
        self, batch: int, height: float | Tensor, width: float | Tensor, device: torch.device
    ) -> Tensor:
        """Source->view matrices ``[B, 3, 3]`` (float32) of random crops and flips of sources
        of ``height x width`` pixels (scalars or ``[B]`` tensors)."""
        boxes = self.sample_boxes(batch, height, width, device)
        flip = torch.rand(batch, device=device) < self.flip_p
        return self.boxes_to_theta(boxes, flip)

    def forward(self, x: Tensor) -> tuple[Tensor, ViewParams]:
        """``[B, 3, H, W]`` (or packed canvases ``[B, 3, C + 1, C]`` with ``canvas=True``) ->
        ``([B, 3, *size], {name: θ [B, 3, 3]})``."""
        sizes = None
        if self.canvas:
            x, sizes = unpack_canvas(x)
        x = to_float_images(x, type(self).__name__)
        batch, _, height, width = x.shape
        if sizes is not None:
            height, width = sizes[:, 0], sizes[:, 1]
        theta = self.sample_theta(batch, height, width, x.device)
        out = warp_affine(x, theta, self.size, mode=self.interpolation)
        if self.interpolation == "bicubic":
            out = out.clamp_(0.0, 1.0)
        return out, self.component.record(source_to_view=theta)
