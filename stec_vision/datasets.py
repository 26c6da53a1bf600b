"""Vision datasets: uint8 images, no random augmentation (that runs batched on the device,
see :mod:`stec_vision.augment`).

Every dataset returns ``(image uint8, label int, index int)``; unlabeled examples have
label -1. By default an image is resized so that its shorter side is ``S`` and
centre-cropped to ``S x S``; ``resize=R`` resizes the shorter side to ``R`` first (the
evaluation protocol Resize 256 / CenterCrop 224), and ``canvas=C`` returns the whole image
as a packed ``C x C`` canvas with its original size (:mod:`stec_vision.canvas`), for crops
sampled over the whole image. Image files are decoded in the loader workers
(:mod:`stec_vision.image_files`, which also handles unreadable files).
"""

from __future__ import annotations

import bisect
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset
from torchvision.datasets import CIFAR10, CIFAR100, STL10

from stec.errors import generated_root
from stec_vision.canvas import pack_canvas
from stec_vision.demo import ensure_demo_images
from stec_vision.image_files import (
    SCAN_MODES,
    ImageFileDataset,
    Item,
    collate_skip_bad,
    load_canvas,
    load_image,
)

__all__ = [
    "DATASETS",
    "SCAN_MODES",
    "ArrayImageDataset",
    "ImageFileDataset",
    "JoinedDataset",
    "build_vision_dataset",
    "collate_skip_bad",
    "item_ids",
    "load_canvas",
    "load_image",
]

DATASETS = ("cifar10", "cifar100", "stl10", "imagefolder", "manifest", "demo")
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
    ".ppm",
    ".pgm",
    ".gif",
)


def _interpolate(image: Tensor, height: int, width: int) -> Tensor:
    out = F.interpolate(image[None].float(), size=(height, width), mode="bilinear", antialias=True)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def _resize_tensor(image: Tensor, size: int, resize: int | None = None) -> Tensor:
    """uint8 ``[3, H, W]`` -> ``[3, size, size]``: shorter side to ``resize`` (default
    ``size``), centre crop ``size``."""
    _, h, w = image.shape
    short = int(resize or size)
    if h == size and w == size and short == size:
        return image
    scale = short / min(h, w)
    nh, nw = max(short, round(h * scale)), max(short, round(w * scale))
    top, left = (nh - size) // 2, (nw - size) // 2
    return _interpolate(image, nh, nw)[:, top : top + size, left : left + size]


class ArrayImageDataset(Dataset):
    """In-memory uint8 images ``[N, 3, H, W]`` (CHW view of any array) with labels.

    ``resize`` and ``canvas`` work as for image files (see the module doc); an item's id
    (:meth:`item_id`) is its index in the array.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int],
        size: int,
        classes: Sequence[str],
        resize: int = 0,
        canvas: int = 0,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.size = images, np.asarray(labels, dtype=np.int64), int(size)
        self.classes = list(classes)
        self.resize, self.canvas = int(resize), int(canvas)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Item:
        image = torch.from_numpy(np.ascontiguousarray(self.images[index]))
        if self.canvas > 0:
            _, h, w = image.shape
            out = pack_canvas(_interpolate(image, self.canvas, self.canvas), h, w)
        else:
            out = _resize_tensor(image, self.size, self.resize or None)
        return out, int(self.labels[index]), int(index)

    def item_id(self, index: int) -> str:
        return str(index)


class JoinedDataset(ConcatDataset):
    """Splits joined with ``+`` (STL-10's ``train+unlabeled``). Items carry their index in
    the joined dataset; :meth:`item_id` is ``"<split>:<id in that split>"``."""

    def __init__(self, parts: Sequence[Dataset], splits: Sequence[str]) -> None:
        super().__init__(parts)
        self.splits = list(splits)
        self.classes = max((getattr(d, "classes", []) for d in parts), key=len)

    def _locate(self, index: int) -> tuple[int, int]:
        part = bisect.bisect_right(self.cumulative_sizes, index)
        return part, index - (self.cumulative_sizes[part - 1] if part else 0)

    def __getitem__(self, index: int) -> Item | None:
        item = super().__getitem__(index)
        return None if item is None else (item[0], item[1], int(index))

    def item_id(self, index: int) -> str:
        part, local = self._locate(index)
        return f"{self.splits[part]}:{self.datasets[part].item_id(local)}"


def item_ids(dataset: Dataset, indices: Sequence[int]) -> list[str]:
    """The ids of items ``indices`` of ``dataset``: file paths relative to the data root for
    image files, the index for in-memory arrays (CIFAR, STL-10)."""
    if not hasattr(dataset, "item_id"):
        return [str(int(i)) for i in indices]
    return [dataset.item_id(int(i)) for i in indices]


def _data_folder(root: str | Path, base_folder: str) -> Path:
    """Accept either the parent of ``base_folder`` or ``base_folder`` itself."""
    root = Path(root).expanduser()
    return root.parent if root.name == base_folder else root


def _require(folder: Path, names: Sequence[str], what: str) -> None:
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{what}: missing {', '.join(missing)} in {folder} (expected files: {', '.join(names)}; "
            "nothing is downloaded, place the extracted dataset there)"
        )


class _LocalCIFAR10(CIFAR10):
    """torchvision's CIFAR-10 reader, checking that files exist instead of their md5 (which
    would reject re-packed copies and costs a full read on every start)."""

    def _check_integrity(self) -> bool:
        names = [n for n, _ in self.train_list + self.test_list] + [self.meta["filename"]]
        what = "CIFAR-100" if "100" in self.base_folder else "CIFAR-10"
        _require(Path(self.root) / self.base_folder, names, what)
        return True

    def _load_meta(self) -> None:
        with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _LocalCIFAR100(_LocalCIFAR10, CIFAR100):
    pass


class _LocalSTL10(STL10):
    """torchvision's STL-10 reader, requiring only the files of the chosen split."""

    def _check_integrity(self) -> bool:
        needed = {
            "train": ["train_X.bin", "train_y.bin"],
            "test": ["test_X.bin", "test_y.bin"],
            "unlabeled": ["unlabeled_X.bin"],
            "train+unlabeled": ["train_X.bin", "train_y.bin", "unlabeled_X.bin"],
        }[self.split]
        _require(Path(self.root) / self.base_folder, needed, "STL10")
        return True


