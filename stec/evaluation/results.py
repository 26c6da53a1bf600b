"""Writing evaluation results (atomic JSON) and printing them as a small text table."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from stec.files import written_whole


def _plain(value: Any) -> Any:
    """JSON-ready copy: tensors/numbers to Python scalars, NaN/inf to ``null``, keys to str."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _plain(value.item())
    return value


def check_results(results: Mapping[str, Any]) -> None:
    """Cross-validation results (those with ``per_fold``) must carry ``<metric>_mean``,
    ``<metric>_std`` and ``per_fold``, ``<metric>`` being ``results["metric"]``
    (default ``accuracy``); so must every entry of ``results["tasks"]``, if any."""
    _check_cv(results, "results")
    if "tasks" not in results:
        return
    tasks = results["tasks"]
    if not isinstance(tasks, Mapping) or not tasks:
        raise ValueError(f"results['tasks'] must map task name -> results, got {tasks!r}")
    for name, task in tasks.items():
        where = f"results['tasks'][{name!r}]"
        if not isinstance(task, Mapping) or "per_fold" not in task:
            raise ValueError(f"{where} must be cross-validation results (with per_fold)")
        _check_cv(task, where)


def _check_cv(results: Mapping[str, Any], where: str) -> None:
    if "per_fold" not in results:
        return
    metric = results.get("metric", "accuracy")
    missing = [k for k in (f"{metric}_mean", f"{metric}_std") if k not in results]
    if missing:
        raise ValueError(
            f"{where}: cross-validation results lack the key(s) {missing}; got {sorted(results)}"
        )
    if not isinstance(results["per_fold"], Mapping):
        raise ValueError(
            f"{where}['per_fold'] must map fold -> score, got {type(results['per_fold']).__name__}"
        )


def write_results(path: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """Write ``results`` as indented JSON, atomically.

    The JSON goes to a temporary file in the same folder, is flushed and fsynced, then
    ``os.replace``-d onto ``path``: a reader never sees a half-written file and a crash
    leaves the previous version intact. Tensors become numbers/lists, non-finite floats
    ``null``, and mapping keys strings (fold ``1`` is written as ``"1"``).

    Returns:
        The path written.
    """
    check_results(results)
    text = json.dumps(_plain(results), indent=2, sort_keys=False, allow_nan=False) + "\n"
    with written_whole(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _fmt(value: Any) -> str:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _aligned(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """Columns padded to their widest cell; the first left-aligned, the others right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        padded = [c.rjust(w) for c, w in zip(cells, widths, strict=True)]
        padded[0] = cells[0].ljust(widths[0])
        return "  ".join(padded)

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def _cv_table(results: Mapping[str, Any]) -> str:
    metric = results.get("metric", "accuracy")
    rows = [(f"fold {fold}", _fmt(score)) for fold, score in results["per_fold"].items()]
    mean, std = results[f"{metric}_mean"], results[f"{metric}_std"]
    rows.append(("mean ± std", f"{_fmt(mean)} ± {_fmt(std)}"))
    return _aligned(rows, ("fold", metric))


def _tasks_table(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per task: clips, metric, mean ± std and the score of every fold."""
    folds = sorted({str(f) for task in tasks.values() for f in task["per_fold"]}, key=_fold_key)
    rows = []
    for name, task in tasks.items():
        metric = task.get("metric", "accuracy")
        per_fold = {str(f): v for f, v in task["per_fold"].items()}
        rows.append(
            (
                name,
                str(task.get("n_clips", "")),
                metric,
                f"{_fmt(task[f'{metric}_mean'])} ± {_fmt(task[f'{metric}_std'])}",
                *(_fmt(per_fold[f]) if f in per_fold else "" for f in folds),
            )
        )
    return _aligned(rows, ("task", "clips", "metric", "mean ± std", *(f"fold {f}" for f in folds)))


def _fold_key(fold: str) -> tuple[int, Any]:
    return (0, int(fold)) if fold.lstrip("-").isdigit() else (1, fold)


def format_table(results: Mapping[str, Any]) -> str:
    """A small aligned text table.

    Cross-validation results (with ``per_fold``) give one row per fold and a final
    ``mean ± std`` row; results with ``tasks`` (see
    :func:`stec.evaluation.tasks.cross_validate_tasks`) add one row per task (clips,
    metric, mean ± std, every fold). Any other mapping gives one row per scalar entry
    (nested mappings are flattened to ``outer/inner`` names, lists are left out).
    """
    check_results(results)
    tables = []
    if "per_fold" in results:
        tables.append(_cv_table(results))
    if "tasks" in results:
        tables.append(_tasks_table(results["tasks"]))
    if tables:
        return "\n\n".join(tables)
    rows = []

    def flatten(prefix: str, mapping: Mapping[str, Any]) -> None:
        for key, value in mapping.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping):
                flatten(f"{name}/", value)
            elif not isinstance(value, (list, tuple)):
                rows.append((name, _fmt(value)))

    flatten("", results)
    if not rows:
        return "(no results)"
    return _aligned(rows, ("metric", "value"))
