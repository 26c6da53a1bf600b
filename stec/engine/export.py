"""Backbone-only export: ``encoder.safetensors`` plus ``encoder.json`` (its config).

This pair is what users load downstream (linear probes, HEAR, fine-tuning). The JSON holds
``{"format": "stec-encoder", "version": 1, "encoder": {"name": ..., "kwargs": {...}},
"feature_dim": ..., ...}`` plus whatever the modality adds (front end, normalisation).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from stec.engine.checkpoint import RUN_CHECKPOINT
from stec.errors import ExportError
from stec.files import written_whole

EXPORT_FORMAT = "stec-encoder"
EXPORT_VERSION = 1
WEIGHTS_NAME = "encoder.safetensors"
META_NAME = "encoder.json"


def export_backbone(backbone: nn.Module, out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Write the backbone's weights and ``meta`` atomically into ``out_dir``; returns it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    write_safetensors(state, out / WEIGHTS_NAME)
    full_meta = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, **meta}
    with written_whole(out / META_NAME) as tmp:
        tmp.write_text(json.dumps(full_meta, indent=2, sort_keys=True))
    return out


def write_safetensors(state: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write ``state`` as safetensors atomically, with the permissions the umask gives
    every other output (``safetensors.save_file`` would make the file private, 0600)."""
    path = Path(path)
    with written_whole(path) as tmp:
        tmp.write_bytes(save(state))
    return path


def find_export(path: str | Path) -> Path:
    """Resolve a run directory, export directory or ``.safetensors`` file to the export dir."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    for candidate in (path, path / "export"):
        if (candidate / WEIGHTS_NAME).is_file() and (candidate / META_NAME).is_file():
            return candidate
    if (path / RUN_CHECKPOINT).is_file():  # a run stopped before its end
        raise FileNotFoundError(
            f"{path} holds a training checkpoint but no export yet (the run stopped before "
            f"its end): finish it with `pretrain run_dir={path} trainer.resume=auto`, which "
            "exports the encoder when it ends"
        )
    raise FileNotFoundError(
        f"{path}: no exported encoder found (expected {WEIGHTS_NAME} and {META_NAME} in it or in "
        f"{path / 'export'})"
    )


LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def check_weights_file(path: str | Path, name: str) -> None:
    """Refuse, naming it as ``name``, a weights file that is empty or a Git LFS pointer
    (the small text file a clone without git-lfs holds in place of the weights)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(LFS_POINTER))
    except OSError:
        return  # reading it reports what is wrong
    if not head:
        raise ExportError(f"{name}: the file is empty")
    if head == LFS_POINTER:
        raise ExportError(
            f"{name}: a Git LFS pointer, not the weights; fetch the file itself (git lfs pull)"
        )


def load_export(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load ``(state_dict, meta)`` of an exported backbone. Never unpickles anything.

    The meta is checked (JSON object, format, version, an ``encoder`` entry
    ``{"name": str, "kwargs": {...}}``, with ``kwargs`` filled in as ``{}`` when absent);
    a malformed file raises :class:`ExportError` naming it and the problem.
    """
    folder = find_export(path)
    meta = _read_meta(folder / META_NAME)
    check_weights_file(folder / WEIGHTS_NAME, str(folder / WEIGHTS_NAME))
    try:
        state = load_file(str(folder / WEIGHTS_NAME))
    except (SafetensorError, OSError) as err:
        raise ExportError(f"{folder / WEIGHTS_NAME}: cannot read the weights ({err})") from err
    return state, meta


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ExportError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ExportError(f"{path}: cannot read it ({err})") from err
    if not isinstance(meta, dict):
        raise ExportError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path}: format is {meta.get('format')!r}, expected {EXPORT_FORMAT!r}")
    if meta.get("version") != EXPORT_VERSION:
        raise ExportError(
            f"{path}: version {meta.get('version')!r} is not supported (expected {EXPORT_VERSION})"
        )
    spec = meta.get("encoder")
    kwargs = spec.get("kwargs") if isinstance(spec, dict) else None
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("name"), str)
        or not isinstance(kwargs, dict | None)
    ):
        raise ExportError(
            f'{path}: "encoder" must be {{"name": str, "kwargs": {{...}}}}, got {spec!r}'
        )
    meta["encoder"] = {**spec, "kwargs": kwargs or {}}
    return meta


def fit_state_dict(
    module: nn.Module, state: dict[str, torch.Tensor], source: str, what: str = "the module"
) -> None:
    """Load ``state`` into ``module`` (strict), or raise :class:`ExportError` naming
    ``source`` (the weights file), ``what`` the module is, and the missing, unexpected and
    mis-shaped keys."""
    expected = module.state_dict()
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)} (needs {tuple(expected[k].shape)})"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            more = f", ... ({len(keys)} in all)" if len(keys) > 3 else ""
            problems.append(f"{label} {', '.join(keys[:3])}{more}")
    if problems:
        raise ExportError(f"{source}: the weights do not match {what}: {'; '.join(problems)}")
    module.load_state_dict(state, strict=True)


def load_exported_encoder(
    path: str | Path, build: Callable[[str, dict[str, Any]], nn.Module]
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported backbone: ``build(name, kwargs)`` makes the module that the
    export's ``encoder`` entry describes, then its weights are loaded with
    :func:`fit_state_dict`. Returns ``(module, meta)``; every problem is an
    :class:`ExportError` naming the file."""
    folder = find_export(path)
    state, meta = load_export(folder)
    name, kwargs = meta["encoder"]["name"], meta["encoder"]["kwargs"]
    try:
        module = build(name, dict(kwargs))
    except (ValueError, TypeError) as err:
        raise ExportError(f"{folder / META_NAME}: {err}") from err
    fit_state_dict(module, state, str(folder / WEIGHTS_NAME), f"encoder {name!r} {kwargs}")
    return module, meta
