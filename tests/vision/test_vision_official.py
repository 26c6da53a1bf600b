"""The data=cifar10|cifar100|stl10|imagenet presets hold the official S-TEC recipe.

The table is the official code's (train.py defaults and its README commands): SimCLR +
inverse model on the crop's affine, LARS for the weights and plain SGD for biases and
batch-norm parameters. Each preset is composed through the CLI's config, built into a
method and an optimiser, and checked value by value.
"""

import pytest
import torch
from torch import nn

from stec.cli import build_method_from_config, compose_config, trainer_config
from stec.engine.optim import LARS, build_optimizer
from stec_vision.augment import (
    ColorJitter,
    GaussianBlur,
    RandomGrayscale,
    Solarize,
    build_two_views,
)
from stec_vision.cli import encoder_from_config

# The official loss is a mean over the 6 entries of the crop's 2x3 matrix, 2 of which are
# always 0 for crops and flips; ours averages over the 4 informative entries, so the same
# weight per informative entry is lambda_official * 4/6.
INFORMATIVE_SHARE = 4 / 6

OFFICIAL = {
    "cifar10": dict(
        encoder="resnet18", stem=(3, 1), maxpool=False, temperature=0.5, lr=4.0,
        lambda_manip=1.0, proj=(512, 64), batch=1024, epochs=1000, n_train=50_000,
        size=32, jitter=0.5, blur_p=None, solarize_p=None,
    ),
    "cifar100": dict(
        encoder="resnet18", stem=(3, 1), maxpool=False, temperature=0.5, lr=4.0,
        lambda_manip=1.0, proj=(512, 64), batch=1024, epochs=1000, n_train=50_000,
        size=32, jitter=0.5, blur_p=None, solarize_p=None,
    ),
    "stl10": dict(
        encoder="resnet18", stem=(7, 2), maxpool=False, temperature=0.2, lr=1.2,
        lambda_manip=0.3, proj=(512, 128), batch=1024, epochs=1000, n_train=105_000,
        size=96, jitter=1.0, blur_p=0.5, solarize_p=0.2,
    ),
    "imagenet": dict(
        encoder="resnet50", stem=(7, 2), maxpool=True, temperature=0.1, lr=1.97,
        lambda_manip=0.6, proj=(2048, 128), batch=1680, epochs=100, n_train=1_281_167,
        size=224, jitter=1.0, blur_p=0.5, solarize_p=0.2,
    ),
}  # fmt: skip
COMMON = dict(
    trust_coefficient=0.001, momentum=0.9, weight_decay=1e-6, lambda_switch=2.0, warmup_epochs=10
)


def _compose(data: str, *more: str):
    return compose_config("vision", [f"data={data}", "data.root=/nowhere", *more])


