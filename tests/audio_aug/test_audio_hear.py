"""The HEAR 2021 API: shapes, regular hops, any length, chunking, export round trip."""

from __future__ import annotations

import json

import pytest
import torch

from stec.engine.export import export_backbone
from stec_audio import hear
from stec_audio.data.frontend import FrontEndConfig, LogMel, NormStats
from stec_audio.encoders import AudioNTT2020, AudioResNet

SR = 16000


def tiny_resnet() -> AudioResNet:
    return AudioResNet(widths=(4, 4, 8, 8), blocks=(1, 1, 1, 1), d=16)


def test_random_model_has_the_hear_attributes_and_shapes():
    torch.manual_seed(0)
    model = hear.load_model("")
    assert model.sample_rate == SR
    assert model.scene_embedding_size == model.timestamp_embedding_size == 512
    audio = torch.randn(3, SR)  # 1 s
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, 512) and scene.dtype == torch.float32
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape[0] == 3 and emb.shape[2] == 512 and emb.dtype == torch.float32
    assert ts.shape == emb.shape[:2] and ts.dtype == torch.float32
    hops = ts.diff(dim=1)
    assert torch.allclose(hops, torch.full_like(hops, 40.0)) and model.timestamp_hop_ms == 40.0
    assert ts[0, 0] == 35.0  # centre of log-mel frames 0..7 (10 ms hop)
    assert ts[0, -1] <= 1000.0 and emb.shape[1] == 24  # 101 frames -> 12 + 12 windows


def test_scene_embedding_equals_the_encoder_on_the_whole_log_mel():
    torch.manual_seed(1)
    norm = NormStats(-4.0, 3.0)
    model = hear.HearModel(AudioNTT2020(d=32), FrontEndConfig(), norm, chunk_seconds=0.4)
    audio = torch.randn(2, 2 * SR + 123)
    lms = norm.apply(LogMel(FrontEndConfig())(audio))
    assert torch.allclose(model.log_mel(audio), lms, atol=1e-5)
    expected = model.encoder(lms)
    assert torch.allclose(hear.get_scene_embeddings(audio, model), expected, atol=1e-5)
    # timestamp embeddings: phase 0 and phase 1 are the encoder on the log-mel and on it
    # shifted by 4 frames, interleaved
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    frames_a = model.encoder.frame_features(lms)
    frames_b = model.encoder.frame_features(lms[..., 4:])
    assert torch.allclose(emb[:, 0::2], frames_a, atol=1e-5)
    assert torch.allclose(emb[:, 1::2], frames_b[:, : emb[:, 1::2].shape[1]], atol=1e-5)
    big = hear.HearModel(model.encoder, FrontEndConfig(), norm, chunk_seconds=30.0)
    emb_big, ts_big = hear.get_timestamp_embeddings(audio, big)
    assert torch.allclose(emb, emb_big, atol=1e-5) and torch.equal(ts, ts_big)


@pytest.mark.parametrize("samples", [0, 1, 300, 513, 1280, 1300, 4000])
def test_any_length_works(samples):
    model = hear.HearModel(tiny_resnet())
    audio = torch.randn(2, samples)
    assert hear.get_scene_embeddings(audio, model).shape == (2, 16)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert emb.shape[0] == 2 and emb.shape[1] >= 1 and ts.shape == emb.shape[:2]
    if emb.shape[1] > 1:
        assert torch.allclose(ts.diff(dim=1), torch.tensor(40.0))
    seconds = max(samples, 513) / SR
    assert ts[0, -1] <= 1000 * seconds + 40


def test_ten_minutes_are_processed_in_bounded_pieces():
    torch.manual_seed(2)
    frontend = FrontEndConfig(n_mels=16)
    encoder = AudioResNet(n_mels=16, widths=(2, 4, 4, 4), blocks=(1, 1, 1, 1), d=16)
    model = hear.HearModel(encoder, frontend, chunk_seconds=10.0)
    seen: list[int] = []
    original = model.encoder.frame_features

    def spy(x):
        seen.append(x.shape[-1])
        return original(x)

    model.encoder.frame_features = spy
    audio = torch.randn(1, 600 * SR) * 0.1
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (1, 16) and torch.isfinite(scene).all()
    assert len(seen) == 61  # 60001 frames: 7501 outputs in pieces of 125
    assert max(seen) <= model.chunk_frames + 2 * model.encoder.context_frames
    seen.clear()
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    # ResNet frames are centred at log-mel frames 0, 4, 8, ..., 60000 (the last sample)
    assert emb.shape == (1, 15001, 16) and ts[0, -1] == pytest.approx(600000.0)
    assert max(seen) <= model.chunk_frames + 2 * model.encoder.context_frames


