"""Sound event detection with a frozen encoder: ``stec-audio evaluate task=sed``.

Every clip is embedded frame by frame (:mod:`stec_audio.evaluation.frames`, the HEAR
timestamp embeddings, 40 ms apart); each frame's target is the set of events active at its
timestamp (:meth:`~stec_audio.data.strong.StrongLabels.frame_targets`). A multi-label probe
on the frames (:mod:`stec_audio.evaluation.sed_probe`: class-balanced ridge regression,
``lambda`` and the decision thresholds chosen on the training clips) is trained on some
clips and scored on the others, leave-one-fold-out or on ``evaluate.sed.eval_folds``. The
command itself (the config, the clip index and strong labels it names, the results file)
is :func:`stec_audio.cli.evaluate_sed`.

Decisions:

- **Head.** ``evaluate.sed.context_frames = 0``: a linear layer per frame.
  ``k > 0``: a small temporal head, a linear layer over the ``2k + 1`` frames centred on
  each frame (a 1-D convolution of width ``2k + 1`` over the frame embeddings, fitted as
  the same ridge regression; a clip's first and last frames are repeated past its
  edges). ``results["head"]`` says which.
- **Folds.** Clips keep their frames together everywhere: the outer split and the inner
  folds that choose ``lambda`` and the thresholds are folds of clips (the data's folds
  among the training clips, else the clips round-robin over ``evaluate.inner_folds``).
- **Decision threshold**, per class: the one that maximises frame F1 on the out-of-fold
  scores of the training clips at the chosen ``lambda`` (thresholds chosen on the probe's
  own training scores would be too confident).
- **Events** are the runs of frames above the threshold, each frame one hop wide around
  its timestamp; they are scored against the strong labels themselves (not their frame
  version) by :func:`stec.evaluation.sed.event_counts`: 200 ms onset collar, offset
  collar ``max(200 ms, 20% of the event)``, optimal one-to-one matching per class:
  sed_eval's event-based metric as DCASE task 4 uses it. Both F1s are macro averages over
  the classes with reference in the test fold, as sed_eval averages them
  (``results["macro_rule"]``), per test fold; the results give their mean and std over
  folds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from stec.errors import ConfigError
from stec.evaluation.sed import (
    MACRO_RULE,
    Event,
    event_counts,
    f1_scores,
    frame_counts,
    frames_to_events,
    macro_f1,
)
from stec.run_dirs import part_path, results_path
from stec_audio.evaluation.sed_probe import LAMBDAS, FrameStats, fit_frame_probe

EVENT_RULE = (
    "sed_eval EventBasedMetrics(t_collar, percentage_of_length) as DCASE task 4 scores: "
    "onset within onset_collar_s, offset within max(offset_collar_s, offset_collar_rate * "
    "event length), optimal one-to-one matching per class, macro average over classes"
)
THRESHOLD_RULE = (
    "per class, the threshold that maximises frame F1 on out-of-fold scores of the "
    "training clips (inner folds of clips, at the chosen lambda)"
)
PROBE = (
    "class-balanced ridge regression per class on standardised frame features, lambda "
    "chosen by out-of-fold macro frame F1 over inner folds of the training clips"
)


@dataclass(frozen=True)
class SedOptions:
    """``evaluate.sed``: the head's context, the event collars (s) and the split."""

    context_frames: int = 0
    onset_collar: float = 0.2
    offset_collar: float = 0.2
    offset_collar_rate: float = 0.2
    eval_folds: tuple[int, ...] = ()
    lambdas: tuple[float, ...] = LAMBDAS

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> SedOptions:
        """The options of an ``evaluate.sed`` section; a bad value raises a
        :class:`ConfigError` naming its key."""
        values = dict(section)
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"evaluate.sed has no key(s) {unknown}; its keys: "
                f"{', '.join(cls.__dataclass_fields__)}"
            )

        def check(key: str, ok: bool, want: str) -> None:
            if not ok:
                raise ConfigError(f"evaluate.sed.{key} must be {want}, got {values[key]!r}")

        values.setdefault("context_frames", 0)
        k = values["context_frames"]
        check("context_frames", _integer(k) and k >= 0, "an integer >= 0")
        for key in ("onset_collar", "offset_collar", "offset_collar_rate"):
            value = values.setdefault(key, getattr(cls, key))
            check(key, _number(value) and value >= 0, "a number >= 0")
        folds = values.setdefault("eval_folds", ())
        check(
            "eval_folds",
            isinstance(folds, (list, tuple)) and all(map(_integer, folds)),
            "a list of folds",
        )
        lambdas = values.setdefault("lambdas", LAMBDAS)
        ok = (
            isinstance(lambdas, (list, tuple))
            and lambdas
            and all(_number(v) and v > 0 for v in lambdas)
        )
        check("lambdas", bool(ok), "a list of positive numbers")
        values["eval_folds"] = tuple(int(f) for f in folds)
        values["lambdas"] = tuple(sorted(float(v) for v in lambdas))
        return cls(**values)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class FrameData:
    """Frames of N clips with their targets.

    Attributes:
        features: per clip ``[T_i, D]``; targets: per clip ``[T_i, C]`` (0/1);
        timestamps_s: per clip ``[T_i]`` seconds; references: per clip its events;
        durations: per clip seconds; folds: ``[N]`` int; hop_s: seconds between frames;
        classes: the C event class names.
    """

    features: list[Tensor]
    targets: list[Tensor]
    timestamps_s: list[Tensor]
    references: list[list[Event]]
    durations: list[float]
    folds: Tensor
    hop_s: float
    classes: list[str]


