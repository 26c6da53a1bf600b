"""``stec-vision``: pretrain, evaluate and embed image encoders with S-TEC.

stec-vision pretrain                                  # demo shapes, SimCLR + inverse model
stec-vision pretrain data=cifar10 data.root=DIR method=simclr efference=inverse run_dir=runs/c10
stec-vision evaluate checkpoint=runs/c10 data=cifar10 data.root=DIR
stec-vision evaluate checkpoint=random                # the random-encoder floor
stec-vision evaluate task=segmentation checkpoint=runs/c10   # dense probe on feature maps, mIoU
stec-vision embed checkpoint=runs/c10 out=emb.npy
stec-vision export checkpoint=runs/c10 format=torchvision    # the ResNet as a torchvision state dict

``embed`` writes one id per image: its file path relative to the data root for image files
(imagefolder, manifest, demo), its index in the split for CIFAR and STL-10.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from stec.cli import (
    begin_pretrain,
    check_components,
    check_embed_out,
    compare_command,
    pretrain_run,
    run_cli,
    save_embeddings,
)
from stec.compose import ConfigSchema
from stec.config_check import Rule, at_least, fraction, one_of, positive
from stec.engine.trainer import resolve_device
from stec.errors import ConfigError, DataError, user_input
from stec.evaluation import (
    check_two_classes,
    distance_ratio_where_defined,
    embed,
    format_table,
    knn_accuracy,
    labelled_items,
    linear_probe,
    probe_options,
    write_results,
)
from stec.methods import choose
from stec.run_dirs import (
    FLOORS,
    check_checkpoint,
    check_out,
    check_results_free,
    part_path,
    results_path,
)
from stec_vision.augment_presets import PRESETS, build_normalize, build_two_views, preset_config
from stec_vision.datasets import (
    DATASETS,
    JoinedDataset,
    build_vision_dataset,
    collate_skip_bad,
    item_ids,
)
from stec_vision.encoders import (
    ENCODERS,
    FeatureMap,
    build_vision_encoder,
    cifar_stem_for,
    encoder_meta,
    load_vision_encoder,
)
from stec_vision.segmentation import evaluate_segmentation
from stec_vision.torchvision_export import SUFFIXES as TORCHVISION_SUFFIXES
from stec_vision.torchvision_export import export_torchvision

log = logging.getLogger("stec")
FLOOR_NAMES = ("random", "pixels")  # the encoders checkpoint= names besides runs and exports


def _loading(cfg: DictConfig, train: bool) -> dict[str, int]:
    """How images are loaded: whole-image canvases (``data.canvas``) for pretraining,
    Resize + CenterCrop (``data.eval_resize``) for evaluation and embedding."""
    canvas, resize = int(cfg.data.get("canvas", 0)), int(cfg.data.get("eval_resize", 0))
    if canvas < 0:
        raise ConfigError(f"data.canvas={canvas} must be 0 (off) or a canvas side in pixels")
    if resize and resize < int(cfg.data.size):
        raise ConfigError(
            f"data.eval_resize={resize} must be 0 (off) or at least data.size={cfg.data.size}"
        )
    return {"canvas": canvas} if train else {"resize": resize}


@user_input("data", error=DataError)
def dataset(cfg: DictConfig, split: str, train: bool = False):
    """``split`` may join several with ``+`` (STL-10's ``train+unlabeled``); ``train``
    loads whole-image canvases where ``data.canvas`` is set."""
    splits = str(split).split("+")
    parts = [
        build_vision_dataset(
            cfg.data.name, cfg.data.root or None, s, int(cfg.data.size), **_loading(cfg, train)
        )
        for s in splits
    ]
    return parts[0] if len(parts) == 1 else JoinedDataset(parts, splits)


def n_classes(ds) -> int:
    return len(getattr(ds, "classes", []))


def encoder_settings(cfg: DictConfig) -> dict[str, Any]:
    """The keyword arguments of ``cfg.encoder``; ``encoder.cifar_stem`` null follows the
    data's image size (:func:`~stec_vision.encoders.cifar_stem_for`)."""
    e = cfg.encoder
    stem = e.get("cifar_stem")
    stem = cifar_stem_for(int(cfg.data.size)) if stem is None else bool(stem)
    return {"cifar_stem": stem, "width": int(e.width), "maxpool": e.get("maxpool")}


def encoder_from_config(cfg: DictConfig) -> tuple[torch.nn.Module, int]:
    """``(backbone, feature_dim)`` of ``cfg.encoder``, randomly initialised."""
    return build_vision_encoder(cfg.encoder.name, **encoder_settings(cfg))


def _augment(cfg: DictConfig) -> dict[str, Any] | None:
    """The ``augment`` keys given, which override the data's preset."""
    return OmegaConf.to_container(cfg.augment, resolve=True) or None


def _two_views(cfg: DictConfig):
    """The training views of ``data.preset`` with the ``augment`` overrides."""
    canvas = _loading(cfg, train=True)["canvas"] > 0
    with user_input("augment", "data.preset"):
        return build_two_views(cfg.data.preset, int(cfg.data.size), _augment(cfg), canvas=canvas)


def pretrain(cfg: DictConfig) -> None:
    augmenter = _two_views(cfg)  # its settings are checked before any image is read
    check_components(cfg, augmenter.action_space().names)
    begin_pretrain(cfg)
    train = dataset(cfg, cfg.data.get("pretrain_split", cfg.data.train_split), train=True)
    torch.manual_seed(cfg.seed)
    encoder, dim = encoder_from_config(cfg)
    meta = {
        "modality": "vision",
        "encoder": encoder_meta(cfg.encoder.name, **encoder_settings(cfg)),
        "feature_dim": dim,
        "image_size": int(cfg.data.size),
        "normalize": preset_config(cfg.data.preset, _augment(cfg))["normalize"],
    }
    pretrain_run(
        cfg,
        train,
        augmenter,
        encoder,
        dim,
        n_classes=n_classes(train),
        export_meta=meta,
        collate_fn=collate_skip_bad,
        items="images",
    )


def _encoder(cfg: DictConfig):
    check_checkpoint(cfg, FLOOR_NAMES)
    if cfg.checkpoint == "pixels":  # the plain-feature floor
        return torch.nn.Flatten(), "none"
    if cfg.checkpoint == "random":
        torch.manual_seed(cfg.seed)
        encoder = encoder_from_config(cfg)[0]
        with user_input("augment", "data.preset"):
            return encoder, preset_config(cfg.data.preset, _augment(cfg))["normalize"]
    encoder, meta = load_vision_encoder(cfg.checkpoint)
    return encoder, meta.get("normalize", "none")


def _features(cfg: DictConfig, encoder, normalize, split: str):
    ds = dataset(cfg, split)
    loader = DataLoader(
        ds,
        batch_size=cfg.evaluate.embed_batch_size,
        num_workers=int(cfg.trainer.num_workers),
        collate_fn=collate_skip_bad,
    )
    norm = build_normalize(normalize)
    x, y, idx = embed(encoder, loader, device=resolve_device(cfg.evaluate.device), transform=norm)
    return x, y, item_ids(ds, idx.tolist()), getattr(ds, "classes", None)


TASKS = ("classification", "segmentation")


def evaluate(cfg: DictConfig) -> None:
    """``task=classification``: linear probe (train -> test) and k-NN on frozen features;
    ``task=segmentation``: a dense linear probe on frozen feature maps. Writes results.json
    (a segmentation's goes to a ``segmentation/`` folder unless ``out`` is set, so that it
    does not replace the classification results)."""
    with user_input("task"):
        choose("task", cfg.task, TASKS)
    check_out(cfg.out, (".json",))
    check_checkpoint(cfg, FLOOR_NAMES)
    path = results_path(cfg)
    if cfg.task == "segmentation" and not cfg.out:
        path = part_path(path, "segmentation")
    with_dense = cfg.task != "segmentation" and cfg.evaluate.with_segmentation
    check_results_free(path, *([part_path(path, "segmentation")] if with_dense else []))
    encoder, normalize = _encoder(cfg)
    if cfg.task == "segmentation":
        # the pixel floor's map is the image itself: a per-pixel colour classifier
        spatial = torch.nn.Identity() if cfg.checkpoint == "pixels" else FeatureMap(encoder)
        results = evaluate_segmentation(cfg, spatial, normalize)
    else:
        results = _classification(cfg, encoder, normalize)
        if with_dense:  # both, side by side (a comparison's tasks)
            spatial = torch.nn.Identity() if cfg.checkpoint == "pixels" else FeatureMap(encoder)
            dense = evaluate_segmentation(cfg, spatial, normalize)
            write_results(part_path(path, "segmentation"), dense)
            results["tasks"] = {
                "classification": _split_task("accuracy", results["accuracy"]),
                "segmentation": _split_task("miou", dense["miou"]),
            }
    path = write_results(path, results)
    print(format_table(results))
    print(f"results written to {path}")


def _split_task(metric: str, value: float) -> dict:
    """A train -> test score in the shape of a task of the results (one "fold": the test
    split), so that a comparison summarises it with the others."""
    return {
        "metric": metric,
        f"{metric}_mean": value,
        f"{metric}_std": 0.0,
        "per_fold": {"test": value},
    }


def _labelled(x: torch.Tensor, y: torch.Tensor, ids: list[str], split: str):
    """The images of ``split`` with a class label (the others named, left out)."""
    advice = (
        f"data.{split}_split names a split without labels; give one with them, or a "
        "manifest with a label column (path,label)"
    )
    labelled, left_out = labelled_items(y, ids, "image", advice)
    if left_out:
        print(f"{split} split: {left_out}")
    return x[labelled], y[labelled]


def _classification(cfg: DictConfig, encoder, normalize) -> dict:
    train_x, train_y, ids, classes = _features(cfg, encoder, normalize, cfg.data.train_split)
    train_x, train_y = _labelled(train_x, train_y, ids, "train")
    advice = "data=imagefolder: one folder of images per class"
    check_two_classes(train_y, classes, "the training images", advice)
    test_x, test_y, ids, _ = _features(cfg, encoder, normalize, cfg.data.test_split)
    test_x, test_y = _labelled(test_x, test_y, ids, "test")
    probe = linear_probe(
        train_x, train_y, test_x, test_y, **probe_options(cfg.evaluate, seed=cfg.seed)
    )
    return {
        "accuracy": probe["accuracy"],
        "protocol": probe["protocol"],
        "knn_accuracy": knn_accuracy(train_x, train_y, test_x, test_y, k=cfg.evaluate.knn_k),
        "class_distance_ratio": distance_ratio_where_defined(test_x, test_y),
        "checkpoint": str(cfg.checkpoint),
        "data": cfg.data.name,
        "n_train": len(train_x),
        "n_test": len(test_x),
        "feature_dim": int(train_x.shape[1]),
    }


def embed_command(cfg: DictConfig) -> None:
    check_embed_out(cfg.out)
    encoder, normalize = _encoder(cfg)
    x, y, ids, _ = _features(cfg, encoder, normalize, cfg.data.test_split)
    out = save_embeddings(cfg.out, ids, y, x)
    print(f"{len(x)} embeddings of size {x.shape[1]} written to {out}")


def export_command(cfg: DictConfig) -> None:
    """Write the backbone of ``checkpoint`` in another format (``format=torchvision``)."""
    if not cfg.checkpoint or cfg.checkpoint in FLOORS:
        raise ConfigError(
            f"checkpoint={cfg.checkpoint!r}: export needs a run or export folder (checkpoint=RUN)"
        )
    with user_input("format"):
        choose("format", cfg.format, EXPORT_FORMATS)
    check_checkpoint(cfg, ())
    check_out(cfg.out, TORCHVISION_SUFFIXES, sidecar=".json")
    weights, sidecar = export_torchvision(cfg.checkpoint, cfg.out or None)
    print(f"torchvision state dict written to {weights} (stem and normalisation: {sidecar})")


EXPORT_FORMATS = ("torchvision",)


def _compare(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """``compare`` scores each arm by accuracy, or by mIoU with ``task=segmentation``."""
    with user_input("task"):
        choose("task", cfg.task, TASKS)
    _COMPARE[cfg.task](cfg, overrides)


_compare.wants_overrides = True
_COMPARE = {
    task: compare_command(
        "vision",
        f"Vision: S-TEC vs baseline ({what})",
        pretrain,
        evaluate,
        embed_command,
        metric,
        components=lambda cfg: _two_views(cfg).action_space().names,
    )
    for task, what, metric in (
        ("classification", "linear probe", "accuracy"),
        ("segmentation", "dense probe, mIoU", "miou"),
    )
}

COMMANDS = {
    "pretrain": ("self-supervised pretraining (method=, efference=, data=)", pretrain),
    "evaluate": (
        "linear probe + k-NN on frozen features (checkpoint=RUN or checkpoint=random); "
        "task=segmentation: dense probe, mIoU",
        evaluate,
    ),
    "embed": (
        "export embeddings of the test split (checkpoint=RUN out=FILE.npy|.parquet)",
        embed_command,
    ),
    "export": (
        "the ResNet backbone as a torchvision state dict (checkpoint=RUN format=torchvision "
        "[out=FILE.pth])",
        export_command,
    ),
    "compare": (
        "S-TEC vs baseline over methods and seeds, with floors and a report (compare.*; "
        "task=segmentation scores mIoU)",
        _compare,
    ),
}


def _preset_keys(defaults: dict[str, Any], cfg: DictConfig | None) -> None:
    """The ``augment`` keys are those of the data's preset (``data.preset``), with its
    values as defaults."""
    preset = defaults["data"]["preset"]
    if cfg is not None and cfg.data.preset in PRESETS:
        preset = cfg.data.preset
    values = preset_config(preset)
    defaults["augment"] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


#: What the vision keys take beyond their defaults' types (stec.config_check).
SCHEMA = ConfigSchema(
    rules={
        "task": one_of(*TASKS),
        "format": one_of(*EXPORT_FORMATS),
        "data.name": one_of(*DATASETS),
        "data.size": at_least(8),
        "data.preset": one_of(*PRESETS),
        "data.canvas": at_least(0),
        "data.eval_resize": at_least(0),
        "encoder.name": one_of(*ENCODERS),
        "encoder.width": at_least(1),
        "encoder.cifar_stem": Rule(kinds=("null", "bool")),
        "encoder.maxpool": Rule(kinds=("null", "bool")),
        "segmentation.num_classes": at_least(0),
        "segmentation.epochs": at_least(1),
        "segmentation.lr": positive(),
        "segmentation.weight_decay": at_least(0),
        "segmentation.batch_size": at_least(1),
        "compare.floors": one_of("random", "pixels"),
        "augment.hue": Rule(kinds=("null", "float"), low=0, high=0.5),
        "augment.brightness": at_least(0, kinds=("null", "float")),
        "augment.contrast": at_least(0, kinds=("null", "float")),
        "augment.saturation": at_least(0, kinds=("null", "float")),
        "augment.blur_sigma_ref_size": at_least(1, kinds=("null", "int")),
        "augment.blur_kernel": at_least(1, kinds=("null", "int")),
        "augment.mask_noninvertible": one_of(
            True, False, "grayscale", "solarize", kinds=("bool", "str", "list[str]")
        ),
        "augment.normalize": Rule(kinds=("null", "str")),
        "augment.*_p": fraction(kinds=("float", "list[float]")),
        "augment.solarize_threshold": fraction(),
        "augment.color_strength": at_least(0),
        "augment.*bins": at_least(1),
        "augment.scale": positive(),
        "augment.ratio": positive(),
    },
    expand=_preset_keys,
    note="augment: the keys of the data's preset (data.preset) and its values; "
    "change one with augment.KEY=VALUE",
    optional=("data.pretrain_split",),  # the split pretraining reads, where not train_split
)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(argv, "stec-vision", "vision", COMMANDS, schema=SCHEMA)


if __name__ == "__main__":
    raise SystemExit(main())
