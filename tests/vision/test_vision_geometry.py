"""RandomResizedCropFlip: θ convention, exact relative action, pixel-level consistency."""

import math

import pytest
import torch

from stec import relative_affine
from stec_vision.augment import RandomResizedCropFlip, sampling_matrix, warp_affine


def _smooth_image(batch: int, size: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    chans = [
        0.5 + 0.3 * torch.sin(1.3 * xs + 0.7 * ys),
        0.5 + 0.3 * torch.cos(0.9 * xs - 1.1 * ys),
        0.5 + 0.2 * xs * ys,
    ]
    return torch.stack(chans).expand(batch, 3, size, size).contiguous()


def _pixel_centres(size: int) -> torch.Tensor:
    """Normalised coordinates of pixel centres (align_corners=False), [size, size, 3] homogeneous."""
    c = (torch.arange(size, dtype=torch.float64) * 2 + 1) / size - 1
    ys, xs = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)


def test_shapes_dtypes_and_uint8_input():
    torch.manual_seed(0)
    crop = RandomResizedCropFlip(24)
    x = (torch.rand(5, 3, 40, 30) * 255).to(torch.uint8)
    out, params = crop(x)
    assert out.shape == (5, 3, 24, 24) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert params["crop"].shape == (5, 3, 3) and params["crop"].dtype == torch.float32
    assert torch.equal(params["crop"][:, 2], torch.tensor([0.0, 0.0, 1.0]).expand(5, 3))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        crop(torch.rand(3, 8, 8))


def test_theta_maps_source_to_view_including_flips():
    """A coordinate-ramp source shows, at view pixel u, the source coordinate θ⁻¹·u."""
    torch.manual_seed(1)
    size, out = 40, 20
    grid = _pixel_centres(size).float()
    source = torch.stack([grid[..., 0], grid[..., 1], torch.zeros(size, size)]).expand(
        64, 3, size, size
    )
    crop = RandomResizedCropFlip(out, scale=(0.2, 1.0), flip_p=0.5)
    view, params = crop(source.contiguous())
    theta = params["crop"].double()
    flips = theta[:, 0, 0] < 0
    assert 10 < flips.sum() < 54  # both kinds present
    expected = torch.einsum("bij,hwj->bhwi", torch.linalg.inv(theta), _pixel_centres(out))
    inside = (expected[..., :2].abs() <= 1 - 1 / size).all(
        -1
    )  # bilinear is exact away from the border
    got = view[:, :2].permute(0, 2, 3, 1).double()
    assert inside.float().mean() > 0.9
    assert (got - expected[..., :2])[inside].abs().max() < 1e-4


def test_crop_boxes_follow_scale_and_ratio():
    torch.manual_seed(2)
    crop = RandomResizedCropFlip(16, scale=(0.3, 0.6), ratio=(0.5, 2.0))
    boxes = crop.sample_boxes(4000, 60, 60, torch.device("cpu"))
    cx, cy, hw, hh = boxes.unbind(1)
    area = hw * hh  # fraction of the image: (2hw * 2hh) / 4
    assert area.min() >= 0.3 - 1e-6 and area.max() <= 0.6 + 1e-6
    ratio = hw / hh
    assert ratio.min() >= 0.5 - 1e-6 and ratio.max() <= 2.0 + 1e-6
    assert (cx.abs() <= 1 - hw + 1e-6).all() and (cy.abs() <= 1 - hh + 1e-6).all()
    # centres spread over the allowed range
    assert (cx / (1 - hw)).abs().max() > 0.95


def test_fallback_for_impossible_ratio():
    crop = RandomResizedCropFlip(8, scale=(1.0, 1.0), ratio=(3.0, 4.0))
    boxes = crop.sample_boxes(10, 10, 10, torch.device("cpu"))
    # no attempt fits: torchvision's fallback is the full width at the smallest allowed ratio
    assert torch.allclose(boxes[:, 2], torch.ones(10))
    assert torch.allclose(boxes[:, 3], torch.full((10,), 1 / 3.0))


