"""Scores on frozen features: mAP, weighted k-NN accuracy, class-distance ratio.

All functions are pure torch and work on any device; they return Python floats/dicts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_2d(name: str, x: Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor [N, D], got shape {tuple(x.shape)}")


def _check_single_label(name: str, y: Tensor, n: int) -> None:
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(
            f"{name} must be a 1-D tensor of {n} integer class labels, got shape {tuple(y.shape)}"
        )
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if n and int(y.min()) < 0:
        raise ValueError(f"{name} has a negative class label {int(y.min())}")


def average_precision_per_class(scores: Tensor, targets: Tensor) -> Tensor:
    """Average precision of every class, with tied scores handled as sklearn does.

    AP is ``Σ_t (R_t - R_{t-1}) · P_t`` over the distinct score thresholds ``t`` (from high
    to low): samples sharing a score enter the ranking together, so the result does not
    depend on how ties happen to be ordered.

    Args:
        scores: ``[N, C]`` real scores (logits or probabilities).
        targets: ``[N, C]`` multi-hot; entries ``> 0.5`` count as positives.
    Returns:
        ``[C]`` float tensor, NaN for classes without a positive.
    """
    _check_2d("scores", scores)
    if targets.shape != scores.shape:
        raise ValueError(
            f"targets must have the shape of scores {tuple(scores.shape)}, got {tuple(targets.shape)}"
        )
    n = scores.shape[0]
    # Class-major layout: every row is one class, so the sorts and scans run contiguously.
    sorted_scores, order = scores.T.double().sort(dim=1, descending=True)
    hits = (targets.T > 0.5).gather(1, order).double()
    rank = torch.arange(1, n + 1, device=scores.device, dtype=torch.float64)
    precision = hits.cumsum(1) / rank
    # Tied scores form one threshold, evaluated at the group's last position: each
    # position looks up the nearest group end at or after it (a reversed running min).
    is_end = torch.ones_like(hits, dtype=torch.bool)
    is_end[:, :-1] = sorted_scores[:, :-1] != sorted_scores[:, 1:]
    position = torch.arange(n, device=scores.device).expand_as(is_end)
    end_pos = torch.where(is_end, position, torch.full_like(position, n - 1))
    group_end = end_pos.flip(1).cummin(1).values.flip(1)
    # Every positive adds 1/n_pos of recall at its group's threshold.
    n_pos = hits.sum(1)
    ap = (precision.gather(1, group_end) * hits).sum(1) / n_pos.clamp_min(1.0)
    return torch.where(n_pos > 0, ap, torch.full_like(ap, float("nan"))).float()


def mean_average_precision(scores: Tensor, targets: Tensor) -> float:
    """Macro mAP: the mean of the per-class APs over classes with at least one positive.

    Args:
        scores: ``[N, C]`` real scores; targets: ``[N, C]`` multi-hot (``> 0.5`` = positive).
    Returns:
        The mAP in ``[0, 1]``; NaN if no class has a positive.
    """
    ap = average_precision_per_class(scores, targets)
    ok = ~torch.isnan(ap)
    return float(ap[ok].mean()) if ok.any() else float("nan")


@torch.no_grad()
def knn_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> float:
    """Cosine-similarity weighted k-NN accuracy (InstDisc, Wu et al. 2018; solo-learn).

    Each test sample's ``k`` nearest training samples by cosine similarity ``s`` vote for
    their class with weight ``exp(s / temperature)``; the class with the largest total
    wins. Test samples are processed in chunks of ``chunk_size`` to bound memory.

    Args:
        train_x: ``[N, D]``; train_y: ``[N]`` int labels; test_x: ``[M, D]``; test_y: ``[M]``.
    Returns:
        Top-1 accuracy in ``[0, 1]``.
    """
    _check_2d("train_x", train_x)
    _check_2d("test_x", test_x)
    _check_single_label("train_y", train_y, train_x.shape[0])
    _check_single_label("test_y", test_y, test_x.shape[0])
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"train_x and test_x have different feature sizes: {train_x.shape[1]} vs {test_x.shape[1]}"
        )
    if train_x.shape[0] == 0 or test_x.shape[0] == 0:
        raise ValueError("knn_accuracy needs at least one training and one test sample")
    if k < 1 or temperature <= 0:
        raise ValueError(
            f"knn_accuracy needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}"
        )
    k = min(k, train_x.shape[0])
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    bank = F.normalize(train_x.float(), dim=1)
    train_y = train_y.to(bank.device)
    correct = 0
    for start in range(0, test_x.shape[0], chunk_size):
        query = F.normalize(test_x[start : start + chunk_size].float().to(bank.device), dim=1)
        sim, idx = (query @ bank.T).topk(k, dim=1)
        weight = (sim / temperature).exp()
        votes = torch.zeros(query.shape[0], n_classes, device=bank.device)
        votes.scatter_add_(1, train_y[idx], weight)
        pred = votes.argmax(dim=1).cpu()
        correct += int((pred == test_y[start : start + chunk_size].cpu()).sum())
    return correct / test_x.shape[0]


@torch.no_grad()
def class_distance_ratio(features: Tensor, labels: Tensor) -> dict[str, float]:
    """Within-class over between-class mean pairwise cosine distance (lower = better separated).

    Features are L2-normalised and the distance is the cosine distance ``1 - cos(x, y)``
    (half the squared Euclidean distance of unit vectors), following the class-separation
    measure of Kornblith et al. (2021, "Why do better loss functions lead to less
    transferable features?"):

    - ``within``: for each class with at least two samples, the mean distance over pairs of
      distinct samples of that class, then averaged over those classes;
    - ``between``: for each ordered pair of distinct classes, the mean distance over all
      cross-class sample pairs, then averaged over the class pairs;
    - ``ratio = within / between``; about 1 for labels unrelated to the features.

    Both are computed exactly from class means of the unit vectors in ``O(N·D + K²·D)``:
    the mean cosine similarity between classes ``j`` and ``k`` is ``μ_j · μ_k``, and over
    distinct pairs within class ``k`` it is ``(N_k ||μ_k||² - 1) / (N_k - 1)``.

    Args:
        features: ``[N, D]``; labels: ``[N]`` int class labels (at least two classes).
    Returns:
        ``{"ratio", "within", "between", "n_classes"}``.
    """
    _check_2d("features", features)
    _check_single_label("labels", labels, features.shape[0])
    classes, inverse, counts = labels.cpu().unique(return_inverse=True, return_counts=True)
    n_classes = classes.numel()
    if n_classes < 2:
        raise ValueError(f"class_distance_ratio needs at least two classes, got {n_classes}")
    unit = F.normalize(features.double().cpu(), dim=1)
    sums = torch.zeros(n_classes, unit.shape[1], dtype=torch.float64).index_add_(0, inverse, unit)
    counts_f = counts.double()
    means = sums / counts_f.unsqueeze(1)
    sq_norm = (means * means).sum(1)
    multi = counts >= 2
    if not multi.any():
        raise ValueError("class_distance_ratio needs at least one class with two or more samples")
    within_sim = (counts_f[multi] * sq_norm[multi] - 1.0) / (counts_f[multi] - 1.0)
    within = float((1.0 - within_sim).mean())
    cross = means @ means.T
    off_diag = ~torch.eye(n_classes, dtype=torch.bool)
    between = float((1.0 - cross[off_diag]).mean())
    ratio = within / between if between > 0 else float("inf")
    return {"ratio": ratio, "within": within, "between": between, "n_classes": int(n_classes)}


def distance_ratio_where_defined(features: Tensor, labels: Tensor) -> float | None:
    """:func:`class_distance_ratio`'s ratio of ``[N, D]`` features with ``[N]`` labels, or
    None where it is not defined: an evaluated split of one class (a small validation
    folder) has no "between", one of single samples no "within". The CLIs' evaluations
    report it so, and score the rest."""
    counts = labels.cpu().unique(return_counts=True)[1]
    if counts.numel() < 2 or not (counts >= 2).any():
        return None
    return class_distance_ratio(features, labels)["ratio"]


def stratified_order(
    labels: Tensor, generator: torch.Generator, multilabel: bool = False
) -> Tensor:
    """``[N]`` sample indices shuffled by ``generator`` and, for single-label ``labels``
    (``[N]``), then sorted by class (stable): dealing them out in turn spreads every class
    as evenly as possible. Multi-label data keeps the shuffled order."""
    order = torch.randperm(labels.shape[0], generator=generator)
    if not multilabel:
        order = order[labels[order].argsort(stable=True)]
    return order
