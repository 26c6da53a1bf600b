"""Linear evaluation of frozen features (the EVAR-style protocol) and fold-wise
cross-validation (the ESC-50 protocol).

The probe: standardise the features with the training statistics, train one linear layer
with Adam on mini-batches, hold out ``val_fraction`` of the training data (stratified by
class for single-label data) for early stopping, and keep the weights of the best
validation epoch. Single-label data uses cross-entropy and reports accuracy; multi-label
data (``[N, C]`` multi-hot) uses binary cross-entropy and reports macro mAP.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stec.evaluation.metrics import mean_average_precision


def _check_xy(name: str, x: Tensor, y: Tensor, multilabel: bool) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name}_x must be a 2-D tensor [N, D], got shape {tuple(x.shape)}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{name}_x has {x.shape[0]} rows but {name}_y has {y.shape[0]}")
    if multilabel and y.dim() != 2:
        raise ValueError(
            f"multilabel=True needs {name}_y as [N, C] multi-hot, got shape {tuple(y.shape)}"
        )
    if not multilabel:
        if y.dim() != 1 or y.is_floating_point():
            raise ValueError(
                f"single-label probing needs {name}_y as [N] integer labels, got shape "
                f"{tuple(y.shape)} dtype {y.dtype} (pass multilabel=True for multi-hot labels)"
            )
        if y.numel() and int(y.min()) < 0:
            raise ValueError(f"{name}_y has a negative class label {int(y.min())}")


def validation_split(
    labels: Tensor, fraction: float, generator: torch.Generator, multilabel: bool = False
) -> tuple[Tensor, Tensor]:
    """Split sample indices into ``(train, val)`` with ``floor(N · fraction)`` in val.

    Single-label data is stratified by systematic sampling: the samples are shuffled, put
    in class order, and every ``1/fraction``-th one goes to val, so each class gives
    ``floor`` or ``ceil`` of its share. Multi-label data is split at random.

    Args:
        labels: ``[N]`` int or ``[N, C]`` multi-hot.
    Returns:
        ``(train_index [N - V], val_index [V])``, int64, each sorted.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {fraction}")
    n = labels.shape[0]
    order = torch.randperm(n, generator=generator)
    if not multilabel:
        order = order[labels[order].argsort(stable=True)]
    pos = torch.arange(n, dtype=torch.float64)
    is_val = ((pos + 1) * fraction).floor() > (pos * fraction).floor()
    return order[~is_val].sort().values, order[is_val].sort().values


@dataclass
class LinearProbe:
    """A trained linear probe: standardisation statistics and the best-validation layer.

    Attributes:
        layer: ``nn.Linear(D, C)``.
        mean, std: ``[D]`` training-feature statistics applied before the layer.
        multilabel: whether the layer is scored with BCE/mAP instead of CE/accuracy.
        history: per epoch ``{"epoch", "train_loss", "val_loss", "val_metric"}``.
        best_epoch: the epoch whose weights were kept (the last one without a val split).
        train_index, val_index: the rows of the training data used for each role.
    """

    layer: nn.Linear
    mean: Tensor
    std: Tensor
    multilabel: bool
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    train_index: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    val_index: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    @property
    def metric_name(self) -> str:
        return "map" if self.multilabel else "accuracy"

    @torch.no_grad()
    def scores(self, x: Tensor) -> Tensor:
        """``[N, D]`` features -> ``[N, C]`` logits (on CPU)."""
        device = self.layer.weight.device
        return self.layer((x.float().to(device) - self.mean) / self.std).cpu()

    def evaluate(self, x: Tensor, y: Tensor) -> float:
        """Accuracy (single-label) or macro mAP (multi-label) on ``(x [N, D], y)``."""
        return _metric(self.scores(x), y.cpu(), self.multilabel)


def _metric(logits: Tensor, y: Tensor, multilabel: bool) -> float:
    if multilabel:
        return mean_average_precision(logits, y)
    return float((logits.argmax(1) == y).float().mean()) if y.numel() else float("nan")


