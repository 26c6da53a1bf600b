"""Action-emitting log-mel augmenters and the audio pipeline builder.

Inputs are log-mels ``[B, 1, F, T]`` (float32) already normalised by the dataset
statistics. Whole clips arrive; the pipeline's first augmenter (:class:`TimeCrop`) cuts
the training segment. Every augmenter samples its parameters per example on the input's
device with the global torch RNG, applies them as batched tensor ops, and records them
under the names of the action components it declares (see :mod:`stec.augment`).

The pipeline order is fixed (:data:`PIPELINE_ORDER`), except that mixup at
``stage="clip"`` comes first (:func:`pipeline_order`): its background is mixed into the
whole clip, shared by the two views, and cut and mapped with it. With ``geometry``
(:class:`~stec_audio.augment.geometry.TimeFrequencyCrop`), one composed map per view does
the crop, the time scale and the pitch shift in one resampling, and the augmenters whose
actions it composes (``time_crop``, ``pitch``, ``rrc``, ``freq_shift``, ``time_stretch``)
are off; a background is mixed in after it. Without it (the separate action space of the
earlier releases): crop the segment, shift its pitch
(on the front end's own mel axis, where the shift is exact, and before a background is
mixed in, so that the background keeps its pitch), mix in a background clip, then the
geometric maps, the level ramp, and the masks last (a mask is the only step that destroys
information).

The package: ``ops`` holds the batched helpers every augmenter shares (range checks,
per-example draws, resampling along an axis), ``time`` the time crop and stretch,
``pitch`` the pitch shift and its mel <-> Hz maps, ``spectral`` BYOL-A's random resize
crop, the frequency shift and the SpecAugment masks, ``mix`` mixup and the linear fader,
``geometry`` the composed time-frequency map; this ``__init__`` re-exports them all and
builds pipelines (:func:`build_audio_pipeline`). They import the core (:mod:`stec`) and
one another only, never data loading, the encoders, evaluation, :mod:`stec_audio.app` or
the CLI (``tests/test_packaging.py`` checks it): what they need of the data (the dataset
std, the front end's mel band) reaches them as numbers through the pipeline config, and
the mel <-> Hz maps they warp with are their own (``pitch``), the front end's HTK scale.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from stec.augment import Augmenter, Compose
from stec_audio.augment.geometry import TimeFrequencyCrop
from stec_audio.augment.mix import NATS_PER_DB, LinearFader, Mixup
from stec_audio.augment.pitch import PitchShift
from stec_audio.augment.spectral import (
    RRC_LINEAR_RANGE,
    RRC_TRANSLATION_RANGE,
    FrequencyShift,
    RandomResizeCrop,
    SpecAugmentMask,
)
from stec_audio.augment.time import TimeCrop, TimeStretch

AUGMENTERS: dict[str, type[Augmenter]] = {
    "geometry": TimeFrequencyCrop,
    "time_crop": TimeCrop,
    "pitch": PitchShift,
    "mixup": Mixup,
    "rrc": RandomResizeCrop,
    "freq_shift": FrequencyShift,
    "time_stretch": TimeStretch,
    "fader": LinearFader,
    "spec_mask": SpecAugmentMask,
}
PIPELINE_ORDER: tuple[str, ...] = tuple(AUGMENTERS)
#: the augmenters whose actions ``geometry`` composes into its one map
COMPOSED_BY_GEOMETRY = ("time_crop", "pitch", "rrc", "freq_shift", "time_stretch")

# augment=separate: BYOL-A's recipe (mixup, random resize crop, linear fader) on
# energy-aware 0.96 s crops, one action component per augmenter. Frequency shift, time
# stretch and masks are available but off: RRC already scales and shifts both axes.
SEPARATE_AUDIO_PIPELINE: dict[str, dict[str, Any]] = {
    "geometry": {
        "enabled": False,
        "p": 1.0,
        "frames": 96,
        "span": 1.0,
        "time_scale": (1.0, 1.0),
        "max_semitones": 12.0,
        "freq_scale": (1.0, 1.0),
        "energy_weighted": True,
        "uniform_mix": 0.1,
        "interpolation": "bilinear",
    },
    "time_crop": {
        "enabled": True,
        "p": 1.0,
        "frames": 96,
        "energy_weighted": True,
        "uniform_mix": 0.1,
    },
    "pitch": {"enabled": False, "p": 1.0, "max_semitones": 4.0},
    "mixup": {
        "enabled": True,
        "p": 1.0,
        "ratio": (0.0, 0.4),
        "source": "bank",
        "n_memory": 2048,
        "stage": "view",
    },
    "rrc": {
        "enabled": True,
        "p": 1.0,
        "virtual_crop_scale": (1.0, 1.5),
        "freq_scale": (0.6, 1.5),
        "time_scale": (0.6, 1.5),
        "interpolation": "bicubic",
    },
    "freq_shift": {"enabled": False, "p": 1.0, "max_shift": 2.0},
    "time_stretch": {"enabled": False, "p": 0.5, "scale": (0.8, 1.25)},
    "fader": {"enabled": True, "p": 1.0, "max_gain": 1.0},
    "spec_mask": {
        "enabled": False,
        "p": 0.5,
        "time_masks": 1,
        "max_time_width": 20,
        "freq_masks": 1,
        "max_freq_width": 8,
    },
}

# augment=composed, the default: one composed map per view (the crop and a pitch shift of up
# to 12 semitones in one resampling) whose relative map the inverse model can read; no
# mixup (a background buries the alignment and the pitch the map is read from); the gain
# applied but not predicted (a level offset is read from the views' means, a shortcut).
COMPOSED_AUDIO_PIPELINE: dict[str, dict[str, Any]] = {
    name: {**section, "enabled": name in ("geometry", "fader")}
    for name, section in SEPARATE_AUDIO_PIPELINE.items()
}
COMPOSED_AUDIO_PIPELINE["fader"]["predict"] = False
DEFAULT_AUDIO_PIPELINE = COMPOSED_AUDIO_PIPELINE
#: the inverse model ``augment=composed`` sets with its map (``build_method`` keywords): the
#: frame sequences it reads the time shift from, its loss 0.3 reached over half the run,
#: each action training the encoder only once read (the read gate), no split of features
COMPOSED_EFFERENCE: dict[str, Any] = {
    "inverse_input": "frames",
    "lambda_manip": 0.3,
    "lambda_manip_warmup": 0.5,
    "read_gate": 0.05,
    "equivariant_dims": 0,
}


def allowed_keys(name: str) -> list[str]:
    """The keys a pipeline section may hold: ``enabled``, ``predict`` (false: augment, but
    leave the action out of the inverse model's targets) and the constructor's arguments."""
    params = inspect.signature(AUGMENTERS[name].__init__).parameters
    return ["enabled", "predict"] + [k for k in params if k != "self"]


def _plain(value: Any) -> Any:
    """Convert OmegaConf containers (and nested mappings/lists) to plain Python values."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    return value


def build_augmenter(name: str, section: Mapping[str, Any]) -> Augmenter:
    """Build one augmenter from its config section (``enabled`` is ignored here)."""
    if name not in AUGMENTERS:
        raise ValueError(f"unknown audio augmenter {name!r}; allowed: {', '.join(PIPELINE_ORDER)}")
    allowed = allowed_keys(name)
    unknown = [k for k in section if k not in allowed]
    if unknown:
        raise ValueError(
            f"augment.{name}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}"
        )
    predict = section.get("predict", True)
    if not isinstance(predict, bool):
        raise ValueError(f"augment.{name}.predict must be true or false, got {predict!r}")
    kwargs = {k: v for k, v in section.items() if k not in ("enabled", "predict")}
    try:
        augmenter = AUGMENTERS[name](**kwargs)
    except ValueError as err:
        raise ValueError(f"augment.{name}: {err}") from err
    augmenter.predict = predict
    return augmenter


def pipeline_order(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """:data:`PIPELINE_ORDER`, with mixup first when its section sets ``stage: clip``."""
    section = cfg.get("mixup")
    if isinstance(section, Mapping) and section.get("stage") == "clip":
        return ("mixup", *(name for name in PIPELINE_ORDER if name != "mixup"))
    return PIPELINE_ORDER


def build_audio_pipeline(cfg: Mapping[str, Any] | None = None) -> Compose:
    """Build the enabled augmenters, in :func:`pipeline_order`, from a config mapping.

    ``cfg`` maps augmenter names to sections of constructor arguments plus ``enabled``
    (default True when the section is present), e.g.
    ``{"time_crop": {"frames": 96, "energy_weighted": True}, "rrc": {"p": 0.8}}``.
    A section set to ``None`` or absent is disabled; ``None`` for ``cfg`` builds
    :data:`DEFAULT_AUDIO_PIPELINE` (the composed map, as ``augment=composed``;
    :data:`SEPARATE_AUDIO_PIPELINE` is ``augment=separate``). Plain dicts and OmegaConf
    mappings are accepted.
    Unknown augmenter names or keys raise a ValueError naming them and the allowed ones.
    The action space is ``build_audio_pipeline(cfg).action_space()``.
    """
    cfg = _plain(DEFAULT_AUDIO_PIPELINE if cfg is None else cfg)
    if not isinstance(cfg, Mapping):
        raise ValueError(
            f"augment: expected a mapping of augmenter sections, got {type(cfg).__name__}"
        )
    unknown = [k for k in cfg if k not in AUGMENTERS]
    if unknown:
        raise ValueError(
            f"augment: unknown augmenter(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(PIPELINE_ORDER)}"
        )
    augmenters, names = [], []
    for name in pipeline_order(cfg):
        section = cfg.get(name)
        if section is None:
            continue
        if not isinstance(section, Mapping):
            raise ValueError(f"augment.{name}: expected a mapping of options, got {section!r}")
        enabled = section.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ValueError(f"augment.{name}.enabled must be true or false, got {enabled!r}")
        augmenter = build_augmenter(name, section)  # validates keys even when disabled
        if enabled:
            augmenters.append(augmenter)
            names.append(name)
    clash = [n for n in COMPOSED_BY_GEOMETRY if "geometry" in names and n in names]
    if clash:
        raise ValueError(
            f"augment.geometry composes the time crop, time scale and pitch into one map; "
            f"disable {', '.join(f'augment.{n}' for n in clash)} (set enabled=false) or "
            "augment.geometry, or use augment=separate"
        )
    return Compose(augmenters)


__all__ = [
    "AUGMENTERS",
    "COMPOSED_BY_GEOMETRY",
    "COMPOSED_AUDIO_PIPELINE",
    "COMPOSED_EFFERENCE",
    "DEFAULT_AUDIO_PIPELINE",
    "SEPARATE_AUDIO_PIPELINE",
    "NATS_PER_DB",
    "PIPELINE_ORDER",
    "RRC_LINEAR_RANGE",
    "RRC_TRANSLATION_RANGE",
    "FrequencyShift",
    "LinearFader",
    "Mixup",
    "PitchShift",
    "RandomResizeCrop",
    "SpecAugmentMask",
    "TimeCrop",
    "TimeFrequencyCrop",
    "TimeStretch",
    "allowed_keys",
    "build_audio_pipeline",
    "build_augmenter",
    "pipeline_order",
]
