"""Colour jitter, grayscale, blur and solarisation: semantics and recorded actions."""

import math

import pytest
import torch
import torchvision.transforms.functional as TF

from stec import ActionSpace
from stec_vision.augment import (
    ColorJitter,
    GaussianBlur,
    RandomGrayscale,
    RandomResizedCropFlip,
    Solarize,
    VisionCompose,
)
from stec_vision.augment_color import apply_on_rows, shift_hue


def _images(batch=6, size=12, seed=0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g) * high


def test_jitter_p0_is_identity_with_identity_params():
    x = _images()
    jitter = ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.0)
    out, params = jitter(x)
    assert torch.equal(out, x)
    for op in ("brightness", "contrast", "saturation"):
        assert torch.equal(params[op], torch.ones(6, 1))
    assert torch.equal(params["hue"], torch.zeros(6, 1))
    assert not params["color_order.valid"].any()
    space = ActionSpace(jitter.components())
    _, other = ColorJitter(0.8, 0.8, 0.8, 0.2, p=1.0)(x)
    targets = space.targets(params, other)
    # the order target is masked where a view was not jittered; the factors stay valid
    assert not targets.mask[:, space.slices["color_order"]].any()
    assert targets.mask[:, space.slices["brightness"]].all()


def test_jitter_matches_torchvision_per_example_order():
    torch.manual_seed(1)
    x = _images(8, 10, seed=1)
    jitter = ColorJitter(0.8, 0.8, 0.8, 0.2, p=1.0)
    factors, order_index, _ = jitter.sample(8, x.device)
    orders = jitter.permutations[order_index]
    out = jitter.apply(x, factors, orders)
    fns = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(8):
        ref = x[i]
        for op in orders[i].tolist():
            ref = fns[op](ref, float(factors[i, op]))
        assert torch.allclose(out[i], ref, atol=2e-5), f"example {i}, order {orders[i].tolist()}"
    assert len({tuple(o) for o in orders.tolist()}) > 1


def test_hue_shift_matches_torchvision_including_gray_pixels():
    x = _images(4, 9, seed=2)
    x[:, :, :3] = x[:, :1, :3]  # some gray pixels (no hue)
    shifts = torch.tensor([-0.5, -0.13, 0.27, 0.5])
    out = shift_hue(x, shifts)
    for i in range(4):
        assert torch.allclose(out[i], TF.adjust_hue(x[i], float(shifts[i])), atol=1e-5)


def test_brightness_log_ratio_is_the_relative_action():
    """Brightness only, no clamping: view_b == exp(action) * view_a."""
    torch.manual_seed(3)
    x = _images(16, 8, seed=3, high=0.5)
    jitter = ColorJitter(brightness=(0.5, 1.8), contrast=0, saturation=0, hue=0, p=1.0)
    assert [c.name for c in jitter.components()] == ["brightness"]
    va, pa = jitter(x)
    vb, pb = jitter(x)
    space = ActionSpace(jitter.components())
    action = space["brightness"].relative(pa["brightness"], pb["brightness"])
    assert torch.allclose(vb, torch.exp(action).view(-1, 1, 1, 1) * va, atol=1e-5)
    expected = torch.log(pb["brightness"] / pa["brightness"])
    assert torch.allclose(action, expected, atol=1e-6)
    lo, hi = space["brightness"].low, space["brightness"].high
    assert math.isclose(hi, math.log(1.8 / 0.5), rel_tol=1e-6) and lo == -hi
    bins = space.targets(pa, pb).classes[:, 0]
    assert torch.equal(bins, ((expected[:, 0] - lo) / (hi - lo) * 6).floor().clamp(0, 5).long())


def test_contrast_log_ratio_is_the_relative_action():
    """Contrast only: deviations from the (preserved) mean gray scale by exp(action)."""
    torch.manual_seed(4)
    x = 0.4 + 0.2 * _images(16, 8, seed=4)
    jitter = ColorJitter(brightness=0, contrast=(0.5, 1.5), saturation=0, hue=0, p=1.0)
    va, pa = jitter(x)
    vb, pb = jitter(x)
    mean = (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).mean(dim=(1, 2)).view(-1, 1, 1, 1)
    ratio = (pb["contrast"] / pa["contrast"]).view(-1, 1, 1, 1)
    assert torch.allclose(vb - mean, ratio * (va - mean), atol=1e-5)


def test_hue_action_is_the_difference_and_order_component():
    jitter = ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)
    names = [c.name for c in jitter.components()]
    assert names == ["brightness", "contrast", "saturation", "hue", "color_order"]
    space = ActionSpace(jitter.components())
    assert space["color_order"].n_classes == 24 and space["hue"].low == pytest.approx(-0.2)
    pa = {"hue": torch.tensor([[0.05]]), "color_order": torch.tensor([3])}
    pb = {"hue": torch.tensor([[-0.02]]), "color_order": torch.tensor([17])}
    assert space["hue"].relative(pa["hue"], pb["hue"]).item() == pytest.approx(-0.07)
    assert space["color_order"].relative(pa["color_order"], pb["color_order"]).item() == 17
    # two ops only: 2 orders
    assert ColorJitter(0.4, 0, 0, 0.1).permutations.shape == (2, 2)
    assert "color_order" not in [c.name for c in ColorJitter(0.4, 0, 0, 0).components()]


