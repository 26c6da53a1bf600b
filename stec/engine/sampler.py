"""A distributed, resumable shuffling sampler, and the training loader around it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from stec import distributed
from stec.engine.rng import EVERY_RANK, SAMPLER_STREAM, stream_seed

# how an epoch's order is seeded: from the stream of (seed, every rank, epoch), or, for
# runs whose checkpoints were written before the streams, from seed + epoch as they were
ORDERS = ("streams", "seed+epoch")


class ResumableSampler(Sampler[int]):
    """Like ``DistributedSampler`` (shuffled per epoch, padded so every rank gets the same
    count), plus :meth:`set_start` to skip the samples a resumed run has already consumed
    in the current epoch. Every rank shuffles alike, from the stream of ``(seed, epoch)``
    (:func:`stec.engine.rng.stream_seed`), so seeds never share shifted orders. It never
    touches the global RNG."""

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
        self.order = ORDERS[0]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this rank's share of the epoch."""
        self.start = start

    def __len__(self) -> int:
        return self.per_rank - self.start

    def epoch_seed(self) -> int:
        """The seed of this epoch's order."""
        if self.order == "seed+epoch":
            return self.seed + self.epoch
        return stream_seed(self.seed, EVERY_RANK, SAMPLER_STREAM, self.epoch)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.epoch_seed())
            order = torch.randperm(self.length, generator=gen).tolist()
        else:
            order = list(range(self.length))
        total = self.per_rank * self.world
        order = (order * math.ceil(total / self.length))[:total]
        mine = order[self.rank : total : self.world]
        return iter(mine[self.start :])


def build_loader(
    dataset: Dataset,
    sampler: ResumableSampler,
    batch_size: int,
    workers: int = 0,
    persistent_workers: bool = True,
    prefetch_factor: int = 2,
    pin_memory: bool = False,
    collate_fn: Callable | None = None,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """The training DataLoader (incomplete last batches dropped).

    With ``workers > 0``: ``persistent_workers`` keeps them alive between epochs (no
    start-up cost per epoch; the sampler still sets each epoch's order, since it runs in
    the main process) and each prepares ``prefetch_factor`` batches ahead. ``pin_memory``
    (for CUDA) puts batches in page-locked memory, so copies to the GPU run asynchronously.
    ``generator`` draws the workers' base seed at the start of an epoch (or once, with
    persistent workers); worker ``w`` seeds torch and Python with ``base + w``.
    """
    for key, value, low in (("num_workers", workers, 0), ("prefetch_factor", prefetch_factor, 1)):
        if int(value) != value or value < low:
            raise ValueError(f"trainer.{key}={value!r} must be an integer >= {low}")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        drop_last=True,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and workers > 0,
        prefetch_factor=prefetch_factor if workers > 0 else None,
        generator=generator,
    )
