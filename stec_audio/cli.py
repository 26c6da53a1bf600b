"""``stec-audio``: prepare, pretrain, evaluate and embed audio encoders with S-TEC.

stec-audio pretrain                                   # demo data, SimCLR + inverse model
stec-audio prepare data=esc50 data.root=DIR
stec-audio pretrain data=esc50 data.root=DIR method=simclr efference=off run_dir=runs/x
stec-audio evaluate checkpoint=runs/x data=esc50 data.root=DIR
stec-audio evaluate checkpoint=random                 # the random-encoder floor
stec-audio evaluate task=sed checkpoint=runs/x        # sound event detection (strong labels)
stec-audio embed checkpoint=runs/x out=emb.parquet
stec-audio embed checkpoint=runs/x frames=true out=frames.parquet   # one row per frame
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from stec import TwoViews
from stec.cli import (
    begin_pretrain,
    check_components,
    check_embed_out,
    compare_command,
    pretrain_run,
    run_cli,
    save_embeddings,
)
from stec.engine.rng import EVERY_RANK, GLOBAL_STREAM, SAMPLER_STREAM, stream_seed
from stec.engine.trainer import resolve_device
from stec.errors import user_input
from stec.evaluation import (
    check_two_classes,
    cross_validate,
    cross_validate_tasks,
    distance_ratio_where_defined,
    embed,
    format_table,
    knn_accuracy,
    labelled_items,
    linear_probe,
    probe_actions,
    probe_options,
    write_results,
)
from stec.methods import choose
from stec.run_dirs import (
    check_checkpoint,
    check_out,
    check_results_free,
    part_path,
    results_path,
)
from stec_audio import app
from stec_audio.augment import build_audio_pipeline
from stec_audio.config_schema import SCHEMA, TASKS
from stec_audio.data.clip_index import ClipIndex, data_summary
from stec_audio.data.datasets import InMemoryLogMels, collate_skip_bad
from stec_audio.data.frontend import FrontEndConfig, LogMelNormalizer, NormStats
from stec_audio.data.io import BadFileLog, TooManyBadFiles
from stec_audio.evaluation.frames import (
    ClipFrames,
    clip_frames,
    frame_model,
    save_frame_embeddings,
)
from stec_audio.evaluation.sed import (
    FrameData,
    SedOptions,
    cross_validate_sed,
    sed_results_path,
    sed_table,
)
from stec_audio.hear import HearModel, audio_export_meta

log = logging.getLogger("stec")


def prepare(cfg: DictConfig) -> None:
    """The log-mel cache (with data.cache=true, the default) and normalisation statistics."""
    index = app.build_index(cfg)
    dataset = app.clip_dataset(cfg, index)
    stats = app.norm_stats(cfg, index, dataset)
    folder = app.prepared_dir(cfg)
    print(
        f"{len(dataset)} usable clips of {len(index)}; normalisation statistics "
        f"mean={stats.mean:.4f} std={stats.std:.4f}; prepared data in {folder}"
    )
    summary = data_summary(index, dataset.bad_log)
    print(summary or "no missing or bad audio files")


def pretrain(cfg: DictConfig) -> None:
    check_components(cfg, action_names(cfg))  # the augmentations too, before any audio is read
    if cfg.encoder.get("init"):
        app.new_encoder(cfg)  # and the starting weights
    begin_pretrain(cfg)
    index = app.build_index(cfg)
    dataset = app.clip_dataset(cfg, index)
    resumed = app.resumed_stats(cfg)
    # a resumed run keeps the statistics it began with
    stats = NormStats.load(resumed) if resumed else app.norm_stats(cfg, index, dataset)
    if isinstance(dataset, InMemoryLogMels) and int(cfg.trainer.num_workers):
        cfg.trainer.num_workers = 0  # the clips are in memory: no worker process to feed
    with user_input("augment"):
        pipeline = build_audio_pipeline(app.pipeline_config(cfg, stats))
    augmenter = TwoViews(pipeline, prepare=LogMelNormalizer(stats))
    torch.manual_seed(cfg.seed)
    encoder = app.new_encoder(cfg)
    n_classes = 0 if index.multilabel else len(index.class_names)
    meta = audio_export_meta(encoder, app.frontend_config(cfg), stats)
    pretrain_run(
        cfg,
        dataset,
        augmenter,
        encoder,
        encoder.feature_dim,
        n_classes=n_classes,
        export_meta=meta,
        collate_fn=collate_skip_bad,
        items="clips",
        data_summary=lambda: data_summary(index, getattr(dataset, "bad_log", None)),
        run_files=lambda run_dir: stats.save(run_dir / app.STATS_FILE),  # the run keeps them
        advise=app.augment_group_advice,
    )


def action_names(cfg: DictConfig) -> list[str]:
    """The action components of the ``augment`` pipeline (built to check its settings)."""
    with user_input("augment"):
        return (
            build_audio_pipeline(app.pipeline_config(cfg, NormStats(0.0, 1.0))).action_space().names
        )


@dataclass
class FrozenEncoder:
    """What evaluation needs of ``checkpoint=``: the encoder, the statistics its inputs are
    normalised with, and the export's meta and front end."""

    encoder: torch.nn.Module
    norm: NormStats
    meta: dict
    frontend: FrontEndConfig