def with_context(frames: Tensor, k: int) -> Tensor:
    """``[T, D] -> [T, (2k + 1) D]``: each frame with its ``k`` neighbours on each side
    (earliest first), the first and last frames repeated past the clip's edges."""
    if k == 0:
        return frames
    t = frames.shape[0]
    padded = torch.cat([frames[:1].expand(k, -1), frames, frames[-1:].expand(k, -1)])
    return torch.cat([padded[j : j + t] for j in range(2 * k + 1)], dim=1)


def _clip_groups(folds: Tensor, clips: Sequence[int], n_inner: int) -> list[list[int]]:
    """Inner folds of the training ``clips``: their own folds when there are two or more,
    else the clips round-robin over ``n_inner`` folds."""
    own = folds[list(clips)].tolist()
    if len(set(own)) < 2:
        own = [i % max(2, n_inner) for i in range(len(clips))]
    return [[c for c, f in zip(clips, own, strict=True) if f == g] for g in sorted(set(own))]


def _splits(folds: Tensor, eval_folds: tuple[int, ...]) -> list[tuple[str, Tensor]]:
    present = sorted(set(folds.tolist()))
    if eval_folds:
        test = torch.isin(folds, torch.tensor(eval_folds))
        if not test.any() or test.all():
            what = "selects no clip" if not test.any() else "leaves no training clip"
            raise ConfigError(
                f"evaluate.sed.eval_folds={list(eval_folds)} {what}; the data has folds {present}"
            )
        return [("+".join(str(f) for f in eval_folds), test)]
    if len(present) < 2:
        raise ConfigError(f"leave-one-fold-out needs at least two folds; the data has {present}")
    return [(str(f), folds == f) for f in present]


def cross_validate_sed(
    data: FrameData, options: SedOptions, device: str | torch.device = "cpu", inner_folds: int = 5
) -> dict:
    """Fit the frame probe on the training clips of each split and score the test clips.

    Args:
        data: the frames; options: ``evaluate.sed``; device: where the probe's sums and
            solves run; inner_folds: folds of clips when the training clips have fewer
            than two folds of their own.
    Returns:
        ``results.json`` content: ``frame_f1_mean/std`` and ``event_f1_mean/std`` over
        splits, ``per_fold`` (frame F1) and ``event_f1_per_fold``, ``per_class`` means,
        the thresholds and ``lambda`` of every split, and the rules used.
    """
    k, n_classes = options.context_frames, len(data.classes)
    features = [with_context(f, k) for f in data.features] if k else data.features
    collars = (options.onset_collar, options.offset_collar, options.offset_collar_rate)
    cache: dict[tuple[int, ...], FrameStats] = {}  # leave-one-fold-out reuses every fold's

    def frames_of(clips: list[int]) -> tuple[Tensor, Tensor]:
        return torch.cat([features[c] for c in clips]), torch.cat([data.targets[c] for c in clips])

    per_split: dict[str, dict[str, Any]] = {}
    for name, test in _splits(data.folds, options.eval_folds):
        train_clips = torch.nonzero(~test).flatten().tolist()
        inner = _clip_groups(data.folds, train_clips, inner_folds)
        groups = [frames_of(clips) for clips in inner]
        for clips, (x, y) in zip(inner, groups, strict=True):
            if tuple(clips) not in cache:
                cache[tuple(clips)] = FrameStats.of(x, y, device)
        stats = [cache[tuple(clips)] for clips in inner]
        probe = fit_frame_probe(groups, options.lambdas, device, stats)
        frame, event = [torch.zeros(3, n_classes, dtype=torch.int64) for _ in range(2)]
        for c in torch.nonzero(test).flatten().tolist():
            active = probe.predict(features[c])
            frame += torch.stack(frame_counts(active, data.targets[c].bool()))
            estimated = frames_to_events(
                active, data.timestamps_s[c], data.hop_s, data.durations[c]
            )
            event += torch.stack(event_counts(data.references[c], estimated, n_classes, *collars))
        per_split[name] = {
            "frame_f1": macro_f1(*frame),
            "event_f1": macro_f1(*event),
            "frame_f1_per_class": f1_scores(*frame),
            "event_f1_per_class": f1_scores(*event),
            "thresholds": probe.thresholds.tolist(),
            "lambda": probe.lam,
        }
    return _summary(per_split, data, options)


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite))


