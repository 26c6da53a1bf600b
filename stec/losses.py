"""Pure loss functions. Shapes: ``B`` local batch, ``N`` candidates, ``D`` embedding size,
``T`` action targets, ``C`` classes per target."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(
    z_a: Tensor,
    z_b: Tensor,
    temperature: float = 0.1,
    offset: int = 0,
    candidates: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Symmetric NT-Xent (SimCLR) loss.

    Each anchor ``z_a[i]`` must pick its positive ``z_b[i]`` among all views of the (global)
    batch except itself: a categorical "switching" action with a cosine critic.

    Args:
        z_a, z_b: ``[B, D]`` projections of the two views of the local batch.
        temperature: softmax temperature.
        offset: index of the local batch inside the gathered candidates (rank * B).
        candidates: ``([N, D], [N, D])`` gathered views of the global batch, with gradients;
            ``None`` uses the local batch (``N = B``).
    Returns:
        ``(loss, logits)``: the scalar mean loss over the ``2B`` anchors, and the ``[2B, 2N]``
        logits (the positive of anchor ``i`` sits at column ``offset + i`` of the other view).
    """
    all_a, all_b = candidates if candidates is not None else (z_a, z_b)
    anchors = F.normalize(torch.cat([z_a, z_b]), dim=1)
    keys = F.normalize(torch.cat([all_a, all_b]), dim=1)
    n, b = all_a.shape[0], z_a.shape[0]
    logits = anchors @ keys.T / temperature
    local = offset + torch.arange(b, device=z_a.device)
    self_cols = torch.cat([local, local + n])
    positive_cols = torch.cat([local + n, local])
    logits = logits.masked_fill(F.one_hot(self_cols, 2 * n).bool(), float("-inf"))
    loss = F.cross_entropy(logits, positive_cols)
    return loss, logits


def positive_pair_accuracy(logits: Tensor, offset: int = 0) -> Tensor:
    """Share of anchors whose highest-scoring candidate is their positive. ``[2B, 2N]`` -> scalar."""
    two_b, two_n = logits.shape
    b, n = two_b // 2, two_n // 2
    local = offset + torch.arange(b, device=logits.device)
    positive_cols = torch.cat([local + n, local])
    return (logits.argmax(dim=1) == positive_cols).float().mean()


def byol_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """BYOL regression: ``2 - 2 cos(p, z')`` averaged over the batch. ``[B, D]`` x2 -> scalar.

    The target must come from the EMA network and carry no gradient.
    """
    return (2.0 - 2.0 * F.cosine_similarity(prediction, target.detach(), dim=-1)).mean()


