"""Sound-event-detection metrics: frame F1, event F1 with collars, decision thresholds.

Pure functions on frame scores and event lists, independent of the modality (the events
are intervals on a time axis with a class index).

- :func:`frame_counts`, :func:`f1_scores`, :func:`macro_f1`: frame-level F1 per class and
  its macro average;
- :func:`best_thresholds`: per class, the score threshold that maximises frame F1;
- :func:`frames_to_events`: runs of active frames as events;
- :func:`match_events`, :func:`event_counts`: event-based matching with an onset collar
  and an offset collar of ``max(offset_collar, offset_collar_rate * reference length)``,
  one-to-one and optimal (a maximum bipartite matching), as sed_eval's
  ``EventBasedMetrics(t_collar=0.2, percentage_of_length=0.2)`` that DCASE task 4 scores
  with (sed_eval's own default length share is 0.5).

Which classes the macro average counts follows sed_eval (its class-wise F-measure and
``numpy.nanmean``, as DCASE task 4 calls it with ``empty_system_output_handling=
"zero_score"``): a class without reference (no positive frame, no event) in the scored set
has no F1 and is left out, whether or not it was predicted; a class with reference counts,
with F1 0 when it was never predicted. The macro F1 of a set with no reference at all is
NaN. (:data:`MACRO_RULE` says so in results files.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

MACRO_RULE = (
    "macro F1: the mean over the classes with reference (positive frames or events) in the "
    "scored fold; a class without reference is left out, predicted or not, and one never "
    "predicted counts with F1 0 (sed_eval's class-wise average with "
    "empty_system_output_handling='zero_score', as DCASE task 4 scores)"
)


class Event(NamedTuple):
    """An event of class ``label`` from ``onset`` to ``offset`` (seconds)."""

    label: int
    onset: float
    offset: float


def frame_counts(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """True positives, false positives and false negatives per class.

    Args:
        pred: ``[N, C]`` bool predicted activity of every frame; target: ``[N, C]`` bool.
    Returns:
        ``(tp [C], fp [C], fn [C])`` int64 counts.
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(
            f"pred and target must both be [N, C], got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    pred, target = pred.bool(), target.bool()
    tp = (pred & target).sum(0)
    return tp, (pred & ~target).sum(0), (~pred & target).sum(0)


def f1_scores(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    """``[C]`` float64 F1 ``= 2 tp / (2 tp + fp + fn)``; NaN for a class without reference
    (``tp + fn = 0``), whose recall is undefined, as in sed_eval (see :data:`MACRO_RULE`)."""
    tp, fp, fn = (torch.as_tensor(v, dtype=torch.float64) for v in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    return torch.where(tp + fn > 0, 2 * tp / denominator.clamp_min(1), torch.nan)


def macro_f1(tp: Tensor, fp: Tensor, fn: Tensor) -> float:
    """The mean F1 over the classes with reference (NaN when none has any)."""
    f1 = f1_scores(tp, fp, fn)
    defined = ~f1.isnan()
    return float(f1[defined].mean()) if defined.any() else math.nan


def best_thresholds(scores: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per class, the threshold on ``scores`` whose decisions ``scores > threshold`` give the
    highest frame F1 on these frames (exact: every distinct score is a candidate cut).

    The threshold lies halfway between the lowest score kept and the highest one left out;
    ``-inf`` when every frame is kept, ``+inf`` when none is (a class without a positive
    frame). Ties in F1 go to the highest threshold (the fewest positive decisions).

    Args:
        scores: ``[N, C]`` float (logits or probabilities); target: ``[N, C]`` bool.
    Returns:
        ``(thresholds [C] float64, f1 [C] float64)``, the F1 each threshold reaches.
    """
    if scores.shape != target.shape or scores.dim() != 2:
        raise ValueError(
            f"scores and target must both be [N, C], got {tuple(scores.shape)} and {tuple(target.shape)}"
        )
    n, c = scores.shape
    thresholds = torch.full((c,), math.inf, dtype=torch.float64)
    best_f1 = torch.zeros(c, dtype=torch.float64)
    for k in range(c):
        s, order = scores[:, k].double().sort(descending=True)
        positives = target[order, k].double()
        n_pos = float(positives.sum())
        if n == 0 or n_pos == 0:
            continue
        tp = positives.cumsum(0)  # keeping the top j + 1 frames
        f1 = 2 * tp / (torch.arange(1, n + 1, dtype=torch.float64) + n_pos)
        cut = torch.ones(n, dtype=torch.bool)  # a cut only between two different scores
        cut[:-1] = s[:-1] > s[1:]
        f1 = torch.where(cut, f1, -1.0)
        j = int(f1.argmax())  # the first maximum: the fewest frames kept
        best_f1[k] = f1[j]
        thresholds[k] = -math.inf if j == n - 1 else float(s[j] + s[j + 1]) / 2
    return thresholds, best_f1


def _runs(active: Tensor) -> list[tuple[int, int]]:
    """``[T]`` bool -> ``[(first, last)]`` frame indices of every run of ``True``."""
    padded = torch.cat([active.new_zeros(1), active.bool(), active.new_zeros(1)]).int()
    edges = padded.diff()
    starts = torch.nonzero(edges == 1).flatten().tolist()
    stops = torch.nonzero(edges == -1).flatten().tolist()
    return [(a, b - 1) for a, b in zip(starts, stops, strict=True)]


def frames_to_events(
    active: Tensor, timestamps: Tensor, hop: float, duration: float | None = None
) -> list[Event]:
    """Every run of active frames of a class as one event.

    Frame ``t`` stands for the span of one hop centred at ``timestamps[t]``: a run from
    frame ``a`` to frame ``b`` becomes ``(timestamps[a] - hop / 2, timestamps[b] + hop / 2)``,
    clipped to ``[0, duration]``.

    Args:
        active: ``[T, C]`` bool frame decisions of one clip; timestamps: ``[T]`` seconds;
        hop: seconds between frames; duration: the clip's length in seconds (or None).
    Returns:
        The events, ordered by class then onset.
    """
    if active.dim() != 2 or timestamps.shape != active.shape[:1]:
        raise ValueError(
            f"active must be [T, C] and timestamps [T], got {tuple(active.shape)} and "
            f"{tuple(timestamps.shape)}"
        )
    end = math.inf if duration is None else float(duration)
    times = timestamps.double().tolist()
    events = []
    for label in range(active.shape[1]):
        for a, b in _runs(active[:, label]):
            onset = max(times[a] - hop / 2, 0.0)
            events.append(Event(label, onset, min(times[b] + hop / 2, end)))
    return events


def _matches(reference: Event, estimate: Event, collars: tuple[float, float, float]) -> bool:
    onset_collar, offset_collar, offset_rate = collars
    if abs(reference.onset - estimate.onset) > onset_collar:
        return False
    length = reference.offset - reference.onset
    return abs(reference.offset - estimate.offset) <= max(offset_collar, offset_rate * length)


def match_events(
    reference: Sequence[Event],
    estimated: Sequence[Event],
    onset_collar: float = 0.2,
    offset_collar: float = 0.2,
    offset_collar_rate: float = 0.2,
) -> int:
    """The number of reference events matched one-to-one by estimated events of one class.

    An estimate can match a reference when their onsets differ by at most
    ``onset_collar`` and their offsets by at most ``max(offset_collar, offset_collar_rate *
    reference length)``. Among all one-to-one assignments the largest is counted (a
    maximum bipartite matching by augmenting paths), so the result does not depend on the
    order of the events. A negative collar turns its condition off (``offset_collar=-1``
    and ``offset_collar_rate=0`` score onsets only).
    """
    collars = (
        math.inf if onset_collar < 0 else onset_collar,
        math.inf if offset_collar < 0 else offset_collar,
        offset_collar_rate,
    )
    candidates = [
        [j for j, est in enumerate(estimated) if _matches(ref, est, collars)] for ref in reference
    ]
    owner: dict[int, int] = {}  # estimate -> the reference it is assigned to

    def assign(i: int, seen: set[int]) -> bool:
        for j in candidates[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or assign(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(assign(i, set()) for i in range(len(reference)))


def event_counts(
    reference: Sequence[Event],
    estimated: Sequence[Event],
    n_classes: int,
    onset_collar: float = 0.2,
    offset_collar: float = 0.2,
    offset_collar_rate: float = 0.2,
) -> tuple[Tensor, Tensor, Tensor]:
    """Event-based ``(tp [C], fp [C], fn [C])`` int64 of one clip (see :func:`match_events`):
    matched references are true positives, unmatched estimates false positives, unmatched
    references false negatives. Sum them over clips for a corpus."""
    tp, fp, fn = (torch.zeros(n_classes, dtype=torch.int64) for _ in range(3))
    for events in (reference, estimated):
        bad = [e for e in events if not 0 <= e.label < n_classes]
        if bad:
            raise ValueError(f"event label {bad[0].label} is outside [0, {n_classes})")
    for label in range(n_classes):
        ref = [e for e in reference if e.label == label]
        est = [e for e in estimated if e.label == label]
        hits = match_events(ref, est, onset_collar, offset_collar, offset_collar_rate)
        tp[label], fp[label], fn[label] = hits, len(est) - hits, len(ref) - hits
    return tp, fp, fn