def _summary(
    per_split: dict[str, dict[str, Any]], data: FrameData, options: SedOptions
) -> dict[str, Any]:
    results: dict[str, Any] = {"task": "sed", "metric": "frame_f1"}
    for metric in ("frame_f1", "event_f1"):
        mean, std = _mean_std([s[metric] for s in per_split.values()])
        results[f"{metric}_mean"], results[f"{metric}_std"] = mean, std
    results["per_fold"] = {name: s["frame_f1"] for name, s in per_split.items()}
    results["event_f1_per_fold"] = {name: s["event_f1"] for name, s in per_split.items()}
    results["per_class"] = {
        label: {
            metric: _mean_std([float(s[f"{metric}_per_class"][c]) for s in per_split.values()])[0]
            for metric in ("frame_f1", "event_f1")
        }
        for c, label in enumerate(data.classes)
    }
    results["thresholds"] = {
        name: dict(zip(data.classes, s["thresholds"], strict=True)) for name, s in per_split.items()
    }
    results["probe"] = {
        "kind": "ridge",
        "what": PROBE,
        "lambdas": list(options.lambdas),
        "lambda": {name: s["lambda"] for name, s in per_split.items()},
    }
    k = options.context_frames
    results["head"] = {
        "kind": "linear" if k == 0 else "temporal",
        "context_frames": k,
        "window_ms": (2 * k + 1) * data.hop_s * 1000.0,
        "what": "a linear layer per frame"
        if k == 0
        else f"a linear layer over {2 * k + 1} consecutive frames (a 1-D convolution)",
    }
    results["event_rule"] = {
        "onset_collar_s": options.onset_collar,
        "offset_collar_s": options.offset_collar,
        "offset_collar_rate": options.offset_collar_rate,
        "rule": EVENT_RULE,
    }
    results["threshold_rule"] = THRESHOLD_RULE
    results["macro_rule"] = MACRO_RULE
    results["split"] = (
        f"train on the other folds, evaluate on folds {list(options.eval_folds)}"
        if options.eval_folds
        else "leave-one-fold-out"
    )
    results.update(
        classes=list(data.classes),
        hop_ms=data.hop_s * 1000.0,
        n_clips=len(data.features),
        n_frames=int(sum(f.shape[0] for f in data.features)),
        n_events=int(sum(len(r) for r in data.references)),
        n_folds=len(per_split),
    )
    return results


def sed_table(results: Mapping[str, Any]) -> str:
    """Frame and event F1 of every fold, their mean ± std, then every class."""

    def fmt(v: float | None) -> str:
        return "  n/a " if v is None or math.isnan(v) else f"{v:.4f}"

    lines = [f"{'fold':<12}{'frame F1':>10}{'event F1':>10}"]
    for fold, frame in results["per_fold"].items():
        lines.append(f"{fold:<12}{fmt(frame):>10}{fmt(results['event_f1_per_fold'][fold]):>10}")
    lines.append(
        f"{'mean':<12}{fmt(results['frame_f1_mean']):>10}{fmt(results['event_f1_mean']):>10}"
    )
    lines.append(f"{'std':<12}{fmt(results['frame_f1_std']):>10}{fmt(results['event_f1_std']):>10}")
    for label, scores in results["per_class"].items():
        lines.append(f"{label:<12}{fmt(scores['frame_f1']):>10}{fmt(scores['event_f1']):>10}")
    return "\n".join(lines)


def sed_results_path(cfg: DictConfig) -> Path:
    """``out=``, else ``sed/results.json`` next to where the clip-level results go (the two
    evaluations of one encoder keep separate files)."""
    return Path(cfg.out) if cfg.out else part_path(results_path(cfg), "sed")
