"""The composed time-frequency map: one resampling per view, recorded exactly.

What a view shows must sit where its recorded map says, the relative map must carry view
a's content onto view b's, and the maps must compose (a pitch shift after a frequency
scale, a time crop of a crop) as affine maps in (crop lengths, semitones)."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from stec.actions import ActionSpace, invert_affine, relative_affine
from stec.augment import TwoViews
from stec_audio.augment import SEPARATE_AUDIO_PIPELINE, build_audio_pipeline
from stec_audio.augment.geometry import TimeFrequencyCrop
from stec_audio.augment.pitch import hz_to_mel

N_MELS, CLIP, FRAMES = 64, 400, 96


def _bin_of(aug: TimeFrequencyCrop, hz: float) -> float:
    return float((hz_to_mel(torch.tensor(hz)) - aug.mel_first) / aug.mel_step)


def _semitones_of_bin(aug: TimeFrequencyCrop, k: float) -> float:
    mel = aug.mel_first + aug.mel_step * k
    hz = 700.0 * (10 ** (mel / 2595.0) - 1.0)
    return 12.0 * torch.log2(torch.tensor(hz / aug.f_ref)).item()


def _tone_and_click(aug: TimeFrequencyCrop, batch: int, hz: float, frame: int) -> torch.Tensor:
    x = torch.zeros(batch, 1, N_MELS, CLIP)
    x[:, 0, round(_bin_of(aug, hz)), :] = 4.0
    x[:, 0, :, frame] = 4.0
    return x


def _where(view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B]`` frame of the click and mel bin of the tone in each view."""
    return view[:, 0].mean(1).argmax(-1), view[:, 0].mean(2).argmax(-1)


def _to_view(theta_source_to_view: torch.Tensor, tau: float, phi: float) -> torch.Tensor:
    point = torch.tensor([tau, phi, 1.0], dtype=theta_source_to_view.dtype)
    return theta_source_to_view @ point  # [B, 3]


def test_each_view_shows_the_tone_and_the_click_where_its_recorded_map_puts_them():
    torch.manual_seed(0)
    aug = TimeFrequencyCrop(FRAMES, span=0.5, max_semitones=6.0, time_scale=(0.7, 1.4),
                            freq_scale=(0.8, 1.25), energy_weighted=False)  # fmt: skip
    x = _tone_and_click(aug, 32, hz=1500.0, frame=200)
    view, params = aug(x)
    click_frame, tone_bin = _where(view)
    # source point: the click at frame 200 (its centre 200.5, in crop lengths), the tone's pitch
    tau, phi = 200.5 / FRAMES, _semitones_of_bin(aug, round(_bin_of(aug, 1500.0)))
    u = _to_view(params["geometry"], tau, phi)
    expected_frame = (u[:, 0] + 0.5) * FRAMES - 0.5
    seen = (expected_frame > 1) & (expected_frame < FRAMES - 2)
    assert seen.sum() >= 8
    assert (click_frame[seen] - expected_frame[seen]).abs().max() <= 1.0
    expected_bin = torch.tensor([_bin_from_semitones(aug, float(p)) for p in u[:, 1]])
    inside = (expected_bin > 1) & (expected_bin < N_MELS - 2)
    assert inside.sum() >= 20
    assert (tone_bin[inside] - expected_bin[inside]).abs().max() <= 1.0


def _bin_from_semitones(aug: TimeFrequencyCrop, semitones: float) -> float:
    return _bin_of(aug, aug.f_ref * 2 ** (semitones / 12.0))


def test_the_relative_map_carries_view_a_onto_view_b():
    torch.manual_seed(1)
    aug = TimeFrequencyCrop(FRAMES, span=0.6, max_semitones=8.0, time_scale=(0.8, 1.25),
                            energy_weighted=False)  # fmt: skip
    x = _tone_and_click(aug, 128, hz=900.0, frame=220)
    with aug.one_step():
        view_a, p_a = aug(x)
        view_b, p_b = aug(x)
    rel = relative_affine(p_a["geometry"], p_b["geometry"])  # view a -> view b coordinates
    click_a, tone_a = _where(view_a)
    click_b, tone_b = _where(view_b)
    tau_a = (click_a.double() + 0.5) / FRAMES - 0.5
    phi_a = torch.tensor([_semitones_of_bin(aug, float(k)) for k in tone_a], dtype=torch.float64)
    in_b = rel @ torch.stack([tau_a, phi_a, torch.ones_like(tau_a)], dim=1).unsqueeze(-1)
    frame_b = (in_b[:, 0, 0] + 0.5) * FRAMES - 0.5
    bin_b = torch.tensor([_bin_from_semitones(aug, float(p)) for p in in_b[:, 1, 0]])
    both = (click_a > 1) & (click_a < FRAMES - 2) & (frame_b > 1) & (frame_b < FRAMES - 2)
    assert both.sum() >= 16  # the views overlap (span 0.6 crop lengths) around the click
    assert (click_b[both] - frame_b[both]).abs().max() <= 1.5
    tone = (bin_b > 2) & (bin_b < N_MELS - 3) & (tone_a > 2) & (tone_a < N_MELS - 3)
    assert tone.sum() >= 30
    assert (tone_b[tone] - bin_b[tone]).abs().max() <= 1.5
    # for pure pitch shifts the frequency target is the semitone difference, exactly
    # (records hold source -> view maps, whose frequency shift is +s for a pure shift)
    s_a, s_b = p_a["geometry"][:, 1, 2], p_b["geometry"][:, 1, 2]
    targets = aug.component.relative(p_a["geometry"], p_b["geometry"])
    assert torch.allclose(targets[:, -1].double(), s_b - s_a, atol=1e-5)


