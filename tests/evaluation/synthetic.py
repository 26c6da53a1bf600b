"""Deterministic synthetic features for the evaluation tests."""

import torch


def make_blobs(
    n: int, n_classes: int, dim: int, separation: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs: ``[n, dim]`` features around ``n_classes`` random centres, ``[n]`` labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=g) * separation
    labels = torch.arange(n) % n_classes
    labels = labels[torch.randperm(n, generator=g)]
    return centres[labels] + torch.randn(n, dim, generator=g), labels
