"""Images with segmentation masks, and ``stec-vision evaluate task=segmentation``.

Layout (``data=imagefolder``; the demo set is written the same way)::

    ROOT/<split>/**/<name>.<ext>        images, in any sub-folders (class folders or none)
    ROOT/masks/<split>/**/<name>.png    the mask of each image: its relative path, .png
    ROOT/masks/classes.txt              optional: class names, one a line (line i: index i)

A mask is a single-channel PNG (mode ``L``, ``P`` or 16-bit ``I;16``) of the image's size
holding a class index per pixel, ``0`` for the background; ``segmentation.ignore_index``
(255) marks pixels left out. The number of classes is ``segmentation.num_classes`` or, when
that is 0, the number of lines of ``classes.txt``. A missing mask, a mask whose size differs
from its image's and a class index out of range are errors naming the file.

Image and mask get the same resize and centre crop (:func:`resize_and_crop`, the mask with
nearest-neighbour resampling). The evaluation embeds both splits into frozen feature maps
and fits a dense linear probe (:mod:`stec.evaluation.dense`) on the train split, scored on
the test split.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from stec.engine.trainer import resolve_device
from stec.errors import ConfigError, DataError, user_input
from stec.evaluation.dense import dense_probe, embed_maps
from stec_vision.augment_presets import build_normalize
from stec_vision.datasets import list_images
from stec_vision.demo import ensure_demo_images
from stec_vision.image_files import (
    DECODE_ERRORS,
    ImageFileDataset,
    load_image,
    resize_and_crop,
)

log = logging.getLogger(__name__)

MASK_MODES = ("L", "P", "I;16", "I")
MASK_DATASETS = ("demo", "imagefolder")
CLASSES_FILE = "classes.txt"


def load_mask(path: str | Path, size: int, resize: int | None = None) -> Tensor:
    """A mask file as ``[size, size]`` class indices (uint8 for 8-bit masks, else int32),
    resized and cropped like its image (nearest neighbour)."""
    with Image.open(path) as img:
        if img.mode not in MASK_MODES:
            raise DataError(
                f"mask {path}: mode {img.mode} is not a class-index image; allowed modes: "
                f"{', '.join(MASK_MODES)}"
            )
        img = resize_and_crop(img, size, resize, Image.Resampling.NEAREST)
        pixels = np.asarray(img)
    dtype = np.uint8 if pixels.dtype == np.uint8 else np.int32
    return torch.from_numpy(pixels.astype(dtype, copy=True))


def read_class_names(mask_root: Path, num_classes: int) -> list[str]:
    """Class names: ``mask_root/classes.txt`` (one a line), or ``0..num_classes-1`` when
    ``num_classes > 0`` (both given: they must agree)."""
    path = mask_root / CLASSES_FILE
    names = None
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if num_classes > 0:
        if names is not None and len(names) != num_classes:
            raise ConfigError(
                f"segmentation.num_classes={num_classes} but {path} names {len(names)} classes"
            )
        return names or [str(i) for i in range(num_classes)]
    if names is None:
        raise ConfigError(
            f"segmentation.num_classes is 0 and {path} does not exist: set "
            "segmentation.num_classes=N (class indices 0..N-1, 0 = background) or list the "
            f"class names in {path}, one a line"
        )
    if len(names) < 2:
        raise DataError(f"{path}: needs at least 2 classes (background and one more)")
    return names


def _pair_problem(image: str, mask: Path) -> tuple[str, str] | None:
    """``(kind, text)`` of what is wrong with a mask for ``image``, or None."""
    if not mask.is_file():
        return "missing", f"{mask} (for {image})"
    try:
        with Image.open(mask) as m, Image.open(image) as i:
            if m.size != i.size:
                return "size", (
                    f"{mask} is {m.size[0]}x{m.size[1]} but {image} is {i.size[0]}x{i.size[1]}"
                )
            if m.mode not in MASK_MODES:
                return "mode", f"{mask} has mode {m.mode}"
    except DECODE_ERRORS as err:
        return "unreadable", f"{mask} ({type(err).__name__}: {err})"
    return None


class MaskedImageDataset(Dataset):
    """Images under ``root/<split>`` and their masks under ``mask_root/<split>``.

    Items are ``(image uint8 [3, size, size], mask [size, size], index)``; an image or mask
    that fails to decode gives None (skipped by :func:`collate_masks`, with a warning).
    Images are scanned as for :class:`ImageFileDataset` (``scan``), and every mask is
    checked when the dataset is built: present, of its image's size, single-channel.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        size: int,
        mask_root: str | Path,
        class_names: list[str],
        resize: int = 0,
        scan: str = "header",
        workers: int = 8,
    ) -> None:
        root, mask_root = Path(root).expanduser(), Path(mask_root).expanduser()
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"segmentation data: {folder} is not a folder (split={split!r})")
        paths = [p for p in list_images(folder) if not p.is_relative_to(mask_root)]
        if not paths:
            raise DataError(f"segmentation data: no images under {folder}")
        self.images = ImageFileDataset(
            [(str(p), 0) for p in paths], size, [], scan=scan, name=f"images {folder}", root=root
        )
        self.masks = [
            mask_root / Path(p).relative_to(root).with_suffix(".png")
            for p, _ in self.images.samples
        ]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pairs = zip((p for p, _ in self.images.samples), self.masks, strict=True)
            problems = [p for p in pool.map(lambda pair: _pair_problem(*pair), pairs) if p]
        if problems:
            self._raise(problems, len(self.masks), mask_root, split)
        self.size, self.resize = int(size), int(resize)
        self.class_names = list(class_names)
        self.mask_root = mask_root

    @staticmethod
    def _raise(problems: list[tuple[str, str]], n: int, mask_root: Path, split: str) -> None:
        what = {
            "missing": f"have no mask (expected {mask_root}/{split}/<the image's path>.png)",
            "size": "have a mask of another size than the image",
            "mode": f"have a mask that is not a class-index image ({', '.join(MASK_MODES)})",
            "unreadable": "have an unreadable mask",
        }
        kind = problems[0][0]
        same = [text for k, text in problems if k == kind]
        shown = "; ".join(same[:3]) + (f"; ... ({len(same)} in all)" if len(same) > 3 else "")
        raise DataError(f"masks: {len(same)} of {n} images {what[kind]}: {shown}")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int] | None:
        path = self.images.samples[index][0]
        try:
            image = load_image(path, self.size, self.resize or None, draft=False)
            mask = load_mask(self.masks[index], self.size, self.resize or None)
        except DECODE_ERRORS as err:
            log.warning("skipping %s and its mask %s (%s)", path, self.masks[index], err)
            return None
        return image, mask, int(index)

    def item_id(self, index: int) -> str:
        return self.images.item_id(index)


