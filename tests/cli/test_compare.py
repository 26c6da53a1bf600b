"""The comparison runner: arms x seeds, floors, paired differences, report, resume."""

from __future__ import annotations

import json
import logging

import pytest

from stec.compare import build_plan, mean_ci, summarise, write_summary
from stec.engine.checkpoint import load_checkpoint
from stec.report import write_report
from stec_vision.cli import main
from tests.cli.test_vision_cli import TINY

pytestmark = pytest.mark.usefixtures("isolated")


def test_plan_pairs_every_efference_arm_with_its_baseline():
    plan = build_plan(["byol", "simclr"], ["off", "inverse"], [0, 1, 2], ablate=["crop"])
    names = {a.name: a for a in plan.arms}
    assert names["byol-inverse"].baseline == "byol-off" and names["byol-off"].baseline is None
    assert names["simclr-inverse-only-crop"].overrides[-1] == "efference.components=[crop]"
    assert names["floor-random"].kind == "floor"


def test_mean_ci_uses_student_t():
    mean, std, ci = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == 1.0 and ci == pytest.approx(4.303 / 3**0.5)


def test_vision_compare_writes_csv_json_report_and_resumes(tmp_path, capsys):
    # evaluate.cs=[1.0]: one C, no inner cross-validation (the runner is tested, not the probe)
    args = ["compare", *TINY, "compare.methods=[simclr]", "compare.efference=[off,inverse]",
            "compare.seeds=[0,1]", "compare.ablate=[crop]", "compare.floors=[random,pixels]",
            "compare.out=cmp", "evaluate.cs=[1.0]"]  # fmt: skip
    assert main(args) == 0
    out = tmp_path / "cmp"
    summary = json.loads((out / "comparison.json").read_text())
    arms = summary["arms"]
    assert set(arms) == {
        "simclr-off",
        "simclr-inverse",
        "simclr-inverse-only-crop",
        "floor-random",
        "floor-pixels",
    }
    diff = arms["simclr-inverse"]["paired_diff"]
    assert diff["vs"] == "simclr-off" and diff["n"] == 2
    assert "beats_floors" in arms["simclr-inverse"]
    assert (out / "comparison.csv").read_text().startswith("arm,kind,mean")
    report = (out / "report.md").read_text()
    assert "| simclr-inverse |" in report and "curves.png" in report
    # the inverse model's own training accuracy, next to the majority rate, for its arms only
    section = report.split("## The inverse model in training")[1].split("##")[0]
    header = next(line for line in section.splitlines() if line.startswith("| arm |"))
    columns = [c.strip() for c in header.split("|")[2:-1]]
    assert "crop" in columns and "brightness" in columns and "| simclr-off |" not in section
    row = next(line for line in section.splitlines() if line.startswith("| simclr-inverse |"))
    first = row.split("|")[2 + columns.index("crop")].strip()  # e.g. "0.41 (0.30)"
    accuracy, rate = float(first.split()[0]), float(first.split()[1].strip("()"))
    assert 0 <= accuracy <= 1 and 0 < rate <= 1
    for png in ("curves.png", "distance_ratio.png", "embeddings_pca.png", "action_accuracy.png"):
        assert (out / png).stat().st_size > 1000, png
    capsys.readouterr()
    assert main(args) == 0  # everything is done: every arm is skipped
    assert capsys.readouterr().out.count("[skip]") == 10


def _write_runs(out, runs: dict[str, list[dict]]) -> None:
    for arm, per_seed in runs.items():
        for seed, results in enumerate(per_seed):
            path = out / arm / f"seed{seed}" / "results.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(results))


def _run(acc: float, pitch: float | None = None, action: dict | None = None) -> dict:
    results = {"metric": "accuracy", "accuracy_mean": acc, "class_distance_ratio": 0.5}
    if pitch is not None:
        results["tasks"] = {
            "class": {"metric": "accuracy", "accuracy_mean": acc, "accuracy_std": 0.0,
                      "per_fold": {"1": acc}, "n_clips": 10},
            "pitch": {"metric": "accuracy", "accuracy_mean": pitch, "accuracy_std": 0.0,
                      "per_fold": {"1": pitch}, "n_clips": 8},
        }  # fmt: skip
    if action is not None:
        results["action_probe"] = action
    return results


