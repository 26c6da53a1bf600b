"""The pitch shift is a semitone shift on the front end's mel axis, not a bin shift."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stec.actions import ActionSpace
from stec_audio.augment import build_audio_pipeline
from stec_audio.augment.ops import resample_axis
from stec_audio.augment.pitch import PitchShift
from stec_audio.data.frontend import FrontEndConfig, LogMel

RATE = 16000


def harmonic_logmel(f0: float) -> torch.Tensor:
    """Mean log-mel ``[64]`` of 2 s of an 8-harmonic tone over a quiet noise floor."""
    t = np.arange(2 * RATE) / RATE
    tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 9) if f0 * h < 7000)
    noise = np.random.default_rng(0).standard_normal(t.size) * 0.003
    wave = torch.tensor(0.1 * tone + noise, dtype=torch.float32)
    return LogMel(FrontEndConfig())(wave).mean(-1)[0, 0]


def _octave_up(f0: float) -> tuple[float, float, int]:
    """``(mean abs error of the warp, of the best constant shift in mel bins, warp peak bin
    - true peak bin)`` over the bins within 20 dB of the true higher tone's peak."""
    low, high = harmonic_logmel(f0), harmonic_logmel(2 * f0)
    positions = PitchShift(max_semitones=12.0).source_positions(torch.tensor([12.0]))
    shifted = resample_axis(low.reshape(1, 1, 64, 1), positions, dim=2, fill=float(low.min()))
    shifted = shifted[0, 0, :, 0]
    strong = (high > high.max() - np.log(100)) & (positions[0] >= 0)
    error = float((shifted - high)[strong].abs().mean())
    rolled = min(float((torch.roll(low, k) - high)[strong].abs().mean()) for k in range(20))
    return error, rolled, int(shifted.argmax()) - int(high.argmax())


@pytest.mark.parametrize("f0", [220.0, 1000.0])
def test_an_octave_up_matches_the_tone_one_octave_higher(f0):
    error, rolled, peak = _octave_up(f0)
    # within 0.8 nats (3.5 dB) on average over the strong bins, the peak in the right bin,
    # and at most half the error of any constant shift in mel bins
    assert error < 0.8 and peak == 0 and rolled > 2 * error


def test_the_warp_is_not_a_constant_bin_shift():
    positions = PitchShift(max_semitones=12.0).source_positions(torch.tensor([12.0]))[0]
    shift = torch.arange(64.0) - positions  # bins an octave moves the content, per bin
    # nearly linear mel below 700 Hz, nearly logarithmic above: the octave widens upwards
    assert 5 < shift[10] < 7 and 14 < shift[50] < 16
    assert (shift[1:] >= shift[:-1]).all()


def test_a_shift_and_its_opposite_return_the_input_inside_the_band():
    torch.manual_seed(0)
    aug = PitchShift(max_semitones=6.0)
    smooth = torch.sin(torch.arange(64.0) / 8).reshape(1, 1, 64, 1).expand(8, 1, 64, 30)
    shifted, params = aug(smooth)
    s = params["pitch"][:, 0]
    assert s.abs().max() <= 6.0 and s.unique().numel() == 8
    back = resample_axis(shifted, aug.source_positions(-s), dim=2, fill=0.0)
    # the bins whose content stayed inside the band both ways
    there = aug.source_positions(-s)
    first = aug.source_positions(s)
    below = torch.gather(first, 1, there.floor().long().clamp(0, 63))
    above = torch.gather(first, 1, there.ceil().long().clamp(0, 63))
    inside = (there >= 0) & (there <= 63) & (below >= 0) & (above <= 63)
    assert inside.float().mean() > 0.5
    err = (back - smooth)[:, 0, :, 0][inside].abs().max()
    assert err < 0.01


def test_fill_where_the_content_leaves_the_band_and_p0_is_the_identity():
    aug = PitchShift(max_semitones=12.0, fill=-7.0)
    positions = aug.source_positions(torch.tensor([12.0, -12.0]))
    x = torch.zeros(2, 1, 64, 4)
    out = resample_axis(x, positions, dim=2, fill=-7.0)
    # an octave up leaves the lowest bins without a source; an octave down the highest
    assert (out[0, 0, :3] == -7).all() and (out[0, 0, -10:] == 0).all()
    assert (out[1, 0, -3:] == -7).all() and (out[1, 0, :10] == 0).all()
    untouched = PitchShift(p=0.0)
    y = torch.randn(3, 1, 64, 10)
    same, params = untouched(y)
    assert torch.equal(same, y) and (params["pitch"] == 0).all()


def test_relative_action_is_the_semitone_difference_and_the_pipeline_places_it():
    torch.manual_seed(1)
    aug = PitchShift(max_semitones=3.0)
    _, pa = aug(torch.randn(16, 1, 64, 8))
    _, pb = aug(torch.randn(16, 1, 64, 8))
    rel = aug.component.relative(pa["pitch"], pb["pitch"])
    assert torch.allclose(rel, pb["pitch"] - pa["pitch"])
    space = ActionSpace(aug.components())
    assert space.target_classes == [6] and aug.component.low == -6.0
    pipe = build_audio_pipeline(
        {"time_crop": {"frames": 16}, "pitch": {"max_semitones": 2.0}, "fader": {}}
    )
    assert [type(a).__name__ for a in pipe.augmenters] == ["TimeCrop", "PitchShift", "LinearFader"]
    with pytest.raises(ValueError, match="max_semitones"):
        PitchShift(max_semitones=0)
    with pytest.raises(ValueError, match="built for 64 mel bins"):
        PitchShift()(torch.zeros(1, 1, 32, 5))
