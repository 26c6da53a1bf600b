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


def test_resume_with_a_longer_budget_follows_the_new_schedule(tmp_path):
    make_trainer(tmp_path, max_steps=3, warmup_steps=0, log_every=1).fit()
    longer = make_trainer(tmp_path, max_steps=8, warmup_steps=0, log_every=1, resume="auto")
    longer.fit()
    rows = read_metrics(tmp_path)
    lrs = {int(r["step"]): r["lr"] for r in rows}
    assert max(lrs) == 8 and lrs[4] > 0  # not stuck at the end of the 3-step schedule


def test_resume_refuses_a_checkpoint_past_the_budget(tmp_path):
    # its weights would otherwise be exported as those of the shorter run
    make_trainer(tmp_path, max_steps=5).fit()
    with pytest.raises(CheckpointError, match=r"at step 5, past this run's budget of 3 steps"):
        make_trainer(tmp_path, max_steps=3, resume="auto").fit()
    finished = make_trainer(tmp_path, max_steps=5, resume="auto")
    finished.fit()  # the same budget again: already trained
    assert finished.step == 5


def test_resume_refuses_a_checkpoint_trained_with_other_settings(tmp_path):
    settings = {
        "method": {"name": "simclr", "temperature": 0.2},
        "augment": {"rrc": {"enabled": True}},
        "trainer": {"lr": 1e-3, "epochs": 2, "num_workers": 0},
        "evaluate": {"cs": [1.0]},
        "seed": 0,
    }
    make_trainer(tmp_path, max_steps=3, run_config=settings).fit()
    # the budget, how the run is driven and what is evaluated afterwards may change
    relaxed = {**settings, "trainer": {"lr": 1e-3, "epochs": 4, "num_workers": 2},
               "evaluate": {"cs": [0.1, 1.0]}}  # fmt: skip
    longer = make_trainer(tmp_path, max_steps=5, resume="auto", run_config=relaxed)
    longer.fit()
    assert longer.step == 5
    # what is learned may not: the refusal names every changed key, old and new value
    changed = {**relaxed, "method": {"name": "simclr", "temperature": 0.5},
               "augment": {"rrc": {"enabled": False}}, "seed": 1}  # fmt: skip
    with pytest.raises(CheckpointError) as refused:
        make_trainer(tmp_path, lr=1e-2, max_steps=8, resume="auto", run_config=changed).fit()
    message = str(refused.value)
    for change in ("augment.rrc.enabled: True -> False", "method.temperature: 0.2 -> 0.5",
                   "seed: 0 -> 1", "trainer.lr: 0.001 -> 0.01"):  # fmt: skip
        assert change in message
    assert "evaluate" not in message and "num_workers" not in message
    assert "new run_dir" in message
    # the line ends with the overrides that give back the checkpoint's settings
    assert message.endswith(
        "; or add augment.rrc.enabled=true method.temperature=0.2 seed=0 trainer.lr=0.001 "
        "to continue it"
    )
    assert load_checkpoint(tmp_path / "checkpoints/last.pt")["step"] == 5
    # a key added or removed has no such override: the line does not pretend it has
    extra = {**changed, "method": {"name": "simclr", "temperature": 0.2, "norm": "batch"}}
    with pytest.raises(CheckpointError) as refused:
        make_trainer(tmp_path, max_steps=8, resume="auto", run_config=extra).fit()
    assert "method.norm: added ('batch')" in str(refused.value)
    assert "to continue it" not in str(refused.value)


@pytest.mark.parametrize(
    ("value", "override"),
    [(True, "k=true"), (None, "k=null"), (0.05, "k=0.05"), (3, "k=3"), ("frames", "k=frames"),
     ("a b", None), ([1, 2], None), ({"a": 1}, None)],
)  # fmt: skip
def test_an_override_is_offered_only_where_it_reads_back_as_the_value(value, override):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from stec.engine.checkpoint import override_of

    assert override_of("k", value) == override
    if override is not None:  # Hydra reads it as the value itself
        assert OverridesParser.create().parse_override(override).value() == value


