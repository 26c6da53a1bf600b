"""Presets, asymmetric views, normalisation, and the pipeline feeding an SSL method."""

import pytest
import torch

from stec import TwoViews, build_method
from stec_vision.augment import (
    PRESETS,
    GaussianBlur,
    Normalize,
    Solarize,
    TwoViewsAsymmetric,
    build_normalize,
    build_two_views,
    build_vision_pipeline,
    preset_config,
)
from stec_vision.encoders import build_vision_encoder


@pytest.mark.parametrize(
    "preset,size", [("cifar", 32), ("stl10", 32), ("imagenet", 32), ("demo", 16)]
)
def test_presets_make_two_views_and_actions(preset, size):
    torch.manual_seed(0)
    views = build_two_views(preset, size)
    x = (torch.rand(8, 3, size + 8, size + 8) * 255).to(torch.uint8)
    va, vb, pa, pb = views(x)
    assert va.shape == vb.shape == (8, 3, size, size) and va.dtype == torch.float32
    space = views.action_space()
    targets = space.targets(pa, pb)
    assert targets.classes.shape == (8, space.n_targets)
    assert int(targets.classes.max()) < space.max_classes


def test_cifar_preset_is_simclr_recipe():
    cfg = preset_config("cifar")
    assert (cfg["brightness"], cfg["contrast"], cfg["saturation"], cfg["hue"]) == pytest.approx(
        (0.4, 0.4, 0.4, 0.1)
    )
    pipe = build_vision_pipeline("cifar", 32)
    names = pipe.action_space().names
    assert names == [
        "crop",
        "brightness",
        "contrast",
        "saturation",
        "hue",
        "color_order",
        "grayscale",
    ]
    assert not any(isinstance(a, (GaussianBlur, Solarize)) for a in pipe.augmenters)
    assert isinstance(build_two_views("cifar", 32), TwoViews)


def test_imagenet_preset_blurs_and_solarises_each_view_and_masks_solarised_pairs():
    views = build_two_views("imagenet", 24)
    assert not isinstance(views, TwoViewsAsymmetric)
    blur = [a for a in views.pipeline.augmenters if isinstance(a, GaussianBlur)][0]
    sol = [a for a in views.pipeline.augmenters if isinstance(a, Solarize)][0]
    assert (blur.p, sol.p) == (0.5, 0.2)
    assert blur.sigma == pytest.approx((0.1 * 24 / 224, 2.0 * 24 / 224))
    assert sol.mask_noninvertible and "solarize" not in views.action_space().names
    torch.manual_seed(1)
    _, _, pa, pb = views(torch.rand(256, 3, 32, 32))
    for params in (pa, pb):
        blurred = (params["blur"] > 0).float().mean()
        solarised = params["solarize"].bool()
        assert 0.4 < blurred < 0.6 and 0.1 < solarised.float().mean() < 0.3
        assert not params["crop.valid"][solarised].any() and params["crop.valid"][~solarised].all()


def test_byol_asymmetric_views_by_override():
    views = build_two_views("imagenet", 24, {"blur_p": [1.0, 0.1], "solarize_p": [0.0, 0.2]})
    assert isinstance(views, TwoViewsAsymmetric)
    blur_a = [a for a in views.pipeline.augmenters if isinstance(a, GaussianBlur)][0]
    blur_b = [a for a in views.pipeline_b.augmenters if isinstance(a, GaussianBlur)][0]
    sol_a = [a for a in views.pipeline.augmenters if isinstance(a, Solarize)][0]
    sol_b = [a for a in views.pipeline_b.augmenters if isinstance(a, Solarize)][0]
    assert (blur_a.p, blur_b.p, sol_a.p, sol_b.p) == (1.0, 0.1, 0.0, 0.2)
    torch.manual_seed(1)
    _, _, pa, pb = views(torch.rand(64, 3, 32, 32))
    assert (pa["blur"] > 0).all() and not pa["solarize"].any() and pb["solarize"].any()
    masked = pb["solarize"].bool()
    assert not pb["crop.valid"][masked].any() and pb["crop.valid"][~masked].all()