@pytest.mark.parametrize("data", sorted(OFFICIAL))
def test_preset_config_is_the_official_recipe(data):
    want, cfg = OFFICIAL[data], _compose(data)
    t, m, e = trainer_config(cfg), cfg.method, cfg.efference
    assert (m.name, e.mode, e.inverse_input, e.inverse_hidden) == (
        "simclr", "inverse", "backbone", 512
    )  # fmt: skip
    assert (cfg.encoder.name, m.temperature, m.proj_hidden, m.proj_dim) == (
        want["encoder"], want["temperature"], *want["proj"]
    )  # fmt: skip
    assert (t.optimizer, t.lr, t.batch_size, t.epochs) == (
        "lars", want["lr"], want["batch"], want["epochs"]
    )  # fmt: skip
    assert (t.trust_coefficient, t.momentum, t.weight_decay, m.lambda_switch) == (
        COMMON["trust_coefficient"], COMMON["momentum"], COMMON["weight_decay"],
        COMMON["lambda_switch"],
    )  # fmt: skip
    assert t.warmup_steps == COMMON["warmup_epochs"] * (want["n_train"] // want["batch"])
    assert list(e.components) == ["crop"]
    assert e.lambda_manip == pytest.approx(want["lambda_manip"] * INFORMATIVE_SHARE, rel=1e-9)
    assert t.sync_batchnorm  # the official runs use synchronised batch norm on several GPUs


@pytest.mark.parametrize("data", sorted(OFFICIAL))
def test_preset_builds_the_official_network_and_optimiser(data):
    want, cfg = OFFICIAL[data], _compose(data)
    torch.manual_seed(0)
    encoder, dim = encoder_from_config(cfg)
    kernel, stride = want["stem"]
    assert encoder.conv1.kernel_size == (kernel, kernel) and encoder.conv1.stride == (stride,) * 2
    assert isinstance(encoder.maxpool, nn.MaxPool2d) == want["maxpool"]
    views = build_two_views(cfg.data.preset, want["size"], canvas=cfg.data.canvas > 0)
    method = build_method_from_config(cfg, encoder, dim, views.action_space())
    linears = [layer for layer in method.projector if isinstance(layer, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [
        (dim, want["proj"][0]),
        want["proj"],
    ]
    assert method.action_space.names == ["crop"]
    assert method.lambda_switch == 2.0
    assert method.lambda_manip == pytest.approx(want["lambda_manip"] * INFORMATIVE_SHARE)
    crop = views.pipeline.augmenters[0].component
    n_bins = method.inverse.class_mask.shape[1]
    assert method.inverse.net[-1].out_features == crop.n_targets * n_bins and n_bins == 6
    t = trainer_config(cfg)
    opt = build_optimizer(
        method, t.optimizer, t.lr, t.weight_decay, t.momentum, t.trust_coefficient
    )
    assert isinstance(opt, LARS)
    weights, plain = opt.param_groups
    assert (weights["trust_coefficient"], weights["weight_decay"]) == (0.001, 1e-6)
    assert plain["lars_exclude"] and plain["weight_decay"] == 0.0
    bn_params = {id(p) for mod in method.modules() if isinstance(mod, nn.BatchNorm2d)
                 for p in mod.parameters()}  # fmt: skip
    assert bn_params and bn_params <= {id(p) for p in plain["params"]}


@pytest.mark.parametrize("data", sorted(OFFICIAL))
def test_preset_augmentations_are_the_official_views(data):
    want, cfg = OFFICIAL[data], _compose(data)
    views = build_two_views(cfg.data.preset, want["size"], canvas=cfg.data.canvas > 0)
    assert type(views).__name__ == "TwoViews"  # the same distribution for both views
    ops = {type(op): op for op in views.pipeline.augmenters}
    crop = views.pipeline.augmenters[0]
    assert (crop.scale, crop.ratio, crop.flip_p) == ((0.08, 1.0), (3 / 4, 4 / 3), 0.5)
    assert crop.canvas == (data == "imagenet")
    jitter, s = ops[ColorJitter], want["jitter"]
    assert jitter.p == 0.8 and ops[RandomGrayscale].p == 0.2
    expected = {op: (1 - 0.8 * s, 1 + 0.8 * s) for op in ("brightness", "contrast", "saturation")}
    expected["hue"] = (-0.2 * s, 0.2 * s)
    for op, (low, high) in expected.items():
        assert jitter.ranges[op] == (pytest.approx(low), pytest.approx(high)), op
    if want["blur_p"] is None:
        assert GaussianBlur not in ops and Solarize not in ops
        return
    blur, solarize = ops[GaussianBlur], ops[Solarize]
    scale = want["size"] / 224  # the official sigma range is (0.1, 2.0) at 224 px
    assert blur.p == want["blur_p"] and blur.sigma == pytest.approx((0.1 * scale, 2.0 * scale))
    assert blur.kernel_for(want["size"], want["size"]) == {96: 9, 224: 23}[want["size"]]
    assert solarize.p == want["solarize_p"] and solarize.mask_noninvertible


def test_other_encoders_keep_the_dataset_stem():
    cfg = _compose("cifar10", "encoder=resnet50", "method.proj_hidden=1024")
    encoder, dim = encoder_from_config(cfg)
    assert dim == 2048 and encoder.conv1.kernel_size == (3, 3)
    assert not isinstance(encoder.maxpool, nn.MaxPool2d)
    assert _compose("stl10", "encoder=small").encoder.name == "small"


def test_non_preset_runs_keep_their_own_defaults():
    cfg = compose_config("vision", [])
    assert (cfg.method.lambda_switch, cfg.efference.components, cfg.trainer.optimizer) == (
        1.0, None, "adamw"
    )  # fmt: skip
    assert cfg.trainer.trust_coefficient == 0.001