RUN = {
    "data": {"name": "cifar10", "root": "/data/a", "preset": "cifar", "size": 32, "canvas": 0,
             "clip_seconds": 5.0, "folds": None, "esc10": False, "test_split": "test"},
    "augment": {},
    "efference": {"mode": "inverse", "component_weights": None},
    "evaluate": {"cs": [1.0]},
    "run_dir": "runs/a",
    "seed": 0,
}  # fmt: skip


def _with(path: str, value):
    """RUN with ``path`` (dotted) set to ``value``; ``...`` removes the key."""
    import copy

    config = copy.deepcopy(RUN)
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return config


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("augment.jitter_p", 0.5, "augment.jitter_p: added (0.5)"),
        ("efference.component_weights", {"rrc": 2}, "efference.component_weights: None -> {'rrc': 2}"),
        ("data.preset", "stl10", "data.preset: 'cifar' -> 'stl10'"),
        ("data.size", 64, "data.size: 32 -> 64"),
        ("data.canvas", 448, "data.canvas: 0 -> 448"),
        ("data.clip_seconds", 2.0, "data.clip_seconds: 5.0 -> 2.0"),
        ("data.folds", [1, 2, 3, 4], "data.folds: None -> [1, 2, 3, 4]"),
        ("data.esc10", ..., "data.esc10: removed (was False)"),
    ],
)  # fmt: skip
def test_resume_compares_the_whole_config_added_and_removed_keys_included(
    tmp_path, path, value, named
):
    make_trainer(tmp_path, max_steps=3, run_config=RUN).fit()
    with pytest.raises(CheckpointError) as refused:
        make_trainer(tmp_path, max_steps=5, resume="auto", run_config=_with(path, value)).fit()
    message = str(refused.value)
    assert isinstance(refused.value, ValueError)  # the user's input: the CLIs exit with 2
    assert named in message and "\n" not in message
    assert message.count(" -> ") + message.count(": added") + message.count(": removed") == 1
    assert "start afresh: train into a new run_dir without trainer.resume" in message


def test_resume_reads_trainer_keys_a_checkpoint_left_out_as_their_defaults(tmp_path):
    # a config without trainer.trust_coefficient (the audio one) ran with its default
    make_trainer(tmp_path, max_steps=3).fit()
    state = load_checkpoint(tmp_path / "checkpoints/last.pt")
    del state["config"]["trainer"]["trust_coefficient"]
    save_checkpoint(tmp_path / "checkpoints/last.pt", state)
    resumed = make_trainer(tmp_path, max_steps=5, resume="auto")
    resumed.fit()
    assert resumed.step == 5
    with pytest.raises(CheckpointError, match=r"trainer.trust_coefficient: 0.001 -> 0.002"):
        make_trainer(tmp_path, max_steps=8, resume="auto", trust_coefficient=0.002).fit()


def test_resume_allows_moved_data_another_loader_and_other_evaluation(tmp_path):
    make_trainer(tmp_path, max_steps=3, run_config=RUN).fit()
    moved = _with("data.root", "/data/b")
    moved.update(run_dir="runs/b", evaluate={"cs": [0.1, 1.0], "with_sed": True})
    moved["data"]["test_split"] = "val"
    resumed = make_trainer(
        tmp_path, max_steps=5, resume="auto", num_workers=1, log_every=1, run_config=moved
    )
    resumed.fit()
    assert resumed.step == 5


def test_the_keys_a_resume_may_change_are_those_docs_training_lists():
    import re

    from stec.engine.checkpoint import RESUMABLE

    text = (ROOT / "docs/training.md").read_text()
    table = text[text.index("| may change on a resume | keys |") :].split("\n\n")[0]
    documented = {key for row in table.splitlines()[2:] for key in re.findall(r"`([^`]+)`", row)}
    # keys under another listed key (evaluate.device under evaluate) need no row of their own
    listed = {k for k in RESUMABLE if not any(k.startswith(p + ".") for p in RESUMABLE)}
    assert documented == listed


EFFERENCE = {"mode": "off", "lambda_manip": 1.0, "inverse_hidden": 512,
             "inverse_output": "categorical", "inverse_input": "backbone", "action_embed_dim": 128,
             "components": None, "component_weights": None, "equivariant_dims": 0,
             "detach_frames": False, "standardise_peaks": False,
             "lambda_manip_warmup": 0.0, "forward_head": "shared", "read_gate": 0.0}  # fmt: skip