def frozen_encoder(cfg: DictConfig) -> FrozenEncoder:
    """The encoder of ``checkpoint=`` with its own front end and statistics; encoders
    without them (the floors) are normalised with the statistics of the *training* clips,
    whatever split is embedded."""
    encoder, norm, meta = app.load_encoder(cfg)
    frontend = app.export_frontend(cfg, meta)
    if norm is None:
        index = app.build_index(cfg, "train")
        norm = app.norm_stats(cfg, index, app.clip_dataset(cfg, index, frontend))
    return FrozenEncoder(encoder, norm, meta, frontend)


def _embed_split(cfg: DictConfig, frozen: FrozenEncoder, split: str = "train"):
    """Embeddings of the clips of ``split`` (AudioSet: ``train`` or ``eval`` list):
    ``(features, labels, positions, index, dataset)``, positions into ``index`` (the
    dataset's own: held in memory, only the usable clips)."""
    index = app.build_index(cfg, split)
    dataset = app.clip_dataset(cfg, index, frozen.frontend)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.evaluate.embed_batch_size,
        num_workers=0 if isinstance(dataset, InMemoryLogMels) else int(cfg.trainer.num_workers),
        collate_fn=collate_skip_bad,
    )
    features, labels, positions = embed(
        frozen.encoder,
        loader,
        device=resolve_device(cfg.evaluate.device),
        transform=LogMelNormalizer(frozen.norm),
    )
    summary = data_summary(index, dataset.bad_log)
    if summary:
        print(summary if split == "train" else f"{split} split: {summary}")
    return features, labels, positions, dataset.index, dataset


def _action_probe(cfg: DictConfig, frozen: FrozenEncoder, dataset) -> dict[str, float]:
    """How readable each action of the ``augment`` pipeline is from the frozen features of
    two views (``evaluate.action_probe_epochs`` passes over the clips make the pairs)."""
    if isinstance(frozen.encoder, app.LogMelStatistics):
        return {}  # plain features of a whole clip: not an encoder of views
    pipeline = build_audio_pipeline(app.pipeline_config(cfg, frozen.norm))
    views = TwoViews(pipeline, prepare=LogMelNormalizer(frozen.norm))
    # the order of the clips and the actions drawn for them come from streams of their own:
    # drawn from one seed, a clip's place in the order (clips are often listed class by
    # class) would decide its action, and a probe could read the action from the class
    order = stream_seed(cfg.seed, EVERY_RANK, SAMPLER_STREAM)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=min(64, len(dataset)), shuffle=True, collate_fn=collate_skip_bad,
        drop_last=True,
        generator=torch.Generator().manual_seed(order),
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(cfg.seed, EVERY_RANK, GLOBAL_STREAM))
        pairs = [  # with the clips' indices: a clip's pairs stay on one side of the split
            (*views(batch[0]), batch[2])
            for _ in range(int(cfg.evaluate.action_probe_epochs))
            for batch in loader
            if batch is not None
        ]
    return probe_actions(
        frozen.encoder,
        pairs,
        views.action_space(),
        device=resolve_device(cfg.evaluate.device),
        seed=cfg.seed,
        # read what the inverse model reads: with inverse_input=frames, the frame sequences
        frames=cfg.efference.inverse_input == "frames",
    )


def _frames_of_clips(
    cfg: DictConfig, index: ClipIndex, encoder: nn.Module, frontend: FrontEndConfig, norm: NormStats
) -> tuple[HearModel, ClipFrames]:
    """The frame model of ``encoder`` (the log-mel floor's own for plain statistics) and the
    frame embeddings of every clip of ``index``; bad files are skipped, counted and named."""
    floor = isinstance(encoder, app.LogMelStatistics)
    model = frame_model(encoder, frontend, norm, logmel_floor=floor)
    bad_log = BadFileLog(float(cfg.data.max_bad_fraction), total=len(index))
    device = resolve_device(str(cfg.evaluate.device))
    frames = clip_frames(model, index, device, int(cfg.evaluate.embed_batch_size), bad_log)
    summary = data_summary(index, bad_log)
    if summary:
        print(summary)
    return model, frames


