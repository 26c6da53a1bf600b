"""L2-regularised logistic regression on standardised features, solved in torch.

The default linear probe: full-batch L-BFGS (as scikit-learn's ``LogisticRegression``),
with the regularisation strength chosen by inner cross-validation on the training data.

- :func:`logistic_objective`: the penalised loss of ``k`` independent problems stacked
  side by side (the inner folds share one feature matrix and one matrix product);
- :func:`fit_logistic`: minimise it with L-BFGS, on the features' device;
- :func:`inner_fold_ids`: stratified (single-label) or random (multi-label) inner folds;
- :func:`select_c`: fit every candidate ``C`` on every inner fold (strong to weak
  regularisation, each fit warm-started from the previous one) and keep the best;
- :func:`fit_logreg`: all of it, ending in an ``nn.Linear`` fitted on all the training data.

``C`` has scikit-learn's meaning: with ``n`` training samples the objective is
``Σ_i loss_i + ||W||² / (2C)``, which is ``n`` times ``mean_i loss_i + ||W||² / (2Cn)``;
the intercept is not penalised. Multi-label data sums the per-class binary losses, so each
class is the problem scikit-learn's one-vs-rest logistic regression solves with that ``C``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stec.evaluation.metrics import mean_average_precision, stratified_order

# scikit-learn's C, about half a decade apart; fitted from the smallest (strongest L2) up
DEFAULT_CS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def _check_cs(cs: Sequence[float]) -> list[float]:
    values = [float(c) for c in cs]
    if not values or any(not c > 0 for c in values):
        raise ValueError(f"cs (the candidate values of C) must be positive numbers, got {cs!r}")
    return sorted(set(values))


def logistic_objective(
    scores: Tensor, y: Tensor, weight: Tensor, row_weight: Tensor, penalty: Tensor, multilabel: bool
) -> Tensor:
    """The sum of ``k`` penalised logistic losses on shared rows.

    Problem ``j`` is ``Σ_i row_weight[j, i] · loss(scores[j, :, i], y_i) + penalty[j] / 2 ·
    ||weight[j]||²``, with ``loss`` the softmax cross-entropy (single-label) or the sum over
    classes of the binary cross-entropy (multi-label). The layout is class-major (as
    ``nn.Linear.weight``), the fast one for the matrix products on the CPU.

    Args:
        scores: ``[k, C, N]`` logits of every row under every problem's weights.
        y: ``[N]`` int class labels, or ``[N, C]`` multi-hot float.
        weight: ``[k, C, D]`` the penalised weights (not the intercepts).
        row_weight: ``[k, N]``, e.g. ``1 / n_j`` on the training rows of problem ``j``, 0 on
            its held-out rows.
        penalty: ``[k]`` L2 coefficients (``1 / (C · n_j)`` for scikit-learn's ``C``).
    Returns:
        A scalar tensor.
    """
    if multilabel:
        target = y.T.to(scores.dtype).expand_as(scores)
        per_row = F.binary_cross_entropy_with_logits(scores, target, reduction="none").sum(1)
    else:
        index = y.view(1, 1, -1).expand(scores.shape[0], 1, -1)
        per_row = -scores.log_softmax(1).gather(1, index).squeeze(1)  # [k, N]
    data_term = (per_row * row_weight).sum()
    return data_term + 0.5 * (penalty * weight.square().sum((1, 2))).sum()


def logistic_score_gradient(
    scores: Tensor, y: Tensor, row_weight: Tensor, multilabel: bool
) -> Tensor:
    """``[k, C, N]``: the gradient of :func:`logistic_objective`'s data term in ``scores``.

    ``(softmax(scores) - onehot(y))`` (single-label) or ``(sigmoid(scores) - y)``
    (multi-label), each row scaled by its ``row_weight``.
    """
    if multilabel:
        residual = scores.sigmoid() - y.T.to(scores.dtype)
    else:
        residual = scores.softmax(1) - F.one_hot(y, scores.shape[1]).T.to(scores.dtype)
    return residual * row_weight.unsqueeze(1)


@dataclass
class LogisticFit:
    """Weights ``[k, C, D]``, intercepts ``[k, C]`` and the L-BFGS iterations used."""

    weight: Tensor
    bias: Tensor
    iterations: int

    def scores(self, x: Tensor) -> Tensor:
        """``x [N, D]`` -> logits ``[k, C, N]`` of every problem."""
        k, c, d = self.weight.shape
        return (self.weight.reshape(k * c, d) @ x.T).view(k, c, -1) + self.bias.unsqueeze(2)


def fit_logistic(
    x: Tensor,
    y: Tensor,
    row_weight: Tensor,
    penalty: Tensor,
    n_outputs: int,
    *,
    multilabel: bool,
    init: LogisticFit | None = None,
    max_iter: int = 1000,
    tol: float = 1e-5,
) -> LogisticFit:
    """Minimise :func:`logistic_objective` with full-batch L-BFGS (strong-Wolfe line search).

    Everything runs on ``x``'s device; the start is ``init`` or zero, so the result is a
    deterministic function of the inputs. The gradient is computed in closed form
    (:func:`logistic_score_gradient`, then one matrix product): two products of ``x`` per
    evaluation and nothing kept for autograd. It stops when the largest gradient entry of
    the (mean) loss falls below ``tol`` or after ``max_iter`` iterations. scikit-learn stops
    at ``1e-4``; the default ``1e-5`` makes the solution the same whether it starts from
    zero or from a warm start (at ``1e-4`` weakly regularised fits stop early, where they
    stop depending on the start, which moved accuracies by up to 0.75 points).

    Args:
        x: ``[N, D]`` standardised features; y: ``[N]`` int or ``[N, C]`` multi-hot.
        row_weight: ``[k, N]``; penalty: ``[k]`` (see :func:`logistic_objective`).
        n_outputs: ``C``, the number of classes.
    """
    k = row_weight.shape[0]
    device, dtype = x.device, x.dtype
    if init is None:
        weight = torch.zeros(k, n_outputs, x.shape[1], device=device, dtype=dtype)
        bias = torch.zeros(k, n_outputs, device=device, dtype=dtype)
    else:
        weight, bias = init.weight.detach().clone(), init.bias.detach().clone()
    optimiser = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=10,
        line_search_fn="strong_wolfe",
    )
    x_t = x.T
    penalty = penalty.view(k, 1, 1)

    @torch.no_grad()
    def closure() -> Tensor:
        scores = (weight.view(k * n_outputs, -1) @ x_t).view(k, n_outputs, -1)
        scores += bias.unsqueeze(2)
        loss = logistic_objective(scores, y, weight, row_weight, penalty.view(k), multilabel)
        grad = logistic_score_gradient(scores, y, row_weight, multilabel)
        weight.grad = (grad.view(k * n_outputs, -1) @ x).view_as(weight) + penalty * weight
        bias.grad = grad.sum(2)
        return loss

    optimiser.step(closure)
    iterations = int(optimiser.state[optimiser._params[0]].get("n_iter", 0))
    return LogisticFit(weight, bias, iterations)


def inner_fold_ids(
    labels: Tensor, k: int, generator: torch.Generator, multilabel: bool = False
) -> Tensor:
    """Assign each sample to one of ``k`` inner folds, ``[N]`` int64.

    Single-label data is stratified: the samples are shuffled, put in class order and dealt
    to the folds in turn, so each class is spread as evenly as possible. Multi-label data is
    dealt in shuffled order.
    """
    if k < 2:
        raise ValueError(f"inner_folds must be at least 2, got {k}")
    n = labels.shape[0]
    order = stratified_order(labels, generator, multilabel)
    ids = torch.empty(n, dtype=torch.long)
    ids[order] = torch.arange(n) % k
    return ids


@dataclass
class Selection:
    """The outcome of :func:`select_c`.

    Attributes:
        c: the chosen ``C``.
        scores: per candidate ``C``, ``{"metric", "loss"}`` averaged over the inner folds.
        fit: the inner-fold fits at the chosen ``C`` (a warm start for the final fit).
    """

    c: float
    scores: dict[float, dict[str, float]] = field(default_factory=dict)
    fit: LogisticFit | None = None


def _validation_scores(
    scores: Tensor, y: Tensor, folds: Tensor, fold_values: list[int], multilabel: bool
) -> tuple[float, float]:
    metrics, losses = [], []
    for j, fold in enumerate(fold_values):
        rows = folds == fold
        logits, target = scores[j][:, rows].T.float().cpu(), y[rows].cpu()
        if multilabel:
            metrics.append(mean_average_precision(logits, target))
            losses.append(float(F.binary_cross_entropy_with_logits(logits, target.float())))
        else:
            metrics.append(float((logits.argmax(1) == target).float().mean()))
            losses.append(float(F.cross_entropy(logits, target)))
    metrics = [m for m in metrics if m == m] or [float("-inf")]  # folds without positives
    return sum(metrics) / len(metrics), sum(losses) / len(losses)


def _neighbour_mean(values: list[float]) -> list[float]:
    """The mean of each value and its neighbours in the list (two at the ends)."""
    windows = [values[max(0, i - 1) : i + 2] for i in range(len(values))]
    return [sum(w) / len(w) for w in windows]


def select_c(
    x: Tensor,
    y: Tensor,
    folds: Tensor,
    cs: Sequence[float],
    n_outputs: int,
    *,
    multilabel: bool,
    max_iter: int = 1000,
    tol: float = 1e-5,
) -> Selection:
    """Choose ``C`` by cross-validation over ``folds`` (on the training data only).

    Every fold is held out in turn; the ``k`` problems are fitted together for each ``C``,
    from the smallest (strongest regularisation) to the largest, each warm-started from the
    previous solution. Each candidate is scored by its mean held-out metric (accuracy, or
    mAP for multi-label data) averaged with its neighbours' in the sorted ``cs``; the best
    wins, ties going to the lower mean held-out loss. The smoothing steadies the choice
    where the held-out curve is flat and noisy (a held-out score is noisy, its trend over
    ``C`` much less so).

    Args:
        x: ``[N, D]`` standardised features; y: ``[N]`` int or ``[N, C]`` multi-hot;
        folds: ``[N]`` inner fold of each row (at least two distinct values).
    """
    cs = _check_cs(cs)
    fold_values = [int(f) for f in folds.unique().tolist()]
    if len(fold_values) < 2:
        raise ValueError(f"select_c needs at least two inner folds, got {fold_values}")
    folds = folds.to(x.device)
    train = torch.stack([folds != f for f in fold_values]).to(x.dtype)  # [k, N]
    n_train = train.sum(1)
    row_weight = train / n_train.unsqueeze(1)
    y = y.to(x.device)
    selection, fit, fits = Selection(c=cs[0]), None, []
    for c in cs:
        fit = fit_logistic(
            x, y, row_weight, 1.0 / (c * n_train), n_outputs,
            multilabel=multilabel, init=fit, max_iter=max_iter, tol=tol,
        )  # fmt: skip
        with torch.no_grad():
            scores = fit.scores(x)
        metric, loss = _validation_scores(scores, y, folds, fold_values, multilabel)
        selection.scores[c] = {"metric": metric, "loss": loss}
        fits.append(fit)
    smoothed = _neighbour_mean([selection.scores[c]["metric"] for c in cs])
    best = max(range(len(cs)), key=lambda i: (smoothed[i], -selection.scores[cs[i]]["loss"]))
    selection.c, selection.fit = cs[best], fits[best]
    return selection


def row_space(x: Tensor) -> tuple[Tensor, Tensor]:
    """``x [N, D]`` in the coordinates of its row space: ``(z [N, r], basis [r, D])`` with
    ``x = z @ basis`` and orthonormal rows in ``basis`` (``r`` = the rank of ``x``).

    An L2-penalised linear model's weights lie in the span of its training rows (every
    gradient does, and so does the optimum), so fitting on ``z`` and mapping the weights
    ``w [C, r]`` back with ``w @ basis`` gives the same model as fitting on ``x`` (and the
    same L-BFGS iterates, up to rounding), in ``r <= N`` dimensions instead of ``D``. This
    holds for every subset of the rows too (the inner folds).
    """
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    keep = s > s[0] * max(x.shape) * torch.finfo(x.dtype).eps if s.numel() else s > 0
    return u[:, keep] * s[keep], vh[keep]


@dataclass
class LogregFit:
    """The fitted probe layer ``nn.Linear(D, C)``, the chosen ``C``, the inner-CV scores
    of every candidate (empty when there was one candidate) and the final fit's L-BFGS
    iterations."""

    layer: nn.Linear
    c: float
    c_scores: dict[float, dict[str, float]]
    iterations: int


def fit_logreg(
    x: Tensor,
    y: Tensor,
    n_outputs: int,
    *,
    multilabel: bool,
    cs: Sequence[float] = DEFAULT_CS,
    inner_folds: int = 5,
    groups: Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-5,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> LogregFit:
    """Choose ``C`` on the training data, then fit on all of it (everything on ``device``).

    With several candidates in ``cs`` the inner folds are ``groups`` when it holds at least
    two distinct values (e.g. the predefined folds of the training data, so that clips of
    one source stay together), else ``inner_folds`` folds from :func:`inner_fold_ids`
    (drawn with ``seed``). The inner fits reuse the standardisation of the whole training
    data. The final fit starts from the mean of the inner solutions at the chosen ``C``.
    A single candidate is used as it is, without inner cross-validation.

    With fewer samples than dimensions and several candidates, every fit runs in the
    coordinates of the row space of ``x`` (:func:`row_space`): the same solutions, in fewer
    dimensions (a single fit does not repay the SVD).

    Args:
        x: ``[N, D]`` standardised features; y: ``[N]`` int or ``[N, C]`` multi-hot;
        groups: ``[N]`` int inner fold of each row, or None.
    """
    cs = _check_cs(cs)
    n, dim = x.shape
    c, scores, init = cs[0], {}, None
    x, y_dev = x.to(device), y.to(device)
    basis = None
    if n < dim and len(cs) > 1:  # one fit alone does not repay the SVD
        x, basis = row_space(x)
    if len(cs) > 1:
        if groups is not None and torch.as_tensor(groups).unique().numel() >= 2:
            folds = torch.as_tensor(groups).long()
            if folds.shape != (n,):
                raise ValueError(
                    f"groups must hold one fold per row ({n}), got {tuple(folds.shape)}"
                )
        else:
            folds = inner_fold_ids(y, inner_folds, torch.Generator().manual_seed(seed), multilabel)
        selection = select_c(
            x, y_dev, folds, cs, n_outputs, multilabel=multilabel, max_iter=max_iter, tol=tol
        )
        c, scores = selection.c, selection.scores
        inner = selection.fit
        init = LogisticFit(inner.weight.mean(0, keepdim=True), inner.bias.mean(0, keepdim=True), 0)
    row_weight = torch.full((1, n), 1.0 / n, device=x.device, dtype=x.dtype)
    penalty = torch.full((1,), 1.0 / (c * n), device=x.device, dtype=x.dtype)
    fit = fit_logistic(
        x, y_dev, row_weight, penalty, n_outputs,
        multilabel=multilabel, init=init, max_iter=max_iter, tol=tol,
    )  # fmt: skip
    weight = fit.weight[0] if basis is None else fit.weight[0] @ basis  # [C, D]
    layer = nn.Linear(dim, n_outputs).to(device=x.device, dtype=x.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(fit.bias[0])
    return LogregFit(layer, c, scores, fit.iterations)
