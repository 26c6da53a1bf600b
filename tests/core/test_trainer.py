"""Training engine: exact resume after SIGKILL, signals, non-finite losses, safe loading."""

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stec import build_method
from stec.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stec.engine.export import load_export
from stec.engine.logging import read_metrics
from stec.engine.optim import LARS, build_optimizer, param_groups, warmup_cosine
from stec.engine.trainer import NonFiniteLossError, Trainer, TrainerConfig
from tests.core.toy import ToyBackbone, ToySignals, toy_augmenter

ROOT = Path(__file__).resolve().parents[2]


def run_toy(run_dir, *args, check=True):
    return subprocess.run(
        [sys.executable, "-m", "tests.core.run_toy", str(run_dir), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_then_resume_ends_with_identical_weights(tmp_path, workers):
    full = run_toy(tmp_path / "full", "--workers", str(workers))
    assert full.returncode == 0, full.stderr
    killed = run_toy(tmp_path / "cut", "--kill-at", "8", "--workers", str(workers))
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "cut/checkpoints/last.pt")["step"] == 5
    resumed = run_toy(tmp_path / "cut", "--resume", "--workers", str(workers))
    assert resumed.returncode == 0, resumed.stderr
    a = load_checkpoint(tmp_path / "full/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "cut/checkpoints/last.pt")
    assert a["step"] == b["step"] == 15
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["world_size"] == b["world_size"] == 1
    for key, value in a["ranks"][0]["augmenter"].items():
        assert torch.equal(value, b["ranks"][0]["augmenter"][key]), key
    assert torch.equal(a["ranks"][0]["rng"]["torch"], b["ranks"][0]["rng"]["torch"])
    # the metrics curve has no duplicated steps from the killed run
    steps = [row["step"] for row in read_metrics(tmp_path / "cut")]
    assert steps == sorted(set(steps)) and steps[-1] == 15
    weights = load_file(str(tmp_path / "cut/export/encoder.safetensors"))
    assert torch.equal(weights["net.1.weight"], b["model"]["backbone.net.1.weight"])


def test_sigint_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.core.run_toy", str(tmp_path / "run"), "--wait-at", "7"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    line = ""
    while "WAITING" not in line and time.time() < deadline:
        line = proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "STOPPED_EARLY 7" in out
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["step"] == 7
    assert not (tmp_path / "run/export").exists()


def make_trainer(run_dir, lr=1e-3, run_config=None, **overrides):
    torch.manual_seed(0)
    aug = toy_augmenter()
    method = build_method(
        "simclr",
        ToyBackbone(),
        32,
        action_space=aug.action_space(),
        proj_hidden=32,
        proj_dim=16,
        inverse_hidden=32,
    )
    cfg = TrainerConfig(
        epochs=2, batch_size=16, lr=lr, checkpoint_every=3, progress=False, **overrides
    )
    return Trainer(
        method, ToySignals(n=64), cfg, run_dir, augmenter=aug, num_classes=4, run_config=run_config
    )


@pytest.mark.parametrize("bad_step", [5, 6])
def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path, bad_step):
    # checked at the log and checkpoint steps: the bad step 5 is found at the checkpoint
    # step 6, before that checkpoint is written; so is a bad checkpoint step itself
    trainer = make_trainer(tmp_path)
    original = trainer.train_step

    def poisoned(batch, plan=None):
        if trainer.step == bad_step - 1:
            with torch.no_grad():
                for p in trainer.method.backbone.parameters():
                    p.fill_(float("nan"))
        return original(batch, plan)

    trainer.train_step = poisoned
    with pytest.raises(
        NonFiniteLossError,
        match=rf"loss became nan at step {bad_step} \(found at step 6\).*"
        r"last good checkpoint is .*last.pt \(step 3\)",
    ):
        trainer.fit()
    state = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_loss_before_any_checkpoint_says_so(tmp_path):
    trainer = make_trainer(tmp_path, log_every=2)
    trainer.method.lambda_switch = float("inf")
    with pytest.raises(NonFiniteLossError, match=r"step 1 \(found at step 2\).*none \(no che"):
        trainer.fit()
    assert not (tmp_path / "checkpoints/last.pt").exists()


def test_resume_needs_the_same_number_of_processes(tmp_path):
    make_trainer(tmp_path / "a", max_steps=3).fit()
    state = load_checkpoint(tmp_path / "a/checkpoints/last.pt")
    assert state["world_size"] == 1 and len(state["ranks"]) == 1
    two = {**state, "world_size": 2, "ranks": state["ranks"] * 2}
    save_checkpoint(tmp_path / "two.pt", two)
    with pytest.raises(
        CheckpointError,
        match=r"two.pt was written by 2 process\(es\) and this run has 1.*"
        r"Resume with 2 process\(es\) \(torchrun --nproc_per_node=2",
    ):
        make_trainer(tmp_path / "b", resume=str(tmp_path / "two.pt")).fit()


def test_a_version_1_checkpoint_still_resumes_one_process(tmp_path):
    make_trainer(tmp_path / "a", max_steps=3).fit()
    state = load_checkpoint(tmp_path / "a/checkpoints/last.pt")
    mine = state.pop("ranks")[0]
    del state["world_size"]
    old = {**state, "rng": mine["rng"], "augmenter": mine["augmenter"]}
    save_checkpoint(tmp_path / "v1.pt", old)
    from_v1 = make_trainer(tmp_path / "b", max_steps=5, resume=str(tmp_path / "v1.pt"))
    from_v1.fit()
    from_v2 = make_trainer(
        tmp_path / "c", max_steps=5, resume=str(tmp_path / "a/checkpoints/last.pt")
    )
    from_v2.fit()
    assert from_v1.step == from_v2.step == 5
    for key, value in from_v2.method.state_dict().items():
        assert torch.equal(value, from_v1.method.state_dict()[key]), key


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_unsafe_checkpoint_is_refused_without_running_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "stec-checkpoint", "payload": Boom()}, path)
    os.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not (tmp_path / "pwned").exists()


