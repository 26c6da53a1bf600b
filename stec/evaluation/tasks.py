"""Several label sets over the same clips, evaluated with the same features and folds.

A *task* is one labelling of the clips (e.g. ``class``, ``pitch`` register, ``loudness``
band). A clip the task does not apply to carries the label ``-1`` (a ``-1`` anywhere in
its row for multi-hot labels) and is left out of that task only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from stec.evaluation.probe import cross_validate


def task_rows(name: str, labels: Tensor, n: int) -> Tensor:
    """``[n]`` bool: the clips task ``name`` applies to (no ``-1`` label)."""
    labels = torch.as_tensor(labels)
    if labels.dim() not in (1, 2) or labels.shape[0] != n:
        raise ValueError(
            f"task {name!r}: labels must be [N] or [N, C] with N = {n} clips, "
            f"got shape {tuple(labels.shape)}"
        )
    negative = labels < 0
    return ~negative.any(1) if labels.dim() == 2 else ~negative


def cross_validate_tasks(
    features: Tensor, tasks: Mapping[str, Tensor], folds: Tensor, **probe_kwargs: Any
) -> dict[str, Any]:
    """:func:`~stec.evaluation.probe.cross_validate` of one feature matrix on every task.

    Each task keeps its own clips (those without a ``-1`` label) with their folds, and is
    evaluated leave-one-fold-out exactly as ``cross_validate`` does. ``[N, C]`` float labels
    are multi-hot (scored by mAP); ``[N]`` integer labels are single-label (accuracy).

    Args:
        features: ``[N, D]``; tasks: name -> ``[N]`` int or ``[N, C]`` multi-hot labels;
        folds: ``[N]`` int fold of each clip.
        probe_kwargs: passed to ``cross_validate`` (``protocol``, ``seed``, ``device``, ...);
            ``multilabel`` is decided per task from its labels.
    Returns:
        ``{"tasks": {name: {<cross_validate result>, "n_clips": int}}}``.
    """
    if not tasks:
        raise ValueError("cross_validate_tasks needs at least one task")
    folds = torch.as_tensor(folds)
    n = features.shape[0]
    if folds.shape != (n,):
        raise ValueError(f"folds must hold one fold per clip ({n}), got shape {tuple(folds.shape)}")
    probe_kwargs = {k: v for k, v in probe_kwargs.items() if k != "multilabel"}
    results: dict[str, Any] = {}
    for name, labels in tasks.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"task names must be non-empty strings, got {name!r}")
        labels = torch.as_tensor(labels)
        rows = task_rows(name, labels, n)
        multilabel = labels.dim() == 2
        if len(folds[rows].unique()) < 2:
            raise ValueError(
                f"task {name!r}: its {int(rows.sum())} labelled clips lie in fewer than two "
                "folds, so it cannot be cross-validated"
            )
        result = cross_validate(
            features[rows], labels[rows], folds[rows], multilabel=multilabel, **probe_kwargs
        )
        results[name] = {**result, "n_clips": int(rows.sum())}
    return {"tasks": results}
