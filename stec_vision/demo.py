"""Procedurally drawn demo images in the ImageFolder layout (no download needed).

Eight shape classes (circle, square, triangle, star, cross, hexagon, ring, crescent) of
random colour, size, position and rotation on textured backgrounds (a two-colour gradient,
oriented stripes and noise). Each image is generated from its own seed
``(seed, split, class, index)``, so the set is identical on every machine and does not
depend on the generation order. Shapes are drawn 4x supersampled and downscaled, so edges
are antialiased.

Every image comes with its segmentation mask, since the generator draws the shape: a PNG
of class indices per pixel, ``0`` for the background and ``1 + k`` for shape
``DEMO_CLASSES[k]`` where the shape covers at least half of the pixel, at
``masks/<split>/<class>/<file>`` (the image's path under ``masks/``), with the class names
in ``masks/classes.txt`` (one a line, line ``i`` naming index ``i``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEMO_CLASSES = ("circle", "square", "triangle", "star", "cross", "hexagon", "ring", "crescent")
DEMO_CLASSES_WITH_BACKGROUND = ("background", *DEMO_CLASSES)
DEMO_VERSION = 2  # 2: masks added (the images are those of version 1)
_SUPERSAMPLE = 4


def default_cache_dir() -> Path:
    """``$STEC_CACHE`` if set, else ``~/.cache/stec``."""
    env = os.environ.get("STEC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stec"


def _polygon(
    n: int, radius: float, angle: float, cx: float, cy: float, inner: float | None = None
) -> list[tuple[float, float]]:
    """Regular polygon (or a star when ``inner`` is given) as a point list."""
    points = []
    steps = 2 * n if inner is not None else n
    for i in range(steps):
        r = radius if inner is None or i % 2 == 0 else radius * inner
        a = angle + 2 * math.pi * i / steps
        points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return points


def _shape_mask(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Antialiased coverage ``[size, size]`` float in [0, 1] of one random shape."""
    big = size * _SUPERSAMPLE
    radius = big * rng.uniform(0.22, 0.4)
    cx = big * 0.5 + rng.uniform(-1, 1) * (big * 0.5 - radius) * 0.7
    cy = big * 0.5 + rng.uniform(-1, 1) * (big * 0.5 - radius) * 0.7
    angle = rng.uniform(0, 2 * math.pi)
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if name == "circle":
        draw.ellipse(box, fill=255)
    elif name == "square":
        draw.polygon(_polygon(4, radius, angle, cx, cy), fill=255)
    elif name == "triangle":
        draw.polygon(_polygon(3, radius, angle, cx, cy), fill=255)
    elif name == "star":
        draw.polygon(_polygon(5, radius, angle, cx, cy, inner=0.42), fill=255)
    elif name == "hexagon":
        draw.polygon(_polygon(6, radius, angle, cx, cy), fill=255)
    elif name == "cross":
        arm = radius * 0.32
        for rot in (angle, angle + math.pi / 2):
            c, s = math.cos(rot), math.sin(rot)
            corners = [(-radius, -arm), (radius, -arm), (radius, arm), (-radius, arm)]
            draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners], fill=255)
    elif name == "ring":
        draw.ellipse(box, fill=255)
        inner = radius * 0.55
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif name == "crescent":
        draw.ellipse(box, fill=255)
        off = radius * 0.55
        ox, oy = cx + off * math.cos(angle), cy + off * math.sin(angle)
        draw.ellipse(
            (ox - radius * 0.85, oy - radius * 0.85, ox + radius * 0.85, oy + radius * 0.85), fill=0
        )
    else:
        raise ValueError(f"unknown demo shape {name!r}; allowed values: {', '.join(DEMO_CLASSES)}")
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Textured background ``[size, size, 3]`` float in [0, 1]."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    direction = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(direction) * xs + np.sin(direction) * ys + 1.0) / 2.0
    c1, c2 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    bg = c1 + (c2 - c1) * ramp[..., None]
    freq, orient = rng.uniform(2, 8), rng.uniform(0, math.pi)
    stripes = np.sin(
        2 * math.pi * freq * (np.cos(orient) * xs + np.sin(orient) * ys) + rng.uniform(0, 6.3)
    )
    bg = bg + rng.uniform(0.03, 0.12) * stripes[..., None]
    bg = bg + rng.normal(0, 0.03, (size, size, 3))
    return np.clip(bg, 0, 1)


