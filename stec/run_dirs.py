"""Where the command-line tools read and write, and what they refuse so that nothing a
user made is lost: run folders (a run is never trained over unless the user says how to go
on), the ``checkpoint=`` that ``evaluate`` and ``embed`` read, and where results go (keyed
to what was evaluated)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from stec.engine.checkpoint import RUN_CHECKPOINT
from stec.engine.export import META_NAME, WEIGHTS_NAME, find_export
from stec.errors import ConfigError

FLOORS = ("random", "logmel_stats", "pixels")

#: What a pretraining leaves in its run_dir: any of these means the folder holds a run
#: (finished, or killed after its first log or checkpoint).
RUN_MARKS = (
    RUN_CHECKPOINT,
    "metrics.csv",
    "export/encoder.safetensors",
    "export/encoder.json",
)
#: The parts of an evaluation written beside its results (a dense evaluation of the same
#: encoder): each in a folder of its own next to the results file, under that file's name
#: (``sed/results.json``; with ``out=one.json``, ``sed/one.json``), so none replaces another.
RESULT_PARTS = ("sed", "segmentation")
#: What ``trainer.overwrite=true`` removes first, so that nothing in the folder (an
#: evaluation's results.json, TensorBoard curves) describes the replaced run. Other files stay.
RUN_OUTPUTS = (
    "checkpoints", "export", "metrics.csv", "config.json", "tensorboard", "results.json",
    *RESULT_PARTS,
)  # fmt: skip


def run_held(run_dir: str | Path) -> list[str]:
    """The :data:`RUN_MARKS` found in ``run_dir``: not empty when it holds a run."""
    return [mark for mark in RUN_MARKS if (Path(run_dir) / mark).exists()]


def clear_run(run_dir: str | Path) -> None:
    """Remove the :data:`RUN_OUTPUTS` of ``run_dir``; other files stay."""
    for name in RUN_OUTPUTS:
        _remove(Path(run_dir) / name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_checkpoint(cfg: DictConfig, names: Sequence[str]) -> None:
    """Check ``checkpoint=`` before any work: one of ``names`` (the floors, ``init``), a
    run folder, an export folder or an export's ``encoder.safetensors``. Any other file (a
    training checkpoint ``last.pt``, a state dict) is refused with what the key takes."""
    takes = (
        "checkpoint= takes a run folder (checkpoint=RUN), its export folder (RUN/export) or "
        f"the export's {WEIGHTS_NAME}" + (f", or checkpoint={'|'.join(names)}" if names else "")
    )
    given = str(cfg.checkpoint)
    if not given:
        raise ConfigError(f"checkpoint is required: {takes}")
    if given == "init" and "init" in names:  # checked now: its results are keyed to the file
        init = str(cfg.encoder.get("init") or "")
        if not init:
            raise ConfigError("checkpoint=init evaluates encoder.init: set encoder.init=FILE")
        if not Path(init).expanduser().is_file():
            raise ConfigError(f"encoder.init={init!r}: file not found")
    if given in names:
        return
    path = Path(given).expanduser()
    if path.is_file() and path.name != WEIGHTS_NAME:
        hint = ""
        if path.parent.name == "checkpoints":  # a training checkpoint inside its run
            hint = f"; for the run it belongs to: checkpoint={path.parent.parent}"
        elif "init" in names:
            hint = "; a state dict of encoder weights: checkpoint=init encoder.init=FILE"
        raise ConfigError(f"checkpoint={given} is a file; {takes}{hint}")
    find_export(path)  # a missing export is named now, before any data is read


def results_path(cfg: DictConfig) -> Path:
    """Where ``evaluate`` writes ``results.json``: ``out=``, else in the folder of the
    checkpoint (the run or export folder, the folder of an ``encoder.safetensors``); for a
    floor in ``run_dir/FLOOR-DATA``, for ``init`` in ``run_dir/init-WEIGHTS-DATA``, keyed
    to the weights file of ``encoder.init`` (its name and a hash of its bytes)."""
    if cfg.out:
        return Path(cfg.out)
    name = str(cfg.checkpoint)
    if name in FLOORS:
        return Path(cfg.run_dir) / f"{name}-{cfg.data.name}" / "results.json"
    if name == "init":
        key = weights_key(str(cfg.encoder.init))
        return Path(cfg.run_dir) / f"init-{key}-{cfg.data.name}" / "results.json"
    path = Path(name).expanduser()
    return (path.parent if path.is_file() else path) / "results.json"


def part_path(results: Path, part: str) -> Path:
    """Where the ``part`` (one of :data:`RESULT_PARTS`) of the evaluation whose results go
    to ``results`` is written."""
    return results.parent / part / results.name


def check_results_free(*paths: Path) -> None:
    """Refuse, before any work, an evaluation that would replace earlier results: they
    are a user's too (the weights or the data they were made from may be gone since)."""
    for path in paths:
        if path.exists():
            raise ConfigError(
                f"{path} already holds an evaluation; nothing was done: write this one "
                "elsewhere with out=FILE.json, or move it away to evaluate into it again"
            )


def weights_key(path: str | Path) -> str:
    """``NAME-HASH`` of a weights file: its stem and the start of the sha1 of its bytes, so
    that results of different weights never share a folder."""
    path = Path(path).expanduser()
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"{path.stem}-{digest.hexdigest()[:8]}"


def check_out(
    out: object, suffixes: Sequence[str], required: str = "", sidecar: str = ""
) -> Path | None:
    """``out=``, checked before any work: None when not given (``required`` says how to
    give it where it must be), else a file name ending in one of ``suffixes`` that is not
    a folder and replaces no file (nor does its ``sidecar``, the same name with that
    suffix): not an exported encoder's, a run's, a user's, nor an earlier output, which a
    user may have made with a checkpoint since gone."""
    if not str(out or ""):
        if required:
            raise ConfigError(required)
        return None
    path = Path(str(out)).expanduser()
    if path.is_dir():
        raise ConfigError(
            f"out={out} is a folder; give a file name, e.g. out={path / ('results' + suffixes[0])}"
        )
    if path.suffix not in suffixes:
        raise ConfigError(f"out={str(out)!r}: use a {' or '.join(suffixes)} file name")
    for target in (path, path.with_suffix(sidecar) if sidecar else None):
        if target is not None and _export_file(target):
            raise ConfigError(
                f"out={out} would replace the exported encoder's {target.name} in "
                f"{target.parent}; choose another file name"
            )
        if target is not None and target.exists():
            raise ConfigError(
                f"out={out}: {target} already exists; nothing was written: choose another "
                "file name, or move it away to write it again"
            )
    return path


def _export_file(path: Path) -> bool:
    exported = (path.parent / WEIGHTS_NAME).exists() or (path.parent / META_NAME).exists()
    return path.name in (WEIGHTS_NAME, META_NAME) and exported
