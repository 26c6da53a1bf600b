"""Vision backbones: torchvision ResNet-18/50 (ImageNet or CIFAR stem) and a small CNN.

ResNet stems: the ImageNet stem is a 7x7 stride-2 convolution and a 3x3 stride-2 max-pool;
``cifar_stem=True`` makes it a 3x3 stride-1 convolution without max-pool (32 px inputs);
``maxpool=False`` drops the max-pool of the ImageNet stem (the official S-TEC STL-10
network at 96 px).

Every backbone maps ``[B, 3, H, W]`` float images to ``[B, feature_dim]`` pooled features
(the classifier head is removed). :func:`feature_map` gives the spatial map before the
global pooling, ``[B, feature_dim, h, w]`` (the pooled features are its spatial mean), and
:class:`FeatureMap` wraps a backbone as a module that returns it; neither changes the
backbone or its weights. :func:`encoder_meta` gives the ``encoder`` entry that
:func:`stec.engine.export.export_backbone` stores, and :func:`load_vision_encoder` rebuilds
an exported backbone from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import ResNet, resnet18, resnet50

from stec.engine.export import load_exported_encoder

ENCODERS = ("resnet18", "resnet50", "small")
#: Up to this image side the ResNets take the CIFAR stem unless told otherwise: the ImageNet
#: stem divides the side by 4 before the first block, leaving 64 px images a 2x2 last map.
CIFAR_STEM_MAX_SIZE = 64


def cifar_stem_for(size: int) -> bool:
    """The stem for images of ``size`` px: the CIFAR stem up to :data:`CIFAR_STEM_MAX_SIZE`."""
    return int(size) <= CIFAR_STEM_MAX_SIZE


class SmallCNN(nn.Module):
    """Four Conv3x3-BN-ReLU blocks (the last three with stride 2) + global average pool.

    ``[B, 3, H, W]`` -> ``[B, width * 4]``. About 0.3 M parameters at ``width=32``: meant for
    tests and CPU demos.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        chans = [3, width, width * 2, width * 4, width * 4]
        layers: list[nn.Module] = []
        for i in range(4):
            stride = 1 if i == 0 else 2
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.feature_dim = chans[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).mean(dim=(2, 3))


def feature_map(backbone: nn.Module, x: Tensor) -> Tensor:
    """The backbone's spatial features before global pooling: ``[B, 3, H, W]`` ->
    ``[B, feature_dim, h, w]``, whose mean over ``(h, w)`` is ``backbone(x)``.

    ``h, w`` are ``H, W`` divided by the network's stride: 8 for ``small``, 32 for the
    ResNets with the ImageNet stem (16 without max-pool), 8 with the CIFAR stem.
    """
    _check_has_map(backbone)
    if isinstance(backbone, SmallCNN):
        return backbone.features(x)
    m = backbone
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    return m.layer4(m.layer3(m.layer2(m.layer1(x))))


def _check_has_map(backbone: nn.Module) -> None:
    if not isinstance(backbone, SmallCNN | ResNet):
        raise TypeError(
            f"no spatial feature map for {type(backbone).__name__}; vision encoders with one: "
            f"{', '.join(ENCODERS)}"
        )


class FeatureMap(nn.Module):
    """A vision backbone as a module returning its spatial feature map (:func:`feature_map`).

    The backbone is held as a submodule, so moving this module moves the backbone.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        _check_has_map(backbone)
        self.backbone = backbone

    def forward(self, x: Tensor) -> Tensor:
        return feature_map(self.backbone, x)


def _resnet(name: str, cifar_stem: bool, maxpool: bool | None) -> tuple[nn.Module, int]:
    model = {"resnet18": resnet18, "resnet50": resnet50}[name](weights=None)
    if cifar_stem:
        # small images: a 3x3 stride-1 stem and no max-pool keep 32 px inputs at 4x4 at the end
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    if not (maxpool if maxpool is not None else not cifar_stem):
        model.maxpool = nn.Identity()
    dim = model.fc.in_features
    model.fc = nn.Identity()
    return model, dim


def build_vision_encoder(
    name: str, cifar_stem: bool = False, width: int = 32, maxpool: bool | None = None
) -> tuple[nn.Module, int]:
    """``(backbone, feature_dim)`` for ``resnet18`` (512) | ``resnet50`` (2048) | ``small``.

    ``cifar_stem`` and ``maxpool`` (None: the stem's own, see the module doc) apply to the
    ResNets; ``width`` to ``small`` (feature_dim ``4 * width``). Weights are randomly
    initialised (nothing is downloaded).
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown vision encoder {name!r}; allowed values: {', '.join(ENCODERS)}")
    if name == "small":
        model = SmallCNN(width)
        return model, model.feature_dim
    return _resnet(name, cifar_stem, maxpool)


def encoder_meta(
    name: str, cifar_stem: bool = False, width: int = 32, maxpool: bool | None = None
) -> dict[str, Any]:
    """The export ``encoder`` entry: ``{"name": ..., "kwargs": {...}}``."""
    kwargs: dict[str, Any] = {"cifar_stem": bool(cifar_stem)}
    if maxpool is not None:
        kwargs["maxpool"] = bool(maxpool)
    if name == "small":
        kwargs = {"width": int(width)}
    return {"name": name, "kwargs": kwargs}


def load_vision_encoder(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported vision backbone: ``(module in eval mode, meta)``.

    ``path`` is a run folder, an export folder or its ``encoder.safetensors``.
    """

    def build(name: str, kwargs: dict[str, Any]) -> nn.Module:
        if name not in ENCODERS:
            raise ValueError(
                f"exported encoder {name!r} is not a vision encoder; allowed values: {', '.join(ENCODERS)}"
            )
        return build_vision_encoder(name, **kwargs)[0]

    model, meta = load_exported_encoder(path, build)
    return model.to(map_location).eval(), meta
