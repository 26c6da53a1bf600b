"""Spatial feature maps of the encoders, the demo's masks, and images with masks on disk."""

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from stec.errors import DataError
from stec_vision.demo import (
    DEMO_CLASSES,
    DEMO_CLASSES_WITH_BACKGROUND,
    ensure_demo_images,
    render_demo_image,
    render_demo_sample,
)
from stec_vision.encoders import FeatureMap, build_vision_encoder, feature_map
from stec_vision.segmentation import MaskedImageDataset, load_mask, read_class_names


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "name, kwargs, size, grid",
    [
        ("small", {"width": 8}, 32, 4),
        ("resnet18", {"cifar_stem": True}, 32, 4),
        ("resnet18", {"cifar_stem": False}, 64, 2),
        ("resnet18", {"cifar_stem": False, "maxpool": False}, 64, 4),
    ],
)
def test_the_feature_map_is_what_the_pooled_output_averages(name, kwargs, size, grid):
    torch.manual_seed(0)
    encoder, dim = build_vision_encoder(name, **kwargs)
    encoder.eval()
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        pooled, fmap = encoder(x), feature_map(encoder, x)
        wrapped = FeatureMap(encoder)(x)
    assert fmap.shape == (2, dim, grid, grid)
    torch.testing.assert_close(fmap.mean((2, 3)), pooled, atol=1e-5, rtol=1e-5)
    assert torch.equal(wrapped, fmap)
    assert set(FeatureMap(encoder).state_dict()) == {f"backbone.{k}" for k in encoder.state_dict()}


def test_feature_map_of_an_unknown_module_is_an_error():
    with pytest.raises(TypeError, match="resnet18, resnet50, small"):
        FeatureMap(torch.nn.Flatten())


def test_demo_masks_mark_the_drawn_shape_and_the_images_are_unchanged():
    # the images of demo version 1, byte for byte: adding masks changed no pixel
    for class_index, key, digest in ((3, (0, 0, 3, 5), "4b0c50488a26926c"), (7, (0, 1, 7, 2), "c1af70dbfa26c7eb")):  # fmt: skip
        image = render_demo_image(class_index, key, 32)
        assert hashlib.sha256(image.tobytes()).hexdigest()[:16] == digest
    for class_index in range(len(DEMO_CLASSES)):
        image, mask = render_demo_sample(class_index, (0, 0, class_index, 1), 32)
        assert set(np.unique(mask)) == {0, class_index + 1}
        inside, outside = image[mask > 0].astype(float), image[mask == 0].astype(float)
        # the shape is one flat colour: its pixels vary far less than the background's
        assert inside[len(inside) // 4 :].std(0).mean() < outside.std(0).mean()
        assert 0.03 < (mask > 0).mean() < 0.6


def test_demo_set_holds_masks_in_the_image_layout(tmp_path):
    root = ensure_demo_images(tmp_path, n_per_class=2, n_test_per_class=1, size=24)
    names = read_class_names(root / "masks", 0)
    assert names == list(DEMO_CLASSES_WITH_BACKGROUND)
    ds = MaskedImageDataset(root, "train", 24, root / "masks", names, scan="none")
    assert len(ds) == 2 * len(DEMO_CLASSES)
    for index in range(len(ds)):
        image, mask, i = ds[index]
        klass = ds.item_id(index).split("/")[1]
        assert image.shape == (3, 24, 24) and mask.shape == (24, 24) and i == index
        assert set(mask.unique().tolist()) == {0, DEMO_CLASSES.index(klass) + 1}
        saved = np.asarray(Image.open(root / "masks" / ds.item_id(index)))
        assert np.array_equal(mask.numpy(), saved)


def _planted_pair(folder, name, width, height, box):
    """An image with a pure red box on pure blue, and its mask (1 in the box)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 2] = 255
    mask = np.zeros((height, width), np.uint8)
    left, top, right, bottom = box
    pixels[top:bottom, left:right] = (255, 0, 0)
    mask[top:bottom, left:right] = 1
    (folder / "img" / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / "masks" / "img" / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / "img" / name)
    Image.fromarray(mask).save(folder / "masks" / "img" / name)


@pytest.mark.parametrize("size, resize", [(16, None), (16, 21), (30, None)])
def test_image_and_mask_get_the_same_resize_and_crop(tmp_path, size, resize):
    _planted_pair(tmp_path, "a.png", 40, 26, (5, 3, 23, 17))
    _planted_pair(tmp_path, "b.png", 26, 40, (9, 20, 20, 37))
    ds = MaskedImageDataset(
        tmp_path, "img", size, tmp_path / "masks", ["bg", "box"], resize=resize or 0
    )
    for index in range(2):
        image, mask, _ = ds[index]
        red = (image[0] > 200) & (image[2] < 55)
        blue = (image[2] > 200) & (image[0] < 55)
        assert (red | blue).float().mean() > 0.7  # most pixels are not blended edges
        assert bool((mask[red] == 1).all()) and bool((mask[blue] == 0).all())
        assert mask.sum() > 0
    direct = load_mask(tmp_path / "masks" / "img" / "a.png", size, resize)
    assert torch.equal(direct, ds[0][1])


def test_masks_are_checked_when_the_dataset_is_built(tmp_path):
    _planted_pair(tmp_path, "a.png", 20, 20, (2, 2, 9, 9))
    _planted_pair(tmp_path, "sub/b.png", 20, 20, (2, 2, 9, 9))
    (tmp_path / "masks" / "img" / "sub" / "b.png").unlink()
    with pytest.raises(DataError, match=r"1 of 2 images have no mask.*masks/img/sub/b\.png"):
        MaskedImageDataset(tmp_path, "img", 16, tmp_path / "masks", ["bg", "box"])
    Image.fromarray(np.zeros((20, 21), np.uint8)).save(tmp_path / "masks" / "img" / "sub" / "b.png")
    with pytest.raises(DataError, match=r"another size.*b\.png is 21x20 but .*b\.png is 20x20"):
        MaskedImageDataset(tmp_path, "img", 16, tmp_path / "masks", ["bg", "box"])
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(
        tmp_path / "masks" / "img" / "sub" / "b.png"
    )
    with pytest.raises(DataError, match=r"not a class-index image.*mode RGB"):
        MaskedImageDataset(tmp_path, "img", 16, tmp_path / "masks", ["bg", "box"])


def test_class_names_come_from_classes_txt_or_the_config(tmp_path):
    with pytest.raises(ValueError, match="segmentation.num_classes=N"):
        read_class_names(tmp_path, 0)
    assert read_class_names(tmp_path, 3) == ["0", "1", "2"]
    (tmp_path / "classes.txt").write_text("background\ncat\n\ndog\n")
    assert read_class_names(tmp_path, 0) == ["background", "cat", "dog"]
    with pytest.raises(ValueError, match="num_classes=4 but .*classes.txt names 3 classes"):
        read_class_names(tmp_path, 4)
