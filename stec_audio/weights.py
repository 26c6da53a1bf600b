"""Audio encoder weights from files: stec exports and BYOL-A's published ``.pth`` files.

- :func:`read_audio_export` rebuilds an export written by ``stec-audio pretrain`` (see
  :func:`stec_audio.hear.audio_export_meta`): the encoder, its front end and its
  normalisation statistics, each checked, every problem an
  :class:`~stec.errors.ExportError` naming the file.
- :func:`load_initial_weights` (``encoder.init=PATH``) loads a state dict into a freshly
  built encoder, e.g. BYOL-A's published ``AudioNTT2020-BYOLA-64x96d2048.pth``.

BYOL-A's files hold a plain ``AudioNTT2020`` state dict (``features.0.weight``, ...,
``fc.0.*``, ``fc.3.*``; our :class:`~stec_audio.encoders.AudioNTT2020` has the same
layout). Checkpoints of its training code may wrap it in ``{"state_dict": ...}`` and put
a prefix before the keys (``model.``, ``net.``); like BYOL-A's own loader, we cut every key
at its first segment naming one of the encoder's top-level modules (``features``/``fc``)
and ignore keys naming none (projector heads). Files are read with
``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary
pickled objects. Our own ``encoder.safetensors`` works too.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from stec.engine.export import (
    META_NAME,
    check_weights_file,
    find_export,
    fit_state_dict,
    load_exported_encoder,
)
from stec.errors import ExportError
from stec_audio.data.frontend import FrontEndConfig, NormStats
from stec_audio.encoders import build_encoder


@dataclass
class AudioExport:
    """An exported audio encoder (in eval mode) with what it was trained on; ``frontend`` and
    ``norm`` are None when the export does not record them."""

    encoder: nn.Module
    frontend: FrontEndConfig | None
    norm: NormStats | None
    meta: dict[str, Any]


def read_audio_export(path: str | Path) -> AudioExport:
    """Load a run directory, export directory or ``encoder.safetensors`` of an audio export."""
    folder = find_export(path)
    encoder, meta = load_exported_encoder(
        folder, lambda name, kwargs: build_encoder(name, **kwargs)
    )
    where = folder / META_NAME
    frontend = _frontend(meta.get("frontend"), where)
    if frontend is not None and getattr(encoder, "n_mels", frontend.n_mels) != frontend.n_mels:
        raise ExportError(
            f"{where}: the encoder takes {encoder.n_mels} mel bins but the front end makes "
            f"{frontend.n_mels}"
        )
    return AudioExport(encoder.eval(), frontend, _norm(meta.get("norm"), where), meta)


def _frontend(front: Any, where: Path) -> FrontEndConfig | None:
    if front is None:
        return None
    fields = sorted(f.name for f in dataclasses.fields(FrontEndConfig))
    if not isinstance(front, dict):
        raise ExportError(f"{where}: frontend must be an object with keys {fields}, got {front!r}")
    unknown = sorted(set(front) - set(fields))
    if unknown:
        raise ExportError(f"{where}: unknown frontend key(s) {unknown}; allowed: {fields}")
    bad = {k: v for k, v in front.items() if not (_number(v) and v >= 0)}
    if bad:
        raise ExportError(f"{where}: frontend values must be numbers >= 0, got {bad}")
    return FrontEndConfig(**front)


def _norm(norm: Any, where: Path) -> NormStats | None:
    if norm is None:
        return None
    try:
        stats = NormStats(float(norm["mean"]), float(norm["std"]))
    except (KeyError, TypeError, ValueError):
        stats = None
    if (
        stats is None
        or not (math.isfinite(stats.mean) and math.isfinite(stats.std))
        or not stats.std > 0
    ):
        raise ExportError(
            f'{where}: "norm" must be {{"mean": float, "std": positive float}}, got {norm!r}'
        )
    return stats


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def load_initial_weights(encoder: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` (a ``.pth``/``.pt`` state dict, or a ``.safetensors`` file) into
    ``encoder``; returns it. Raises :class:`ExportError` naming the file when it cannot be
    read or its weights do not match the encoder (with the fix for a wrong ``d``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"encoder.init={str(path)!r}: file not found")
    state = _read_state(path)
    children = sorted(name for name, _ in encoder.named_children())
    weights = _strip_prefixes(state, children, path)
    what = f"encoder {getattr(encoder, 'name', type(encoder).__name__)!r}"
    kwargs = getattr(encoder, "kwargs", None)
    if kwargs:
        what += f" {kwargs}"
    hint = _width_hint(encoder, weights)
    try:
        fit_state_dict(encoder, weights, f"encoder.init={path}", what)
    except ExportError as err:
        raise ExportError(f"{err}{hint}") from None
    return encoder


def _read_state(path: Path) -> dict[str, Any]:
    check_weights_file(path, f"encoder.init={path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ExportError(f"encoder.init={path}: cannot read it ({err})") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only admits tensors and plain containers only
        raise ExportError(
            f"encoder.init={path}: torch.load(weights_only=True) refused it "
            f"({_refusal(str(err))}); the file must hold a state dict of tensors"
        ) from err
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ExportError(f"encoder.init={path}: cannot read it as a torch file ({first})") from err
    for wrapper in ("state_dict", "model"):  # checkpoints of BYOL-A's training code
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ExportError(f"encoder.init={path}: expected a state dict (names -> tensors)")
    return state


def _refusal(message: str) -> str:
    """The reason in torch's long ``weights_only`` refusal (what it could not unpickle)."""
    detail = message.rpartition("WeightsUnpickler error:")[2]
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    return lines[0].split(" Please use")[0] if lines else "not a plain state dict"


def _strip_prefixes(
    state: dict[str, torch.Tensor], children: list[str], path: Path
) -> dict[str, torch.Tensor]:
    """Keys cut at their first segment naming a top-level module; others are dropped."""
    pattern = re.compile(rf"(?:^|\.)((?:{'|'.join(map(re.escape, children))})\..*)$")
    weights: dict[str, torch.Tensor] = {}
    prefixes: set[str] = set()
    for key, value in state.items():
        match = pattern.search(key)
        if match is None:
            continue
        weights[match.group(1)] = value
        prefixes.add(key[: match.start(1)])
    if len(prefixes) > 1:
        raise ExportError(
            f"encoder.init={path}: holds several encoders (key prefixes {sorted(prefixes)}); "
            "save the state dict of one of them"
        )
    if not weights:
        raise ExportError(
            f"encoder.init={path}: no key names the encoder's modules {children} "
            f"(first keys: {list(state)[:3]})"
        )
    return weights


def _width_hint(encoder: nn.Module, weights: dict[str, torch.Tensor]) -> str:
    """``; the file has d=2048: set encoder.kwargs.d=2048`` when the file's ``d`` differs."""
    d = getattr(encoder, "feature_dim", None)
    last = weights.get("fc.3.weight")
    if getattr(encoder, "name", None) != "audiontt" or last is None or last.shape[0] == d:
        return ""
    return f"; the file has d={last.shape[0]}: set encoder.kwargs.d={last.shape[0]}"
