"""Whole-image canvases: RandomResizedCrop sampled over the original image (torchvision's
algorithm in original pixels), cut batched from a fixed-size canvas; evaluation loading
with Resize R / CenterCrop S."""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import CenterCrop, RandomResizedCrop, Resize

from stec_vision.augment import RandomResizedCropFlip, warp_affine
from stec_vision.canvas import pack_canvas, unpack_canvas
from stec_vision.datasets import build_vision_dataset, collate_skip_bad, load_canvas, load_image

CPU = torch.device("cpu")


def _smooth_rgb(height: int, width: int) -> np.ndarray:
    """A low-frequency uint8 picture (bilinear resampling of it is nearly exact)."""
    ys, xs = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    chans = [
        0.5 + 0.35 * np.sin(2.1 * xs + 1.3 * ys),
        0.5 + 0.35 * np.cos(1.7 * xs - 2.3 * ys),
        0.2 + 0.6 * xs * ys,
    ]
    return (np.stack(chans, axis=-1) * 255).round().astype(np.uint8)


def test_pack_and_unpack_keep_image_and_original_size():
    images = [torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8) for _ in range(3)]
    sizes = [(300, 1200), (17, 5), (65535, 256)]
    packed = torch.stack([pack_canvas(im, h, w) for im, (h, w) in zip(images, sizes, strict=True)])
    assert packed.shape == (3, 3, 9, 8) and packed.dtype == torch.uint8
    got_images, got_sizes = unpack_canvas(packed)
    assert torch.equal(got_images, torch.stack(images))
    assert got_sizes.tolist() == [[300.0, 1200.0], [17.0, 5.0], [65535.0, 256.0]]
    with pytest.raises(ValueError, match=r"packed canvases uint8 \[B, 3, C \+ 1, C\]"):
        unpack_canvas(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="outside 1..65535"):
        pack_canvas(images[0], 70000, 5)


def _torchvision_boxes(height: int, width: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(area share, log aspect ratio) of torchvision's RandomResizedCrop boxes."""
    image = torch.zeros(1, height, width)
    area, log_aspect = [], []
    for _ in range(n):
        _, _, h, w = RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3))
        area.append(h * w / (height * width))
        log_aspect.append(math.log(w / h))
    return np.array(area), np.array(log_aspect)


@pytest.mark.parametrize("height,width", [(90, 300), (400, 150), (375, 500)])
def test_boxes_follow_torchvision_in_original_pixels(height, width):
    torch.manual_seed(0)
    n = 4000
    crop = RandomResizedCropFlip(16)
    # a batch mixing this size with others: each image is sampled with its own size
    heights = torch.tensor([height, 50.0]).repeat(n)
    widths = torch.tensor([width, 50.0]).repeat(n)
    boxes = crop.sample_boxes(2 * n, heights, widths, CPU)[0::2]
    cx, cy, half_w, half_h = boxes.unbind(1)
    ours_area = (half_w * half_h).numpy()
    ours_aspect = torch.log(half_w * width / (half_h * height)).numpy()
    ref_area, ref_aspect = _torchvision_boxes(height, width, n)
    for ours, ref in ((ours_area, ref_area), (ours_aspect, ref_aspect)):
        quantiles = [0.1, 0.25, 0.5, 0.75, 0.9]
        assert np.abs(np.quantile(ours, quantiles) - np.quantile(ref, quantiles)).max() < 0.03
    inside = (cx.abs() <= 1 - half_w + 1e-6) & (cy.abs() <= 1 - half_h + 1e-6)
    assert inside.all() and (half_w <= 1 + 1e-6).all() and (half_h <= 1 + 1e-6).all()