def _probe(gain: float, crop: float) -> dict:
    return {"action_acc/gain": gain, "majority_acc/gain": 0.25,
            "action_acc/crop": crop, "majority_acc/crop": 0.5}  # fmt: skip


def test_summary_has_every_task_and_the_action_probe(tmp_path):
    plan = build_plan(["simclr"], ["off", "inverse"], [0, 1, 2], floors=["random"])
    _write_runs(tmp_path, {
        "simclr-off": [_run(0.70, 0.50), _run(0.72, 0.52), _run(0.74, 0.54)],
        "simclr-inverse": [_run(0.71, 0.60, _probe(0.7, 0.9)), _run(0.73, 0.61, _probe(0.8, 0.8)),
                           _run(0.75, 0.65, _probe(0.75, 1.0))],
        "floor-random": [_run(0.60, 0.55), _run(0.60, 0.55), _run(0.60)],  # an older run: no tasks
    })  # fmt: skip
    summary = summarise(plan, tmp_path, "accuracy_mean")
    # the primary metric is summarised as before
    assert summary["arms"]["simclr-inverse"]["mean"] == pytest.approx(0.73)
    assert summary["arms"]["simclr-inverse"]["paired_diff"]["mean"] == pytest.approx(0.01)
    assert summary["arms"]["simclr-inverse"]["class_distance_ratio"] == pytest.approx(0.5)
    # every task, every arm: mean, std, CI, per seed, paired difference, floors
    assert list(summary["tasks"]) == ["class", "pitch"]
    pitch = summary["tasks"]["pitch"]
    assert pitch["metric"] == "accuracy" and pitch["best_floor"] == pytest.approx(0.55)
    inverse = pitch["arms"]["simclr-inverse"]
    assert inverse["per_seed"] == {"0": 0.60, "1": 0.61, "2": 0.65}
    mean, std, ci = mean_ci([0.60, 0.61, 0.65])
    assert (inverse["mean"], inverse["std"], inverse["ci95"]) == pytest.approx((mean, std, ci))
    diff = inverse["paired_diff"]
    assert diff["vs"] == "simclr-off" and diff["n"] == 3
    assert (diff["mean"], diff["ci95"]) == pytest.approx((0.10, 4.303 * 0.01 / 3**0.5))
    assert inverse["beats_floors"] is True and pitch["arms"]["simclr-off"]["beats_floors"] is False
    assert pitch["arms"]["floor-random"]["n_seeds"] == 2
    assert "paired_diff" not in pitch["arms"]["simclr-off"]
    # the action probe: per arm and component, accuracy over seeds and the majority rate
    assert list(summary["action_probe"]) == ["simclr-inverse"]
    gain = summary["action_probe"]["simclr-inverse"]["gain"]
    assert (gain["mean"], gain["std"], gain["majority"]) == pytest.approx((0.75, 0.05, 0.25))
    assert gain["per_seed"] == {"0": 0.7, "1": 0.8, "2": 0.75}

    write_summary(summary, tmp_path)
    rows = (tmp_path / "comparison_tasks.csv").read_text().splitlines()
    assert rows[0].startswith("task,metric,arm,kind,mean")
    assert "pitch,accuracy,simclr-inverse,pretrain,0.6200," in "\n".join(rows)
    report = write_report(summary, tmp_path, "title", "cmd").read_text()
    assert "## Task `pitch` (accuracy)" in report and "## Task `class` (accuracy)" in report
    pitch_table = report.split("## Task `pitch` (accuracy)")[1]
    assert (
        "| simclr-inverse | 0.6200 ± 0.0265 | ± 0.0657 | +0.1000 ± 0.0248 vs simclr-off |"
        in pitch_table
    )
    assert "**simclr-off does not beat the best floor** (0.5200 vs 0.5500)" in pitch_table
    assert "| arm | gain | crop |" in report
    gain_cell, crop_cell = "0.7500 ± 0.0500 (majority 0.2500)", "0.9000 ± 0.1000 (majority 0.5000)"
    assert f"| simclr-inverse | {gain_cell} | {crop_cell} |" in report
    for png in ("tasks.png", "action_probe.png"):
        assert f"({png})" in report and (tmp_path / png).stat().st_size > 1000, png


