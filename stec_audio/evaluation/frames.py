"""Timestamped frame embeddings of whole clips: the HEAR ``get_timestamp_embeddings`` of
every clip of an index, for ``stec-audio embed frames=true``
(:func:`stec_audio.cli.embed_frames`) and sound event detection.

Decisions:

- The frames are exactly those of :meth:`stec_audio.hear.HearModel.timestamp_embeddings`
  (a regular 40 ms hop with the default encoders; each timestamp the centre of its
  embedding's window, in ms from the start of the file): the audio file is decoded as it
  is, neither padded nor cropped to ``data.clip_seconds``, so that the timestamps are
  those of the file, which is what strong labels refer to. Files that cannot be used
  (unreadable, silent, shorter than 0.1 s) are skipped and named, as for clip embeddings.
- Consecutive clips of equal length are embedded together (``batch_size`` at a time).
- The plain-feature floor (``checkpoint=logmel_stats``) has a per-frame form,
  :class:`LogMelFrames`: the mean and std of every mel band over the log-mel frames that
  an encoder frame covers, at the same timestamps.
- Files hold **one row per frame**: the clip id (plain, as in clip embeddings), the
  clip's label, the frame's index in its clip, its timestamp and the hop, and the
  embedding. A flat table joins with strong labels and filters by time without unpacking
  nested arrays, and clips of different lengths need no padding.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stec.evaluation import placed_on
from stec.files import written_whole
from stec_audio.data.clip_index import ClipIndex
from stec_audio.data.frontend import FrontEndConfig, NormStats
from stec_audio.data.io import AudioError, BadFileLog, clip_problem, load_audio
from stec_audio.encoders import pool_frames
from stec_audio.hear import HearModel


class LogMelFrames(nn.Module):
    """The per-frame log-mel floor, shaped as an encoder for :class:`HearModel`.

    Frame ``k`` is the mean and the std over time of every mel band over input frames
    ``[8k, 8k + 8)``, the frames an AudioNTT2020 output covers: ``[B, 1, F, T] ->
    [B, max(T, 8) // 8, 2F]`` (shorter inputs are zero-padded to 8 frames).
    """

    frame_hop = 8
    frame_offset = 3.5
    context_frames = 0  # each frame reads only its own 8 input frames

    def __init__(self, n_mels: int = 64) -> None:
        super().__init__()
        self.n_mels, self.feature_dim = int(n_mels), 2 * int(n_mels)

    def n_frames(self, t: int) -> int:
        return max(t, self.frame_hop) // self.frame_hop

    def frame_features(self, x: Tensor) -> Tensor:
        if x.shape[-1] < self.frame_hop:
            x = F.pad(x, (0, self.frame_hop - x.shape[-1]))
        b, _, f, t = x.shape
        n = t // self.frame_hop
        windows = x[..., : n * self.frame_hop].reshape(b, f, n, self.frame_hop)
        return torch.cat([windows.mean(-1), windows.std(-1)], dim=1).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return pool_frames(self.frame_features(x))


def frame_model(
    encoder: nn.Module, frontend: FrontEndConfig, norm: NormStats, logmel_floor: bool = False
) -> HearModel:
    """The :class:`HearModel` of an evaluated encoder; ``logmel_floor`` swaps in
    :class:`LogMelFrames` (the encoder of ``checkpoint=logmel_stats`` pools whole clips)."""
    if logmel_floor:
        encoder = LogMelFrames(frontend.n_mels)
    return HearModel(encoder, frontend, norm)


@dataclass
class ClipFrames:
    """Frame embeddings of the usable clips of an index.

    Attributes:
        positions: the clips' positions in the index.
        embeddings: per clip ``[T_i, D]`` float32 (CPU).
        timestamps_ms: per clip ``[T_i]`` float32, window centres in ms from the start.
        durations: per clip, the length of its audio in seconds.
        hop_ms: the regular hop between timestamps.
    """

    positions: list[int] = field(default_factory=list)
    embeddings: list[Tensor] = field(default_factory=list)
    timestamps_ms: list[Tensor] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    hop_ms: float = 0.0

    def __len__(self) -> int:
        return len(self.positions)


@torch.no_grad()
def clip_frames(
    model: HearModel,
    index: ClipIndex,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    bad_log: BadFileLog | None = None,
    min_seconds: float = 0.1,
) -> ClipFrames:
    """``get_timestamp_embeddings`` of every usable clip of ``index``, computed on
    ``device`` (the model is placed there for the call and left where it was).

    Unusable files are recorded in ``bad_log`` (which stops the run when too many are).
    """
    bad_log = bad_log or BadFileLog(total=len(index))
    out = ClipFrames(hop_ms=float(model.timestamp_hop_ms))
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        audio = torch.from_numpy(np.stack([wave for _, wave in pending]))
        emb, timestamps = model.timestamp_embeddings(audio)
        for row, (i, wave) in enumerate(pending):
            out.positions.append(i)
            out.embeddings.append(emb[row].float().cpu())
            out.timestamps_ms.append(timestamps[row].float().cpu())
            out.durations.append(wave.shape[0] / model.sample_rate)
        pending.clear()

    with placed_on(device, model):
        for i in range(len(index)):
            path = index.path(i)
            try:
                wave = load_audio(path, model.sample_rate, log=bad_log)
                problem = clip_problem(wave, model.sample_rate, min_seconds)
                if problem is not None:
                    raise AudioError(path, problem)
            except AudioError as err:
                bad_log.bad(err.path, err.reason)
                continue
            bad_log.ok()
            if pending and (pending[0][1].shape != wave.shape or len(pending) >= batch_size):
                flush()
            pending.append((i, wave))
        flush()
    if not out.positions:
        raise ValueError(f"no usable audio among {len(index)} clips.\n{bad_log.summary()}")
    return out


def save_frame_embeddings(
    out: str | os.PathLike, ids: Sequence[str], labels: np.ndarray, frames: ClipFrames
) -> Path:
    """Write ``frames`` one row per frame to ``.parquet`` or ``.npy``.

    Parquet columns: ``id`` (the clip id), ``label`` (the clip's label as JSON), ``frame``
    (index in the clip), ``timestamp_ms``, ``hop_ms`` and ``embedding``. ``.npy`` holds a
    dict ``{"ids", "labels", "frame", "timestamps_ms", "hop_ms", "embeddings"}`` with one
    entry per frame (``hop_ms`` a number); load it with
    ``np.load(path, allow_pickle=True).item()``.

    Args:
        ids: ``[N]`` clip ids; labels: ``[N]`` or ``[N, C]`` clip labels, in the order of
            ``frames.positions``.
    """
    out = Path(out)
    if out.suffix not in (".parquet", ".npy"):
        raise ValueError(f"out={str(out)!r}: use a .npy or .parquet file name")
    if not (len(ids) == len(labels) == len(frames)):
        raise ValueError(f"{len(ids)} ids and {len(labels)} labels for {len(frames)} clips")
    counts = np.array([e.shape[0] for e in frames.embeddings], dtype=np.int64)
    frame = np.concatenate([np.arange(n) for n in counts]).astype(np.int64)
    timestamps = torch.cat(frames.timestamps_ms).numpy()
    embeddings = torch.cat(frames.embeddings).numpy()
    row_ids = np.repeat(np.array(list(ids), dtype=str), counts)
    row_labels = np.repeat(np.asarray(labels), counts, axis=0)
    with written_whole(out) as tmp:
        if out.suffix == ".parquet":
            import pandas as pd

            table = pd.DataFrame(
                {
                    "id": row_ids,
                    "label": [json.dumps(v) for v in row_labels.tolist()],
                    "frame": frame,
                    "timestamp_ms": timestamps,
                    "hop_ms": np.full(len(frame), frames.hop_ms, dtype=np.float32),
                }
            )
            table["embedding"] = list(embeddings)
            table.to_parquet(tmp)
        else:
            with open(tmp, "wb") as handle:  # a file object: np.save adds no suffix to it
                np.save(
                    handle,
                    {
                        "ids": row_ids,
                        "labels": row_labels,
                        "frame": frame,
                        "timestamps_ms": timestamps,
                        "hop_ms": float(frames.hop_ms),
                        "embeddings": embeddings,
                    },
                    allow_pickle=True,
                )
    return out
