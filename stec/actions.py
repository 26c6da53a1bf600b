"""Action spaces: the structured, egocentric, binned efference copy.

An augmenter records, for every view it makes, the parameters of the action it applied
(a crop matrix, a time offset, a gain, a flag, ...) in a :data:`ViewParams` record: a
dict from component name to a tensor whose first dimension is the batch. A view where an
augmentation did not apply may carry ``"<name>.valid"`` (bool ``[B]``) set to False.

An :class:`ActionComponent` turns the records of two views of the same source into the
**relative** action that leads from view ``a`` to view ``b`` and bins it into classes.
An :class:`ActionSpace` is an ordered list of components; it yields the prediction
targets of the inverse model plus a mask of the pairs where the action is defined.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

ViewParams = dict[str, Tensor]

CONTINUOUS_RELATIONS = ("difference", "log_ratio", "pair", "target")
CATEGORICAL_RELATIONS = ("pair", "target", "changed")


def _valid(params: ViewParams, name: str, batch: int, device: torch.device) -> Tensor:
    flag = params.get(f"{name}.valid")
    if flag is None:
        return torch.ones(batch, dtype=torch.bool, device=device)
    return flag.to(device=device, dtype=torch.bool).reshape(batch)


def bin_values(values: Tensor, low: float, high: float, n_bins: int) -> Tensor:
    """Uniform bins over ``[low, high]``; values outside are clamped to the edge bins.

    Args:
        values: ``[...]`` float tensor.
    Returns:
        ``[...]`` int64 tensor with entries in ``[0, n_bins - 1]``.
    """
    edges = [low + (high - low) * k / n_bins for k in range(1, n_bins)]
    edges_t = torch.tensor(edges, device=values.device, dtype=torch.float64)
    # right=True: a value exactly on an edge belongs to the bin above it
    # rounding removes float noise, so that e.g. an identity translation (0, often a bin
    # edge) always lands in the same bin
    return torch.bucketize(
        torch.round(values.double(), decimals=6).contiguous(), edges_t, right=True
    )


def normalise_values(values: Tensor, low: float, high: float) -> Tensor:
    """Map ``[low, high]`` affinely onto ``[-1, 1]`` and clamp (the regression target)."""
    return ((values - low) / (high - low) * 2.0 - 1.0).clamp(-1.0, 1.0)


class ActionComponent(ABC):
    """One named part of an action. Subclasses define the relation and the classes.

    Attributes:
        name: key of this component's parameters in a :data:`ViewParams` record.
        param_shape: shape of one view's parameters (without the batch dimension).
        n_targets: how many prediction targets the relative action has.
        n_classes: classes per target (bins, categories).
    """

    name: str
    param_shape: tuple[int, ...]
    n_targets: int
    n_classes: int

    @abstractmethod
    def relative(self, p_a: Tensor, p_b: Tensor) -> Tensor:
        """The egocentric action from view a to view b: ``[B, *param_shape]`` x2 -> ``[B, n_targets]``."""

    @abstractmethod
    def classes(self, action: Tensor) -> Tensor:
        """Bin a relative action: ``[B, n_targets]`` float -> ``[B, n_targets]`` int64."""

    @abstractmethod
    def normalised(self, action: Tensor) -> Tensor:
        """The relative action scaled to ``[-1, 1]`` per target (regression targets)."""

    def identity_params(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        """Parameters of a view that was left untouched by this component."""
        return torch.zeros(batch, *self.param_shape, device=device)

    def check_params(self, params: Tensor, batch: int) -> Tensor:
        expected = (batch, *self.param_shape)
        if params.dim() == 1 and self.param_shape == (1,):
            params = params.unsqueeze(1)
        if tuple(params.shape) != expected:
            raise ValueError(
                f"action component {self.name!r}: parameters have shape {tuple(params.shape)}, "
                f"expected {expected}"
            )
        return params


def _check_name(name: str) -> None:
    if not name or not isinstance(name, str) or "." in name:
        raise ValueError(
            f"action component name must be a non-empty string without '.', got {name!r}"
        )


def _check_bins(name: str, n_bins: int) -> None:
    if int(n_bins) != n_bins or n_bins < 2:
        raise ValueError(f"action component {name!r}: n_bins must be an integer >= 2, got {n_bins}")


class Continuous(ActionComponent):
    """A real-valued action of ``dim`` entries, binned uniformly over ``[low, high]``.

    ``relation`` says how two views combine:

    - ``"difference"``: ``p_b - p_a`` (time offsets, dB gains, bin shifts);
    - ``"log_ratio"``: ``log(p_b / p_a)`` (scale factors, stretch, contrast);
    - ``"pair"``: ``[p_a, p_b]`` for non-invertible actions (masks), 2*dim targets;
    - ``"target"``: ``p_b`` alone.

    ``low``/``high`` bound the *relative* action (for ``log_ratio``: the log-ratio).
    """

    def __init__(
        self,
        name: str,
        low: float,
        high: float,
        n_bins: int = 6,
        dim: int = 1,
        relation: str = "difference",
    ) -> None:
        _check_name(name)
        _check_bins(name, n_bins)
        if not (math.isfinite(low) and math.isfinite(high)) or not high > low:
            raise ValueError(
                f"action component {name!r}: empty range [{low}, {high}]; need low < high"
            )
        if relation not in CONTINUOUS_RELATIONS:
            raise ValueError(
                f"action component {name!r}: relation {relation!r} is not one of {CONTINUOUS_RELATIONS}"
            )
        if dim < 1:
            raise ValueError(f"action component {name!r}: dim must be >= 1, got {dim}")
        self.name, self.low, self.high = name, float(low), float(high)
        self.n_classes, self.dim, self.relation = int(n_bins), int(dim), relation
        self.param_shape = (self.dim,)
        self.n_targets = 2 * self.dim if relation == "pair" else self.dim

    def relative(self, p_a: Tensor, p_b: Tensor) -> Tensor:
        p_a, p_b = p_a.float(), p_b.float()
        if self.relation == "difference":
            return p_b - p_a
        if self.relation == "log_ratio":
            return torch.log(p_b.clamp_min(1e-8)) - torch.log(p_a.clamp_min(1e-8))
        if self.relation == "pair":
            return torch.cat([p_a, p_b], dim=1)
        return p_b

    def classes(self, action: Tensor) -> Tensor:
        return bin_values(action, self.low, self.high, self.n_classes)

    def normalised(self, action: Tensor) -> Tensor:
        return normalise_values(action, self.low, self.high)

    def identity_params(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        fill = 1.0 if self.relation == "log_ratio" else 0.0
        return torch.full((batch, self.dim), fill, device=device)


class Categorical(ActionComponent):
    """A discrete action with ``n_classes`` values per view (parameters: ``[B]`` ints).

    ``relation``: ``"pair"`` predicts ``(c_a, c_b)`` as one of ``n**2`` classes, which is
    how non-invertible actions (grayscale, solarisation) are encoded; ``"target"``
    predicts ``c_b``; ``"changed"`` predicts whether ``c_a != c_b`` (2 classes).
    """

    def __init__(self, name: str, n_classes: int, relation: str = "pair") -> None:
        _check_name(name)
        if int(n_classes) != n_classes or n_classes < 2:
            raise ValueError(
                f"action component {name!r}: n_classes must be an integer >= 2, got {n_classes}"
            )
        if relation not in CATEGORICAL_RELATIONS:
            raise ValueError(
                f"action component {name!r}: relation {relation!r} is not one of {CATEGORICAL_RELATIONS}"
            )
        self.name, self.n_values, self.relation = name, int(n_classes), relation
        self.param_shape = (1,)
        self.n_targets = 1
        self.n_classes = {"pair": self.n_values**2, "target": self.n_values, "changed": 2}[relation]

    def relative(self, p_a: Tensor, p_b: Tensor) -> Tensor:
        a, b = p_a.long().reshape(-1, 1), p_b.long().reshape(-1, 1)
        if a.min() < 0 or b.min() < 0 or a.max() >= self.n_values or b.max() >= self.n_values:
            raise ValueError(
                f"action component {self.name!r}: categories must lie in [0, {self.n_values - 1}]"
            )
        if self.relation == "pair":
            return (a * self.n_values + b).float()
        if self.relation == "target":
            return b.float()
        return (a != b).float()

    def classes(self, action: Tensor) -> Tensor:
        return action.round().long()

    def normalised(self, action: Tensor) -> Tensor:
        return action / max(self.n_classes - 1, 1) * 2.0 - 1.0


class Binary(Categorical):
    """A flag per view (flip applied, grayscale applied, ...).

    The default relation ``"changed"`` suits invertible flags (a flip); use ``"pair"``
    for non-invertible ones, so that (off, on) and (on, off) stay distinguishable.
    """

    def __init__(self, name: str, relation: str = "changed") -> None:
        super().__init__(name, 2, relation)


class Affine(ActionComponent):
    """A 2-D affine map per view as a 3x3 matrix θ (crop + flip in normalised coordinates).

    The relative action is the exact composition ``θ_b · θ_a⁻¹``; its top 2x3 block gives
    6 targets, the linear part binned over ``linear_range`` and the translation over
    ``translation_range`` (the paper's defaults: [-2, 2] and [-0.5, 0.5], 6 bins).
    """

    def __init__(
        self,
        name: str,
        n_bins: int = 6,
        linear_range: tuple[float, float] = (-2.0, 2.0),
        translation_range: tuple[float, float] = (-0.5, 0.5),
    ) -> None:
        _check_name(name)
        _check_bins(name, n_bins)
        for label, (lo, hi) in (
            ("linear_range", linear_range),
            ("translation_range", translation_range),
        ):
            if not hi > lo:
                raise ValueError(
                    f"action component {name!r}: empty {label} [{lo}, {hi}]; need low < high"
                )
        self.name, self.n_classes = name, int(n_bins)
        self.param_shape = (3, 3)
        self.n_targets = 6
        low = [linear_range[0]] * 2 + [translation_range[0]]
        high = [linear_range[1]] * 2 + [translation_range[1]]
        self._low = torch.tensor(low * 2)
        self._high = torch.tensor(high * 2)

    def relative(self, p_a: Tensor, p_b: Tensor) -> Tensor:
        rel = relative_affine(p_a.double(), p_b.double()).float()
        return rel[:, :2, :].reshape(-1, 6)

    def classes(self, action: Tensor) -> Tensor:
        return torch.stack(
            [
                bin_values(action[:, i], float(self._low[i]), float(self._high[i]), self.n_classes)
                for i in range(self.n_targets)
            ],
            dim=1,
        )

    def normalised(self, action: Tensor) -> Tensor:
        low, high = self._low.to(action.device), self._high.to(action.device)
        return ((action - low) / (high - low) * 2.0 - 1.0).clamp(-1.0, 1.0)

    def identity_params(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.eye(3, device=device).expand(batch, 3, 3).clone()


def relative_affine(theta_a: Tensor, theta_b: Tensor) -> Tensor:
    """Exact relative transform ``θ_b · θ_a⁻¹``: ``[B, 3, 3]`` x2 -> ``[B, 3, 3]``.

    It satisfies ``relative(θ, θ) == I`` and ``relative(θ_a, θ_b) @ θ_a == θ_b``.
    """
    return theta_b @ torch.linalg.inv(theta_a)


@dataclass
class ActionTargets:
    """Inverse-model targets for a batch of view pairs.

    Attributes:
        classes: ``[B, T]`` int64 bin/category per target.
        values: ``[B, T]`` float, each target scaled to ``[-1, 1]`` (regression targets).
        mask: ``[B, T]`` bool, False where the action is undefined for that pair.
    """

    classes: Tensor
    values: Tensor
    mask: Tensor


class ActionSpace:
    """An ordered composition of :class:`ActionComponent` s."""

    def __init__(self, components: Iterable[ActionComponent]) -> None:
        self.components: list[ActionComponent] = list(components)
        names = [c.name for c in self.components]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"action space: duplicate component names {duplicates}")
        for comp in self.components:
            if not isinstance(comp, ActionComponent):
                raise ValueError(f"action space: {comp!r} is not an ActionComponent")
        self.target_classes: list[int] = [
            c.n_classes for c in self.components for _ in range(c.n_targets)
        ]
        self.target_names: list[str] = []
        self.slices: dict[str, slice] = {}
        start = 0
        for comp in self.components:
            self.slices[comp.name] = slice(start, start + comp.n_targets)
            self.target_names += [f"{comp.name}[{i}]" for i in range(comp.n_targets)]
            start += comp.n_targets

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.components]

    @property
    def n_targets(self) -> int:
        return len(self.target_classes)

    @property
    def max_classes(self) -> int:
        return max(self.target_classes, default=2)

    def __len__(self) -> int:
        return len(self.components)

    def __repr__(self) -> str:
        parts = ", ".join(f"{c.name}:{c.n_targets}x{c.n_classes}" for c in self.components)
        return f"ActionSpace({parts})"

    def __getitem__(self, name: str) -> ActionComponent:
        for comp in self.components:
            if comp.name == name:
                return comp
        raise ValueError(f"unknown action component {name!r}; this space has {self.names}")

    def select(self, names: Sequence[str]) -> ActionSpace:
        """A sub-space with only the named components, in this space's order."""
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise ValueError(f"unknown action component(s) {unknown}; this space has {self.names}")
        return ActionSpace(c for c in self.components if c.name in names)

    def targets(self, params_a: ViewParams, params_b: ViewParams) -> ActionTargets:
        """Relative action targets from view a to view b for every component."""
        batch, device = _batch_and_device(params_a, params_b)
        classes, values, masks = [], [], []
        for comp in self.components:
            for side, params in (("a", params_a), ("b", params_b)):
                if comp.name not in params:
                    raise ValueError(
                        f"action component {comp.name!r}: view {side} has no parameters under that "
                        f"name (got {sorted(k for k in params if '.' not in k)})"
                    )
            p_a = comp.check_params(params_a[comp.name].to(device), batch)
            p_b = comp.check_params(params_b[comp.name].to(device), batch)
            action = comp.relative(p_a, p_b)
            ok = _valid(params_a, comp.name, batch, device) & _valid(
                params_b, comp.name, batch, device
            )
            ok = ok & torch.isfinite(action).all(dim=1)
            action = torch.where(torch.isfinite(action), action, torch.zeros_like(action))
            classes.append(comp.classes(action))
            values.append(comp.normalised(action))
            masks.append(ok.unsqueeze(1).expand(-1, comp.n_targets))
        if not self.components:
            empty = torch.zeros(batch, 0, device=device)
            return ActionTargets(empty.long(), empty, empty.bool())
        return ActionTargets(torch.cat(classes, 1), torch.cat(values, 1), torch.cat(masks, 1))


def _batch_and_device(params_a: ViewParams, params_b: ViewParams) -> tuple[int, torch.device]:
    for params in (params_a, params_b):
        for value in params.values():
            return value.shape[0], value.device
    raise ValueError("action space: both parameter records are empty")