def _loss(logits: Tensor, y: Tensor, multilabel: bool) -> Tensor:
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, y)
    return F.cross_entropy(logits, y)


def fit_linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    *,
    multilabel: bool = False,
    n_classes: int | None = None,
    epochs: int = 200,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    val_fraction: float = 0.1,
    patience: int = 20,
    seed: int = 0,
    device: str | torch.device = "cpu",
    restore_best: bool = True,
) -> LinearProbe:
    """Train a linear probe with early stopping; see the module docstring.

    The layer starts at zero (the problem is convex, so this loses nothing and makes the
    result depend on ``seed`` only through the split and the batch order); the global RNG
    is left untouched. An epoch improves on the best when its validation metric is higher,
    or equal with a lower validation loss; training stops after ``patience`` epochs without
    improvement and the best epoch's weights are restored. With no validation samples
    (``val_fraction=0`` or too little data) all ``epochs`` run and the last weights stay;
    ``restore_best=False`` keeps the last weights in any case (``best_epoch`` still names
    the best validation epoch).

    Args:
        train_x: ``[N, D]`` features; train_y: ``[N]`` int labels or ``[N, C]`` multi-hot.
        n_classes: output size for single-label data (default ``max(train_y) + 1``).
    Returns:
        The trained :class:`LinearProbe`.
    """
    _check_xy("train", train_x, train_y, multilabel)
    if train_x.shape[0] < 1:
        raise ValueError("linear probe: the training set is empty")
    if epochs < 1 or batch_size < 1 or patience < 1:
        raise ValueError(
            f"linear probe: epochs, batch_size and patience must be >= 1, got "
            f"{epochs}, {batch_size}, {patience}"
        )
    x = train_x.float().cpu()
    y = train_y.float().cpu() if multilabel else train_y.long().cpu()
    out_dim = y.shape[1] if multilabel else max(int(y.max()) + 1, n_classes or 0)
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp_min(1e-6)  # constant features stay finite
    x = (x - mean) / std
    generator = torch.Generator().manual_seed(seed)
    train_index, val_index = validation_split(y, val_fraction, generator, multilabel)
    x_tr, y_tr = x[train_index].to(device), y[train_index].to(device)
    x_val, y_val = x[val_index].to(device), y[val_index]
    layer = nn.Linear(x.shape[1], out_dim).to(device)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    optimiser = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)

    probe = LinearProbe(layer, mean.to(device), std.to(device), multilabel)
    probe.train_index, probe.val_index = train_index, val_index
    best_state, best_key, stale = None, (-math.inf, math.inf), 0
    n_train = x_tr.shape[0]
    for epoch in range(epochs):
        order = torch.randperm(n_train, generator=generator).to(device)
        total = 0.0
        for start in range(0, n_train, batch_size):
            idx = order[start : start + batch_size]
            loss = _loss(layer(x_tr[idx]), y_tr[idx], multilabel)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item() * idx.numel()
        record = {"epoch": epoch, "train_loss": total / n_train}
        if val_index.numel():
            with torch.no_grad():
                logits = layer(x_val).cpu()
            val_loss = float(_loss(logits, y_val, multilabel))
            val_metric = _metric(logits, y_val, multilabel)
            record.update(val_loss=val_loss, val_metric=val_metric)
            key = (-math.inf if math.isnan(val_metric) else val_metric, val_loss)
            if key[0] > best_key[0] or (key[0] == best_key[0] and key[1] < best_key[1]):
                best_key, stale, probe.best_epoch = key, 0, epoch
                best_state = copy.deepcopy(layer.state_dict())
            else:
                stale += 1
        probe.history.append(record)
        if stale >= patience:
            break
    if best_state is not None:
        if restore_best:
            layer.load_state_dict(best_state)
    else:
        probe.best_epoch = len(probe.history) - 1
    return probe


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    multilabel: bool = False,
    epochs: int = 200,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    val_fraction: float = 0.1,
    patience: int = 20,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Train a linear probe on ``(train_x, train_y)`` and score it on ``(test_x, test_y)``.

    Args:
        train_x: ``[N, D]``; train_y: ``[N]`` int or ``[N, C]`` multi-hot (``multilabel``).
        test_x: ``[M, D]``; test_y: ``[M]`` or ``[M, C]``.
        epochs, lr, weight_decay, batch_size, val_fraction, patience, seed, device: see
            :func:`fit_linear_probe`.
    Returns:
        Single-label: ``{"accuracy", "val_accuracy", "best_epoch", "epochs_run", "n_train",
        "n_val", "n_test"}``; multi-label: the same with ``"map"``/``"val_map"`` (macro mAP
        over classes with at least one positive) in place of the accuracies.
    """
    _check_xy("test", test_x, test_y, multilabel)
    if test_x.shape[1] != train_x.shape[1]:
        raise ValueError(
            f"train_x and test_x have different feature sizes: {train_x.shape[1]} vs {test_x.shape[1]}"
        )
    n_classes = None
    if not multilabel and test_y.numel():
        n_classes = int(test_y.max()) + 1
    probe = fit_linear_probe(
        train_x,
        train_y,
        multilabel=multilabel,
        n_classes=n_classes,
        epochs=epochs,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        val_fraction=val_fraction,
        patience=patience,
        seed=seed,
        device=device,
    )
    name = probe.metric_name
    best = probe.history[probe.best_epoch]
    return {
        name: probe.evaluate(test_x, test_y),
        f"val_{name}": float(best.get("val_metric", float("nan"))),
        "best_epoch": probe.best_epoch,
        "epochs_run": len(probe.history),
        "n_train": int(probe.train_index.numel()),
        "n_val": int(probe.val_index.numel()),
        "n_test": int(test_x.shape[0]),
    }


def cross_validate(features: Tensor, labels: Tensor, folds: Tensor, **probe_kwargs) -> dict:
    """Leave-one-fold-out linear evaluation (the ESC-50 protocol).

    For each distinct value ``f`` of ``folds`` (in ascending order) a probe is trained on
    the samples of all other folds and tested on fold ``f``. The standard deviation is the
    population one (``ddof=0``) over folds, as numpy reports it.

    Args:
        features: ``[N, D]``; labels: ``[N]`` int or ``[N, C]`` multi-hot;
        folds: ``[N]`` int fold of each sample (at least two distinct values).
        probe_kwargs: passed to :func:`linear_probe` (``multilabel``, ``epochs``, ...).
    Returns:
        ``{"metric", "<metric>_mean", "<metric>_std", "per_fold": {fold: score},
        "n_folds"}`` with ``<metric>`` ``accuracy`` (or ``map`` when ``multilabel``).
    """
    folds = torch.as_tensor(folds).cpu()
    if folds.dim() != 1 or folds.shape[0] != features.shape[0] or folds.is_floating_point():
        raise ValueError(
            f"folds must be a 1-D integer tensor with one entry per sample ({features.shape[0]}), "
            f"got shape {tuple(folds.shape)} dtype {folds.dtype}"
        )
    fold_ids = [int(f) for f in folds.unique().tolist()]
    if len(fold_ids) < 2:
        raise ValueError(f"cross_validate needs at least two distinct folds, got {fold_ids}")
    multilabel = bool(probe_kwargs.get("multilabel", False))
    metric = "map" if multilabel else "accuracy"
    per_fold: dict[int, float] = {}
    for fold in fold_ids:
        test = folds == fold
        result = linear_probe(
            features[~test], labels[~test], features[test], labels[test], **probe_kwargs
        )
        per_fold[fold] = float(result[metric])
    scores = torch.tensor(list(per_fold.values()), dtype=torch.float64)
    return {
        "metric": metric,
        f"{metric}_mean": float(scores.mean()),
        f"{metric}_std": float(scores.std(unbiased=False)),
        "per_fold": per_fold,
        "n_folds": len(fold_ids),
    }
