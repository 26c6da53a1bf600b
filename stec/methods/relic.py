"""ReLIC: InfoNCE plus a KL invariance term, with a switchable efference copy."""

from __future__ import annotations

from torch import Tensor

from stec.losses import relic_loss
from stec.methods.simclr import SimCLR


class ReLIC(SimCLR):
    """ReLIC (Mitrovic et al. 2021). ``alpha`` weighs the invariance (KL) term."""

    def __init__(self, backbone, feature_dim: int, *args, alpha: float = 1.0, **kwargs) -> None:
        super().__init__(backbone, feature_dim, *args, **kwargs)
        self.alpha = float(alpha)

    def contrastive(
        self, z_a: Tensor, z_b: Tensor, candidates, offset: int
    ) -> tuple[Tensor, Tensor]:
        return relic_loss(z_a, z_b, self.temperature, self.alpha, offset, candidates)
