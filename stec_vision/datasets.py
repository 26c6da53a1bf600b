"""Vision datasets: fixed-size uint8 images, no random augmentation (that runs batched on
the device, see :mod:`stec_vision.augment`).

Every dataset returns ``(image uint8 [3, S, S], label int, index int)``; unlabeled
examples have label -1. Image files are decoded with Pillow in the loader workers,
resized so the shorter side is ``S`` and centre-cropped to ``S x S``.

Unreadable image files are handled in two places:

- at construction, a scan (``scan="header"``: Pillow must identify the file, the default;
  ``"full"``: it must decode; ``"none"``: no scan) drops them, names them in
  :attr:`ImageFileDataset.bad_files` and logs a summary;
- a file that still fails to decode when loaded makes ``__getitem__`` return None (with a
  warning naming it); :func:`collate_skip_bad` drops those items from the batch and
  :meth:`ImageFileDataset.summary` reports the count seen in this process.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, CIFAR100, STL10

from stec_vision.demo import ensure_demo_images

log = logging.getLogger(__name__)

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
SCAN_MODES = ("header", "full", "none")
# what a broken or non-image file raises inside Pillow
_DECODE_ERRORS = (
    OSError,
    UnidentifiedImageError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)

Item = tuple[Tensor, int, int]


def _resize_tensor(image: Tensor, size: int) -> Tensor:
    """uint8 ``[3, H, W]`` -> ``[3, size, size]``: shorter side to ``size``, centre crop."""
    _, h, w = image.shape
    if h == size and w == size:
        return image
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    out = F.interpolate(
        image[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False
    )
    top, left = (nh - size) // 2, (nw - size) // 2
    out = out[0, :, top : top + size, left : left + size]
    return out.round_().clamp_(0, 255).to(torch.uint8)


def load_image(path: str | Path, size: int) -> Tensor:
    """Decode an image file to uint8 ``[3, size, size]`` (RGB, shorter side resized, centre crop)."""
    with Image.open(path) as img:
        # JPEG decoders can downscale by 1/2..1/8 while decoding: much cheaper for big files
        img.draft("RGB", (size, size))
        img = img.convert("RGB")
        w, h = img.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
        pixels = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


class ArrayImageDataset(Dataset):
    """In-memory uint8 images ``[N, 3, H, W]`` (CHW view of any array) with labels."""

    def __init__(
        self, images: np.ndarray, labels: Sequence[int], size: int, classes: Sequence[str]
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.size = images, np.asarray(labels, dtype=np.int64), int(size)
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Item:
        image = torch.from_numpy(np.ascontiguousarray(self.images[index]))
        return _resize_tensor(image, self.size), int(self.labels[index]), int(index)


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
    root: str | Path, split: str, size: int = 32, num_classes: int = 10
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
    return ArrayImageDataset(ds.data.transpose(0, 3, 1, 2), ds.targets, size, ds.classes)


def stl10_dataset(root: str | Path, split: str, size: int = 96) -> ArrayImageDataset:
    """STL-10 from torchvision's ``stl10_binary`` folder; split: train | test | unlabeled |
    train+unlabeled (unlabeled images have label -1)."""
    if split not in STL10.splits:
        raise ValueError(
            f"stl10: split={split!r} is not valid; allowed values: {', '.join(STL10.splits)}"
        )
    ds = _LocalSTL10(str(_data_folder(root, STL10.base_folder)), split=split, download=False)
    classes = getattr(ds, "classes", [str(i) for i in range(10)])
    return ArrayImageDataset(ds.data, ds.labels, size, classes)


class ImageFileDataset(Dataset):
    """Image files with labels; see the module doc for how unreadable files are skipped.

    Args:
        samples: ``(path, label)`` pairs.
        size: output side ``S``.
        classes: class names (index = label).
        scan: ``header`` | ``full`` | ``none``.
        workers: threads for the scan (file opening is I/O bound).
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        size: int,
        classes: Sequence[str],
        scan: str = "header",
        workers: int = 8,
        name: str = "images",
    ) -> None:
        if scan not in SCAN_MODES:
            raise ValueError(f"scan={scan!r} is not valid; allowed values: {', '.join(SCAN_MODES)}")
        self.size, self.classes, self.name = int(size), list(classes), name
        self.bad_files: list[tuple[str, str]] = []
        self.runtime_bad: list[str] = []
        samples = list(samples)
        if scan != "none" and samples:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                errors = list(pool.map(lambda s: _probe(s[0], scan == "full"), samples))
            self.bad_files = [
                (s[0], e) for s, e in zip(samples, errors, strict=True) if e is not None
            ]
            samples = [s for s, e in zip(samples, errors, strict=True) if e is None]
        self.samples = samples
        if self.bad_files:
            shown = "; ".join(f"{p} ({e})" for p, e in self.bad_files[:5])
            more = f" and {len(self.bad_files) - 5} more" if len(self.bad_files) > 5 else ""
            log.warning(
                "%s: skipped %d unreadable image(s): %s%s", name, len(self.bad_files), shown, more
            )
        if not self.samples:
            raise ValueError(f"{name}: no readable images found ({len(self.bad_files)} unreadable)")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Item | None:
        path, label = self.samples[index]
        try:
            return load_image(path, self.size), label, int(index)
        except _DECODE_ERRORS as err:
            self.runtime_bad.append(path)
            log.warning("%s: skipping unreadable image %s (%s)", self.name, path, err)
            return None

    def summary(self) -> str:
        """One line: how many images are used and how many were skipped (and which)."""
        skipped = [p for p, _ in self.bad_files] + self.runtime_bad
        text = f"{self.name}: {len(self.samples)} images, {len(self.classes)} classes, {len(skipped)} skipped"
        if skipped:
            text += " (" + ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "") + ")"
        return text