def _run(**efference) -> dict:
    return {"seed": 0, "method": {"name": "simclr"}, "efference": {**EFFERENCE, **efference}}


def test_without_an_inverse_model_its_settings_change_no_result():
    from stec.engine.checkpoint import settings_of, training_changes

    off, tuned = _run(), _run(lambda_manip=0.3, equivariant_dims=128, inverse_hidden=256)
    # an invariant arm has no inverse model or forward predictor: a sweep of their settings
    # reuses it, and resuming it under them is no change
    assert settings_of(off) == settings_of(tuned) and training_changes(off, tuned) == []
    # what the action probe of any arm reads still counts
    framed = _run(inverse_input="frames")
    assert settings_of(off) != settings_of(framed)
    assert training_changes(off, framed) == ["efference.inverse_input: 'backbone' -> 'frames'"]
    # with the inverse model on, every key counts, and so does switching it on
    on, on_tuned = _run(mode="inverse"), _run(mode="inverse", lambda_manip=0.3)
    assert settings_of(on) != settings_of(on_tuned)
    assert training_changes(on, on_tuned) == ["efference.lambda_manip: 1.0 -> 0.3"]
    assert training_changes(off, on_tuned) == [
        "efference.lambda_manip: 1.0 -> 0.3", "efference.mode: 'off' -> 'inverse'"]  # fmt: skip
    # an encoder that is not trained (a floor) learns from neither the method nor the
    # efference copy: only what its evaluation reads counts
    floor = {**on_tuned, "method": {"name": "byol"}}
    assert settings_of(floor, trained=False) == settings_of(off, trained=False)
    assert settings_of(framed, trained=False) != settings_of(off, trained=False)


def test_every_efference_key_is_classed_as_the_inverse_models_or_not():
    # a new efference key must be placed: only-the-inverse-model's keys are inert without
    # one (reused, resumable); any other (mode, what the action probe reads) always counts
    import yaml

    from stec.engine.checkpoint import INVERSE_MODEL_KEYS

    keys = set(yaml.safe_load((ROOT / "configs/common/efference/off.yaml").read_text()))
    assert {f"efference.{k}" for k in keys - {"mode", "inverse_input"}} == set(INVERSE_MODEL_KEYS)
    assert set(EFFERENCE) == keys


def test_a_key_added_since_a_run_was_made_counts_as_its_default():
    # a run made before efference.detach_frames, efference.standardise_peaks,
    # efference.lambda_manip_warmup, efference.forward_head and efference.read_gate existed
    # behaved as their defaults (false, 0, shared, 0): a resume or a comparison of it under
    # the new version is no change, a real change is one
    from stec.engine.checkpoint import KEYS_ADDED, settings_of, training_changes

    added = {"detach_frames": False, "standardise_peaks": False, "lambda_manip_warmup": 0.0,
             "forward_head": "shared", "read_gate": 0.0}  # fmt: skip
    assert {f"efference.{key}": value for key, value in added.items()}.items() <= KEYS_ADDED.items()
    now = _run(mode="inverse", inverse_input="frames")
    old = {**now, "efference": {k: v for k, v in now["efference"].items() if k not in added}}
    assert training_changes(old, now) == [] and training_changes(now, old) == []
    assert settings_of(old) == settings_of(now)
    detached = _run(mode="inverse", inverse_input="frames", detach_frames=True)
    assert training_changes(old, detached) == ["efference.detach_frames: False -> True"]
    assert settings_of(old) != settings_of(detached)
    standardised = _run(mode="inverse", inverse_input="frames", standardise_peaks=True)
    assert training_changes(old, standardised) == ["efference.standardise_peaks: False -> True"]
    warmed = _run(mode="inverse", inverse_input="frames", lambda_manip_warmup=0.2)
    assert training_changes(old, warmed) == ["efference.lambda_manip_warmup: 0.0 -> 0.2"]
    both = {**old, "efference": {**old["efference"], "mode": "both"}}
    own = _run(mode="both", inverse_input="frames", forward_head="own")
    assert training_changes(both, own) == ["efference.forward_head: 'shared' -> 'own'"]
    # a config without the section at all (another modality's, a floor's) gains nothing
    assert settings_of({"seed": 0}) == {"seed": 0}
