"""Level augmenters: BYOL-A's mixup with a memory bank, and the random linear fader."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from stec.actions import ActionComponent, Continuous, ViewParams
from stec.augment import Augmenter
from stec_audio.augment.ops import check_range, check_spectrogram, keep_where, uniform

MIX_SOURCES = ("bank", "batch")
MIX_DOMAINS = ("normalised", "power")
MIX_STAGES = ("view", "clip")

# A level change of g dB multiplies the power by 10^(g/10), so it adds g * ln(10) / 10 to a
# natural-log power mel spectrogram (the front end's log(mel + eps) with power=2).
NATS_PER_DB = math.log(10.0) / 10.0


class Mixup(Augmenter):
    """BYOL-A mixup: add a background clip in the (exp) power domain.

    ``out = log((1 - α) exp(x) + α exp(z))`` with ``α ~ U(ratio)`` per example, computed
    as a ``logaddexp`` so that ``α = 0`` returns ``x`` exactly.

    ``domain="normalised"`` (the default, as in BYOL-A) mixes in the exp of the normalised
    log-mels, i.e. the power raised to ``1 / std``: a compressed scale on which a quiet
    clip keeps its content under a loud background. ``domain="power"`` mixes the true mel
    power, ``exp(x * norm_std)`` (``norm_std``, the dataset std of the log-mels, is then
    required); there a background 15 dB louder buries the clip even at ``α = 0.1``. On the
    demo data the normalised domain gave the better encoders (docs/RESULTS.md).

    ``source="bank"``: ``z`` is drawn from a FIFO memory bank of ``n_memory`` past inputs
    (a ring buffer registered as module buffers, so it is saved in checkpoints; the bank
    takes the shape of the first batch and is reset if the input shape changes). Inputs are
    pushed after mixing, so a clip never mixes with itself; while the bank is empty the
    other clips of the batch are used. ``source="batch"``: ``z`` is another clip of the
    batch (a random cyclic permutation).

    ``stage="view"`` (BYOL-A): each view gets a background of its own, mixed in after the
    geometric maps, so the two views of a clip differ in what lies behind it.
    ``stage="clip"``: the pipeline builder puts mixup first, and the two views of a clip
    share one background clip, mixed into the whole clip before the views are cut (each
    view with its own ratio ``α``): the background then goes through each view's map with
    the clip, so the relative map stays exact for everything in the view, and the views'
    alignment, which a different background in each view blurs, is kept. The bank then
    holds whole clips.

    Two views of a batch are two calls. Inside :meth:`one_step` (the Trainer enters it
    around the augmenter) the calls form one step: every view draws from the bank as it
    was before the step, and only the first view's inputs are pushed, once, when the step
    ends; so each clip enters the bank once per step and no view can draw the other view
    of its own clip; with ``stage="clip"`` the second view takes the first view's
    backgrounds. Outside it every call is a step of its own.

    The bank's fill level and write position are kept on the host as well as in the
    buffers (which the checkpoint holds), so a call never reads a value back from the
    device.

    Recorded parameter (``[B, 1]``): ``α``; the relative action ``α_b - α_a`` is a
    ``Continuous(relation="difference")`` over ``±max(ratio)``. Untouched views record 0.
    """

    def __init__(
        self,
        ratio: tuple[float, float] = (0.0, 0.4),
        p: float = 1.0,
        source: str = "bank",
        n_memory: int = 2048,
        norm_std: float | None = None,
        domain: str = "normalised",
        stage: str = "view",
        n_bins: int = 6,
        name: str = "mixup",
    ) -> None:
        super().__init__(p)
        who = type(self).__name__
        lo, hi = check_range(who, "ratio", ratio, low=0.0)
        if hi >= 1.0 or hi <= 0.0:
            raise ValueError(f"{who}: ratio=({lo}, {hi}) needs 0 < max < 1")
        if source not in MIX_SOURCES:
            raise ValueError(f"{who}: source must be one of {MIX_SOURCES}, got {source!r}")
        if int(n_memory) != n_memory or n_memory < 1:
            raise ValueError(f"{who}: n_memory must be a positive integer, got {n_memory}")
        if norm_std is not None and not norm_std > 0:
            raise ValueError(f"{who}: norm_std must be positive, got {norm_std}")
        if domain not in MIX_DOMAINS:
            raise ValueError(f"{who}: domain must be one of {MIX_DOMAINS}, got {domain!r}")
        if domain == "power" and norm_std is None:
            raise ValueError(f"{who}: domain='power' needs norm_std (the dataset log-mel std)")
        if stage not in MIX_STAGES:
            raise ValueError(f"{who}: stage must be one of {MIX_STAGES}, got {stage!r}")
        self.ratio, self.source, self.n_memory = (lo, hi), source, int(n_memory)
        self.domain, self.stage = domain, stage
        # the scale of the mixing domain, in natural-log power units per input unit
        self.scale = float(norm_std) if domain == "power" else 1.0
        self.component = Continuous(name, -hi, hi, n_bins=n_bins, relation="difference")
        self.register_buffer("bank", torch.zeros(0))
        self.register_buffer("bank_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("bank_pos", torch.zeros((), dtype=torch.long))
        self._count, self._pos = 0, 0  # host copies of bank_count and bank_pos
        self._in_step, self._pending, self._step_partners = False, None, None

    def components(self) -> list[ActionComponent]:
        return [self.component]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # the bank's shape is only known once data flows: adopt the checkpoint's shape
        saved = state_dict.get(prefix + "bank")
        if saved is not None and saved.shape != self.bank.shape:
            self.bank = torch.zeros_like(saved, device=self.bank.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # the host copies, read once per load (from a checkpoint's CPU tensors), never in a step
        if prefix + "bank_count" in state_dict and prefix + "bank_pos" in state_dict:
            self._count = int(state_dict[prefix + "bank_count"])
            self._pos = int(state_dict[prefix + "bank_pos"])

    @contextmanager
    def one_step(self) -> Iterator[None]:
        """The calls inside make one training step (the two views of a batch): they draw
        from the bank as it was before, and the first call's inputs are pushed at the end."""
        if self._in_step:  # already inside a step (the trainer's and the TwoViews' scopes)
            yield
            return
        self._in_step, self._pending, self._step_partners = True, None, None
        try:
            yield
            if self._pending is not None:
                self._push(self._pending)
        finally:
            self._in_step, self._pending, self._step_partners = False, None, None

    def _partners(self, x: Tensor) -> Tensor:
        """``[B, C, F, T]`` background clips for ``x`` (with ``stage="clip"``, inside a step,
        the first call's for every call)."""
        shared = self.stage == "clip" and self._in_step
        kept = self._step_partners
        if shared and kept is not None and kept.shape == x.shape:
            return kept
        z = self._draw_partners(x)
        if shared:
            self._step_partners = z
        return z

    def _draw_partners(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        if (
            self.source == "bank"
            and self.bank.dim() == x.dim()
            and self.bank.shape[1:] == x.shape[1:]
        ):
            if self.bank.device != x.device:
                self.bank = self.bank.to(x.device)
            count = self._count
            if count > 0:
                index = (torch.rand(b, device=x.device) * count).long().clamp_(max=count - 1)
                return self.bank.index_select(0, index).to(x.dtype)
        perm = torch.randperm(b, device=x.device)
        partner = torch.empty_like(perm)
        partner[perm] = perm.roll(-1)
        return x[partner]

    @torch.no_grad()
    def _push(self, x: Tensor) -> None:
        """Write ``x`` into the ring buffer (the newest ``n_memory`` clips are kept)."""
        if self.bank.dim() != x.dim() or self.bank.shape[1:] != x.shape[1:]:
            self.bank = torch.zeros(self.n_memory, *x.shape[1:], device=x.device)
            self._count, self._pos = 0, 0
        x = x.detach()[-self.n_memory :]
        n = x.shape[0]
        index = (self._pos + torch.arange(n, device=self.bank.device)) % self.n_memory
        self.bank.index_copy_(0, index, x.to(self.bank.device, self.bank.dtype))
        self._pos = (self._pos + n) % self.n_memory
        self._count = min(self._count + n, self.n_memory)
        self.bank_pos.fill_(self._pos)
        self.bank_count.fill_(self._count)

    def forward(self, x: Tensor) -> tuple[Tensor, ViewParams]:
        """``[B, C, F, T] -> ([B, C, F, T], {name: [B, 1] mix ratio α})``."""
        check_spectrogram(x, type(self).__name__)
        b = x.shape[0]
        applied = self.applied(b, x.device)
        alpha = uniform(b, *self.ratio, x.device)
        alpha = torch.where(applied, alpha, torch.zeros_like(alpha))
        z = self._partners(x)
        a = alpha.reshape(b, 1, 1, 1).to(x.dtype)
        s = self.scale
        if s == 1.0:  # the normalised domain: three passes over the batch fewer
            mixed = torch.logaddexp(x + torch.log1p(-a), z + torch.log(a))
        else:
            mixed = torch.logaddexp(x * s + torch.log1p(-a), z * s + torch.log(a)) / s
        # α = 0 gives logaddexp(x s, -inf) / s = x up to rounding: keep x bit-exact there
        out = keep_where(alpha > 0, mixed, x)
        if self.source == "bank":
            if not self._in_step:
                self._push(x)
            elif self._pending is None:
                self._pending = x.detach()
        return out, {self.component.name: alpha.unsqueeze(1)}


class LinearFader(Augmenter):
    """BYOL-A v2's random linear fader: a gain ramp over time, from ``head`` to ``tail``.

    ``head, tail ~ U(-max_gain, max_gain)`` per example, and
    ``out[..., t] = x[..., t] + head + (tail - head) * t / (T - 1)``.

    Units: the input is a natural-log power mel spectrogram normalised by the dataset std.
    Without ``norm_std``, ``max_gain`` and the recorded gains are in those normalised
    units (BYOL-A v2 uses ``max_gain = 1.0``). With ``norm_std``, they are in dB of signal
    level: ``g`` dB adds ``g * ln(10) / 10 / norm_std`` (power spectrogram: 10 log10, not
    20 log10).

    Recorded parameter (``[B, 2]``): ``(head, tail)``; the relative action
    ``(head_b - head_a, tail_b - tail_a)`` is a 2-dim ``Continuous(relation="difference")``
    over ``±2 max_gain``. Untouched views record ``(0, 0)``.
    """

    def __init__(
        self,
        max_gain: float = 1.0,
        p: float = 1.0,
        norm_std: float | None = None,
        n_bins: int = 6,
        name: str = "gain",
    ) -> None:
        super().__init__(p)
        who = type(self).__name__
        if not max_gain > 0:
            raise ValueError(f"{who}: max_gain must be > 0, got {max_gain}")
        if norm_std is not None and not norm_std > 0:
            raise ValueError(f"{who}: norm_std must be positive, got {norm_std}")
        self.max_gain = float(max_gain)
        self.norm_std = None if norm_std is None else float(norm_std)
        self.component = Continuous(
            name, -2 * self.max_gain, 2 * self.max_gain, n_bins=n_bins, dim=2
        )

    def components(self) -> list[ActionComponent]:
        return [self.component]

    @property
    def units_per_gain(self) -> float:
        """Normalised log-mel units added per recorded gain unit."""
        return 1.0 if self.norm_std is None else NATS_PER_DB / self.norm_std

    def forward(self, x: Tensor) -> tuple[Tensor, ViewParams]:
        """``[B, C, F, T] -> ([B, C, F, T], {name: [B, 2] (head, tail) gains})``."""
        check_spectrogram(x, type(self).__name__)
        b, t = x.shape[0], x.shape[-1]
        applied = self.applied(b, x.device)
        ends = uniform(2 * b, -self.max_gain, self.max_gain, x.device).reshape(b, 2)
        ends = ends * applied[:, None]
        ramp_pos = (
            torch.linspace(0.0, 1.0, t, device=x.device)
            if t > 1
            else torch.zeros(1, device=x.device)
        )
        ramp = ends[:, :1] + (ends[:, 1:] - ends[:, :1]) * ramp_pos[None, :]  # [B, T]
        # untouched examples get a ramp of exact zeros
        out = x + (ramp * self.units_per_gain).to(x.dtype)[:, None, None, :]
        return out, {self.component.name: ends}
