"""Resuming under other settings: what a resume may change, what it refuses, and the line
that says how to continue the run."""

import pytest

from stec.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stec.engine.logging import read_metrics
from tests.core.test_trainer import ROOT, make_trainer


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
