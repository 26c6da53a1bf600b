"""Shared plumbing of the SSL methods: backbone, projector, efference-copy heads.

A method is an ``nn.Module`` whose ``forward(view_a, view_b, params_a, params_b)`` returns
``(loss, metrics, features)``: the total loss
``λ_switch · L_ssl + λ_manip · L_action`` (plus the forward-model term, see below), a dict
of detached scalar metrics, and the detached backbone features of view a (for an online
probe). Being a plain ``forward`` keeps the methods usable under DDP and ``torch.compile``.

``efference`` selects how the efference copy (the action record) is used:

- ``off``: plain SSL;
- ``inverse`` (the paper): an inverse model predicts the relative action from the two
  views' features, and its NLL is added with weight ``λ_manip``;
- ``forward``: the predictor is told the action. For BYOL its predictor sees
  ``[z_a, embed(action a→b)]``; for SimCLR/ReLIC an action-conditioned predictor maps
  ``z_a`` to the other view and a contrastive forward-model loss (weight ``λ_manip``) is
  added;
- ``both``: inverse and forward together.

``forward_head`` says what the forward model predicts. ``shared`` (the above): the SSL
projection, which the invariance loss pulls towards the other view's whatever the action
was. ``own`` (EquiMod, Devillers & Lefort 2023): a projector of its own on the backbone
features (their equivariant part when they are split), which no invariance loss sees; a
predictor maps view a's embedding and the action a→b to view b's, trained contrastively
against the other views' embeddings, so the embedding must change with the action the way
the predictor can follow. The method's own predictor is then plain.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from stec.actions import ActionSpace, ActionTargets, ViewParams
from stec.distributed import gather_with_grad
from stec.efference import ActionEncoder, InverseModel, mlp
from stec.losses import info_nce_cross

EFFERENCE_MODES = ("off", "inverse", "forward", "both")
INVERSE_INPUTS = ("backbone", "projector_hidden", "frames")
FORWARD_HEADS = ("shared", "own")

StepResult = tuple[Tensor, dict[str, Tensor], Tensor]


def choose(key: str, value: str, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if allowed, else raise a ValueError naming the key and the choices."""
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not valid; allowed values: {', '.join(allowed)}")
    return value


