"""A log-mel cache: decode and transform every clip once, then train from float16 arrays.

Layout of a cache folder (all writes atomic: temporary file, then ``os.replace``)::

    config.json     front end, clip length and padding the items were made with
    stats.json      the NormStats applied to every item (NormStats.save format)
    items/ab/abcdef0123456789abcd.npy
                    one float16 array [n_mels, T] per clip, normalised; the name is the
                    sha1 of the clip id, split over 256 subfolders (a 2M-clip folder
                    stays listable)
    manifest.csv    position,id,key,label,fold for every cached clip (written at the end)
    classes.json    class names and the multi-label flag
    bad_files.tsv   reason<TAB>path of every clip that could not be used

Decisions: one ``.npy`` per clip rather than shards, because per-clip files make resuming
and parallel writing trivial (a clip is done exactly when its file exists) and reads are
one ``np.load``; float16 halves the size with an error of about 1e-3 on normalised values.
Items are keyed by clip id, not path, so moving the audio does not invalidate the cache,
while a changed front end or clip length is refused (``config.json``) instead of mixing
shapes. Clips that failed are tried again on the next run (a repaired file gets picked up).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from stec.errors import DataError
from stec_audio.datasets import (
    ClipEntry,
    ClipIndex,
    IndexedClips,
    LogMelClipDataset,
    compute_norm_stats,
    encode_utf8,
)
from stec_audio.frontend import FrontEndConfig, NormStats
from stec_audio.io import AudioError, BadFileLog

CACHE_VERSION = 1


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class LogMelStore:
    """The item store of a cache folder; checks that its configuration matches.

    ``norm`` None uses the folder's ``stats.json`` (or leaves :attr:`norm` None when there
    is none yet); a given ``norm`` is written there, or must equal the stored one.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        frontend: FrontEndConfig,
        clip_seconds: float,
        pad_mode: str = "center",
        norm: NormStats | None = None,
    ) -> None:
        self.root = Path(root)
        (self.root / "items").mkdir(parents=True, exist_ok=True)
        self.frontend, self.clip_seconds = frontend, float(clip_seconds)
        self.shape = (frontend.n_mels, frontend.frames(clip_seconds))
        config = {
            "version": CACHE_VERSION,
            "frontend": asdict(frontend),
            "clip_seconds": self.clip_seconds,
            "pad_mode": pad_mode,
            "dtype": "float16",
        }
        path = self.root / "config.json"
        if path.exists():
            stored = json.loads(path.read_text())
            if stored != config:
                diff = sorted(k for k in config if stored.get(k) != config[k])
                raise DataError(
                    f"{path}: cache made with a different configuration ({', '.join(diff)}: "
                    f"{[stored.get(k) for k in diff]} vs {[config[k] for k in diff]}); "
                    "use another cache folder"
                )
        else:
            _atomic_write_text(path, json.dumps(config, indent=2))
        self.norm: NormStats | None = None
        if (self.root / "stats.json").exists():
            self.norm = NormStats.load(self.root / "stats.json")
        if norm is not None:
            self.set_norm(norm)

    def set_norm(self, norm: NormStats) -> None:
        """Store ``norm`` as the cache's statistics; refuse to change existing ones."""
        if self.norm is not None and self.norm != norm:
            raise DataError(
                f"{self.root / 'stats.json'}: the cache holds items normalised with {self.norm}, "
                f"not {norm}; use another cache folder or the stored statistics"
            )
        if self.norm is None:
            tmp = self.root / f".stats.json.{os.getpid()}.tmp"
            norm.save(tmp)
            os.replace(tmp, self.root / "stats.json")
            self.norm = norm

    @staticmethod
    def key(clip_id: str) -> str:
        return hashlib.sha1(clip_id.encode("utf-8")).hexdigest()[:20]

    def item_path(self, clip_id: str) -> Path:
        key = self.key(clip_id)
        return self.root / "items" / key[:2] / f"{key}.npy"

    def has(self, clip_id: str) -> bool:
        return self.item_path(clip_id).exists()

    def read(self, clip_id: str) -> np.ndarray | None:
        """The cached float16 ``[n_mels, T]`` item, or None (absent or unreadable)."""
        try:
            item = np.load(self.item_path(clip_id), allow_pickle=False)
        except (OSError, ValueError):
            return None
        return item if item.shape == self.shape else None

    def write(self, clip_id: str, logmel: np.ndarray) -> None:
        """Store ``logmel [n_mels, T]`` (normalised) as float16, atomically."""
        if logmel.shape != self.shape:
            raise ValueError(
                f"cache item for {clip_id!r}: shape {logmel.shape}, expected {self.shape}"
            )
        path = self.item_path(clip_id)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, logmel.astype(np.float16))
        os.replace(tmp, path)


