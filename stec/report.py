"""The comparison report: ``report.md`` with its table and plots (matplotlib optional)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from stec.compare import action_probe_table, markdown_table
from stec.efference import READ_MARGIN
from stec.engine.logging import read_metrics


def _metrics(run_dir: Path) -> list[dict[str, float]]:
    return read_metrics(run_dir) if (run_dir / "metrics.csv").exists() else []


def pca_2d(features: np.ndarray) -> np.ndarray:
    """Project ``[N, D]`` features onto their first two principal components."""
    centred = features - features.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def plot_all(summary: dict[str, Any], out_dir: Path, seed: int) -> list[tuple[str, str]]:
    """Write the PNG plots; returns ``(title, file name)`` pairs (empty without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    figures = []
    arms = {n: a for n, a in summary["arms"].items() if a["kind"] == "pretrain"}
    runs = {n: out_dir / n / f"seed{seed}" for n in arms}
    # training curves
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for i, (name, run) in enumerate(runs.items()):
        rows = _metrics(run)
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        style = {"label": name, "color": f"C{i % 10}"}  # one colour per arm in every panel
        axes[0].plot(steps, [r.get("ssl_loss", math.nan) for r in rows], **style)
        if "action_loss" in rows[0]:
            axes[1].plot(steps, [r["action_loss"] for r in rows], **style)
            accs = [
                np.nanmean([v for k, v in r.items() if k.startswith("action_acc/")]) for r in rows
            ]
            axes[2].plot(steps, accs, **style)
    for ax, title in zip(axes, ("SSL loss", "action loss", "mean action accuracy"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.get_lines():  # an invariant arm draws nothing in the action panels
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "curves.png", dpi=90)
    plt.close(fig)
    figures.append((f"Training curves (seed {seed})", "curves.png"))
    # per-component action accuracy at the end of training
    comps, majority = training_action_accuracy(runs)
    if comps:
        fig, ax = plt.subplots(figsize=(10, 4))
        names = sorted({c for v in comps.values() for c in v})
        width = 0.8 / len(comps)
        for i, (arm, values) in enumerate(comps.items()):
            x = np.arange(len(names)) + i * width
            ax.bar(x, [values.get(c, 0) for c in names], width, label=arm)
            rates = [majority.get(arm, {}).get(c, math.nan) for c in names]
            ax.hlines(rates, x - width / 2, x + width / 2, colors="black", linewidth=2)
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30)
        ax.set_ylabel("accuracy, last 20% of training (black: majority class)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "action_accuracy.png", dpi=90)
        plt.close(fig)
        figures.append(("Per-component action-prediction accuracy", "action_accuracy.png"))
    # within/between-class distance ratio
    ratios = {
        n: a["class_distance_ratio"]
        for n, a in summary["arms"].items()
        if a["class_distance_ratio"] is not None
    }
    if ratios:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.bar(list(ratios), list(ratios.values()))
        ax.set_ylabel("within / between class distance")
        ax.tick_params(axis="x", rotation=30)
        fig.tight_layout()
        fig.savefig(out_dir / "distance_ratio.png", dpi=90)
        plt.close(fig)
        figures.append(
            (
                "Within- vs between-class distance ratio (lower = better separated)",
                "distance_ratio.png",
            )
        )
    figures += _plot_tasks(summary, out_dir, plt)
    figures += _plot_action_probe(summary, out_dir, plt)
    # 2-D maps of the embeddings
    maps = {n: out_dir / n / f"seed{seed}" / "embeddings.npy" for n in summary["arms"]}
    maps = {n: p for n, p in maps.items() if p.exists()}
    if maps:
        cols = min(len(maps), 4)
        rows_n = math.ceil(len(maps) / cols)
        fig, axes = plt.subplots(rows_n, cols, figsize=(3.5 * cols, 3.5 * rows_n), squeeze=False)
        for ax in axes.flat[len(maps) :]:
            ax.set_visible(False)
        for ax, (name, path) in zip(axes.flat, maps.items()):  # noqa: B905 - more axes than maps
            stored = np.load(path, allow_pickle=True).item()
            xy = pca_2d(stored["embeddings"].astype(np.float64))
            labels = np.asarray(stored["labels"])
            ax.scatter(
                xy[:, 0], xy[:, 1], c=labels if labels.ndim == 1 else None, s=6, cmap="tab10"
            )
            ax.set_title(name, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        fig.savefig(out_dir / "embeddings_pca.png", dpi=90)
        plt.close(fig)
        figures.append(("PCA of the embeddings, coloured by class", "embeddings_pca.png"))
    return figures


def _grouped_bars(ax, groups: list[str], series: dict[str, dict[str, dict[str, Any]]]) -> list:
    """One bar per series in every group, at ``series[name][group]["mean"]`` with its std as
    an error bar; returns the bars' x positions per series (``[series][group]``)."""
    width = 0.8 / max(1, len(series))
    positions = []
    for i, (name, values) in enumerate(series.items()):
        xs = np.arange(len(groups)) + i * width
        means = [values[g]["mean"] if g in values else np.nan for g in groups]
        errors = [values[g]["std"] if g in values else np.nan for g in groups]
        ax.bar(xs, means, width, yerr=np.nan_to_num(errors), capsize=2, label=name)
        positions.append(xs)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups, rotation=20)
    ax.legend(fontsize=7)
    return positions


def _plot_tasks(summary: dict[str, Any], out_dir: Path, plt) -> list[tuple[str, str]]:
    """``tasks.png``: every arm's score on every task (mean ± std over seeds)."""
    tasks = summary.get("tasks")
    if not tasks:
        return []
    arm_names = list(dict.fromkeys(a for section in tasks.values() for a in section["arms"]))
    groups = [f"{name} ({section['metric']})" for name, section in tasks.items()]
    series = {
        arm: {g: section["arms"][arm] for g, section in zip(groups, tasks.values(), strict=True)
              if arm in section["arms"]}
        for arm in arm_names
    }  # fmt: skip
    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(groups) * max(1, len(arm_names)) / 3), 4))
    _grouped_bars(ax, groups, series)
    ax.set_ylabel("score (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(out_dir / "tasks.png", dpi=90)
    plt.close(fig)
    return [("Score per task and arm (mean ± std over seeds)", "tasks.png")]


def _plot_action_probe(summary: dict[str, Any], out_dir: Path, plt) -> list[tuple[str, str]]:
    """``action_probe.png``: the frozen-feature action probe's accuracy per component and
    arm, with each arm's majority-class rate as a black tick on its bar."""
    probe = summary.get("action_probe")
    if not probe:
        return []
    components = list(dict.fromkeys(c for per_arm in probe.values() for c in per_arm))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(components) * max(1, len(probe)) / 3), 4))
    positions = _grouped_bars(ax, components, probe)
    width = 0.8 / max(1, len(probe))
    for xs, per_arm in zip(positions, probe.values(), strict=True):
        for x, component in zip(xs, components, strict=True):
            majority = (per_arm.get(component) or {}).get("majority")
            if majority is not None:
                ax.hlines(majority, x - width / 2, x + width / 2, colors="black", linewidth=2)
    ax.set_ylabel("held-out accuracy (black: majority class)")
    fig.tight_layout()
    fig.savefig(out_dir / "action_probe.png", dpi=90)
    plt.close(fig)
    return [("Action probe on frozen features: accuracy per component", "action_probe.png")]


