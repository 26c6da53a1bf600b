"""Image files: decoding in the loader workers, and the dataset that skips broken files.

Three ways to load a file (all give uint8 tensors; random augmentation runs later, batched
on the device):

- :func:`load_image` ``(path, size)``: shorter side to ``size``, centre crop ``size x size``;
- :func:`load_image` ``(path, size, resize=R)``: shorter side to ``R``, centre crop ``size``
  (the standard evaluation protocol, e.g. Resize 256 / CenterCrop 224 on ImageNet);
- :func:`load_canvas` ``(path, side)``: the whole image resized to ``side x side`` and
  packed with its original size (:mod:`stec_vision.canvas`), for crops sampled over the
  whole original image.

Unreadable files are handled in two places:

- at construction, a scan (``scan="header"``: Pillow must identify the file, the default;
  ``"full"``: it must decode; ``"none"``: no scan) drops them, names them in
  :attr:`ImageFileDataset.bad_files` and logs a summary;
- a file that still fails to decode when loaded makes ``__getitem__`` return None (with a
  warning naming it); :func:`collate_skip_bad` drops those items from the batch and
  :meth:`ImageFileDataset.summary` reports the count seen in this process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from stec_vision.canvas import pack_canvas

log = logging.getLogger(__name__)

SCAN_MODES = ("header", "full", "none")
# what a broken or non-image file raises inside Pillow
DECODE_ERRORS = (
    OSError,
    UnidentifiedImageError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)

Item = tuple[Tensor, int, int]


def _to_tensor(img: Image.Image) -> Tensor:
    pixels = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


def resize_and_crop(
    img: Image.Image,
    size: int,
    resize: int | None = None,
    resample: int = Image.Resampling.BILINEAR,
) -> Image.Image:
    """Shorter side to ``resize`` (default ``size``), then the centre ``size x size`` crop.

    The geometry depends only on the image's size, so an image and its mask (resampled
    with ``NEAREST``) stay aligned pixel for pixel.
    """
    short = int(resize or size)
    if short < size:
        raise ValueError(f"resize={short} must be at least the crop size {size}")
    w, h = img.size
    scale = short / min(w, h)
    nw, nh = max(short, round(w * scale)), max(short, round(h * scale))
    if (nw, nh) != (w, h):
        gap = 3.0 if resample != Image.Resampling.NEAREST else None
        img = img.resize((nw, nh), resample, reducing_gap=gap)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_image(
    path: str | Path, size: int, resize: int | None = None, draft: bool = True
) -> Tensor:
    """Decode an image file to uint8 ``[3, size, size]``: RGB, shorter side resized to
    ``resize`` (default ``size``), centre crop ``size``.

    ``draft`` lets a JPEG decoder downscale by 1/2..1/8 while decoding (much cheaper for
    big files); its rounding can shift the crop by a pixel, so images that must align with
    a mask are loaded without it.
    """
    short = int(resize or size)
    if short < size:
        raise ValueError(f"resize={short} must be at least the crop size {size}")
    with Image.open(path) as img:
        if draft:
            img.draft("RGB", (short, short))
        return _to_tensor(resize_and_crop(img.convert("RGB"), size, resize))


def load_canvas(path: str | Path, side: int) -> Tensor:
    """Decode an image file to a packed canvas uint8 ``[3, side + 1, side]``: the whole
    image resized to ``side x side`` (aspect ratio not kept) plus its original size."""
    with Image.open(path) as img:
        width, height = img.size  # before draft, which may shrink the decoded image
        img.draft("RGB", (side, side))
        img = img.convert("RGB")
        if img.size != (side, side):
            img = img.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return pack_canvas(_to_tensor(img), height, width)


class ImageFileDataset(Dataset):
    """Image files with labels; see the module doc for how unreadable files are skipped.

    Items are ``(image uint8, label, index)``: ``[3, size, size]``, or a packed canvas
    ``[3, canvas + 1, canvas]`` when ``canvas > 0``.

    Args:
        samples: ``(path, label)`` pairs.
        size: output side ``S``.
        classes: class names (index = label).
        scan: ``header`` | ``full`` | ``none``.
        workers: threads for the scan (file opening is I/O bound).
        root: folder that :meth:`item_id` gives paths relative to (None: paths as given).
        canvas: > 0 loads whole images as packed canvases of this side (:func:`load_canvas`).
        resize: > 0 resizes the shorter side to this before the centre crop ``S``.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        size: int,
        classes: Sequence[str],
        scan: str = "header",
        workers: int = 8,
        name: str = "images",
        root: str | Path | None = None,
        canvas: int = 0,
        resize: int = 0,
    ) -> None:
        if scan not in SCAN_MODES:
            raise ValueError(f"scan={scan!r} is not valid; allowed values: {', '.join(SCAN_MODES)}")
        self.size, self.classes, self.name = int(size), list(classes), name
        self.root = Path(root) if root is not None else None
        self.canvas, self.resize = int(canvas), int(resize)
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
            if self.canvas > 0:
                return load_canvas(path, self.canvas), label, int(index)
            return load_image(path, self.size, self.resize or None), label, int(index)
        except DECODE_ERRORS as err:
            self.runtime_bad.append(path)
            log.warning("%s: skipping unreadable image %s (%s)", self.name, path, err)
            return None

    def item_id(self, index: int) -> str:
        """The file of item ``index``: its path relative to ``root`` (POSIX form) when it
        lies under it, else the path as listed."""
        path = Path(self.samples[index][0])
        if self.root is not None and path.is_relative_to(self.root):
            return path.relative_to(self.root).as_posix()
        return str(path)

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
    except DECODE_ERRORS as err:
        return f"{type(err).__name__}: {err}"


def collate_skip_bad(batch: Sequence[Item | None]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack ``(image, label, index)`` items, dropping None (unreadable) ones.

    Returns ``(images [B', 3, H, W] uint8, labels [B'] int64, indices [B'] int64)`` with
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
