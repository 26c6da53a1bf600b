"""Atomic, safely loaded training checkpoints with every process's RNG state.

A checkpoint is a ``torch.save`` of plain containers and tensors only, loaded with
``weights_only=True`` so that a tampered file can never execute code. It is written to a
temporary file in the same folder and renamed over the old one, so a crash mid-write
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = "stec-checkpoint"
CHECKPOINT_VERSION = 2  # 2: per-rank RNG and augmenter entries under "ranks"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, unsafe or does not fit the model."""


def rank_entry(state: dict[str, Any], path: str | Path, rank: int, world: int) -> dict[str, Any]:
    """This rank's own part of a checkpoint: its RNG state and augmenter buffers.

    A checkpoint holds one entry per process of the run that wrote it, so a resume needs
    the same number of processes; otherwise a CheckpointError says so. Checkpoints of
    version 1 (before per-rank entries) hold rank 0's state only and resume one process.
    """
    entries = state.get("ranks")
    if entries is None:
        if world != 1:
            raise CheckpointError(
                f"checkpoint {path} has the format of version 1, which kept one process's "
                f"random streams and augmenter memory: it resumes a single process, not {world}"
            )
        entries = [{"rng": state["rng"], "augmenter": state.get("augmenter")}]
    if len(entries) != world:
        raise CheckpointError(
            f"checkpoint {path} was written by {len(entries)} process(es) and this run has "
            f"{world}: each process keeps its own random streams and augmenter memory (e.g. "
            f"the mixup bank), which cannot be split or merged. Resume with {len(entries)} "
            f"process(es) (torchrun --nproc_per_node={len(entries)} on one machine)"
        )
    return entries[rank]


# What a run learns from: a resume under other values of these would continue one training
# with the settings of another. The budget (epochs, max_steps), the loader, logging,
# devices and everything evaluated afterwards may change.
TRAINING_SECTIONS = ("method", "efference", "encoder", "augment", "frontend")
TRAINING_KEYS = ("seed",) + tuple(
    f"trainer.{key}"
    for key in ("batch_size", "optimizer", "lr", "weight_decay", "momentum",
                "trust_coefficient", "warmup_steps", "min_lr_ratio", "amp", "grad_clip",
                "seed", "sync_batchnorm", "online_probe", "probe_lr")
)  # fmt: skip


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def training_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``"key: old -> new"`` for each setting that defines the training and differs between
    a checkpoint's run config and this run's (keys absent from either side are skipped, so
    runs without a recorded config compare equal)."""
    old, new = _flat(saved), _flat(now)
    changes = []
    for key in sorted(old.keys() & new.keys()):
        defines = key in TRAINING_KEYS or key.split(".", 1)[0] in TRAINING_SECTIONS
        if defines and old[key] != new[key]:
            changes.append(f"{key}: {old[key]!r} -> {new[key]!r}")
    return changes


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint without executing pickled code; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" not in str(err).lower():  # a damaged file rather than foreign objects
            raise CheckpointError(
                f"checkpoint {path} could not be read: {str(err).splitlines()[-1]}"
            ) from err
        raise CheckpointError(
            f"checkpoint {path} was refused: it contains objects other than tensors and plain "
            f"containers, and is not loaded because unpickling them could execute code ({err})"
        ) from err
    except Exception as err:  # truncated, not a torch file, ...
        raise CheckpointError(f"checkpoint {path} could not be read: {err}") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} is not a stec checkpoint (no '{CHECKPOINT_FORMAT}' marker)"
        )
    return state


def load_module_state(
    module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str
) -> None:
    """``load_state_dict`` with an error that names the file and the mismatching keys."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        own = module.state_dict()
        missing = sorted(set(own) - set(state))[:5]
        unexpected = sorted(set(state) - set(own))[:5]
        shapes = [
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in own
            if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape
        ][:5]
        raise CheckpointError(
            f"checkpoint {path} does not fit the {what}: missing keys {missing}, unexpected keys "
            f"{unexpected}, shape mismatches {shapes}. Was it written with another method, encoder "
            f"or efference setting?"
        ) from err