def cifar_dataset(
    root: str | Path, split: str, size: int = 32, num_classes: int = 10, **loading: int
) -> ArrayImageDataset:
    """CIFAR-10/100 from torchvision's ``cifar-10-batches-py`` / ``cifar-100-python`` folder."""
    if split not in ("train", "test"):
        raise ValueError(
            f"cifar{num_classes}: split={split!r} is not valid; allowed values: train, test"
        )
    cls = {10: _LocalCIFAR10, 100: _LocalCIFAR100}.get(num_classes)
    if cls is None:
        raise ValueError(f"num_classes={num_classes} is not valid; allowed values: 10, 100")
    ds = cls(str(_data_folder(root, cls.base_folder)), train=split == "train", download=False)
    return ArrayImageDataset(ds.data.transpose(0, 3, 1, 2), ds.targets, size, ds.classes, **loading)


def stl10_dataset(
    root: str | Path, split: str, size: int = 96, **loading: int
) -> ArrayImageDataset:
    """STL-10 from torchvision's ``stl10_binary`` folder; split: train | test | unlabeled |
    train+unlabeled (unlabeled images have label -1)."""
    if split not in STL10.splits:
        raise ValueError(
            f"stl10: split={split!r} is not valid; allowed values: {', '.join(STL10.splits)}"
        )
    ds = _LocalSTL10(str(_data_folder(root, STL10.base_folder)), split=split, download=False)
    classes = getattr(ds, "classes", [str(i) for i in range(10)])
    return ArrayImageDataset(ds.data, ds.labels, size, classes, **loading)


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, by extension), sorted."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def image_folder_dataset(
    root: str | Path, split: str | None, size: int, scan: str = "header", **loading: int
) -> ImageFileDataset:
    """ImageNet layout: ``root/<split>/<class>/*`` (or ``root/<class>/*`` with split None).

    Classes are the sorted sub-folder names; images are found recursively under each. Item
    ids are paths relative to ``root`` (``val/<class>/<file>``). ``loading``: ``resize``,
    ``canvas`` (see :class:`ImageFileDataset`).
    """
    base = Path(root).expanduser()
    folder = base / split if split else base
    layout = f"{split}/<class>/<image>" if split else "<class>/<image>"
    if not base.is_dir():
        raise FileNotFoundError(
            f"imagefolder: {base} does not exist; data.root is the folder that holds {layout}"
        )
    if not folder.is_dir():
        found = sorted(p.name for p in base.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"imagefolder: {folder} is not a folder (split={split!r}; found {found or 'no folders'}"
            f" in {base}); data.root is the folder that holds {layout}"
        )
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(
            f"imagefolder: {folder} has no class sub-folders (expected {folder}/<class>/<image>)"
        )
    samples = [(str(p), label) for label, c in enumerate(classes) for p in list_images(folder / c)]
    return ImageFileDataset(
        samples, size, classes, scan=scan, name=f"imagefolder {folder}", root=base, **loading
    )


