"""Action spaces: an ordered list of components, their targets and how they are weighted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stec.actions.components import ActionComponent, ViewParams


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
    """An ordered composition of :class:`ActionComponent` s.

    Attributes:
        target_classes: classes of every target, components in order.
        target_names: a label per target (``crop.scale_x``, ``gain[1]``, ...).
        slices: each component's targets within the ``T`` targets.
    """

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
        self.target_names: list[str] = [label for c in self.components for label in c.target_labels]
        self.slices: dict[str, slice] = {}
        start = 0
        for comp in self.components:
            self.slices[comp.name] = slice(start, start + comp.n_targets)
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

    def target_weights(self, component_weights: Mapping[str, float] | None = None) -> Tensor:
        """``[T]`` loss weight of every target: each component's weight (1 unless given)
        shared equally by its targets, so that a component counts by its weight and not by
        how many targets it has (a 4-entry affine weighs what a 1-entry gain weighs).
        The weights sum to 1."""
        weights = dict(component_weights or {})
        unknown = sorted(set(weights) - set(self.names))
        if unknown:
            raise ValueError(
                f"component weights name unknown component(s) {unknown}; this space has {self.names}"
            )
        bad = {k: v for k, v in weights.items() if not float(v) >= 0}
        if bad:
            raise ValueError(f"component weights must be >= 0, got {bad}")
        per_target = [
            float(weights.get(c.name, 1.0)) / c.n_targets
            for c in self.components
            for _ in range(c.n_targets)
        ]
        total = sum(per_target)
        if self.components and total <= 0:
            raise ValueError("component weights: at least one component needs a positive weight")
        return torch.tensor(per_target) / max(total, 1e-12)

    def targets(self, params_a: ViewParams, params_b: ViewParams) -> ActionTargets:
        """Relative action targets from view a to view b for every component."""
        batch, device = _batch_and_device(params_a, params_b)
        classes, values, masks = [], [], []
        for comp in self.components:
            p_a = comp.read(params_a, batch, device, "a")
            p_b = comp.read(params_b, batch, device, "b")
            action = comp.relative(p_a, p_b)
            ok = _valid(params_a, comp.name, batch, device) & _valid(
                params_b, comp.name, batch, device
            )
            finite = torch.isfinite(action)
            ok = ok & finite.all(dim=1)
            action = torch.where(finite, action, torch.zeros_like(action))
            classes.append(comp.classes(action))
            values.append(comp.normalised(action))
            masks.append(ok.unsqueeze(1).expand(-1, comp.n_targets))
        if not self.components:
            empty = torch.zeros(batch, 0, device=device)
            return ActionTargets(empty.long(), empty, empty.bool())
        return ActionTargets(torch.cat(classes, 1), torch.cat(values, 1), torch.cat(masks, 1))


def _valid(params: ViewParams, name: str, batch: int, device: torch.device) -> Tensor:
    flag = params.get(f"{name}.valid")
    if flag is None:
        return torch.ones(batch, dtype=torch.bool, device=device)
    return flag.to(device=device, dtype=torch.bool).reshape(batch)


def _batch_and_device(params_a: ViewParams, params_b: ViewParams) -> tuple[int, torch.device]:
    for params in (params_a, params_b):
        for value in params.values():
            return value.shape[0], value.device
    raise ValueError("action space: both parameter records are empty")
