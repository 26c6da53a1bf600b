"""Efference-copy modules: the inverse model (predicts the action from two views) and the
action encoder (embeds the action for an action-conditioned forward predictor)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stec.actions import ActionSpace, ActionTargets
from stec.losses import action_loss, action_regression_loss, guess_accuracy

INVERSE_OUTPUTS = ("categorical", "regression")

#: how far above its majority rate a target must be read to count as read at all (the
#: running mean of a batch of 32 pairs wanders about a point around a target's true margin)
READ_MARGIN = 0.02


def mlp(
    in_dim: int, hidden: int, out_dim: int, norm: str = "batch", layers: int = 2
) -> nn.Sequential:
    """``layers`` linear layers with norm + ReLU between them (``norm``: batch|layer|none)."""
    if norm not in ("batch", "layer", "none"):
        raise ValueError(f"norm must be one of ('batch', 'layer', 'none'), got {norm!r}")
    blocks: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        blocks.append(nn.Linear(dim, hidden, bias=norm == "none"))
        if norm == "batch":
            blocks.append(nn.BatchNorm1d(hidden))
        elif norm == "layer":
            blocks.append(nn.LayerNorm(hidden))
        blocks.append(nn.ReLU(inplace=True))
        dim = hidden
    blocks.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*blocks)


class FrameCorrelation(nn.Module):
    """What two views' frame sequences hold that their pooled features lose: where their
    content sits relative to each other.

    Each frame ``[B, T, D]`` is projected to ``groups`` groups of ``proj // groups``
    channels, differenced over time (frame ``t + 1`` minus frame ``t``), centred and
    normalised per group; the output is, per group, the mean cosine similarity of view
    a's change at ``t`` and view b's at ``t + ℓ`` for every lag ``ℓ`` in
    ``[-max_lag, max_lag]`` (over the frames both views have; 0 where none):
    ``[B, groups * (2 max_lag + 1)]``, followed by each group's peak height and position
    (a soft argmax, as a share of ``max_lag``). A time shift between the views moves the
    peak of this profile, a time scale widens it; a pooled embedding cannot say either.

    Why differences: the changes from frame to frame are the fingerprint two overlapping
    views share, while a level ramp that differs between them (a fader) becomes a constant
    that the centring removes (docs/RESULTS.md measures both on the demo sound set).

    With ``standardise_peaks`` the peaks' heights and positions are standardised over the
    batch (a batch norm without affine parameters), as an offline reader standardises its
    inputs: on the demo sound set the heights share an offset of about 0.6, four times their
    spread, and the positions spread over a quarter of the lag range; standardised, the
    inverse model reads the time shift sooner (docs/RESULTS.md).
    """

    def __init__(
        self,
        in_dim: int,
        proj: int = 64,
        groups: int = 8,
        max_lag: int = 48,
        standardise_peaks: bool = False,
    ) -> None:
        super().__init__()
        if proj % groups or min(proj, groups, max_lag + 1) < 1:
            raise ValueError(
                f"FrameCorrelation: proj={proj} must be a positive multiple of groups={groups}, "
                f"max_lag={max_lag} >= 0"
            )
        self.proj = nn.Linear(in_dim, proj)
        self.groups, self.max_lag = groups, max_lag
        # the profile, then each group's peak: its height and where it is (a soft argmax)
        self.out_dim = groups * (2 * max_lag + 3)
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(10.0)))
        self.register_buffer("lags", torch.linspace(-1.0, 1.0, 2 * max_lag + 1), persistent=False)
        self.peak_norm = nn.BatchNorm1d(2 * groups, affine=False) if standardise_peaks else None
        self._lag_maps: dict[tuple[int, torch.device], Tensor] = {}

    def lag_map(self, t_a: int, t_b: int, device: torch.device) -> Tensor:
        """``[t_a * t_b, 2 max_lag + 1]``: averages similarity-matrix entries by lag."""
        key = (t_a * 100_003 + t_b, torch.device(device))
        if key not in self._lag_maps:  # built on the host once per shape: no sync per step
            lag = torch.arange(t_b)[None, :] - torch.arange(t_a)[:, None]  # [t_a, t_b]
            column = (lag + self.max_lag).flatten()
            inside = (lag.abs() <= self.max_lag).flatten()
            table = torch.zeros(t_a * t_b, 2 * self.max_lag + 1)
            table[inside.nonzero().squeeze(1), column[inside]] = 1.0
            table = table / table.sum(0).clamp_min(1.0)
            self._lag_maps[key] = table.to(device)
        return self._lag_maps[key]

    def forward(self, frames_a: Tensor, frames_b: Tensor) -> Tensor:
        """``[B, T_a, D]``, ``[B, T_b, D]`` -> ``[B, groups * (2 max_lag + 1)]``."""
        b = frames_a.shape[0]

        def grouped(frames: Tensor) -> Tensor:
            p = self.proj(frames)
            p = p[:, 1:] - p[:, :-1] if p.shape[1] > 1 else p
            p = p - p.mean(dim=1, keepdim=True)
            p = p.reshape(b, p.shape[1], self.groups, -1).transpose(1, 2)  # [B, G, T, P/G]
            return F.normalize(p, dim=-1)

        g_a, g_b = grouped(frames_a), grouped(frames_b)
        sim = g_a @ g_b.transpose(-1, -2)  # [B, G, T_a, T_b]
        lags = self.lag_map(sim.shape[-2], sim.shape[-1], sim.device).to(sim.dtype)
        profile = sim.flatten(2) @ lags  # [B, G, 2 max_lag + 1]
        weights = torch.softmax(profile * self.log_sharpness.exp(), dim=-1)
        where = (weights * self.lags.to(profile.dtype)).sum(-1)  # [B, G], lag / max_lag
        peaks = torch.cat([profile.amax(-1), where], dim=1)
        if self.peak_norm is not None:
            peaks = self.peak_norm(peaks)
        return torch.cat([profile.flatten(1), peaks], dim=1)


class InverseModel(nn.Module):
    """``q(action | h_a, h_b)``: an MLP over ``concat(h_a, h_b)``.

    With ``output="categorical"`` (the paper's form) it scores the bins of every target;
    with ``output="regression"`` it regresses each target scaled to ``[-1, 1]``. Components
    weigh in the loss by ``component_weights`` (1 each by default), whatever their number
    of targets (:meth:`~stec.actions.ActionSpace.target_weights`).

    With ``frame_dim > 0`` it also reads the two views' frame sequences (``[B, T, frame_dim]``,
    features that keep time) through a :class:`FrameCorrelation`, whose lag profile joins
    the MLP's input: a time shift or time scale between the views is then readable;
    ``standardise_peaks`` standardises that profile's peaks (:class:`FrameCorrelation`).

    With ``read_gate > 0`` each target's gradient into the encoder is scaled by how well it
    is read: ``clamp((margin - READ_MARGIN) / read_gate, 0, 1)``, ``margin`` a running mean
    of its accuracy above its majority rate (categorical) or of its R², the share of its
    variance read above guessing the batch's mean (regression; clipped at -1) (:meth:`gate`). A
    target nobody reads then trains only this model, not the encoder (whose features it
    would only push around), and one read ``READ_MARGIN + read_gate`` above its majority
    rate trains the encoder fully. The model itself always learns from every target, so a
    target can become read later.
    """

    #: how slowly the gate's running margin forgets (about 50 steps)
    GATE_MOMENTUM = 0.98

    def __init__(
        self,
        in_dim: int,
        action_space: ActionSpace,
        hidden: int = 512,
        output: str = "categorical",
        norm: str = "batch",
        component_weights: Mapping[str, float] | None = None,
        frame_dim: int = 0,
        standardise_peaks: bool = False,
        read_gate: float = 0.0,
    ) -> None:
        super().__init__()
        if output not in INVERSE_OUTPUTS:
            raise ValueError(
                f"inverse model output must be one of {INVERSE_OUTPUTS}, got {output!r}"
            )
        if not (read_gate >= 0 and math.isfinite(read_gate)):
            raise ValueError(f"read_gate={read_gate} must be a number >= 0 (0: no gate)")
        if action_space.n_targets == 0:
            raise ValueError("the inverse model needs an action space with at least one component")
        self.space, self.output = action_space, output
        n_t, n_c = action_space.n_targets, action_space.max_classes
        per_target = n_c if output == "categorical" else 1
        self.frame_reader = (
            FrameCorrelation(frame_dim, standardise_peaks=standardise_peaks) if frame_dim else None
        )
        extra = self.frame_reader.out_dim if self.frame_reader is not None else 0
        self.net = mlp(2 * in_dim + extra, hidden, n_t * per_target, norm=norm)
        class_mask = torch.zeros(n_t, n_c, dtype=torch.bool)
        for t, c in enumerate(action_space.target_classes):
            class_mask[t, :c] = True
        self.register_buffer("class_mask", class_mask, persistent=False)
        self.register_buffer(
            "target_weight", action_space.target_weights(component_weights), persistent=False
        )
        # how often each class of each target was seen in training: the majority-class
        # floor reported next to the accuracy (saved, so a resumed run keeps counting)
        self.register_buffer("seen_classes", torch.zeros(n_t, n_c))
        self.read_gate = float(read_gate)
        if self.read_gate:
            # per target: a running mean of accuracy - majority rate (or R²) from 0, so the
            # gate opens only after some 50 batches read a target (a few lucky batches of an
            # untrained model do not open it); saved, so a resumed run gates as it would have
            self.register_buffer("read_margin", torch.zeros(n_t))

    def gate(self) -> Tensor:
        """``[T]`` in ``[0, 1]``: the share of each target's gradient that reaches the
        encoder, ``clamp((margin - READ_MARGIN) / read_gate, 0, 1)`` (all ones without a
        gate); the margin's noise alone (about a point) does not open it. Rank 0's under
        DDP, which broadcasts buffers before each step."""
        if not self.read_gate:
            return torch.ones(self.space.n_targets, device=self.seen_classes.device)
        return ((self.read_margin - READ_MARGIN) / self.read_gate).clamp(0.0, 1.0)

    def gated(self, *inputs: Tensor) -> Tensor:
        """:meth:`forward` whose output carries to the encoder only :meth:`gate`'s share of
        each target's gradient, while this model's own parameters get all of it: the output
        mixes a pass on the inputs with a pass on their detached copies, target by target
        (same values, so the loss is unchanged). Without a gate, :meth:`forward`."""
        live = self(*inputs)
        if not self.read_gate:
            return live
        with running_statistics_kept(self):  # one step moves them once, as without a gate
            detached = self(*(x.detach() for x in inputs))
        g = self.gate().view(1, -1, *([1] * (live.dim() - 2)))  # [B, T, C] or [B, T]
        return g * live + (1.0 - g) * detached

    def forward(
        self,
        h_a: Tensor,
        h_b: Tensor,
        frames_a: Tensor | None = None,
        frames_b: Tensor | None = None,
    ) -> Tensor:
        """``[B, F]`` x2 (and, with ``frame_dim``, ``[B, T, frame_dim]`` x2) -> ``[B, T, C]``
        logits (categorical) or ``[B, T]`` (regression)."""
        inputs = [h_a, h_b]
        if self.frame_reader is not None:
            if frames_a is None or frames_b is None:
                raise ValueError(
                    "this inverse model reads frame sequences: pass frames_a, frames_b"
                )
            inputs.append(self.frame_reader(frames_a, frames_b))
        out = self.net(torch.cat(inputs, dim=1))
        if self.output == "categorical":
            return out.view(out.shape[0], self.space.n_targets, self.space.max_classes)
        return torch.tanh(out)

    def loss(self, prediction: Tensor, targets: ActionTargets) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted masked NLL (or MSE) and named metrics per component: accuracy, next
        to the accuracy of always guessing each target's most frequent class seen in
        training so far (or R²)."""
        if self.output == "categorical":
            loss, per_target = action_loss(
                prediction, targets.classes, targets.mask, self.class_mask, self.target_weight
            )
            # the guess is made before this batch is counted: a floor that has not seen it
            majority = guess_accuracy(
                targets.classes, targets.mask, self.seen_classes.argmax(dim=1)
            )
            if self.training:
                if self.read_gate:  # a floor that has counted no class is a blind guess
                    counted = self.seen_classes.sum(dim=1) > 0
                    self._follow_margin(per_target - majority, counted)
                with torch.no_grad():
                    self.seen_classes.scatter_add_(
                        1, targets.classes.T, targets.mask.T.to(self.seen_classes.dtype)
                    )
            metrics = per_component("action_acc", per_target, self.space)
            metrics.update(per_component("action_majority", majority, self.space))
            metrics.update(per_target_metrics("target_acc", per_target, self.space))
            metrics.update(per_target_metrics("target_majority", majority, self.space))
            return loss, {**metrics, **self._gate_metrics()}
        loss, r2 = action_regression_loss(
            prediction, targets.values, targets.mask, self.target_weight
        )
        if self.training and self.read_gate:
            # R² far below 0 (an untrained model's wild guesses) counts as -1, the worst a
            # categorical margin can be, so that it does not hold the gate shut for long
            self._follow_margin(r2.clamp(min=-1.0), torch.ones_like(r2, dtype=torch.bool))
        return loss, {**per_component("action_r2", r2, self.space), **self._gate_metrics()}

    def _gate_metrics(self) -> dict[str, Tensor]:
        if not self.read_gate:
            return {}
        gate = self.gate()
        return {
            **per_component("action_gate", gate, self.space),
            **per_target_metrics("target_gate", gate, self.space),
        }

    @torch.no_grad()
    def _follow_margin(self, margin: Tensor, counted: Tensor) -> None:
        """Fold one batch's ``[T]`` margin above the floor into the gate's running means, on
        the device; skipped for a target not defined in the batch (NaN) or not ``counted``
        (``[T]`` bool: its floor is known)."""
        counted = counted & ~torch.isnan(margin)
        m = self.GATE_MOMENTUM
        followed = m * self.read_margin + (1.0 - m) * torch.nan_to_num(margin)
        self.read_margin.copy_(torch.where(counted, followed, self.read_margin))


