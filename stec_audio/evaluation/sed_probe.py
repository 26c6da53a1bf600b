"""The frame-level probe of sound event detection: class-balanced ridge regression, solved
from sufficient statistics of the frames.

Why not the clip-level logistic regression: a corpus gives ~25 frames a second of audio,
so the probe sees tens of thousands of rows even on the demo set. Logistic regression by
L-BFGS costs minutes per fold on a CPU (measured: 260 s for one of the demo's five folds
with three candidate ``C``, with 0.43 frame F1); least squares needs one pass over the
frames (a Gram matrix per fold of clips), after which every fold, every inner fold and
every ``lambda`` is a small ``D x D`` problem.

Decisions:

- Every class is its own least-squares problem with 0/1 targets, **class-balanced**: the
  positive frames of a class carry half the weight and the negative ones the other half
  (events are a few percent of the frames; unweighted least squares ranks the rare
  positives worse, measured: 0.46 vs 0.43 mean frame F1 on two demo folds).
- Features are standardised with the training frames' mean and std (as the clip probe
  does; a feature constant in the training frames is centred, not scaled), the intercept is not penalised, and the penalty is ``lambda * sum of weights *
  ||beta||²`` on the standardised coefficients.
- ``lambda`` is chosen by cross-validation over inner folds of clips: the one whose
  out-of-fold scores give the best macro frame F1 at their best thresholds (ties go to the
  larger ``lambda``). The per-class thresholds are those of the chosen ``lambda`` on the
  same out-of-fold scores, so they were never fitted on the frames they are chosen on.
- Sums are kept in float64 on the evaluation device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stec.evaluation.probe import feature_scale
from stec.evaluation.sed import best_thresholds

#: the candidate ``lambda`` (per unit of weight, on standardised features)
LAMBDAS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclass
class FrameStats:
    """Sufficient statistics of a set of frames ``x [M, D]`` with targets ``y [M, C]``.

    Attributes:
        n: frames; s: ``[D]`` sum of ``x``; g: ``[D, D]`` sum of ``x xᵀ``;
        n_pos: ``[C]`` positive frames per class; s_pos: ``[C, D]`` and g_pos:
        ``[C, D, D]`` the same sums over each class's positive frames.
    """

    n: Tensor
    s: Tensor
    g: Tensor
    n_pos: Tensor
    s_pos: Tensor
    g_pos: Tensor

    @classmethod
    def of(cls, x: Tensor, y: Tensor, device: str | torch.device | None = None) -> FrameStats:
        """The statistics of ``x [M, D]``, ``y [M, C]`` (0/1), in float64 on ``device``
        (default: x's)."""
        x = x.to(device or x.device, torch.float64)
        positive = y.to(x.device).bool()
        g_pos = torch.stack([x[positive[:, c]].T @ x[positive[:, c]] for c in range(y.shape[1])])
        return cls(
            n=x.new_tensor(float(x.shape[0])),
            s=x.sum(0),
            g=x.T @ x,
            n_pos=positive.double().sum(0),
            s_pos=positive.double().T @ x,
            g_pos=g_pos,
        )

    def __add__(self, other: FrameStats) -> FrameStats:
        return FrameStats(
            *(getattr(self, k) + getattr(other, k) for k in self.__dataclass_fields__)
        )


def total(stats: Sequence[FrameStats]) -> FrameStats:
    out = stats[0]
    for s in stats[1:]:
        out = out + s
    return out


@dataclass
class RidgeFit:
    """Weights ``[L, C, D]`` and intercepts ``[L, C]`` for each of L ``lambda`` (raw
    feature space: the standardisation is folded in)."""

    weight: Tensor
    bias: Tensor

    def scores(self, x: Tensor) -> Tensor:
        """``x [M, D]`` -> ``[L, M, C]`` scores."""
        x = x.to(self.weight.device, torch.float64)
        return torch.einsum("md,lcd->lmc", x, self.weight) + self.bias.unsqueeze(1)


def fit_balanced_ridge(stats: FrameStats, std: Tensor, lambdas: Sequence[float]) -> RidgeFit:
    """Class-balanced ridge regression of every class, for every ``lambda`` at once.

    With ``p`` the share of positive frames of a class, positives weigh ``0.5 / p`` and
    negatives ``0.5 / (1 - p)``; the problem is
    ``min sum_i w_i (y_i - b - beta . z_i)² + lambda * sum_i w_i * ||beta||²`` on
    ``z = x / std`` (the weighted means centre ``x``; the unpenalised intercept ``b``
    absorbs them). A class whose frames are all negative (or all positive) gets the
    constant score ``p``.

    Args:
        stats: of the training frames; std: ``[D]`` the features' scale;
        lambdas: L candidate values.
    """
    n, n_pos = stats.n, stats.n_pos
    valid = (n_pos > 0) & (n_pos < n)
    p = (n_pos / n).clamp(1e-12, 1 - 1e-12)
    a = torch.where(valid, 0.5 / p, 1.0)  # weight of a positive frame
    b = torch.where(valid, 0.5 / (1 - p), 1.0)  # of a negative frame
    total_weight = b * n + (a - b) * n_pos  # [C]
    s_w = b[:, None] * stats.s + (a - b)[:, None] * stats.s_pos  # [C, D]
    m_w = s_w / total_weight[:, None]
    g_w = b[:, None, None] * stats.g + (a - b)[:, None, None] * stats.g_pos
    centred = g_w - total_weight[:, None, None] * m_w[:, :, None] * m_w[:, None, :]
    cross = a[:, None] * stats.s_pos - m_w * (a * n_pos)[:, None]  # [C, D]
    y_mean = a * n_pos / total_weight  # [C]
    scale = std.double()
    eigenvalues, vectors = torch.linalg.eigh(centred / (scale[:, None] * scale[None, :]))
    projected = torch.einsum("cdk,cd->ck", vectors, cross / scale)  # [C, D]
    lam = torch.as_tensor(list(lambdas), dtype=torch.float64, device=scale.device)
    shrink = 1.0 / (
        eigenvalues.clamp_min(0)[None] + lam[:, None, None] * total_weight[None, :, None]
    )
    beta = torch.einsum("cdk,lck->lcd", vectors, projected[None] * shrink) / scale  # [L, C, D]
    beta = beta * valid[None, :, None]
    bias = torch.where(valid[None], y_mean[None] - (beta * m_w[None]).sum(-1), p[None])
    return RidgeFit(beta, bias)


@dataclass
class FrameProbe:
    """A fitted frame probe: weights ``[C, D]``, intercepts ``[C]``, per-class thresholds
    ``[C]`` on its scores, and the ``lambda`` chosen."""

    weight: Tensor
    bias: Tensor
    thresholds: Tensor
    lam: float
    oof_f1: float

    def scores(self, x: Tensor) -> Tensor:
        """``x [M, D]`` -> ``[M, C]`` float64 scores (on CPU)."""
        x = x.to(self.weight.device, torch.float64)
        return (x @ self.weight.T + self.bias).cpu()

    def predict(self, x: Tensor) -> Tensor:
        """``x [M, D]`` -> ``[M, C]`` bool: scores above the class's threshold."""
        return self.scores(x) > self.thresholds


def fit_frame_probe(
    groups: Sequence[tuple[Tensor, Tensor]],
    lambdas: Sequence[float] = LAMBDAS,
    device: str | torch.device = "cpu",
    stats: Sequence[FrameStats] | None = None,
) -> FrameProbe:
    """Fit the probe on the frames of the training clips, grouped in inner folds of clips.

    Args:
        groups: per inner fold ``(x [M_j, D], y [M_j, C])`` (at least two folds).
        lambdas: candidates; device: where the sums and solves run;
        stats: the :class:`FrameStats` of each group when already computed (on ``device``).
    Returns:
        The probe at the chosen ``lambda``, fitted on all groups, with the thresholds that
        maximise frame F1 on the out-of-fold scores.
    """
    if len(groups) < 2:
        raise ValueError(f"the frame probe needs at least two inner folds, got {len(groups)}")
    if stats is None:
        stats = [FrameStats.of(x, y, device) for x, y in groups]
    everything = total(stats)
    mean = everything.s / everything.n
    mean_square = torch.diagonal(everything.g) / everything.n
    std = feature_scale(mean_square - mean**2, mean_square).to(mean)  # constant: 1
    scores = []
    for j, (x, _) in enumerate(groups):
        rest = total([s for i, s in enumerate(stats) if i != j])
        scores.append(fit_balanced_ridge(rest, std, lambdas).scores(x).cpu())
    oof = torch.cat(scores, dim=1)  # [L, M, C]
    target = torch.cat([y for _, y in groups]).bool().cpu()
    has_positive = target.any(0)
    best = None
    for i, lam in enumerate(lambdas):
        thresholds, f1 = best_thresholds(oof[i], target)
        score = float(f1[has_positive].mean()) if has_positive.any() else math.nan
        if best is None or not score < best[0]:  # ties: the larger lambda
            best = (score, float(lam), thresholds)
    score, lam, thresholds = best
    fit = fit_balanced_ridge(everything, std, [lam])
    return FrameProbe(fit.weight[0], fit.bias[0], thresholds, lam, score)
