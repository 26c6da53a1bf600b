"""Thin helpers over ``torch.distributed`` (no-ops when it is not initialised)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def gather_with_grad(tensor: Tensor) -> tuple[Tensor, int]:
    """All-gather ``[B_r, ...]`` from every rank into ``[sum B_r, ...]``, keeping gradients.

    Returns the gathered tensor and the offset of this rank's rows in it. Ranks may hold
    different batch sizes (a batch that lost a skipped bad file): rows are padded for the
    collective and cut again. The backward pass sums the incoming gradients over ranks and
    hands each rank the slice of its own rows, so contrastive negatives from other GPUs
    train the local encoder.
    """
    if not is_distributed() or world_size() == 1:
        return tensor, 0
    from torch.distributed.nn.functional import all_gather

    local = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(local) for _ in range(world_size())]
    dist.all_gather(sizes, local)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = tensor
    if tensor.shape[0] < longest:
        pad = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
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


def init_from_env(backend: str | None = None) -> bool:
    """Initialise the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1).

    Returns True when running distributed. The backend defaults to NCCL on CUDA and gloo
    otherwise.
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
    return True


def barrier() -> None:
    if is_distributed():
        dist.barrier()
