"""AudioNTT2020 (BYOL-A key layout) and AudioResNet: shapes, any length, registry."""

from __future__ import annotations

import pytest
import torch

from stec_audio.encoders import (
    ENCODERS,
    AudioNTT2020,
    AudioResNet,
    build_encoder,
    encoder_spec,
    pool_frames,
)

BYOLA_KEYS = (
    [f"features.{i}.{p}" for i in (0, 4, 8) for p in ("weight", "bias")]
    + [
        f"features.{i}.{p}"
        for i in (1, 5, 9)
        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ]
    + [f"fc.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")]
)


@pytest.mark.parametrize("d", [512, 1024, 2048])
def test_audiontt_matches_byola_layout(d):
    model = AudioNTT2020(n_mels=64, d=d)
    state = model.state_dict()
    assert sorted(state) == sorted(BYOLA_KEYS)
    assert state["features.0.weight"].shape == (64, 1, 3, 3)
    assert state["fc.0.weight"].shape == (d, 64 * 8) and state["fc.3.weight"].shape == (d, d)
    assert model.feature_dim == d
    # a BYOL-A-shaped checkpoint (same keys and shapes) loads strictly
    byola = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in state.items()}
    AudioNTT2020(n_mels=64, d=d).load_state_dict(byola, strict=True)
    assert isinstance(model.fc[2], torch.nn.Dropout) and model.fc[2].p == 0.3


@pytest.mark.parametrize("cls", [AudioNTT2020, AudioResNet])
@pytest.mark.parametrize("t", [3, 8, 50, 96, 203])
def test_any_length_and_pooling(cls, t):
    torch.manual_seed(0)
    model = cls(n_mels=64, d=32).eval() if cls is AudioResNet else cls(n_mels=64, d=32).eval()
    x = torch.randn(2, 1, 64, t)
    frames = model.frame_features(x)
    assert frames.shape == (2, model.n_frames(t), 32)
    expected = max(t, 8) // 8 if cls is AudioNTT2020 else -(-t // 8)
    assert model.n_frames(t) == expected
    out = model(x)
    assert out.shape == (2, 32) and out.dtype == torch.float32
    assert torch.allclose(out, frames.amax(1) + frames.mean(1))
    assert torch.equal(pool_frames(frames), out)


@pytest.mark.parametrize("cls", [AudioNTT2020, AudioResNet])
def test_context_frames_make_pieces_exact(cls):
    torch.manual_seed(1)
    model = (
        cls(d=16) if cls is AudioNTT2020 else cls(widths=(4, 8, 8, 8), blocks=(1, 1, 1, 1), d=16)
    ).eval()
    x = torch.randn(1, 1, 64, 240)
    full = model.frame_features(x)
    hop, ctx = model.frame_hop, model.context_frames
    cut = 96  # a multiple of the hop
    left = model.frame_features(x[..., : cut + ctx])[:, : cut // hop]
    right = model.frame_features(x[..., cut - ctx :])[:, ctx // hop :]
    assert torch.allclose(torch.cat([left, right], 1), full, atol=1e-5)
    # with too little context the pieces differ: the check is able to fail
    short = model.frame_features(x[..., :cut])
    assert not torch.allclose(short, full[:, : cut // hop], atol=1e-5)


def test_registry_and_errors():
    assert set(ENCODERS) == {"audiontt", "resnet"}
    model = build_encoder("audiontt", d=1024)
    assert isinstance(model, AudioNTT2020) and model.feature_dim == 1024
    assert encoder_spec(model) == {"name": "audiontt", "kwargs": {"n_mels": 64, "d": 1024}}
    spec = encoder_spec(build_encoder("resnet", widths=(8, 8), blocks=(1, 1), d=16))
    rebuilt = build_encoder(spec["name"], **spec["kwargs"])
    assert rebuilt.frame_hop == 2 and rebuilt.feature_dim == 16
    with pytest.raises(ValueError, match="allowed: audiontt, resnet"):
        build_encoder("vit")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) 'depth'; allowed: n_mels, d"):
        build_encoder("audiontt", depth=3)
    with pytest.raises(ValueError, match=r"\[B, 1, 64, T\]"):
        AudioNTT2020()(torch.randn(2, 1, 40, 96))


def test_training_step_updates_all_parameters():
    torch.manual_seed(2)
    model = AudioResNet(widths=(4, 8), blocks=(1, 1), d=8)
    model(torch.randn(4, 1, 64, 24)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
