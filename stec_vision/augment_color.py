"""Photometric augmenters: colour jitter in a random order, grayscale, blur, solarisation.

All ops follow torchvision's definitions (``adjust_brightness/contrast/saturation/hue``,
``rgb_to_grayscale``, ``gaussian_blur``, ``solarize``) but take **one parameter per example**
and run on the whole batch at once. Inputs are ``[B, 3, H, W]`` float in ``[0, 1]`` (uint8
is converted on the device).

Non-invertible ops (grayscale, solarisation) record a 0/1 flag per view. By default the
flag is the action (``stec.Binary(name, relation="pair")``: the inverse model predicts the
pair of flags). With ``mask_noninvertible=True`` the op declares no component instead and
:class:`stec_vision.augment_presets.VisionCompose` marks every *other* component of a view
where the op was applied as invalid (``"<component>.valid" = False``), which masks the
pair (a, b) out of the action loss when either view was hit: the official code's
treatment of solarised pairs.
"""

from __future__ import annotations

import itertools
import math
from abc import abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from stec.actions import ActionComponent, Binary, Categorical, Continuous, ViewParams
from stec.augment import Augmenter
from stec_vision.augment_geometry import to_float_images

_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """ITU-R 601-2 luma, as torchvision: ``[B, 3, H, W]`` -> ``[B, 1, H, W]``."""
    weights = torch.tensor(_GRAY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def shift_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue of each image by ``shift`` (turns): ``[N, 3, H, W]``, ``[N]``.

    Same result as torchvision's ``adjust_hue`` (RGB->HSV after Pillow, add, HSV->RGB) in
    fewer passes: value and saturation are kept as ``min`` and ``spread = max - min``; the
    hue as the sector coordinate ``t = 6h`` in ``[0, 6)``; and HSV->RGB is
    ``min + spread·c(t)`` with the piecewise-linear hue ramps
    ``c_R = clamp(|t - 3| - 1)``, ``c_G = clamp(2 - |t - 2|)``, ``c_B = clamp(2 - |t - 4|)``.
    """
    # amax + amin are far faster than aminmax over a 3-long dimension on the CPU
    maxc, minc = x.amax(dim=1, keepdim=True), x.amin(dim=1, keepdim=True)
    spread = maxc - minc
    r, g, b = x.split(1, dim=1)
    sector = torch.where(
        maxc == r,
        g - b,
        torch.where(maxc == g, (b - r).add_(spread, alpha=2.0), (r - g).add_(spread, alpha=4.0)),
    )
    # gray pixels (spread 0) have no hue: their sector is 0 and they stay gray
    t = sector.div_(torch.where(spread == 0, torch.ones_like(spread), spread))
    t = t.add_(6.0 * shift.view(-1, 1, 1, 1).to(x.dtype)).remainder_(6.0)
    ramps = torch.tensor(
        [[3.0, 1.0, -1.0], [2.0, -1.0, 2.0], [4.0, -1.0, 2.0]], device=x.device, dtype=x.dtype
    )
    centre, slope, offset = (ramps[:, i].view(1, 3, 1, 1) for i in range(3))
    ramp = torch.addcmul(offset, slope, (t - centre).abs_()).clamp_(0.0, 1.0)
    return torch.addcmul(minc, spread, ramp)


def apply_on_rows(
    x: Tensor,
    mask: Tensor,
    fn: Callable[..., Tensor],
    *row_args: Tensor,
    select_rows: bool | None = None,
    inplace: bool = False,
) -> Tensor:
    """``x [B, ...]`` with ``fn(x[rows], *row_args[rows])`` in the rows where ``mask [B]`` holds.

    On the CPU (``select_rows`` None) only the selected rows are computed; elsewhere the
    whole batch is computed and the rows are picked with ``where`` (no host sync).
    ``inplace`` lets the CPU path write the rows into ``x`` itself (for temporaries).
    """
    if select_rows is None:
        select_rows = x.device.type == "cpu"
    if not select_rows:
        return torch.where(mask.view(-1, *([1] * (x.dim() - 1))), fn(x, *row_args), x)
    rows = mask.nonzero().squeeze(1)
    if rows.numel() == 0:
        return x
    if rows.numel() == x.shape[0]:
        return fn(x, *row_args)
    out = fn(x.index_select(0, rows), *(a.index_select(0, rows) for a in row_args))
    return x.index_copy_(0, rows, out) if inplace else x.index_copy(0, rows, out)


def _factor_range(value: float | Sequence[float], key: str) -> tuple[float, float]:
    """torchvision's convention: ``s`` -> ``[max(0, 1 - s), 1 + s]``, or an explicit pair."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"ColorJitter: {key} must be >= 0, got {value}")
        return max(0.0, 1.0 - float(value)), 1.0 + float(value)
    lo, hi = (float(v) for v in value)
    if not 0.0 <= lo <= hi:
        raise ValueError(f"ColorJitter: {key} range must satisfy 0 <= low <= high, got {value!r}")
    return lo, hi


def _hue_range(value: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        lo, hi = -float(value), float(value)
    else:
        lo, hi = (float(v) for v in value)
    if not -0.5 <= lo <= hi <= 0.5:
        raise ValueError(f"ColorJitter: hue must lie in [-0.5, 0.5], got {value!r}")
    return lo, hi


class ColorJitter(Augmenter):
    """Brightness, contrast, saturation and hue with per-example factors and order.

    The order is a random permutation of the enabled ops per example. It is applied
    vectorised: at each position every example runs the one op that its permutation puts
    there (the three blends share one formula ``clamp(f·x + (1 - f)·ref)`` with a
    per-example reference, the hue rotation runs on the examples whose op it is).

    Records (``[B, 1]`` unless noted): ``brightness``, ``contrast``, ``saturation`` (the
    multiplicative factors), ``hue`` (the shift in turns), ``color_order`` (``[B]`` index
    into :attr:`permutations`) and ``color_order.valid`` (False where jitter was not
    applied). Examples not jittered record the identity (factors 1, hue 0).

    Components, only for enabled ops (strength > 0): ``Continuous(op, relation="log_ratio")``
    for the three factors (range ``±log(high / low)`` of the factor range), ``Continuous("hue",
    relation="difference")``, and, with ``order_action`` and at least two ops,
    ``Categorical("color_order", k!, relation="target")``: the inverse model predicts view
    b's order (the pair relation would need ``(k!)²`` classes).
    """

    def __init__(
        self,
        brightness: float | Sequence[float] = 0.4,
        contrast: float | Sequence[float] = 0.4,
        saturation: float | Sequence[float] = 0.4,
        hue: float | Sequence[float] = 0.1,
        p: float = 0.8,
        order_action: bool = True,
        n_bins: int = 6,
    ) -> None:
        super().__init__(p)
        self.ranges: dict[str, tuple[float, float]] = {
            "brightness": _factor_range(brightness, "brightness"),
            "contrast": _factor_range(contrast, "contrast"),
            "saturation": _factor_range(saturation, "saturation"),
            "hue": _hue_range(hue),
        }
        identity = {"brightness": (1.0, 1.0), "contrast": (1.0, 1.0), "saturation": (1.0, 1.0)}
        identity["hue"] = (0.0, 0.0)
        self.enabled = [op for op in JITTER_OPS if self.ranges[op] != identity[op]]
        ids = [JITTER_OPS.index(op) for op in self.enabled]
        perms = list(itertools.permutations(ids)) if ids else [()]
        self.register_buffer(
            "permutations",
            torch.tensor(perms, dtype=torch.long).view(len(perms), len(ids)),
            persistent=False,
        )
        self.order_action, self.n_bins = bool(order_action), int(n_bins)

    def components(self) -> list[ActionComponent]:
        comps: list[ActionComponent] = []
        for op in self.enabled:
            lo, hi = self.ranges[op]
            if op == "hue":
                comps.append(
                    Continuous("hue", lo - hi, hi - lo, self.n_bins, relation="difference")
                )
            else:
                # a factor range reaching 0 (full strength) has an unbounded log-ratio: the
                # bins stop at factor 0.05, beyond which the edge bin takes it
                span = math.log(hi / max(lo, 0.05))
                comps.append(Continuous(op, -span, span, self.n_bins, relation="log_ratio"))
        if self.order_action and len(self.enabled) >= 2:
            comps.append(Categorical("color_order", self.permutations.shape[0], relation="target"))
        return comps

    def sample(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """``(factors [B, 4], order_index [B], applied [B])``; factors in op order
        (brightness, contrast, saturation, hue) with the identity where not applied."""
        applied = self.applied(batch, device)
        u = torch.rand(batch, 4, device=device)
        lo = torch.tensor([self.ranges[op][0] for op in JITTER_OPS], device=device)
        hi = torch.tensor([self.ranges[op][1] for op in JITTER_OPS], device=device)
        identity = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device)
        factors = torch.where(applied.unsqueeze(1), lo + (hi - lo) * u, identity)
        order = torch.randint(self.permutations.shape[0], (batch,), device=device)
        return factors, order, applied

    def apply(self, x: Tensor, factors: Tensor, order: Tensor) -> Tensor:
        """Jitter ``x [B, 3, H, W]`` with ``factors [B, 4]`` in the op order ``order [B, k]``
        (op ids into ``JITTER_OPS``).

        The three blends are per-example colour matrices: brightness ``f·I``, saturation
        ``f·I + (1 - f)·1wᵀ`` (w: the luma weights), contrast ``f·I`` plus the offset
        ``(1 - f)·mean luma``; one batched matmul and a clamp per position.
        """
        x = to_float_images(x, type(self).__name__)
        batch, _, height, width = x.shape
        factors = factors.to(x.dtype)
        luma = torch.tensor(_GRAY_WEIGHTS, device=x.device, dtype=x.dtype)
        eye = torch.eye(3, device=x.device, dtype=x.dtype)
        to_gray = luma.expand(3, 3)  # every output channel = luma of the input
        for position in range(order.shape[1]):
            op = order[:, position]
            is_hue = op == 3
            # the hue op is the identity blend (f = 1) at its position
            f = factors.gather(1, op.clamp_max(2).unsqueeze(1)).squeeze(1)
            f = torch.where(is_hue, torch.ones_like(f), f)
            rest = 1.0 - f
            matrix = f.view(-1, 1, 1) * eye + (rest * (op == 2)).view(-1, 1, 1) * to_gray
            mean_luma = x.mean(dim=(2, 3)) @ luma
            offset = (rest * (op == 1) * mean_luma).view(-1, 1, 1).expand(batch, 3, 1)
            x = torch.baddbmm(offset, matrix, x.reshape(batch, 3, -1)).clamp_(0.0, 1.0)
            x = x.view(batch, 3, height, width)
            if "hue" in self.enabled:
                # x is this loop's own temporary: the rows can be written in place
                x = apply_on_rows(x, is_hue, shift_hue, factors[:, 3], inplace=True)
        return x

    def forward(self, x: Tensor) -> tuple[Tensor, ViewParams]:
        """``[B, 3, H, W]`` -> (jittered ``[B, 3, H, W]``, factor/hue/order records)."""
        x = to_float_images(x, type(self).__name__)
        factors, order_index, applied = self.sample(x.shape[0], x.device)
        if self.enabled:
            # rows left alone stay bit-exact (the HSV round trip is not)
            orders = self.permutations.to(x.device)[order_index]
            x = apply_on_rows(x, applied, self.apply, factors, orders)
        params: ViewParams = {
            op: factors[:, i : i + 1] for i, op in enumerate(JITTER_OPS) if op in self.enabled
        }
        params["color_order"] = order_index
        params["color_order.valid"] = applied
        return x, params


class _NonInvertible(Augmenter):
    """An op with a per-view 0/1 flag: the flag pair is the action, or it masks the pair."""

    def __init__(self, p: float, name: str, mask_noninvertible: bool) -> None:
        super().__init__(p)
        self.name, self.mask_noninvertible = name, bool(mask_noninvertible)

    def components(self) -> list[ActionComponent]:
        return [] if self.mask_noninvertible else [Binary(self.name, relation="pair")]

    @abstractmethod
    def transform(self, x: Tensor, applied: Tensor) -> Tensor:
        """``x [B, 3, H, W]`` with the op applied where ``applied [B, 1, 1, 1]`` is True."""

    def forward(self, x: Tensor) -> tuple[Tensor, ViewParams]:
        """``[B, 3, H, W]`` -> (images, ``{name: flag [B] float}``)."""
        x = to_float_images(x, type(self).__name__)
        applied = self.applied(x.shape[0], x.device)
        return self.transform(x, applied.view(-1, 1, 1, 1)), {self.name: applied.to(x.dtype)}


class RandomGrayscale(_NonInvertible):
    """Grayscale (replicated to 3 channels) with probability ``p``; records ``grayscale``."""

    def __init__(
        self, p: float = 0.2, mask_noninvertible: bool = False, name: str = "grayscale"
    ) -> None:
        super().__init__(p, name, mask_noninvertible)

    def transform(self, x: Tensor, applied: Tensor) -> Tensor:
        gray = lambda rows: rgb_to_grayscale(rows).expand_as(rows)  # noqa: E731
        return apply_on_rows(x, applied.view(-1), gray)


class Solarize(_NonInvertible):
    """Invert pixels ``>= threshold`` with probability ``p``; records ``solarize``."""

    def __init__(
        self,
        p: float = 0.2,
        threshold: float = 0.5,
        mask_noninvertible: bool = False,
        name: str = "solarize",
    ) -> None:
        super().__init__(p, name, mask_noninvertible)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"Solarize: threshold must lie in [0, 1], got {threshold}")
        self.threshold = float(threshold)

    def transform(self, x: Tensor, applied: Tensor) -> Tensor:
        return torch.where((x >= self.threshold) & applied, 1.0 - x, x)


def blur_matrices(kernel: Tensor, n: int) -> Tensor:
    """Per-example 1-D convolution with reflect padding as matrices: ``[B, k]`` -> ``[B, n, n]``.

    Row ``j`` holds the weights of output ``j`` over the ``n`` inputs (torch's ``reflect``
    padding folded in: index -1 reads 1, index n reads n - 2).
    """
    batch, k = kernel.shape
    pad = k // 2
    idx = (
        torch.arange(n, device=kernel.device).view(n, 1)
        + torch.arange(k, device=kernel.device)
        - pad
    )
    idx = idx.abs()
    idx = torch.where(idx > n - 1, 2 * (n - 1) - idx, idx)
    out = torch.zeros(batch, n, n, device=kernel.device, dtype=kernel.dtype)
    return out.scatter_add_(2, idx.expand(batch, n, k), kernel.unsqueeze(1).expand(batch, n, k))


class GaussianBlur(Augmenter):
    """Separable Gaussian blur with a per-example sigma, applied with probability ``p``.

    Kernels are built for the whole batch at once (``[B, k]``, as torchvision's
    ``gaussian_blur`` with reflect padding) and applied as two batched matrix products with
    per-example banded matrices (rows, then columns): GEMMs beat grouped convolutions with
    one group per image channel by a wide margin on the CPU. Examples not blurred get the
    identity (on the CPU they are skipped) and record sigma 0.

    Records ``blur``: ``[B, 1]`` sigma (0 where not applied). Component
    ``Continuous("blur", -high, high, relation="difference")``.

    Args:
        sigma: range of the standard deviation in pixels (uniform).
        kernel_size: odd kernel size, or None for 10% of the smaller image side (odd, >= 3),
            SimCLR's choice.
    """

    def __init__(
        self,
        sigma: Sequence[float] = (0.1, 2.0),
        p: float = 0.5,
        kernel_size: int | None = None,
        name: str = "blur",
        n_bins: int = 6,
    ) -> None:
        super().__init__(p)
        lo, hi = (float(s) for s in sigma)
        if not 0.0 < lo <= hi:
            raise ValueError(f"GaussianBlur: sigma must satisfy 0 < low <= high, got {sigma!r}")
        if kernel_size is not None and (kernel_size < 1 or kernel_size % 2 == 0):
            raise ValueError(
                f"GaussianBlur: kernel_size must be a positive odd int, got {kernel_size}"
            )
        self.sigma, self.kernel_size = (lo, hi), kernel_size
        self.name, self.n_bins = name, int(n_bins)

    def components(self) -> list[ActionComponent]:
        hi = self.sigma[1]
        return [Continuous(self.name, -hi, hi, self.n_bins, relation="difference")]

    def kernel_for(self, height: int, width: int) -> int:
        """The kernel size used for images of ``height x width``."""
        if self.kernel_size is not None:
            return self.kernel_size
        k = int(0.1 * min(height, width))
        return max(3, k + 1 if k % 2 == 0 else k)

    def apply(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Blur ``x [B, C, H, W]`` with ``sigma [B]`` (0 = untouched)."""
        batch, channels, height, width = x.shape
        k = self.kernel_for(height, width)
        if k // 2 >= min(height, width):
            raise ValueError(f"GaussianBlur: kernel {k} too large for images of {height}x{width}")
        taps = torch.arange(k, device=x.device, dtype=x.dtype) - (k - 1) / 2
        s = sigma.to(x.dtype).clamp_min(1e-6).unsqueeze(1)
        kernel = torch.exp(-0.5 * (taps / s) ** 2)
        kernel = kernel / kernel.sum(dim=1, keepdim=True)
        delta = (taps == 0).to(x.dtype).expand_as(kernel)
        kernel = torch.where((sigma > 0).unsqueeze(1), kernel, delta)
        along_w = blur_matrices(kernel, width).transpose(1, 2)  # [B, W_in, W_out]
        out = torch.bmm(x.reshape(batch, channels * height, width), along_w)
        along_h = blur_matrices(kernel, height).unsqueeze(1)  # [B, 1, H_out, H_in]
        return torch.matmul(along_h, out.view(batch, channels, height, width))

    def forward(self, x: Tensor) -> tuple[Tensor, ViewParams]:
        """``[B, 3, H, W]`` -> (blurred images, ``{name: sigma [B, 1]}``)."""
        x = to_float_images(x, type(self).__name__)
        applied = self.applied(x.shape[0], x.device)
        lo, hi = self.sigma
        sigma = lo + (hi - lo) * torch.rand(x.shape[0], device=x.device)
        sigma = torch.where(applied, sigma, torch.zeros_like(sigma))
        return apply_on_rows(x, applied, self.apply, sigma), {self.name: sigma.unsqueeze(1)}
