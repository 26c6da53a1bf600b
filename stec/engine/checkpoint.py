"""Atomic, safely loaded training checkpoints with every process's RNG state.

A checkpoint is a ``torch.save`` of plain containers and tensors only, loaded with
``weights_only=True`` so that a tampered file can never execute code. It is written to a
temporary file in the same folder and renamed over the old one, so a crash mid-write
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from stec.files import written_whole

CHECKPOINT_FORMAT = "stec-checkpoint"
CHECKPOINT_VERSION = 2  # 2: per-rank RNG and augmenter entries under "ranks"
RUN_CHECKPOINT = "checkpoints/last.pt"  # a run's training checkpoint, in its run_dir


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, unsafe or does not fit the model."""


#: ``advise(trained, config)``: what a modality says would continue a run whose resume was
#: refused for its settings (``trained``: the checkpoint's run config), or ""
Advise = Callable[[dict[str, Any], dict[str, Any]], str]


class ResumeRefused(CheckpointError, ValueError):
    """A resume under other settings, budget or number of processes than the checkpoint
    allows: the user's input, so the CLIs exit with status 2 (a ``ValueError``).
    ``trained`` is the checkpoint's run config when its settings were the reason, so that a
    CLI can say which of its options would continue the run."""

    def __init__(self, message: str, trained: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.trained = trained


def rank_entry(state: dict[str, Any], path: str | Path, rank: int, world: int) -> dict[str, Any]:
    """This rank's own part of a checkpoint: its RNG state and augmenter buffers.

    A checkpoint holds one entry per process of the run that wrote it, so a resume needs
    the same number of processes; otherwise a CheckpointError says so. Checkpoints of
    version 1 (before per-rank entries) hold rank 0's state only and resume one process.
    """
    entries = state.get("ranks")
    if entries is None:
        if world != 1:
            raise ResumeRefused(
                f"checkpoint {path} has the format of version 1, which kept one process's "
                f"random streams and augmenter memory: it resumes a single process, not {world}"
            )
        entries = [{"rng": state["rng"], "augmenter": state.get("augmenter")}]
    if len(entries) != world:
        raise ResumeRefused(
            f"checkpoint {path} was written by {len(entries)} process(es) and this run has "
            f"{world}: each process keeps its own random streams and augmenter memory (e.g. "
            f"the mixup bank), which cannot be split or merged. Resume with {len(entries)} "
            f"process(es) (torchrun --nproc_per_node={len(entries)} on one machine)"
        )
    return entries[rank]


# The resume check compares a checkpoint's whole run config with this run's, added and
# removed keys included, except for the keys below (a key covers everything under it).
# RESULT_NEUTRAL never changes what a run produces: where it runs and writes, how its data
# is fed, held and logged. A comparison reuses an arm's results only when everything else
# is the same (stec.compare).
RESULT_NEUTRAL = (
    "run_dir", "checkpoint", "out", "compare",
    "trainer.resume", "trainer.overwrite", "trainer.device", "trainer.compile", "trainer.progress",
    "trainer.num_workers", "trainer.persistent_workers", "trainer.prefetch_factor",
    "trainer.pin_memory", "trainer.log_every", "trainer.checkpoint_every",
    "data.root", "data.prepared", "data.cache", "data.in_memory", "data.max_bad_fraction",
    "evaluate.device", "evaluate.embed_batch_size",
)  # fmt: skip
# RESUMABLE may also change on a resume: the budget (a longer run continues, its schedule
# follows the new budget) and what only the evaluation reads (other commands' keys, the
# probes, the evaluation split and label sets).
RESUMABLE = RESULT_NEUTRAL + (
    "trainer.epochs", "trainer.max_steps",
    "task", "frames", "format", "evaluate", "segmentation",
    "data.labels", "data.strong_labels", "data.test_split", "data.eval_resize",
    "data.eval_segments",
)  # fmt: skip


def _covered(key: str, keys: Sequence[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in keys)


# Keys that only shape the inverse model and the forward predictor: with efference.mode
# off neither exists, so they change nothing (efference.inverse_input still decides what
# the action probe of every arm reads).
INVERSE_MODEL_KEYS = tuple(
    f"efference.{key}"
    for key in ("lambda_manip", "inverse_hidden", "inverse_output", "action_embed_dim",
                "components", "component_weights", "equivariant_dims", "detach_frames",
                "standardise_peaks", "lambda_manip_warmup", "forward_head", "read_gate")
)  # fmt: skip
# Of those, the keys that only shape the forward model (inert with efference.mode=inverse)
# and those that only shape the inverse model (inert with efference.mode=forward).
FORWARD_ONLY_KEYS = ("efference.action_embed_dim", "efference.forward_head")
INVERSE_ONLY_KEYS = tuple(
    f"efference.{key}"
    for key in ("inverse_hidden", "inverse_output", "component_weights", "detach_frames",
                "standardise_peaks", "read_gate")
)  # fmt: skip
# What only training reads: an encoder that is not trained (a comparison's floor) is the
# same whatever they say.
TRAINING_ONLY = ("method", "efference.mode", *INVERSE_MODEL_KEYS)


# Keys added since runs were first made, with the value that gives the behaviour of a run
# made before them: a stored config that lacks one is read as having it, so an upgrade
# neither refuses a resume nor reruns a comparison's finished arms. A modality declares
# its own with :func:`declare_keys_added`.
KEYS_ADDED: dict[str, Any] = {
    "efference.detach_frames": False,
    "efference.standardise_peaks": False,
    "efference.lambda_manip_warmup": 0.0,
    "efference.forward_head": "shared",
    "efference.read_gate": 0.0,
}


def declare_keys_added(keys: Mapping[str, Any]) -> None:
    """Add a modality's config keys to :data:`KEYS_ADDED` (``{"a.b.c": default}``); a key
    declared twice must keep its default."""
    for key, default in keys.items():
        if KEYS_ADDED.setdefault(key, default) != default:
            raise ValueError(
                f"config key {key!r} is already declared with the default {KEYS_ADDED[key]!r}"
            )


def with_keys_added(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every :data:`KEYS_ADDED` key it lacks set to its default, where the
    section that holds the key exists (a copy; ``config`` is not changed)."""

    def add(node: dict[str, Any], path: list[str], default: Any) -> dict[str, Any]:
        head, *rest = path
        if not rest:
            return node if head in node else {**node, head: default}
        if not isinstance(node.get(head), dict):
            return node
        return {**node, head: add(node[head], rest, default)}

    for path, default in KEYS_ADDED.items():
        config = add(config, path.split("."), default)
    return config


def inactive_keys(config: dict[str, Any]) -> tuple[str, ...]:
    """The keys of ``config`` that its own values make inert: the efference copy's model
    settings when ``efference.mode`` is off, the forward model's with the inverse model
    alone, the inverse model's with the forward model alone."""
    efference = config.get("efference")
    mode = efference.get("mode") if isinstance(efference, dict) else None
    inert = {"off": INVERSE_MODEL_KEYS, "inverse": FORWARD_ONLY_KEYS, "forward": INVERSE_ONLY_KEYS}
    return inert.get(mode, ())


def settings_of(
    config: dict[str, Any], ignore: Sequence[str] = RESULT_NEUTRAL, trained: bool = True
) -> dict[str, Any]:
    """``config`` without the keys in ``ignore`` and those it makes inert
    (:func:`inactive_keys`), nested dicts kept nested; ``trained=False`` (an encoder that is
    evaluated untrained) also drops :data:`TRAINING_ONLY`."""
    config = with_keys_added(config)
    ignore = (*ignore, *inactive_keys(config), *(() if trained else TRAINING_ONLY))

    def keep(node: dict[str, Any], prefix: str) -> dict[str, Any]:
        out = {}
        for key, value in node.items():
            path = f"{prefix}{key}"
            if _covered(path, ignore):
                continue
            out[key] = keep(value, path + ".") if isinstance(value, dict) else value
        return out

    return keep(config, "")


#: a key one of two configs does not hold (see :func:`_differences`)
ABSENT = object()


def _differences(
    old: dict[str, Any], new: dict[str, Any], ignore: Sequence[str]
) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` of every difference between two run configs outside
    ``ignore`` and the keys both make inert (:func:`inactive_keys`), sorted by key;
    :data:`ABSENT` stands for a key one of them lacks."""
    old, new = with_keys_added(old), with_keys_added(new)
    inert = set(inactive_keys(old)) & set(inactive_keys(new))
    ignore = (*ignore, *inert)
    found: list[tuple[str, Any, Any]] = []

    def walk(a: dict[str, Any], b: dict[str, Any], prefix: str) -> None:
        for key in sorted(set(a) | set(b), key=str):
            path = f"{prefix}{key}"
            if _covered(path, ignore):
                continue
            before, after = a.get(key, ABSENT), b.get(key, ABSENT)
            if isinstance(before, dict) and isinstance(after, dict):
                walk(before, after, path + ".")
            elif before is ABSENT or after is ABSENT or before != after:
                found.append((path, before, after))

    walk(old, new, "")
    return found


def setting_changes(
    old: dict[str, Any], new: dict[str, Any], ignore: Sequence[str] = RESUMABLE
) -> list[str]:
    """Every difference between two run configs outside ``ignore`` and the keys both make
    inert (:func:`inactive_keys`), as ``"key: old -> new"``, ``"key: added (value)"`` or
    ``"key: removed (was value)"``, sorted by key."""
    changes = []
    for key, before, after in _differences(old, new, ignore):
        if after is ABSENT:
            changes.append(f"{key}: removed (was {before!r})")
        elif before is ABSENT:
            changes.append(f"{key}: added ({after!r})")
        else:
            changes.append(f"{key}: {before!r} -> {after!r}")
    return changes


def override_of(key: str, value: Any) -> str | None:
    """``key=value`` as a command-line override that reads back as ``value``, or None for
    a value it would not (a list, a mapping, text with spaces or signs)."""
    if value is None or isinstance(value, bool):
        return f"{key}={'null' if value is None else str(value).lower()}"
    if isinstance(value, int | float) and math.isfinite(value):
        return f"{key}={value!r}"
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./-]*", value):
        return f"{key}={value}"
    return None


def continuing_overrides(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The overrides that give back ``saved``'s settings where ``now`` changed them (those
    :func:`training_changes` names), or [] when some change has none (a key added or
    removed, a list or a mapping changed): then only the list of changes can guide."""
    overrides = []
    for key, before, after in _differences(saved, now, RESUMABLE):
        override = None if after is ABSENT or before is ABSENT else override_of(key, before)
        if override is None or isinstance(after, dict):
            return []
        overrides.append(override)
    return overrides


def training_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The differences between a checkpoint's run config and this run's that a resume may
    not have: everything but :data:`RESUMABLE` (see :func:`setting_changes`)."""
    return setting_changes(saved, now, RESUMABLE)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    with written_whole(path) as tmp, open(tmp, "wb") as handle:
        torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, handle)
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