def test_jitter_output_range_and_uint8_input():
    torch.manual_seed(5)
    x = (torch.rand(32, 3, 8, 8) * 255).to(torch.uint8)
    out, params = ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8)(x)
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 1
    assert params["color_order"].dtype == torch.long and params["color_order"].shape == (32,)


def test_bad_jitter_arguments():
    with pytest.raises(ValueError, match="hue"):
        ColorJitter(hue=0.7)
    with pytest.raises(ValueError, match="brightness"):
        ColorJitter(brightness=-1)


def test_grayscale_and_solarize_flags_and_pixels():
    torch.manual_seed(6)
    x = _images(64, 6, seed=6)
    gray, pg = RandomGrayscale(p=0.5)(x)
    flag = pg["grayscale"].bool()
    assert 5 < flag.sum() < 59
    assert torch.allclose(gray[flag, 0], gray[flag, 1]) and torch.equal(gray[~flag], x[~flag])
    sol, ps = Solarize(p=0.5, threshold=0.5)(x)
    flag = ps["solarize"].bool()
    expected = torch.where(x >= 0.5, 1 - x, x)
    assert torch.equal(sol[flag], expected[flag]) and torch.equal(sol[~flag], x[~flag])
    comp = RandomGrayscale(p=0.5).components()[0]
    assert comp.name == "grayscale" and comp.relation == "pair" and comp.n_classes == 4


def test_blur_per_example_sigma_matches_torchvision_and_identity_when_off():
    torch.manual_seed(7)
    x = _images(6, 20, seed=7)
    blur = GaussianBlur(sigma=(0.5, 2.0), p=1.0, kernel_size=5)
    out, params = blur(x)
    sigma = params["blur"][:, 0]
    for i in range(6):
        ref = TF.gaussian_blur(x[i], [5, 5], [float(sigma[i])] * 2)
        assert torch.allclose(out[i], ref, atol=1e-5)
    off, p_off = GaussianBlur(p=0.0)(x)
    assert torch.equal(off, x) and torch.equal(p_off["blur"], torch.zeros(6, 1))
    comp = blur.components()[0]
    assert comp.relative(torch.tensor([[0.0]]), torch.tensor([[1.5]])).item() == 1.5
    assert GaussianBlur().kernel_for(96, 96) == 9 and GaussianBlur().kernel_for(224, 224) == 23


def test_noninvertible_flag_pair_is_the_action_by_default():
    x = _images(64, 8, seed=8)
    torch.manual_seed(8)
    pipe = VisionCompose([RandomResizedCropFlip(8), Solarize(p=0.5)])
    space = pipe.action_space()
    assert space.names == ["crop", "solarize"]
    _, pa = pipe(x)
    _, pb = pipe(x)
    t = space.targets(pa, pb)
    expected = (2 * pa["solarize"] + pb["solarize"]).long()
    assert torch.equal(t.classes[:, space.slices["solarize"].start], expected) and t.mask.all()


def test_mask_noninvertible_masks_every_component_of_hit_pairs():
    x = _images(128, 8, seed=9)
    torch.manual_seed(9)
    pipe = VisionCompose(
        [
            RandomResizedCropFlip(8),
            ColorJitter(p=0.8),
            RandomGrayscale(p=0.3),
            Solarize(p=0.3, mask_noninvertible=True),
        ]
    )
    space = pipe.action_space()
    assert "solarize" not in space.names and "grayscale" in space.names
    _, pa = pipe(x)
    _, pb = pipe(x)
    hit = pa["solarize"].bool() | pb["solarize"].bool()
    assert 10 < hit.sum() < 118
    t = space.targets(pa, pb)
    assert not t.mask[hit].any()
    # elsewhere only the colour order of non-jittered views is masked
    order = space.slices["color_order"]
    keep = torch.ones(space.n_targets, dtype=torch.bool)
    keep[order] = False
    assert t.mask[~hit][:, keep].all()
    assert torch.equal(
        t.mask[~hit][:, order.start], (pa["color_order.valid"] & pb["color_order.valid"])[~hit]
    )
    # both directions agree (the forward model uses targets(b, a))
    assert torch.equal(space.targets(pb, pa).mask, t.mask)


def test_hue_row_selection_and_whole_batch_paths_agree():
    x = _images(10, 7, seed=10)
    shift = torch.linspace(-0.4, 0.4, 10)
    mask = torch.tensor([True, False] * 5)
    rows = apply_on_rows(x, mask, shift_hue, shift, select_rows=True)
    whole = apply_on_rows(x, mask, shift_hue, shift, select_rows=False)
    assert torch.allclose(rows, whole, atol=1e-6) and torch.equal(rows[~mask], x[~mask])
    assert (rows[mask] - x[mask]).abs().max() > 0.05
