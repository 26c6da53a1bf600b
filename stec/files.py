"""Writing an output whole or not at all."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_whole(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write to; once the block ends without an error it
    is flushed to disk and renamed onto ``path`` (same folder, so the rename is atomic),
    and if the block raises it is removed: a reader never sees a half-written file, a crash
    leaves the previous version intact, and an interrupted write leaves nothing behind.
    Plain ``open()`` in the block keeps the usual umask permissions, unlike ``mkstemp``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
