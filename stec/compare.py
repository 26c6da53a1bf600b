"""The experiment runner behind ``stec-audio compare`` and ``stec-vision compare``.

It trains the same encoder with the same budget and seeds for every arm (method x
efference, plus optional one-component ablations), evaluates each with the modality's
protocol, adds the floors (a randomly initialised encoder and plain input features), and
writes ``comparison.csv``, ``comparison.json`` and ``report.md`` (with plots when
matplotlib is installed). Each run keeps the settings its results were made with
(``settings.json`` beside ``results.json``: its resolved config without the keys that never
change a result); a rerun reuses the results of a run whose settings are the same and
evaluates the others again. The CLIs train each arm with ``trainer.resume=auto``, so an
interrupted comparison resumes where it stopped, mid-arm included, and a comparison whose
pretraining arms were trained with other settings is refused before anything runs.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stec.engine.checkpoint import (
    RUN_CHECKPOINT,
    Advise,
    continuing_overrides,
    setting_changes,
    settings_of,
    training_changes,
)
from stec.engine.trainer import with_trainer_defaults
from stec.errors import ConfigError
from stec.run_dirs import RESULT_PARTS, part_path

# two-sided 95% Student-t quantiles by degrees of freedom (scipy is not a dependency)
T95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
}


@dataclass
class Arm:
    """One configuration to train and evaluate with every seed."""

    name: str
    overrides: list[str]
    kind: str = "pretrain"  # pretrain | floor
    checkpoint: str = ""  # floors: "random" or a plain-feature encoder name
    baseline: str | None = None  # the arm this one is paired against


@dataclass
class Plan:
    arms: list[Arm] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])


def build_plan(
    methods: Sequence[str],
    efferences: Sequence[str],
    seeds: Sequence[int],
    ablate: Sequence[str] = (),
    floors: Sequence[str] = ("random",),
) -> Plan:
    """Arms ``<method>-<efference>`` (paired against ``<method>-off``), one ablation arm per
    component in ``ablate`` (``<method>-inverse-only-<component>``), and the floors."""
    plan = Plan(seeds=list(seeds))
    for method in methods:
        base = f"{method}-off"
        for eff in efferences:
            name = f"{method}-{eff}"
            plan.arms.append(
                Arm(
                    name,
                    [f"method={method}", f"efference={eff}"],
                    baseline=None if eff == "off" or "off" not in efferences else base,
                )
            )
        for comp in ablate:
            plan.arms.append(
                Arm(
                    f"{method}-inverse-only-{comp}",
                    [f"method={method}", "efference=inverse", f"efference.components=[{comp}]"],
                    baseline=base if "off" in efferences else None,
                )
            )
    for floor in floors:
        plan.arms.append(Arm(f"floor-{floor}", [], kind="floor", checkpoint=floor))
    return plan


SETTINGS = "settings.json"


def run_plan(
    plan: Plan,
    out_dir: str | Path,
    common: Sequence[str],
    train: Callable[[list[str]], None],
    evaluate: Callable[[list[str]], None],
    metric: str,
    log: Callable[[str], None] = print,
    embed: Callable[[list[str]], None] | None = None,
    resolve: Callable[[list[str]], dict[str, Any]] | None = None,
    advise: Advise | None = None,
) -> dict[str, Any]:
    """Run every (arm, seed) whose results are missing or were made with other settings,
    then summarise. ``train``/``evaluate`` take the Hydra overrides of one run; ``metric``
    names the key read from ``results.json``.

    ``resolve`` maps a run's overrides to its resolved config. A run's settings are that
    config without :data:`~stec.engine.checkpoint.RESULT_NEUTRAL` (paths, loader, logging,
    devices), or its overrides when there is no ``resolve``; they are written to
    ``settings.json`` beside ``results.json``, and results are reused only under the same
    settings. With ``resolve``, a pretraining arm whose checkpoint was trained with other
    settings than a resume allows (:func:`~stec.engine.checkpoint.training_changes`) stops
    the comparison before any run starts, with a :class:`~stec.errors.ConfigError` naming
    every such arm and changed key, and ``advise(trained, config)`` of the first of them
    when that says more (the modality's option that would reuse them).
    """
    out_dir = Path(out_dir)
    runs = []
    for arm in plan.arms:
        for seed in plan.seeds:
            run_dir = out_dir / arm.name / f"seed{seed}"
            overrides = [*common, *arm.overrides, f"seed={seed}", f"run_dir={run_dir}"]
            config = None
            if resolve is not None:  # as the Trainer records it (trainer section complete)
                config = _plain_json(with_trainer_defaults(resolve(overrides)))
            runs.append((arm, seed, run_dir, overrides, config))
    _refuse_other_training(runs, out_dir, advise)
    for arm, seed, run_dir, run, config in runs:
        results = run_dir / "results.json"
        trained = arm.kind == "pretrain"
        recorded = {"overrides": run[:-1]}
        wanted = recorded if config is None else settings_of(config, trained=trained)
        stored = _read_json(run_dir / SETTINGS)
        if isinstance(stored, dict) and config is not None:  # as this version records them
            stored = settings_of(stored, trained=trained)
        if results.exists() and stored == wanted:
            log(f"[skip] {arm.name} seed {seed}: {results} exists, made with these settings")
            continue
        if results.exists():
            changed = setting_changes(stored or {}, wanted, ()) if stored else ["not recorded"]
            log(f"[again] {arm.name} seed {seed}: its results were made with other settings "
                f"({'; '.join(changed[:5])}{'; ...' if len(changed) > 5 else ''})")  # fmt: skip
        checkpoint = str(run_dir) if arm.kind == "pretrain" else arm.checkpoint
        log(f"[{'train' if arm.kind == 'pretrain' else 'floor'}] {arm.name} seed {seed}")
        if arm.kind == "pretrain":
            train(run)
        # the comparison's own outputs of this run, made with other settings or left by an
        # interrupted evaluation: written again (an out= never replaces a file)
        embeddings = run_dir / "embeddings.npy"
        for made in (embeddings, results, *(part_path(results, p) for p in RESULT_PARTS)):
            made.unlink(missing_ok=True)
        if embed is not None and seed == plan.seeds[0]:  # for the 2-D maps of the report
            embed([*run, f"checkpoint={checkpoint}", f"out={embeddings}"])
        evaluate([*run, f"checkpoint={checkpoint}", f"out={results}"])
        _write_json(run_dir / SETTINGS, wanted)
    summary = summarise(plan, out_dir, metric)
    write_summary(summary, out_dir)
    return summary


def _refuse_other_training(runs: list, out_dir: Path, advise: Advise | None = None) -> None:
    """Stop before any run if a pretraining arm's checkpoint was trained with settings a
    resume would refuse: mixing them into this comparison would compare other trainings."""
    refused, advice, overrides = [], "", set()
    for arm, seed, run_dir, _, config in runs:
        trained = _read_json(run_dir / "config.json")
        if arm.kind != "pretrain" or config is None or not isinstance(trained, dict):
            continue
        if not (run_dir / RUN_CHECKPOINT).exists():
            continue
        changes = training_changes(with_trainer_defaults(trained), config)
        if changes:
            refused.append(f"{arm.name} seed {seed} ({'; '.join(changes)})")
            advice = advice or (advise(trained, config) if advise else "")
            overrides.add(tuple(continuing_overrides(with_trainer_defaults(trained), config)))
    if refused:
        # the overrides that continue the refused arms, offered when they are one set for all
        same = next(iter(overrides)) if len(overrides) == 1 else ()
        advice = advice or (f"or add {' '.join(same)} to continue them" if same else "")
        raise ConfigError(
            f"the comparison in {out_dir} holds arms trained with other settings than these: "
            f"{', '.join(refused)}. Use a new compare.out for these settings (or delete those "
            f"arms' folders to train them again)" + (f"; {advice}" if advice else "")
        )


def _plain_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples as lists, keys as text)."""
    return json.loads(json.dumps(value, default=str))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True))
    os.replace(tmp, path)


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, sample std and the half-width of the 95% t confidence interval."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, math.nan, math.nan
    std = statistics.stdev(values)
    return mean, std, T95.get(n - 1, 1.96) * std / math.sqrt(n)