def test_blur_sigma_in_view_pixels_or_relative_to_a_reference_size():
    pipe = build_vision_pipeline("stl10", 96, {"blur_sigma_ref_size": None})
    blur = [a for a in pipe.augmenters if isinstance(a, GaussianBlur)][0]
    assert blur.sigma == (0.1, 2.0)
    pipe = build_vision_pipeline("cifar", 64, {"blur_p": 0.5, "blur_sigma_ref_size": 32})
    blur = [a for a in pipe.augmenters if isinstance(a, GaussianBlur)][0]
    assert blur.sigma == pytest.approx((0.2, 4.0))
    with pytest.raises(ValueError, match="blur_sigma_ref_size=0 is not valid"):
        preset_config("stl10", {"blur_sigma_ref_size": 0})


def test_overrides_and_errors():
    cfg = preset_config(
        "cifar", {"color_strength": 1.0, "hue": 0.0, "blur_p": 0.5, "mask_noninvertible": True}
    )
    assert (
        cfg["brightness"] == pytest.approx(0.8)
        and cfg["hue"] == 0.0
        and cfg["blur_p"] == (0.5, 0.5)
    )
    assert cfg["mask_noninvertible"] == ("grayscale", "solarize")
    pipe = build_vision_pipeline(
        "cifar", 32, {"hue": 0.0, "color_order": False, "grayscale_p": 0.0}
    )
    assert pipe.action_space().names == ["crop", "brightness", "contrast", "saturation"]
    with pytest.raises(ValueError, match=r"'nope'.*cifar, stl10, imagenet, demo"):
        build_vision_pipeline("nope", 32)
    with pytest.raises(ValueError, match=r"'colour'.*allowed keys:.*color_strength"):
        build_vision_pipeline("cifar", 32, {"colour": 1})
    with pytest.raises(ValueError, match="blur_p"):
        preset_config("cifar", {"blur_p": (0.5, 2.0)})
    with pytest.raises(ValueError, match="mask_noninvertible"):
        preset_config("cifar", {"mask_noninvertible": ["flip"]})
    with pytest.raises(ValueError, match="view"):
        build_vision_pipeline("cifar", 32, view="c")
    assert set(PRESETS) == {"cifar", "stl10", "imagenet", "demo"}


def test_asymmetric_views_need_matching_components():
    a = build_vision_pipeline("cifar", 16)
    b = build_vision_pipeline("cifar", 16, {"grayscale_p": 0.0})
    with pytest.raises(ValueError, match="different action components"):
        TwoViewsAsymmetric(a, b)


def test_normalize():
    norm = build_normalize("cifar10")
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = norm(x)
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2470, 0.2435, 0.2616])
    assert torch.allclose(out[0, :, 0, 0], (1 - mean) / std, atol=1e-5)
    assert torch.equal(build_normalize("none")(x), torch.ones(2, 3, 4, 4))
    with pytest.raises(ValueError, match="imagenet"):
        build_normalize("mnist")
    with pytest.raises(ValueError):
        Normalize((0.5,), (0.5,))


def test_views_train_a_simclr_step_with_the_inverse_model():
    torch.manual_seed(2)
    views = build_two_views("demo", 16)
    backbone, dim = build_vision_encoder("small", width=8)
    method = build_method(
        "simclr",
        backbone=backbone,
        feature_dim=dim,
        action_space=views.action_space(),
        efference="inverse",
        proj_hidden=32,
        proj_dim=16,
        inverse_hidden=32,
    )
    va, vb, pa, pb = views(torch.rand(8, 3, 20, 20))
    loss, metrics, _ = method(va, vb, pa, pb)
    loss.backward()
    assert torch.isfinite(loss) and "action_loss" in metrics


def test_cpu_chunks_keep_records_aligned_with_rows():
    from stec_vision.augment import ColorJitter, RandomResizedCropFlip, VisionCompose, warp_affine

    torch.manual_seed(3)
    x = torch.rand(10, 3, 20, 20)
    jitter = ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.6)
    pipe = VisionCompose([RandomResizedCropFlip(12), jitter], cpu_chunk_bytes=3 * 3 * 20 * 20 * 4)
    out, params = pipe(x)
    assert out.shape == (10, 3, 12, 12) and params["crop"].shape == (10, 3, 3)
    factors = torch.cat([params[k] for k in ("brightness", "contrast", "saturation", "hue")], dim=1)
    redo = jitter.apply(
        warp_affine(x, params["crop"], 12), factors, jitter.permutations[params["color_order"]]
    )
    applied = params["color_order.valid"]
    assert 0 < applied.sum() < 10
    assert torch.allclose(out[applied], redo[applied], atol=1e-5)
    assert torch.allclose(out[~applied], warp_affine(x, params["crop"], 12)[~applied], atol=1e-6)
