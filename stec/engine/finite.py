"""The non-finite-loss check, without a host synchronisation in the training step.

Reading ``isfinite(loss)`` on the host every step would make the CPU wait for the GPU to
finish the step. Instead, the first step whose loss is not finite (and that loss) are
recorded on the device, and read where the host waits anyway: at the log and checkpoint
steps. The weights after such a step are never saved, so the last checkpoint on disk is
the last good one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stec import distributed

NO_BAD_STEP = 2**62  # the record while every loss so far was finite


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


class NonFiniteWatch:
    """Device-side record of the first non-finite loss, over all ranks."""

    def __init__(self, device: torch.device) -> None:
        self.steps_done = torch.zeros((), dtype=torch.long, device=device)
        self.first_bad = torch.full((), NO_BAD_STEP, dtype=torch.long, device=device)
        self.bad_loss = torch.zeros((), device=device)

    def start_at(self, step: int) -> None:
        """Continue the step count of a resumed run (a fill from the host: no sync)."""
        self.steps_done.fill_(step)

    def record(self, loss: Tensor) -> None:
        """Count one step and remember its loss if it is the first non-finite one."""
        loss = loss.detach()
        self.steps_done += 1
        first = ~torch.isfinite(loss) & (self.first_bad == NO_BAD_STEP)
        self.first_bad = torch.where(first, self.steps_done, self.first_bad)
        self.bad_loss = torch.where(first, loss.float(), self.bad_loss)

    def raise_if_bad(self, step: int, last_checkpoint: str) -> None:
        """Raise :class:`NonFiniteLossError` if any rank had a non-finite loss. Reads the
        device, and is collective under DDP: every rank calls it at the same step."""
        first = int(distributed.all_reduce_min(self.first_bad))
        if first == NO_BAD_STEP:
            return
        value = float(self.bad_loss) if int(self.first_bad) == first else "non-finite"
        raise NonFiniteLossError(
            f"loss became {value} at step {first} (found at step {step}). Training stopped; "
            f"the last good checkpoint is {last_checkpoint}. Lower trainer.lr, enable "
            "trainer.grad_clip, or check the data normalisation."
        )
