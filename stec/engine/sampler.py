"""A distributed, resumable shuffling sampler."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from stec import distributed


class ResumableSampler(Sampler[int]):
    """Like ``DistributedSampler`` (shuffled per epoch from ``seed + epoch``, padded so every
    rank gets the same count), plus :meth:`set_start` to skip the samples a resumed run has
    already consumed in the current epoch. It never touches the global RNG."""

    def __init__(
        self,
        length: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world: int | None = None,
    ) -> None:
        if length <= 0:
            raise ValueError("the dataset is empty: no samples to train on")
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.rank = distributed.rank() if rank is None else rank
        self.world = distributed.world_size() if world is None else world
        self.per_rank = math.ceil(length / self.world)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this rank's share of the epoch."""
        self.start = start

    def __len__(self) -> int:
        return self.per_rank - self.start

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=gen).tolist()
        else:
            order = list(range(self.length))
        total = self.per_rank * self.world
        order = (order * math.ceil(total / self.length))[:total]
        mine = order[self.rank : total : self.world]
        return iter(mine[self.start :])