@dataclass
class CacheReport:
    """What :func:`prepare_cache` did."""

    out_dir: Path
    n_clips: int  # clips in the index
    n_cached: int  # clips now in the cache
    n_new: int  # converted by this run
    n_reused: int  # already cached before this run
    n_bad: int  # could not be used (listed in bad_files.tsv)
    norm: NormStats
    bad_summary: str


class _Convert(Dataset):
    """Worker-side job: decode, normalise and store clip ``todo[j]``; report the outcome."""

    def __init__(self, raw: LogMelClipDataset, store: LogMelStore, todo: list[int]) -> None:
        self.raw, self.store, self.todo = raw, store, todo

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, j: int) -> tuple[int, str | None, str | None]:
        i = self.todo[j]
        try:
            x = self.raw.load(i)
        except AudioError as err:
            return i, err.path, err.reason
        self.store.write(self.raw.index.id(i), self.store.norm.apply(x)[0].numpy())
        return i, None, None


def _identity(item):
    return item


def prepare_cache(
    index: ClipIndex | Sequence[ClipEntry],
    out_dir: str | os.PathLike,
    frontend_config: FrontEndConfig | None = None,
    clip_seconds: float = 5.0,
    norm: NormStats | None = None,
    workers: int = 2,
    *,
    skip_silent: bool = True,
    min_seconds: float = 0.1,
    pad_mode: str = "center",
    max_bad_fraction: float = 0.5,
    stats_max_items: int | None = 10000,
    progress: bool = True,
) -> CacheReport:
    """Convert every clip of ``index`` once into a normalised float16 log-mel in ``out_dir``.

    Normalisation statistics come from ``norm``, else from the folder's ``stats.json``,
    else they are computed first (over ``stats_max_items`` clips spread evenly over the
    index) and stored. Clips already cached are skipped, so an interrupted run resumes
    where it stopped. ``workers`` processes decode in parallel (0 = this process). Stops
    with :class:`~stec_audio.io.TooManyBadFiles` when too many files are unusable.
    """
    index = index if isinstance(index, ClipIndex) else ClipIndex.from_entries(index)
    frontend = frontend_config or FrontEndConfig()
    out_dir = Path(out_dir)
    store = LogMelStore(out_dir, frontend, clip_seconds, pad_mode, norm)
    log = BadFileLog(max_bad_fraction, total=len(index))
    raw = LogMelClipDataset(
        index,
        frontend,
        clip_seconds,
        None,
        skip_silent=skip_silent,
        min_seconds=min_seconds,
        pad_mode=pad_mode,
        bad_log=log,
    )
    if store.norm is None:
        store.set_norm(compute_norm_stats(raw, stats_max_items, num_workers=workers))

    ids = [index.id(i) for i in range(len(index))]
    done = np.array([store.has(c) for c in ids], dtype=bool)
    n_reused = int(done.sum())
    todo = np.flatnonzero(~done).tolist()
    loader = DataLoader(
        _Convert(raw, store, todo), batch_size=None, num_workers=workers, collate_fn=_identity
    )
    n_new = 0
    for i, path, reason in tqdm(
        loader, total=len(todo), desc="log-mel cache", disable=not progress
    ):
        if reason is None:
            done[i] = True
            n_new += 1
            log.ok()
        else:
            log.bad(path, reason)

    _write_index(out_dir, index, ids, done)
    log.write(out_dir / "bad_files.tsv")
    return CacheReport(
        out_dir=out_dir,
        n_clips=len(index),
        n_cached=int(done.sum()),
        n_new=n_new,
        n_reused=n_reused,
        n_bad=log.n_bad,
        norm=store.norm,
        bad_summary=log.summary(),
    )


