"""The random streams of a training process: seeded per rank, captured and restored exactly.

Every rank of a run draws its own augmentations. The streams of rank ``r`` are derived
from ``(trainer.seed, r)`` with numpy's ``SeedSequence``, whose children with different
keys are statistically independent, so no two ranks (and no two loader workers) ever share
a stream, and a run is reproducible from its seed and its number of processes.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

# stream keys below a rank: the global generators, and the DataLoader's per-epoch base seed
GLOBAL_STREAM = 0
LOADER_STREAM = 1


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


def capture_rng() -> dict[str, Any]:
    """Every RNG the training loop draws from, as tensors and plain values."""
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
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_as_tuple(v) for v in value)
    return value