def evaluate_sed(cfg: DictConfig, load_encoder: Callable[[], Any]) -> dict:
    """``stec-audio evaluate task=sed``: embed, probe, score; writes and returns the results
    (the probe and the scores: :mod:`stec_audio.evaluation.sed`).

    ``load_encoder()`` gives the frozen encoder (``.encoder``, ``.frontend``, ``.norm``); it
    is called once the options and the strong labels have been checked.
    """
    options = SedOptions.from_config(OmegaConf.to_container(cfg.evaluate.sed, resolve=True))
    device = resolve_device(str(cfg.evaluate.device))
    index = app.build_index(cfg)
    strong = app.strong_labels(cfg, index)
    strong.check_durations(index)
    frozen = load_encoder()
    model, frames = _frames_of_clips(cfg, index, frozen.encoder, frozen.frontend, frozen.norm)
    if strong.n_skipped_rows:
        print(f"{strong.path}: {strong.n_skipped_rows} row(s) name clips not in the data; skipped")
    positions = frames.positions
    folds = torch.as_tensor(index.folds[positions].astype(np.int64))
    if (folds < 0).any():
        folds = torch.arange(len(positions)) % 5
        print("the data has no folds: using 5 folds assigned round-robin")
    timestamps = [t.double() / 1000.0 for t in frames.timestamps_ms]
    data = FrameData(
        features=frames.embeddings,
        targets=[strong.frame_targets(i, t) for i, t in zip(positions, timestamps, strict=True)],
        timestamps_s=timestamps,
        references=[strong.reference(i) for i in positions],
        durations=frames.durations,
        folds=folds,
        hop_s=frames.hop_ms / 1000.0,
        classes=strong.classes,
    )
    results = cross_validate_sed(data, options, device, int(cfg.evaluate.inner_folds))
    results.update(
        checkpoint=str(cfg.checkpoint),
        data=cfg.data.name,
        strong_labels=str(strong.path),
        feature_dim=int(model.timestamp_embedding_size),
    )
    path = write_results(sed_results_path(cfg), results)
    print(sed_table(results))
    print(f"results written to {path}")
    return results


def _sed_tasks(cfg: DictConfig, frozen: FrozenEncoder, out: Path) -> dict[str, dict]:
    """Sound event detection of the same encoder (written to ``out``, the results' ``sed/``
    part), as two tasks of the clip-level results, so that a comparison shows them side by
    side."""
    sed_cfg = cfg.copy()
    sed_cfg.out = str(out)
    sed = evaluate_sed(sed_cfg, lambda: frozen)
    return {
        f"sed_{name}": {
            "metric": "f1",
            "f1_mean": sed[f"{name}_mean"],
            "f1_std": sed[f"{name}_std"],
            "per_fold": sed[per_fold],
            "n_clips": sed.get("n_clips"),
        }
        for name, per_fold in (("frame_f1", "per_fold"), ("event_f1", "event_f1_per_fold"))
    }