def _write_index(out_dir: Path, index: ClipIndex, ids: list[str], done: np.ndarray) -> None:
    tmp = out_dir / f".manifest.csv.{os.getpid()}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["position", "id", "key", "label", "fold"])
        for i in np.flatnonzero(done).tolist():
            label = index.label(i)
            label = ";".join(map(str, label)) if isinstance(label, list) else label
            fold = int(index.folds[i])
            w.writerow(
                [
                    i,
                    ids[i],
                    LogMelStore.key(ids[i]),
                    "" if label is None else label,
                    "" if fold < 0 else fold,
                ]
            )
    os.replace(tmp, out_dir / "manifest.csv")
    classes = {"class_names": index.class_names, "multilabel": index.multilabel}
    _atomic_write_text(out_dir / "classes.json", json.dumps(classes, indent=2))


class CachedLogMelDataset(IndexedClips):
    """Reads a cache made by :func:`prepare_cache`; items as in LogMelClipDataset.

    Item ``i`` is ``(logmel float32 [1, n_mels, T], label, i)`` for the ``i``-th clip of
    ``manifest.csv``; ``index`` is a :class:`ClipIndex` whose paths are the item files
    (labels, folds and class names as in the source index). The audio is not needed.
    """

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        self.root = Path(cache_dir)
        for name in ("config.json", "stats.json", "manifest.csv", "classes.json"):
            if not (self.root / name).exists():
                raise FileNotFoundError(
                    f"{self.root / name}: not a finished log-mel cache (run prepare_cache)"
                )
        config = json.loads((self.root / "config.json").read_text())
        self.frontend = FrontEndConfig(**config["frontend"])
        self.clip_seconds = float(config["clip_seconds"])
        self.norm = NormStats.load(self.root / "stats.json")
        classes = json.loads((self.root / "classes.json").read_text())
        # Columns straight into a ClipIndex: no Python object per clip (2M-clip caches).
        df = pd.read_csv(self.root / "manifest.csv", dtype=str, keep_default_na=False)
        keys = df["key"]
        paths = f"{self.root}{os.sep}items{os.sep}" + keys.str[:2] + os.sep + keys + ".npy"
        labels = df["label"].tolist()
        counts = np.array([s.count(";") + 1 if s else 0 for s in labels], dtype=np.int64)
        joined = ";".join(s for s in labels if s)
        self.index = ClipIndex(
            ids=encode_utf8(df["id"].tolist()),
            paths=encode_utf8(paths.tolist()),
            label_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            label_values=np.array(joined.split(";") if joined else [], dtype=np.int32),
            folds=np.array([int(f) if f else -1 for f in df["fold"]], dtype=np.int16),
            class_names=list(classes["class_names"]),
            multilabel=bool(classes["multilabel"]),
        )
        self.bad_log = BadFileLog(total=len(self.index))

    def __getitem__(self, i: int) -> tuple[Tensor, int | Tensor, int] | None:
        path = self.index.path(i)
        try:
            item = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            self.bad_log.bad(path, f"unreadable cache item ({err})")
            return None
        self.bad_log.ok()
        return torch.from_numpy(item.astype(np.float32)).unsqueeze(0), self.target(i), i
