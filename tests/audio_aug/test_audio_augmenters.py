"""Each log-mel augmenter: shapes, recorded parameters, identity at p=0, exact actions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stec.actions import ActionSpace, invert_affine
from stec_audio.augment import (
    NATS_PER_DB,
    FrequencyShift,
    LinearFader,
    Mixup,
    RandomResizeCrop,
    SpecAugmentMask,
    TimeCrop,
    TimeStretch,
)
from stec_audio.augment.spectral import diagonal_grid


def time_ramp(b: int = 6, f: int = 16, t: int = 120) -> torch.Tensor:
    """``x[b, 0, f, t] = t + 1000 b``: every value tells its clip and its frame."""
    ramp = torch.arange(t, dtype=torch.float32).expand(b, 1, f, t)
    return ramp + 1000.0 * torch.arange(b, dtype=torch.float32).reshape(b, 1, 1, 1)


def freq_ramp(b: int = 6, f: int = 16, t: int = 20) -> torch.Tensor:
    return torch.arange(f, dtype=torch.float32).reshape(1, 1, f, 1).expand(b, 1, f, t).clone()


def targets(aug, params_a, params_b):
    return ActionSpace(aug.components()).targets(params_a, params_b)


# --------------------------------------------------------------------------- TimeCrop
def test_time_crop_content_matches_recorded_offset():
    torch.manual_seed(0)
    x = time_ramp(b=8, t=200)
    aug = TimeCrop(frames=32, action_range=(-6, 6))
    crop_a, pa = aug(x)
    crop_b, pb = aug(x)
    assert crop_a.shape == (8, 1, 16, 32) and crop_a.dtype == torch.float32
    base = 1000.0 * torch.arange(8)
    for crop, params in ((crop_a, pa), (crop_b, pb)):
        start = crop[:, 0, 0, 0] - base
        assert torch.equal(params["time_crop"][:, 0] * 32, start)
        assert torch.equal(crop - crop[..., :1], torch.arange(32.0).expand_as(crop))
        assert start.min() >= 0 and start.max() <= 200 - 32
    action = aug.component.relative(pa["time_crop"], pb["time_crop"])[:, 0]
    expected = (crop_b[:, 0, 0, 0] - crop_a[:, 0, 0, 0]) / 32
    assert torch.allclose(action, expected)
    assert not torch.equal(pa["time_crop"], pb["time_crop"])


def test_time_crop_p0_takes_the_centre_and_short_clips_are_padded():
    x = time_ramp(b=3, t=100)
    crop, params = TimeCrop(frames=40, p=0.0)(x)
    assert torch.equal(params["time_crop"][:, 0], torch.full((3,), 30 / 40))
    assert torch.equal(crop[:, 0, 0, 0] - 1000.0 * torch.arange(3), torch.full((3,), 30.0))
    short, params = TimeCrop(frames=40, pad_value=-7.0)(time_ramp(b=2, t=25))
    assert short.shape == (2, 1, 16, 40)
    assert torch.equal(params["time_crop"], torch.zeros(2, 1))
    assert (short[..., 25:] == -7.0).all() and torch.equal(short[..., :25], time_ramp(b=2, t=25))


def test_energy_weighted_crops_find_a_short_event():
    torch.manual_seed(1)
    b, t, frames = 200, 501, 96
    x = torch.full((b, 1, 8, t), -2.0) + 0.1 * torch.randn(b, 1, 8, t)
    onset = torch.randint(0, t - 10, (b,))
    steps = torch.arange(t)
    event = (steps >= onset[:, None]) & (steps < onset[:, None] + 10)
    x = x + 4.0 * event[:, None, None, :]

    def hit_rate(aug):
        _, params = aug(x)
        start = (params["time_crop"][:, 0] * frames).round().long()
        overlap = (torch.minimum(start + frames, onset + 10) - torch.maximum(start, onset)).clamp(
            min=0
        )
        return (overlap >= 5).float().mean().item()  # at least half of the event

    uniform = hit_rate(TimeCrop(frames=frames))
    soft = hit_rate(TimeCrop(frames=frames, energy_weighted=True))
    power = hit_rate(TimeCrop(frames=frames, energy_weighted=True, norm_std=4.0))
    mixed = hit_rate(TimeCrop(frames=frames, energy_weighted=True, norm_std=4.0, uniform_mix=0.5))
    assert uniform < 0.35
    assert 0.45 < soft < power
    assert power > 0.9  # events at the clip edges fit fewer offsets
    assert uniform < mixed < power


# --------------------------------------------------------------------------- RandomResizeCrop
def test_rrc_relative_action_maps_view_a_coordinates_to_view_b_coordinates():
    torch.manual_seed(2)
    x = torch.randn(16, 1, 64, 96)
    aug = RandomResizeCrop()
    out_a, pa = aug(x)
    out_b, pb = aug(x)
    assert out_a.shape == x.shape and out_a.dtype == torch.float32
    sample_a, sample_b = invert_affine(pa["rrc"]).double(), invert_affine(pb["rrc"]).double()
    # a point seen at u_a in view a is seen at u_b = rel u_a in view b: both sample the same
    # input point, sample_b (rel u_a) == sample_a u_a
    rel = torch.linalg.solve(sample_b, sample_a)  # θ_b⁻¹ θ_a in sampling matrices
    grid_a = F.affine_grid(sample_a[:, :2], [16, 1, 64, 96], align_corners=False)
    u_a = F.affine_grid(
        torch.eye(3, dtype=torch.float64)[:2].expand(16, 2, 3), [16, 1, 64, 96], align_corners=False
    )
    u_b = u_a @ rel[:, None, :2, :2].transpose(-1, -2) + rel[:, None, None, :2, 2]
    via_b = u_b @ sample_b[:, None, :2, :2].transpose(-1, -2) + sample_b[:, None, None, :2, 2]
    assert (via_b - grid_a).abs().max() < 1e-5
    action = aug.component.relative(pa["rrc"], pb["rrc"])
    assert torch.allclose(action.double(), rel[:, [0, 0, 1, 1], [0, 2, 1, 2]], atol=1e-5)


def test_rrc_target_depends_on_how_the_crops_relate_not_where_they_sit():
    # time crops of widths 0.6 and 1.2 with the same relative geometry: centred at 0 / 0,
    # or both moved to 0.4 / 0.4 (a common shift of the two crops)
    def sampling(w, c):
        theta = torch.eye(3).repeat(len(w), 1, 1)
        theta[:, 0, 0], theta[:, 0, 2] = torch.tensor(w), torch.tensor(c)
        return theta

    comp = RandomResizeCrop().component
    rec = lambda w, c: comp.record(view_to_source=sampling(w, c))  # noqa: E731
    space = ActionSpace([comp])
    here = space.targets(rec([0.6], [0.0]), rec([1.2], [0.0]))
    moved = space.targets(rec([0.6], [0.4]), rec([1.2], [0.4]))
    assert torch.equal(here.classes, moved.classes)
    # view a spans half of view b: a time ratio of 0.5, no shift
    assert torch.allclose(
        comp.relative(rec([0.6], [0.4])["rrc"], rec([1.2], [0.4])["rrc"]),
        torch.tensor([[0.5, 0.0, 1.0, 0.0]]),
    )


def test_rrc_crops_stay_in_the_canvas_and_sample_where_theta_says():
    torch.manual_seed(3)
    b, f, t = 32, 16, 40
    aug = RandomResizeCrop(interpolation="bilinear")
    out, params = aug(time_ramp(b=b, f=f, t=t) - 1000.0 * torch.arange(b).reshape(b, 1, 1, 1))
    theta = invert_affine(params["rrc"])  # the record is source -> view; θ samples the input
    w, c_t, h, c_f = theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2]
    assert (w >= 0.6 - 1e-6).all() and (w <= 1.5 + 1e-6).all() and (h <= 1.0 + 1e-6).all()
    assert (c_t.abs() + w <= 1.5 + 1e-5).all() and (c_f.abs() + h <= 1.0 + 1e-5).all()
    assert (theta[:, 0, 1] == 0).all() and (theta[:, 1, 0] == 0).all()
    # output column j samples input time u = w * u_j + c_t (pixel-edge convention)
    u_out = (2 * torch.arange(t) + 1) / t - 1
    pos = ((w[:, None] * u_out + c_t[:, None]) + 1) * t / 2 - 0.5
    inside = (pos >= 0) & (pos <= t - 1)
    row = out[:, 0, f // 2, :]
    assert (row[inside] - pos[inside]).abs().max() < 1e-3
    # the frequency axis is y: a frequency ramp samples rows at h * v + c_f
    out_f, params = RandomResizeCrop(interpolation="bilinear")(freq_ramp(b=b, f=f, t=t))
    theta = invert_affine(params["rrc"])
    v_out = (2 * torch.arange(f) + 1) / f - 1
    pos = ((theta[:, 1, 1, None] * v_out + theta[:, 1, 2, None]) + 1) * f / 2 - 0.5
    inside = (pos >= 0) & (pos <= f - 1)
    col = out_f[:, 0, :, t // 2]
    assert (col[inside] - pos[inside]).abs().max() < 1e-3


def test_diagonal_grid_equals_affine_grid():
    torch.manual_seed(13)
    theta = RandomResizeCrop().sample_theta(8, torch.device("cpu"))
    expected = F.affine_grid(theta[:, :2], [8, 1, 12, 20], align_corners=False)
    assert torch.allclose(diagonal_grid(theta, 12, 20), expected, atol=1e-6)


def test_half_applied_views_keep_untouched_examples_exact():
    torch.manual_seed(14)
    x = torch.randn(64, 1, 16, 24)
    for aug, name, identity in (
        (RandomResizeCrop(p=0.5), "rrc", torch.eye(3)),
        (TimeStretch(p=0.5), "time_stretch", torch.ones(1)),
        (FrequencyShift(p=0.5), "freq_shift", torch.zeros(1)),
        (LinearFader(p=0.5), "gain", torch.zeros(2)),
        (Mixup(p=0.5, source="batch"), "mixup", torch.zeros(1)),
    ):
        out, params = aug(x)
        untouched = (params[name] == identity).flatten(1).all(dim=1)
        assert 10 < int(untouched.sum()) < 54, name
        assert torch.equal(out[untouched], x[untouched]), name
        assert not torch.equal(out[~untouched], x[~untouched]), name


def test_rrc_p0_is_the_identity_and_bins_use_audio_ranges():
    x = torch.randn(4, 1, 64, 96)
    out, params = RandomResizeCrop(p=0.0)(x)
    assert torch.equal(out, x)
    assert torch.equal(params["rrc"], torch.eye(3).expand(4, 3, 3))
    torch.manual_seed(4)
    aug = RandomResizeCrop()
    _, pa = aug(torch.randn(512, 1, 8, 16))
    _, pb = aug(torch.randn(512, 1, 8, 16))
    classes = targets(aug, pa, pb).classes
    # the time scale and the time translation use at least five of the six bins
    assert len(classes[:, 0].unique()) >= 5 and len(classes[:, 2].unique()) >= 5


# --------------------------------------------------------------------------- FrequencyShift
def test_frequency_shift_moves_content_by_recorded_bins():
    torch.manual_seed(5)
    x = freq_ramp(b=32)
    aug = FrequencyShift(max_shift=3, fill=-1.0)
    out, params = aug(x)
    k = params["freq_shift"][:, 0]
    assert set(k.tolist()) <= {-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0} and len(k.unique()) > 3
    f = torch.arange(16.0)
    expected = f[None, :] - k[:, None]
    valid = (expected >= 0) & (expected <= 15)
    expected = torch.where(valid, expected, torch.full_like(expected, -1.0))
    assert torch.equal(out[:, 0, :, 0], expected)
    _, pb = aug(x)
    assert torch.equal(
        aug.component.relative(params["freq_shift"], pb["freq_shift"]),
        pb["freq_shift"] - params["freq_shift"],
    )


def test_fractional_frequency_shift_and_p0():
    torch.manual_seed(6)
    x = freq_ramp(b=16)
    out, params = FrequencyShift(max_shift=2.5, integer=False, fill="edge")(x)
    k = params["freq_shift"][:, 0]
    assert (k.abs() <= 2.5).all() and (k != k.round()).any()
    expected = (torch.arange(16.0)[None, :] - k[:, None]).clamp(0, 15)
    assert torch.allclose(out[:, 0, :, 3], expected, atol=1e-5)
    out, params = FrequencyShift(p=0.0)(x)
    assert torch.equal(out, x) and torch.equal(params["freq_shift"], torch.zeros(16, 1))


# --------------------------------------------------------------------------- TimeStretch
def test_time_stretch_samples_around_the_centre():
    torch.manual_seed(7)
    t = 41
    x = time_ramp(b=16, t=t) - 1000.0 * torch.arange(16).reshape(16, 1, 1, 1)
    aug = TimeStretch(scale=(0.7, 1.4), fill=-5.0)
    out, params = aug(x)
    s = params["time_stretch"][:, 0]
    assert (s >= 0.7 - 1e-6).all() and (s <= 1.4 + 1e-6).all()
    centre = (t - 1) / 2
    pos = centre + (torch.arange(t) - centre)[None, :] / s[:, None]
    inside = (pos >= 0) & (pos <= t - 1)
    assert torch.allclose(out[:, 0, 0][inside], pos[inside], atol=1e-4)
    assert (out[:, 0, 0][~inside] == -5.0).all()
    _, pb = aug(x)
    rel = aug.component.relative(params["time_stretch"], pb["time_stretch"])
    assert torch.allclose(rel, torch.log(pb["time_stretch"] / params["time_stretch"]), atol=1e-6)
    out, params = TimeStretch(p=0.0)(x)
    assert torch.equal(out, x) and torch.equal(params["time_stretch"], torch.ones(16, 1))


# --------------------------------------------------------------------------- SpecAugmentMask
def test_spec_mask_records_position_and_width_and_the_action_is_the_pair():
    torch.manual_seed(8)
    x = torch.randn(64, 1, 16, 50) + 10.0
    aug = SpecAugmentMask(time_masks=1, max_time_width=10, freq_masks=1, max_freq_width=4)
    out, pa = aug(x)
    masked = out == 0.0
    time_cols = masked[:, 0].all(dim=1).sum(dim=1)  # fully masked frames
    freq_rows = masked[:, 0].all(dim=2).sum(dim=1)
    width_t = (pa["time_mask"][:, 1] * 10).round()
    width_f = (pa["freq_mask"][:, 1] * 4).round()
    assert torch.equal(time_cols.float(), width_t) and torch.equal(freq_rows.float(), width_f)
    start_t = (pa["time_mask"][:, 0] * 50).round().long()
    has = width_t > 0
    first = masked[:, 0].all(dim=1).float().argmax(dim=1)
    assert torch.equal(first[has], start_t[has])
    assert (pa["time_mask"][~has] == 0).all()
    _, pb = aug(x)
    space = ActionSpace(aug.components())
    tg = space.targets(pa, pb)
    assert space.n_targets == 8
    pair = torch.cat([pa["time_mask"], pb["time_mask"]], dim=1)
    assert torch.equal(tg.values[:, :4], pair * 2 - 1)
    assert torch.equal(tg.classes[:, :4], space["time_mask"].classes(pair))


def test_spec_mask_p0_records_width_zero():
    x = torch.randn(5, 1, 16, 30)
    out, params = SpecAugmentMask(p=0.0)(x)
    assert torch.equal(out, x)
    assert torch.equal(params["time_mask"], torch.zeros(5, 2))
    assert torch.equal(params["freq_mask"], torch.zeros(5, 2))


# --------------------------------------------------------------------------- LinearFader
@pytest.mark.parametrize("norm_std", [None, 4.0])
def test_fader_adds_the_recorded_ramp(norm_std):
    torch.manual_seed(9)
    x = torch.randn(8, 1, 16, 30)
    aug = LinearFader(max_gain=6.0 if norm_std else 1.0, norm_std=norm_std)
    out, params = aug(x)
    gains = params["gain"]
    scale = NATS_PER_DB / norm_std if norm_std else 1.0
    diff = out - x
    assert torch.allclose(diff[..., 0], gains[:, :1, None].expand(8, 1, 16) * scale, atol=1e-5)
    assert torch.allclose(diff[..., -1], gains[:, 1:, None].expand(8, 1, 16) * scale, atol=1e-5)
    assert torch.allclose(diff[..., 1:] - diff[..., :-1], diff[..., 1:2] - diff[..., :1], atol=1e-5)
    _, pb = aug(x)
    rel = aug.component.relative(params["gain"], pb["gain"])
    assert rel.shape == (8, 2) and torch.allclose(rel, pb["gain"] - params["gain"])
    out, params = LinearFader(p=0.0)(x)
    assert torch.equal(out, x) and torch.equal(params["gain"], torch.zeros(8, 2))


def test_db_convention_is_power():
    assert math.isclose(10 * NATS_PER_DB, math.log(10.0))


# --------------------------------------------------------------------------- Mixup
def test_mixup_with_bank_mixes_in_the_power_domain():
    torch.manual_seed(10)
    aug = Mixup(ratio=(0.1, 0.4), n_memory=16)
    background = torch.ones(4, 1, 8, 12)
    out, params = aug(background)  # empty bank: mixes clips of the batch (all equal)
    assert torch.allclose(out, background, atol=1e-6)
    x = torch.zeros(6, 1, 8, 12)
    out, params = aug(x)
    alpha = params["mixup"][:, 0]
    assert ((alpha >= 0.1) & (alpha <= 0.4)).all()
    expected = torch.log((1 - alpha) + alpha * math.e)
    assert torch.allclose(out[:, 0, 0, 0], expected, atol=1e-6)
    out, params = Mixup(p=0.0)(x)
    assert torch.equal(out, x) and torch.equal(params["mixup"], torch.zeros(6, 1))


def test_mixup_power_domain_mixes_true_power():
    torch.manual_seed(12)
    aug = Mixup(ratio=(0.1, 0.4), norm_std=2.0, domain="power")
    aug(torch.ones(4, 1, 8, 12))
    out, params = aug(torch.zeros(5, 1, 8, 12))
    alpha = params["mixup"][:, 0]
    expected = torch.log((1 - alpha) + alpha * math.exp(2.0)) / 2.0
    assert torch.allclose(out[:, 0, 0, 0], expected, atol=1e-6)
    # the default (BYOL-A) domain ignores norm_std: the exp of the normalised values
    plain = Mixup(ratio=(0.1, 0.4), norm_std=2.0)
    plain(torch.ones(4, 1, 8, 12))
    out, params = plain(torch.zeros(5, 1, 8, 12))
    alpha = params["mixup"][:, 0]
    assert torch.allclose(out[:, 0, 0, 0], torch.log((1 - alpha) + alpha * math.e), atol=1e-6)
    with pytest.raises(ValueError, match="domain='power' needs norm_std"):
        Mixup(domain="power")
    with pytest.raises(ValueError, match="domain must be one of"):
        Mixup(domain="linear")


def test_mixup_bank_is_a_ring_buffer_and_checkpoints():
    aug = Mixup(n_memory=6)
    for i in range(3):
        aug(torch.full((4, 1, 2, 3), float(i)) + torch.arange(4.0).reshape(4, 1, 1, 1) / 10)
    assert int(aug.bank_count) == 6 and aug.bank.shape == (6, 1, 2, 3)
    values = sorted(aug.bank[:, 0, 0, 0].tolist())
    assert values == pytest.approx([1.2, 1.3, 2.0, 2.1, 2.2, 2.3])
    state = aug.state_dict()
    assert {"bank", "bank_count", "bank_pos"} <= set(state)
    fresh = Mixup(n_memory=6)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.bank, aug.bank) and int(fresh.bank_pos) == int(aug.bank_pos)
    # a new input shape resets the bank
    aug(torch.zeros(2, 1, 2, 5))
    assert aug.bank.shape == (6, 1, 2, 5) and int(aug.bank_count) == 2


def test_mixup_batch_source_never_mixes_a_clip_with_itself():
    torch.manual_seed(11)
    x = torch.arange(8.0).reshape(8, 1, 1, 1).expand(8, 1, 4, 4).contiguous()
    out, params = Mixup(ratio=(0.3, 0.3 + 1e-6), source="batch")(x)
    alpha = params["mixup"][:, 0]
    partner = torch.log((out[:, 0, 0, 0].exp() - (1 - alpha) * x[:, 0, 0, 0].exp()) / alpha)
    partner = partner.round()
    assert (partner != x[:, 0, 0, 0]).all()
    assert sorted(partner.tolist()) == list(range(8))


@pytest.mark.parametrize(
    "make",
    [
        lambda: TimeCrop(frames=8),
        lambda: RandomResizeCrop(),
        lambda: FrequencyShift(),
        lambda: TimeStretch(),
        lambda: SpecAugmentMask(),
        lambda: LinearFader(),
        lambda: Mixup(),
    ],
)
def test_identity_views_give_the_identity_action(make):
    aug = make()
    aug.p = 0.0
    x = torch.randn(4, 1, 16, 24)
    out, pa = aug(x)
    _, pb = aug(x)
    if not isinstance(aug, TimeCrop):
        assert torch.equal(out, x)
    space = ActionSpace(aug.components())
    tg = space.targets(pa, pb)
    assert tg.mask.all()
    for comp in space.components:
        rel = comp.relative(pa[comp.name], pb[comp.name])
        if comp.name == "rrc":
            assert torch.allclose(rel, torch.tensor([1.0, 0, 1, 0]).expand(4, 4))
        elif comp.name in ("time_mask", "freq_mask"):
            assert (rel[:, 1::2] == 0).all()
        elif comp.name != "time_crop":
            assert (rel == 0).all()
        else:
            assert (rel == 0).all()  # both views take the centre crop


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="frames"):
        TimeCrop(frames=0)
    with pytest.raises(ValueError, match="interpolation"):
        RandomResizeCrop(interpolation="area")
    with pytest.raises(ValueError, match="ratio"):
        Mixup(ratio=(0.0, 1.5))
    with pytest.raises(ValueError, match="source"):
        Mixup(source="disk")
    with pytest.raises(ValueError, match="fill"):
        FrequencyShift(fill="wrap")
    with pytest.raises(ValueError, match=r"\[B, C, F, T\]"):
        TimeCrop()(torch.zeros(3, 64, 100))
