"""Stop requests: Ctrl-C and SIGTERM (cluster pre-emption) end a run cleanly.

A signal only marks the request; the training loop finishes the current step, agrees
with every rank to stop at the same step (a signal may reach the ranks at different
moments, and a rank that left alone would leave the others waiting in a collective), and
writes a checkpoint. A second signal stops the process at once.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequests:
    """Within a ``with`` block, SIGINT and SIGTERM set :attr:`received` instead of stopping
    (handlers can only be installed from the main thread; elsewhere nothing changes)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        signal.signal(signum, signal.SIG_DFL)  # a second one stops at once

    def __enter__(self) -> StopRequests:
        try:
            for s in STOP_SIGNALS:
                self._previous[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        except ValueError:  # not the main thread
            self.__exit__()
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
