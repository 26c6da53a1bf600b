"""The EVAR-compatible probe: Adam on mini-batches with early stopping.

Kept so that numbers can be set beside published EVAR tables: one linear layer trained
with Adam, ``val_fraction`` of the training data (stratified by class for single-label
data) held out for early stopping, and the weights of the best validation epoch kept.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stec.evaluation.metrics import mean_average_precision, stratified_order


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
    order = stratified_order(labels, generator, multilabel)
    pos = torch.arange(n, dtype=torch.float64)
    is_val = ((pos + 1) * fraction).floor() > (pos * fraction).floor()
    return order[~is_val].sort().values, order[is_val].sort().values


def metric(logits: Tensor, y: Tensor, multilabel: bool) -> float:
    """Accuracy of ``logits [N, C]`` against ``y [N]``, or macro mAP against ``y [N, C]``."""
    if multilabel:
        return mean_average_precision(logits, y)
    return float((logits.argmax(1) == y).float().mean()) if y.numel() else float("nan")


def probe_loss(logits: Tensor, y: Tensor, multilabel: bool) -> Tensor:
    """Mean cross-entropy (``y [N]``) or mean binary cross-entropy (``y [N, C]``)."""
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, y)
    return F.cross_entropy(logits, y)


@dataclass
class EvarFit:
    """The trained layer and its record.

    Attributes:
        layer: ``nn.Linear(D, C)`` on the training device.
        history: per epoch ``{"epoch", "train_loss", "val_loss", "val_metric"}``.
        best_epoch: the epoch whose weights were kept (the last one without a val split).
        train_index, val_index: the rows of the training data used for each role.
    """

    layer: nn.Linear
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    train_index: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    val_index: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))


def fit_evar(
    x: Tensor,
    y: Tensor,
    n_outputs: int,
    *,
    multilabel: bool,
    epochs: int = 200,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    val_fraction: float = 0.1,
    patience: int = 20,
    seed: int = 0,
    device: str | torch.device = "cpu",
    restore_best: bool = True,
) -> EvarFit:
    """Train a linear layer with Adam and early stopping on standardised features.

    The layer starts at zero (the problem is convex, so this loses nothing and makes the
    result depend on ``seed`` only through the split and the batch order); the global RNG
    is left untouched. An epoch improves on the best when its validation metric is higher,
    or equal with a lower validation loss; training stops after ``patience`` epochs without
    improvement and the best epoch's weights are restored. With no validation samples
    (``val_fraction=0`` or too little data) all ``epochs`` run and the last weights stay;
    ``restore_best=False`` keeps the last weights in any case (``best_epoch`` still names
    the best validation epoch).

    Args:
        x: ``[N, D]`` standardised features (CPU); y: ``[N]`` int or ``[N, C]`` multi-hot.
        n_outputs: the layer's output size ``C``.
    """
    if epochs < 1 or batch_size < 1 or patience < 1:
        raise ValueError(
            f"linear probe: epochs, batch_size and patience must be >= 1, got "
            f"{epochs}, {batch_size}, {patience}"
        )
    generator = torch.Generator().manual_seed(seed)
    train_index, val_index = validation_split(y, val_fraction, generator, multilabel)
    x_tr, y_tr = x[train_index].to(device), y[train_index].to(device)
    x_val, y_val = x[val_index].to(device), y[val_index]
    layer = nn.Linear(x.shape[1], n_outputs).to(device)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    optimiser = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)

    fit = EvarFit(layer, train_index=train_index, val_index=val_index)
    best_state, best_key, stale = None, (-math.inf, math.inf), 0
    n_train = x_tr.shape[0]
    for epoch in range(epochs):
        order = torch.randperm(n_train, generator=generator).to(device)
        total = 0.0
        for start in range(0, n_train, batch_size):
            idx = order[start : start + batch_size]
            loss = probe_loss(layer(x_tr[idx]), y_tr[idx], multilabel)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item() * idx.numel()
        record = {"epoch": epoch, "train_loss": total / n_train}
        if val_index.numel():
            with torch.no_grad():
                logits = layer(x_val).cpu()
            val_loss = float(probe_loss(logits, y_val, multilabel))
            val_metric = metric(logits, y_val, multilabel)
            record.update(val_loss=val_loss, val_metric=val_metric)
            key = (-math.inf if math.isnan(val_metric) else val_metric, val_loss)
            if key[0] > best_key[0] or (key[0] == best_key[0] and key[1] < best_key[1]):
                best_key, stale, fit.best_epoch = key, 0, epoch
                best_state = copy.deepcopy(layer.state_dict())
            else:
                stale += 1
        fit.history.append(record)
        if stale >= patience:
            break
    if best_state is not None:
        if restore_best:
            layer.load_state_dict(best_state)
    else:
        fit.best_epoch = len(fit.history) - 1
    return fit