def test_the_action_probe_summary_keeps_each_target_of_a_map(tmp_path):
    plan = build_plan(["simclr"], ["inverse"], [0, 1], floors=[])
    probes = [
        {**_probe(0.5, 0.6), "target_acc/crop.shift_x": x, "target_majority/crop.shift_x": 0.3}
        for x in (0.45, 0.55)
    ]
    _write_runs(tmp_path, {"simclr-inverse": [_run(0.7, action=p) for p in probes]})
    summary = summarise(plan, tmp_path, "accuracy_mean")["action_probe"]["simclr-inverse"]
    shift = summary["crop.shift_x"]
    assert (shift["mean"], shift["majority"]) == pytest.approx((0.5, 0.3))
    assert summary["crop"]["majority"] == pytest.approx(0.5)


def test_the_report_says_whether_each_forward_model_uses_the_action(tmp_path):
    from stec.engine.logging import MetricLogger

    plan = build_plan(["simclr"], ["inverse", "both"], [0, 1], floors=[])
    _write_runs(
        tmp_path, {arm: [_run(0.7), _run(0.8)] for arm in ("simclr-inverse", "simclr-both")}
    )
    # the last fifth of each run's 10 logged steps counts: 0.3 and 0.1 nats
    for seed, late in enumerate((0.3, 0.1)):
        logger = MetricLogger(tmp_path / "simclr-both" / f"seed{seed}", tensorboard=False)
        for step in range(1, 11):
            logger.log({"step": step, "loss": 1.0, "forward_told_gain": 0.0 if step < 9 else late})
        logger.close()
    summary = summarise(plan, tmp_path, "accuracy_mean")
    report = write_report(summary, tmp_path, "title", "cmd").read_text()
    section = report.split("## The forward model in training")[1].split("##")[0]
    assert "| simclr-both | +0.20 | +0.30, +0.10 |" in section
    assert "simclr-inverse" not in section  # no forward model, no row
    # a comparison without a forward model has no such section
    assert "forward model" not in write_report(
        summarise(build_plan(["simclr"], ["inverse"], [0, 1], floors=[]), tmp_path, "accuracy_mean"),
        tmp_path, "title", "cmd",
    ).read_text()  # fmt: skip


def test_a_report_of_arms_without_an_action_loss_plots_without_warnings(tmp_path):
    """An arm with no inverse model has nothing in the action panels: no empty legend."""
    import warnings

    from stec.engine.logging import MetricLogger

    plan = build_plan(["simclr"], ["off"], [0], floors=[])
    _write_runs(tmp_path, {"simclr-off": [_run(0.7)]})
    logger = MetricLogger(tmp_path / "simclr-off" / "seed0", tensorboard=False)
    for step in range(1, 4):
        logger.log({"step": step, "loss": 1.0, "ssl_loss": 1.0})
    logger.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_report(summarise(plan, tmp_path, "accuracy_mean"), tmp_path, "title", "cmd")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_old_results_still_summarise_without_tasks(tmp_path):
    plan = build_plan(["simclr"], ["off"], [0, 1], floors=[])
    _write_runs(tmp_path, {"simclr-off": [_run(0.7), _run(0.8)]})
    summary = summarise(plan, tmp_path, "accuracy_mean")
    assert set(summary) == {"metric", "seeds", "arms", "best_floor"}
    assert summary["arms"]["simclr-off"]["mean"] == pytest.approx(0.75)
    write_summary(summary, tmp_path)
    assert not (tmp_path / "comparison_tasks.csv").exists()
    report = write_report(summary, tmp_path, "title", "cmd").read_text()
    assert "## Task" not in report and "Action probe" not in report


