"""The frame probe of sound event detection: ridge algebra, planted events, shuffled
labels, the temporal head, splits and devices."""

from __future__ import annotations

import math

import pytest
import torch

from stec.errors import ConfigError
from stec.evaluation.sed import Event
from stec_audio.evaluation.sed import FrameData, SedOptions, cross_validate_sed, with_context
from stec_audio.evaluation.sed_probe import FrameStats, fit_balanced_ridge, fit_frame_probe

HOP, T = 0.04, 50  # 2 s clips of 40 ms frames


def timestamps() -> torch.Tensor:
    return 0.02 + HOP * torch.arange(T, dtype=torch.float64)


def planted(
    n_clips: int = 40, n_classes: int = 2, lag: int = 0, noise: float = 0.3, seed: int = 0
) -> FrameData:
    """Clips with 0-2 events each (3-8 frames, away from the edges); feature ``c`` of frame
    ``t`` is 3 when class ``c`` is active at frame ``t - lag``, plus noise."""
    g = torch.Generator().manual_seed(seed)
    ts = timestamps()
    features, targets, references = [], [], []
    for _ in range(n_clips):
        y = torch.zeros(T, n_classes)
        events = []
        for _ in range(int(torch.randint(0, 3, (1,), generator=g))):
            c = int(torch.randint(0, n_classes, (1,), generator=g))
            a = int(torch.randint(5, T - 15, (1,), generator=g))
            b = a + int(torch.randint(3, 9, (1,), generator=g))
            if y[a - 1 : b + 1, c].any():
                continue  # keep events of a class apart
            onset, offset = float(ts[a] - HOP / 2), float(ts[b - 1] + HOP / 2)
            events.append(Event(c, onset, offset))
            y[(ts >= onset) & (ts < offset), c] = 1.0
        signal = torch.roll(y, lag, dims=0)
        x = torch.cat([3 * signal, torch.zeros(T, 2)], 1) + noise * torch.randn(
            T, n_classes + 2, generator=g
        )
        features.append(x)
        targets.append(y)
        references.append(events)
    return FrameData(
        features=features,
        targets=targets,
        timestamps_s=[ts] * n_clips,
        references=references,
        durations=[T * HOP] * n_clips,
        folds=torch.arange(n_clips) % 5 + 1,
        hop_s=HOP,
        classes=[f"class{c}" for c in range(n_classes)],
    )


def test_ridge_matches_a_direct_weighted_least_squares_solution():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 3, 0.5, 2])
    y = (x[:, :2] + torch.randn(300, 2, generator=g, dtype=torch.float64) > 1.5).double()
    y[:, 1] = 0.0  # a class without positives: a constant score
    half = FrameStats.of(x[:120], y[:120]) + FrameStats.of(x[120:], y[120:])
    whole = FrameStats.of(x, y)
    for name in whole.__dataclass_fields__:
        assert torch.allclose(getattr(half, name), getattr(whole, name))
    std = x.std(0, unbiased=False)
    fit = fit_balanced_ridge(whole, std, [0.01, 1.0])
    p = y[:, 0].mean()
    w = torch.where(y[:, 0] > 0, 0.5 / p, 0.5 / (1 - p))  # class-balanced weights
    for i, lam in enumerate([0.01, 1.0]):
        # min sum w (y - b - beta . x/std)^2 + lam * sum(w) * |beta|^2 as one least squares
        design = torch.cat([torch.ones(300, 1, dtype=torch.float64), x / std], 1)
        rows = torch.cat([design * w.sqrt()[:, None], torch.zeros(4, 5, dtype=torch.float64)])
        rows[300:, 1:] = torch.eye(4) * (lam * w.sum()).sqrt()
        target = torch.cat([y[:, 0] * w.sqrt(), torch.zeros(4, dtype=torch.float64)])
        solution = torch.linalg.lstsq(rows, target[:, None]).solution[:, 0]
        assert torch.allclose(fit.weight[i, 0], solution[1:] / std, atol=1e-8)
        assert torch.allclose(fit.bias[i, 0], solution[0], atol=1e-8)
    assert torch.equal(fit.weight[:, 1], torch.zeros(2, 4, dtype=torch.float64))
    assert fit.bias[:, 1].tolist() == pytest.approx([0.0, 0.0], abs=1e-9)


def test_planted_events_are_found_perfectly():
    results = cross_validate_sed(planted(), SedOptions())
    assert results["frame_f1_mean"] > 0.99 and results["event_f1_mean"] > 0.99
    assert results["n_folds"] == 5 and set(results["per_fold"]) == {"1", "2", "3", "4", "5"}
    assert results["head"]["kind"] == "linear" and results["hop_ms"] == pytest.approx(40.0)
    assert all(v["frame_f1"] > 0.99 for v in results["per_class"].values())


def test_shuffled_labels_stay_near_chance():
    data = planted(n_clips=60)
    order = torch.randperm(60, generator=torch.Generator().manual_seed(3))
    data.targets = [data.targets[i] for i in order]
    data.references = [data.references[i] for i in order]
    results = cross_validate_sed(data, SedOptions())
    # chance: calling every frame positive gives F1 = 2p / (1 + p)
    p = torch.cat(data.targets).mean(0)
    chance = float((2 * p / (1 + p)).mean())
    assert chance < 0.2 and results["frame_f1_mean"] < chance + 0.08
    assert results["event_f1_mean"] < 0.15


