"""The log-mel clip datasets over a :class:`~stec_audio.data.clip_index.ClipIndex`.

:class:`LogMelClipDataset` decodes, resamples, pads/crops and turns each clip into a raw
log-mel ``[1, n_mels, T]``, deterministically (normalisation and random crops happen
later, on the device), optionally through the float16 cache; :class:`InMemoryLogMels`
holds the usable clips of a corpus that fits in memory. A file that cannot be used gives ``None`` (named and counted in a
:class:`~stec_audio.data.io.BadFileLog`); :func:`collate_skip_bad` drops those from a batch.
The index readers are re-exported here for convenience.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from stec.errors import DataError
from stec_audio.data.clip_index import (  # noqa: F401 - re-exported
    ClipEntry,
    ClipIndex,
    clip_target,
    encode_utf8,
    esc50_entries,
    folder_entries,
    manifest_entries,
    scan_audio_files,
)
from stec_audio.data.frontend import FrontEndConfig, LogMel, NormStats
from stec_audio.data.io import (
    AudioError,
    BadFileLog,
    clip_problem,
    fit_length,
    load_audio,
    single_torch_thread,
)


class IndexedClips(Dataset):
    """What every clip dataset over a :class:`ClipIndex` shares (``index``, ``frontend``
    and ``clip_seconds`` are set by the subclass)."""

    index: ClipIndex
    frontend: FrontEndConfig
    clip_seconds: float

    def __len__(self) -> int:
        return len(self.index)

    @property
    def class_names(self) -> list[str]:
        return self.index.class_names

    @property
    def multilabel(self) -> bool:
        return self.index.multilabel

    @property
    def num_frames(self) -> int:
        return self.frontend.frames(self.clip_seconds)

    def target(self, i: int) -> int | Tensor:
        return clip_target(self.index, i)


class LogMelClipDataset(IndexedClips):
    """Clips as raw log-mels: item ``i`` is ``(log(mel + eps) [1, n_mels, T], label, i)``.

    ``T = frontend.frames(clip_seconds)``; every clip is decoded to mono at the front end's
    rate, skipped when silent (``skip_silent``) or shorter than ``min_seconds``, then
    padded (``pad_mode``) or centre-cropped to ``clip_seconds``. ``label`` is an int (-1
    when unlabeled) or, for multi-label data, a multi-hot float32 tensor ``[C]``. A file
    that cannot be used gives ``None`` and is recorded in ``bad_log``. Normalisation is not
    applied here: it runs on the device (:class:`~stec_audio.data.frontend.LogMelNormalizer`),
    so that one decoded clip serves every statistics file.

    ``cache_dir`` makes the dataset read through a :mod:`stec_audio.data.cache` store (items
    are then float16): cached clips are read from it, others are decoded once and written.
    """

    def __init__(
        self,
        index: ClipIndex | Sequence[ClipEntry],
        frontend: FrontEndConfig | None = None,
        clip_seconds: float = 5.0,
        cache_dir: str | os.PathLike | None = None,
        *,
        skip_silent: bool = True,
        min_seconds: float = 0.1,
        pad_mode: str = "center",
        channel: int | None = None,
        bad_log: BadFileLog | None = None,
        max_bad_fraction: float = 0.5,
    ) -> None:
        self.index = index if isinstance(index, ClipIndex) else ClipIndex.from_entries(index)
        self.frontend = frontend or FrontEndConfig()
        self.clip_seconds = float(clip_seconds)
        self.n_samples = int(round(self.clip_seconds * self.frontend.sample_rate))
        self.skip_silent, self.min_seconds = skip_silent, float(min_seconds)
        self.pad_mode, self.channel = pad_mode, channel
        fit_length(np.zeros(1, np.float32), 1, pad_mode)  # validate pad_mode early
        self.bad_log = bad_log or BadFileLog(max_bad_fraction, total=len(self.index))
        self.logmel = LogMel(self.frontend)
        self.store = None
        if cache_dir is not None:
            # Imported here: the cache module reads these datasets.
            from stec_audio.data.cache import LogMelStore

            self.store = LogMelStore(cache_dir, self.frontend, self.clip_seconds, pad_mode)
        self._bad: set[int] = set()

    def load(self, i: int) -> Tensor:
        """Raw log-mel ``[1, n_mels, T]`` (float32) of clip ``i``, decoded; raises AudioError."""
        path = self.index.path(i)
        wave = load_audio(path, self.frontend.sample_rate, self.channel, log=self.bad_log)
        problem = clip_problem(wave, self.frontend.sample_rate, self.min_seconds, self.skip_silent)
        if problem is not None:
            raise AudioError(path, problem)
        wave = fit_length(wave, self.n_samples, self.pad_mode)
        with torch.no_grad(), single_torch_thread():
            return self.logmel(torch.from_numpy(np.ascontiguousarray(wave)))[0]

    def mark_bad(self, i: int, path: str, reason: str) -> None:
        """Record clip ``i`` as unusable (named and counted in :attr:`bad_log`)."""
        self._bad.add(i)
        self.bad_log.bad(path, reason)

    def __getitem__(self, i: int) -> tuple[Tensor, int | Tensor, int] | None:
        if i in self._bad:
            return None
        x = None
        if self.store is not None:
            cached = self.store.read(self.index.id(i), self.index.path(i))
            if cached is not None:
                x = torch.from_numpy(cached).unsqueeze(0)
        if x is None:
            try:
                x = self.load(i)
            except AudioError as err:
                self.mark_bad(i, err.path, err.reason)
                return None
            if self.store is not None:
                self.store.write(self.index.id(i), self.index.path(i), x[0].numpy())
                x = x.half()  # the same values a later read of the cache gives
        self.bad_log.ok()
        return x, self.target(i), i


class InMemoryLogMels(IndexedClips):
    """The usable clips of a dataset held in memory as one float16 tensor.

    Item ``i`` is ``(logmel [1, n_mels, T] float16, label, i)`` for clip ``i`` of
    :attr:`index`, the subset of the source index whose clips could be read (bad files
    are left out, and stay named in :attr:`bad_log`). Reading an item is a view of the
    tensor: no decoding, no file access, so a loader needs no worker processes.
    """

    def __init__(self, source: IndexedClips, workers: int = 0, progress: bool = False) -> None:
        from tqdm import tqdm

        loader = DataLoader(source, batch_size=64, num_workers=workers, collate_fn=collate_skip_bad)
        xs, positions = [], []
        for batch in tqdm(loader, desc="loading log-mels", disable=not progress):
            if batch is not None:
                xs.append(batch[0].half())
                positions.append(batch[2])
        if not xs:
            raise no_usable_audio(len(source), source.bad_log)
        pos = torch.cat(positions)
        order = pos.argsort()
        self.data = torch.cat(xs)[order]
        self.index = source.index.subset(pos[order].numpy())
        self.frontend, self.clip_seconds = source.frontend, source.clip_seconds
        self.bad_log = source.bad_log
        self._targets = [clip_target(self.index, i) for i in range(len(self.index))]

    @staticmethod
    def nbytes(source: IndexedClips) -> int:
        """Memory the float16 log-mels of ``source`` would take."""
        return len(source) * source.frontend.n_mels * source.num_frames * 2

    def __getitem__(self, i: int) -> tuple[Tensor, int | Tensor, int]:
        return self.data[i], self._targets[i], i


def collate_skip_bad(
    batch: Sequence[tuple[Tensor, int | Tensor, int] | None],
) -> tuple[Tensor, Tensor, Tensor] | None:
    """Stack the usable items: ``(x [B, 1, n_mels, T], labels [B] or [B, C], index [B])``.

    ``None`` items (bad files) are dropped; a batch with no usable item gives ``None``.
    """
    items = [b for b in batch if b is not None]
    if not items:
        return None
    xs, labels, idx = zip(*items, strict=True)
    if isinstance(labels[0], Tensor):
        y = torch.stack(labels)
    else:
        y = torch.tensor(labels, dtype=torch.long)
    return torch.stack(xs), y, torch.tensor(idx, dtype=torch.long)


def no_usable_audio(n_clips: int, bad_log) -> DataError:
    """The error of a dataset none of whose ``n_clips`` clips could be read, with the
    reasons, on one line."""
    reasons = "; ".join(line.strip() for line in bad_log.summary().splitlines() if line.strip())
    return DataError(f"no usable audio among {n_clips} clips: {reasons or 'none could be read'}")


def compute_norm_stats(
    dataset: IndexedClips,
    max_items: int | None = None,
    num_workers: int = 0,
    batch_size: int = 16,
) -> NormStats:
    """Mean and std of every raw log-mel value of ``dataset`` (bad files skipped).

    With ``max_items`` the statistics use that many clips spread evenly over the dataset
    (not its first ones, which are often one class or one fold). Padding is part of the
    clips the model sees, so it is counted too.
    """
    n = len(dataset)
    positions = np.arange(n)
    if max_items is not None and max_items < n:
        positions = np.unique(np.linspace(0, n - 1, max_items).round().astype(np.int64))
    loader = DataLoader(
        Subset(dataset, positions.tolist()),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_skip_bad,
    )
    total, total_sq, count = 0.0, 0.0, 0
    for batch in loader:
        if batch is None:
            continue
        x = batch[0].double()
        total += float(x.sum())
        total_sq += float((x * x).sum())
        count += x.numel()
    if count == 0:
        raise no_usable_audio(len(positions), dataset.bad_log)
    mean = total / count
    std = max(total_sq / count - mean * mean, 0.0) ** 0.5
    if not std > 0:
        raise ValueError("log-mel values have zero variance; cannot normalise")
    return NormStats(mean, std)
