"""``stec-vision export format=torchvision``: a ResNet backbone as a torchvision state dict.

Our ResNets are torchvision's ``resnet18`` / ``resnet50`` without ``fc``, so the exported
names and shapes are torchvision's (``conv1``, ``bn1``, ``layer1`` .. ``layer4``). The file
loads, with plain torchvision and no stec installed, into

- ``torchvision.models.resnet18(weights=None)`` after ``model.fc = nn.Identity()`` (or
  with ``strict=False``, leaving ``fc`` as initialised);
- the ``body`` of a detection backbone: ``resnet_fpn_backbone("resnet18", weights=None)``
  or ``fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).backbone``, with
  ``nn.BatchNorm2d`` or ``FrozenBatchNorm2d``.

Where the stem differs from torchvision's, the same edits must be made before loading
(the sidecar JSON lists them under ``changes``):

- ``encoder.cifar_stem=true``: ``conv1`` is 3x3, stride 1, padding 1 (``[64, 3, 3, 3]``
  instead of ``[64, 3, 7, 7]``) and there is no max-pool:
  ``conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)`` and ``maxpool = nn.Identity()``;
- ``encoder.maxpool=false`` (the official STL-10 network): torchvision's shapes, no
  max-pool: ``maxpool = nn.Identity()``. Without it the weights load but compute another
  function (features at half the resolution).

The sidecar ``<out>.json`` also gives the input normalisation the encoder was trained with
(``image_mean``, ``image_std``: set them as a detector's ``image_mean`` / ``image_std``)
and the training image size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models

from stec.engine.export import find_export, fit_state_dict, write_safetensors
from stec.errors import ConfigError, ExportError
from stec_vision.augment_presets import NORMALIZATION
from stec_vision.encoders import load_vision_encoder

SIDECAR_FORMAT = "stec-torchvision-resnet"
RESNETS = ("resnet18", "resnet50")
SUFFIXES = (".pth", ".pt", ".safetensors")


def stem_changes(kwargs: dict[str, Any]) -> list[str]:
    """The edits a torchvision ResNet needs to match an encoder built with ``kwargs``
    (``cifar_stem``, ``maxpool``), as Python statements on the model."""
    cifar = bool(kwargs.get("cifar_stem", False))
    maxpool = kwargs.get("maxpool")
    changes = []
    if cifar:
        changes.append("conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)")
    if not (maxpool if maxpool is not None else not cifar):
        changes.append("maxpool = nn.Identity()")
    return changes


def torchvision_resnet(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """torchvision's ``name`` (random weights) with :func:`stem_changes` applied and ``fc``
    removed: the module our exported state dict loads into strictly."""
    model = getattr(models, name)(weights=None)
    if kwargs.get("cifar_stem"):
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    if "maxpool = nn.Identity()" in stem_changes(kwargs):
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


def _save(state: dict[str, torch.Tensor], out: Path) -> None:
    if out.suffix == ".safetensors":
        write_safetensors(state, out)
        return
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, out)


def export_torchvision(checkpoint: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """Write the ResNet of ``checkpoint`` (a run or export folder) as a torchvision state
    dict (``.pth``/``.pt`` via ``torch.save``, or ``.safetensors``) and its sidecar
    ``<out>.json``. ``out`` defaults to ``<export folder>/torchvision_<arch>.pth``.

    Returns ``(weights path, sidecar path)``.
    """
    folder = find_export(checkpoint)
    encoder, meta = load_vision_encoder(folder)
    name, kwargs = meta["encoder"]["name"], meta["encoder"]["kwargs"]
    if name not in RESNETS:
        raise ExportError(
            f"{checkpoint}: format=torchvision needs a ResNet, but the exported encoder is "
            f"{name!r}; allowed encoders: {', '.join(RESNETS)}"
        )
    out = Path(out) if out else folder / f"torchvision_{name}.pth"
    if out.suffix not in SUFFIXES:
        raise ConfigError(f"out={str(out)!r}: use a file name ending in {', '.join(SUFFIXES)}")
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    # the names and shapes must be torchvision's: checked against torchvision's own model
    fit_state_dict(torchvision_resnet(name, kwargs), state, str(checkpoint), f"torchvision {name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    _save(state, out)
    normalize = meta.get("normalize") or "none"
    mean, std = NORMALIZATION.get(normalize, ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
    changes = stem_changes(kwargs)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "weights": out.name,
        "arch": name,
        "builder": f"torchvision.models.{name}(weights=None)",
        "same_as_torchvision": not changes,
        "changes": changes,
        "without": ["fc.weight", "fc.bias"],
        "cifar_stem": bool(kwargs.get("cifar_stem", False)),
        "maxpool": "maxpool = nn.Identity()" not in changes,
        "feature_dim": meta.get("feature_dim"),
        "image_size": meta.get("image_size"),
        "normalize": normalize,
        "image_mean": list(mean),
        "image_std": list(std),
        "source": str(folder),
    }
    side = out.with_suffix(".json")
    tmp = side.with_name(f".{side.name}.tmp")
    tmp.write_text(json.dumps(sidecar, indent=2) + "\n")
    os.replace(tmp, side)
    return out, side
