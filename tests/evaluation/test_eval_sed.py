"""Sound-event-detection metrics against hand-computed cases (stec.evaluation.sed)."""

from __future__ import annotations

import math

import pytest
import torch

from stec.evaluation.sed import (
    Event,
    best_thresholds,
    event_counts,
    f1_scores,
    frame_counts,
    frames_to_events,
    macro_f1,
    match_events,
)


def counts(reference, estimated, n_classes=1, **collars):
    return [c.tolist() for c in event_counts(reference, estimated, n_classes, **collars)]


@pytest.mark.parametrize(
    "estimate, matched",
    [
        (Event(0, 1.15, 2.1), True),  # onset 150 ms late, offset 100 ms late: inside
        (Event(0, 0.81, 2.0), True),  # onset 190 ms early
        (Event(0, 1.25, 2.0), False),  # onset 250 ms late: outside the 200 ms collar
        (Event(0, 1.0, 2.25), False),  # offset 250 ms late on a 1 s event: max(0.2, 0.2)
        (Event(1, 1.0, 2.0), False),  # same times, another class
    ],
)
def test_onset_and_offset_collars(estimate, matched):
    reference = [Event(0, 1.0, 2.0)]
    tp = int(matched)
    assert counts(reference, [estimate], n_classes=2)[0] == [tp, 0]
    assert sum(counts(reference, [estimate], n_classes=2)[1]) == 1 - tp  # a false positive
    assert counts(reference, [estimate], n_classes=2)[2][0] == 1 - tp  # a missed reference


def test_the_offset_collar_grows_with_long_events():
    long = [Event(0, 0.0, 5.0)]  # 20% of 5 s = 1 s of offset collar
    assert counts(long, [Event(0, 0.1, 4.2)]) == [[1], [0], [0]]
    assert counts(long, [Event(0, 0.1, 3.9)]) == [[0], [1], [1]]
    # the same 800 ms offset error on a 0.5 s event misses
    assert counts([Event(0, 0.0, 0.5)], [Event(0, 0.0, 1.3)]) == [[0], [1], [1]]
    # onsets only: offsets are not checked when both offset conditions are off
    onsets_only = {"offset_collar": -1, "offset_collar_rate": 0.0}
    assert counts(long, [Event(0, 0.1, 1.0)], **onsets_only) == [[1], [0], [0]]


def test_a_split_event_and_merged_events():
    # one event detected as two halves: neither half has both ends in the collars
    assert counts([Event(0, 1.0, 3.0)], [Event(0, 1.0, 1.9), Event(0, 2.1, 3.0)]) == [
        [0], [2], [1],
    ]  # fmt: skip
    # a split near the end: the first part ends 300 ms early (collar 20% of 2 s = 0.4 s)
    tp, fp, fn = event_counts([Event(0, 1.0, 3.0)], [Event(0, 1.0, 2.7), Event(0, 2.8, 3.0)], 1)
    assert (tp.item(), fp.item(), fn.item()) == (1, 1, 0)
    assert f1_scores(tp, fp, fn).item() == pytest.approx(2 / 3)
    # two events detected as one: the merged estimate ends 1 s after the first one
    assert counts([Event(0, 1.0, 1.5), Event(0, 2.0, 2.5)], [Event(0, 1.0, 2.5)]) == [
        [0], [1], [2],
    ]  # fmt: skip
    # a merge over a short gap keeps the first event (offset 150 ms late)
    assert counts([Event(0, 1.0, 1.5), Event(0, 1.6, 1.65)], [Event(0, 1.0, 1.65)]) == [
        [1], [0], [1],
    ]  # fmt: skip


def test_matching_is_optimal_and_order_free():
    # x fits both references, y only the first: a greedy pass that gives x to the first
    # reference finds 1 match, the best assignment finds 2
    refs = [Event(0, 1.0, 2.0), Event(0, 1.3, 2.0)]
    ests = [Event(0, 1.15, 2.0), Event(0, 1.0, 2.0)]
    assert match_events(refs, ests) == 2
    assert match_events(refs[::-1], ests[::-1]) == 2
    assert match_events(refs, ests + [Event(0, 1.1, 2.0)]) == 2  # one reference, one match
    assert match_events([], ests) == 0 and match_events(refs, []) == 0


def test_frame_f1_counts_and_macro_average():
    pred = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.bool)
    target = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    tp, fp, fn = frame_counts(pred, target)
    assert tp.tolist() == [1, 1, 0] and fp.tolist() == [1, 1, 0] and fn.tolist() == [1, 0, 0]
    f1 = f1_scores(tp, fp, fn)
    assert f1[0].item() == pytest.approx(0.5) and f1[1].item() == pytest.approx(2 / 3)
    assert math.isnan(f1[2].item())  # no reference and no predicted frame: left out
    assert macro_f1(tp, fp, fn) == pytest.approx((0.5 + 2 / 3) / 2)
    assert math.isnan(macro_f1(torch.zeros(2), torch.zeros(2), torch.zeros(2)))
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        frame_counts(pred[:, 0], target[:, 0])


