"""Demo images (deterministic, cached, ImageFolder layout) and the vision encoders."""

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from stec.compose import compose_config
from stec.engine.export import export_backbone
from stec_vision.cli import encoder_from_config, encoder_settings
from stec_vision.datasets import build_vision_dataset
from stec_vision.demo import DEMO_CLASSES, ensure_demo_images, render_demo_image
from stec_vision.encoders import build_vision_encoder, encoder_meta, load_vision_encoder


def _pixels(root):
    return {
        str(p.relative_to(root)): np.asarray(Image.open(p))
        for split in ("train", "test")
        for p in sorted((root / split).rglob("*.png"))
    }


def test_demo_images_are_deterministic_and_cached(tmp_path, monkeypatch):
    start = time.perf_counter()
    one = ensure_demo_images(tmp_path / "a", n_per_class=3, n_test_per_class=2, size=24)
    assert time.perf_counter() - start < 15
    two = ensure_demo_images(tmp_path / "b", n_per_class=3, n_test_per_class=2, size=24)
    assert one.parent == tmp_path / "a" / "demo_images"
    first, second = _pixels(one), _pixels(two)
    assert len(first) == len(DEMO_CLASSES) * 5 and first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k]) for k in first)
    masks, other_masks = _pixels(one / "masks"), _pixels(two / "masks")
    assert masks.keys() == first.keys()  # one mask per image, at the image's path
    assert all(np.array_equal(masks[k], other_masks[k]) for k in masks)
    assert next(iter(first.values())).shape == (24, 24, 3)
    assert sorted(p.name for p in (one / "train").iterdir()) == sorted(DEMO_CLASSES)
    # images differ from each other (random colour, pose, background)
    stacked = np.stack(list(first.values())).reshape(len(first), -1).astype(np.int32)
    assert len({row.tobytes() for row in stacked}) == len(first)
    # a second call reuses the set; $STEC_CACHE is the default location
    stamp = (one / "demo.json").stat().st_mtime_ns
    assert ensure_demo_images(tmp_path / "a", n_per_class=3, n_test_per_class=2, size=24) == one
    assert (one / "demo.json").stat().st_mtime_ns == stamp
    monkeypatch.setenv("STEC_CACHE", str(tmp_path / "env"))
    env_root = ensure_demo_images(n_per_class=1, n_test_per_class=1, size=16)
    assert env_root.parent == tmp_path / "env" / "demo_images"
    assert not [p for p in os.listdir(one.parent) if p.startswith(".tmp_")]


def test_demo_shape_is_visible_against_background():
    image = render_demo_image(0, (0, 0, 0, 1), 32).astype(np.float32)
    centre, corner = image[12:20, 12:20].mean(axis=(0, 1)), image[:3, :3].mean(axis=(0, 1))
    assert image.dtype == np.float32 and np.abs(centre - corner).sum() > 30


def test_demo_dataset(tmp_path):
    ds = build_vision_dataset("demo", tmp_path, "test", 16)
    assert len(ds) == 50 * len(DEMO_CLASSES) and ds.classes == sorted(DEMO_CLASSES)
    image, label, index = ds[7]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8 and index == 7
    with pytest.raises(ValueError, match="train, test"):
        build_vision_dataset("demo", tmp_path, "val", 16)


def test_encoders_shapes_and_stems():
    small, dim = build_vision_encoder("small", width=8)
    assert dim == 32 and small(torch.rand(2, 3, 16, 16)).shape == (2, 32)
    cifar, dim = build_vision_encoder("resnet18", cifar_stem=True)
    assert dim == 512 and cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    cifar.eval()
    assert cifar(torch.rand(1, 3, 32, 32)).shape == (1, 512)
    imagenet, _ = build_vision_encoder("resnet18", cifar_stem=False)
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.fc, torch.nn.Identity)
    _, dim50 = build_vision_encoder("resnet50")
    assert dim50 == 2048
    with pytest.raises(ValueError, match="resnet18, resnet50, small"):
        build_vision_encoder("vit")


def test_export_round_trip(tmp_path):
    torch.manual_seed(0)
    model, dim = build_vision_encoder("small", width=8)
    model.eval()
    export_backbone(
        model, tmp_path / "export", {"encoder": encoder_meta("small", width=8), "feature_dim": dim}
    )
    loaded, meta = load_vision_encoder(tmp_path)
    x = torch.rand(3, 3, 16, 16)
    assert meta["feature_dim"] == 32 and torch.allclose(loaded(x), model(x))
    export_backbone(model, tmp_path / "other", {"encoder": {"name": "audio_ntt", "kwargs": {}}})
    with pytest.raises(ValueError, match="not a vision encoder"):
        load_vision_encoder(tmp_path / "other")


@pytest.mark.parametrize(
    "overrides, kernel",
    [
        (["data=imagefolder", "data.size=224", "encoder=resnet18"], 7),
        (["data=imagefolder", "data.size=96", "encoder=resnet50"], 7),
        (["data=imagefolder", "encoder=resnet18"], 3),  # 64 px
        (["encoder=resnet18"], 3),  # the demo's 32 px
        (["data=imagefolder", "data.size=224", "encoder=resnet18", "encoder.cifar_stem=true"], 3),
        (["encoder=resnet18", "encoder.cifar_stem=false"], 7),
        (["data=cifar10"], 3),
        (["data=stl10"], 7),
        (["data=imagenet"], 7),
    ],
)
def test_the_resnet_stem_follows_the_image_size_unless_set(overrides, kernel, tmp_path):
    cfg = compose_config("vision", [*overrides, f"data.root={tmp_path}"])
    encoder, _ = encoder_from_config(cfg)
    assert encoder.conv1.kernel_size == (kernel, kernel)
    # the export records the stem the encoder was built with
    spec = encoder_meta(cfg.encoder.name, **encoder_settings(cfg))
    export_backbone(encoder, tmp_path / "export", {"encoder": spec, "normalize": "none"})
    loaded, _ = load_vision_encoder(tmp_path / "export")
    assert loaded.conv1.kernel_size == (kernel, kernel)
