"""The random streams of a training process: seeded per rank, captured and restored exactly.

Every stream is derived from a key tuple ``(trainer.seed, rank, stream, *sub-keys such as
the epoch)`` with numpy's ``SeedSequence``, whose children with different keys are
statistically independent. Every rank draws its own augmentations, so no two ranks (and
no two loader workers) ever share a stream; streams that every rank must draw alike (the
data order) use the rank key :data:`EVERY_RANK`. Nothing is seeded by adding numbers (seed
1 at epoch ``e`` would replay seed 0 at epoch ``e + 1``), and a run is reproducible from
its seed and its number of processes.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

# stream keys below a rank: the global generators, the DataLoader's per-epoch base seed
# and the sampler's per-epoch data order
GLOBAL_STREAM = 0
LOADER_STREAM = 1
SAMPLER_STREAM = 2
# the rank key of the streams every rank draws alike (no rank reaches it)
EVERY_RANK = 2**32 - 1


def _words(seed: int, key: tuple[int, ...], n: int) -> np.ndarray:
    if int(seed) != seed or seed < 0:
        raise ValueError(f"trainer.seed must be a non-negative integer, got {seed!r}")
    return np.random.SeedSequence(int(seed), spawn_key=key).generate_state(n)


def stream_seed(seed: int, rank: int, stream: int, *key: int) -> int:
    """A 63-bit seed for ``stream`` of ``rank`` (plus optional sub-keys such as the epoch)."""
    hi, lo = (int(w) for w in _words(seed, (rank, stream, *key), 2))
    return ((hi << 32) | lo) >> 1


def seed_rank(seed: int, rank: int) -> None:
    """Seed the global generators of this process (torch CPU, every CUDA device, numpy,
    Python) with the streams of ``rank``."""
    words = _words(seed, (rank, GLOBAL_STREAM), 8)
    torch.manual_seed((int(words[0]) << 32) | int(words[1]))  # also every CUDA device
    random.seed(int.from_bytes(words[2:4].tobytes(), "little"))
    np.random.seed(words[4:8])


def _cuda_index(device: torch.device | str | None) -> int | None:
    """The CUDA device this process draws on: ``device`` when it is a CUDA device (the
    current one when it names no index), else, with ``device`` None, the current device
    once CUDA is in use; None when the process draws on no CUDA device."""
    if not torch.cuda.is_available():
        return None
    if device is None:
        return torch.cuda.current_device() if torch.cuda.is_initialized() else None
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.current_device() if device.index is None else device.index


def capture_rng(device: torch.device | str | None = None) -> dict[str, Any]:
    """Every RNG the training loop draws from, as tensors and plain values: torch's CPU
    generator, numpy's, Python's, and the CUDA generator of the process's ``device``."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    index = _cuda_index(device)
    if index is not None:
        state["cuda"] = torch.cuda.get_rng_state(index)
    return state


def restore_rng(state: dict[str, Any], device: torch.device | str | None = None) -> None:
    """Restore what :func:`capture_rng` saved onto the generators this process uses.

    The CUDA state goes to the process's ``device``, whichever index it has here, and is
    left out on a machine without CUDA. Older checkpoints hold one CUDA state per GPU that
    was visible when they were written: the process's own device gets its entry, so a run
    resumes on a machine with fewer GPUs.
    """
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    random.setstate(_as_tuple(state["python"]))
    saved, index = state.get("cuda"), _cuda_index(device)
    if saved is None or index is None:
        return
    if isinstance(saved, (list, tuple)):  # one state per GPU visible at save time
        if index >= len(saved):
            return
        saved = saved[index]
    torch.cuda.set_rng_state(saved, index)


def _as_tuple(value):
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_as_tuple(v) for v in value)
    return value
