"""What the audio command-line keys take beyond their defaults' types (``stec.config_check``):
each key's allowed values, and the checks that need several keys at once (the front end,
the clip length, the crops and the pitch range must fit one another)."""

from __future__ import annotations

import math

from omegaconf import DictConfig

from stec.compose import ConfigSchema
from stec.config_check import Rule, at_least, folder_problem, fraction, one_of, positive
from stec_audio import app

TASKS = ("clip", "sed")  # evaluate task=: clip-level probe | sound event detection


def _feature_size(key: str, value: int) -> str | None:
    if value < 1 or value & (value - 1):
        return (
            "expected a power of two: 512, 1024 or 2048 (the sizes of BYOL-A's weights), "
            "or a smaller one for quick runs"
        )
    return None


def _together(cfg: DictConfig) -> list[str]:
    """The front end, the clip length and the crops must fit one another."""
    front, problems = cfg.frontend, []
    if front.f_max > front.sample_rate / 2 or front.f_min >= front.f_max:
        problems.append(
            f"frontend.f_min={front.f_min}, frontend.f_max={front.f_max}: need f_min < f_max "
            f"<= half the sample rate ({front.sample_rate / 2:g} Hz)"
        )
    if front.win_length > front.n_fft:
        problems.append(
            f"frontend.win_length={front.win_length} exceeds frontend.n_fft={front.n_fft}"
        )
    seconds = float(cfg.data.clip_seconds)
    if seconds * front.sample_rate < front.n_fft:
        problems.append(
            f"data.clip_seconds={seconds:g} is shorter than one analysis window "
            f"(frontend.n_fft={front.n_fft} samples: {front.n_fft / front.sample_rate:g} s)"
        )
    frames = app.frontend_config(cfg).frames(seconds)
    # a pitch shift as wide as the mel axis can leave a view nothing of the clip to show
    span = 12 * math.log2(front.f_max / front.f_min) if 0 < front.f_min < front.f_max else 0
    for name, section in cfg.get("augment", {}).items():
        if not isinstance(section, DictConfig) or not section.get("enabled"):
            continue
        crop, semitones = section.get("frames"), section.get("max_semitones")
        if crop and int(crop) > frames:
            problems.append(
                f"augment.{name}.frames={crop} is longer than a clip of "
                f"data.clip_seconds={seconds:g} ({frames} frames)"
            )
        if span and semitones is not None and float(semitones) >= span:
            problems.append(
                f"augment.{name}.max_semitones={semitones:g} can shift a view off the whole "
                f"mel axis ({span:.1f} semitones from frontend.f_min={front.f_min:g} to "
                f"frontend.f_max={front.f_max:g} Hz): give less than {span:.1f}"
            )
    return problems


#: What the audio keys take beyond their defaults' types (stec.config_check).
SCHEMA = ConfigSchema(
    rules={
        "task": one_of(*TASKS),
        "data.name": one_of(*app.DATASETS),
        "data.n_per_class": at_least(1),
        "data.clip_seconds": positive(),
        "data.max_bad_fraction": fraction(),
        "data.prepared": Rule(check=folder_problem),
        "data.in_memory": one_of("auto", True, False, kinds=("str", "bool")),
        "data.folds": Rule(kinds=("null", "list[int]")),
        "data.labels": Rule(kinds=("list[str]",)),
        "data.segments": Rule(kinds=("list[str]",), filled=True),
        "frontend.f_min": at_least(0),
        "frontend.*": positive(),
        "encoder.name": one_of("audiontt", "resnet"),
        "encoder.kwargs.d": Rule(check=_feature_size),
        "augment.*.p": fraction(),
        "augment.geometry.span": at_least(0, kinds=("float", "null")),
        "evaluate.action_probe_epochs": at_least(1),
        "evaluate.sed.context_frames": at_least(0),
        "evaluate.sed.*collar*": at_least(0),
        "evaluate.sed.eval_folds": Rule(kinds=("list[int]",)),
        "evaluate.sed.lambdas": positive(filled=True),
        "compare.floors": one_of("random", "logmel_stats"),
    },
    check=_together,
    # the pipeline builder checks each component's arguments, the encoder its own
    open=("augment", "augment.*", "encoder.kwargs"),
    # read by every audio dataset where given, left out of some data options' defaults
    optional=("data.folds", "data.labels", "data.esc10", "data.strong_labels"),
)
