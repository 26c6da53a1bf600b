"""Errors a user can fix, as opposed to bugs.

The command-line tools print a :class:`UserError` as one line naming the key or file and
what is allowed, and print the full traceback of anything else (an internal error); their
``--debug`` flag prints the traceback of user errors too. Each subclass is also the
built-in exception it refines (a bad value is a ``ValueError``), so library callers that
catch ``ValueError`` keep working.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path


class UserError(Exception):
    """Something the user can fix in the config, the data, a checkpoint or an export."""


class ConfigError(UserError, ValueError):
    """A config key or value is invalid; the message names the key and the allowed values."""


class DataError(UserError, ValueError):
    """A dataset file (list, metadata, audio, image) is missing something or malformed."""


class ExportError(UserError, ValueError):
    """An exported encoder or a weights file cannot be loaded; the message names the file."""


class RunStopped(UserError):
    """A run stopped by a signal (Ctrl-C, SIGTERM) before its end, its checkpoint saved:
    nothing after it (an export, an evaluation, the next arm of a comparison) may run."""


def name_some(names: Sequence[str], max_names: int = 5) -> str:
    """The first ``max_names`` of ``names`` and how many more: a message names what it is
    about without running on for a corpus."""
    more = len(names) - max_names
    return ", ".join(names[:max_names]) + (f", ... ({more} more)" if more > 0 else "")


@contextlib.contextmanager
def user_input(*sections: str, error: type[UserError] = ConfigError) -> Iterator[None]:
    """Mark code that builds objects from the config ``sections`` (or reads the data they
    name) as checking user input: a ``ValueError`` or ``TypeError`` raised inside becomes
    ``error`` (a :class:`ConfigError` unless told otherwise), its message prefixed with the
    sections unless it already names one, the original chained as ``__cause__`` for
    ``--debug``. Errors already typed as user errors pass through. Also a decorator."""
    try:
        yield
    except UserError:
        raise
    except (ValueError, TypeError) as err:
        message = str(err)
        if not message.startswith(sections):
            message = f"{', '.join(sections)}: {message}"
        raise error(message) from err


def generated_root(root: object) -> Path | None:
    """The folder ``data.root`` names for a generated data set (the demo sets), or None
    (empty: the cache folder). It must exist: a mistyped path is refused, never created."""
    if not root:
        return None
    path = Path(str(root)).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(
            f"data.root={str(root)!r} {what}; the generated data goes into an existing "
            "folder you name, or into the cache folder ($STEC_CACHE, else ~/.cache/stec) with "
            "data.root='' (the default)"
        )
    return path