def collate_masks(batch) -> tuple[Tensor, Tensor, Tensor] | None:
    """Stack ``(image, mask, index)`` items, dropping None ones (None if none is left)."""
    good = [item for item in batch if item is not None]
    if not good:
        return None
    images = torch.stack([item[0] for item in good])
    masks = [item[1] for item in good]
    if len({m.dtype for m in masks}) > 1:  # 8-bit and 16-bit masks in one batch
        masks = [m.to(torch.int32) for m in masks]
    masks = torch.stack(masks)
    return images, masks, torch.tensor([item[2] for item in good], dtype=torch.long)


@user_input("data", "segmentation", error=DataError)
def segmentation_dataset(cfg: DictConfig, split: str) -> MaskedImageDataset:
    """The split of ``cfg.data`` with its masks (``data=demo`` or ``data=imagefolder``)."""
    name, size, seg = cfg.data.name, int(cfg.data.size), cfg.segmentation
    if name not in MASK_DATASETS:
        raise ConfigError(
            f"task=segmentation needs images with masks; data={name} has none. Allowed "
            f"values: {', '.join(f'data={n}' for n in MASK_DATASETS)} (masks in ROOT/"
            f"{seg.masks}/<split>/..., see docs/vision.md)"
        )
    if name == "demo":
        root = ensure_demo_images(cfg.data.root or None, size=size)
        mask_root, scan = root / "masks", "none"
    else:
        root = Path(str(cfg.data.root)).expanduser()
        mask_root, scan = root / str(seg.masks), "header"
    names = read_class_names(mask_root, int(seg.num_classes))
    resize = int(cfg.data.get("eval_resize", 0))
    return MaskedImageDataset(root, split, size, mask_root, names, resize=resize, scan=scan)


def check_mask_values(masks: Tensor, ds: MaskedImageDataset, indices: Tensor, ignore: int) -> None:
    """Every mask value is a class index or ``ignore``, else a :class:`DataError` naming
    the first offending mask file."""
    n = len(ds.class_names)
    bad = ((masks < 0) | (masks >= n)) & (masks != ignore)
    rows = bad.flatten(1).any(1)
    if rows.any():
        row = int(rows.nonzero()[0])
        value = int(masks[row][bad[row]][0])
        raise DataError(
            f"mask {ds.masks[int(indices[row])]} holds class index {value}; allowed: "
            f"0..{n - 1} ({n} classes: {', '.join(ds.class_names[:4])}"
            f"{', ...' if n > 4 else ''}) and {ignore} (segmentation.ignore_index)"
        )


def _maps(cfg: DictConfig, encoder: nn.Module, normalize: str, split: str):
    ds = segmentation_dataset(cfg, split)
    loader = DataLoader(
        ds,
        batch_size=cfg.evaluate.embed_batch_size,
        num_workers=int(cfg.trainer.num_workers),
        collate_fn=collate_masks,
    )
    device = resolve_device(cfg.evaluate.device)
    maps, masks, idx = embed_maps(
        encoder, loader, device=device, transform=build_normalize(normalize)
    )
    check_mask_values(masks, ds, idx, int(cfg.segmentation.ignore_index))
    return maps, masks, ds


def evaluate_segmentation(cfg: DictConfig, encoder: nn.Module, normalize: str) -> dict[str, Any]:
    """Dense linear probe on the frozen feature maps of ``encoder`` (``[B, 3, H, W]`` ->
    ``[B, C, h, w]``): fit on ``data.train_split``, scored on ``data.test_split``."""
    train_maps, train_masks, train_ds = _maps(cfg, encoder, normalize, cfg.data.train_split)
    test_maps, test_masks, _ = _maps(cfg, encoder, normalize, cfg.data.test_split)
    seg = cfg.segmentation
    with user_input("segmentation"):
        scores = dense_probe(
            train_maps,
            train_masks,
            test_maps,
            test_masks,
            len(train_ds.class_names),
            class_names=train_ds.class_names,
            epochs=int(seg.epochs),
            lr=float(seg.lr),
            weight_decay=float(seg.weight_decay),
            batch_size=int(seg.batch_size),
            ignore_index=int(seg.ignore_index),
            seed=int(cfg.seed),
            device=resolve_device(cfg.evaluate.device),
        )
    return {
        "task": "segmentation",
        **scores,
        "protocol": "dense-linear",
        "checkpoint": str(cfg.checkpoint),
        "data": cfg.data.name,
        "n_train": len(train_maps),
        "n_test": len(test_maps),
        "num_classes": len(train_ds.class_names),
        "feature_map": list(train_maps.shape[1:]),
        "mask_size": list(train_masks.shape[1:]),
    }
