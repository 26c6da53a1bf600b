"""Dense linear probes on frozen feature maps, scored by mean IoU and pixel accuracy.

A dense probe maps the feature vector at every position of a frozen ``[C, h, w]`` map to
class logits with one linear layer (a 1x1 convolution), upsamples the logits bilinearly
to the label map's ``H x W`` and is trained with per-pixel cross-entropy. It is scored by
the confusion matrix over every labelled pixel of the test set:

- IoU of class ``c`` = ``TP / (TP + FP + FN)``; a class absent from both the labels and
  the predictions has no IoU (NaN, ``null`` in JSON) and is left out of the mean; a class
  predicted but absent from the labels has IoU 0;
- mIoU = the mean IoU over the other classes; pixel accuracy = correct / labelled pixels.

Pixels labelled ``ignore_index`` are left out of training and scoring. Everything runs on
the caller's device with deterministic operations only (matrix products, element-wise
ops, reductions and integer accumulation; no ``interpolate`` backward, no ``nll_loss``),
so a fit depends only on its inputs and the seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stec.evaluation.embed import embed
from stec.evaluation.probe import feature_scale


class _Flattened(nn.Module):
    """``encoder`` with its ``[B, C, h, w]`` output flattened, remembering ``(C, h, w)``."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.map_shape: tuple[int, ...] | None = None

    def forward(self, x: Tensor) -> Tensor:
        out = self.encoder(x)
        if not isinstance(out, Tensor) or out.dim() != 4:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"the encoder must return feature maps [B, C, h, w], got {shape}")
        self.map_shape = tuple(out.shape[1:])
        return out.flatten(1)


def embed_maps(
    encoder: nn.Module,
    loader: Iterable,
    device: str | torch.device = "cpu",
    transform: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`~stec.evaluation.embed.embed` for an encoder that returns feature maps.

    The loader yields ``(x, label_map [B, H, W], index)``. Returns
    ``(maps [N, C, h, w] float32, label maps [N, H, W], indices [N])``, all on CPU.
    """
    flat = _Flattened(encoder)
    features, labels, indices = embed(flat, loader, device=device, transform=transform)
    return features.view(len(features), *flat.map_shape), labels, indices


def interpolation_matrix(n_in: int, n_out: int) -> Tensor:
    """``[n_out, n_in]`` weights of linear interpolation along one axis, those of
    ``F.interpolate(mode="bilinear", align_corners=False)``: ``M @ v`` resamples ``v``."""
    eye = torch.eye(n_in, dtype=torch.float64)[:, None, :]  # n_in signals of length n_in
    out = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)
    return out[:, 0, :].T.float().contiguous()


class DenseLinearProbe(nn.Module):
    """Standardise each channel, apply one linear layer per position (a 1x1 convolution)
    and upsample the logits bilinearly: ``[B, C, h, w]`` -> ``[B, K, H, W]``.

    Upsampling is two matrix products (:func:`interpolation_matrix`), which equal
    bilinear interpolation and have a deterministic backward pass on every device.
    """

    def __init__(self, mean: Tensor, std: Tensor, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float().reshape(-1))
        self.register_buffer("std", std.float().reshape(-1))
        self.linear = nn.Linear(self.mean.numel(), n_classes)
        nn.init.zeros_(self.linear.weight)  # the problem is convex: the start costs nothing
        nn.init.zeros_(self.linear.bias)

    def forward(self, maps: Tensor, size: tuple[int, int]) -> Tensor:
        z = (maps.movedim(1, -1) - self.mean) / self.std  # [B, h, w, C]
        logits = self.linear(z).movedim(-1, 1)  # [B, K, h, w]
        h, w = logits.shape[-2:]
        rows = interpolation_matrix(h, size[0]).to(logits.device)
        cols = interpolation_matrix(w, size[1]).to(logits.device)
        return rows @ logits @ cols.T


def dense_cross_entropy(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Mean cross-entropy over the labelled pixels.

    Args:
        logits: ``[B, K, H, W]``; target: ``[B, H, W]`` int in ``0..K-1`` or ``ignore_index``.
    Returns:
        A scalar (0 when no pixel is labelled).
    """
    classes = torch.arange(logits.shape[1], device=logits.device).view(1, -1, 1, 1)
    onehot = target.unsqueeze(1) == classes  # all False at ignored pixels
    picked = (F.log_softmax(logits, dim=1) * onehot).sum()
    labelled = (target != ignore_index).sum().clamp(min=1)
    return -picked / labelled


def confusion_matrix(pred: Tensor, target: Tensor, n_classes: int, ignore_index: int) -> Tensor:
    """``[K, K]`` int64 counts, rows the true class and columns the predicted one.

    Args:
        pred, target: int tensors of the same shape; ``target == ignore_index`` is skipped.
    """
    valid = (target != ignore_index).reshape(-1).long()
    # an ignored pixel adds 0 at cell 0, so no boolean indexing (and no host sync) is needed
    cell = (target.reshape(-1).long() * n_classes + pred.reshape(-1).long()) * valid
    counts = torch.zeros(n_classes * n_classes, dtype=torch.long, device=pred.device)
    return counts.index_add_(0, cell, valid).view(n_classes, n_classes)


def segmentation_scores(
    confusion: Tensor, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """``{"miou", "pixel_accuracy", "iou": {name: IoU or NaN}}`` of a ``[K, K]`` confusion
    matrix (see the module doc for the convention)."""
    conf = confusion.double().cpu()
    tp = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(tp))]
    if len(names) != len(tp):
        raise ValueError(f"{len(names)} class names for a {len(tp)}-class confusion matrix")
    present = ~iou.isnan()
    total = conf.sum()
    return {
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "iou": {name: float(v) for name, v in zip(names, iou, strict=True)},
    }