def test_relative_affine_round_trip_exact():
    torch.manual_seed(3)
    crop = RandomResizedCropFlip(32, flip_p=0.5)
    theta_a = crop.sample_theta(256, 64, 48, torch.device("cpu"))
    theta_b = crop.sample_theta(256, 64, 48, torch.device("cpu"))
    rel = relative_affine(theta_a.double(), theta_b.double())
    assert (rel @ theta_a.double() - theta_b.double()).abs().max() < 1e-5
    eye = relative_affine(theta_a.double(), theta_a.double())
    assert (eye - torch.eye(3, dtype=torch.float64)).abs().max() < 1e-6
    # the component's 4 targets are the informative entries of that matrix's top two rows
    targets = crop.component.relative(theta_a, theta_b)
    expected = rel[:, [0, 0, 1, 1], [0, 2, 1, 2]]
    assert torch.allclose(targets.double(), expected, atol=1e-5)
    assert (rel[:, 0, 1] == 0).all() and (rel[:, 1, 0] == 0).all()
    # a flip in exactly one view shows as a negative x-scale
    flip_a, flip_b = theta_a[:, 0, 0] < 0, theta_b[:, 0, 0] < 0
    assert torch.equal(rel[:, 0, 0] < 0, flip_a ^ flip_b)


def test_sampling_matrix_flip_negates_only_its_00_entry():
    torch.manual_seed(4)
    crop = RandomResizedCropFlip(16, flip_p=1.0)
    torch.manual_seed(4)
    flipped = crop.sample_theta(8, 32, 32, torch.device("cpu"))
    crop.flip_p = 0.0
    torch.manual_seed(4)
    plain = crop.sample_theta(8, 32, 32, torch.device("cpu"))
    assert torch.allclose(flipped[:, 0], -plain[:, 0])
    grid_f, grid_p = sampling_matrix(flipped), sampling_matrix(plain)
    assert torch.allclose(grid_f[:, 0, 0], -grid_p[:, 0, 0])
    assert torch.allclose(grid_f[:, :, 1:], grid_p[:, :, 1:], atol=1e-6)


def test_warping_view_a_by_relative_action_reproduces_view_b():
    torch.manual_seed(5)
    source = _smooth_image(32, 64)
    crop = RandomResizedCropFlip(48, scale=(0.3, 1.0), flip_p=0.5)
    view_a, pa = crop(source)
    view_b, pb = crop(source)
    rel = relative_affine(pa["crop"].double(), pb["crop"].double()).float()
    predicted = warp_affine(view_a, rel, 48)
    # view-b pixels whose preimage lies inside view a (away from its border)
    where_in_a = torch.einsum("bij,hwj->bhwi", torch.linalg.inv(rel.double()), _pixel_centres(48))
    inside = (where_in_a[..., :2].abs() <= 1 - 2 / 48).all(-1).unsqueeze(1).expand_as(view_b)
    assert inside.float().mean() > 0.1
    err = (predicted - view_b).abs()[inside]
    assert err.max() < 0.02
    # the other composition order (a plausible convention mix-up) does not reproduce view b
    swapped = torch.linalg.inv(pa["crop"].double()) @ pb["crop"].double()
    wrong = warp_affine(view_a, swapped.float(), 48)
    assert (wrong - view_b).abs()[inside].max() > 0.05


def test_identity_crop_keeps_the_image():
    x = _smooth_image(2, 16)
    crop = RandomResizedCropFlip(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0)
    out, params = crop(x)
    assert torch.allclose(params["crop"], torch.eye(3).expand(2, 3, 3))
    assert torch.allclose(out, x, atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [dict(scale=(0.0, 1.0)), dict(scale=(0.5, 0.2)), dict(flip_p=1.5), dict(interpolation="area")],
)
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        RandomResizedCropFlip(8, **bad)


def test_bins_follow_paper_ranges():
    crop = RandomResizedCropFlip(8)
    comp = crop.component
    assert comp.n_classes == 6
    # targets: scale_x, shift_x, scale_y, shift_y
    action = torch.tensor([[-2.5, -0.6, 1.99, 0.49]])
    assert comp.classes(action).tolist() == [[0, 0, 5, 5]]
    assert math.isclose(float(comp.normalised(torch.tensor([[2.0, 0.5, 0, 0]]))[0, 1]), 1.0)


def test_sampling_matrix_is_the_inverse_of_general_affines():
    torch.manual_seed(6)
    theta = torch.eye(3).repeat(16, 1, 1)
    theta[:, :2] += 0.4 * torch.randn(16, 2, 3)
    assert torch.allclose(sampling_matrix(theta) @ theta, torch.eye(3).expand(16, 3, 3), atol=1e-5)
