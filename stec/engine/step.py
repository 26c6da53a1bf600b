"""Pieces of one training step that must not make the host wait for the device.

Every decision the host takes in a step comes from host values: the batch sizes and label
counts as the loader made them, agreed between ranks over the CPU group
(:func:`plan_step`). The online probe masks unlabelled items instead of selecting the
labelled ones (a selection's size would have to be read back from the device).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stec import distributed
from stec.augment import step_scope

log = logging.getLogger("stec")


@dataclass(frozen=True)
class StepPlan:
    """What every rank agreed on for one step."""

    usable: bool  # every rank holds at least 2 items
    sizes: tuple[int, ...]  # every rank's batch size, in rank order
    labelled: int  # labelled items over all ranks (0 when the probe is off)
    stop: bool = False  # a rank was asked to stop (a signal): every rank stops here


def host_labels(batch, raw: bool) -> Tensor | None:
    """The class labels ``[B]`` of a loader batch, still on the host: ``batch[1]`` of raw
    items ``(x, label, ...)``, ``batch[4]`` of ready views ``(view_a, view_b, params_a,
    params_b[, label])``; None if absent or not one class per item."""
    index = 1 if raw else 4
    labels = batch[index] if len(batch) > index else None
    return labels if isinstance(labels, Tensor) and labels.dim() == 1 else None


def plan_step(batch, raw: bool, count_labels: bool, stop: bool = False) -> StepPlan:
    """Agree with every rank on a step (one exchange over the CPU group under DDP).

    A batch is ``None`` or holds fewer than 2 items when the loader dropped bad files: the
    step is then skipped on every rank together (no pair to contrast, no batch statistics).
    ``stop``: this rank was asked to stop; the plan stops every rank if any was.
    """
    n, labelled = 0, 0
    if batch is not None:
        n = len(batch[0])
        labels = host_labels(batch, raw) if count_labels else None
        if labels is not None:
            labelled = int((labels >= 0).sum())  # a host tensor: no device involved
    rows = distributed.all_gather_host([n, labelled, int(stop)])
    sizes = tuple(row[0] for row in rows)
    usable = min(sizes) >= 2
    if any(row[2] for row in rows):
        return StepPlan(False, sizes, 0, stop=True)
    if not usable:
        log.warning("skipped a batch with fewer than 2 usable items")
    return StepPlan(usable, sizes, sum(row[1] for row in rows) if usable else 0)


def augmentation_step(augmenter: nn.Module | None) -> contextlib.ExitStack:
    """:func:`stec.augment.step_scope` around the augmenter calls of one training step, for
    augmenters that are not a :class:`~stec.augment.TwoViews` (which enters it itself)."""
    return step_scope(augmenter)


def new_probe(feature_dim: int, num_classes: int, seed: int, device: torch.device) -> nn.Linear:
    """The online linear probe, initialised from ``seed`` alone: the same start on every
    rank (its gradients are summed over ranks, like DDP's) and no draw from the streams."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = nn.Linear(feature_dim, num_classes)
    return probe.to(device)


def probe_step(
    probe: nn.Linear,
    optimizer: torch.optim.Optimizer,
    features: Tensor,
    labels: Tensor,
    labelled: int,
) -> Tensor:
    """One step of the online linear probe on detached ``features [B, D]``.

    Items with ``labels [B] < 0`` are masked out. The loss is summed over the local
    labelled items and divided by ``labelled`` (the count over all ranks), and the
    gradients are summed over ranks: the step follows the mean over every labelled item of
    the global batch. Returns the local accuracy (a device scalar).
    """
    keep = (labels >= 0).float()
    logits = probe(features.float())
    per_item = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    loss = (per_item * keep).sum() / labelled
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for p in probe.parameters():
        p.grad = distributed.all_reduce_sum(p.grad)
    optimizer.step()
    hits = (logits.argmax(1) == labels).float() * keep
    return hits.sum() / keep.sum().clamp(min=1.0)


def mean_over_ranks(metrics: dict[str, Tensor], device: torch.device) -> dict[str, float]:
    """Scalar metrics averaged over ranks, read from the device in one go (log steps)."""
    names = list(metrics)
    if not names:
        return {}
    stacked = torch.stack(
        [torch.as_tensor(metrics[k], device=device).detach().float().reshape(()) for k in names]
    )
    return dict(zip(names, distributed.all_reduce_mean(stacked).tolist(), strict=True))
