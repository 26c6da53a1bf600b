"""The log-mel cache: decode every clip once, then train and evaluate from float16 arrays.

Layout of a cache folder (all writes atomic: temporary file, then ``os.replace``)::

    config.json     front end, clip length and padding the items were made with
    items/ab/abcdef0123456789abcd.npy
                    one float16 array [n_mels, T] per clip: the raw log(mel + eps), not
                    normalised (statistics are applied on the device, so one cache serves
                    every subset of the corpus and every statistics file)
    bad_files.tsv   reason<TAB>path of every clip the last fill could not use

**Never served for other data.** An item's name is the sha1 of the clip's id, its audio
path, the file's size and its modification time: an item is only ever read for the very
file it was made from. A moved, replaced or re-encoded file gets a new item (the stale one
is never read again), any subset of the corpus (ESC-10, some folds, AudioSet's evaluation
list) reads exactly its own clips, and a changed front end, clip length or padding is
refused by ``config.json`` instead of mixing shapes. One ``.npy`` per clip (rather than
shards) makes filling resumable and parallel: a clip is cached exactly when its file
exists. float16 keeps the raw log-mels to about 0.008 (a few thousandths of the typical
std).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from stec.errors import DataError
from stec.files import written_whole
from stec_audio.data.frontend import FrontEndConfig

CACHE_VERSION = 2


def atomic_write_text(path: Path, text: str) -> None:
    with written_whole(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class LogMelStore:
    """The item store of one cache folder; refuses a folder made with another configuration."""

    def __init__(
        self,
        root: str | os.PathLike,
        frontend: FrontEndConfig,
        clip_seconds: float,
        pad_mode: str = "center",
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
            "values": "log(mel + eps), not normalised",
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
            atomic_write_text(path, json.dumps(config, indent=2))

    @staticmethod
    def key(clip_id: str, path: str) -> str | None:
        """The item name of clip ``clip_id`` read from ``path``; None when the file is gone."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        source = f"{clip_id}\0{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}"
        return hashlib.sha1(source.encode("utf-8")).hexdigest()[:20]

    def item_path(self, key: str) -> Path:
        return self.root / "items" / key[:2] / f"{key}.npy"

    def has(self, clip_id: str, path: str) -> bool:
        key = self.key(clip_id, path)
        return key is not None and self.item_path(key).exists()

    def read(self, clip_id: str, path: str) -> np.ndarray | None:
        """The cached float16 ``[n_mels, T]`` item of this very file, or None."""
        key = self.key(clip_id, path)
        if key is None:
            return None
        try:
            item = np.load(self.item_path(key), allow_pickle=False)
        except (OSError, ValueError):
            return None
        return item if item.shape == self.shape else None

    def write(self, clip_id: str, path: str, logmel: np.ndarray) -> None:
        """Store the raw ``logmel [n_mels, T]`` of the file at ``path`` as float16."""
        if logmel.shape != self.shape:
            raise ValueError(
                f"cache item for {clip_id!r}: shape {logmel.shape}, expected {self.shape}"
            )
        key = self.key(clip_id, path)
        if key is None:
            return  # the file vanished while it was decoded: nothing to key the item to
        target = self.item_path(key)
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, logmel.astype(np.float16))
        os.replace(tmp, target)


@dataclass
class CacheReport:
    """What :func:`prepare_cache` did."""

    out_dir: Path
    n_clips: int  # clips in the index
    n_cached: int  # clips now in the cache
    n_new: int  # converted by this run
    n_reused: int  # already cached before this run
    n_bad: int  # could not be used (listed in bad_files.tsv)
    bad_summary: str


class _Convert(Dataset):
    """Worker-side job: decode and store clip ``todo[j]``; report the outcome."""

    def __init__(self, dataset, todo: list[int]) -> None:
        self.dataset, self.todo = dataset, todo

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, j: int) -> tuple[int, str | None, str | None]:
        from stec_audio.data.io import AudioError

        i = self.todo[j]
        try:
            x = self.dataset.load(i)
        except AudioError as err:
            return i, err.path, err.reason
        index = self.dataset.index
        self.dataset.store.write(index.id(i), index.path(i), x[0].numpy())
        return i, None, None


def _identity(item):
    return item


def prepare_cache(dataset, workers: int = 2, progress: bool = True) -> CacheReport:
    """Decode every clip of a cache-backed ``LogMelClipDataset`` not cached yet, once.

    ``workers`` processes decode in parallel (0 = this process); a progress bar shows the
    conversion. Clips already cached are skipped, so an interrupted run resumes where it
    stopped; clips that failed are tried again on the next run (a repaired file gets in).
    Unusable files are recorded in the dataset's bad-file log (which stops the run with
    :class:`~stec_audio.data.io.TooManyBadFiles` when most files are unusable) and in
    ``bad_files.tsv``.
    """
    store = dataset.store
    if store is None:
        raise ValueError("prepare_cache needs a dataset made with cache_dir=")  # a caller's bug
    index = dataset.index
    done = np.array([store.has(index.id(i), index.path(i)) for i in range(len(index))], dtype=bool)
    n_reused = int(done.sum())
    todo = np.flatnonzero(~done).tolist()
    loader = DataLoader(
        _Convert(dataset, todo), batch_size=None, num_workers=workers, collate_fn=_identity
    )
    log = dataset.bad_log
    n_new = 0
    for i, path, reason in tqdm(
        loader, total=len(todo), desc="log-mel cache", disable=not progress or not todo
    ):
        if reason is None:
            done[i] = True
            n_new += 1
            log.ok()
        else:
            dataset.mark_bad(i, path, reason)
    if todo:
        log.write(store.root / "bad_files.tsv")
    return CacheReport(
        out_dir=store.root,
        n_clips=len(index),
        n_cached=int(done.sum()),
        n_new=n_new,
        n_reused=n_reused,
        n_bad=len(todo) - n_new,
        bad_summary=log.summary(),
    )