def test_compare_resumes_an_interrupted_arm_and_never_retrains_a_trained_one(
    tmp_path, caplog, capsys
):
    args = ["compare", *TINY, "compare.methods=[simclr]", "compare.efference=[off]",
            "compare.seeds=[0]", "compare.floors=[]", "compare.out=cmp", "evaluate.cs=[1.0]"]  # fmt: skip
    run = tmp_path / "cmp/simclr-off/seed0"
    # an arm stopped after 2 of its 3 steps (as a killed comparison leaves it)
    pretrain = ["pretrain", *TINY, "method=simclr", "efference=off", "seed=0", f"run_dir={run}"]
    assert main([*pretrain, "trainer.max_steps=2"]) == 0
    caplog.set_level(logging.INFO)
    capsys.readouterr()
    # each arm resumes from its own checkpoint: a path given to all arms is ignored
    assert main([*args, "trainer.resume=elsewhere.pt"]) == 0
    assert "ignoring ['trainer.resume=elsewhere.pt']" in capsys.readouterr().out
    assert "resumed from cmp/simclr-off/seed0/checkpoints/last.pt at step 2" in caplog.text
    assert load_checkpoint(run / "checkpoints/last.pt")["step"] == 3
    # a trained arm whose evaluation is asked again (its results.json removed, a dense
    # evaluation added) is evaluated, not trained again
    (run / "results.json").unlink()
    caplog.clear()
    capsys.readouterr()
    assert main([*args, "evaluate.with_segmentation=true"]) == 0
    assert "at step 3" in caplog.text and "starting fresh" not in caplog.text
    assert "done: step 3, already trained" in capsys.readouterr().out
    results = json.loads((run / "results.json").read_text())
    assert "segmentation" in results["tasks"]
    # asked again with another evaluation setting, it replaces its own outputs, the dense
    # part of the evaluation too (an evaluation never replaces results a user made)
    dense = (run / "segmentation/results.json").stat().st_mtime_ns
    assert main([*args, "evaluate.with_segmentation=true", "evaluate.knn_k=3"]) == 0
    assert json.loads((run / "settings.json").read_text())["evaluate"]["knn_k"] == 3
    assert "segmentation" in json.loads((run / "results.json").read_text())["tasks"]
    assert (run / "segmentation/results.json").stat().st_mtime_ns != dense
    # a changed training setting is not mixed into the finished arm: it is refused
    (run / "results.json").unlink()
    capsys.readouterr()
    assert main([*args, "trainer.lr=0.01"]) == 2
    error = capsys.readouterr().err
    assert "trainer.lr: 0.001 -> 0.01" in error and "Use a new compare.out" in error
    assert load_checkpoint(run / "checkpoints/last.pt")["step"] == 3


