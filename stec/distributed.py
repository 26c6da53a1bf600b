"""Thin helpers over ``torch.distributed`` (no-ops when it is not initialised).

Values that live on the host (batch sizes, counts, checkpoint pieces) travel over a CPU
(gloo) group, :func:`host_group`, so that exchanging them never makes the GPU wait: an
exchange over NCCL would put the value on the device and read it back, a device-to-host
synchronisation in the middle of the training step.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

_host_group: tuple[Any, Any] | None = None  # (default group, its gloo twin)
_declared_sizes: tuple[int, ...] | None = None


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def host_group() -> Any:
    """The process group for host values: the default group when its backend is gloo,
    otherwise a gloo group over all ranks, made on first use. Its creation is collective:
    every rank must reach the first call together (the Trainer calls it when built)."""
    global _host_group
    if not is_distributed():
        return None
    if dist.get_backend() == "gloo":
        return dist.group.WORLD
    # remembered per default group, so that a re-initialised process group gets a new one
    if _host_group is None or _host_group[0] is not dist.group.WORLD:
        _host_group = (dist.group.WORLD, dist.new_group(backend="gloo"))
    return _host_group[1]


def all_gather_host(values: Sequence[int]) -> list[tuple[int, ...]]:
    """Every rank's ``values`` (host integers, the same count on every rank), in rank order.

    The buffers are numpy arrays seen as CPU tensors, so the result is read from host
    memory: nothing here touches the training device.
    """
    mine = np.asarray(values, dtype=np.int64)
    if not is_distributed() or world_size() == 1:
        return [tuple(mine.tolist())]
    outs = [np.zeros_like(mine) for _ in range(world_size())]
    dist.all_gather(
        [torch.from_numpy(out) for out in outs], torch.from_numpy(mine), group=host_group()
    )
    return [tuple(out.tolist()) for out in outs]


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's picklable ``obj`` (keep tensors on the CPU), as a list on rank 0 and
    None elsewhere. Collective: every rank must call it."""
    if not is_distributed() or world_size() == 1:
        return [obj]
    out: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0, group=host_group())
    return out


@contextmanager
def batch_sizes(sizes: Sequence[int]) -> Iterator[None]:
    """Declare every rank's batch size for the calls of :func:`gather_with_grad` inside
    the block (the Trainer knows them from its per-step exchange), so they need no
    exchange of their own."""
    global _declared_sizes
    previous, _declared_sizes = _declared_sizes, tuple(int(n) for n in sizes)
    try:
        yield
    finally:
        _declared_sizes = previous


def gather_with_grad(tensor: Tensor) -> tuple[Tensor, int]:
    """All-gather ``[B_r, ...]`` from every rank into ``[sum B_r, ...]``, keeping gradients.

    Returns the gathered tensor and the offset of this rank's rows in it. Ranks may hold
    different batch sizes (a batch that lost a skipped bad file): rows are padded for the
    collective and cut again. The sizes are host values: those declared by
    :func:`batch_sizes`, else exchanged over :func:`host_group`. The backward pass sums
    the incoming gradients over ranks and hands each rank the slice of its own rows, so
    contrastive negatives from other GPUs train the local encoder.
    """
    if not is_distributed() or world_size() == 1:
        return tensor, 0
    from torch.distributed.nn.functional import all_gather

    local = tensor.shape[0]
    declared = _declared_sizes
    if declared is not None and len(declared) == world_size() and declared[rank()] == local:
        counts = list(declared)
    else:
        counts = [n for (n,) in all_gather_host([local])]
    longest = max(counts)
    padded = tensor
    if local < longest:
        pad = tensor.new_zeros((longest - local, *tensor.shape[1:]))
        padded = torch.cat([tensor, pad])
    parts = all_gather(padded)
    gathered = torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)], dim=0)
    return gathered, sum(counts[: rank()])


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Mean of a tensor over ranks (no gradient), for logging."""
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out / world_size()


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum of a tensor over ranks (no gradient)."""
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out


def all_reduce_min(tensor: Tensor) -> Tensor:
    """Element-wise minimum of a tensor over ranks (no gradient)."""
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MIN)
    return out


def init_from_env(backend: str | None = None) -> bool:
    """Initialise the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Returns True when running distributed. The backend defaults to NCCL on CUDA and gloo
    otherwise; the host group (:func:`host_group`) is made right away.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    host_group()
    return True


def barrier() -> None:
    if is_distributed():
        dist.barrier()
