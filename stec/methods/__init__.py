"""SSL objectives, each with the efference copy switchable."""

from stec.methods.base import EFFERENCE_MODES, INVERSE_INPUTS, SSLMethod, choose
from stec.methods.byol import BYOL
from stec.methods.relic import ReLIC
from stec.methods.simclr import SimCLR

METHODS = {"simclr": SimCLR, "byol": BYOL, "relic": ReLIC}


def build_method(name: str, backbone, feature_dim: int, **kwargs) -> SSLMethod:
    """Build a method by name (``simclr``, ``byol`` or ``relic``)."""
    return METHODS[choose("method", name, tuple(METHODS))](backbone, feature_dim, **kwargs)


__all__ = [
    "BYOL",
    "EFFERENCE_MODES",
    "INVERSE_INPUTS",
    "METHODS",
    "ReLIC",
    "SSLMethod",
    "SimCLR",
    "build_method",
]
