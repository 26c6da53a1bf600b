"""Every built-in action component, audio and vision, gives an egocentric relative action.

- Applying the same extra transform to both views (shift both crops, scale both, shift
  both in frequency, add the same gain, ...) leaves the relative-action target unchanged.
- Swapping the views gives the inverse action wherever one exists.
- Non-invertible actions (masks, grayscale, solarisation, colour order) are declared as
  such, so that the inverse model is not asked for a relation they do not have.

The records come from the real augmenters. The geometric ones (crops) are also driven
through their samplers, so that the test checks what each augmenter *records*, which is
where a convention mix-up lives.
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from stec.actions import ActionSpace, Affine, Categorical, Continuous, invert_affine
from stec_audio.augment import (
    FrequencyShift,
    LinearFader,
    Mixup,
    PitchShift,
    RandomResizeCrop,
    SpecAugmentMask,
    TimeCrop,
    TimeFrequencyCrop,
    TimeStretch,
)
from stec_vision.augment import (
    ColorJitter,
    GaussianBlur,
    RandomGrayscale,
    RandomResizedCropFlip,
    Solarize,
)


def _audio_input() -> torch.Tensor:
    return torch.randn(64, 1, 16, 200)


def _image_input() -> torch.Tensor:
    return torch.rand(64, 3, 24, 24)


AUGMENTERS = [
    (lambda: TimeCrop(frames=32, action_range=(-5, 5)), _audio_input),
    (
        lambda: TimeFrequencyCrop(32, n_mels=16, time_scale=(0.8, 1.25), freq_scale=(0.8, 1.25)),
        _audio_input,
    ),
    (lambda: Mixup(source="batch"), _audio_input),
    (lambda: RandomResizeCrop(), _audio_input),
    (lambda: FrequencyShift(max_shift=3), _audio_input),
    (lambda: PitchShift(n_mels=16), _audio_input),
    (lambda: TimeStretch(p=1.0), _audio_input),
    (lambda: LinearFader(max_gain=6.0, norm_std=3.0), _audio_input),
    (lambda: SpecAugmentMask(), _audio_input),
    (lambda: RandomResizedCropFlip(16, scale=(0.2, 1.0)), _image_input),
    (lambda: ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0), _image_input),
    (lambda: GaussianBlur(p=0.7), _image_input),
    (lambda: RandomGrayscale(p=0.5), _image_input),
    (lambda: Solarize(p=0.5), _image_input),
]
NON_INVERTIBLE = {"time_mask", "freq_mask", "color_order", "grayscale", "solarize"}


def _records():
    torch.manual_seed(0)
    for make, data in AUGMENTERS:
        aug = make()
        x = data()
        _, pa = aug(x)
        _, pb = aug(x)
        for comp in aug.components():
            yield comp, pa, pb


def _markers(params: dict) -> dict:
    return {k: v for k, v in params.items() if "." in k}


def _common_transform(comp, pa: dict, pb: dict) -> tuple[dict, dict]:
    """The same extra action applied to both views' records."""
    gen = torch.Generator().manual_seed(1)
    batch = pa[comp.name].shape[0]
    out_a, out_b = dict(pa), dict(pb)
    if isinstance(comp, Affine):
        # a common change of source coordinates: scale and shift both views' fields
        g = torch.eye(3).repeat(batch, 1, 1)
        g[:, 0, 0], g[:, 1, 1] = 0.5 + torch.rand(batch, generator=gen), 0.7
        g[:, :2, 2] = torch.rand(batch, 2, generator=gen) - 0.5
        g = g.to(pa[comp.name].dtype)
        out_a[comp.name] = pa[comp.name] @ g
        out_b[comp.name] = pb[comp.name] @ g
    elif comp.relation == "difference":
        shift = torch.randn(batch, comp.dim, generator=gen)
        out_a[comp.name] = pa[comp.name].reshape(batch, -1) + shift
        out_b[comp.name] = pb[comp.name].reshape(batch, -1) + shift
    elif comp.relation == "log_ratio":
        scale = 0.5 + torch.rand(batch, comp.dim, generator=gen)
        out_a[comp.name] = pa[comp.name].reshape(batch, -1) * scale
        out_b[comp.name] = pb[comp.name].reshape(batch, -1) * scale
    else:
        raise AssertionError(f"no common transform for {comp.name}")
    return out_a, out_b


