"""Strong labels: where each sound event starts and ends, read next to a clip index.

The file is the DESED / AudioSet-strong TSV layout: tab-separated, a header with the
columns ``filename, onset, offset, event_label`` (further columns are ignored), one event
per row, times in seconds from the start of the clip's audio file. A row whose onset,
offset and label are all empty names a clip without events (as DESED lists them).

Decisions:

- Rows are matched to clips by id (the ESC-50 file name, the manifest path as written, the
  path relative to a scanned folder); a file name that is no id is matched by base name
  when exactly one clip has that base name (DESED's TSVs hold bare file names).
- Rows of clips the index does not hold (another fold, a clip left out by
  ``data.folds``) are skipped and counted; a file none of whose rows matches a clip is an
  error. A clip no row names has no events: the TSV lists events, not clips.
- Errors name the file and the row (its line in the file, the header being line 1):
  non-numeric or non-finite times, a negative onset, an offset not after its onset, two
  events of one label in one clip that overlap (touching is fine), and an event that ends
  past the end of its clip (more than ``END_TOLERANCE_S``: annotation tools round times).
- The event classes are the distinct labels of the whole file, in sorted order, so every
  subset of the clips has the same classes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from torch import Tensor

from stec.errors import DataError
from stec.evaluation.sed import Event
from stec_audio.data.clip_index import ClipIndex

COLUMNS = ("filename", "onset", "offset", "event_label")
#: an event may end this much past its clip's end (rounded annotations, decoder lengths)
END_TOLERANCE_S = 0.01


@dataclass(frozen=True)
class StrongEvent:
    """One row of a strong-label file: class index, times in seconds, line in the file."""

    label: int
    onset: float
    offset: float
    line: int


@dataclass
class StrongLabels:
    """The events of every clip of an index.

    Attributes:
        path: the TSV file.
        classes: the event labels, in class-index order.
        events: for clip ``i`` of the index, its events ordered by onset.
        n_skipped_rows: rows naming clips the index does not hold.
    """

    path: Path
    classes: list[str]
    events: list[list[StrongEvent]]
    n_skipped_rows: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def reference(self, i: int) -> list[Event]:
        """Clip ``i``'s events as :class:`~stec.evaluation.sed.Event` (seconds)."""
        return [Event(e.label, e.onset, e.offset) for e in self.events[i]]

    def frame_targets(self, i: int, timestamps_s: Tensor) -> Tensor:
        """``[T, C]`` float32: 1 where an event of the class is active at the timestamp
        (``onset <= t < offset``), for clip ``i`` at ``timestamps_s [T]`` (seconds)."""
        t = timestamps_s.double()
        out = torch.zeros(t.shape[0], self.num_classes)
        for e in self.events[i]:
            out[(t >= e.onset) & (t < e.offset), e.label] = 1.0
        return out

    def check_durations(self, index: ClipIndex) -> None:
        """Raise :class:`DataError` naming the file and row of an event that ends past the
        end of its clip's audio (read from the file's header; files that cannot be read
        are left to the audio loader, which reports them)."""
        for i, events in enumerate(self.events):
            if not events:
                continue
            try:
                info = sf.info(index.path(i))
            except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError):
                continue
            duration = info.frames / info.samplerate if info.samplerate else 0.0
            late = max(events, key=lambda e: e.offset)
            if late.offset > duration + END_TOLERANCE_S:
                raise DataError(
                    f"{self.path}: row {late.line}: the event ends at {late.offset:g} s, past "
                    f"the end of {index.id(i)!r} ({duration:g} s)"
                )


def _time(value: str, column: str, line: int, path: Path) -> float:
    try:
        t = float(value)
    except ValueError:
        raise DataError(f"{path}: row {line}: {column} must be a number, got {value!r}") from None
    if not math.isfinite(t):
        raise DataError(f"{path}: row {line}: {column} must be finite, got {value!r}")
    return t


def _clip_lookup(index: ClipIndex) -> dict[str, int]:
    """Clip id -> position, plus every base name that exactly one clip has."""
    ids = [index.id(i) for i in range(len(index))]
    lookup = {name: i for i, name in enumerate(ids)}
    bases = pd.Series([PurePosixPath(name.replace(os.sep, "/")).name for name in ids])
    unique = ~bases.duplicated(keep=False)
    for i in np.flatnonzero(unique.to_numpy()):
        lookup.setdefault(bases[i], int(i))
    return lookup


def read_strong_labels(path: str | os.PathLike, index: ClipIndex) -> StrongLabels:
    """Read and check the strong labels of ``path`` for the clips of ``index``.

    Raises:
        FileNotFoundError: no such file.
        DataError: a missing column, a malformed or inconsistent row (named by file and
            row), or a file with no row for any clip of the index.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: strong-label file not found")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    df.columns = [c.strip() for c in df.columns]
    absent = [c for c in COLUMNS if c not in df.columns]
    if absent:
        raise DataError(
            f"{path}: missing column(s) {absent}; found {list(df.columns)}, need the "
            f"tab-separated columns {list(COLUMNS)}"
        )
    cells = df[list(COLUMNS)].apply(lambda column: column.str.strip())
    labelled = (cells[["onset", "offset", "event_label"]] != "").to_numpy()
    partial = labelled.any(1) & ~labelled.all(1)
    if partial.any():
        line = int(np.flatnonzero(partial)[0]) + 2
        raise DataError(
            f"{path}: row {line}: onset, offset and event_label must all be given (an event) "
            "or all be empty (a clip without events)"
        )
    classes = sorted(set(cells["event_label"][labelled.all(1)]))
    class_of = {name: k for k, name in enumerate(classes)}
    lookup = _clip_lookup(index)
    events: list[list[StrongEvent]] = [[] for _ in range(len(index))]
    skipped, matched = 0, 0
    for row, (name, onset_s, offset_s, label) in enumerate(cells.itertuples(index=False)):
        line = row + 2
        clip = lookup.get(name)
        if clip is None:
            skipped += 1
            continue
        matched += 1
        if not label:
            continue
        onset, offset = _time(onset_s, "onset", line, path), _time(offset_s, "offset", line, path)
        if onset < 0:
            raise DataError(f"{path}: row {line}: negative onset {onset:g} s")
        if offset <= onset:
            raise DataError(
                f"{path}: row {line}: the offset ({offset:g} s) must come after the onset "
                f"({onset:g} s)"
            )
        events[clip].append(StrongEvent(class_of[label], onset, offset, line))
    if matched == 0:
        example = index.id(0) if len(index) else "(no clip)"
        raise DataError(
            f"{path}: none of its {len(cells)} rows names a clip of the data (filename "
            f"{cells['filename'].iloc[0] if len(cells) else ''!r} vs clip id {example!r})"
        )
    for clip_events in events:
        clip_events.sort(key=lambda e: (e.onset, e.line))
        _check_overlaps(clip_events, classes, path)
    return StrongLabels(path, classes, events, skipped)


def _check_overlaps(events: Sequence[StrongEvent], classes: list[str], path: Path) -> None:
    last: dict[int, StrongEvent] = {}
    for e in events:
        before = last.get(e.label)
        if before is not None and e.onset < before.offset:
            raise DataError(
                f"{path}: rows {before.line} and {e.line}: two {classes[e.label]!r} events of "
                f"one clip overlap ({before.onset:g}-{before.offset:g} s and "
                f"{e.onset:g}-{e.offset:g} s)"
            )
        if before is None or e.offset > before.offset:
            last[e.label] = e
