"""Affine actions (crops, flips, time-frequency crop-stretch) and their exact composition.

**One convention, fixed here.** A view's affine parameter is the 3x3 matrix ``θ`` in
normalised coordinates (``[-1, 1]`` spans the source, ``align_corners=False``) that maps
**source coordinates to view coordinates**: the source point ``s`` appears in the view at
``u = θ·s``. Then ``θ_b·θ_a⁻¹`` maps view-a coordinates to view-b coordinates: the
egocentric "where does what I see now go". It depends only on how the two views relate,
not on where they sit in the source (shifting or scaling both views the same way leaves it
unchanged), and swapping the views inverts it.

Augmenters hand their matrices to :meth:`Affine.record`, naming the direction they hold:
``source_to_view=`` as above, or ``view_to_source=`` (the *sampling* matrix that
``F.affine_grid`` takes, which is ``θ⁻¹``). The record carries a marker that
:meth:`Affine.read` checks, so a matrix that did not pass through ``record`` (and so never
stated its direction) is refused instead of silently giving a non-egocentric target.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from stec.actions.components import (
    ActionComponent,
    DeviceConstants,
    ViewParams,
    bin_edges,
    bucketize_rounded,
    check_bins,
    check_name,
    check_on_device,
    check_range,
)

#: Record key suffix that marks a matrix stored in the source -> view direction.
SOURCE_TO_VIEW = "source_to_view"
# (row, column) of the relative matrix predicted for axis-aligned maps, and for any map
AXIS_ALIGNED_ENTRIES = ((0, 0), (0, 2), (1, 1), (1, 2))
ALL_ENTRIES = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2))
_LABELS = {(0, 0): "scale_x", (0, 1): "shear_xy", (0, 2): "shift_x"}
_LABELS.update({(1, 0): "shear_yx", (1, 1): "scale_y", (1, 2): "shift_y"})


AxisRanges = tuple[float, float] | tuple[tuple[float, float], tuple[float, float]]


def per_axis(name: str, label: str, value: AxisRanges) -> tuple[tuple[float, float], ...]:
    """``(low, high)`` or ``((x_low, x_high), (y_low, y_high))`` -> one range per axis."""
    try:
        pairs = [tuple(map(float, v)) for v in value] if hasattr(value[0], "__len__") else None
        ranges = tuple(pairs) if pairs is not None else (tuple(map(float, value)),) * 2
    except (TypeError, ValueError, IndexError) as err:
        raise ValueError(
            f"action component {name!r}: {label} must be (low, high) or "
            f"((x_low, x_high), (y_low, y_high)), got {value!r}"
        ) from err
    if len(ranges) != 2 or any(len(r) != 2 for r in ranges):
        raise ValueError(
            f"action component {name!r}: {label} must be (low, high) or "
            f"((x_low, x_high), (y_low, y_high)), got {value!r}"
        )
    for axis, (low, high) in zip("xy", ranges, strict=True):
        check_range(name, f"{label} ({axis})", low, high)
    return ranges


def invert_affine(theta: Tensor) -> Tensor:
    """``θ⁻¹`` of affine matrices (last row ``[0, 0, 1]``): ``[B, 3, 3]`` -> ``[B, 3, 3]``.

    Closed form ``[[A⁻¹, -A⁻¹t], [0, 1]]`` in θ's dtype: exact, no host synchronisation
    (unlike a general matrix inverse, which checks for singularity on the host).
    """
    a, b, tx = theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2]
    c, d, ty = theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    out = torch.zeros_like(theta)
    out[:, 0, 0], out[:, 0, 1], out[:, 0, 2] = ia, ib, -(ia * tx + ib * ty)
    out[:, 1, 0], out[:, 1, 1], out[:, 1, 2] = ic, id_, -(ic * tx + id_ * ty)
    out[:, 2, 2] = 1.0
    return out


def relative_affine(theta_a: Tensor, theta_b: Tensor) -> Tensor:
    """Exact relative transform ``θ_b · θ_a⁻¹``: ``[B, 3, 3]`` x2 -> ``[B, 3, 3]``.

    It satisfies ``relative(θ, θ) == I`` and ``relative(θ_a, θ_b) @ θ_a == θ_b``.
    """
    return theta_b @ invert_affine(theta_a)


def _precise(x: Tensor) -> Tensor:
    # float64 where the device has it, so that near-identity actions bin exactly
    return x.double() if x.device.type != "mps" else x.float()


class Affine(ActionComponent):
    """A 2-D affine map per view as a 3x3 source -> view matrix θ (see the module doc).

    The relative action is the exact composition ``θ_b · θ_a⁻¹``. With ``axis_aligned``
    (crops, flips and axis scalings: no rotation or shear, the default) its two
    off-diagonal entries are always 0 and carry no information, so only the four others
    are targets: ``scale_x, shift_x, scale_y, shift_y``; otherwise all six entries of the
    top 2x3 block are. The linear part is binned over ``linear_range`` and the translation
    over ``translation_range`` (the paper's defaults: [-2, 2] and [-0.5, 0.5], 6 bins). Each
    range is one ``(low, high)`` for both axes, or ``((x_low, x_high), (y_low, y_high))``
    when the axes have different units (an audio map's time in crop lengths and frequency
    in semitones). ``targets`` keeps only some entries (e.g. ``("shift_x", "shift_y")``
    for maps whose scales never change: a constant target would be free accuracy).
    """

    def __init__(
        self,
        name: str,
        n_bins: int = 6,
        linear_range: AxisRanges = (-2.0, 2.0),
        translation_range: AxisRanges = (-0.5, 0.5),
        axis_aligned: bool = True,
        targets: Sequence[str] | None = None,
    ) -> None:
        check_name(name)
        check_bins(name, n_bins)
        self.name, self.n_classes = name, int(n_bins)
        self.axis_aligned = bool(axis_aligned)
        self.entries = AXIS_ALIGNED_ENTRIES if self.axis_aligned else ALL_ENTRIES
        if targets is not None:  # a map that never scales an axis has no ratio to predict
            labels = {_LABELS[e]: e for e in self.entries}
            unknown = [t for t in targets if t not in labels]
            if unknown or not targets:
                raise ValueError(
                    f"action component {name!r}: targets {list(targets)} must be a non-empty "
                    f"subset of {list(labels)}"
                )
            self.entries = tuple(e for e in self.entries if _LABELS[e] in targets)
        self.param_shape = (3, 3)
        self.n_targets = len(self.entries)
        # one (low, high) per axis: row 0 of the matrix is x, row 1 is y
        lin = per_axis(name, "linear_range", linear_range)
        shift = per_axis(name, "translation_range", translation_range)
        self.linear_range = lin if lin[0] != lin[1] else lin[0]
        self.translation_range = shift if shift[0] != shift[1] else shift[0]
        self.ranges = [shift[row] if col == 2 else lin[row] for row, col in self.entries]
        self._constants = DeviceConstants(
            low=torch.tensor([lo for lo, _ in self.ranges]),
            high=torch.tensor([hi for _, hi in self.ranges]),
            rows=torch.tensor([r for r, _ in self.entries]),
            cols=torch.tensor([c for _, c in self.entries]),
            **{
                f"edges{i}": torch.tensor(bin_edges(lo, hi, self.n_classes), dtype=torch.float64)
                for i, (lo, hi) in enumerate(self.ranges)
            },
        )

    @property
    def target_labels(self) -> list[str]:
        return [f"{self.name}.{_LABELS[entry]}" for entry in self.entries]

    def record(
        self, *, source_to_view: Tensor | None = None, view_to_source: Tensor | None = None
    ) -> ViewParams:
        """The record of one view's ``[B, 3, 3]`` matrix, given in either direction.

        Returns ``{name: θ source -> view, "<name>.source_to_view": [B] True}``.
        """
        if (source_to_view is None) == (view_to_source is None):
            raise ValueError(
                f"Affine {self.name!r}: record exactly one of source_to_view= or view_to_source="
            )
        theta = source_to_view if source_to_view is not None else invert_affine(view_to_source)
        if self.axis_aligned:
            check_on_device(
                (theta[:, 0, 1] == 0) & (theta[:, 1, 0] == 0),
                f"Affine {self.name!r}: the matrices rotate or shear; declare "
                "Affine(..., axis_aligned=False) to predict all six entries",
            )
        marker = torch.ones(theta.shape[0], dtype=torch.bool, device=theta.device)
        return {self.name: theta, f"{self.name}.{SOURCE_TO_VIEW}": marker}

    def read(self, params: ViewParams, batch: int, device: torch.device, side: str) -> Tensor:
        theta = super().read(params, batch, device, side)
        if f"{self.name}.{SOURCE_TO_VIEW}" not in params:
            raise ValueError(
                f"action component {self.name!r}: view {side}'s matrix was not recorded with "
                f"Affine.record(source_to_view=...) or Affine.record(view_to_source=...), so its "
                "direction is unknown"
            )
        return theta

    def relative(self, p_a: Tensor, p_b: Tensor) -> Tensor:
        rel = relative_affine(_precise(p_a), _precise(p_b))
        rows = self._constants.get("rows", rel.device)
        cols = self._constants.get("cols", rel.device)
        return rel[:, rows, cols].float()

    def classes(self, action: Tensor) -> Tensor:
        device = action.device
        columns = [
            bucketize_rounded(action[:, i], self._constants.get(f"edges{i}", device))
            for i in range(self.n_targets)
        ]
        return torch.stack(columns, dim=1)

    def normalised(self, action: Tensor) -> Tensor:
        low = self._constants.get("low", action.device)
        high = self._constants.get("high", action.device)
        return ((action - low) / (high - low) * 2.0 - 1.0).clamp(-1.0, 1.0)

    def identity_params(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.eye(3, device=device).expand(batch, 3, 3).clone()
