"""Log-mel front end (BYOL-A defaults) and dataset normalisation statistics."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torchaudio
from torch import Tensor, nn

from stec.errors import DataError


@dataclass(frozen=True)
class FrontEndConfig:
    """BYOL-A's front end: 16 kHz, n_fft 1024, window 1024, hop 160, 64 mels, 60-7800 Hz."""

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 60.0
    f_max: float = 7800.0

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def frames(self, seconds: float) -> int:
        """Number of log-mel frames for a clip of ``seconds`` (centre-padded STFT)."""
        return int(round(seconds * self.sample_rate)) // self.hop_length + 1


class LogMel(nn.Module):
    """``wave [B, S] or [S] -> log(mel + eps) [B, 1, n_mels, T]``; runs on any device."""

    def __init__(self, config: FrontEndConfig | None = None) -> None:
        super().__init__()
        self.config = config or FrontEndConfig()
        c = self.config
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=c.sample_rate,
            n_fft=c.n_fft,
            win_length=c.win_length,
            hop_length=c.hop_length,
            n_mels=c.n_mels,
            f_min=c.f_min,
            f_max=c.f_max,
            power=2.0,
        )
        self.eps = torch.finfo(torch.float32).eps

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        return torch.log(self.mel(wave.float()) + self.eps).unsqueeze(1)


@dataclass(frozen=True)
class NormStats:
    """Dataset mean and std of the log-mel values, computed once before training."""

    mean: float
    std: float

    def apply(self, logmel: Tensor) -> Tensor:
        return (logmel - self.mean) / self.std

    def save(self, path: str | Path, **provenance: Any) -> None:
        """Write ``{"mean", "std", **provenance}`` (what the statistics were computed from)
        as JSON, atomically."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**asdict(self), **provenance}, indent=2, default=str))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> NormStats:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            stats = cls(float(data["mean"]), float(data["std"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"{path}: not a valid normalisation-statistics file ({err})") from err
        if not stats.std > 0:
            raise DataError(f"{path}: std must be positive, got {stats.std}")
        return stats


class LogMelNormalizer(nn.Module):
    """``(x - mean) / std`` of raw log-mels on their device, in float32 (float16 cache items
    come in as they are stored). ``[B, 1, F, T] -> [B, 1, F, T]``."""

    def __init__(self, stats: NormStats) -> None:
        super().__init__()
        self.stats = stats
        # not saved in checkpoints: the run directory keeps the statistics (stats.json)
        self.register_buffer("mean", torch.tensor(float(stats.mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(stats.std)), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std
