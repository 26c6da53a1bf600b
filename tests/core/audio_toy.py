"""Generated log-mel clips and an audio pipeline with the mixup memory bank, for the engine
tests that need an augmenter with state across steps."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from stec import Compose, TwoViews
from stec_audio.augment import (
    LinearFader,
    Mixup,
    RandomResizeCrop,
    TimeCrop,
    TimeFrequencyCrop,
)

N_MELS, FRAMES, CROP = 16, 40, 16


class LogMels(Dataset):
    """``n`` whole clips ``[1, 16, 40]`` of normalised "log-mels"; label ``i % 3``, but -1
    (unlabelled) for every fifth clip."""

    def __init__(self, n: int = 16, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 1, N_MELS, FRAMES, generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], -1 if i % 5 == 0 else i % 3, i


def audio_augmenter(energy_weighted: bool = False, n_memory: int = 24) -> TwoViews:
    return TwoViews(
        Compose(
            [
                TimeCrop(frames=CROP, energy_weighted=energy_weighted),
                Mixup(n_memory=n_memory),
                RandomResizeCrop(),
                LinearFader(),
            ]
        )
    )


def composed_augmenter() -> TwoViews:
    """``augment=composed`` on the toy clips: one time-frequency map per view (energy
    anchors, pitch shifts), then the fader, its gain applied but not predicted."""
    fader = LinearFader()
    fader.predict = False
    return TwoViews(
        Compose([TimeFrequencyCrop(frames=CROP, n_mels=N_MELS, energy_weighted=True), fader])
    )


class CropBackbone(nn.Module):
    """A linear encoder of ``[B, 1, 16, 16]`` crops."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(N_MELS * CROP, dim), nn.ReLU())
        self.feature_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
