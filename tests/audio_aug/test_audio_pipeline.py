"""The audio pipeline builder, its defaults, and two views with their action targets."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from stec.augment import TwoViews
from stec_audio.augment import (
    COMPOSED_AUDIO_PIPELINE,
    DEFAULT_AUDIO_PIPELINE,
    PIPELINE_ORDER,
    SEPARATE_AUDIO_PIPELINE,
    LinearFader,
    Mixup,
    RandomResizeCrop,
    TimeCrop,
    TimeFrequencyCrop,
    allowed_keys,
    build_audio_pipeline,
)


def test_the_default_pipeline_is_the_composed_map_with_an_unpredicted_gain():
    assert DEFAULT_AUDIO_PIPELINE is COMPOSED_AUDIO_PIPELINE
    pipe = build_audio_pipeline(None)
    assert [type(a) for a in pipe.augmenters] == [TimeFrequencyCrop, LinearFader]
    assert pipe.action_space().names == ["geometry"]  # the gain is applied, not predicted
    a, b, pa, pb = TwoViews(pipe)(torch.randn(4, 1, 64, 501))
    assert a.shape == b.shape == (4, 1, 64, 96) and {"geometry", "gain"} <= set(pa)
    # the separate recipe is left as it was
    assert (
        SEPARATE_AUDIO_PIPELINE["time_crop"]["enabled"]
        and "predict" not in (SEPARATE_AUDIO_PIPELINE["fader"])
    )


def test_separate_pipeline_makes_two_views_with_finite_actions():
    torch.manual_seed(0)
    pipe = build_audio_pipeline(SEPARATE_AUDIO_PIPELINE)
    assert [type(a) for a in pipe.augmenters] == [TimeCrop, Mixup, RandomResizeCrop, LinearFader]
    space = pipe.action_space()
    assert space.names == ["time_crop", "mixup", "rrc", "gain"]
    views = TwoViews(pipe)
    clips = torch.randn(6, 1, 64, 501)
    a, b, pa, pb = views(clips)
    assert a.shape == b.shape == (6, 1, 64, 96) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    tg = space.targets(pa, pb)
    assert tg.classes.shape == (6, space.n_targets) and tg.mask.all()
    assert (tg.classes >= 0).all() and (tg.classes < 6).all()


def test_sections_are_built_in_the_fixed_order_and_can_be_disabled():
    cfg = {
        "spec_mask": {"p": 1.0},
        "fader": {"enabled": False},
        "freq_shift": {"max_shift": 3},
        "time_crop": {"frames": 32},
        "time_stretch": None,
    }
    pipe = build_audio_pipeline(cfg)
    names = [type(a).__name__ for a in pipe.augmenters]
    assert names == ["TimeCrop", "FrequencyShift", "SpecAugmentMask"]
    assert pipe.action_space().names == ["time_crop", "freq_shift", "time_mask", "freq_mask"]
    assert pipe.augmenters[1].max_shift == 3.0
    x, params = pipe(torch.randn(3, 1, 64, 100))
    assert x.shape == (3, 1, 64, 32) and set(params) == {
        "time_crop",
        "freq_shift",
        "time_mask",
        "freq_mask",
    }


def test_unknown_augmenter_and_unknown_key_are_named():
    with pytest.raises(
        ValueError, match=r"'pitch_shift'.*allowed: geometry, time_crop, pitch, mixup, rrc"
    ):
        build_audio_pipeline({"pitch_shift": {}})
    with pytest.raises(
        ValueError,
        match=r"augment\.rrc: unknown key\(s\) 'scale'; allowed: enabled, predict, virtual_crop_scale",
    ):
        build_audio_pipeline({"rrc": {"scale": (0.5, 1.0)}})
    with pytest.raises(ValueError, match=r"augment\.time_crop\.enabled"):
        build_audio_pipeline({"time_crop": {"enabled": "yes"}})
    with pytest.raises(ValueError, match=r"augment\.mixup: .*ratio"):
        build_audio_pipeline({"mixup": {"ratio": (0.0, 2.0)}})
    assert "frames" in allowed_keys("time_crop") and allowed_keys("time_crop")[0] == "enabled"


@pytest.mark.parametrize("base", ["composed", "separate"])
def test_a_clip_stage_mixup_comes_first_and_a_view_stage_one_after_the_geometry(base):
    pipeline = copy.deepcopy(
        COMPOSED_AUDIO_PIPELINE if base == "composed" else SEPARATE_AUDIO_PIPELINE
    )
    first = TimeFrequencyCrop if base == "composed" else TimeCrop
    pipeline["mixup"].update(enabled=True, stage="view")
    assert [type(a) for a in build_audio_pipeline(pipeline).augmenters][:2] == [first, Mixup]
    pipeline["mixup"]["stage"] = "clip"
    pipe = build_audio_pipeline(pipeline)
    assert [type(a) for a in pipe.augmenters][:2] == [Mixup, first]
    a, b, _, _ = TwoViews(pipe)(torch.randn(4, 1, 64, 501))  # whole clips in the bank
    assert a.shape == b.shape == (4, 1, 64, 96) and pipe.augmenters[0].bank.shape[-1] == 501
    pipeline["mixup"]["stage"] = "views"
    with pytest.raises(
        ValueError, match=r"augment\.mixup: .*stage must be one of \('view', 'clip'\)"
    ):
        build_audio_pipeline(pipeline)


def test_defaults_only_use_allowed_keys_and_cover_every_augmenter():
    for pipeline in (SEPARATE_AUDIO_PIPELINE, COMPOSED_AUDIO_PIPELINE):
        assert tuple(pipeline) == PIPELINE_ORDER
        for name, section in pipeline.items():
            assert set(section) <= set(allowed_keys(name)), name


def test_omegaconf_mappings_are_accepted():
    cfg = OmegaConf.create(copy.deepcopy({k: dict(v) for k, v in SEPARATE_AUDIO_PIPELINE.items()}))
    cfg.rrc.freq_scale = [0.8, 1.2]
    pipe = build_audio_pipeline(cfg)
    rrc = next(a for a in pipe.augmenters if isinstance(a, RandomResizeCrop))
    assert rrc.freq_scale == (0.8, 1.2)


def test_same_seed_same_views_and_actions():
    pipe = build_audio_pipeline(
        {"time_crop": {"energy_weighted": True}, "rrc": {}, "fader": {}, "spec_mask": {}}
    )
    clips = torch.randn(4, 1, 64, 300)
    torch.manual_seed(5)
    x1, p1 = pipe(clips)
    torch.manual_seed(5)
    x2, p2 = pipe(clips)
    assert torch.equal(x1, x2) and all(torch.equal(p1[k], p2[k]) for k in p1)
