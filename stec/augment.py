"""The augmenter contract shared by the modality packages.

An augmenter is a callable ``x [B, ...] -> (x' [B, ...], params)`` that samples its
parameters per example, applies them as batched tensor ops on ``x``'s device, and records
them in ``params`` (a :data:`~stec.actions.ViewParams` dict) under the names of the action
components it declares in :meth:`Augmenter.components`. :class:`Compose` chains augmenters
and assembles the action space from the enabled ones; :class:`TwoViews` makes the two
views of a batch. This is the whole "custom action space" story: write an augmenter that
records its parameters and declares a component for them.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from stec.actions import ActionComponent, ActionSpace, ViewParams


class Augmenter(nn.Module, ABC):
    """Base class: subclasses implement ``forward(x) -> (x, params)`` and ``components``.

    ``p`` is the per-example probability of applying the augmentation. Examples left
    untouched must record the component's identity parameters (see
    :meth:`ActionComponent.identity_params`) so that relative actions stay exact, or
    ``"<name>.valid" = False`` where an untouched view has no meaningful parameters.

    ``predict = False`` keeps the augmentation but leaves its components out of the action
    space (an action that cannot be read from the views teaches the inverse model nothing).
    """

    predict: bool = True

    def __init__(self, p: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"augmenter {type(self).__name__}: p must lie in [0, 1], got {p}")
        self.p = float(p)

    def components(self) -> list[ActionComponent]:
        """The action components whose parameters this augmenter records."""
        return []

    def applied(self, batch: int, device: torch.device) -> Tensor:
        """``[B]`` bool: which examples this augmentation is applied to (probability ``p``)."""
        if self.p >= 1.0:
            return torch.ones(batch, dtype=torch.bool, device=device)
        return torch.rand(batch, device=device) < self.p

    @abstractmethod
    def forward(self, x: Tensor) -> tuple[Tensor, ViewParams]:
        """``x [B, ...] -> (augmented x, this view's parameter record)``."""


class Compose(nn.Module):
    """Apply augmenters in order and merge their parameter records."""

    def __init__(self, augmenters: Sequence[nn.Module]) -> None:
        super().__init__()
        self.augmenters = nn.ModuleList(augmenters)

    def forward(self, x: Tensor) -> tuple[Tensor, ViewParams]:
        params: ViewParams = {}
        for aug in self.augmenters:
            x, p = aug(x)
            clash = set(p) & set(params)
            if clash:
                raise ValueError(
                    f"augmenter {type(aug).__name__} records parameters already recorded: {sorted(clash)}"
                )
            params.update(p)
        return x, params

    def components(self) -> list[ActionComponent]:
        """The components of the augmenters whose actions are predicted."""
        return [
            c
            for aug in self.augmenters
            if getattr(aug, "predict", True)
            for c in getattr(aug, "components", list)()
        ]

    def action_space(self, names: Sequence[str] | None = None) -> ActionSpace:
        """The action space of all enabled augmenters, or only of the named components."""
        space = ActionSpace(self.components())
        return space.select(names) if names is not None else space


def step_scope(module: nn.Module | None) -> contextlib.ExitStack:
    """Enter ``one_step()`` of every submodule that defines it, around the calls that make
    one training step (the two views of a batch): an augmenter with a memory across steps
    (the mixup bank) then updates it once per step, not once per view. Scopes nest."""
    stack = contextlib.ExitStack()
    for sub in module.modules() if module is not None else ():
        scope = getattr(sub, "one_step", None)
        if callable(scope):
            stack.enter_context(scope())
    return stack


class TwoViews(nn.Module):
    """``x -> (view_a, view_b, params_a, params_b)``: the pipeline applied twice, with
    independently sampled actions. An optional ``prepare`` runs once before (e.g. a
    log-mel front end on the GPU), an optional ``finish`` after each view (e.g. a
    normalisation)."""

    def __init__(
        self, pipeline: Compose, prepare: nn.Module | None = None, finish: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.pipeline, self.prepare, self.finish = pipeline, prepare, finish

    @torch.no_grad()
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, ViewParams, ViewParams]:
        if self.prepare is not None:
            x = self.prepare(x)
        with step_scope(self.pipeline):
            view_a, params_a = self.pipeline(x)
            view_b, params_b = self.pipeline(x)
        if self.finish is not None:
            view_a, view_b = self.finish(view_a), self.finish(view_b)
        return view_a, view_b, params_a, params_b

    def action_space(self, names: Sequence[str] | None = None) -> ActionSpace:
        return self.pipeline.action_space(names)