def relic_loss(
    z_a: Tensor,
    z_b: Tensor,
    temperature: float = 0.1,
    alpha: float = 1.0,
    offset: int = 0,
    candidates: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """ReLIC: InfoNCE plus ``alpha`` times a KL invariance term. Shapes as :func:`info_nce`.

    Each view's anchor has a distribution over the candidates of :func:`info_nce`: every
    view of the (global) batch except itself, since a view's similarity to itself is the
    constant ``1 / temperature`` and says nothing about the representation. The two views
    of a sample are compared candidate by candidate *by role*: view ``a``'s positive
    (``b_i``) with view ``b``'s positive (``a_i``), and each other sample's view of the
    other kind (``b_j`` for ``a``, ``a_j`` for ``b``) with each other, as in ReLIC's
    ``p(j | do(a, b))`` vs ``p(j | do(b, a))``. The term is
    ``(KL(sg(p_b) || p_a) + KL(sg(p_a) || p_b)) / 2``, averaged over the local anchors,
    where ``sg`` stops the gradient: each view's distribution moves towards the other's.
    """
    contrastive, logits = info_nce(z_a, z_b, temperature, offset, candidates)
    b, n = z_a.shape[0], logits.shape[1] // 2
    # b's rows with the halves of their columns swapped: column c then plays the same role
    # for both views (its self entry, masked with -inf, lands where a's self entry is)
    logits_a, logits_b = logits[:b], logits[b:].roll(n, dims=1)
    valid = torch.isfinite(logits_a)  # log p = 0 on the self entry of both: it adds nothing
    log_p_a = F.log_softmax(logits_a, dim=1).masked_fill(~valid, 0.0)
    log_p_b = F.log_softmax(logits_b, dim=1).masked_fill(~valid, 0.0)
    kl_ab = (log_p_b.detach().exp() * (log_p_b.detach() - log_p_a)).sum(dim=1)  # KL(sg(p_b)||p_a)
    kl_ba = (log_p_a.detach().exp() * (log_p_a.detach() - log_p_b)).sum(dim=1)  # KL(sg(p_a)||p_b)
    return contrastive + alpha * 0.5 * (kl_ab + kl_ba).mean(), logits


def action_loss(
    logits: Tensor, classes: Tensor, mask: Tensor, class_mask: Tensor, target_weight: Tensor
) -> tuple[Tensor, Tensor]:
    """Masked, weighted cross-entropy of the binned inverse model.

    Each target's NLL is averaged over the pairs where it is defined; the loss is the
    ``target_weight``-weighted mean of those averages over the targets defined in the batch
    (so a component's weight does not depend on how many targets it has, see
    :meth:`stec.actions.ActionSpace.target_weights`).

    Args:
        logits: ``[B, T, C]`` scores, ``C`` the largest class count among the targets.
        classes: ``[B, T]`` int64 target classes.
        mask: ``[B, T]`` bool, False where the action is undefined for that pair.
        class_mask: ``[T, C]`` bool, True for the classes each target really has.
        target_weight: ``[T]`` non-negative weights.
    Returns:
        ``(loss, accuracy)``: the scalar loss (0 when no target is defined), and ``[T]``
        accuracy per target over its valid entries (NaN where none is valid).
    """
    logits = logits.float().masked_fill(~class_mask.unsqueeze(0), float("-inf"))
    nll = F.cross_entropy(logits.flatten(0, 1), classes.flatten(), reduction="none").view_as(
        classes
    )
    hits = (logits.argmax(dim=-1) == classes).float()
    return _weighted_mean_over_targets(nll, mask, target_weight), _masked_mean(hits, mask)


def action_regression_loss(
    prediction: Tensor, values: Tensor, mask: Tensor, target_weight: Tensor
) -> tuple[Tensor, Tensor]:
    """Masked, weighted mean squared error on actions scaled to ``[-1, 1]``.

    Args:
        prediction, values: ``[B, T]``; mask: ``[B, T]`` bool; target_weight: ``[T]``.
    Returns:
        ``(loss, r2)``: the scalar loss (weighted over targets as :func:`action_loss`) and
        ``[T]`` coefficient of determination per target (NaN where none is valid).
    """
    err = (prediction.float() - values) ** 2
    mse = _masked_mean(err, mask)
    mean = _masked_mean(values, mask)
    var = _masked_mean((values - mean) ** 2, mask)
    r2 = 1.0 - mse / var.clamp_min(1e-8)
    return _weighted_mean_over_targets(err, mask, target_weight), r2


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """``[B, T]`` -> ``[T]`` mean over the rows where ``mask`` holds; NaN where none does."""
    weight = mask.float()
    count = weight.sum(0)
    mean = (x * weight).sum(0) / count.clamp_min(1.0)
    return torch.where(count > 0, mean, torch.full_like(mean, float("nan")))


def _weighted_mean_over_targets(x: Tensor, mask: Tensor, target_weight: Tensor) -> Tensor:
    """Per-target masked means of ``x [B, T]``, averaged with ``target_weight [T]`` over the
    targets defined in the batch (no host synchronisation; 0 when none is defined)."""
    weight = mask.float()
    count = weight.sum(0)
    per_target = (x * weight).sum(0) / count.clamp_min(1.0)
    w = target_weight.to(per_target) * (count > 0)
    return (per_target * w).sum() / w.sum().clamp_min(1e-12)


def guess_accuracy(classes: Tensor, mask: Tensor, guess: Tensor) -> Tensor:
    """Accuracy of always answering ``guess`` for each target: the floor an inverse model
    must beat when ``guess`` is each target's most frequent class so far.

    Args:
        classes: ``[B, T]`` int64; mask: ``[B, T]`` bool; guess: ``[T]`` int64.
    Returns:
        ``[T]`` float (NaN where no entry is valid).
    """
    hits = (classes == guess.unsqueeze(0)).float()
    weight = mask.float()
    count = weight.sum(0)
    rate = (hits * weight).sum(0) / count.clamp_min(1.0)
    return torch.where(count > 0, rate, torch.full_like(rate, float("nan")))


def info_nce_cross(
    queries: Tensor, keys: Tensor, temperature: float = 0.1, offset: int = 0
) -> Tensor:
    """One-directional InfoNCE: query ``i`` must pick key ``offset + i``.

    Args:
        queries: ``[B, D]`` (e.g. action-conditioned predictions of the other view).
        keys: ``[N, D]`` candidates (gathered over ranks), positive at ``offset + i``.
    Returns:
        scalar mean loss.
    """
    logits = F.normalize(queries, dim=1) @ F.normalize(keys, dim=1).T / temperature
    positives = offset + torch.arange(queries.shape[0], device=queries.device)
    return F.cross_entropy(logits, positives)
