"""``stec-audio``: prepare, pretrain, evaluate and embed audio encoders with S-TEC.

stec-audio pretrain                                   # demo data, SimCLR + inverse model
stec-audio prepare data=esc50 data.root=DIR
stec-audio pretrain data=esc50 data.root=DIR method=simclr efference=off run_dir=runs/x
stec-audio evaluate checkpoint=runs/x data=esc50 data.root=DIR
stec-audio evaluate checkpoint=random                 # the random-encoder floor
stec-audio embed checkpoint=runs/x out=emb.parquet
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from stec import TwoViews
from stec.cli import (
    compare_command,
    pretrain_run,
    results_path,
    run_cli,
    save_embeddings,
)
from stec.distributed import init_from_env, is_main
from stec.engine.trainer import resolve_device
from stec.evaluation import (
    class_distance_ratio,
    cross_validate,
    embed,
    format_table,
    knn_accuracy,
    linear_probe,
    probe_options,
    write_results,
)
from stec_audio import app
from stec_audio.augment import build_audio_pipeline
from stec_audio.cache import prepare_cache
from stec_audio.datasets import collate_skip_bad
from stec_audio.hear import audio_export_meta
from stec_audio.io import TooManyBadFiles

log = logging.getLogger("stec")


def prepare(cfg: DictConfig) -> None:
    """Normalisation statistics (and, with data.cache=true, the float16 log-mel cache)."""
    index = app.build_index(cfg)
    stats = app.norm_stats(cfg, index)
    print(
        f"normalisation statistics: mean={stats.mean:.4f} std={stats.std:.4f} -> {app.prepared_dir(cfg) / app.STATS_FILE}"
    )
    if cfg.data.cache:
        report = prepare_cache(
            index,
            app.prepared_dir(cfg) / "cache",
            app.frontend_config(cfg),
            cfg.data.clip_seconds,
            stats,
            workers=max(int(cfg.trainer.num_workers), 1),
        )
        print(
            f"log-mel cache: {report.n_cached}/{report.n_clips} clips ({report.n_new} new, "
            f"{report.n_bad} unusable) in {report.out_dir}"
        )
        if report.n_bad:
            print(report.bad_summary)


def pretrain(cfg: DictConfig) -> None:
    init_from_env()
    index = app.build_index(cfg)
    stats = app.norm_stats(cfg, index)
    dataset = app.clip_dataset(cfg, index, stats)
    pipeline = build_audio_pipeline(app.pipeline_config(cfg, stats))
    augmenter = TwoViews(pipeline)
    torch.manual_seed(cfg.seed)
    encoder = app.new_encoder(cfg)
    n_classes = 0 if index.multilabel else len(index.class_names)
    meta = audio_export_meta(encoder, app.frontend_config(cfg), stats)
    if is_main():
        Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
        stats.save(Path(cfg.run_dir) / app.STATS_FILE)  # the run keeps its statistics
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
    )


def _embed_split(cfg: DictConfig, split: str = "train"):
    encoder, norm, meta = app.load_encoder(cfg)
    index = app.build_index(cfg, split)
    norm = norm or app.norm_stats(cfg, index)
    dataset = app.clip_dataset(
        cfg, index, norm, use_cache=cfg.checkpoint == "random" or split == "train"
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.evaluate.embed_batch_size,
        num_workers=int(cfg.trainer.num_workers),
        collate_fn=collate_skip_bad,
    )
    features, labels, positions = embed(encoder, loader, device=resolve_device(cfg.evaluate.device))
    # positions refer to the dataset's own index (a cache holds only the usable clips)
    return features, labels, positions, dataset.index, meta


def evaluate(cfg: DictConfig) -> None:
    """ESC-50 protocol (leave-one-fold-out linear probe) or AudioSet mAP; writes results.json."""
    probe = probe_options(cfg.evaluate, seed=cfg.seed)
    x, y, pos, index, meta = _embed_split(cfg, "train")
    if index.multilabel:
        test_x, test_y, _, _, _ = _embed_split(cfg, "eval")
        scores = linear_probe(x, y, test_x, test_y, multilabel=True, **probe)
        results = {"metric": "map", "map": scores["map"], "n_train": len(x), "n_eval": len(test_x)}
        results["protocol"] = scores["protocol"]
    else:
        folds = torch.as_tensor(index.folds[pos.numpy()].astype(np.int64))
        if (folds < 0).any():
            # no predefined folds: 5 folds by position, so the protocol stays the same
            folds = torch.arange(len(x)) % 5
            print("the data has no folds: using 5 folds assigned round-robin")
        results = cross_validate(x, y, folds, **probe)
        knn = []
        for fold in sorted(set(folds.tolist())):
            test = folds == fold
            knn.append(knn_accuracy(x[~test], y[~test], x[test], y[test], k=cfg.evaluate.knn_k))
        results["knn_accuracy_mean"] = float(np.mean(knn))
        results["class_distance_ratio"] = class_distance_ratio(x, y)["ratio"]
    results.update(
        checkpoint=str(cfg.checkpoint),
        data=cfg.data.name,
        n_clips=len(x),
        feature_dim=int(x.shape[1]),
    )
    path = write_results(results_path(cfg), results)
    print(format_table(results))
    print(f"results written to {path}")


def embed_command(cfg: DictConfig) -> None:
    """Scene embeddings with ids and labels, to .npy (a dict archive) or .parquet."""
    if not cfg.out:
        raise ValueError("out is required: out=embeddings.npy or out=embeddings.parquet")
    x, y, pos, index, _ = _embed_split(cfg, "train")
    ids = [str(index.ids[i]) for i in pos.tolist()]
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
            "audio", "Audio: S-TEC vs baseline", pretrain, evaluate, embed_command, "accuracy_mean"
        ),
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(argv, "stec-audio", "audio", COMMANDS, user_errors=(TooManyBadFiles,))


if __name__ == "__main__":
    raise SystemExit(main())