def _probe(path: str, full: bool) -> str | None:
    """None if Pillow can open (and with ``full``, decode) the file, else the reason."""
    try:
        with Image.open(path) as img:
            if full:
                img.load()
            elif img.size[0] < 1 or img.size[1] < 1:
                return "empty image"
        return None
    except _DECODE_ERRORS as err:
        return f"{type(err).__name__}: {err}"


def collate_skip_bad(batch: Sequence[Item | None]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack ``(image, label, index)`` items, dropping None (unreadable) ones.

    Returns ``(images [B', 3, S, S] uint8, labels [B'] int64, indices [B'] int64)`` with
    ``B' <= B``; ``B' = 0`` (empty tensors) if every item was unreadable.
    """
    good = [item for item in batch if item is not None]
    if not good:
        empty = torch.zeros(0, dtype=torch.long)
        return torch.zeros(0, 3, 0, 0, dtype=torch.uint8), empty, empty.clone()
    images = torch.stack([item[0] for item in good])
    labels = torch.tensor([item[1] for item in good], dtype=torch.long)
    indices = torch.tensor([item[2] for item in good], dtype=torch.long)
    return images, labels, indices


def _list_images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def image_folder_dataset(
    root: str | Path, split: str | None, size: int, scan: str = "header"
) -> ImageFileDataset:
    """ImageNet layout: ``root/<split>/<class>/*`` (or ``root/<class>/*`` with split None).

    Classes are the sorted sub-folder names; images are found recursively under each.
    """
    base = Path(root).expanduser()
    folder = base / split if split else base
    if not folder.is_dir():
        found = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        raise FileNotFoundError(
            f"imagefolder: {folder} is not a folder (split={split!r}; folders in {base}: {found or 'none'})"
        )
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(
            f"imagefolder: {folder} has no class sub-folders (expected {folder}/<class>/<image>)"
        )
    samples = [(str(p), label) for label, c in enumerate(classes) for p in _list_images(folder / c)]
    return ImageFileDataset(samples, size, classes, scan=scan, name=f"imagefolder {folder}")


def manifest_dataset(
    path: str | Path, split: str | None, size: int, scan: str = "header"
) -> ImageFileDataset:
    """CSV manifest with a header ``path,label[,split]``.

    Relative paths are relative to the CSV's folder. Labels are ints or class names (names
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
        samples, size, classes, scan=scan, name=f"manifest {path.name}[{split or 'all'}]"
    )


def build_vision_dataset(
    name: str, root: str | Path | None, split: str | None, size: int, scan: str = "header"
) -> Dataset:
    """A dataset by name: ``cifar10`` | ``cifar100`` | ``stl10`` | ``imagefolder`` |
    ``manifest`` | ``demo`` (``root`` for demo is the cache folder, None for the default).

    Items are ``(image uint8 [3, size, size], label, index)``. Image-file datasets
    (imagefolder, manifest, demo) should be loaded with ``collate_fn=collate_skip_bad``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown vision dataset {name!r}; allowed values: {', '.join(DATASETS)}")
    if name == "demo":
        if split not in ("train", "test"):
            raise ValueError(f"demo: split={split!r} is not valid; allowed values: train, test")
        # generated at the requested size, so no resizing happens when loading
        return image_folder_dataset(ensure_demo_images(root, size=size), split, size, scan="none")
    if root is None:
        raise ValueError(f"{name}: a data root is required")
    if name in ("cifar10", "cifar100"):
        return cifar_dataset(root, split or "train", size, num_classes=int(name[5:]))
    if name == "stl10":
        return stl10_dataset(root, split or "train", size)
    if name == "imagefolder":
        return image_folder_dataset(root, split, size, scan=scan)
    return manifest_dataset(root, split, size, scan=scan)