def manifest_dataset(
    path: str | Path, split: str | None, size: int, scan: str = "header", **loading: int
) -> ImageFileDataset:
    """CSV manifest with a header ``path,label[,split]``.

    Relative paths are relative to the CSV's folder (and so are the item ids). Labels are ints or class names (names
    are mapped to indices in sorted order over the whole file, so splits agree); an empty
    label means unlabeled (-1). ``split`` selects rows by the ``split`` column; without that
    column only ``split=None`` or ``"all"`` is accepted.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"manifest: {path} not found (a CSV with columns path,label[,split])"
        )
    table = pd.read_csv(
        path, dtype={"path": str, "label": str, "split": str}, keep_default_na=False
    )
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise ValueError(
            f"manifest {path}: missing column(s) {missing}; found {list(table.columns)}, need path,label[,split]"
        )
    if split not in (None, "all"):
        if "split" not in table.columns:
            raise ValueError(
                f"manifest {path}: split={split!r} asked but the file has no 'split' column; use split='all'"
            )
        known = sorted(set(table["split"]))
        if split not in known:
            raise ValueError(
                f"manifest {path}: split={split!r} not found; allowed values: {', '.join(known)}"
            )
    labels = [s.strip() for s in table["label"]]
    named = [s for s in labels if s and not s.lstrip("-").isdigit()]
    if named:
        classes = sorted(set(named))
        bad_mix = [s for s in labels if s and s.lstrip("-").isdigit()]
        if bad_mix:
            raise ValueError(
                f"manifest {path}: labels mix class names and numbers (e.g. {bad_mix[0]!r})"
            )
        to_int = {c: i for i, c in enumerate(classes)}
        ids = [to_int[s] if s else -1 for s in labels]
    else:
        ids = [int(s) if s else -1 for s in labels]
        classes = [str(i) for i in range(max(ids, default=-1) + 1)]
    keep = [
        split in (None, "all") or row == split
        for row in (table["split"] if "split" in table.columns else [None] * len(table))
    ]
    samples = [
        (str(p if Path(p).is_absolute() else path.parent / p), label)
        for p, label, k in zip(table["path"], ids, keep, strict=True)
        if k
    ]
    return ImageFileDataset(
        samples,
        size,
        classes,
        scan=scan,
        name=f"manifest {path.name}[{split or 'all'}]",
        root=path.parent,
        **loading,
    )


def build_vision_dataset(
    name: str,
    root: str | Path | None,
    split: str | None,
    size: int,
    scan: str = "header",
    resize: int = 0,
    canvas: int = 0,
) -> Dataset:
    """A dataset by name: ``cifar10`` | ``cifar100`` | ``stl10`` | ``imagefolder`` |
    ``manifest`` | ``demo`` (``root`` for demo is the cache folder, None for the default).

    Items are ``(image uint8 [3, size, size], label, index)``; with ``resize > 0`` the
    shorter side is resized to ``resize`` before the centre crop, and with ``canvas > 0``
    the image is a packed whole-image canvas ``[3, canvas + 1, canvas]`` (see the module
    doc). Image-file datasets (imagefolder, manifest, demo) should be loaded with
    ``collate_fn=collate_skip_bad``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown vision dataset {name!r}; allowed values: {', '.join(DATASETS)}")
    if resize and resize < size:
        raise ValueError(f"resize={resize} must be 0 (off) or at least the image size {size}")
    if canvas < 0 or (canvas and resize):
        raise ValueError(
            f"canvas={canvas}, resize={resize}: canvas (whole images for training) and resize "
            "(evaluation crops) are exclusive; set one of them, or neither"
        )
    loading = {"resize": resize, "canvas": canvas}
    if name == "demo":
        if split not in ("train", "test"):
            raise ValueError(f"demo: split={split!r} is not valid; allowed values: train, test")
        # generated at the requested size, so no resizing happens when loading
        folder = ensure_demo_images(generated_root(root), size=size)
        return image_folder_dataset(folder, split, size, scan="none", **loading)
    if root is None:
        raise ValueError(f"{name}: a data root is required")
    if name in ("cifar10", "cifar100"):
        return cifar_dataset(root, split or "train", size, num_classes=int(name[5:]), **loading)
    if name == "stl10":
        return stl10_dataset(root, split or "train", size, **loading)
    if name == "imagefolder":
        return image_folder_dataset(root, split, size, scan=scan, **loading)
    return manifest_dataset(root, split, size, scan=scan, **loading)