def test_missing_and_incompatible_checkpoints_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt does not exist"):
        make_trainer(tmp_path, resume=str(tmp_path / "nope.pt")).fit()
    make_trainer(tmp_path / "a").fit()
    other = make_trainer(tmp_path / "b", resume=str(tmp_path / "a/checkpoints/last.pt"))
    other.method.projector[-1] = torch.nn.Linear(32, 8)  # a different projection size
    with pytest.raises(
        CheckpointError, match=r"last.pt does not fit the model.*projector.3.weight"
    ):
        other.fit()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt could not be read"):
        load_checkpoint(tmp_path / "junk.pt")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no half-written file left


def test_run_directory_holds_config_metrics_checkpoint_and_export(tmp_path):
    trainer = make_trainer(tmp_path, log_every=1)
    trainer.export_meta = {"encoder": {"name": "toy", "kwargs": {}}, "feature_dim": 32}
    last = trainer.fit()
    assert {"config.json", "metrics.csv", "checkpoints", "export"} <= {
        p.name for p in tmp_path.iterdir()
    }
    rows = read_metrics(tmp_path)
    assert len(rows) == 8 and "online_probe_acc" in rows[0] and "action_acc/shift" in rows[0]
    state, meta = load_export(tmp_path)
    assert meta["feature_dim"] == 32 and set(state) == set(trainer.method.backbone.state_dict())
    assert last["step"] == 8


def test_the_efference_copys_warm_up_follows_the_step(tmp_path):
    # the trainer tells the method how far the run is before each step: the action loss
    # weighs step / (lambda_manip_warmup * total steps) of lambda_manip until it is whole
    torch.manual_seed(0)
    aug = toy_augmenter()
    method = build_method(
        "simclr", ToyBackbone(), 32, action_space=aug.action_space(), lambda_manip=0.5,
        lambda_manip_warmup=0.5, proj_hidden=32, proj_dim=16, inverse_hidden=32,
    )  # fmt: skip
    cfg = TrainerConfig(epochs=2, batch_size=16, lr=1e-3, log_every=1, progress=False)
    Trainer(method, ToySignals(n=64), cfg, tmp_path, augmenter=aug, num_classes=4).fit()
    rows = read_metrics(tmp_path)
    assert [row["step"] for row in rows] == list(range(1, 9))
    for row in rows:
        weight = 0.5 * min(1.0, (row["step"] - 1) / 4)
        expected = row["ssl_loss"] + weight * row["action_loss"]
        assert row["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6), row


def test_lars_excludes_bias_and_norm_from_decay_and_adaptation():
    model = ToyBackbone()
    groups = param_groups(model, 1e-4)
    excluded = {id(p) for p in groups[1]["params"]}
    assert id(model.net[1].bias) in excluded and id(model.net[2].weight) in excluded
    assert id(model.net[1].weight) not in excluded
    opt = build_optimizer(model, "lars", lr=0.1, weight_decay=1e-4)
    assert isinstance(opt, LARS)
    with pytest.raises(
        ValueError, match="optimizer.name='adam' is not valid; allowed values: lars, sgd, adamw"
    ):
        build_optimizer(model, "adam", 0.1, 0.0)


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10, min_ratio=0.1) == pytest.approx(0.1)


def test_unknown_trainer_keys_are_named():
    with pytest.raises(ValueError, match=r"unknown trainer key\(s\) \['epochz'\]"):
        TrainerConfig.from_dict({"epochz": 3})


@pytest.mark.slow
def test_compiled_step_trains_and_keeps_clean_state_dict_keys(tmp_path):
    trainer = make_trainer(tmp_path, compile=True, max_steps=2)
    trainer.fit()
    state = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert state["step"] == 2
    assert not any("_orig_mod" in key for key in state["model"])