def _check(maps: Tensor, labels: Tensor, n_classes: int, ignore_index: int, what: str) -> None:
    if maps.dim() != 4 or labels.dim() != 3 or len(maps) != len(labels):
        raise ValueError(
            f"{what}: need maps [N, C, h, w] and label maps [N, H, W] with the same N, got "
            f"{tuple(maps.shape)} and {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{what}: label maps must hold integer class indices, got {labels.dtype}")
    if n_classes < 2 or 0 <= ignore_index < n_classes:
        raise ValueError(
            f"need n_classes >= 2 and ignore_index outside 0..n_classes-1, got {n_classes} "
            f"and {ignore_index}"
        )
    bad = (labels < 0) | (labels >= n_classes)
    bad &= labels != ignore_index
    if bad.any():
        value = int(labels[bad][0])
        raise ValueError(
            f"{what}: label value {value} is outside 0..{n_classes - 1} "
            f"(and is not ignore_index={ignore_index})"
        )


def channel_stats(maps: Tensor, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation ``[C]`` of ``maps [N, C, h, w]`` over every
    position, in float64 chunk by chunk (no full-size copy); a constant channel gets std 1
    (:func:`~stec.evaluation.probe.feature_scale`)."""
    total = torch.zeros(maps.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(maps), chunk):
        part = maps[start : start + chunk].double()
        total += part.sum((0, 2, 3))
        squares += part.square().sum((0, 2, 3))
    count = maps.shape[0] * maps.shape[2] * maps.shape[3]
    mean = total / count
    return mean, feature_scale(squares / count - mean.square(), squares / count).double()


def fit_dense_probe(
    maps: Tensor,
    labels: Tensor,
    n_classes: int,
    *,
    epochs: int = 30,
    lr: float = 0.01,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    ignore_index: int = 255,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> DenseLinearProbe:
    """Train a :class:`DenseLinearProbe` with Adam for ``epochs`` epochs (the last weights
    are kept) on ``device``; ``seed`` sets the batch order, the global RNG is untouched.

    Args:
        maps: ``[N, C, h, w]`` frozen features (CPU; batches move to ``device``).
        labels: ``[N, H, W]`` int class indices or ``ignore_index``.
    Returns:
        The probe, on ``device``.
    """
    _check(maps, labels, n_classes, ignore_index, "dense probe training data")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(
            f"dense probe: epochs and batch_size must be >= 1 and lr > 0, got {epochs}, "
            f"{batch_size}, {lr}"
        )
    probe = DenseLinearProbe(*channel_stats(maps), n_classes).to(device)
    optimiser = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    size = tuple(labels.shape[-2:])
    for _ in range(epochs):
        order = torch.randperm(len(maps), generator=generator)
        for start in range(0, len(maps), batch_size):
            idx = order[start : start + batch_size]
            x = maps[idx].to(device, non_blocking=True)
            y = labels[idx].to(device, non_blocking=True).long()
            loss = dense_cross_entropy(probe(x, size), y, ignore_index)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return probe


@torch.no_grad()
def probe_confusion(
    probe: DenseLinearProbe,
    maps: Tensor,
    labels: Tensor,
    ignore_index: int = 255,
    batch_size: int = 64,
) -> Tensor:
    """The ``[K, K]`` confusion matrix of ``probe`` on ``(maps, labels)``, on the probe's
    device (batches move there)."""
    device = probe.mean.device
    n_classes = probe.linear.out_features
    total = torch.zeros(n_classes, n_classes, dtype=torch.long, device=device)
    for start in range(0, len(maps), batch_size):
        x = maps[start : start + batch_size].to(device, non_blocking=True)
        y = labels[start : start + batch_size].to(device, non_blocking=True).long()
        pred = probe(x, tuple(y.shape[-2:])).argmax(1)
        total += confusion_matrix(pred, y, n_classes, ignore_index)
    return total


def dense_probe(
    train_maps: Tensor,
    train_labels: Tensor,
    test_maps: Tensor,
    test_labels: Tensor,
    n_classes: int,
    class_names: Sequence[str] | None = None,
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """Fit a dense probe on the training maps and score it on the test maps.

    ``fit_kwargs`` go to :func:`fit_dense_probe`. Returns :func:`segmentation_scores` of
    the test set, plus ``train_miou`` (the fit's own mIoU, to tell a weak fit from a poor
    generalisation) and ``majority_miou`` / ``majority_pixel_accuracy``: the test scores of
    predicting the training set's most frequent class everywhere, the floor of any probe.
    """
    ignore_index = int(fit_kwargs.get("ignore_index", 255))
    _check(test_maps, test_labels, n_classes, ignore_index, "dense probe test data")
    if test_maps.shape[1:] != train_maps.shape[1:]:
        raise ValueError(
            f"train and test feature maps differ: {tuple(train_maps.shape[1:])} and "
            f"{tuple(test_maps.shape[1:])}"
        )
    probe = fit_dense_probe(train_maps, train_labels, n_classes, **fit_kwargs)
    batch = int(fit_kwargs.get("batch_size", 64))
    test = probe_confusion(probe, test_maps, test_labels, ignore_index, batch).cpu()
    train = probe_confusion(probe, train_maps, train_labels, ignore_index, batch).cpu()
    labelled = train_labels[train_labels != ignore_index].long()
    majority = int(torch.bincount(labelled, minlength=n_classes).argmax())
    truth = test_labels[test_labels != ignore_index].long()
    floor = confusion_matrix(torch.full_like(truth, majority), truth, n_classes, ignore_index)
    floor_scores = segmentation_scores(floor, class_names)
    return {
        **segmentation_scores(test, class_names),
        "train_miou": segmentation_scores(train)["miou"],
        "majority_miou": floor_scores["miou"],
        "majority_pixel_accuracy": floor_scores["pixel_accuracy"],
    }