def test_fallback_crop_is_centred():
    # a square crop of the whole area never fits a 10 x 20 image: torchvision then takes
    # the centred 10 x 10 square
    crop = RandomResizedCropFlip(8, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.manual_seed(1)
    boxes = crop.sample_boxes(16, 10, 20, CPU)
    assert torch.allclose(boxes, torch.tensor([0.0, 0.0, 0.5, 1.0]).expand(16, 4))


def test_canvas_crop_is_torchvisions_crop_of_the_original(tmp_path):
    height, width, canvas, out = 60, 90, 96, 24
    path = tmp_path / "wide.png"
    Image.fromarray(_smooth_rgb(height, width)).save(path)
    packed = load_canvas(path, canvas)
    assert packed.shape == (3, canvas + 1, canvas)
    images, sizes = unpack_canvas(packed[None])
    assert sizes.tolist() == [[height, width]]
    crop = RandomResizedCropFlip(out)
    for top, left, h, w in [(10, 20, 30, 45), (0, 0, 60, 90), (35, 60, 20, 25)]:
        box = torch.tensor(
            [[(2 * left + w) / width - 1, (2 * top + h) / height - 1, w / width, h / height]]
        )
        for flip in (False, True):
            theta = crop.boxes_to_theta(box, torch.tensor([flip]))
            ours = warp_affine(images.float() / 255, theta, out)[0]
            with Image.open(path) as original:
                ref = TF.resized_crop(original, top, left, h, w, [out, out], antialias=True)
            if flip:
                ref = TF.hflip(ref)
            ref = TF.to_tensor(ref)
            assert (ours - ref).abs().max() < 0.015, (top, left, h, w, flip)


def test_canvas_loader_and_augmenter_crop_each_image_in_its_own_pixels(tmp_path):
    root = tmp_path / "tree"
    shapes = [(40, 160), (120, 30), (64, 64)]
    for i, (h, w) in enumerate(shapes):
        folder = root / "train" / f"c{i}"
        folder.mkdir(parents=True)
        Image.fromarray(_smooth_rgb(h, w)).save(folder / "x.png")
    ds = build_vision_dataset("imagefolder", root, "train", 16, canvas=32)
    x, labels, _ = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_skip_bad)))
    assert x.shape == (3, 3, 33, 32) and labels.tolist() == [0, 1, 2]
    images, sizes = unpack_canvas(x)
    assert sizes.tolist() == [[h, w] for h, w in shapes]
    crop = RandomResizedCropFlip(16, canvas=True)
    torch.manual_seed(2)
    views, params = crop(x.repeat(300, 1, 1, 1))
    theta = params["crop"]
    assert views.shape == (900, 3, 16, 16)
    assert torch.allclose(views, warp_affine(images.repeat(300, 1, 1, 1).float() / 255, theta, 16))
    # the box, in the original image's pixels, has torchvision's aspect-ratio range
    half_w, half_h = 1 / theta[:, 0, 0].abs(), 1 / theta[:, 1, 1]
    heights, widths = sizes[:, 0].repeat(300), sizes[:, 1].repeat(300)
    aspect = half_w * widths / (half_h * heights)
    found = (half_w * half_h) < 1 - 1e-6  # the rest are fallbacks (whole or centred)
    assert (aspect[found] >= 3 / 4 - 1e-4).all() and (aspect[found] <= 4 / 3 + 1e-4).all()
    with pytest.raises(ValueError, match="packed canvases"):
        crop(images)


def test_evaluation_loading_is_resize_then_centre_crop(tmp_path):
    path = tmp_path / "tall.png"
    Image.fromarray(_smooth_rgb(60, 40)).save(path)
    ours = load_image(path, 28, resize=32)
    with Image.open(path) as img:
        ref = torch.from_numpy(np.asarray(CenterCrop(28)(Resize(32)(img.convert("RGB")))))
    assert ours.shape == (3, 28, 28)
    assert (ours.permute(1, 2, 0).int() - ref.int()).abs().max() <= 1
    with pytest.raises(ValueError, match="resize=20 must be at least the crop size 28"):
        load_image(path, 28, resize=20)


def test_array_datasets_support_resize_and_canvas(tmp_path):
    from stec_vision.datasets import ArrayImageDataset

    images = np.stack([np.moveaxis(_smooth_rgb(48, 48), -1, 0)] * 2)
    evaluation = ArrayImageDataset(images, [0, 1], 32, ["a", "b"], resize=40)
    image, _, _ = evaluation[0]
    full = TF.resize(torch.from_numpy(images[0]), [40], antialias=True)
    assert (image.int() - TF.center_crop(full, [32]).int()).abs().max() <= 1
    canvas, _, _ = ArrayImageDataset(images, [0, 1], 32, ["a", "b"], canvas=24)[1]
    assert canvas.shape == (3, 25, 24) and unpack_canvas(canvas[None])[1].tolist() == [[48, 48]]
    with pytest.raises(ValueError, match="exclusive"):
        build_vision_dataset("demo", tmp_path, "train", 16, resize=20, canvas=20)


def test_canvas_pipeline_runs_on_the_device_without_host_synchronisation():
    # meta tensors have no values: reading a size on the host, or a Python branch on the
    # data, would raise; every record stays on the images' device
    from stec_vision.augment import build_two_views

    views = build_two_views("imagenet", 24, canvas=True).to("meta")
    packed = torch.empty(4, 3, 33, 32, dtype=torch.uint8, device="meta")
    view_a, view_b, params_a, params_b = views(packed)
    assert view_a.shape == view_b.shape == (4, 3, 24, 24) and view_a.is_meta
    assert all(t.is_meta for t in [*params_a.values(), *params_b.values()])