def training_action_accuracy(
    runs: dict[str, Path],
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Per arm and component, the inverse model's batch accuracy and the accuracy of
    guessing the class seen most often in training before each batch (``action_acc/*``,
    ``action_majority/*`` of ``metrics.csv``), and the same per target of the components
    with several (``target_acc/*``, ``target_majority/*``), averaged over the last 20% of
    the logged steps."""
    accuracy: dict[str, dict[str, float]] = {}
    majority: dict[str, dict[str, float]] = {}
    for name, run in runs.items():
        acc, maj = run_action_accuracy(run)
        if acc or maj:
            accuracy[name], majority[name] = acc, maj
    return accuracy, majority


def late_means(run: Path, *prefixes: str) -> dict[str, float]:
    """The run's ``metrics.csv`` columns that start with one of ``prefixes``, each averaged
    over the last 20% of the logged steps, keyed by the name after the prefix."""
    rows = _metrics(run)
    tail = rows[-max(1, len(rows) // 5) :]
    return {
        key[len(prefix) :]: float(np.nanmean([r[key] for r in tail]))
        for key in (rows[-1] if rows else ())
        for prefix in prefixes
        if key.startswith(prefix)
    }


def run_action_accuracy(run: Path) -> tuple[dict[str, float], dict[str, float]]:
    """:func:`training_action_accuracy` of one run: per component and target, its inverse
    model's accuracy and majority rate over the last 20% of the logged steps."""
    return (
        late_means(run, "action_acc/", "target_acc/"),
        late_means(run, "action_majority/", "target_majority/"),
    )


def run_gate(run: Path) -> dict[str, float]:
    """Per component and target, the share of its gradient the read gate let into the
    encoder (``efference.read_gate``) over the last 20% of the logged steps; {} without."""
    return late_means(run, "action_gate/", "target_gate/")


def readability_line(run_dir: Path) -> str:
    """One line on what a run's inverse model read in training: each target (each
    component that has no targets of its own) with its majority rate, over the last 20% of
    the logged steps, and, when none is read ``READ_MARGIN`` above its majority rate, that
    the efference copy gives the encoder no signal. "" without the inverse model's metrics
    (``efference=off``, a forward model only, or no step logged)."""
    accuracy, majority = run_action_accuracy(run_dir)
    targets = [name for name in accuracy if name in majority]
    split = {name.split(".")[0] for name in targets if "." in name}
    shown = [name for name in targets if name not in split]  # a component's targets, not it
    if not shown:
        return ""
    read = ", ".join(f"{name} {accuracy[name]:.2f} ({majority[name]:.2f})" for name in shown)
    line = f"the inverse model read (last 20% of training; majority rate in brackets): {read}"
    if all(accuracy[name] < majority[name] + READ_MARGIN for name in shown):
        line += (
            f"; nothing is read {READ_MARGIN * 100:.0f} points above its majority rate, so the "
            "efference copy gives the encoder no signal on this data (docs/actions.md: when "
            "the inverse model reads nothing)"
        )
    gate = run_gate(run_dir)
    if gate:
        shares = ", ".join(f"{name} {gate[name]:.2f}" for name in shown if name in gate)
        line += f"; the read gate let into the encoder this share of each one's gradient: {shares}"
    return line


#: how many nats the forward model's loss must gain from being told the action to count
FORWARD_MARGIN = 0.05


def told_gain(run_dir: Path) -> float | None:
    """A run's ``forward_told_gain`` over the last 20% of its logged steps (None without a
    forward model): how many nats lower its forward model's loss is told each pair's own
    action than told another pair's."""
    return late_means(run_dir, "forward_told_gain").get("")  # the whole name: key ""


def forward_model_line(run_dir: Path) -> str:
    """One line on whether a run's forward model uses the action (:func:`told_gain`) and,
    under ``FORWARD_MARGIN`` nats, that the efference copy gives the encoder no signal.
    "" without a forward model."""
    gain = told_gain(run_dir)
    if gain is None:
        return ""
    better = "better" if gain >= 0 else "worse"
    line = (
        f"the forward model, told each pair's own action, predicts the other view "
        f"{abs(gain):.2f} nats {better} than told another pair's (last 20% of training)"
    )
    if not gain >= FORWARD_MARGIN:
        line += (
            f"; under {FORWARD_MARGIN}: it ignores the action, so its efference copy gives the "
            "encoder no signal on this data (docs/actions.md: when the inverse model reads "
            "nothing)"
        )
    return line


def forward_model_table(summary: dict[str, Any], out_dir: Path) -> str:
    """Markdown table of each forward-model arm's :func:`told_gain`, over seeds."""
    rows = []
    for arm in summary["arms"]:
        gains = {}
        for seed in summary["seeds"]:
            gain = told_gain(out_dir / arm / f"seed{seed}")
            if gain is not None:
                gains[seed] = gain
        if gains:
            each = ", ".join(f"{gain:+.2f}" for gain in gains.values())
            rows.append(f"| {arm} | {np.mean(list(gains.values())):+.2f} | {each} |")
    if not rows:
        return ""
    return "\n".join(
        ["| arm | told the action: nats gained, mean | by seed |", "|---|---|---|", *rows]
    )


def inverse_model_table(summary: dict[str, Any], out_dir: Path) -> str:
    """Markdown table of :func:`training_action_accuracy` per arm, averaged over seeds."""
    accuracy: dict[str, dict[str, list[float]]] = {}
    majority: dict[str, dict[str, list[float]]] = {}
    for arm in summary["arms"]:
        for seed in summary["seeds"]:
            run = out_dir / arm / f"seed{seed}"
            if not (run / "metrics.csv").exists():
                continue
            acc, maj = training_action_accuracy({arm: run})
            for out, values in ((accuracy, acc), (majority, maj)):
                for component, value in values.get(arm, {}).items():
                    out.setdefault(arm, {}).setdefault(component, []).append(value)
    if not accuracy:
        return ""
    components = sorted({c for v in accuracy.values() for c in v})
    rows = ["| arm | " + " | ".join(components) + " |", "|---" * (len(components) + 1) + "|"]
    for arm, values in accuracy.items():
        cells = []
        for c in components:
            if c not in values:
                cells.append("")
                continue
            rate = majority.get(arm, {}).get(c)
            rate_text = f" ({np.mean(rate):.2f})" if rate else ""
            cells.append(f"{np.mean(values[c]):.2f}{rate_text}")
        rows.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_report(summary: dict[str, Any], out_dir: str | Path, title: str, command: str) -> Path:
    out_dir = Path(out_dir)
    figures = plot_all(summary, out_dir, summary["seeds"][0])
    lines = [
        f"# {title}",
        "",
        f"Command: `{command}`",
        "",
        f"Metric: `{summary['metric']}` over seeds {summary['seeds']}; CI = 95% Student-t over seeds; "
        "differences are paired by seed.",
        "",
        markdown_table(summary),
        "",
    ]
    for task, section in (summary.get("tasks") or {}).items():
        lines += [f"## Task `{task}` ({section['metric']})", "", markdown_table(section), ""]
    if summary.get("action_probe"):
        lines += [
            "## Action probe on frozen features",
            "",
            "Held-out accuracy of an inverse model trained on each arm's frozen features "
            "(mean ± std over seeds); in brackets, the rate of always guessing the most "
            "frequent class.",
            "",
            action_probe_table(summary),
            "",
        ]
    table = inverse_model_table(summary, out_dir)
    if table:
        lines += [
            "## The inverse model in training",
            "",
            "Batch accuracy of each arm's own inverse model over the last 20% of training "
            "(mean over seeds); in brackets, the accuracy of guessing the class seen most "
            "often in training before each batch.",
            "",
            table,
            "",
        ]
    table = forward_model_table(summary, out_dir)
    if table:
        lines += [
            "## The forward model in training",
            "",
            "How many nats lower each arm's forward-model loss is told each pair's own "
            "action than told another pair's, over the last 20% of training: about 0 when "
            "the forward model ignores the action.",
            "",
            table,
            "",
        ]
    for caption, name in figures:
        lines += [f"## {caption}", "", f"![{caption}]({name})", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
