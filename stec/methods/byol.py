"""BYOL with an EMA target network and a cosine momentum schedule."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stec.actions import ActionTargets
from stec.losses import byol_loss
from stec.methods.base import ForwardPredictor, SSLMethod


class BYOL(SSLMethod):
    """BYOL (Grill et al. 2020): the non-contrastive, positive-only "switching" term.

    In ``forward``/``both`` mode (``forward_head=shared``) the predictor sees
    ``[z_a, embed(action a→b)]``: it is told how view b was made from view a, which the
    plain BYOL predictor must guess.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        *args,
        momentum: float = 0.99,
        final_momentum: float = 1.0,
        pred_hidden: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(backbone, feature_dim, *args, **kwargs)
        if not 0.0 <= momentum <= 1.0 or not momentum <= final_momentum <= 1.0:
            raise ValueError(
                f"momentum={momentum}, final_momentum={final_momentum}: need 0 <= momentum <= final_momentum <= 1"
            )
        self.base_momentum, self.final_momentum = float(momentum), float(final_momentum)
        # a buffer, so that a resumed run continues the schedule exactly; the EMA update reads
        # its host copy, so that a step never waits to read the value back from the device
        self.register_buffer("momentum", torch.tensor(self.base_momentum, dtype=torch.float64))
        self._momentum = self.base_momentum
        action_dim = self.action_encoder.dim if self.forward_on_projection else 0
        self.predictor = ForwardPredictor(
            self.proj_dim, action_dim, pred_hidden or self.proj_hidden, self.norm
        )
        self.target_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def ssl_loss(
        self,
        view_a,
        view_b,
        z_a: Tensor,
        z_b: Tensor,
        actions: tuple[ActionTargets, ActionTargets] | None,
    ):
        emb_ab, emb_ba = self.action_embeddings(actions)
        p_a, p_b = self.predictor(z_a, emb_ab), self.predictor(z_b, emb_ba)
        with torch.no_grad():
            target = self.target_projector(
                self.invariant(self.target_backbone(torch.cat([view_a, view_b])))
            )
            t_a, t_b = target.chunk(2)
            sim = F.normalize(p_a, dim=1) @ F.normalize(t_b, dim=1).T
            pos_acc = (
                (sim.argmax(dim=1) == torch.arange(len(sim), device=sim.device)).float().mean()
            )
        loss = 0.5 * (byol_loss(p_a, t_b) + byol_loss(p_b, t_a))
        metrics = {"pos_acc": pos_acc, "momentum": self.momentum.detach().float()}
        if emb_ab is not None:  # the predictor is told the action: how much that helps it

            def predicted(emb_ab: Tensor, emb_ba: Tensor) -> Tensor:
                p_a, p_b = self.predictor(z_a, emb_ab), self.predictor(z_b, emb_ba)
                return 0.5 * (byol_loss(p_a, t_b) + byol_loss(p_b, t_a))

            metrics["forward_told_gain"] = self.told_gain(predicted, emb_ab, emb_ba, loss)
        return loss, None, metrics

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "momentum" in state_dict:  # once per load, never in a step
            self._momentum = float(state_dict[prefix + "momentum"])

    @torch.no_grad()
    def on_step_end(self, progress: float) -> None:
        """EMA update, then the cosine schedule from ``momentum`` to ``final_momentum``."""
        tau = self._momentum
        online = list(self.backbone.parameters()) + list(self.projector.parameters())
        target = list(self.target_backbone.parameters()) + list(self.target_projector.parameters())
        torch._foreach_lerp_(target, online, 1.0 - tau)
        for t_buf, o_buf in zip(
            list(self.target_backbone.buffers()) + list(self.target_projector.buffers()),
            list(self.backbone.buffers()) + list(self.projector.buffers()),
            strict=True,
        ):
            t_buf.copy_(o_buf)
        progress = min(max(progress, 0.0), 1.0)
        self._momentum = (
            self.final_momentum
            - (self.final_momentum - self.base_momentum)
            * (math.cos(math.pi * progress) + 1.0)
            / 2.0
        )
        self.momentum.fill_(self._momentum)
