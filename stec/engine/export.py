"""Backbone-only export: ``encoder.safetensors`` plus ``encoder.json`` (its config).

This pair is what users load downstream (linear probes, HEAR, fine-tuning). The JSON holds
``{"format": "stec-encoder", "version": 1, "encoder": {"name": ..., "kwargs": {...}},
"feature_dim": ..., ...}`` plus whatever the modality adds (front end, normalisation).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

EXPORT_FORMAT = "stec-encoder"
WEIGHTS_NAME = "encoder.safetensors"
META_NAME = "encoder.json"


def export_backbone(backbone: nn.Module, out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Write the backbone's weights and ``meta`` atomically into ``out_dir``; returns it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    tmp = out / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, out / WEIGHTS_NAME)
    full_meta = {"format": EXPORT_FORMAT, "version": 1, **meta}
    tmp = out / (META_NAME + ".tmp")
    tmp.write_text(json.dumps(full_meta, indent=2, sort_keys=True))
    os.replace(tmp, out / META_NAME)
    return out


def find_export(path: str | Path) -> Path:
    """Resolve a run directory, export directory or ``.safetensors`` file to the export dir."""
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        path = path.parent
    for candidate in (path, path / "export"):
        if (candidate / WEIGHTS_NAME).is_file() and (candidate / META_NAME).is_file():
            return candidate
    raise FileNotFoundError(
        f"{path}: no exported encoder found (expected {WEIGHTS_NAME} and {META_NAME} in it or in "
        f"{path / 'export'})"
    )


def load_export(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load ``(state_dict, meta)`` of an exported backbone. Never unpickles anything."""
    folder = find_export(path)
    meta = json.loads((folder / META_NAME).read_text())
    if meta.get("format") != EXPORT_FORMAT:
        raise ValueError(
            f"{folder / META_NAME}: format is {meta.get('format')!r}, expected {EXPORT_FORMAT!r}"
        )
    return load_file(str(folder / WEIGHTS_NAME)), meta
