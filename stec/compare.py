"""The experiment runner behind ``stec-audio compare`` and ``stec-vision compare``.

It trains the same encoder with the same budget and seeds for every arm (method x
efference, plus optional one-component ablations), evaluates each with the modality's
protocol, adds the floors (a randomly initialised encoder and plain input features), and
writes ``comparison.csv``, ``comparison.json`` and ``report.md`` (with plots when
matplotlib is installed). Arms whose ``results.json`` exists are skipped, so an
interrupted comparison resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def run_plan(
    plan: Plan,
    out_dir: str | Path,
    common: Sequence[str],
    train: Callable[[list[str]], None],
    evaluate: Callable[[list[str]], None],
    metric: str,
    log: Callable[[str], None] = print,
    embed: Callable[[list[str]], None] | None = None,
) -> dict[str, Any]:
    """Run every (arm, seed) not done yet, then summarise. ``train``/``evaluate`` take the
    Hydra overrides of one run; ``metric`` names the key read from ``results.json``."""
    out_dir = Path(out_dir)
    for arm in plan.arms:
        for seed in plan.seeds:
            run_dir = out_dir / arm.name / f"seed{seed}"
            results = run_dir / "results.json"
            if results.exists():
                log(f"[skip] {arm.name} seed {seed}: {results} exists")
                continue
            run = [*common, *arm.overrides, f"seed={seed}", f"run_dir={run_dir}"]
            checkpoint = str(run_dir) if arm.kind == "pretrain" else arm.checkpoint
            log(f"[{'train' if arm.kind == 'pretrain' else 'floor'}] {arm.name} seed {seed}")
            if arm.kind == "pretrain":
                train(run)
            if embed is not None and seed == plan.seeds[0]:  # for the 2-D maps of the report
                embed([*run, f"checkpoint={checkpoint}", f"out={run_dir / 'embeddings.npy'}"])
            evaluate([*run, f"checkpoint={checkpoint}", f"out={results}"])
    summary = summarise(plan, out_dir, metric)
    write_summary(summary, out_dir)
    return summary


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, sample std and the half-width of the 95% t confidence interval."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, math.nan, math.nan
    std = statistics.stdev(values)
    return mean, std, T95.get(n - 1, 1.96) * std / math.sqrt(n)


def summarise(plan: Plan, out_dir: Path, metric: str) -> dict[str, Any]:
    arms: dict[str, Any] = {}
    for arm in plan.arms:
        per_seed = {}
        for seed in plan.seeds:
            path = out_dir / arm.name / f"seed{seed}" / "results.json"
            if path.exists():
                per_seed[seed] = json.loads(path.read_text())
        values = [r[metric] for r in per_seed.values() if r.get(metric) is not None]
        if not values:
            continue
        mean, std, ci = mean_ci(values)
        ratios = [
            r["class_distance_ratio"]
            for r in per_seed.values()
            if r.get("class_distance_ratio") is not None
        ]
        arms[arm.name] = {
            "kind": arm.kind,
            "mean": mean,
            "std": std,
            "ci95": ci,
            "n_seeds": len(values),
            "per_seed": {
                str(s): r[metric] for s, r in per_seed.items() if r.get(metric) is not None
            },
            "class_distance_ratio": statistics.fmean(ratios) if ratios else None,
            "baseline": arm.baseline,
        }
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
    return {"metric": metric, "seeds": plan.seeds, "arms": arms, "best_floor": best_floor}


def write_summary(summary: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.json").write_text(json.dumps(summary, indent=2))
    lines = ["arm,kind,mean,std,ci95,n_seeds,diff_vs_baseline,diff_ci95,class_distance_ratio"]
    for name, arm in summary["arms"].items():
        diff = arm.get("paired_diff", {})
        lines.append(
            ",".join(
                str(v)
                for v in (
                    name,
                    arm["kind"],
                    _f(arm["mean"]),
                    _f(arm["std"]),
                    _f(arm["ci95"]),
                    arm["n_seeds"],
                    _f(diff.get("mean")),
                    _f(diff.get("ci95")),
                    _f(arm["class_distance_ratio"]),
                )
            )
        )
    (out_dir / "comparison.csv").write_text("\n".join(lines) + "\n")


def _f(value) -> str:
    return (
        "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
    )


def markdown_table(summary: dict[str, Any]) -> str:
    metric = summary["metric"]
    rows = [
        f"| arm | {metric} (mean ± std) | 95% CI | S-TEC − baseline (95% CI) | within/between ratio |",
        "|---|---|---|---|---|",
    ]
    for name, arm in summary["arms"].items():
        diff = arm.get("paired_diff")
        diff_text = (
            f"{diff['mean']:+.4f} ± {_f(diff['ci95']) or 'n/a'} vs {diff['vs']}" if diff else ""
        )
        rows.append(
            f"| {name} | {arm['mean']:.4f} ± {_f(arm['std']) or 'n/a'} | ± {_f(arm['ci95']) or 'n/a'} "
            f"| {diff_text} | {_f(arm['class_distance_ratio'])} |"
        )
    notes = []
    for name, arm in summary["arms"].items():
        if arm.get("beats_floors") is False:
            notes.append(
                f"- **{name} does not beat the best floor** ({arm['mean']:.4f} vs "
                f"{summary['best_floor']:.4f}): this pretraining learned nothing useful here."
            )
    return "\n".join(rows + ([""] + notes if notes else []))