def _load_results(plan: Plan, out_dir: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """``{arm: {seed: results.json}}`` for the runs that have finished."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for arm in plan.arms:
        for seed in plan.seeds:
            path = out_dir / arm.name / f"seed{seed}" / "results.json"
            if path.exists():
                found.setdefault(arm.name, {})[seed] = json.loads(path.read_text())
    return found


def _stats(per_seed: dict[str, float]) -> dict[str, Any]:
    mean, std, ci = mean_ci(list(per_seed.values()))
    return {"mean": mean, "std": std, "ci95": ci, "n_seeds": len(per_seed), "per_seed": per_seed}


def summarise_values(
    plan: Plan,
    results: dict[str, dict[int, dict[str, Any]]],
    value_of: Callable[[dict[str, Any]], float | None],
) -> dict[str, Any]:
    """Per arm the mean, std, 95% CI and per-seed values of ``value_of(results.json)``, the
    difference to the arm's baseline paired by seed (with its CI), and whether each
    pretrained arm beats the best floor.

    Returns:
        ``{"arms": {name: {"kind", "mean", "std", "ci95", "n_seeds", "per_seed",
        "baseline", ["paired_diff"], ["beats_floors"]}}, "best_floor"}``; arms without a
        value are left out.
    """
    arms: dict[str, Any] = {}
    for arm in plan.arms:
        per_seed = {
            str(seed): float(value)
            for seed, r in results.get(arm.name, {}).items()
            if (value := value_of(r)) is not None
        }
        if per_seed:
            arms[arm.name] = {"kind": arm.kind, **_stats(per_seed), "baseline": arm.baseline}
    for arm in arms.values():
        base = arms.get(arm["baseline"]) if arm["baseline"] else None
        if base is None:
            continue
        seeds = sorted(set(arm["per_seed"]) & set(base["per_seed"]))
        diffs = [arm["per_seed"][s] - base["per_seed"][s] for s in seeds]
        if diffs:
            d_mean, d_std, d_ci = mean_ci(diffs)
            arm["paired_diff"] = {
                "vs": arm["baseline"],
                "mean": d_mean,
                "std": d_std,
                "ci95": d_ci,
                "n": len(diffs),
            }
    floors = [a["mean"] for a in arms.values() if a["kind"] == "floor"]
    best_floor = max(floors) if floors else None
    for arm in arms.values():
        if arm["kind"] == "pretrain" and best_floor is not None:
            arm["beats_floors"] = arm["mean"] > best_floor
    return {"arms": arms, "best_floor": best_floor}


def _task_value(name: str) -> Callable[[dict[str, Any]], float | None]:
    def value_of(results: dict[str, Any]) -> float | None:
        task = (results.get("tasks") or {}).get(name)
        if not isinstance(task, dict):
            return None
        return task.get(f"{task.get('metric', 'accuracy')}_mean")

    return value_of


def _summarise_tasks(plan: Plan, results: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per task (in order of first appearance): its metric and :func:`summarise_values`."""
    metrics: dict[str, str] = {}
    for per_seed in results.values():
        for r in per_seed.values():
            for name, task in (r.get("tasks") or {}).items():
                metrics.setdefault(name, task.get("metric", "accuracy"))
    return {
        name: {"metric": metric, **summarise_values(plan, results, _task_value(name))}
        for name, metric in metrics.items()
    }


def _summarise_action_probe(
    plan: Plan, results: dict[str, dict[int, dict[str, Any]]]
) -> dict[str, Any]:
    """Per arm and action component (and target, for components with several): the
    probe's held-out accuracy over seeds (mean, std, CI, per seed) and the mean
    majority-class rate, from ``results.json["action_probe"]``."""
    summary: dict[str, Any] = {}
    for arm in plan.arms:
        acc: dict[str, dict[str, float]] = {}
        majority: dict[str, list[float]] = {}
        for seed, r in results.get(arm.name, {}).items():
            probe = r.get("action_probe")
            if not isinstance(probe, dict):
                continue
            for key, value in probe.items():
                if not key.startswith(("action_acc/", "target_acc/")) or value is None:
                    continue
                component = key.split("/", 1)[1]
                acc.setdefault(component, {})[str(seed)] = float(value)
                floor = "majority_acc" if key.startswith("action_acc/") else "target_majority"
                if probe.get(f"{floor}/{component}") is not None:
                    majority.setdefault(component, []).append(probe[f"{floor}/{component}"])
        if acc:
            summary[arm.name] = {
                component: {
                    **_stats(per_seed),
                    "majority": statistics.fmean(majority[component])
                    if majority.get(component)
                    else None,
                }
                for component, per_seed in acc.items()
            }
    return summary


def summarise(plan: Plan, out_dir: Path, metric: str) -> dict[str, Any]:
    """The comparison summary of the finished runs under ``out_dir``.

    The primary ``metric`` (a top-level key of ``results.json``) gives ``arms`` and
    ``best_floor`` (:func:`summarise_values`), each arm with its mean within/between-class
    distance ratio. When runs hold ``tasks`` (see
    :func:`stec.evaluation.cross_validate_tasks`), ``tasks`` holds the same per task; when
    they hold an ``action_probe`` mapping (as :func:`stec.evaluation.probe_actions`
    returns), ``action_probe`` holds the per-component accuracies per arm.
    """
    results = _load_results(plan, out_dir)
    primary = summarise_values(plan, results, lambda r: r.get(metric))
    for name, arm in primary["arms"].items():
        ratios = [
            r["class_distance_ratio"]
            for r in results[name].values()
            if r.get("class_distance_ratio") is not None
        ]
        arm["class_distance_ratio"] = statistics.fmean(ratios) if ratios else None
    summary = {"metric": metric, "seeds": plan.seeds, **primary}
    tasks = _summarise_tasks(plan, results)
    if tasks:
        summary["tasks"] = tasks
    action_probe = _summarise_action_probe(plan, results)
    if action_probe:
        summary["action_probe"] = action_probe
    return summary


def _csv_row(name: str, arm: dict[str, Any]) -> list[str]:
    diff = arm.get("paired_diff", {})
    values = (arm["mean"], arm["std"], arm["ci95"])
    return [name, arm["kind"], *map(_f, values), str(arm["n_seeds"]),
            _f(diff.get("mean")), _f(diff.get("ci95"))]  # fmt: skip


def write_summary(summary: dict[str, Any], out_dir: Path) -> None:
    """``comparison.json``, ``comparison.csv`` (the primary metric) and, when there are
    tasks, ``comparison_tasks.csv`` (one row per task and arm)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.json").write_text(json.dumps(summary, indent=2))
    lines = ["arm,kind,mean,std,ci95,n_seeds,diff_vs_baseline,diff_ci95,class_distance_ratio"]
    for name, arm in summary["arms"].items():
        lines.append(",".join([*_csv_row(name, arm), _f(arm["class_distance_ratio"])]))
    (out_dir / "comparison.csv").write_text("\n".join(lines) + "\n")
    if summary.get("tasks"):
        lines = ["task,metric,arm,kind,mean,std,ci95,n_seeds,diff_vs_baseline,diff_ci95"]
        for task, section in summary["tasks"].items():
            for name, arm in section["arms"].items():
                lines.append(",".join([task, section["metric"], *_csv_row(name, arm)]))
        (out_dir / "comparison_tasks.csv").write_text("\n".join(lines) + "\n")


def _f(value) -> str:
    return (
        "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
    )


def markdown_table(summary: dict[str, Any]) -> str:
    """The arms table of a summary (or of one of its ``tasks``): mean ± std, 95% CI, the
    paired difference to the baseline, the distance ratio when known, and a warning for
    every pretrained arm that does not beat the best floor."""
    metric = summary["metric"]
    with_ratio = any(
        arm.get("class_distance_ratio") is not None for arm in summary["arms"].values()
    )
    ratio_head = " within/between ratio |" if with_ratio else ""
    rows = [
        f"| arm | {metric} (mean ± std) | 95% CI | S-TEC − baseline (95% CI) |{ratio_head}",
        "|---|---|---|---|" + ("---|" if with_ratio else ""),
    ]
    for name, arm in summary["arms"].items():
        diff = arm.get("paired_diff")
        diff_text = (
            f"{diff['mean']:+.4f} ± {_f(diff['ci95']) or 'n/a'} vs {diff['vs']}" if diff else ""
        )
        ratio = f" {_f(arm.get('class_distance_ratio'))} |" if with_ratio else ""
        rows.append(
            f"| {name} | {arm['mean']:.4f} ± {_f(arm['std']) or 'n/a'} | ± {_f(arm['ci95']) or 'n/a'} "
            f"| {diff_text} |{ratio}"
        )
    notes = []
    for name, arm in summary["arms"].items():
        if arm.get("beats_floors") is False:
            notes.append(
                f"- **{name} does not beat the best floor** ({arm['mean']:.4f} vs "
                f"{summary['best_floor']:.4f}): this pretraining learned nothing useful here."
            )
    return "\n".join(rows + ([""] + notes if notes else []))


def action_probe_table(summary: dict[str, Any]) -> str:
    """One row per arm, one column per action component: the frozen-feature probe's
    held-out accuracy (mean ± std over seeds) and, in brackets, the majority-class rate."""
    probe = summary.get("action_probe") or {}
    components = list(dict.fromkeys(c for per_arm in probe.values() for c in per_arm))
    rows = [
        "| arm | " + " | ".join(components) + " |",
        "|---|" + "---|" * len(components),
    ]
    for name, per_arm in probe.items():
        cells = []
        for component in components:
            entry = per_arm.get(component)
            if entry is None:
                cells.append("")
                continue
            majority = _f(entry["majority"]) or "n/a"
            std = _f(entry["std"]) or "n/a"
            cells.append(f"{entry['mean']:.4f} ± {std} (majority {majority})")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
