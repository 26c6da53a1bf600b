"""SimCLR (NT-Xent with negatives gathered over ranks), with a switchable efference copy."""

from __future__ import annotations

from torch import Tensor

from stec.actions import ActionTargets
from stec.losses import info_nce, info_nce_cross, positive_pair_accuracy
from stec.methods.base import ForwardPredictor, SSLMethod


class SimCLR(SSLMethod):
    """SimCLR. In ``forward``/``both`` mode (``forward_head=shared``) an action-conditioned
    predictor maps each view's projection to the other view, trained contrastively against
    the gathered candidates."""

    def __init__(
        self, backbone, feature_dim: int, *args, temperature: float = 0.1, **kwargs
    ) -> None:
        super().__init__(backbone, feature_dim, *args, **kwargs)
        self.temperature = self.forward_temperature = float(temperature)
        self.forward_predictor: ForwardPredictor | None = None
        if self.forward_on_projection:
            self.forward_predictor = ForwardPredictor(
                self.proj_dim, self.action_encoder.dim, self.proj_hidden, self.norm
            )

    def contrastive(
        self, z_a: Tensor, z_b: Tensor, candidates, offset: int
    ) -> tuple[Tensor, Tensor]:
        return info_nce(z_a, z_b, self.temperature, offset, candidates)

    def ssl_loss(
        self,
        view_a,
        view_b,
        z_a: Tensor,
        z_b: Tensor,
        actions: tuple[ActionTargets, ActionTargets] | None,
    ):
        candidates, offset = self.gathered(z_a, z_b)
        loss, logits = self.contrastive(z_a, z_b, candidates, offset)
        metrics = {"pos_acc": positive_pair_accuracy(logits.detach(), offset)}
        forward_loss = None
        if self.forward_predictor is not None:
            emb_ab, emb_ba = self.action_embeddings(actions)

            def predicted(emb_ab: Tensor, emb_ba: Tensor) -> Tensor:
                q_a = self.forward_predictor(z_a, emb_ab)
                q_b = self.forward_predictor(z_b, emb_ba)
                return 0.5 * (
                    info_nce_cross(q_a, candidates[1], self.temperature, offset)
                    + info_nce_cross(q_b, candidates[0], self.temperature, offset)
                )

            forward_loss = predicted(emb_ab, emb_ba)
            metrics["forward_told_gain"] = self.told_gain(predicted, emb_ab, emb_ba, forward_loss)
        return loss, forward_loss, metrics
