"""The HEAR 2021 API for exported audio encoders.

``load_model``, ``get_scene_embeddings`` and ``get_timestamp_embeddings`` follow the
HEAR 2021 contract, so evaluation kits can import this module directly::

    from stec_audio import hear
    model = hear.load_model("runs/byol/export")  # or "" for a random encoder
    scene = hear.get_scene_embeddings(audio, model)  # audio: [n, samples] at 16 kHz
    emb, timestamps_ms = hear.get_timestamp_embeddings(audio, model)

Decisions:

- **Front end**: the export's ``frontend`` (:class:`FrontEndConfig`) and ``norm``
  (:class:`NormStats`) are applied exactly as in training.
- **Any length**: audio shorter than half an FFT window (513 samples) is zero-padded (digital
  silence) so that the centred STFT is defined; encoders pad inputs shorter than 8 frames.
- **Long inputs** are processed in pieces of ``chunk_seconds``, for the log-mel and for the
  encoder, each piece with enough context on both sides (half an FFT window for the
  STFT, ``encoder.context_frames`` for the network) that the result equals the whole-input
  computation. Peak memory is bounded by ``max_frames_per_batch`` log-mel frames per
  encoder call, independent of the clip length.
- **Scene embedding**: the encoder's own pooling (max over time + mean over time of the
  frame features) over *all* frames of the clip, so it equals ``encoder(whole log-mel)``
  for any length; no averaging of per-chunk embeddings.
- **Timestamp embeddings**: the encoders emit one frame per 8 log-mel frames (80 ms).
  Rather than interpolating, the encoder also runs on the log-mel shifted by 4 frames and
  the two frame sequences are interleaved: every embedding is a genuine encoder output
  and the hop is a regular 40 ms (``timestamp_phases = 2``). Each timestamp is the centre
  of the embedding's window, in milliseconds from the start of the clip.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from stec_audio.data.frontend import FrontEndConfig, LogMel, NormStats
from stec_audio.encoders import AudioNTT2020, encoder_spec, pool_frames
from stec_audio.weights import read_audio_export


class HearModel(nn.Module):
    """An encoder with its front end and normalisation, plus the HEAR attributes.

    Attributes:
        sample_rate: expected input rate (Hz).
        scene_embedding_size, timestamp_embedding_size: embedding sizes ``D``.
        timestamp_hop_ms: the regular hop of the timestamp embeddings.
    """

    def __init__(
        self,
        encoder: nn.Module,
        frontend: FrontEndConfig | None = None,
        norm: NormStats | None = None,
        chunk_seconds: float = 10.0,
        max_frames_per_batch: int = 8000,
        timestamp_phases: int = 2,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.frontend = frontend or FrontEndConfig()
        self.logmel = LogMel(self.frontend)
        self.norm = norm or NormStats(0.0, 1.0)
        if getattr(encoder, "n_mels", self.frontend.n_mels) != self.frontend.n_mels:
            raise ValueError(
                f"encoder expects {encoder.n_mels} mel bins but the front end makes {self.frontend.n_mels}"
            )
        hop = encoder.frame_hop
        if (
            int(timestamp_phases) != timestamp_phases
            or timestamp_phases < 1
            or hop % timestamp_phases
        ):
            raise ValueError(
                f"timestamp_phases must divide the encoder's frame hop {hop}, got {timestamp_phases}"
            )
        if not chunk_seconds > 0 or max_frames_per_batch < 1:
            raise ValueError("chunk_seconds and max_frames_per_batch must be positive")
        self.timestamp_phases = int(timestamp_phases)
        # pieces hold a whole number of encoder frames, so that they align with the pooling
        self.chunk_frames = hop * max(
            1, round(chunk_seconds * self.frontend.frames_per_second / hop)
        )
        self.max_frames_per_batch = int(max_frames_per_batch)
        self.sample_rate = self.frontend.sample_rate
        self.scene_embedding_size = self.timestamp_embedding_size = int(encoder.feature_dim)
        frame_ms = 1000.0 * self.frontend.hop_length / self.frontend.sample_rate
        self.timestamp_hop_ms = frame_ms * hop / self.timestamp_phases
        self.eval()

    @property
    def device(self) -> torch.device:
        """Where the model runs: its first parameter, else its first buffer (an encoder
        without weights, such as the per-frame log-mel floor, follows the front end)."""
        return next(itertools.chain(self.parameters(), self.buffers())).device

    def _check_audio(self, audio: Tensor | np.ndarray) -> Tensor:
        audio = torch.as_tensor(audio)
        if audio.dim() != 2:
            raise ValueError(
                f"audio must have shape [n_sounds, n_samples], got {tuple(audio.shape)}"
            )
        audio = audio.to(self.device, torch.float32)
        min_samples = self.frontend.n_fft // 2 + 1  # the centred STFT reflects half a window
        if audio.shape[1] < min_samples:
            audio = nn.functional.pad(audio, (0, min_samples - audio.shape[1]))
        return audio

    def clip_batches(self, n: int, frames: int) -> list[slice]:
        """Slices of clips processed together, bounding the frames per encoder call."""
        per_batch = max(1, self.max_frames_per_batch // max(1, min(frames, self.chunk_frames)))
        return [slice(i, min(n, i + per_batch)) for i in range(0, n, per_batch)]

    @torch.no_grad()
    def log_mel(self, audio: Tensor) -> Tensor:
        """``[n, S] -> [n, 1, F, S // hop + 1]`` normalised log-mels, computed piecewise.

        Frame ``i`` is centred at sample ``i * hop``; each piece reads half an FFT window of
        extra samples on both sides (whole hops), so it equals the whole-clip log-mel.
        """
        c = self.frontend
        n, s = audio.shape
        t = s // c.hop_length + 1
        margin = math.ceil(c.n_fft / 2 / c.hop_length)  # frames of context for the window
        out = torch.empty(n, 1, c.n_mels, t, device=audio.device)
        for a in range(0, t, self.chunk_frames):
            b = min(t, a + self.chunk_frames)
            first = max(0, a - margin)
            s0, s1 = first * c.hop_length, min(s, (b - 1 + margin) * c.hop_length)
            piece = self.logmel(audio[:, s0:s1])
            out[..., a:b] = piece[..., a - first : b - first]
        return self.norm.apply(out)

    @torch.no_grad()
    def frame_features(self, lms: Tensor, offset: int = 0) -> Tensor:
        """Encoder frame features of ``lms[..., offset:]``: ``[n, 1, F, T] -> [n, T', D]``.

        Computed in pieces of ``chunk_frames`` with ``encoder.context_frames`` of overlap,
        which reproduces the whole-input frame features.
        """
        enc, hop, ctx = self.encoder, self.encoder.frame_hop, self.encoder.context_frames
        x = lms[..., offset:]
        t = x.shape[-1]
        n_out = enc.n_frames(t) if t > 0 else 0
        per_piece = self.chunk_frames // hop
        pieces = []
        for k in range(0, n_out, per_piece):
            a, b = k * hop, (k + per_piece) * hop
            start = max(0, a - ctx)
            feats = enc.frame_features(x[..., start : min(t, b + ctx)])
            first = (a - start) // hop
            pieces.append(feats[:, first : first + min(per_piece, n_out - k)])
        if not pieces:
            return x.new_zeros(x.shape[0], 0, self.scene_embedding_size)
        return torch.cat(pieces, dim=1)

    @torch.no_grad()
    def scene_embeddings(self, audio: Tensor | np.ndarray) -> Tensor:
        """``[n, S] -> [n, D]``: the encoder's pooling over all frames of each clip."""
        audio = self._check_audio(audio)
        n, t = audio.shape[0], audio.shape[1] // self.frontend.hop_length + 1
        out = audio.new_zeros(n, self.scene_embedding_size)
        for sl in self.clip_batches(n, t):
            out[sl] = pool_frames(self.frame_features(self.log_mel(audio[sl])))
        return out

    @torch.no_grad()
    def timestamp_embeddings(self, audio: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """``[n, S] -> ([n, T_e, D], timestamps_ms [n, T_e])`` with a regular hop."""
        audio = self._check_audio(audio)
        n, t = audio.shape[0], audio.shape[1] // self.frontend.hop_length + 1
        hop, phases = self.encoder.frame_hop, self.timestamp_phases
        step = hop // phases
        batches = []
        for sl in self.clip_batches(n, t):
            lms = self.log_mel(audio[sl])
            streams = [self.frame_features(lms, offset=i * step) for i in range(phases)]
            # phase i has at most as many frames as phase 0 and at least one fewer:
            # interleave frame by frame and keep the complete prefix
            n_total = sum(s.shape[1] for s in streams)
            n0 = streams[0].shape[1]
            padded = [nn.functional.pad(s, (0, 0, 0, n0 - s.shape[1])) for s in streams]
            batches.append(torch.stack(padded, dim=2).flatten(1, 2)[:, :n_total])
        emb = (
            torch.cat(batches, dim=0)
            if batches
            else audio.new_zeros(0, 0, self.timestamp_embedding_size)
        )
        frame_ms = 1000.0 * self.frontend.hop_length / self.frontend.sample_rate
        centres = torch.arange(emb.shape[1], device=emb.device, dtype=torch.float64) * step
        timestamps = ((centres + self.encoder.frame_offset) * frame_ms).float()
        return emb, timestamps.unsqueeze(0).expand(n, -1).contiguous()

    def forward(self, audio: Tensor) -> Tensor:
        """Scene embeddings ``[n, S] -> [n, D]``."""
        return self.scene_embeddings(audio)


def _export_folder(path: str | Path) -> Path:
    path = Path(path)
    return path.parent if path.is_file() and path.suffix != ".safetensors" else path


def load_model(model_file_path: str = "", **options: Any) -> HearModel:
    """Load an exported encoder (a run or export directory, or one of its files) for HEAR.

    With ``model_file_path=""`` the model is a randomly initialised ``AudioNTT2020`` (d=512)
    with the default front end and identity normalisation (no dataset statistics exist for
    it): the random-encoder floor. ``options`` go to :class:`HearModel`
    (``chunk_seconds``, ``max_frames_per_batch``, ``timestamp_phases``).
    """
    if not model_file_path:
        frontend = FrontEndConfig()
        return HearModel(
            AudioNTT2020(n_mels=frontend.n_mels, d=512), frontend, NormStats(0.0, 1.0), **options
        )
    exported = read_audio_export(_export_folder(model_file_path))
    norm = exported.norm
    if norm is None:
        warnings.warn(
            f"{model_file_path}: encoder.json has no 'norm' statistics; using mean 0, std 1",
            stacklevel=2,
        )
        norm = NormStats(0.0, 1.0)
    return HearModel(exported.encoder, exported.frontend or FrontEndConfig(), norm, **options)


def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    """``audio [n, samples]`` (float32, ``model.sample_rate``) -> ``[n, scene_embedding_size]``."""
    return model.scene_embeddings(audio)


def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> tuple[Tensor, Tensor]:
    """``audio [n, samples]`` -> ``(embeddings [n, T, D], timestamps_ms [n, T])``.

    The hop is ``model.timestamp_hop_ms`` (40 ms with the default encoders).
    """
    return model.timestamp_embeddings(audio)


def audio_export_meta(
    encoder: nn.Module, frontend: FrontEndConfig, norm: NormStats
) -> dict[str, Any]:
    """The ``meta`` of :func:`stec.engine.export.export_backbone` for an audio encoder."""
    return {
        "modality": "audio",
        "encoder": encoder_spec(encoder),
        "feature_dim": int(encoder.feature_dim),
        "frontend": dataclasses.asdict(frontend),
        "norm": {"mean": float(norm.mean), "std": float(norm.std)},
    }
