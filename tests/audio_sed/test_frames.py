"""Frame embeddings of whole clips: values, files one row per frame, devices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from stec_audio import hear
from stec_audio.data.datasets import manifest_entries
from stec_audio.data.frontend import FrontEndConfig, NormStats
from stec_audio.data.io import BadFileLog, load_audio
from stec_audio.encoders import AudioNTT2020
from stec_audio.evaluation.frames import ClipFrames, clip_frames, save_frame_embeddings
from tests.evaluation.devices import DeviceRecorder

SR = 16000


@pytest.fixture
def clips(tmp_path):
    """A manifest of clips of 1 s, 1 s, 0.5 s (44.1 kHz) and 1 s, one of them silent."""
    g = np.random.default_rng(0)
    lengths = {"a.wav": (SR, SR), "b.wav": (SR, SR), "c.wav": (22050, 44100), "d.wav": (SR, SR)}
    for name, (n, rate) in lengths.items():
        wave = (0.1 * g.standard_normal(n)).astype(np.float32)
        sf.write(tmp_path / name, wave if name != "b.wav" else 0 * wave, rate, subtype="FLOAT")
    (tmp_path / "list.csv").write_text("path,label\n" + "".join(f"{n},x\n" for n in lengths))
    return manifest_entries(tmp_path / "list.csv")


def test_clip_frames_are_the_hear_timestamp_embeddings_of_each_file(clips):
    torch.manual_seed(0)
    model = hear.HearModel(AudioNTT2020(d=16), FrontEndConfig(), NormStats(-3.0, 2.5))
    log = BadFileLog(total=len(clips))
    frames = clip_frames(model, clips, batch_size=2, bad_log=log)
    assert frames.positions == [0, 2, 3] and log.n_bad == 1  # b.wav is silent
    assert "silent" in log.summary() and frames.hop_ms == 40.0
    for i, emb, ts, seconds in zip(
        frames.positions, frames.embeddings, frames.timestamps_ms, frames.durations, strict=True
    ):
        audio = torch.from_numpy(load_audio(clips.path(i), SR))[None]
        expected, expected_ts = hear.get_timestamp_embeddings(audio, model)
        assert torch.allclose(emb, expected[0], atol=1e-5) and torch.equal(ts, expected_ts[0])
        assert seconds == pytest.approx(audio.shape[1] / SR)
    assert [e.shape[0] for e in frames.embeddings] == [24, 11, 24]  # 51 log-mel frames: 6 + 5


def test_frame_files_hold_one_row_per_frame(tmp_path):
    frames = ClipFrames(
        positions=[0, 1],
        embeddings=[torch.arange(6.0).view(3, 2), torch.tensor([[9.0, 8.0]])],
        timestamps_ms=[torch.tensor([35.0, 75.0, 115.0]), torch.tensor([35.0])],
        durations=[0.15, 0.05],
        hop_ms=40.0,
    )
    labels = np.array([2, 5])
    parquet = save_frame_embeddings(tmp_path / "f.parquet", ["x.wav", "y.wav"], labels, frames)
    table = pd.read_parquet(parquet)
    assert table["id"].tolist() == ["x.wav"] * 3 + ["y.wav"]
    assert table["frame"].tolist() == [0, 1, 2, 0] and table["label"].tolist() == ["2"] * 3 + ["5"]
    assert table["timestamp_ms"].tolist() == [35.0, 75.0, 115.0, 35.0]
    assert (table["hop_ms"] == 40.0).all()
    assert np.stack(table["embedding"]).tolist() == [[0, 1], [2, 3], [4, 5], [9, 8]]
    npy = save_frame_embeddings(tmp_path / "f.npy", ["x.wav", "y.wav"], labels, frames)
    stored = np.load(npy, allow_pickle=True).item()
    assert stored["ids"].tolist() == table["id"].tolist() and stored["hop_ms"] == 40.0
    assert stored["labels"].tolist() == [2, 2, 2, 5] and stored["frame"].tolist() == [0, 1, 2, 0]
    assert stored["embeddings"].tolist() == [[0, 1], [2, 3], [4, 5], [9, 8]]
    with pytest.raises(ValueError, match=r"out='f.csv': use a .npy or .parquet file name"):
        save_frame_embeddings("f.csv", ["x.wav", "y.wav"], labels, frames)


def test_the_encoder_and_the_audio_meet_on_the_requested_device(clips):
    encoder = AudioNTT2020(d=8)
    recorder = DeviceRecorder(encoder)
    calls = []

    def frame_features(x):
        calls.append((x.device.type, {p.device.type for p in encoder.parameters()}))
        return torch.zeros(x.shape[0], encoder.n_frames(x.shape[-1]), 8)  # host values

    recorder.frame_features = frame_features
    model = hear.HearModel(recorder)
    frames = clip_frames(model, clips, device="meta")
    assert calls and all(c == ("meta", {"meta"}) for c in calls)
    assert len(frames) == 3 and frames.embeddings[0].device.type == "cpu"
    assert all(p.device.type == "cpu" for p in encoder.parameters())  # put back afterwards