@contextlib.contextmanager
def running_statistics_kept(module: nn.Module) -> Iterator[None]:
    """In training, ``module``'s batch norms normalise by each batch's statistics without
    folding them into their running ones (nor counting the batch) inside the block."""
    norms = [
        m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        if module.training and m.track_running_stats
    ]  # fmt: skip
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


def per_component(prefix: str, per_target: Tensor, space: ActionSpace) -> dict[str, Tensor]:
    """``{"<prefix>/<component>": mean of its targets' values}`` (NaN-aware, on device)."""
    return {f"{prefix}/{name}": torch.nanmean(per_target[sl]) for name, sl in space.slices.items()}


def per_target_metrics(prefix: str, per_target: Tensor, space: ActionSpace) -> dict[str, Tensor]:
    """``{"<prefix>/<target label>": value}`` for the targets of components with several
    (a time shift and a pitch shift of one map are read very differently)."""
    return {
        f"{prefix}/{space.target_names[t]}": per_target[t]
        for sl in space.slices.values()
        if sl.stop - sl.start > 1
        for t in range(sl.start, sl.stop)
    }


class ActionEncoder(nn.Module):
    """Embeds a binned action: one learned vector per (target, class), summed, then an MLP.

    Targets masked out (the action is undefined for that pair) use a learned "unknown"
    vector instead, so the encoder never sees a faked value.
    """

    def __init__(self, action_space: ActionSpace, dim: int = 128) -> None:
        super().__init__()
        self.space = action_space
        offsets = [0]
        for c in action_space.target_classes:
            offsets.append(offsets[-1] + c + 1)  # +1: the "unknown" slot of each target
        self.register_buffer("offsets", torch.tensor(offsets[:-1]), persistent=False)
        self.register_buffer("unknown", torch.tensor(action_space.target_classes), persistent=False)
        self.table = nn.Embedding(max(offsets[-1], 1), dim)
        nn.init.normal_(self.table.weight, std=1.0 / math.sqrt(max(action_space.n_targets, 1)))
        self.net = nn.Sequential(nn.ReLU(), nn.Linear(dim, dim))
        self.dim = dim

    def forward(self, targets: ActionTargets) -> Tensor:
        """``ActionTargets`` with ``[B, T]`` fields -> ``[B, dim]``."""
        slot = torch.where(targets.mask, targets.classes, self.unknown.expand_as(targets.classes))
        return self.net(self.table(slot + self.offsets).sum(dim=1))
