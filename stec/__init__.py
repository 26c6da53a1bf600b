"""stec: self-supervised learning through efference copies (S-TEC), modality-agnostic core."""

from stec.actions import (
    ActionComponent,
    ActionSpace,
    ActionTargets,
    Affine,
    Binary,
    Categorical,
    Continuous,
    ViewParams,
    relative_affine,
)
from stec.augment import Augmenter, Compose, TwoViews
from stec.efference import ActionEncoder, InverseModel
from stec.methods import BYOL, EFFERENCE_MODES, METHODS, ReLIC, SimCLR, SSLMethod, build_method

__version__ = "0.2.0"

__all__ = [
    "BYOL",
    "EFFERENCE_MODES",
    "METHODS",
    "ActionComponent",
    "ActionEncoder",
    "ActionSpace",
    "ActionTargets",
    "Affine",
    "Augmenter",
    "Binary",
    "Categorical",
    "Compose",
    "Continuous",
    "InverseModel",
    "ReLIC",
    "SSLMethod",
    "SimCLR",
    "TwoViews",
    "ViewParams",
    "build_method",
    "relative_affine",
]
