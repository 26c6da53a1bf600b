"""Batched, device-side image augmenters that record their actions (the efference copy).

Every augmenter takes images ``[B, 3, H, W]`` (float in ``[0, 1]``, or uint8 which the
first op converts on the device) and returns ``(images, params)``; all randomness is drawn
from the global torch RNG on the images' device, one draw per example, with no Python
loop over examples (on the CPU a pipeline walks cache-sized chunks of the batch).

Geometry: :class:`RandomResizedCropFlip`. Each view records one 3x3 affine
matrix ``θ`` in normalised coordinates (``[-1, 1]``, ``align_corners=False``) that maps
**source coordinates to view coordinates**: the source point ``s`` appears in the view
at ``u = θ·s``. A horizontal flip negates the first row of ``θ``. The sampling matrix
that :func:`torch.nn.functional.affine_grid` needs is ``θ⁻¹`` (view pixel ``u`` samples the
source at ``θ⁻¹·u``; for it a flip negates only its entry ``[0, 0]``).

With this convention the core's relative action ``θ_rel = θ_b·θ_a⁻¹`` maps view-a
coordinates to view-b coordinates: it is the egocentric "where does what I see now go",
it satisfies ``θ_rel·θ_a == θ_b`` exactly, and warping view a by ``θ_rel``
(:func:`warp_affine`) reproduces view b wherever view b looks inside view a.

The crop lives in :mod:`stec_vision.augment_geometry`, the colour ops in
:mod:`stec_vision.augment_color`, pipelines and presets in
:mod:`stec_vision.augment_presets`; this module re-exports them all.
"""

from __future__ import annotations

from stec_vision.augment_color import (
    ColorJitter,
    GaussianBlur,
    RandomGrayscale,
    Solarize,
    rgb_to_grayscale,
)
from stec_vision.augment_geometry import (
    RandomResizedCropFlip,
    sampling_matrix,
    to_float_images,
    warp_affine,
)
from stec_vision.augment_presets import (
    NORMALIZATION,
    PRESETS,
    Normalize,
    TwoViewsAsymmetric,
    VisionCompose,
    build_normalize,
    build_two_views,
    build_vision_pipeline,
    preset_config,
)

__all__ = [
    "NORMALIZATION",
    "PRESETS",
    "ColorJitter",
    "GaussianBlur",
    "Normalize",
    "RandomGrayscale",
    "RandomResizedCropFlip",
    "Solarize",
    "TwoViewsAsymmetric",
    "VisionCompose",
    "build_normalize",
    "build_two_views",
    "build_vision_pipeline",
    "preset_config",
    "rgb_to_grayscale",
    "sampling_matrix",
    "to_float_images",
    "warp_affine",
]