@pytest.mark.parametrize("comp, pa, pb", list(_records()), ids=lambda v: getattr(v, "name", ""))
def test_every_builtin_component_is_egocentric(comp, pa, pb):
    space = ActionSpace([comp])
    if comp.name in NON_INVERTIBLE:
        assert not comp.invertible
        assert isinstance(comp, (Continuous, Categorical)) and comp.relation in ("pair", "target")
        return
    assert comp.invertible, comp.name
    batch = pa[comp.name].shape[0]
    p_a, p_b = comp.read(pa, batch, "cpu", "a"), comp.read(pb, batch, "cpu", "b")
    action = comp.relative(p_a, p_b)
    moved_a, moved_b = _common_transform(
        comp, {comp.name: p_a, **_markers(pa)}, {comp.name: p_b, **_markers(pb)}
    )
    moved = space.targets(moved_a, moved_b)
    original = space.targets(pa, pb)
    assert torch.equal(moved.mask, original.mask)
    valid = original.mask.all(1)
    moved_action = comp.relative(moved_a[comp.name], moved_b[comp.name])
    assert torch.allclose(moved_action[valid], action[valid], atol=1e-4), comp.name
    agree = (moved.classes == original.classes)[valid].float().mean()
    assert agree > 0.99, comp.name  # only float noise right on a bin edge may differ
    back = comp.relative(p_b, p_a)
    if isinstance(comp, Affine):
        # scale_x, shift_x, scale_y, shift_y of the inverse map: 1/s and -t/s
        s, t = action[:, [0, 2]], action[:, [1, 3]]
        assert torch.allclose(back[:, [0, 2]], 1 / s, atol=1e-4)
        assert torch.allclose(back[:, [1, 3]], -t / s, atol=1e-4)
    else:
        assert torch.allclose(back[valid], -action[valid], atol=1e-5), comp.name


def _geometry_pair(common: torch.Tensor | None, sampler: str, aug, shape) -> dict:
    """Targets of two fixed crops (and of the same crops moved by ``common``), produced
    by the augmenter's own forward pass, with its sampler patched."""
    torch.manual_seed(3)
    first = getattr(aug, sampler)(*shape)
    second = getattr(aug, sampler)(*shape)
    if common is not None:
        first, second = common(first), common(second)
    out = []
    for theta in (first, second):
        with mock.patch.object(type(aug), sampler, lambda self, *a, t=theta: t):
            x = _audio_input() if isinstance(aug, RandomResizeCrop) else _image_input()
            out.append(aug(x)[1])
    return ActionSpace(aug.components()).targets(*out)


def test_audio_crops_moved_together_keep_their_target():
    aug = RandomResizeCrop()
    shape = (64, torch.device("cpu"))
    # the sampling matrices map view -> input: moving both crops by the same shift and
    # scaling both by the same factor is a common map applied on the input side
    common = torch.tensor([[0.8, 0.0, 0.3], [0.0, 1.0, -0.2], [0.0, 0.0, 1.0]])
    base = _geometry_pair(None, "sample_theta", aug, shape)
    moved = _geometry_pair(lambda s: common @ s, "sample_theta", aug, shape)
    assert (base.classes == moved.classes).float().mean() > 0.99


def test_image_crops_moved_together_keep_their_target():
    aug = RandomResizedCropFlip(16, scale=(0.2, 0.5))
    shape = (64, 24, 24, torch.device("cpu"))
    # θ maps source -> view: a common move of both crops by G is θ G⁻¹
    g = torch.tensor([[0.9, 0.0, 0.1], [0.0, 0.8, -0.1], [0.0, 0.0, 1.0]])
    base = _geometry_pair(None, "sample_theta", aug, shape)
    g_inv = invert_affine(g.expand(64, 3, 3))
    moved = _geometry_pair(lambda t: t @ g_inv, "sample_theta", aug, shape)
    assert (base.classes == moved.classes).float().mean() > 0.99
