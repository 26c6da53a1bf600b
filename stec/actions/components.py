"""Action components: how the records of two views become the binned relative action.

An augmenter records, for every view it makes, the parameters of the action it applied
(a time offset, a gain, a flag, a crop matrix, ...) in a :data:`ViewParams` record: a dict
from component name to a tensor whose first dimension is the batch. A view where an
augmentation did not apply may carry ``"<name>.valid"`` (bool ``[B]``) set to False.

An :class:`ActionComponent` turns the records of two views of the same source into the
**relative** (egocentric) action that leads from view ``a`` to view ``b`` and bins it into
classes. Nothing here reads a tensor back to the host: the targets of a training step are
computed on the accelerator without stalling it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

ViewParams = dict[str, Tensor]

CONTINUOUS_RELATIONS = ("difference", "log_ratio", "pair", "target")
CATEGORICAL_RELATIONS = ("pair", "target", "changed")


def bin_edges(low: float, high: float, n_bins: int) -> list[float]:
    """The ``n_bins - 1`` inner edges of uniform bins over ``[low, high]`` (exact in Python)."""
    return [low + (high - low) * k / n_bins for k in range(1, n_bins)]


def bucketize_rounded(values: Tensor, edges: Tensor) -> Tensor:
    """Bin ``values`` by the float64 inner ``edges``; a value on an edge belongs to the bin
    above it. Rounding to 6 decimals first removes float noise, so that e.g. an identity
    translation (0, often a bin edge) always lands in the same bin."""
    return torch.bucketize(torch.round(values.double(), decimals=6).contiguous(), edges, right=True)


def bin_values(values: Tensor, low: float, high: float, n_bins: int) -> Tensor:
    """Uniform bins over ``[low, high]``; values outside are clamped to the edge bins.

    Args:
        values: ``[...]`` float tensor.
    Returns:
        ``[...]`` int64 tensor with entries in ``[0, n_bins - 1]``.
    """
    edges = torch.tensor(bin_edges(low, high, n_bins), dtype=torch.float64)
    return bucketize_rounded(values, edges.to(values.device))


def normalise_values(values: Tensor, low: float, high: float) -> Tensor:
    """Map ``[low, high]`` affinely onto ``[-1, 1]`` and clamp (the regression target)."""
    return ((values - low) / (high - low) * 2.0 - 1.0).clamp(-1.0, 1.0)


def check_on_device(ok: Tensor, message: str) -> None:
    """Raise ``ValueError(message)`` unless every entry of the bool tensor ``ok`` is True.

    On the CPU the check is immediate. On an accelerator, reading the result would stall
    the host until the device catches up, so the check is queued on the device instead
    (``torch._assert_async``) and a failure surfaces at the next synchronisation.
    """
    if ok.device.type == "cpu":
        if not bool(ok.all()):
            raise ValueError(message)
    elif ok.device.type != "meta":
        torch._assert_async(ok.all(), message)


class DeviceConstants:
    """Small constant tensors of a component, copied to each device once: a copy from host
    memory in every step would make the host wait for the accelerator."""

    def __init__(self, **tensors: Tensor) -> None:
        self._host = tensors
        self._copies: dict[tuple[str, torch.device], Tensor] = {}

    def get(self, name: str, device: torch.device) -> Tensor:
        key = (name, torch.device(device))
        if key not in self._copies:
            self._copies[key] = self._host[name].to(device)
        return self._copies[key]


class ActionComponent(ABC):
    """One named part of an action. Subclasses define the relation and the classes.

    Attributes:
        name: key of this component's parameters in a :data:`ViewParams` record.
        param_shape: shape of one view's parameters (without the batch dimension).
        n_targets: how many prediction targets the relative action has.
        n_classes: classes per target (bins, categories).
        invertible: whether swapping the views gives the inverse action (``pair`` and
            ``target`` relations, which encode non-invertible actions, are not).
    """

    name: str
    param_shape: tuple[int, ...]
    n_targets: int
    n_classes: int
    invertible: bool = True

    @abstractmethod
    def relative(self, p_a: Tensor, p_b: Tensor) -> Tensor:
        """The egocentric action from view a to view b: ``[B, *param_shape]`` x2 -> ``[B, n_targets]``."""

    @abstractmethod
    def classes(self, action: Tensor) -> Tensor:
        """Bin a relative action: ``[B, n_targets]`` float -> ``[B, n_targets]`` int64."""

    @abstractmethod
    def normalised(self, action: Tensor) -> Tensor:
        """The relative action scaled to ``[-1, 1]`` per target (regression targets)."""

    @property
    def target_labels(self) -> list[str]:
        """One name per target (``name[i]`` unless a subclass says what each target is)."""
        return [f"{self.name}[{i}]" for i in range(self.n_targets)]

    def identity_params(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        """Parameters of a view that was left untouched by this component."""
        return torch.zeros(batch, *self.param_shape, device=device)

    def read(self, params: ViewParams, batch: int, device: torch.device, side: str) -> Tensor:
        """This component's parameters from one view's record, checked: ``[B, *param_shape]``."""
        if self.name not in params:
            raise ValueError(
                f"action component {self.name!r}: view {side} has no parameters under that "
                f"name (got {sorted(k for k in params if '.' not in k)})"
            )
        return self.check_params(params[self.name].to(device), batch)

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


def check_name(name: str) -> None:
    if not name or not isinstance(name, str) or "." in name:
        raise ValueError(
            f"action component name must be a non-empty string without '.', got {name!r}"
        )


def check_bins(name: str, n_bins: int) -> None:
    if int(n_bins) != n_bins or n_bins < 2:
        raise ValueError(f"action component {name!r}: n_bins must be an integer >= 2, got {n_bins}")


def check_range(name: str, label: str, low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)) or not high > low:
        raise ValueError(
            f"action component {name!r}: empty {label} [{low}, {high}]; need low < high"
        )


class Continuous(ActionComponent):
    """A real-valued action of ``dim`` entries, binned uniformly over ``[low, high]``.

    ``relation`` says how two views combine:

    - ``"difference"``: ``p_b - p_a`` (time offsets, dB gains, bin shifts, semitones);
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
        check_name(name)
        check_bins(name, n_bins)
        check_range(name, "range", low, high)
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
        self.invertible = relation in ("difference", "log_ratio")
        edges = torch.tensor(bin_edges(self.low, self.high, self.n_classes), dtype=torch.float64)
        self._constants = DeviceConstants(edges=edges)

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
        return bucketize_rounded(action, self._constants.get("edges", action.device))

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
        check_name(name)
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
        # "changed" is its own inverse: a -> b changes exactly when b -> a does
        self.invertible = relation == "changed"

    def relative(self, p_a: Tensor, p_b: Tensor) -> Tensor:
        a, b = p_a.long().reshape(-1, 1), p_b.long().reshape(-1, 1)
        inside = (a >= 0) & (b >= 0) & (a < self.n_values) & (b < self.n_values)
        check_on_device(
            inside,
            f"action component {self.name!r}: categories must lie in [0, {self.n_values - 1}]",
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