def _smooth(batch: int = 4) -> torch.Tensor:
    f = torch.linspace(0, 3.0, N_MELS)[:, None]
    t = torch.linspace(0, 6.0, CLIP)[None, :]
    x = torch.sin(f + 0.7 * t) + 0.5 * torch.cos(2.1 * f - 0.4 * t)
    return x.expand(batch, 1, N_MELS, CLIP).contiguous()


def _with_theta(aug: TimeFrequencyCrop, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    with mock.patch.object(TimeFrequencyCrop, "sample_theta", lambda self, _x: theta):
        return aug(x)[0]


def _sampling(w, c, h, b) -> torch.Tensor:
    theta = torch.zeros(len(w), 3, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, c, h, b
    theta[:, 2, 2] = 1.0
    return theta


def test_a_frequency_scale_then_a_pitch_shift_is_one_map_in_semitones():
    aug = TimeFrequencyCrop(FRAMES, max_semitones=12.0, freq_scale=(0.7, 1.4))
    x = _smooth()
    ones = torch.ones(4, dtype=torch.float64)
    centre = torch.full((4,), CLIP / 2 / FRAMES, dtype=torch.float64)
    scale = _sampling(ones, centre, torch.tensor([0.8, 1.2, 1.0, 0.9]), 0 * ones)
    pitch = torch.tensor([3.0, -5.0, 7.0, 0.0], dtype=torch.float64)
    # the second map acts on the first view: the same frequency axis, and time counted from
    # the first view's start where the first map counts it from the view's centre
    shift = _sampling(ones, ones / 2, ones, -pitch)
    composed = scale @ _sampling(ones, -ones / 2, ones, 0 * ones) @ shift
    first = _with_theta(aug, scale, x)
    twice = _with_theta(aug, shift, first)
    once = _with_theta(aug, composed, x)
    # compare the bins that read inside the band on both ways (outside is filled with 0)
    rows = _reads_inside(aug, shift) & _reads_inside(aug, composed)
    assert rows.sum() > 100
    diff = (twice - once).abs().amax(dim=(1, 3))  # [B, F]
    assert diff[rows].max() < 0.1
    moved = (once - first).abs().amax(dim=(1, 3))
    assert moved[:3][rows[:3]].max() > 0.5  # the shifts did something


def _reads_inside(aug: TimeFrequencyCrop, theta: torch.Tensor) -> torch.Tensor:
    """``[B, F]``: which view bins read a source bin at least one bin inside the band."""
    gy = aug.grid(theta, N_MELS, FRAMES)[:, :, 0, 1]
    source_bin = ((gy + 1) * N_MELS - 1) / 2
    return (source_bin > 1) & (source_bin < N_MELS - 2)


def test_a_crop_of_a_stretched_crop_is_one_map_in_crop_lengths():
    aug = TimeFrequencyCrop(FRAMES, max_semitones=0.0)
    x = _smooth()
    ones = torch.ones(4, dtype=torch.float64)
    outer = _sampling(torch.tensor([1.3, 0.8, 1.0, 1.1]), torch.tensor([2.0, 1.5, 2.5, 2.1]),
                      ones, 0 * ones)  # fmt: skip
    # (the inner crops stay inside the outer view, whose outside is filled, not the clip)
    inner = _sampling(torch.tensor([0.7, 0.8, 0.9, 0.6]), torch.tensor([0.4, 0.55, 0.5, 0.45]),
                      ones, 0 * ones)  # fmt: skip
    # the inner view's source is the outer view: its time is counted from the outer view's
    # start, the outer map's own coordinate from its centre, hence the half crop length
    to_centre = _sampling(ones, -ones / 2, ones, 0 * ones)
    twice = _with_theta(aug, inner, _with_theta(aug, outer, x))
    once = _with_theta(aug, outer @ to_centre @ inner, x)
    cols = slice(8, FRAMES - 8)
    assert (twice[..., cols] - once[..., cols]).abs().max() < 0.05


def test_two_views_of_one_step_lie_around_one_anchor_and_other_steps_do_not():
    torch.manual_seed(2)
    aug = TimeFrequencyCrop(FRAMES, span=0.5, time_scale=(1.0, 1.0), max_semitones=0.0,
                            energy_weighted=False)  # fmt: skip
    x = torch.randn(256, 1, N_MELS, 2000)
    with aug.one_step():
        c_a = aug.sample_theta(x)[:, 0, 2]
        c_b = aug.sample_theta(x)[:, 0, 2]
    assert (c_a - c_b).abs().max() <= 0.5 + 1e-6  # crop lengths
    apart = (aug.sample_theta(x)[:, 0, 2] - aug.sample_theta(x)[:, 0, 2]).abs()
    assert apart.max() > 5  # outside a step every call draws its own anchor
    anywhere = TimeFrequencyCrop(FRAMES, span=None, energy_weighted=False)
    with anywhere.one_step():
        far = (anywhere.sample_theta(x)[:, 0, 2] - anywhere.sample_theta(x)[:, 0, 2]).abs()
    assert far.max() > 5


def test_views_stay_inside_the_clip_and_short_clips_are_centred():
    torch.manual_seed(3)
    aug = TimeFrequencyCrop(FRAMES, span=2.0, time_scale=(0.6, 1.5), energy_weighted=False)
    theta = aug.sample_theta(torch.randn(512, 1, N_MELS, 300))
    half = theta[:, 0, 0] / 2  # crop lengths
    start, end = theta[:, 0, 2] - half, theta[:, 0, 2] + half
    assert start.min() >= -1e-6 and end.max() <= 300 / FRAMES + 1e-6
    short = aug.sample_theta(torch.randn(64, 1, N_MELS, 50))
    wide = short[:, 0, 0] * FRAMES > 50
    assert torch.allclose(short[wide, 0, 2], torch.full_like(short[wide, 0, 2], 25 / FRAMES))


def test_targets_are_only_what_varies_and_carry_their_own_units():
    fixed = TimeFrequencyCrop(time_scale=(1.0, 1.0), max_semitones=12.0, span=1.0)
    assert fixed.component.target_labels == ["geometry.shift_x", "geometry.shift_y"]
    assert fixed.component.ranges == [(-1.0, 1.0), (-24.0, 24.0)]
    full = TimeFrequencyCrop(time_scale=(0.8, 1.25), freq_scale=(0.8, 1.25), max_semitones=4.0)
    assert full.component.target_labels == [
        "geometry.scale_x", "geometry.shift_x", "geometry.scale_y", "geometry.shift_y"
    ]  # fmt: skip
    time_only = TimeFrequencyCrop(max_semitones=0.0, time_scale=(0.8, 1.25))
    assert time_only.component.target_labels == ["geometry.scale_x", "geometry.shift_x"]
    assert TimeFrequencyCrop().component.target_labels == ["geometry.shift_x", "geometry.shift_y"]


def test_identity_views_are_the_anchor_segment():
    aug = TimeFrequencyCrop(FRAMES, p=0.0, energy_weighted=False)
    x = torch.randn(8, 1, N_MELS, CLIP)
    torch.manual_seed(4)
    view, params = aug(x)
    # the record maps source -> view: its time shift is minus the centre, in crop lengths
    centre = (params["geometry"][:, 0, 2] * -FRAMES).round().long()
    for i in range(8):
        crop = x[i, :, :, centre[i] - FRAMES // 2 : centre[i] + FRAMES // 2]
        assert torch.allclose(view[i], crop, atol=1e-3)
    assert torch.allclose(invert_affine(params["geometry"])[:, 1, 1], torch.ones(8).double())


def _pipeline(**sections) -> dict:
    cfg = {k: dict(v) for k, v in SEPARATE_AUDIO_PIPELINE.items()}
    for name, section in sections.items():
        cfg[name].update(section)
    return cfg


def test_the_composed_pipeline_refuses_the_separate_geometric_augmenters():
    with pytest.raises(ValueError, match=r"augment\.time_crop, augment\.rrc"):
        build_audio_pipeline(_pipeline(geometry={"enabled": True}))


def test_an_action_that_is_not_predicted_is_still_applied():
    cfg = _pipeline(
        geometry={"enabled": True, "n_mels": 16},
        time_crop={"enabled": False},
        rrc={"enabled": False},
        mixup={"predict": False, "source": "batch", "ratio": (0.3, 0.4)},
    )
    views = TwoViews(build_audio_pipeline(cfg))
    assert views.action_space().names == ["geometry", "gain"]
    x = torch.randn(8, 1, 16, 300)
    torch.manual_seed(5)
    view_a, _, params_a, _ = views(x)
    assert "mixup" in params_a and (params_a["mixup"] >= 0.3).all()
    cfg["mixup"]["enabled"] = False
    torch.manual_seed(5)
    unmixed = TwoViews(build_audio_pipeline(cfg))(x)[0]
    assert not torch.allclose(view_a, unmixed)
    with pytest.raises(ValueError, match=r"augment\.mixup\.predict must be true or false"):
        build_audio_pipeline(_pipeline(mixup={"predict": "no"}))


def test_the_space_of_a_composed_pipeline_has_one_geometric_component():
    space = ActionSpace(
        build_audio_pipeline(
            _pipeline(
                geometry={"enabled": True}, time_crop={"enabled": False}, rrc={"enabled": False}
            )  # fmt: skip
        ).components()
    )
    assert [c.name for c in space.components] == ["geometry", "mixup", "gain"]
