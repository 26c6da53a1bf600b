"""Paired differences between two comparisons: one arm of each, the same seeds, every task.

``stec-audio compare`` pairs its arms by seed within one comparison. Two pipelines that
differ in a config group (``augment=composed`` against ``augment=separate``) are two
comparisons; this script pairs an arm of the second with an arm of the first by seed, task
by task, from their ``comparison.json``, and prints the mean difference with its 95%
Student-t interval over the seeds both have:

    python experiments/paired_across.py comparisons/audio comparisons/audio_composed
    python experiments/paired_across.py A B --arm simclr-off --arm-b simclr-inverse

A side may join comparisons with commas (``A1,A2``): the seeds of all of them, a seed of
a later one replacing an earlier one's (seeds added or run again in a folder of their own).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stec.compare import mean_ci


def per_seed(comparison: dict[str, Any], arm: str) -> dict[str, dict[str, float]]:
    """``{task: {seed: score}}`` of one arm of a ``comparison.json``."""
    tasks = comparison.get("tasks") or {"score": {"arms": comparison["arms"]}}
    out: dict[str, dict[str, float]] = {}
    for task, table in tasks.items():
        if arm in table["arms"]:
            out[task] = {str(s): float(v) for s, v in table["arms"][arm]["per_seed"].items()}
    if not out:
        raise SystemExit(f"no arm {arm!r} in this comparison; it has {sorted(comparison['arms'])}")
    return out


def paired(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    """``b − a`` paired by the seeds both have: mean, std, 95% half-width, per seed."""
    seeds = sorted(set(a) & set(b), key=int)
    diffs = [b[s] - a[s] for s in seeds]
    if not diffs:
        return {"n": 0}
    mean, std, ci = mean_ci(diffs)
    return {
        "n": len(diffs),
        "mean": mean,
        "std": std,
        "ci95": ci,
        "per_seed": dict(zip(seeds, diffs, strict=True)),
    }


def _comparison(folder: Path) -> dict[str, Any]:
    path = folder / "comparison.json"
    if not path.is_file():
        raise SystemExit(
            f"no comparison.json in {folder}: give a compare.out folder of a finished comparison"
        )
    return json.loads(path.read_text())


def joined_per_seed(folders: str, arm: str) -> dict[str, dict[str, float]]:
    """:func:`per_seed` of the comparisons in the comma-separated ``folders``, joined: a
    seed of a later one replaces an earlier one's."""
    joined: dict[str, dict[str, float]] = {}
    for folder in folders.split(","):
        for task, scores in per_seed(_comparison(Path(folder)), arm).items():
            joined.setdefault(task, {}).update(scores)
    return joined


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", help="a compare.out folder (the baseline), or several: A1,A2")
    parser.add_argument("second", help="a compare.out folder, or several: B1,B2")
    parser.add_argument("--arm", default="simclr-inverse", help="the arm of the first")
    parser.add_argument("--arm-b", default=None, help="the arm of the second (default: --arm)")
    args = parser.parse_args(argv)
    a = joined_per_seed(args.first, args.arm)
    b = joined_per_seed(args.second, args.arm_b or args.arm)
    results = {task: paired(a[task], b[task]) for task in a if task in b}

    def name(folders: str) -> str:
        return "+".join(Path(folder).name for folder in folders.split(","))

    print(
        f"{name(args.second)}/{args.arm_b or args.arm} − {name(args.first)}/{args.arm}, paired by seed"
    )
    for task, r in results.items():
        if r["n"] == 0:
            print(f"  {task}: no seed in common")
            continue
        seeds = ", ".join(f"{d:+.3f}" for d in r["per_seed"].values())
        print(f"  {task}: {r['mean']:+.4f} ± {r['ci95']:.4f} (n={r['n']}; per seed {seeds})")
    return results


if __name__ == "__main__":
    main()
