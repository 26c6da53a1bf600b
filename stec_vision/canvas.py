"""Whole-image canvases: how a training batch carries each image's original size.

torchvision's ``RandomResizedCrop`` samples its box on the *original* image (area as a
share of ``H·W``, aspect ratio in original pixels). To run that crop batched on the device,
a loader ships every image whole, resized (anisotropically) to a fixed ``C x C`` canvas,
together with its original ``(H, W)``; :class:`~stec_vision.augment_geometry.RandomResizedCropFlip`
with ``canvas=True`` samples the box in original-pixel units and cuts it from the canvas,
which is torchvision's crop of the original image at the canvas's resolution.

The size travels inside the image tensor, so that a batch stays one tensor through the
loader, pinned memory, ``.to(device)`` and the CPU chunking of the pipelines: a packed
canvas is uint8 ``[3, C + 1, C]``, the image in rows ``0..C-1`` and, in the extra row of
channel 0, the bytes ``H // 256, H % 256, W // 256, W % 256`` (sizes up to 65535 px).
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_SIDE = 65535


def pack_canvas(image: Tensor, height: int, width: int) -> Tensor:
    """uint8 ``[3, C, C]`` canvas of an image of original size ``height x width`` ->
    packed uint8 ``[3, C + 1, C]``."""
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(
            f"pack_canvas: expected uint8 [3, C, C], got {image.dtype} {tuple(image.shape)}"
        )
    side = image.shape[1]
    if image.shape[2] != side or side < 4:
        raise ValueError(
            f"pack_canvas: the canvas must be square and at least 4 px, got {tuple(image.shape)}"
        )
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise ValueError(f"pack_canvas: image size {height}x{width} outside 1..{MAX_SIDE}")
    row = torch.zeros(3, 1, side, dtype=torch.uint8)
    row[0, 0, :4] = torch.tensor([height >> 8, height & 255, width >> 8, width & 255])
    return torch.cat([image, row], dim=1)


def unpack_canvas(x: Tensor) -> tuple[Tensor, Tensor]:
    """Packed canvases ``[B, 3, C + 1, C]`` -> ``(images [B, 3, C, C], sizes [B, 2])``.

    ``sizes`` holds the original ``(height, width)`` as float32 on ``x``'s device (read
    without a host synchronisation).
    """
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3] + 1:
        raise ValueError(
            "expected packed canvases uint8 [B, 3, C + 1, C] (a loader with data.canvas set), "
            f"got shape {tuple(x.shape)}"
        )
    if x.dtype != torch.uint8:
        raise ValueError(f"expected packed canvases of dtype uint8, got {x.dtype}")
    side = x.shape[3]
    code = x[:, 0, side, :4].to(torch.float32)
    sizes = torch.stack([code[:, 0] * 256 + code[:, 1], code[:, 2] * 256 + code[:, 3]], dim=1)
    return x[:, :, :side], sizes