def test_the_temporal_head_reads_neighbouring_frames():
    data = planted(lag=2)  # each frame's feature says what happened two frames earlier
    linear = cross_validate_sed(data, SedOptions())
    temporal = cross_validate_sed(data, SedOptions(context_frames=2))
    assert linear["frame_f1_mean"] < 0.7 and temporal["frame_f1_mean"] > 0.97
    assert temporal["head"] == {
        "kind": "temporal",
        "context_frames": 2,
        "window_ms": pytest.approx(200.0),
        "what": "a linear layer over 5 consecutive frames (a 1-D convolution)",
    }
    frames = torch.tensor([[1.0], [2.0], [3.0]])
    assert with_context(frames, 1).tolist() == [[1, 1, 2], [1, 2, 3], [2, 3, 3]]


def test_a_train_eval_split_and_its_errors():
    results = cross_validate_sed(planted(), SedOptions(eval_folds=(5,)))
    assert list(results["per_fold"]) == ["5"] and results["n_folds"] == 1
    assert results["frame_f1_mean"] > 0.99 and results["frame_f1_std"] == 0.0
    assert results["split"] == "train on the other folds, evaluate on folds [5]"
    with pytest.raises(ConfigError, match=r"eval_folds=\[9\] selects no clip; the data has folds"):
        cross_validate_sed(planted(), SedOptions(eval_folds=(9,)))
    with pytest.raises(ConfigError, match="leaves no training clip"):
        cross_validate_sed(planted(), SedOptions(eval_folds=(1, 2, 3, 4, 5)))


def test_one_training_fold_uses_inner_folds_of_clips():
    data = planted()
    data.folds = torch.where(data.folds == 5, 2, 1)  # train on fold 1 only
    results = cross_validate_sed(data, SedOptions(eval_folds=(2,)), inner_folds=3)
    assert results["frame_f1_mean"] > 0.99


@pytest.mark.parametrize(
    "section, message",
    [
        ({"context_frames": -1}, "evaluate.sed.context_frames must be an integer >= 0"),
        ({"onset_collar": "x"}, "evaluate.sed.onset_collar must be a number >= 0"),
        ({"eval_folds": 5}, "evaluate.sed.eval_folds must be a list of folds"),
        ({"lambdas": [0.0, 1.0]}, "evaluate.sed.lambdas must be a list of positive numbers"),
        ({"colar": 0.2}, "evaluate.sed has no key(s) ['colar']"),
    ],
)
def test_bad_options_name_their_key(section, message):
    with pytest.raises(ConfigError) as err:
        SedOptions.from_config(section)
    assert message in str(err.value)


def test_the_probe_computes_on_the_requested_device(monkeypatch):
    # the algebra runs wherever the statistics are (meta raises on any CPU tensor mixed in)
    x, y = torch.randn(30, 3), (torch.rand(30, 2) > 0.5).float()
    cpu = FrameStats.of(x, y)
    stats = FrameStats(*(getattr(cpu, k).to("meta") for k in cpu.__dataclass_fields__))
    fit = fit_balanced_ridge(stats, torch.ones(3, device="meta"), [0.1, 1.0])
    assert fit.weight.device.type == fit.bias.device.type == "meta"
    assert fit.weight.shape == (2, 2, 3) and fit.bias.shape == (2, 2)
    # and the cross-validation hands the frames to it on the evaluation device
    seen = []
    of = FrameStats.of.__func__

    def recording(cls, frames, targets, device=None):
        seen.append(torch.empty(0, device=device).device.type)
        return of(cls, frames, targets)

    monkeypatch.setattr(FrameStats, "of", classmethod(recording))
    cross_validate_sed(planted(n_clips=10), SedOptions(), device="meta")
    assert seen and set(seen) == {"meta"}


def test_folds_without_a_class_or_without_any_event():
    data = planted(n_clips=10, n_classes=3)  # fold 4 holds no event; the others lack a class
    assert not any(data.references[c] for c in range(10) if data.folds[c] == 4)
    results = cross_validate_sed(data, SedOptions())
    # a fold scores the classes it holds; one without any reference has no F1 (sed_eval's
    # class-wise average of no class) and is left out of the mean over folds
    per_fold = results["per_fold"]
    assert math.isnan(per_fold.pop("4"))
    assert all(not math.isnan(v) for v in per_fold.values())
    assert results["frame_f1_mean"] == pytest.approx(sum(per_fold.values()) / len(per_fold))
    assert "left out" in results["macro_rule"]


@pytest.mark.parametrize("value", [0.7, 1000.3])
def test_a_feature_constant_in_the_training_frames_gets_no_weight(value):
    # centred, not scaled, as scikit-learn's StandardScaler does: a stand-in std (1e-6, or
    # the rounding error of the sums) turned rounding noise into weights of 0.07 to 0.2
    data = planted(n_clips=50)
    g = torch.Generator().manual_seed(4)
    for clip, fold in enumerate(data.folds.tolist()):
        extra = torch.full((T, 1), value)
        if fold == 5:  # the test clips: the feature varies there only
            extra = extra + 5 * torch.randn(T, 1, generator=g)
        data.features[clip] = torch.cat([data.features[clip], extra], 1)
    train = [c for c, fold in enumerate(data.folds.tolist()) if fold != 5]
    groups = [(data.features[c], data.targets[c]) for c in train]
    probe = fit_frame_probe(groups, [1e-3])
    assert probe.weight[:, -1].abs().max() < 1e-6 < probe.weight[:, :2].abs().max()
    results = cross_validate_sed(data, SedOptions(eval_folds=(5,)))
    assert results["frame_f1_mean"] > 0.95 and results["event_f1_mean"] > 0.95
