"""Every user mistake in the config is one line and exit status 2, before any work: each
key of both CLIs, for every group option, is checked by type and range."""

from __future__ import annotations

import logging
import re

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from stec.compose import group_options
from stec.errors import ConfigError
from stec_audio.cli import SCHEMA as audio_schema
from stec_audio.cli import main as audio
from stec_vision.cli import SCHEMA as vision_schema
from stec_vision.cli import main as vision
from tests.cli.test_vision_cli import TINY as VISION_TINY
from tests.cli.test_vision_cli import _small_export

pytestmark = pytest.mark.usefixtures("isolated")

CLIS = {"audio": audio, "vision": vision}
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")


def _error(main, args, capsys) -> str:
    """The one error line of ``main(args)``, which must exit with 2 before any work."""
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


COMPONENTS = "components of this augment pipeline: "
MISTAKES = [
    (audio, ["pretrain", "efference.components=[foo]"], "efference.components names unknown component(s) foo; the known " + COMPONENTS),
    (audio, ["pretrain", "efference.component_weights={foo: 2}"], "efference.component_weights names unknown component(s) foo; the known " + COMPONENTS),
    (audio, ["compare", "compare.ablate=[foo]"], "compare.ablate names unknown component(s) foo"),
    (vision, ["pretrain", "efference.components=[foo]"], "efference.components names unknown component(s) foo; the known " + COMPONENTS + "crop"),
    (audio, ["evaluate", "checkpoint=random", "evaluate.protocol=evarr"], "evaluate.protocol='evarr' is not valid; allowed values: logreg, evar"),
    (vision, ["evaluate", "checkpoint=random", "evaluate.protocol=evarr"], "evaluate.protocol='evarr' is not valid; allowed values: logreg, evar"),
    (audio, ["evaluate", "checkpoint=random", "evaluate.cs=[0]"], "evaluate.cs=[0] is not valid: expected a list of numbers or a number > 0"),
    (audio, ["pretrain", "seed=x"], "error: seed='x' is not valid: expected an integer >= 0 (default 0)"),
    (vision, ["pretrain", "seed=x"], "error: seed='x' is not valid: expected an integer >= 0 (default 0)"),
    (audio, ["pretrain", "data.n_per_class=0"], "data.n_per_class=0 is not valid: expected an integer >= 1 (default 40)"),
    (audio, ["pretrain", "trainer.epochs=abc"], "trainer.epochs='abc' is not valid: expected an integer >= 0 (default 30)"),
    (audio, ["embed", "checkpoint=random"], "out is required: out=embeddings.npy or out=embeddings.parquet"),
    (vision, ["embed", "checkpoint=random"], "out is required: out=embeddings.npy or out=embeddings.parquet"),
    (audio, ["embed", "checkpoint=random", "out=e.csv"], "out='e.csv': use a .npy or .parquet file name"),
    (vision, ["embed", "checkpoint=random", "out=e.csv"], "out='e.csv': use a .npy or .parquet file name"),
    (audio, ["embed", "checkpoint=random", "frames=true", "out=e.csv"], "out='e.csv': use a .npy or .parquet file name"),
    (audio, ["pretrain", "method.temperature=-1"], "method.temperature=-1 is not valid: expected a number > 0 (default 0.2)"),
    (audio, ["pretrain", "encoder.kwargs.d=777"], "encoder.kwargs.d=777 is not valid: expected a power of two: 512, 1024 or 2048"),
    (audio, ["pretrain", "data.clip_seconds=0.01"], "data.clip_seconds=0.01 is shorter than one analysis window (frontend.n_fft=1024 samples: 0.064 s)"),
    (audio, ["pretrain", "augment.geometry.frames=100000"], "augment.geometry.frames=100000 is longer than a clip of data.clip_seconds=5 (501 frames)"),
    (audio, ["pretrain", "augment=separate", "augment.time_crop.frames=100000"], "augment.time_crop.frames=100000 is longer than a clip of data.clip_seconds=5 (501 frames)"),
    (audio, ["pretrain", "frontend.f_max=100000"], "frontend.f_min=60.0, frontend.f_max=100000: need f_min < f_max <= half the sample rate (8000 Hz)"),
    (audio, ["pretrain", "trainer.epochs=0"], "trainer.epochs=0 with trainer.max_steps=0 trains no step: set trainer.epochs or trainer.max_steps above 0"),
    (vision, ["compare", "trainer.epochs=0"], "trainer.epochs=0 with trainer.max_steps=0 trains no step"),
    (audio, ["compare", "compare.seeds=[]"], "compare.seeds=[] is not valid: expected at least one item"),
    (audio, ["compare", "compare.methods=[]"], "compare.methods=[] is not valid: expected at least one item"),
    (audio, ["pretrain", "augment.geometry.max_semitones=100"], "augment.geometry.max_semitones=100 can shift a view off the whole mel axis (84.3 semitones from frontend.f_min=60 to frontend.f_max=7800 Hz): give less than 84.3"),
    (audio, ["pretrain", "augment=separate", "augment.pitch.enabled=true", "augment.pitch.max_semitones=90"], "augment.pitch.max_semitones=90 can shift a view off the whole mel axis"),
    (vision, ["compare", "compare.efference=[]"], "compare.efference=[] is not valid: expected at least one item"),
    (audio, ["pretrain", "efference.lambda_manip_warmup=1.5"], "efference.lambda_manip_warmup=1.5 is not valid: expected a number (>= 0 and <= 1) (default 0.5)"),
    (audio, ["pretrain", "efference.read_gate=5"], "efference.read_gate=5 is not valid: expected a number (>= 0 and <= 1) (default 0.05)"),
    (vision, ["pretrain", "efference=both", "efference.forward_head=projector"], "efference.forward_head='projector' is not valid; allowed values: shared, own"),
    (vision, ["pretrain", "augment.jitterp=0.5"], "unknown config key 'augment.jitterp'; did you mean 'augment.jitter_p'?"),
    (vision, ["pretrain", "augment.jitter_p=2"], "augment.jitter_p=2 is not valid: expected a number or a list of numbers (>= 0 and <= 1) (default 0.8)"),
]  # fmt: skip


