"""A tiny learnable problem shared by the core tests: 1-D signals, cyclic shifts and gains."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from stec import ActionSpace, Augmenter, Compose, Continuous, TwoViews

LENGTH = 32


class ToySignals(Dataset):
    """``n`` smooth random signals in ``n_classes`` families; items ``(x [1, L], label, i)``."""

    def __init__(self, n: int = 64, n_classes: int = 4, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        t = torch.linspace(0, 1, LENGTH)
        self.labels = torch.arange(n) % n_classes
        freq = (self.labels + 1).float().unsqueeze(1)
        phase = torch.rand(n, 1, generator=gen) * 6.28
        self.x = torch.sin(6.28 * freq * t + phase) + 0.1 * torch.randn(n, LENGTH, generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i].unsqueeze(0), int(self.labels[i]), i


class CyclicShift(Augmenter):
    """Rolls each signal by a random share of its length; records the share."""

    def __init__(self, max_share: float = 0.5, p: float = 1.0) -> None:
        super().__init__(p)
        self.max_share = max_share

    def components(self):
        return [Continuous("shift", -self.max_share, self.max_share, n_bins=4)]

    def forward(self, x: Tensor):
        b, _, length = x.shape
        share = torch.rand(b, device=x.device) * self.max_share
        share = torch.where(self.applied(b, x.device), share, torch.zeros_like(share))
        steps = (share * length).round().long()
        idx = (torch.arange(length, device=x.device) + steps.unsqueeze(1)) % length
        return torch.gather(x, 2, idx.unsqueeze(1)), {"shift": steps.float() / length}


class Gain(Augmenter):
    def components(self):
        return [Continuous("gain", -1.0, 1.0, n_bins=4)]

    def forward(self, x: Tensor):
        g = torch.rand(x.shape[0], device=x.device) - 0.5
        return x * torch.exp(g).view(-1, 1, 1), {"gain": g}


def toy_augmenter() -> TwoViews:
    return TwoViews(Compose([CyclicShift(), Gain()]))


def toy_space() -> ActionSpace:
    return toy_augmenter().action_space()


class ToyBackbone(nn.Module):
    def __init__(self, dim: int = 32, norm: bool = True) -> None:
        super().__init__()
        layers = [nn.Flatten(), nn.Linear(LENGTH, 64)]
        if norm:
            layers.append(nn.BatchNorm1d(64))
        layers += [nn.ReLU(), nn.Linear(64, dim)]
        self.net = nn.Sequential(*layers)
        self.feature_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