def evaluate(cfg: DictConfig) -> None:
    """ESC-50 protocol (leave-one-fold-out linear probe) or AudioSet mAP; writes results.json.
    ``task=sed``: sound event detection with a frame-level probe (:func:`evaluate_sed`)."""
    probe = probe_options(cfg.evaluate, seed=cfg.seed)
    with user_input("task"):
        task = choose("task", str(cfg.task), TASKS)
    check_checkpoint(cfg, app.CHECKPOINT_NAMES)
    check_out(cfg.out, (".json",))
    if task == "sed":
        check_results_free(sed_results_path(cfg))
        evaluate_sed(cfg, lambda: frozen_encoder(cfg))  # checks its options and labels first
        return
    path = results_path(cfg)  # once: for init it hashes the weights file
    check_results_free(path, *([part_path(path, "sed")] if cfg.evaluate.with_sed else []))
    frozen = frozen_encoder(cfg)
    x, y, pos, index, dataset = _embed_split(cfg, frozen, "train")
    if index.multilabel:
        test_x, test_y, _, _, _ = _embed_split(cfg, frozen, "eval")
        scores = linear_probe(x, y, test_x, test_y, multilabel=True, **probe)
        results = {"metric": "map", "map": scores["map"], "n_train": len(x), "n_eval": len(test_x)}
        results["protocol"] = scores["protocol"]
    else:
        ids = [index.id(int(p)) for p in pos]
        advice = "give the manifest a label column (path,label), or use data=folder or data=esc50"
        labelled, left_out = labelled_items(y, ids, "clip", advice)
        if left_out:
            print(left_out)
        advice = "data=folder: one folder of clips per class"
        check_two_classes(y[labelled], index.class_names, "the evaluated clips", advice)
        folds = torch.as_tensor(index.folds[pos.numpy()].astype(np.int64))
        if (folds < 0).any():
            # no predefined folds: 5 folds by position, so the protocol stays the same
            folds = torch.arange(len(x)) % 5
            print("the data has no folds: using 5 folds assigned round-robin")
        extra = {name: torch.as_tensor(labels[pos.numpy()]) for name, labels in index.tasks.items()}
        if extra:  # the class is the first task (its own labelled clips, as every task's)
            tasks = cross_validate_tasks(x, {"class": y, **extra}, folds, **probe)
            results = {**tasks["tasks"]["class"], **tasks}
        x, y, folds = x[labelled], y[labelled], folds[labelled]
        if not extra:
            results = cross_validate(x, y, folds, **probe)
        knn = []
        for fold in sorted(set(folds.tolist())):
            test = folds == fold
            knn.append(knn_accuracy(x[~test], y[~test], x[test], y[test], k=cfg.evaluate.knn_k))
        results["knn_accuracy_mean"] = float(np.mean(knn))
        results["class_distance_ratio"] = distance_ratio_where_defined(x, y)
        results["n_labelled"] = len(x)
    if cfg.evaluate.action_probe:
        results["action_probe"] = _action_probe(cfg, frozen, dataset)
    if cfg.evaluate.with_sed:
        results.setdefault("tasks", {}).update(_sed_tasks(cfg, frozen, part_path(path, "sed")))
    results.update(
        checkpoint=str(cfg.checkpoint),
        data=cfg.data.name,
        n_clips=len(pos),
        feature_dim=int(x.shape[1]),
    )
    write_results(path, results)
    print(format_table(results))
    print(f"results written to {path}")


def embed_frames(
    cfg: DictConfig, encoder: nn.Module, frontend: FrontEndConfig, norm: NormStats
) -> Path:
    """``stec-audio embed frames=true``: the frame embeddings of every clip to ``out``
    (:mod:`stec_audio.evaluation.frames`)."""
    if not cfg.out:
        raise ValueError("out is required: out=frames.npy or out=frames.parquet")
    index = app.build_index(cfg, "train")
    model, frames = _frames_of_clips(cfg, index, encoder, frontend, norm)
    ids = [index.id(i) for i in frames.positions]
    path = save_frame_embeddings(cfg.out, ids, index.targets(frames.positions), frames)
    n_frames = sum(e.shape[0] for e in frames.embeddings)
    print(
        f"{n_frames} frame embeddings of size {model.timestamp_embedding_size} ({len(ids)} clips, "
        f"hop {frames.hop_ms:g} ms) written to {path}"
    )
    return path


def embed_command(cfg: DictConfig) -> None:
    """Scene embeddings with ids and labels, to .npy (a dict archive) or .parquet;
    ``frames=true``: timestamped frame embeddings (:mod:`stec_audio.evaluation.frames`)."""
    check_embed_out(cfg.out)
    check_checkpoint(cfg, app.CHECKPOINT_NAMES)
    if cfg.frames:  # timestamped frame embeddings, one row per frame
        frozen = frozen_encoder(cfg)
        embed_frames(cfg, frozen.encoder, frozen.frontend, frozen.norm)
        return
    x, y, pos, index, _ = _embed_split(cfg, frozen_encoder(cfg), "train")
    ids = [index.id(i) for i in pos.tolist()]
    out = save_embeddings(cfg.out, ids, y, x)
    print(f"{len(ids)} embeddings of size {x.shape[1]} written to {out}")


COMMANDS = {
    "prepare": ("normalisation statistics and optional log-mel cache (data.cache=true)", prepare),
    "pretrain": ("self-supervised pretraining (method=, efference=, data=)", pretrain),
    "evaluate": (
        "linear probe on frozen embeddings (checkpoint=RUN or checkpoint=random)",
        evaluate,
    ),
    "embed": ("export scene embeddings (checkpoint=RUN out=FILE.npy|.parquet)", embed_command),
    "compare": (
        "S-TEC vs baseline over methods and seeds, with floors and a report (compare.*)",
        compare_command(
            "audio",
            "Audio: S-TEC vs baseline",
            pretrain,
            evaluate,
            embed_command,
            "accuracy_mean",
            evaluate_overrides=["evaluate.action_probe=true"],
            components=action_names,
            advise=app.augment_group_advice,
        ),
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(
        argv, "stec-audio", "audio", COMMANDS, user_errors=(TooManyBadFiles,), schema=SCHEMA
    )


if __name__ == "__main__":
    raise SystemExit(main())
