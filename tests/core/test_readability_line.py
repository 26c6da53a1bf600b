"""The line a pretraining prints on what its inverse model read: from the run's metrics,
the last 20% of the logged steps, and the warning when nothing is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from stec.engine.logging import MetricLogger
from stec.report import forward_model_line, readability_line


def _log(run: Path, rows: list[dict[str, float]]) -> Path:
    run.mkdir()
    logger = MetricLogger(run, tensorboard=False)
    for step, row in enumerate(rows, start=1):
        logger.log({"step": step, "epoch": 0, "lr": 1e-3, "samples_per_s": 1.0, **row})
    logger.close()
    return run


def _rows(n: int, early: dict[str, float], late: dict[str, float]) -> list[dict[str, float]]:
    # the last fifth of n rows holds the late values
    return [dict(early) for _ in range(n - n // 5)] + [dict(late) for _ in range(n // 5)]


def test_targets_of_a_component_are_shown_with_their_majority_rates(tmp_path):
    early = {"action_acc/geometry": 0.2, "action_majority/geometry": 0.3,
             "target_acc/geometry.shift_x": 0.1, "target_majority/geometry.shift_x": 0.3,
             "action_acc/gain": 0.1, "action_majority/gain": 0.3}  # fmt: skip
    late = {"action_acc/geometry": 0.53, "action_majority/geometry": 0.29,
            "target_acc/geometry.shift_x": 0.51, "target_majority/geometry.shift_x": 0.31,
            "action_acc/gain": 0.36, "action_majority/gain": 0.28}  # fmt: skip
    line = readability_line(_log(tmp_path / "run", _rows(10, early, late)))
    # geometry has targets of its own, so the component's joint figure is left out
    assert line == (
        "the inverse model read (last 20% of training; majority rate in brackets): "
        "gain 0.36 (0.28), geometry.shift_x 0.51 (0.31)"
    )


@pytest.mark.parametrize("above", [0.0, 0.019])
def test_nothing_read_above_the_majority_rate_says_the_copy_gives_no_signal(tmp_path, above):
    late = {"action_acc/time_crop": 0.30 + above, "action_majority/time_crop": 0.30,
            "action_acc/mixup": 0.24, "action_majority/mixup": 0.25}  # fmt: skip
    line = readability_line(_log(tmp_path / "run", _rows(5, late, late)))
    assert line.startswith("the inverse model read (last 20% of training; majority rate")
    assert line.endswith(
        "; nothing is read 2 points above its majority rate, so the efference copy gives the "
        "encoder no signal on this data (docs/actions.md: when the inverse model reads nothing)"
    )


def test_one_target_read_is_enough_and_a_run_without_the_inverse_model_prints_nothing(tmp_path):
    late = {"action_acc/time_crop": 0.30, "action_majority/time_crop": 0.30,
            "action_acc/gain": 0.35, "action_majority/gain": 0.29}  # fmt: skip
    assert "no signal" not in readability_line(_log(tmp_path / "a", _rows(5, late, late)))
    assert readability_line(_log(tmp_path / "b", _rows(5, {"loss": 1.0}, {"loss": 0.5}))) == ""
    assert readability_line(tmp_path / "never_logged") == ""


def test_the_forward_models_line_says_how_much_the_action_helps_it(tmp_path):
    early, late = {"forward_told_gain": 0.0}, {"forward_told_gain": 0.31}
    assert forward_model_line(_log(tmp_path / "read", _rows(10, early, late))) == (
        "the forward model, told each pair's own action, predicts the other view 0.31 nats "
        "better than told another pair's (last 20% of training)"
    )
    ignored = forward_model_line(
        _log(tmp_path / "ignored", _rows(5, late, {"forward_told_gain": 0.04}))
    )
    assert ignored.endswith(
        "0.04 nats better than told another pair's (last 20% of training); under 0.05: it "
        "ignores the action, so its efference copy gives the encoder no signal on this data "
        "(docs/actions.md: when the inverse model reads nothing)"
    )
    worse = forward_model_line(
        _log(tmp_path / "worse", _rows(5, late, {"forward_told_gain": -0.09}))
    )
    assert "0.09 nats worse than told another pair's" in worse and "ignores the action" in worse
    # a run without a forward model prints nothing
    assert forward_model_line(_log(tmp_path / "off", _rows(5, {"loss": 1.0}, {"loss": 0.5}))) == ""


def test_a_gated_run_says_how_much_of_each_targets_gradient_reached_the_encoder(tmp_path):
    early = {"target_acc/geometry.shift_x": 0.3, "target_majority/geometry.shift_x": 0.3,
             "action_acc/gain": 0.3, "action_majority/gain": 0.3,
             "target_gate/geometry.shift_x": 0.0, "action_gate/gain": 0.0}  # fmt: skip
    late = {"target_acc/geometry.shift_x": 0.45, "target_majority/geometry.shift_x": 0.3,
            "action_acc/gain": 0.31, "action_majority/gain": 0.3,
            "target_gate/geometry.shift_x": 1.0, "action_gate/gain": 0.2}  # fmt: skip
    line = readability_line(_log(tmp_path / "run", _rows(10, early, late)))
    assert line.endswith(
        "; the read gate let into the encoder this share of each one's gradient: "
        "gain 0.20, geometry.shift_x 1.00"
    )