class SSLMethod(nn.Module, ABC):
    """Base class. Subclasses implement :meth:`ssl_loss` (and may add heads)."""

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        action_space: ActionSpace | None = None,
        efference: str = "inverse",
        lambda_switch: float = 1.0,
        lambda_manip: float = 1.0,
        proj_hidden: int = 2048,
        proj_dim: int = 128,
        norm: str = "batch",
        inverse_hidden: int = 512,
        inverse_output: str = "categorical",
        inverse_input: str = "backbone",
        action_embed_dim: int = 128,
        component_weights: Mapping[str, float] | None = None,
        equivariant_dims: int = 0,
        detach_frames: bool = False,
        standardise_peaks: bool = False,
        lambda_manip_warmup: float = 0.0,
        forward_head: str = "shared",
        read_gate: float = 0.0,
    ) -> None:
        super().__init__()
        self.efference = choose("efference", efference, EFFERENCE_MODES)
        self.forward_head = choose("forward_head", forward_head, FORWARD_HEADS)
        self.inverse_input = choose("inverse_input", inverse_input, INVERSE_INPUTS)
        if inverse_input == "frames" and not callable(
            getattr(backbone, "features_with_frames", None)
        ):
            raise ValueError(
                "inverse_input='frames' needs a backbone with features_with_frames(x) -> "
                "(h [B, D], frames [B, T, C]) and an attribute frame_dim = C; "
                f"{type(backbone).__name__} has none"
            )
        if int(equivariant_dims) != equivariant_dims or not 0 <= equivariant_dims < feature_dim:
            raise ValueError(
                f"equivariant_dims={equivariant_dims} must be an integer in [0, {feature_dim})"
            )
        if equivariant_dims and inverse_input == "projector_hidden":
            raise ValueError(
                "equivariant_dims splits the backbone features: the inverse model reads their "
                "equivariant part, so inverse_input must be backbone or frames"
            )
        for option, on in (
            ("detach_frames", detach_frames),
            ("standardise_peaks", standardise_peaks),
        ):
            if on and inverse_input != "frames":
                raise ValueError(
                    f"{option}=true changes how the inverse model reads the frame sequences; "
                    f"it needs inverse_input=frames, not {inverse_input!r}"
                )
        if not 0.0 <= lambda_manip_warmup <= 1.0:
            raise ValueError(
                f"lambda_manip_warmup={lambda_manip_warmup} must be in [0, 1]: the fraction of "
                "the run over which the efference copy's weight rises from 0 to lambda_manip"
            )
        if self.efference != "off" and (action_space is None or len(action_space) == 0):
            raise ValueError(
                f"efference={efference!r} needs an action space with at least one component; "
                "enable an augmenter that emits actions or set efference=off"
            )
        self.action_space = action_space if self.efference != "off" else None
        self.lambda_switch, self.lambda_manip = float(lambda_switch), float(lambda_manip)
        # the efference copy's losses may weigh in gradually, so that the encoder's first
        # steps follow the SSL loss alone; a buffer the trainer fills before each step
        # (set_progress), so the weight changes without a host sync or a recompile, and a
        # resume sets it from the step it resumes at
        self.lambda_manip_warmup = float(lambda_manip_warmup)
        self.register_buffer("manip_ramp", torch.ones(()), persistent=False)
        self.backbone, self.feature_dim = backbone, feature_dim
        # the SSL loss sees the first feature_dim - equivariant_dims features only; the rest
        # are the inverse model's own room, which no invariance term pulls on
        self.equivariant_dims = int(equivariant_dims) if self.efference != "off" else 0
        self.invariant_dims = feature_dim - self.equivariant_dims
        # the frame reader may read the frames without training the encoder through them:
        # the time shift is read as well from a random first block as from a trained one,
        # so that gradient may only compete with the SSL loss (on the demo it changed
        # nothing resolved, docs/RESULTS.md)
        self.detach_frames = bool(detach_frames)
        self.projector = mlp(self.invariant_dims, proj_hidden, proj_dim, norm=norm)
        self.proj_dim, self.proj_hidden, self.norm = proj_dim, proj_hidden, norm
        self.inverse: InverseModel | None = None
        self.action_encoder: ActionEncoder | None = None
        if self.uses_inverse:
            in_dim = proj_hidden if inverse_input == "projector_hidden" else self.inverse_dims
            self.inverse = InverseModel(
                in_dim,
                action_space,
                inverse_hidden,
                inverse_output,
                norm,
                component_weights,
                frame_dim=int(backbone.frame_dim) if inverse_input == "frames" else 0,
                standardise_peaks=bool(standardise_peaks),
                read_gate=float(read_gate),
            )
        # the temperature of the own head's contrastive loss (SimCLR and ReLIC set theirs)
        self.forward_temperature = 0.1
        self.own_projector: nn.Module | None = None
        self.own_predictor: ForwardPredictor | None = None
        if self.uses_forward:
            self.action_encoder = ActionEncoder(action_space, action_embed_dim)
            if self.forward_head == "own":
                self.own_projector = mlp(self.inverse_dims, proj_hidden, proj_dim, norm=norm)
                self.own_predictor = ForwardPredictor(
                    proj_dim, self.action_encoder.dim, proj_hidden, norm
                )

    @property
    def uses_inverse(self) -> bool:
        return self.efference in ("inverse", "both")

    @property
    def uses_forward(self) -> bool:
        return self.efference in ("forward", "both")

    @property
    def forward_on_projection(self) -> bool:
        """Whether the method's own predictor is told the action (``forward_head=shared``)."""
        return self.uses_forward and self.forward_head == "shared"

    @property
    def inverse_dims(self) -> int:
        """How many backbone features the inverse model reads: the equivariant part when
        the features are split, else all."""
        return self.equivariant_dims or self.feature_dim

    @property
    def reads_frames(self) -> bool:
        return self.inverse is not None and self.inverse_input == "frames"

    def invariant(self, h: Tensor) -> Tensor:
        """The part of the features the SSL loss sees: ``[..., D] -> [..., D - equivariant]``."""
        return h[..., : self.invariant_dims] if self.equivariant_dims else h

    def equivariant(self, h: Tensor) -> Tensor:
        """The part the inverse model reads: ``[..., D] -> [..., equivariant or D]``."""
        return h[..., self.invariant_dims :] if self.equivariant_dims else h

    def embed(self, views: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """``views -> (h, projector hidden, z, frames)``; ``frames`` (``[N, T, C]``, a
        sequence of the backbone's features that keeps time, see
        ``features_with_frames``) only when the inverse model reads them."""
        frames = None
        if self.reads_frames:
            h, frames = self.backbone.features_with_frames(views)
            if self.detach_frames:
                frames = frames.detach()
        else:
            h = self.backbone(views)
        hidden = self.projector[:-1](self.invariant(h))
        return h, hidden, self.projector[-1](hidden), frames

    def forward(
        self, view_a: Tensor, view_b: Tensor, params_a: ViewParams, params_b: ViewParams
    ) -> StepResult:
        b = view_a.shape[0]
        h, hidden, z, frames = self.embed(torch.cat([view_a, view_b]))
        h_a, h_b = h[:b], h[b:]
        z_a, z_b = z[:b], z[b:]
        actions: tuple[ActionTargets, ActionTargets | None] | None = None
        if self.efference != "off":
            # the b -> a targets only feed the forward predictor of view b
            backward = self.action_space.targets(params_b, params_a) if self.uses_forward else None
            actions = (self.action_space.targets(params_a, params_b), backward)
        ssl, forward_loss, metrics = self.ssl_loss(view_a, view_b, z_a, z_b, actions)
        loss = self.lambda_switch * ssl
        metrics["ssl_loss"] = ssl.detach()
        manip = (
            self.lambda_manip * self.manip_ramp if self.lambda_manip_warmup else self.lambda_manip
        )
        if self.own_projector is not None:
            forward_loss, metrics["forward_told_gain"] = self.own_forward_loss(
                self.equivariant(h), actions, b
            )
        if forward_loss is not None:
            loss = loss + manip * forward_loss
            metrics["forward_loss"] = forward_loss.detach()
        if self.inverse is not None:
            if self.inverse_input == "projector_hidden":
                read = (hidden[:b], hidden[b:])
            else:
                read = (self.equivariant(h_a), self.equivariant(h_b))
            if frames is not None:
                read = (*read, frames[:b], frames[b:])
            act_loss, act_metrics = self.inverse.loss(self.inverse.gated(*read), actions[0])
            loss = loss + manip * act_loss
            metrics["action_loss"] = act_loss.detach()
            metrics.update({k: v.detach() for k, v in act_metrics.items()})
        metrics["loss"] = loss.detach()
        return loss, metrics, h_a.detach()

    @abstractmethod
    def ssl_loss(
        self,
        view_a: Tensor,
        view_b: Tensor,
        z_a: Tensor,
        z_b: Tensor,
        actions: tuple[ActionTargets, ActionTargets] | None,
    ) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        """``(SSL loss, forward-model loss or None, metrics)`` for projections ``[B, D]``."""

    def action_embeddings(
        self, actions: tuple[ActionTargets, ActionTargets] | None
    ) -> tuple[Tensor | None, Tensor | None]:
        """Embeddings of the actions a→b and b→a for the method's predictor (None unless
        the forward model predicts the SSL projection, ``forward_head=shared``)."""
        if not self.forward_on_projection:
            return None, None
        return self.action_encoder(actions[0]), self.action_encoder(actions[1])

    def own_forward_loss(
        self, h: Tensor, actions: tuple[ActionTargets, ActionTargets], b: int
    ) -> tuple[Tensor, Tensor]:
        """The own head's forward-model loss and its :meth:`told_gain`: ``h`` ``[2B, D]``
        (views a, then b) is embedded by the own projector, each view's embedding and the
        action to the other view predict the other's embedding, and InfoNCE picks it among
        every view's of the other side (gathered over ranks). Returns two scalars."""
        u = self.own_projector(h)
        (cand_a, cand_b), offset = self.gathered(u[:b], u[b:])

        def predicted(emb_ab: Tensor, emb_ba: Tensor) -> Tensor:
            q_a, q_b = self.own_predictor(u[:b], emb_ab), self.own_predictor(u[b:], emb_ba)
            return 0.5 * (
                info_nce_cross(q_a, cand_b, self.forward_temperature, offset)
                + info_nce_cross(q_b, cand_a, self.forward_temperature, offset)
            )

        emb_ab, emb_ba = self.action_encoder(actions[0]), self.action_encoder(actions[1])
        loss = predicted(emb_ab, emb_ba)
        return loss, self.told_gain(predicted, emb_ab, emb_ba, loss)

    @staticmethod
    def told_gain(
        predicted: Callable[[Tensor, Tensor], Tensor], emb_ab: Tensor, emb_ba: Tensor, loss: Tensor
    ) -> Tensor:
        """How much lower the forward model's loss ``loss`` (``predicted(emb_ab, emb_ba)``,
        action embeddings ``[B, E]``) is than when each pair is told the next pair's action:
        about 0 while the predictor ignores the action, the forward model's counterpart of
        the inverse model's accuracy above its majority rate. A detached scalar, in nats;
        computed on the device, so logging it never waits for the host."""
        with torch.no_grad():
            return predicted(emb_ab.roll(1, 0), emb_ba.roll(1, 0)) - loss.detach()

    def on_step_end(self, progress: float) -> None:
        """Called by the trainer after each optimiser step; ``progress`` in ``[0, 1]``."""

    def set_progress(self, progress: float) -> None:
        """Called by the trainer before each step with the fraction of the run done
        (``step / total steps``): sets the efference copy's weight on its warm-up,
        ``λ_manip · min(1, progress / lambda_manip_warmup)``. A training loop of one's own
        calls it too; until it is called the whole weight applies."""
        if self.lambda_manip_warmup:
            self.manip_ramp.fill_(min(1.0, progress / self.lambda_manip_warmup))

    @staticmethod
    def gathered(z_a: Tensor, z_b: Tensor) -> tuple[tuple[Tensor, Tensor], int]:
        """Candidates from every rank (with gradients) and the local offset among them."""
        (all_a, offset), (all_b, _) = gather_with_grad(z_a), gather_with_grad(z_b)
        return (all_a, all_b), offset


class ForwardPredictor(nn.Module):
    """``P(z, embed(action))``: predicts the other view's projection from this view's
    projection and the efference copy of the action that leads to it."""

    def __init__(self, proj_dim: int, action_dim: int, hidden: int, norm: str = "batch") -> None:
        super().__init__()
        self.net = mlp(proj_dim + action_dim, hidden, proj_dim, norm=norm)

    def forward(self, z: Tensor, action_embedding: Tensor | None) -> Tensor:
        if action_embedding is not None:
            z = torch.cat([z, action_embedding], dim=1)
        return self.net(z)
