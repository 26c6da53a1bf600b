"""AudioSet segment lists, label vocabulary and local audio files as a multi-label ClipIndex.

Inputs:

- segment CSVs (``balanced_train_segments.csv``, ``unbalanced_train_segments.csv``,
  ``eval_segments.csv``): leading ``#`` comment lines, then rows
  ``YTID, start_seconds, end_seconds, "mid1,mid2,..."`` (spaces after the separators);
- ``class_labels_indices.csv`` (``index,mid,display_name``), found next to the first
  segment CSV unless given;
- the audio, found by YTID (below) under ``audio_root``, or listed by a mapping CSV with
  columns ``YTID,path`` (relative paths are relative to the mapping CSV; they are not
  checked, so a listed file that turns out to be absent is a bad file at load time).

File naming schemes recognised when scanning ``audio_root`` recursively (any of
:data:`~stec_audio.data.io.AUDIO_EXTENSIONS`): ``{YTID}.wav``, ``Y{YTID}.wav`` (common dumps),
``{YTID}_{start}.wav``, ``{YTID}_{start}_{end}.wav`` and ``Y{YTID}_{start}_{end}.wav``
(start in milliseconds when an integer, else seconds such as ``30.000``). YouTube ids are
11 characters, which is what separates the id from a suffix. When one YTID has several
files, the one whose start matches the segment wins.

Decisions: clips without audio are counted in ``ClipIndex.missing`` (and logged), never
fatal. Clip ids are the YTID, or ``{YTID}_{start_ms}`` for the rare YTID listed twice.
Parsing 2M rows is the slow part, so the parsed segments (ids, starts, label lists) are
cached as ``.npz`` in ``cache_dir`` (default ``$STEC_CACHE/audioset_index``, else
``~/.cache/stec/audioset_index``), keyed by the CSVs' path, size and mtime; the folder
scan runs every time, because the audio changes while users download it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stec.errors import DataError
from stec_audio.data.clip_index import ClipIndex, encode_utf8, scan_audio_files
from stec_audio.data.io import AUDIO_EXTENSIONS, stec_cache_dir

log = logging.getLogger(__name__)

YTID_LENGTH = 11
_CACHE_VERSION = 1


def read_class_labels(csv: str | os.PathLike) -> tuple[list[str], list[str]]:
    """``(mids, display_names)`` in class-index order from ``class_labels_indices.csv``."""
    csv = Path(csv)
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: AudioSet class label file not found")
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df.columns = [c.strip() for c in df.columns]
    absent = [c for c in ("index", "mid", "display_name") if c not in df.columns]
    if absent:
        raise DataError(f"{csv}: missing column(s) {absent}; need index,mid,display_name")
    index = pd.to_numeric(df["index"], errors="coerce").to_numpy()
    order = np.argsort(index, kind="stable")
    if not (index[order] == np.arange(len(df))).all():
        raise DataError(f"{csv}: column 'index' must hold 0..{len(df) - 1} once each")
    mids = df["mid"].str.strip().to_numpy()[order].tolist()
    return mids, df["display_name"].to_numpy()[order].tolist()


@dataclass
class Segments:
    """Parsed segment rows: ``ytids [N]`` bytes, ``start_ms``/``end_ms [N]`` int64, labels
    as ``label_offsets [N + 1]`` / ``label_values [L]`` class indices."""

    ytids: np.ndarray
    start_ms: np.ndarray
    end_ms: np.ndarray
    label_offsets: np.ndarray
    label_values: np.ndarray


def _comment_lines(csv: Path) -> int:
    n = 0
    with open(csv, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#") and not line.upper().startswith("YTID"):
                break
            n += 1
    return n


def read_segments(csv: str | os.PathLike, mids: Sequence[str]) -> Segments:
    """Parse one segment CSV; labels become indices into ``mids``."""
    csv = Path(csv)
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: AudioSet segment list not found")
    df = pd.read_csv(
        csv,
        skiprows=_comment_lines(csv),
        header=None,
        names=["ytid", "start", "end", "labels"],
        skipinitialspace=True,
        quotechar='"',
        dtype={"ytid": object, "labels": object},
        na_filter=False,
        engine="c",
    )
    for col in ("start", "end"):
        if not pd.api.types.is_numeric_dtype(df[col]):
            bad = pd.to_numeric(df[col], errors="coerce").isna().to_numpy()
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{csv}: {col}_seconds of {df['ytid'][row]!r} is {df[col][row]!r}")
    labels = df["labels"].tolist()
    # One join and split for all rows: far faster than splitting 2M strings one by one.
    counts = np.array([s.count(",") + 1 if s else 0 for s in labels], dtype=np.int64)
    joined = ",".join(s for s in labels if s).replace(" ", "").replace('"', "")
    tokens = np.array(joined.split(",") if joined else [], dtype=object)
    codes = pd.Index(list(mids)).get_indexer(tokens)
    empty = tokens == ""
    unknown = (codes < 0) & ~empty
    if unknown.any():
        names = sorted(set(tokens[unknown].tolist()))
        raise DataError(
            f"{csv}: {len(names)} label id(s) not in the class label file, e.g. {names[:5]}"
        )
    rows = np.repeat(np.arange(len(df)), counts)[~empty]
    counts = np.bincount(rows, minlength=len(df))
    return Segments(
        ytids=encode_utf8([y.strip() for y in df["ytid"].tolist()]),
        start_ms=np.round(df["start"].to_numpy(np.float64) * 1000).astype(np.int64),
        end_ms=np.round(df["end"].to_numpy(np.float64) * 1000).astype(np.int64),
        label_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        label_values=codes[~empty].astype(np.int32),
    )


def default_cache_dir() -> Path:
    return stec_cache_dir("audioset_index")


def _cache_key(files: Sequence[Path]) -> str:
    h = hashlib.sha1(str(_CACHE_VERSION).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def load_segments(
    csvs: Sequence[Path], labels_csv: Path, cache_dir: Path | None
) -> tuple[Segments, list[str], list[str]]:
    """Parse (or load from the ``.npz`` cache) the segment CSVs, concatenated."""
    mids, names = read_class_labels(labels_csv)
    cache = None
    if cache_dir is not None:
        cache = cache_dir / f"segments-{_cache_key([*csvs, labels_csv])}.npz"
        if cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as z:
                    return Segments(**{k: z[k] for k in Segments.__dataclass_fields__}), mids, names
            except (OSError, ValueError, KeyError) as err:
                log.warning("%s: unreadable index cache, rebuilding (%s)", cache, err)
    parts = [read_segments(c, mids) for c in csvs]
    seg = parts[0]
    if len(parts) > 1:
        shifts = np.cumsum([0] + [p.label_offsets[-1] for p in parts[:-1]])
        seg = Segments(
            ytids=np.concatenate([p.ytids for p in parts]),
            start_ms=np.concatenate([p.start_ms for p in parts]),
            end_ms=np.concatenate([p.end_ms for p in parts]),
            label_offsets=np.concatenate(
                [[0]] + [p.label_offsets[1:] + s for p, s in zip(parts, shifts, strict=True)]
            ).astype(np.int64),
            label_values=np.concatenate([p.label_values for p in parts]),
        )
    if cache is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **{k: getattr(seg, k) for k in Segments.__dataclass_fields__})
        os.replace(tmp, cache)
    return seg, mids, names


def _parse_start(text: str) -> list[int]:
    """Start-time candidates in ms from a file-name suffix (``30000`` ms or ``30.000`` s)."""
    first = text.split("_", 1)[0]
    try:
        value = float(first)
    except ValueError:
        return []
    if "." in first:
        return [round(value * 1000)]
    return [int(value), int(value) * 1000]  # an integer may be ms or whole seconds


def find_audio_files(
    audio_root: str | os.PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS
) -> dict[str, list[tuple[int, list[int], str]]]:
    """``{ytid: [(priority, start candidates ms, path), ...]}`` for every audio file found.

    Priority 0: the stem is the id; 1: ``Y`` + id; 2: id + ``_`` suffix; 3: ``Y`` + id +
    ``_`` suffix. A stem can register under several ids; only real ids are looked up.
    """
    found: dict[str, list[tuple[int, list[int], str]]] = {}
    for path in scan_audio_files(audio_root, extensions):
        name = os.path.basename(path)
        stem = name[: name.rfind(".")]
        keys = [(stem, 0, [])]
        if stem.startswith("Y"):
            keys.append((stem[1:], 1, []))
        for prio, s in ((2, stem), (3, stem[1:] if stem.startswith("Y") else "")):
            if len(s) > YTID_LENGTH + 1 and s[YTID_LENGTH] == "_":
                keys.append((s[:YTID_LENGTH], prio, _parse_start(s[YTID_LENGTH + 1 :])))
        for key, prio, starts in keys:
            found.setdefault(key, []).append((prio, starts, path))
    return found


def _pick(candidates: list[tuple[int, list[int], str]], start_ms: int) -> str:
    if len(candidates) == 1:
        return candidates[0][2]
    return min(candidates, key=lambda c: (start_ms not in c[1], c[0], c[2]))[2]


def read_mapping(csv: str | os.PathLike) -> dict[str, str]:
    """``{ytid: path}`` from a CSV with columns ``YTID,path`` (relative to the CSV)."""
    csv = Path(csv)
    if not csv.is_file():
        raise FileNotFoundError(f"{csv}: mapping file not found")
    df = pd.read_csv(csv, dtype=object, keep_default_na=False, skipinitialspace=True)
    cols = {c.strip().lower(): c for c in df.columns}
    if "ytid" not in cols or "path" not in cols:
        raise DataError(f"{csv}: need columns YTID,path; found {list(df.columns)}")
    # Whole-column string ops: a Python loop over 2M rows is several times slower.
    ytids = df[cols["ytid"]].str.strip().to_numpy()
    paths = df[cols["path"]].str.strip()
    absolute = paths.str.startswith("/") if os.name == "posix" else paths.map(os.path.isabs)
    relative = ~absolute.to_numpy(dtype=bool)
    paths = paths.to_numpy(copy=True)
    paths[relative] = str(csv.parent) + os.sep + paths[relative]
    return dict(zip(ytids.tolist(), paths.tolist(), strict=True))


def audioset_entries(
    segments_csv: str | os.PathLike | Sequence[str | os.PathLike],
    audio_root: str | os.PathLike | None = None,
    class_labels_csv: str | os.PathLike | None = None,
    mapping_csv: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> ClipIndex:
    """AudioSet segments with local audio as a multi-label :class:`ClipIndex`.

    ``segments_csv`` may be one CSV or several (e.g. balanced + unbalanced). Audio comes
    from ``mapping_csv`` and/or a scan of ``audio_root`` (mapping wins). Listed segments
    without audio go to ``ClipIndex.missing``. Class names are the display names; targets
    are multi-hot over the 527 (or however many) classes, for mAP.
    """
    csvs = (
        [Path(segments_csv)]
        if isinstance(segments_csv, str | os.PathLike)
        else [Path(c) for c in segments_csv]
    )
    if not csvs:
        raise ValueError("audioset_entries: no segment CSV given")
    if audio_root is None and mapping_csv is None:
        raise ValueError("audioset_entries: give audio_root and/or mapping_csv")
    labels_csv = Path(class_labels_csv or csvs[0].parent / "class_labels_indices.csv")
    cache = None
    if use_cache:
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    seg, _, names = load_segments(csvs, labels_csv, cache)

    ytids = seg.ytids.astype(str).tolist()  # YouTube ids are ASCII
    files = {}
    if audio_root is not None:
        if not Path(audio_root).is_dir():
            raise FileNotFoundError(f"{audio_root}: AudioSet audio folder not found")
        files = find_audio_files(audio_root)
    mapping = read_mapping(mapping_csv) if mapping_csv is not None else {}
    paths = []
    for y, s in zip(ytids, seg.start_ms.tolist(), strict=True):
        p = mapping.get(y)
        if p is None:
            c = files.get(y)
            p = _pick(c, s) if c is not None else ""
        paths.append(p)

    ids = ytids
    if len(set(ytids)) < len(ytids):
        dup = pd.Series(ytids).duplicated(keep=False).to_numpy()
        ids = [
            f"{y}_{s}" if d else y
            for y, s, d in zip(ytids, seg.start_ms.tolist(), dup, strict=True)
        ]
    full = ClipIndex(
        ids=encode_utf8(ids),
        paths=encode_utf8(paths),
        label_offsets=seg.label_offsets,
        label_values=seg.label_values,
        folds=np.full(len(ids), -1, dtype=np.int16),
        class_names=list(names),
        multilabel=True,
    )
    present = np.array([bool(p) for p in paths], dtype=bool)
    index = full.subset(np.flatnonzero(present))
    index.missing = [ids[i] for i in np.flatnonzero(~present).tolist()]
    if index.missing:
        log.info(
            "AudioSet: %d of %d listed clips have no audio file (e.g. %s)",
            len(index.missing),
            len(ids),
            ", ".join(index.missing[:3]),
        )
    return index