def test_clip_batches_bound_frames_per_call():
    model = hear.HearModel(tiny_resnet(), max_frames_per_batch=500)
    batches = model.clip_batches(n=40, frames=101)
    assert [b.stop - b.start for b in batches] == [4] * 10


@pytest.mark.parametrize("encoder", [lambda: AudioNTT2020(d=32), tiny_resnet])
def test_export_round_trip(tmp_path, encoder):
    torch.manual_seed(3)
    enc = encoder().eval()
    frontend, norm = FrontEndConfig(), NormStats(-5.0, 4.5)
    meta = hear.audio_export_meta(enc, frontend, norm)
    out = export_backbone(enc, tmp_path / "export", meta)
    audio = torch.randn(2, SR // 2)
    reference = hear.get_scene_embeddings(audio, hear.HearModel(enc, frontend, norm))
    for path in (out, out / "encoder.safetensors", out / "encoder.json", tmp_path):
        model = hear.load_model(str(path))
        assert model.scene_embedding_size == enc.feature_dim
        assert model.norm == norm and model.frontend == frontend
        assert torch.allclose(hear.get_scene_embeddings(audio, model), reference, atol=1e-6)


def test_bad_exports_and_inputs_are_reported(tmp_path):
    enc = AudioNTT2020(d=16)
    meta = hear.audio_export_meta(enc, FrontEndConfig(), NormStats(0.0, 1.0))
    export_backbone(enc, tmp_path / "a", {**meta, "encoder": {"name": "conformer", "kwargs": {}}})
    with pytest.raises(ValueError, match="allowed: audiontt, resnet"):
        hear.load_model(str(tmp_path / "a"))
    export_backbone(enc, tmp_path / "b", {**meta, "frontend": {"n_mels": 64, "fmax": 8000}})
    with pytest.raises(ValueError, match="unknown frontend key"):
        hear.load_model(str(tmp_path / "b"))
    no_norm = {k: v for k, v in meta.items() if k != "norm"}
    export_backbone(enc, tmp_path / "c", no_norm)
    with pytest.warns(UserWarning, match="no 'norm'"):
        hear.load_model(str(tmp_path / "c"))
    export_backbone(AudioNTT2020(d=8), tmp_path / "d", meta)
    with pytest.raises(ValueError, match="do not match"):
        hear.load_model(str(tmp_path / "d"))
    assert (
        json.loads((tmp_path / "a" / "encoder.json").read_text())["encoder"]["name"] == "conformer"
    )
    with pytest.raises(ValueError, match=r"\[n_sounds, n_samples\]"):
        hear.get_scene_embeddings(torch.zeros(SR), hear.load_model(""))


def test_the_model_runs_wherever_it_is_moved():
    # a kit moves the model (model.to(device)) and may pass audio from anywhere: every
    # tensor made inside follows the model (meta here, which raises on any CPU tensor)
    model = hear.HearModel(tiny_resnet(), chunk_seconds=0.3).to("meta")
    audio = torch.randn(2, SR)
    scene = hear.get_scene_embeddings(audio, model)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    assert scene.device.type == emb.device.type == ts.device.type == "meta"
    assert scene.shape == (2, 16) and emb.shape[0] == 2 and ts.shape == emb.shape[:2]


def test_an_encoder_without_weights_runs_and_follows_the_model():
    # the per-frame log-mel floor has no parameters: the model's device is its front end's
    from stec_audio.evaluation.frames import LogMelFrames

    norm = NormStats(-4.0, 3.0)
    model = hear.HearModel(LogMelFrames(), FrontEndConfig(), norm)
    audio = torch.randn(2, SR)
    emb, ts = hear.get_timestamp_embeddings(audio, model)
    lms = norm.apply(LogMel(FrontEndConfig())(audio))
    # frame 1 (phase 1, shifted by 4 log-mel frames) covers log-mel frames 4..11
    window = lms[:, 0, :, 4:12]
    expected = torch.cat([window.mean(-1), window.std(-1)], dim=1)
    assert emb.shape == (2, 24, 128) and torch.allclose(emb[:, 1], expected, atol=1e-5)
    assert ts[0, :2].tolist() == [35.0, 75.0]
    moved = hear.HearModel(LogMelFrames(), chunk_seconds=0.3).to("meta")
    assert hear.get_timestamp_embeddings(audio, moved)[0].device.type == "meta"
