"""stec-audio with the composed time-frequency map: its action space, the frame-reading
inverse model, and what the run records of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stec.engine.logging import read_metrics
from stec_audio.cli import main
from tests.cli.test_audio_cli import TINY

pytestmark = pytest.mark.usefixtures("isolated")


def test_composed_pretraining_reads_frames_shares_the_features_and_logs_each_target(
    tmp_path, capsys
):
    data = ["data.n_per_class=5", "augment=composed"]  # the demo set, 50 clips
    run = ["run_dir=run", "trainer.max_steps=4", "trainer.log_every=1"]
    assert main(["pretrain", *data, *TINY, *run]) == 0
    out = capsys.readouterr().out
    # the gain is applied but not predicted, the mixup is off: one geometric component
    assert "action space ActionSpace(geometry:2x6)" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["efference"]["inverse_input"] == "frames"
    # no split: the SSL loss and the inverse model read all 32 features (a split of its
    # own cost 2 class points on the demo in every seed, docs/RESULTS.md)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert state["projector.0.weight"].shape[1] == 32
    assert state["inverse.net.0.weight"].shape[1] == 2 * 32 + 8 * (2 * 48 + 3)
    rows = read_metrics(tmp_path / "run")
    # the action loss weighs 0.3 against the SSL loss, reached over the first half of the
    # run (docs/RESULTS.md: a constant 0.3 cost the second corpus's class)
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    for row, weight in zip(rows, [0.0, 0.15, 0.3, 0.3], strict=True):
        total = row["ssl_loss"] + weight * row["action_loss"]
        assert row["loss"] == pytest.approx(total, rel=1e-4), row
    for key in ("target_acc/geometry.shift_x", "target_majority/geometry.shift_y"):
        assert key in rows[-1] and 0.0 <= rows[-1][key] <= 1.0
    # the run ends saying what its inverse model read (4 logged steps: the last one)
    lines = out.splitlines()
    read = [i for i, line in enumerate(lines) if line.startswith("the inverse model read")]
    assert len(read) == 1 and lines[read[0] + 1].startswith("done: step 4")
    last = rows[-1]
    for target in ("geometry.shift_x", "geometry.shift_y"):
        shown = (
            f"{target} {last[f'target_acc/{target}']:.2f} ({last[f'target_majority/{target}']:.2f})"
        )
        assert shown in lines[read[0]]
    assert main(["evaluate", *data, "checkpoint=run", "evaluate.action_probe=true", *TINY]) == 0
    probe = json.loads((tmp_path / "run" / "results.json").read_text())["action_probe"]
    assert {"action_acc/geometry", "target_acc/geometry.shift_x"} <= set(probe)
    assert 0.0 < probe["target_majority/geometry.shift_x"] <= 1.0


def test_the_groups_warm_up_and_weight_can_be_overridden(tmp_path):
    args = ["data.n_per_class=5", "augment=composed", "run_dir=run", *TINY]
    constant = ["efference.lambda_manip=0.1", "efference.lambda_manip_warmup=0"]
    assert main(["pretrain", *args, *constant, "trainer.max_steps=3", "trainer.log_every=1"]) == 0
    rows = read_metrics(tmp_path / "run")
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:  # the whole weight from the first step
        total = row["ssl_loss"] + 0.1 * row["action_loss"]
        assert row["loss"] == pytest.approx(total, rel=1e-4), row
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["efference"]["lambda_manip_warmup"] == 0


def test_a_split_larger_than_the_features_is_one_line(tmp_path, capsys):
    args = ["data.n_per_class=5", "augment=composed", "run_dir=run", *TINY]
    assert main(["pretrain", *args, "efference.equivariant_dims=32"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert (
        "efference" in error[0] and "equivariant_dims=32 must be an integer in [0, 32)" in error[0]
    )


def test_the_frame_reader_options_reach_the_model_and_need_frame_input(tmp_path, capsys):
    data = ["data.n_per_class=5", *TINY]
    run = ["augment=composed", "run_dir=run", "trainer.max_steps=2"]
    assert main(["pretrain", *data, *run, "efference.standardise_peaks=true"]) == 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    # 8 groups: a peak height and a position each, standardised with running statistics
    assert state["inverse.frame_reader.peak_norm.running_var"].shape == (16,)
    assert int(state["inverse.frame_reader.peak_norm.num_batches_tracked"]) == 2
    capsys.readouterr()
    # the separate pipeline's inverse model reads pooled features: no frames to read
    for option in ("standardise_peaks", "detach_frames"):
        other = ["augment=separate", "run_dir=other", f"efference.{option}=true"]
        assert main(["pretrain", *data, *other]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1, error
        assert f"{option}=true" in error[0] and "needs inverse_input=frames" in error[0]


def test_the_default_read_gate_reaches_the_model_and_logs_each_targets_share(tmp_path, capsys):
    data = ["data.n_per_class=5", *TINY]
    run = ["run_dir=run", "trainer.max_steps=3", "trainer.log_every=1"]
    assert main(["pretrain", *data, *run]) == 0  # the composed default gates
    assert "the read gate let into the encoder this share of each one's gradient" in (
        capsys.readouterr().out
    )
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["efference"]["read_gate"] == 0.05
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert state["inverse.read_margin"].shape == (2,)  # the time shift and the pitch shift
    rows = read_metrics(tmp_path / "run")
    assert [row["target_gate/geometry.shift_x"] for row in rows][0] == 0.0  # shut at first
    assert all(0.0 <= row["target_gate/geometry.shift_y"] <= 1.0 for row in rows)
    # a regression is gated by the share of variance it reads; efference.read_gate=0: no gate
    for name, setting in (("regression", "efference.inverse_output=regression"),
                          ("off", "efference.read_gate=0")):  # fmt: skip
        assert main(["pretrain", *data, *run[1:], f"run_dir={name}", setting]) == 0
        rows = read_metrics(tmp_path / name)
        gated = sorted(key for key in rows[0] if key.startswith("target_gate/"))
        if name == "off":
            assert gated == []
        else:  # shut at first, as the categorical one
            assert gated == ["target_gate/geometry.shift_x", "target_gate/geometry.shift_y"]
            assert all(rows[0][key] == 0.0 for key in gated)


def test_a_run_made_before_the_read_gate_joined_the_default_says_how_to_continue_it(
    tmp_path, capsys
):
    data = ["data.n_per_class=2", *TINY]
    before = ["efference.read_gate=0.0", "run_dir=run", "trainer.max_steps=2"]  # as older runs
    assert main(["pretrain", *data, *before]) == 0
    capsys.readouterr()
    resume = ["run_dir=run", "trainer.max_steps=3", "trainer.resume=auto"]
    assert main(["pretrain", *data, *resume]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "efference.read_gate: 0.0 -> 0.05" in error[0], error
    assert error[0].endswith("; or add efference.read_gate=0.0 to continue it")
    assert main(["pretrain", *data, *resume, "efference.read_gate=0.0"]) == 0  # as it says
    assert "done: step 3" in capsys.readouterr().out
    # a comparison holding such arms says the same, for them all
    arm = tmp_path / "cmp" / "simclr-inverse" / "seed0"
    arm.parent.mkdir(parents=True)
    (tmp_path / "run").rename(arm)
    compare = ["compare.methods=[simclr]", "compare.efference=[inverse]", "compare.seeds=[0]",
               "compare.floors=[]", "compare.out=cmp", "trainer.max_steps=3"]  # fmt: skip
    assert main(["compare", *data, *compare]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].endswith("or add efference.read_gate=0.0 to continue them")


def test_a_run_of_the_separate_pipeline_says_how_to_go_on_under_the_composed_default(
    tmp_path, capsys
):
    data = ["data.n_per_class=2", *TINY]
    assert main(["pretrain", *data, "augment=separate", "run_dir=run", "trainer.max_steps=2"]) == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    made = checkpoint.read_bytes()
    capsys.readouterr()
    advice = "it was made with augment=separate (the default before 0.2): add augment=separate"
    resume = ["run_dir=run", "trainer.max_steps=3", "trainer.resume=auto"]
    assert main(["pretrain", *data, *resume]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "augment.geometry.enabled: False -> True" in error[0], error
    assert error[0].endswith(f"{advice} to continue it")
    assert checkpoint.read_bytes() == made
    # a comparison that holds the run as an arm stops before any run, with the same advice
    arm = tmp_path / "cmp" / "simclr-inverse" / "seed0"
    arm.parent.mkdir(parents=True)
    (tmp_path / "run").rename(arm)
    compare = ["compare.methods=[simclr]", "compare.efference=[inverse]", "compare.seeds=[0]",
               "compare.floors=[]", "compare.out=cmp"]  # fmt: skip
    assert main(["compare", *data, *compare]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].endswith(f"{advice} to continue it"), error
    assert (arm / "checkpoints" / "last.pt").read_bytes() == made
    # and the advice continues it
    arm.rename(tmp_path / "run")
    assert main(["pretrain", *data, *resume, "augment=separate"]) == 0
    assert "done: step 3" in capsys.readouterr().out


def test_a_run_made_before_the_composed_map_existed_counts_as_separate():
    from stec_audio.app import augment_group_advice

    composed = {"augment": {"geometry": {"enabled": True}}}
    old = {"augment": {"time_crop": {"enabled": True}}}  # no geometry section at all
    assert augment_group_advice(old, composed).endswith("add augment=separate to continue it")
    assert augment_group_advice(composed, old) == (
        "it was made with augment=composed: add augment=composed to continue it"
    )
    assert augment_group_advice(old, old) == augment_group_advice(composed, composed) == ""


def test_the_python_constants_of_the_composed_group_are_its_config():
    from omegaconf import OmegaConf

    import configs
    from stec.compose import compose_config
    from stec_audio.augment import COMPOSED_AUDIO_PIPELINE, COMPOSED_EFFERENCE

    cfg = OmegaConf.to_container(compose_config("audio", []), resolve=True)  # the default
    group = OmegaConf.load(Path(configs.__file__).parent / "audio" / "augment" / "composed.yaml")
    assert set(COMPOSED_EFFERENCE) == set(group.efference)  # every key the group sets
    for key, value in COMPOSED_EFFERENCE.items():
        assert cfg["efference"][key] == value, key
    for name, section in cfg["augment"].items():  # what is on, and what is predicted
        python = COMPOSED_AUDIO_PIPELINE[name]
        assert section["enabled"] == python["enabled"], name
        if section["enabled"]:
            assert section.get("predict", True) == python.get("predict", True), name


@pytest.mark.parametrize("group", ["composed", "separate"])
def test_a_run_made_before_the_mixup_stage_existed_resumes_as_a_view_stage_one(group):
    # runs of 0.2 and before have no augment.mixup.stage: their backgrounds were the views'
    import copy

    from omegaconf import OmegaConf

    import stec_audio.app  # noqa: F401  (declares augment.mixup.stage to the core)
    from stec.compose import compose_config
    from stec.engine.checkpoint import settings_of, training_changes

    now = OmegaConf.to_container(compose_config("audio", [f"augment={group}"]), resolve=True)
    old = copy.deepcopy(now)
    del old["augment"]["mixup"]["stage"]
    assert training_changes(old, now) == [] and settings_of(old) == settings_of(now)
    clip = copy.deepcopy(now)
    clip["augment"]["mixup"]["stage"] = "clip"
    assert training_changes(old, clip) == ["augment.mixup.stage: 'view' -> 'clip'"]


def test_the_forward_models_own_head_trains_beside_the_frame_reader(tmp_path, capsys):
    # efference=both with forward_head=own: the inverse model reads the frames, and the
    # forward model's own projector embeds the pooled features; both losses weigh 0.3
    data = ["data.n_per_class=5", "augment=composed", *TINY]
    run = ["run_dir=run", "trainer.max_steps=2", "trainer.log_every=1"]
    own = ["efference=both", "efference.forward_head=own", "efference.lambda_manip_warmup=0"]
    assert main(["pretrain", *data, *run, *own]) == 0
    # the run says whether its forward model uses the action, as it does for the inverse model
    out = capsys.readouterr().out
    assert "the inverse model read (last 20% of training" in out
    assert "the forward model, told each pair's own action, predicts the other view" in out
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert state["own_projector.0.weight"].shape[1] == 32
    assert "forward_predictor.net.0.weight" not in state and "inverse.net.0.weight" in state
    for row in read_metrics(tmp_path / "run"):
        assert abs(row["forward_told_gain"]) < 1.0  # two steps: the action barely used yet
        total = row["ssl_loss"] + 0.3 * (row["action_loss"] + row["forward_loss"])
        assert row["loss"] == pytest.approx(total, rel=1e-4), row
