"""Clip indexes: ESC-50, CSV manifests and class folders, read into one shape.

Every source is read into :class:`ClipIndex`: N clips stored as numpy columns (utf-8 ids
and paths, labels as offsets + values, folds), with the class names and a multi-label
flag. Columns instead of a list of objects keep a 2M-clip AudioSet index small and fast to
build, and keep DataLoader worker processes from copying it page by page (reference counts
on millions of Python objects defeat copy-on-write). ``index[i]`` gives a
:class:`ClipEntry`; ``index.entries`` builds them all.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from stec.errors import DataError, name_some
from stec_audio.data.io import AUDIO_EXTENSIONS, BadFileLog

ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


@dataclass
class ClipEntry:
    """One clip: ``label`` is a class index, a list of them (multi-label) or None."""

    id: str
    path: Path
    label: int | list[int] | None
    fold: int | None


def encode_utf8(strings: Sequence[str]) -> np.ndarray:
    """``[N]`` numpy bytes array of the utf-8 encoded ``strings`` (one buffer, no objects)."""
    if len(strings) == 0:
        return np.zeros(0, dtype="S1")
    return np.array([s.encode("utf-8") for s in strings], dtype=bytes)


@dataclass(eq=False)
class ClipIndex:
    """N clips as columns. Build with :meth:`from_entries` or from arrays.

    Attributes:
        ids: ``[N]`` utf-8 bytes, unique clip ids (ESC-50 file name, AudioSet YTID,
            manifest path, path relative to a scanned folder).
        paths: ``[N]`` utf-8 bytes, audio file paths.
        label_offsets: ``[N + 1]`` int64; clip ``i`` has labels
            ``label_values[label_offsets[i]:label_offsets[i + 1]]`` (none = unlabeled).
        label_values: ``[L]`` int32 class indices.
        folds: ``[N]`` int16, -1 where a clip has no fold.
        class_names: the C class names, in class-index order.
        multilabel: whether labels are sets (AudioSet) rather than one class per clip.
        missing: ids of clips listed by the source whose audio file was not found.
        tasks: further label sets of the same clips, by name: ``[N]`` int64 each, -1
            where the task does not apply to a clip (see :func:`add_label_columns`).
    """

    ids: np.ndarray
    paths: np.ndarray
    label_offsets: np.ndarray
    label_values: np.ndarray
    folds: np.ndarray
    class_names: list[str]
    multilabel: bool = False
    missing: list[str] = field(default_factory=list)
    tasks: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.paths) != n or len(self.folds) != n or len(self.label_offsets) != n + 1:
            raise ValueError("ClipIndex: ids, paths, folds and label_offsets[:-1] differ in length")

    @classmethod
    def from_entries(
        cls,
        entries: Sequence[ClipEntry],
        class_names: Sequence[str] | None = None,
        multilabel: bool | None = None,
        missing: Sequence[str] = (),
    ) -> ClipIndex:
        """Index ``entries``; class names default to ``"0".."C-1"`` from the largest label."""
        lists = [
            [] if e.label is None else ([e.label] if isinstance(e.label, int) else list(e.label))
            for e in entries
        ]
        counts = np.array([len(x) for x in lists], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        values = np.array([v for x in lists for v in x], dtype=np.int32)
        if class_names is None:
            n_classes = int(values.max()) + 1 if values.size else 0
            class_names = [str(c) for c in range(n_classes)]
        if values.size and (values.min() < 0 or values.max() >= len(class_names)):
            raise ValueError(f"labels must lie in [0, {len(class_names)}), got {values.min()}..")
        if multilabel is None:
            multilabel = any(not isinstance(e.label, int) and e.label is not None for e in entries)
        folds = np.array([-1 if e.fold is None else e.fold for e in entries], dtype=np.int16)
        return cls(
            ids=encode_utf8([e.id for e in entries]),
            paths=encode_utf8([str(e.path) for e in entries]),
            label_offsets=offsets,
            label_values=values,
            folds=folds,
            class_names=list(class_names),
            multilabel=bool(multilabel),
            missing=list(missing),
        )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def id(self, i: int) -> str:
        return self.ids[i].decode("utf-8")

    def path(self, i: int) -> str:
        return self.paths[i].decode("utf-8")

    def label(self, i: int) -> int | list[int] | None:
        """Clip ``i``'s class (single-label), list of classes (multi-label) or None."""
        values = self.label_values[self.label_offsets[i] : self.label_offsets[i + 1]]
        if self.multilabel:
            return values.tolist()
        return int(values[0]) if values.size else None

    def __getitem__(self, i: int) -> ClipEntry:
        fold = int(self.folds[i])
        return ClipEntry(self.id(i), Path(self.path(i)), self.label(i), None if fold < 0 else fold)

    def __iter__(self) -> Iterator[ClipEntry]:
        return (self[i] for i in range(len(self)))

    @property
    def entries(self) -> list[ClipEntry]:
        return list(self)

    def targets(self, positions: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Targets of all clips (or of ``positions``).

        Single-label: int64 ``[N]`` (-1 unlabeled). Multi-label: float32 multi-hot
        ``[N, C]``; mind the size (2M AudioSet clips x 527 classes is 4 GB), pass
        ``positions`` or take a :meth:`subset` for large indexes.
        """
        index = self if positions is None else self.subset(positions)
        counts = np.diff(index.label_offsets)
        if index.multilabel:
            out = np.zeros((len(index), index.num_classes), dtype=np.float32)
            out[np.repeat(np.arange(len(index)), counts), index.label_values] = 1.0
            return out
        out = np.full(len(index), -1, dtype=np.int64)
        has = counts > 0
        out[has] = index.label_values[index.label_offsets[:-1][has]]
        return out

    def subset(self, positions: Sequence[int] | np.ndarray) -> ClipIndex:
        """The clips at ``positions`` (missing ids are kept)."""
        pos = np.asarray(positions, dtype=np.int64)
        counts = np.diff(self.label_offsets)[pos]
        starts = self.label_offsets[:-1][pos]
        gather = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        values = (
            self.label_values[gather + np.arange(counts.sum())]
            if pos.size
            else self.label_values[:0]
        )
        return ClipIndex(
            ids=self.ids[pos],
            paths=self.paths[pos],
            label_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            label_values=values.astype(np.int32),
            folds=self.folds[pos],
            class_names=list(self.class_names),
            multilabel=self.multilabel,
            missing=list(self.missing),
            tasks={name: labels[pos] for name, labels in self.tasks.items()},
        )

    def missing_summary(self, max_ids: int = 5) -> str:
        """``N listed clip(s) have no audio file: id, ...`` ("" when none is missing)."""
        if not self.missing:
            return ""
        return f"{len(self.missing)} listed clip(s) have no audio file: {name_some(self.missing, max_ids)}"

    def split_fold(self, test_fold: int) -> tuple[ClipIndex, ClipIndex]:
        """``(train, test)``: clips of every other fold, and the clips of ``test_fold``."""
        if not (self.folds == test_fold).any():
            raise ValueError(
                f"no clip has fold {test_fold}; folds: {sorted(set(self.folds.tolist()))}"
            )
        return (
            self.subset(np.flatnonzero(self.folds != test_fold)),
            self.subset(np.flatnonzero(self.folds == test_fold)),
        )


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    df.columns = [c.strip() for c in df.columns]
    absent = [c for c in required if c not in df.columns]
    if absent:
        raise DataError(
            f"{path}: missing column(s) {absent}; found {list(df.columns)}, need {list(required)}"
        )
    return df


def _int_column(df: pd.DataFrame, column: str, path: Path, allow_empty: bool) -> np.ndarray:
    values = df[column].str.strip()
    ok = values.str.fullmatch(r"-?\d+") | ((values == "") if allow_empty else False)
    if not ok.all():
        row = int(np.flatnonzero(~ok.to_numpy())[0])
        raise DataError(
            f"{path}: column {column!r} row {row + 2} must be an integer, got {values.iloc[row]!r}"
        )
    return np.array([int(v) if v else -1 for v in values], dtype=np.int64)


def _exists(paths: list[Path]) -> np.ndarray:
    return np.array([p.is_file() for p in paths], dtype=bool)


def esc50_entries(root: str | os.PathLike, esc10: bool = False) -> ClipIndex:
    """ESC-50 (``root/meta/esc50.csv`` + ``root/audio/*.wav``) as a single-label ClipIndex.

    Labels are the ``target`` column and class names its ``category``; ``esc10=True`` keeps
    the ESC-10 clips and renumbers their classes 0..9 in target order. Listed clips whose
    file is absent go to ``missing``.
    """
    root = Path(root)
    csv = root / "meta" / "esc50.csv"
    if not (root / "audio").is_dir():
        raise FileNotFoundError(f"{root / 'audio'}: ESC-50 audio folder not found")
    df = _read_csv(csv, ESC50_COLUMNS)
    if esc10:
        df = df[df["esc10"].str.strip().str.lower().isin(("true", "1"))].reset_index(drop=True)
        if df.empty:
            raise DataError(f"{csv}: no row has esc10 = True")
    folds = _int_column(df, "fold", csv, allow_empty=False)
    targets = _int_column(df, "target", csv, allow_empty=False)
    names: dict[int, str] = {}
    for t, c in zip(targets.tolist(), df["category"].tolist(), strict=True):
        if names.setdefault(t, c) != c:
            raise DataError(f"{csv}: target {t} has two categories, {names[t]!r} and {c!r}")
    order = sorted(names)
    remap = {t: k for k, t in enumerate(order)}
    if not esc10 and order != list(range(len(order))):
        remap = {t: t for t in order}  # keep the official numbering, gaps included
        order = list(range(max(order) + 1))
    class_names = [names.get(t, f"class_{t}") for t in order]
    paths = [root / "audio" / f for f in df["filename"]]
    present = _exists(paths)
    entries = [
        ClipEntry(f, p, remap[t], int(k))
        for f, p, t, k, ok in zip(
            df["filename"], paths, targets.tolist(), folds, present, strict=True
        )
        if ok
    ]
    missing = [f for f, ok in zip(df["filename"], present, strict=True) if not ok]
    return ClipIndex.from_entries(entries, class_names, multilabel=False, missing=missing)


def manifest_entries(csv: str | os.PathLike, check_exists: bool = True) -> ClipIndex:
    """A CSV with column ``path`` and optional ``label`` and ``fold`` columns.

    Relative paths are relative to the CSV's folder. Labels are class names or integers;
    several labels separated by ``;`` make the index multi-label; an empty label means
    unlabeled. Integer labels keep their numbers (class names ``"0".."C-1"``), names are
    numbered in sorted order. With ``check_exists`` absent files go to ``missing``.
    """
    csv = Path(csv)
    df = _read_csv(csv, ("path",))
    raw = df["label"].tolist() if "label" in df.columns else [""] * len(df)
    tokens = [[t.strip() for t in s.split(";") if t.strip()] for s in raw]
    vocab = sorted({t for ts in tokens for t in ts})
    if all(re.fullmatch(r"\d+", t) for t in vocab):
        n_classes = max((int(t) for t in vocab), default=-1) + 1
        class_names, lookup = [str(c) for c in range(n_classes)], {t: int(t) for t in vocab}
    else:
        class_names, lookup = vocab, {t: k for k, t in enumerate(vocab)}
    multilabel = any(len(ts) > 1 for ts in tokens)
    folds = (
        _int_column(df, "fold", csv, allow_empty=True)
        if "fold" in df.columns
        else np.full(len(df), -1)
    )
    paths = [Path(p) if Path(p).is_absolute() else csv.parent / p for p in df["path"]]
    present = _exists(paths) if check_exists else np.ones(len(paths), dtype=bool)
    entries = []
    for p, rel, ts, k, ok in zip(paths, df["path"], tokens, folds, present, strict=True):
        if ok:
            labels = [lookup[t] for t in ts]
            label = labels if multilabel else (labels[0] if labels else None)
            entries.append(ClipEntry(rel, p, label, None if k < 0 else int(k)))
    missing = [rel for rel, ok in zip(df["path"], present, strict=True) if not ok]
    return ClipIndex.from_entries(entries, class_names, multilabel=multilabel, missing=missing)


def scan_audio_files(
    root: str | os.PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS
) -> list[str]:
    """Every audio file under ``root`` (recursive ``os.scandir``), as sorted path strings."""
    exts = tuple(e.lower() for e in extensions)
    found, stack = [], [os.fspath(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir():
                    stack.append(e.path)
                elif e.name.lower().endswith(exts):
                    found.append(e.path)
    return sorted(found)


def folder_entries(
    root: str | os.PathLike,
    labels: bool | None = None,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
) -> ClipIndex:
    """Audio under ``root``: one class per subfolder (``labels=True``), or unlabeled.

    With ``labels=None`` the layout decides: subfolders holding audio are classes (files
    directly in ``root`` are then ignored with a warning); a folder without them is one
    unlabeled set. ``labels=False`` scans everything recursively, unlabeled. Ids are paths
    relative to ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: audio folder not found")
    files = scan_audio_files(root, extensions)
    rel = [Path(f).relative_to(root) for f in files]
    nested = [len(r.parts) > 1 for r in rel]
    if labels is None:
        labels = any(nested)
    if not labels:
        entries = [
            ClipEntry(r.as_posix(), Path(f), None, None) for f, r in zip(files, rel, strict=True)
        ]
        return ClipIndex.from_entries(entries, [], multilabel=False)
    class_names = sorted({r.parts[0] for r, n in zip(rel, nested, strict=True) if n})
    if not class_names:
        raise DataError(f"{root}: labels=True but no class subfolder holds audio")
    n_top = len(nested) - sum(nested)
    if n_top:
        warnings.warn(
            f"{root}: {n_top} audio file(s) outside class subfolders ignored", stacklevel=2
        )
    lookup = {c: k for k, c in enumerate(class_names)}
    entries = [
        ClipEntry(r.as_posix(), Path(f), lookup[r.parts[0]], None)
        for f, r, n in zip(files, rel, nested, strict=True)
        if n
    ]
    return ClipIndex.from_entries(entries, class_names, multilabel=False)


def data_summary(index: ClipIndex, bad_log: BadFileLog | None = None) -> str:
    """What a run reports about its data: the listed clips without audio, then the files
    skipped or repaired (``bad_log``); "" when there is nothing to report."""
    lines = [index.missing_summary()]
    if bad_log is not None and (bad_log.n_bad or bad_log.n_repaired):
        lines.append(bad_log.summary())
    return "\n".join(line for line in lines if line)


def add_label_columns(
    index: ClipIndex, csv: str | os.PathLike, id_column: str, columns: Sequence[str]
) -> ClipIndex:
    """Attach further label sets of the same clips, read from ``columns`` of ``csv`` (the
    corpus's own metadata, e.g. ESC-50's ``meta/esc50.csv``), to ``index.tasks``.

    Rows are matched to clips by ``id_column`` (the clip ids: ESC-50 file names, manifest
    paths). Values are non-negative integers or names (numbered in sorted order); an empty
    cell means the task does not apply to that clip (label -1). Returns ``index``.
    """
    csv = Path(csv)
    df = _read_csv(csv, (id_column, *columns))
    rows = pd.Series(np.arange(len(df)), index=df[id_column].str.strip())
    if rows.index.has_duplicates:
        dup = rows.index[rows.index.duplicated()][0]
        raise ValueError(f"{csv}: {id_column} {dup!r} is listed twice")
    ids = [index.id(i) for i in range(len(index))]
    where = rows.reindex(ids)
    if where.isna().any():
        raise ValueError(f"{csv}: no row for clip {ids[int(np.flatnonzero(where.isna())[0])]!r}")
    for column in columns:
        values = df[column].str.strip().to_numpy()[where.to_numpy(dtype=np.int64)]
        names = sorted({v for v in values if v})
        if all(re.fullmatch(r"\d+", v) for v in names):
            lookup = {v: int(v) for v in names}
        else:
            lookup = {v: k for k, v in enumerate(names)}
        index.tasks[column] = np.array([lookup[v] if v else -1 for v in values], dtype=np.int64)
    return index


def clip_target(index: ClipIndex, i: int) -> int | Tensor:
    """Clip ``i``'s training target: class int (-1 unlabeled) or multi-hot float32 ``[C]``."""
    label = index.label(i)
    if index.multilabel:
        hot = torch.zeros(index.num_classes, dtype=torch.float32)
        hot[label] = 1.0
        return hot
    return -1 if label is None else label