def test_compare_reuses_results_only_when_their_settings_are_the_same(tmp_path, capsys):
    args = ["compare", *TINY, "compare.methods=[simclr]", "compare.efference=[off]",
            "compare.seeds=[0]", "compare.floors=[random]", "compare.out=cmp",
            "evaluate.cs=[1.0]", "evaluate.knn_k=5"]  # fmt: skip
    arm, floor = tmp_path / "cmp/simclr-off/seed0", tmp_path / "cmp/floor-random/seed0"
    assert main(args) == 0
    for run in (arm, floor):
        settings = json.loads((run / "settings.json").read_text())
        assert settings["evaluate"]["knn_k"] == 5 and settings["seed"] == 0
        assert "run_dir" not in settings and "num_workers" not in settings["trainer"]
    made = {run: (run / "results.json").stat().st_mtime_ns for run in (arm, floor)}
    # the same settings (another loader or device counts as the same): reused
    capsys.readouterr()
    assert main([*args, "trainer.num_workers=1"]) == 0
    out = capsys.readouterr().out
    assert out.count("[skip]") == 2 and "[train]" not in out
    assert all((run / "results.json").stat().st_mtime_ns == t for run, t in made.items())
    # a setting of the inverse model: the invariant arm has none and the floor is not
    # trained, so a sweep of it in a folder of its own reuses both, copied over (results
    # written by an older version, whose settings.json still names it, included)
    import shutil

    sweep = tmp_path / "sweep"
    for run in (arm, floor):
        shutil.copytree(run, sweep / run.parent.name / run.name)
        old = json.loads((sweep / run.parent.name / run.name / "settings.json").read_text())
        old["efference"]["inverse_hidden"] = 7
        (sweep / run.parent.name / run.name / "settings.json").write_text(json.dumps(old))
    capsys.readouterr()
    swept = ["efference.lambda_manip=0.3", "efference.inverse_hidden=64", "compare.out=sweep"]
    assert main([*args, *swept]) == 0
    out = capsys.readouterr().out
    assert out.count("[skip]") == 2 and "[train]" not in out and "[again]" not in out
    assert (sweep / "comparison.json").is_file()
    # another shared evaluation setting: every run is evaluated again, the floor too, and
    # the finished arm is not trained again
    assert main([*args[:-1], "evaluate.knn_k=3"]) == 0
    out = capsys.readouterr().out
    assert out.count("[again]") == 2 and "evaluate.knn_k: 5 -> 3" in out
    assert "done: step 3, already trained" in out
    for run in (arm, floor):
        assert json.loads((run / "settings.json").read_text())["evaluate"]["knn_k"] == 3
        assert (run / "results.json").stat().st_mtime_ns != made[run]
    # another training setting: refused before any run, the floor's results kept
    floor_results = (floor / "results.json").read_text()
    assert main([*args[:-1], "evaluate.knn_k=3", "method.temperature=0.3"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "simclr-off seed 0 (method.temperature: " in error
    assert "Use a new compare.out" in error
    assert (floor / "results.json").read_text() == floor_results


def test_a_rerun_of_a_config_that_leaves_trainer_keys_out_reuses_its_runs(tmp_path):
    # the audio config has no trainer.trust_coefficient: the Trainer records its default,
    # and a rerun must compare equal to that record, not "removed"
    from dataclasses import asdict

    from stec.compare import run_plan
    from stec.engine.trainer import TrainerConfig

    plan = build_plan(["simclr"], ["off"], [0], floors=["random"])
    calls = []

    def resolve(overrides):
        values = dict(o.split("=", 1) for o in overrides)
        return {"seed": int(values["seed"]), "run_dir": values["run_dir"],
                "method": {"name": "simclr"}, "trainer": {"lr": 0.001, "epochs": 1}}  # fmt: skip

    def train(overrides):  # what the Trainer leaves in run_dir
        config = resolve(overrides)
        config["trainer"] = asdict(TrainerConfig(**config["trainer"]))
        run_dir = tmp_path / config["run_dir"]
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoints/last.pt").write_bytes(b"")
        (run_dir / "config.json").write_text(json.dumps(config))
        calls.append("train")

    def evaluate(overrides):
        out = next(o.split("=", 1)[1] for o in overrides if o.startswith("out="))
        (tmp_path / out).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / out).write_text(json.dumps({"accuracy_mean": 0.5}))
        calls.append("evaluate")

    def run():
        run_plan(plan, "cmp", [], train, evaluate, "accuracy_mean", log=lambda _: None,
                 resolve=resolve)  # fmt: skip

    run()  # in tmp_path (the isolated fixture)
    assert calls == ["train", "evaluate", "evaluate"]
    run()  # the same settings: nothing runs again, nothing is refused
    assert calls == ["train", "evaluate", "evaluate"]


def test_a_compare_stopped_by_a_signal_says_how_to_go_on_and_evaluates_nothing(
    tmp_path, capsys, monkeypatch
):
    from stec.engine import stop

    args = ["compare", *TINY, "compare.methods=[simclr]", "compare.efference=[off]",
            "compare.seeds=[0]", "compare.floors=[]", "compare.out=cmp", "evaluate.cs=[1.0]"]  # fmt: skip
    run = tmp_path / "cmp/simclr-off/seed0"
    asked = stop.StopRequests.__enter__

    def signalled(self):  # as if Ctrl-C reached the run at its first step
        entered = asked(self)
        self.received = 2
        return entered

    monkeypatch.setattr(stop.StopRequests, "__enter__", signalled)
    assert main(args) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "stopped by a signal at step 0" in lines[0]
    assert "run the same command again to continue" in lines[0]
    assert (run / "checkpoints/last.pt").is_file() and not (run / "results.json").exists()
    monkeypatch.setattr(stop.StopRequests, "__enter__", asked)
    assert main(args) == 0  # the same command continues the arm and evaluates it
    assert load_checkpoint(run / "checkpoints/last.pt")["step"] == 3
    assert (run / "results.json").is_file()