@pytest.mark.parametrize("main, args, message", MISTAKES)
def test_a_mistake_is_one_line_naming_the_key_before_any_work(
    main, args, message, tmp_path, capsys
):
    small = ["data.n_per_class=2"] if main is audio else []  # the key given later wins
    line = _error(main, [args[0], *small, *args[1:]], capsys)
    assert message in line
    assert not (tmp_path / "cache").exists()  # no data was read or generated


@NO_GPU
@pytest.mark.parametrize("main", [audio, vision])
@pytest.mark.parametrize(
    "args",
    [
        ["pretrain", "trainer.device=cuda"],
        ["evaluate", "checkpoint=random", "evaluate.device=cuda"],
    ],
)
def test_a_cuda_device_without_a_gpu_says_how_to_go_on(main, args, capsys):
    key = args[-1].split("=")[0]
    line = _error(main, args, capsys)
    assert (
        f"{key}='cuda' is not valid: no CUDA device is visible; use {key}=cpu or {key}=auto" in line
    )


@pytest.mark.parametrize(
    "content", [b"", b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n"]
)
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_an_empty_or_git_lfs_weights_file_is_named_as_such(content, suffix, tmp_path, capsys):
    path = tmp_path / f"w{suffix}"
    path.write_bytes(content)
    for command in (["evaluate", "checkpoint=init"], ["pretrain"]):
        line = _error(audio, [*command, f"encoder.init={path}", "data.n_per_class=2"], capsys)
        what = "a Git LFS pointer, not the weights" if content else "the file is empty"
        assert f"encoder.init={path}: {what}" in line
    folder = _small_export(tmp_path / "run" / "export")
    (folder / "encoder.safetensors").write_bytes(content)
    line = _error(vision, ["evaluate", "checkpoint=run"], capsys)
    assert f"run/export/encoder.safetensors: {what}" in line


def test_a_long_warmup_is_warned_about_and_a_number_for_a_name_is_text(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="stec"):
        assert vision(["pretrain", *VISION_TINY, "trainer.warmup_steps=10", "run_dir=2024"]) == 0
    assert "trainer.warmup_steps=10 is longer than the run (3 steps)" in caplog.text
    assert (tmp_path / "2024" / "export" / "encoder.safetensors").exists()


# ---------------------------------------------------------------- --help and the walk


def _help(main, *choices: str, capsys) -> dict:
    """The config ``--help`` prints for ``choices``, parsed."""
    assert main(["--help", *choices]) == 0
    out = capsys.readouterr().out
    config = out.split("\nconfig of ", 1)[1].split("\n", 2)[2]
    return yaml.safe_load(config.split("\nnotes from the config files", 1)[0])


def _leaves(node, key=""):
    if isinstance(node, dict) and node:
        for name, value in node.items():
            yield from _leaves(value, f"{key}.{name}" if key else str(name))
    else:
        yield key, node


def _wrong(value) -> str:
    """A value of another type than ``value``."""
    return "[1,2]" if isinstance(value, str) else "abc"


def test_help_lists_the_keys_of_the_group_choices(capsys):
    keys = dict(_leaves(_help(audio, "data=audioset", capsys=capsys)))
    assert {"data.mapping", "data.segments", "data.eval_segments", "data.audio_dir"} <= set(keys)
    assert "data.n_per_class" not in keys
    keys = dict(_leaves(_help(vision, capsys=capsys)))
    assert keys["augment.jitter_p"] == 0.8 and "augment.scale" in keys  # the demo preset's
    keys = dict(_leaves(_help(vision, "data=stl10", capsys=capsys)))
    assert keys["augment.solarize_p"] == [0.2, 0.2] and keys["encoder.name"] == "resnet18"
    assert _error(audio, ["--help", "data=audiosett"], capsys).endswith("did you mean audioset?")


def test_help_shows_the_sentence_beside_each_key_of_the_chosen_files(capsys):
    assert audio(["--help"]) == 0  # the default augment group is the composed map
    notes = capsys.readouterr().out.split("\nnotes from the config files", 1)[1]
    assert "audio/augment/composed.yaml:" in notes and "augment/separate.yaml" not in notes
    span = next(line for line in notes.splitlines() if line.strip().startswith("span:"))
    assert "how far apart (in crop lengths) the two views" in span
    assert "common/efference/inverse.yaml:" in notes
    assert "so invariance cannot erase what the inverse model reads" in notes
    # the chosen option's file, not the default one
    assert audio(["--help", "augment=separate"]) == 0
    notes = capsys.readouterr().out.split("\nnotes from the config files", 1)[1]
    assert "audio/augment/separate.yaml:" in notes and "augment/composed.yaml" not in notes


def _choices(modality: str) -> list[list[str]]:
    """Group choices that together name every option of every group (the i-th option of
    each group in the i-th case)."""
    groups = group_options(modality)
    n = max(len(options) for options in groups.values())
    return [[f"{g}={o[i]}" for g, o in groups.items() if i < len(o)] for i in range(n)]


CASES = [(modality, choices) for modality in CLIS for choices in _choices(modality)]


@pytest.mark.parametrize("modality, choices", CASES, ids=[" ".join(c) for _, c in CASES])
def test_every_key_of_every_group_option_is_checked_by_type(modality, choices, capsys):
    main = CLIS[modality]
    keys = dict(_leaves(_help(main, *choices, capsys=capsys)))
    wrong = [f"{key}={_wrong(value)}" for key, value in keys.items()]
    line = _error(main, ["pretrain", *choices, *wrong], capsys)
    missed = [k for k in keys if not re.search(rf"(error: |; ){re.escape(k)}=", line)]
    assert not missed, f"not checked: {missed}"


@pytest.mark.parametrize("modality", sorted(CLIS))
def test_every_command_checks_the_config_first(modality, capsys):
    main = CLIS[modality]
    commands = ["pretrain", "evaluate", "embed", "compare"] + (
        ["prepare"] if modality == "audio" else ["export"]
    )
    for command in commands:
        line = _error(main, [command, "checkpoint=random", "trainer.lr=abc"], capsys)
        assert f"{command}: error: trainer.lr='abc' is not valid: expected a number > 0" in line


def test_a_key_added_with_plus_is_left_to_its_reader_where_the_config_has_the_section():
    from stec.compose import check_composed, compose_config
    from stec_audio.cli import SCHEMA

    overrides = ["+augment.time_crop.action_range=[-2.0,2.0]"]
    cfg = compose_config("audio", overrides)
    check_composed(cfg, "audio", overrides, SCHEMA)  # the time crop reads it
    assert list(cfg.augment.time_crop.action_range) == [-2.0, 2.0]


TYPED_WITH_PLUS = [
    ("audio", "+efference.lamda_manip=0.5", "unknown config key 'efference.lamda_manip'; did you mean 'efference.lambda_manip'?"),
    ("audio", "+method.temprature=0.2", "unknown config key 'method.temprature'; did you mean 'method.temperature'?"),
    ("audio", "+data.fold=[1]", "unknown config key 'data.fold'; did you mean 'data.folds'?"),
    ("audio", "+encoder.foo=1", "unknown config key 'encoder.foo'; keys of encoder: init, kwargs, name"),
    ("audio", "+foo=1", "unknown config key 'foo'; keys of the config: "),
    ("vision", "+trainer.precision=fp8", "unknown config key 'trainer.precision'; keys of trainer: "),
    ("vision", "+evaluate.epoch=3", "unknown config key 'evaluate.epoch'; did you mean 'evaluate.epochs'?"),
]  # fmt: skip


SCHEMAS = {"audio": audio_schema, "vision": vision_schema}


def _checked(modality: str, overrides: list[str]):
    from stec.compose import check_composed, compose_config

    cfg = compose_config(modality, overrides)
    check_composed(cfg, modality, overrides, SCHEMAS[modality])
    return cfg


@pytest.mark.parametrize(("modality", "override", "message"), TYPED_WITH_PLUS)
def test_a_key_added_with_plus_that_nothing_reads_is_refused(modality, override, message):
    """Hydra's ``+`` adds any key: one that no reader takes would be ignored in silence."""
    with pytest.raises(ConfigError) as refused:
        _checked(modality, [override])
    assert message in str(refused.value), refused.value


@pytest.mark.parametrize(
    ("modality", "override"),
    [
        ("audio", "+augment.time_crop.action_range=[-2.0,2.0]"),  # the time crop reads it
        ("audio", "+encoder.kwargs.n_mels=64"),  # the encoder checks its own arguments
        ("audio", "+data.strong_labels=strong.tsv"),  # read where given, audioset sets none
        ("vision", "+data.pretrain_split=train"),  # stl10's is train+unlabeled
    ],
)
def test_a_key_added_with_plus_that_a_reader_takes_is_kept(modality, override):
    data = {"audio": "data=audioset", "vision": "data=cifar10"}[modality]
    overrides = [data, override]
    cfg = _checked(modality, overrides)
    key, _, value = override[1:].partition("=")
    assert str(OmegaConf.select(cfg, key)).replace(" ", "").replace("'", "") == value