def _sed_eval_class_f1(tp: int, fp: int, fn: int) -> float:
    """sed_eval 0.2.1's class-wise F-measure as DCASE task 4 calls it
    (``empty_system_output_handling="zero_score"``): precision 0 without output, recall
    NaN without reference, F 0 when both are 0, else 2PR / (P + R) (NaN stays NaN)."""
    n_sys, n_ref = tp + fp, tp + fn
    precision = 0.0 if n_sys == 0 else tp / n_sys
    recall = math.nan if n_ref == 0 else tp / n_ref
    if precision == 0 and recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def test_macro_f1_leaves_out_the_classes_sed_eval_leaves_out():
    # per class (tp, fp, fn): scored; predicted but absent from the fold; present but
    # never predicted; neither present nor predicted
    counts = [(3, 1, 2), (0, 2, 0), (0, 0, 3), (0, 0, 0)]
    tp, fp, fn = (torch.tensor(c) for c in zip(*counts, strict=True))
    expected = [_sed_eval_class_f1(*c) for c in counts]
    assert math.isnan(expected[1]) and expected[2] == 0.0 and math.isnan(expected[3])
    f1 = f1_scores(tp, fp, fn)
    for ours, theirs in zip(f1.tolist(), expected, strict=True):
        assert (math.isnan(ours) and math.isnan(theirs)) or ours == pytest.approx(theirs)
    # sed_eval's class-wise average is numpy.nanmean over the classes
    defined = [v for v in expected if not math.isnan(v)]
    assert macro_f1(tp, fp, fn) == pytest.approx(sum(defined) / len(defined)) == (6 / 9) / 2


def test_best_thresholds_maximise_frame_f1_exactly():
    scores = torch.tensor(
        [[0.9, 0.5, 0.3], [0.8, 0.5, 0.2], [0.7, 0.1, 0.1], [0.2, 0.0, 0.0], [0.1, 0.0, 0.4]]
    )
    target = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    thresholds, f1 = best_thresholds(scores, target)
    # class 0: keeping the top 4 frames gives 3 tp, 1 fp: F1 6/7, the best cut
    assert thresholds[0].item() == pytest.approx(0.15) and f1[0].item() == pytest.approx(6 / 7)
    # class 1: the two tied top scores go together (F1 2/3), never split
    assert thresholds[1].item() == pytest.approx(0.3) and f1[1].item() == pytest.approx(2 / 3)
    # class 2 has no positive frame: predict none
    assert thresholds[2].item() == math.inf and f1[2].item() == 0.0
    tp, fp, fn = frame_counts(scores > thresholds.float(), target)
    assert f1_scores(tp, fp, fn)[:2].tolist() == pytest.approx(f1[:2].tolist())
    # every frame positive: every frame kept
    everything, f1_all = best_thresholds(torch.tensor([[0.3], [0.1]]), torch.ones(2, 1).bool())
    assert everything.item() == -math.inf and f1_all.item() == 1.0


def test_best_thresholds_beat_every_other_cut_on_random_scores():
    g = torch.Generator().manual_seed(0)
    scores, target = torch.rand(200, 2, generator=g), torch.rand(200, 2, generator=g) < 0.3
    thresholds, best = best_thresholds(scores, target)
    for k in range(2):
        for t in torch.linspace(-0.01, 1.01, 300):
            tp, fp, fn = frame_counts((scores[:, k] > t)[:, None], target[:, k : k + 1])
            assert f1_scores(tp, fp, fn).nan_to_num(0.0).item() <= best[k].item() + 1e-12


def test_runs_of_active_frames_become_events_of_one_hop_per_frame():
    active = torch.tensor([[0, 1], [1, 1], [1, 0], [0, 0], [1, 0]], dtype=torch.bool)
    timestamps = 0.02 + 0.04 * torch.arange(5)  # 40 ms hop, frames centred at 20, 60, ... ms
    events = frames_to_events(active, timestamps, hop=0.04, duration=0.18)
    expected = [Event(0, 0.04, 0.12), Event(0, 0.16, 0.18), Event(1, 0.0, 0.08)]
    assert [e.label for e in events] == [e.label for e in expected]
    for got, want in zip(events, expected, strict=True):
        assert got.onset == pytest.approx(want.onset) and got.offset == pytest.approx(want.offset)
    assert frames_to_events(torch.zeros(3, 2, dtype=torch.bool), timestamps[:3], 0.04) == []
