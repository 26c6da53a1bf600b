"""Builds the audio pieces (index, datasets, statistics, encoders) from a composed config,
and says which `augment` group a run was made with."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from stec.distributed import barrier, is_main
from stec.engine.checkpoint import RUN_CHECKPOINT, declare_keys_added
from stec.errors import ConfigError, DataError, generated_root, user_input
from stec.methods import choose
from stec.run_dirs import check_checkpoint
from stec_audio.data.audioset import audioset_entries
from stec_audio.data.cache import prepare_cache
from stec_audio.data.clip_index import add_label_columns
from stec_audio.data.datasets import (
    ClipIndex,
    IndexedClips,
    InMemoryLogMels,
    LogMelClipDataset,
    compute_norm_stats,
    esc50_entries,
    folder_entries,
    manifest_entries,
)
from stec_audio.data.demo import ensure_demo_dataset
from stec_audio.data.demo_notes import ensure_notes_dataset
from stec_audio.data.frontend import FrontEndConfig, NormStats
from stec_audio.data.io import stec_cache_dir
from stec_audio.data.strong import StrongLabels, read_strong_labels
from stec_audio.encoders import build_encoder
from stec_audio.weights import load_initial_weights, read_audio_export

log = logging.getLogger("stec")
T = TypeVar("T")
DATASETS = ("demo", "notes", "esc50", "audioset", "manifest", "folder")
#: the built-in sets, generated on first use (ESC-50 layout)
GENERATED = {"demo": ensure_demo_dataset, "notes": ensure_notes_dataset}
#: the encoders ``checkpoint=`` names besides runs and exports
CHECKPOINT_NAMES = ("random", "init", "logmel_stats")
# runs made before augment.mixup.stage existed gave each view a background of its own
declare_keys_added({"augment.mixup.stage": "view"})
STATS_FILE = "stats.json"  # the statistics a run trained with, kept in its run directory


def resumed_stats(cfg: DictConfig) -> Path | None:
    """The statistics file of the run a resume continues: the one beside the checkpoint
    that ``trainer.resume`` names (``auto``: ``run_dir``'s own), only if that checkpoint
    exists. A statistics file without its checkpoint (a start stopped before its first
    save, a folder reused) describes no weights and is never served to another start."""
    resume = str(cfg.trainer.resume)
    if not resume:
        return None
    checkpoint = Path(cfg.run_dir) / RUN_CHECKPOINT if resume == "auto" else Path(resume)
    stats = checkpoint.parent.parent / STATS_FILE
    return stats if checkpoint.is_file() and stats.is_file() else None


def frontend_config(cfg: DictConfig) -> FrontEndConfig:
    return FrontEndConfig(**OmegaConf.to_container(cfg.frontend, resolve=True))


def data_root(cfg: DictConfig) -> Path:
    data = cfg.data
    if data.name in GENERATED:
        return GENERATED[data.name](generated_root(data.root), n_per_class=data.n_per_class)
    root = Path(str(data.root)).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data.root={str(root)!r} does not exist")
    return root


def build_index(cfg: DictConfig, split: str = "train") -> ClipIndex:
    """The clip index of ``cfg.data``; ``split="eval"`` is AudioSet's evaluation list. An
    index without a clip is refused here, naming the clips listed without a file."""
    name = choose("data.name", cfg.data.name, DATASETS)
    # rank 0 generates a built-in set and parses AudioSet's lists into the index cache; the
    # other ranks wait for it, then find both ready
    index = rank_0_first(lambda: _read_index(cfg, name, split))
    root = data_root(cfg)
    if len(index) == 0:
        found = index.missing_summary() or "no audio file found"
        raise DataError(f"data.root={root}: no usable clip: {found}")
    folds = cfg.data.get("folds")
    if folds:  # e.g. tune on the training folds only: data.folds=[1,2,3,4]
        keep = np.flatnonzero(np.isin(index.folds, list(folds)))
        if keep.size == 0:
            raise ConfigError(
                f"data.folds={list(folds)} selects no clip; the data has folds {sorted(set(index.folds.tolist()))}"
            )
        index = index.subset(keep)
    return index


def rank_0_first(make: Callable[[], T]) -> T:
    """``make()`` on rank 0 first, then on the other ranks (which find what it prepared);
    every rank calls it (collective under ``torchrun``, a plain call otherwise)."""
    if is_main():
        result = make()
        barrier()
        return result
    barrier()
    return make()


def _read_index(cfg: DictConfig, name: str, split: str) -> ClipIndex:
    root = data_root(cfg)
    if name == "audioset":
        return _audioset_index(cfg, root, split)
    labels = list(cfg.data.get("labels") or [])
    if name in ("demo", "notes", "esc50"):
        index = esc50_entries(root, esc10=bool(cfg.data.get("esc10", False)))
        if labels:
            add_label_columns(index, root / "meta" / "esc50.csv", "filename", labels)
    elif name == "manifest":
        index = manifest_entries(root)
        if labels:
            add_label_columns(index, root, "path", labels)
    elif labels:
        raise ConfigError(
            f"data.labels={labels}: further label sets are read from the metadata of "
            "data=demo, notes, esc50 or manifest"
        )
    else:
        index = folder_entries(root)
    return index


def strong_labels(cfg: DictConfig, index: ClipIndex) -> StrongLabels:
    """The strong labels of ``data.strong_labels`` (a TSV path relative to the data root,
    or to the manifest's folder) for the clips of ``index``."""
    name = cfg.data.get("strong_labels")
    if not name:
        raise ConfigError(
            "task=sed needs strong labels: data.strong_labels=PATH (a TSV with columns "
            f"filename, onset, offset, event_label); data={cfg.data.name} sets none"
        )
    root = data_root(cfg)
    return read_strong_labels((root if root.is_dir() else root.parent) / str(name), index)


def _audioset_index(cfg: DictConfig, root: Path, split: str) -> ClipIndex:
    lists = cfg.data.segments if split == "train" else [cfg.data.eval_segments]
    return audioset_entries(
        [root / s for s in lists],
        audio_root=root / cfg.data.audio_dir,
        class_labels_csv=root / cfg.data.class_labels,
        mapping_csv=(root / cfg.data.mapping) if cfg.data.mapping else None,
        cache_dir=prepared_base(cfg) / "index",
    )


def source_key(cfg: DictConfig, frontend: FrontEndConfig | None = None) -> str:
    """What prepared data is made from: the resolved data root (or manifest), the front end
    and the clip length. Two corpora with the same ``data=`` name never share a key."""
    source = {
        "root": str(data_root(cfg).resolve()),
        "frontend": dataclasses.asdict(frontend or frontend_config(cfg)),
        "clip_seconds": float(cfg.data.clip_seconds),
    }
    return hashlib.sha1(json.dumps(source, sort_keys=True).encode()).hexdigest()[:12]


def index_key(index: ClipIndex) -> str:
    """A fingerprint of the clips of an index (ids and paths, in order)."""
    digest = hashlib.sha1()
    digest.update(np.ascontiguousarray(index.ids).tobytes())
    digest.update(np.ascontiguousarray(index.paths).tobytes())
    digest.update(str(len(index)).encode())
    return digest.hexdigest()[:12]


def prepared_base(cfg: DictConfig) -> Path:
    """``data.prepared``, by default (``""``) the cache folder's ``prepared``: the same data
    is prepared once, whatever the working directory."""
    given = str(cfg.data.prepared or "")
    return Path(given).expanduser() if given else stec_cache_dir("prepared")


def prepared_dir(cfg: DictConfig, frontend: FrontEndConfig | None = None) -> Path:
    """``data.prepared/<name>-<source key>``: statistics and the log-mel cache of this corpus."""
    return prepared_base(cfg) / f"{cfg.data.name}-{source_key(cfg, frontend)}"


def clip_dataset(
    cfg: DictConfig, index: ClipIndex, frontend: FrontEndConfig | None = None
) -> IndexedClips:
    """The clips of ``index`` as raw log-mels, decoded once.

    With ``data.cache`` (the default) every clip not cached yet is decoded into the float16
    cache of this corpus first (a progress bar shows it); with ``data.in_memory`` (``auto``:
    when the log-mels take at most a quarter of this process's share of the memory) the
    usable clips are then held in memory, so training reads no file at all.
    """
    frontend = frontend or frontend_config(cfg)
    cache = prepared_dir(cfg, frontend) / "cache" if cfg.data.cache else None
    workers = int(cfg.trainer.num_workers)
    dataset = LogMelClipDataset(
        index,
        frontend,
        cfg.data.clip_seconds,
        cache_dir=cache,
        max_bad_fraction=cfg.data.max_bad_fraction,
    )
    if cache is not None:
        if is_main():
            report = prepare_cache(dataset, workers=workers, progress=bool(cfg.trainer.progress))
            if report.n_new:
                log.info(
                    "log-mel cache %s: %d clips decoded, %d reused",
                    cache,
                    report.n_new,
                    report.n_reused,
                )
        barrier()  # other ranks read what rank 0 wrote
    if _fits_in_memory(cfg, dataset):
        return InMemoryLogMels(dataset, workers=workers, progress=bool(cfg.trainer.progress))
    return dataset


IN_MEMORY = ("auto", "true", "false")


def _fits_in_memory(cfg: DictConfig, dataset: IndexedClips) -> bool:
    choice = str(cfg.data.in_memory).lower()
    choose("data.in_memory", choice, IN_MEMORY)
    if choice != "auto":
        return choice == "true"
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return InMemoryLogMels.nbytes(dataset) <= total / 4 / ranks_here


def norm_stats(cfg: DictConfig, index: ClipIndex, dataset: IndexedClips) -> NormStats:
    """Normalisation statistics of exactly these clips: read from the prepared folder when
    they were computed from this index (same clips, front end and clip length), else
    computed now (over up to 2,000 clips spread over the index) and saved there. Under
    ``torchrun`` rank 0 alone computes them; the other ranks wait for it and read them."""
    path = prepared_dir(cfg, dataset.frontend) / f"stats-{index_key(index)}.json"
    return rank_0_first(lambda: _stats(cfg, index, dataset, path))


def _stats(cfg: DictConfig, index: ClipIndex, dataset: IndexedClips, path: Path) -> NormStats:
    if path.exists():
        return NormStats.load(path)
    log.info("computing normalisation statistics of %d clips into %s", len(index), path)
    stats = compute_norm_stats(dataset, max_items=2000, num_workers=_workers_for(dataset, cfg))
    path.parent.mkdir(parents=True, exist_ok=True)
    stats.save(
        path,
        data=cfg.data.name,
        root=str(data_root(cfg).resolve()),
        n_clips=len(index),
        index_key=index_key(index),
        frontend=dataclasses.asdict(dataset.frontend),
        clip_seconds=float(cfg.data.clip_seconds),
    )
    return stats


def _workers_for(dataset: IndexedClips, cfg: DictConfig) -> int:
    # clips held in memory need no worker processes
    return 0 if isinstance(dataset, InMemoryLogMels) else int(cfg.trainer.num_workers)


def pipeline_config(cfg: DictConfig, norm: NormStats) -> dict[str, Any]:
    """The ``augment`` section with what the data decides filled in: the dataset std (so
    that energy weighting and fader gains work in real power units, and mixup too with
    ``domain: power``), the front end's mel axis (for the pitch warps) and the time
    shifts' action range where views may lie anywhere in the clip (the largest relative
    offset a clip of ``clip_seconds`` allows)."""
    sections = OmegaConf.to_container(cfg.augment, resolve=True)
    for name in ("time_crop", "geometry", "fader", "mixup"):
        section = sections.get(name)
        if section is not None and section.get("norm_std") is None:
            section["norm_std"] = float(norm.std)
    front = frontend_config(cfg)
    for name in ("pitch", "geometry"):  # they warp the front end's own mel axis
        if sections.get(name) is not None:
            sections[name].update(n_mels=front.n_mels, f_min=front.f_min, f_max=front.f_max)
    clip = front.frames(float(cfg.data.clip_seconds))
    crop = sections.get("time_crop")
    if crop is not None and crop.get("action_range") is None:
        reach = max((clip - int(crop.get("frames", 96))) / int(crop.get("frames", 96)), 0.5)
        crop["action_range"] = [-reach, reach]
    geometry = sections.get("geometry")
    if geometry is not None and geometry.get("span", 1.0) is None:
        # views drawn anywhere in the clip: time shifts reach across the whole clip
        frames = int(geometry.get("frames", 96))
        geometry.setdefault("time_shift_range", max((clip - frames) / frames, 0.5))
    return sections


def new_encoder(cfg: DictConfig, init: bool = True) -> nn.Module:
    """The encoder of ``cfg.encoder``, with the weights of ``encoder.init`` when it names a
    file (and ``init``): ``pretrain`` starts from them and ``checkpoint=init`` evaluates
    them; ``checkpoint=random`` passes ``init=False``."""
    kwargs = OmegaConf.to_container(cfg.encoder.kwargs, resolve=True) or {}
    with user_input("encoder"):
        encoder = build_encoder(cfg.encoder.name, n_mels=cfg.frontend.n_mels, **kwargs)
    if init and cfg.encoder.get("init"):
        load_initial_weights(encoder, str(cfg.encoder.init))
    return encoder


class LogMelStatistics(nn.Module):
    """The plain-feature floor: mean and std over time of every mel band,
    ``[B, 1, F, T] -> [B, 2F]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1, 2)
        return torch.cat([x.mean(-1), x.std(-1)], dim=1)


def load_encoder(cfg: DictConfig) -> tuple[nn.Module, NormStats | None, dict[str, Any]]:
    """The encoder named by ``checkpoint=``: an export/run dir, ``random`` (the floor of a
    randomly initialised encoder), ``init`` (the weights of ``encoder.init``) or
    ``logmel_stats`` (the plain-feature floor)."""
    check_checkpoint(cfg, CHECKPOINT_NAMES)
    if cfg.checkpoint in ("random", "init"):
        torch.manual_seed(cfg.seed)
        encoder = new_encoder(cfg, init=cfg.checkpoint == "init")
        return encoder, None, {"checkpoint": str(cfg.checkpoint)}
    if cfg.checkpoint == "logmel_stats":
        return LogMelStatistics(), None, {"checkpoint": "logmel_stats"}
    exported = read_audio_export(cfg.checkpoint)
    if exported.frontend is not None and exported.frontend != frontend_config(cfg):
        log.warning(
            "the encoder was trained with front end %s; using it instead of the config's",
            exported.meta["frontend"],
        )
    return exported.encoder, exported.norm, exported.meta


def export_frontend(cfg: DictConfig, meta: dict[str, Any]) -> FrontEndConfig:
    return FrontEndConfig(**meta["frontend"]) if "frontend" in meta else frontend_config(cfg)


def augment_group_advice(trained: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """The ``augment`` group a run was trained with, when this config chose the other one.

    The two groups differ in a dozen keys, and the refusal to resume lists every one; the
    group's name is what continues the run. Runs made before the composed map existed have
    no ``augment.geometry`` and count as separate, the default before 0.2."""

    def group(settings: Mapping[str, Any]) -> str:
        geometry = (settings.get("augment") or {}).get("geometry") or {}
        return "composed" if geometry.get("enabled") else "separate"

    made, chosen = group(trained), group(config)
    if made == chosen:
        return ""
    before = " (the default before 0.2)" if made == "separate" else ""
    return f"it was made with augment={made}{before}: add augment={made} to continue it"