def render_demo_image(class_index: int, seed_key: tuple[int, ...], size: int = 32) -> np.ndarray:
    """One demo image ``[size, size, 3]`` uint8 of shape ``DEMO_CLASSES[class_index]``."""
    return render_demo_sample(class_index, seed_key, size)[0]


def render_demo_sample(
    class_index: int, seed_key: tuple[int, ...], size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """One demo image ``[size, size, 3]`` uint8 and its mask ``[size, size]`` uint8: ``0``
    (background) or ``class_index + 1`` where the shape covers at least half of the pixel."""
    rng = np.random.default_rng(list(seed_key))
    bg = _background(size, rng)
    colour = rng.uniform(0, 1, 3)
    # keep the shape visible: push its colour away from the background's mean luminance
    luma = np.array([0.299, 0.587, 0.114])
    bg_luma = float(bg.mean(axis=(0, 1)) @ luma)
    if abs(float(colour @ luma) - bg_luma) < 0.25:
        colour = colour * 0.3 if bg_luma >= 0.5 else 0.7 + 0.3 * colour
    coverage = _shape_mask(DEMO_CLASSES[class_index], size, rng)
    alpha = coverage[..., None]
    image = bg * (1 - alpha) + colour * alpha
    mask = np.where(coverage >= 0.5, class_index + 1, 0).astype(np.uint8)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mask


def ensure_demo_images(
    cache_dir: str | Path | None = None,
    n_per_class: int = 200,
    size: int = 32,
    n_test_per_class: int = 50,
    seed: int = 0,
) -> Path:
    """Generate the demo set once and return its root (``train/<class>/*.png``, ``test/...``,
    and their masks under ``masks/``, see the module doc).

    The set lives in ``<cache_dir>/demo_images/v{version}_s{size}_n{n}_t{n_test}_seed{seed}``
    (``cache_dir`` defaults to ``$STEC_CACHE`` or ``~/.cache/stec``). It is written to a
    temporary folder and renamed into place, so concurrent callers never see half a set.
    """
    if n_per_class < 1 or n_test_per_class < 1 or size < 8:
        raise ValueError(
            f"demo images: need n_per_class >= 1, n_test_per_class >= 1 and size >= 8, got "
            f"{n_per_class}, {n_test_per_class}, {size}"
        )
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    parent = base / "demo_images"
    root = parent / f"v{DEMO_VERSION}_s{size}_n{n_per_class}_t{n_test_per_class}_seed{seed}"
    if (root / "demo.json").is_file():
        return root
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp_{uuid.uuid4().hex}"  # mkdir, not mkdtemp: the umask's permissions
    tmp.mkdir()
    try:
        for split_id, (split, count) in enumerate(
            (("train", n_per_class), ("test", n_test_per_class))
        ):
            for class_index, name in enumerate(DEMO_CLASSES):
                folder, mask_folder = tmp / split / name, tmp / "masks" / split / name
                folder.mkdir(parents=True)
                mask_folder.mkdir(parents=True)
                for i in range(count):
                    key = (seed, split_id, class_index, i)
                    pixels, mask = render_demo_sample(class_index, key, size)
                    Image.fromarray(pixels).save(folder / f"{name}_{i:05d}.png")
                    Image.fromarray(mask).save(mask_folder / f"{name}_{i:05d}.png")
        (tmp / "masks" / "classes.txt").write_text("\n".join(DEMO_CLASSES_WITH_BACKGROUND) + "\n")
        meta = {
            "version": DEMO_VERSION,
            "size": size,
            "classes": list(DEMO_CLASSES),
            "seed": seed,
            "train_per_class": n_per_class,
            "test_per_class": n_test_per_class,
            "masks": "masks",
        }
        (tmp / "demo.json").write_text(json.dumps(meta, indent=2))
        try:
            os.rename(tmp, root)
        except OSError:
            # another process finished first; its set is identical
            if not (root / "demo.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
