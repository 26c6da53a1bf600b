"""The torchvision export: torchvision's own detection models load our ResNet weights, give
our features, and train (forward and backward) on a generated image with boxes."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torchvision.models import resnet18
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from stec.engine.export import export_backbone
from stec.errors import ExportError
from stec_vision.encoders import build_vision_encoder, encoder_meta, feature_map
from stec_vision.torchvision_export import export_torchvision, stem_changes


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trained_like_export(folder, name, normalize="cifar10", **kwargs):
    """An exported encoder whose batch-norm statistics and weights are not torchvision's
    initial values, so that a loaded copy can only match by holding our numbers."""
    torch.manual_seed(0)
    encoder, dim = build_vision_encoder(name, **kwargs)
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    meta = {
        "modality": "vision",
        "encoder": encoder_meta(name, **kwargs),
        "feature_dim": dim,
        "image_size": 32,
        "normalize": normalize,
    }
    export_backbone(encoder, folder, meta)
    return encoder.eval()


def apply_changes(module, sidecar):
    """Run the sidecar's stem edits, as written, on a torchvision ResNet or FPN body."""
    for change in sidecar["changes"]:
        exec(f"module.{change}", {"nn": nn, "module": module})


def assert_holds_our_weights(body, encoder):
    ours = encoder.state_dict()
    theirs = body.state_dict()
    for key, value in ours.items():
        if key.endswith("num_batches_tracked"):
            continue  # FrozenBatchNorm2d has no counter
        assert torch.equal(theirs[key], value), key


def image_with_boxes():
    torch.manual_seed(1)
    image = torch.rand(3, 64, 64)
    image[:, 10:30, 12:40] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
    target = {"boxes": torch.tensor([[12.0, 10.0, 40.0, 30.0]]), "labels": torch.tensor([1])}
    return [image], [target]


def train_step(model):
    model.train()
    images, targets = image_with_boxes()
    losses = model(images, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grad = model.backbone.body.layer1[0].conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_resnet18_export_is_an_fpn_detector_backbone(tmp_path):
    encoder = trained_like_export(tmp_path / "run" / "export", "resnet18", normalize="imagenet")
    weights, side = export_torchvision(tmp_path / "run", tmp_path / "tv" / "r18.pth")
    sidecar = json.loads(side.read_text())
    assert sidecar["arch"] == "resnet18" and sidecar["same_as_torchvision"] is True
    assert sidecar["image_mean"] == [0.485, 0.456, 0.406] and sidecar["weights"] == "r18.pth"
    state = torch.load(weights, weights_only=True)
    assert not any(k.startswith("fc.") for k in state)

    backbone = resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=5
    )
    backbone.body.load_state_dict(state)  # strict: every name and shape is torchvision's
    assert_holds_our_weights(backbone.body, encoder)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone.body(x)["3"], feature_map(encoder, x))
    model = FasterRCNN(
        backbone,
        num_classes=2,
        min_size=64,
        max_size=64,
        image_mean=sidecar["image_mean"],
        image_std=sidecar["image_std"],
    )
    train_step(model)


def test_resnet50_export_loads_into_fasterrcnn_resnet50_fpn(tmp_path):
    encoder = trained_like_export(tmp_path / "export", "resnet50")
    weights, side = export_torchvision(tmp_path / "export")
    assert weights == tmp_path / "export" / "torchvision_resnet50.pth"
    sidecar = json.loads(side.read_text())
    assert sidecar["image_std"] == [0.2470, 0.2435, 0.2616]  # cifar10 statistics
    model = fasterrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=2,
        min_size=64,
        max_size=64,
        image_mean=sidecar["image_mean"],
        image_std=sidecar["image_std"],
    )
    model.backbone.body.load_state_dict(torch.load(weights, weights_only=True))
    assert_holds_our_weights(model.backbone.body, encoder)
    train_step(model)


@pytest.mark.parametrize(
    "kwargs, changes",
    [
        (
            {"cifar_stem": True},
            [
                "conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)",
                "maxpool = nn.Identity()",
            ],
        ),
        ({"cifar_stem": False, "maxpool": False}, ["maxpool = nn.Identity()"]),
    ],
)
def test_other_stems_need_the_listed_edits_and_then_compute_our_features(tmp_path, kwargs, changes):
    encoder = trained_like_export(tmp_path / "export", "resnet18", **kwargs)
    weights, side = export_torchvision(tmp_path / "export", tmp_path / "r18.safetensors")
    sidecar = json.loads(side.read_text())
    assert sidecar["changes"] == changes == stem_changes(kwargs)
    assert sidecar["same_as_torchvision"] is False
    state = load_file(str(weights))
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    x = torch.rand(1, 3, 32, 32)
    if kwargs["cifar_stem"]:  # without the edit the 3x3 stem does not even load
        with pytest.raises(RuntimeError, match="conv1.weight"):
            backbone.body.load_state_dict(state)
    else:  # it loads, but the max-pool halves the resolution: another function
        backbone.body.load_state_dict(state)
        assert backbone.body.eval()(x)["3"].shape[-1] != feature_map(encoder, x).shape[-1]
    apply_changes(backbone.body, sidecar)
    backbone.body.load_state_dict(state)
    assert_holds_our_weights(backbone.body, encoder)
    with torch.no_grad():
        torch.testing.assert_close(backbone.body.eval()(x)["3"], feature_map(encoder, x))


def test_only_resnets_export_to_torchvision(tmp_path):
    encoder, dim = build_vision_encoder("small", width=8)
    export_backbone(encoder, tmp_path, {"encoder": encoder_meta("small", width=8)})
    with pytest.raises(
        ExportError, match="encoder is 'small'; allowed encoders: resnet18, resnet50"
    ):
        export_torchvision(tmp_path)
    trained_like_export(tmp_path / "r", "resnet18")
    with pytest.raises(ValueError, match=r"\.pth, \.pt, \.safetensors"):
        export_torchvision(tmp_path / "r", tmp_path / "x.bin")


def test_the_sidecar_edits_make_torchvision_classifiers_match_too(tmp_path):
    encoder = trained_like_export(tmp_path, "resnet18", cifar_stem=True)
    weights, side = export_torchvision(tmp_path)
    model = resnet18(weights=None)
    apply_changes(model, json.loads(side.read_text()))
    model.fc = nn.Identity()
    model.load_state_dict(torch.load(weights, weights_only=True))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), encoder(x))
    assert isinstance(model.maxpool, nn.Identity)
