"""AudioNTT2020 (BYOL-A key layout) and AudioResNet: shapes, any length, registry, and
loading BYOL-A-layout weights (``encoder.init``)."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import save_file

from stec.cli import compose_config
from stec.errors import ExportError
from stec_audio.app import new_encoder
from stec_audio.encoders import (
    ENCODERS,
    AudioNTT2020,
    AudioResNet,
    build_encoder,
    encoder_spec,
    pool_frames,
)
from stec_audio.weights import load_initial_weights

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


def _byola_encoder(d: int) -> AudioNTT2020:
    """An AudioNTT2020 with random weights and non-trivial batch-norm statistics."""
    torch.manual_seed(d)
    model = AudioNTT2020(n_mels=64, d=d)
    for module in model.features:
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize(
    "layout",
    ["plain", "prefixed in a state_dict wrapper, with a projector", "safetensors"],
)
def test_byola_weights_round_trip_through_encoder_init(layout, tmp_path):
    saved = _byola_encoder(32)
    state = saved.state_dict()
    assert sorted(state) == sorted(BYOLA_KEYS)  # BYOL-A's AudioNTT2020Task6 key layout
    path = tmp_path / "AudioNTT2020-BYOLA-64x96d32.pth"
    if layout == "plain":
        torch.save(state, path)
    elif layout == "safetensors":
        path = path.with_suffix(".safetensors")
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        wrapped = {f"model.backbone.{k}": v for k, v in state.items()}
        wrapped["model.projector.0.weight"] = torch.randn(8, 32)  # not the encoder's
        torch.save({"state_dict": wrapped, "epoch": 100}, path)
    cfg = compose_config("audio", ["encoder.kwargs.d=32", f"encoder.init={path}"])
    loaded = new_encoder(cfg).eval()
    x = torch.randn(2, 1, 64, 96)
    assert torch.equal(loaded(x), saved(x))
    assert torch.equal(loaded.features[1].running_var, saved.features[1].running_var)
    torch.manual_seed(0)
    assert not torch.equal(new_encoder(cfg, init=False).eval()(x), saved(x))


def test_encoder_init_errors_name_the_file_and_the_fix(tmp_path):
    torch.save(_byola_encoder(64).state_dict(), tmp_path / "d64.pth")
    with pytest.raises(ExportError) as info:
        load_initial_weights(AudioNTT2020(d=32), tmp_path / "d64.pth")
    message = str(info.value)
    assert message.startswith(f"encoder.init={tmp_path / 'd64.pth'}: the weights do not match")
    assert "wrong shape fc.0.bias (64,) (needs (32,))" in message
    assert message.endswith("the file has d=64: set encoder.kwargs.d=64")

    torch.save({"state_dict": {}, "hparams": argparse.Namespace(lr=0.1)}, tmp_path / "ns.pth")
    with pytest.raises(ExportError, match=r"refused it \(Unsupported global: GLOBAL argparse"):
        load_initial_weights(AudioNTT2020(d=32), tmp_path / "ns.pth")

    state = _byola_encoder(32).state_dict()
    two = {
        **{f"online.{k}": v for k, v in state.items()},
        **{f"target.{k}": v for k, v in state.items()},
    }
    torch.save(two, tmp_path / "two.pth")
    with pytest.raises(
        ExportError, match=r"several encoders \(key prefixes \['online.', 'target.'\]\)"
    ):
        load_initial_weights(AudioNTT2020(d=32), tmp_path / "two.pth")

    (tmp_path / "text.pth").write_text("not a torch file")
    with pytest.raises(ExportError, match="encoder.init=.*text.pth: "):
        load_initial_weights(AudioNTT2020(d=32), tmp_path / "text.pth")
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_initial_weights(AudioNTT2020(d=32), tmp_path / "nowhere.pth")


@pytest.mark.parametrize("name", ["audiontt", "resnet"])
def test_features_with_frames_gives_the_clip_features_and_a_20_ms_sequence(name):
    from stec_audio.encoders import build_encoder

    torch.manual_seed(0)
    encoder = build_encoder(name, d=32).eval()
    x = torch.randn(3, 1, 64, 96)
    h, fine = encoder.features_with_frames(x)
    assert torch.allclose(h, encoder(x), atol=1e-5)
    assert fine.shape == (3, 48, encoder.frame_dim)
    # it keeps time: content moved by 2 input frames moves the sequence by one frame
    moved = torch.roll(x, 2, dims=-1)
    _, fine_moved = encoder.features_with_frames(moved)
    assert torch.allclose(fine_moved[:, 4:-4], fine[:, 3:-5], atol=1e-4)
