"""Linear evaluation of frozen features and fold-wise cross-validation (the ESC-50 protocol).

Both protocols standardise the features with the training statistics and fit one linear
layer; single-label data (``[N]`` int labels) is scored by accuracy, multi-label data
(``[N, C]`` multi-hot) by macro mAP.

- ``protocol="logreg"`` (the default): L2-regularised logistic regression, full-batch
  L-BFGS, ``C`` chosen by inner cross-validation on the training data
  (:mod:`stec.evaluation.logreg`). It scores as scikit-learn's ``LogisticRegression`` does.
- ``protocol="evar"``: Adam on mini-batches with early stopping on 10% of the training
  data, as in EVAR (:mod:`stec.evaluation.probe_evar`), for comparison with EVAR tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from stec.errors import DataError, name_some
from stec.evaluation.logreg import fit_logreg
from stec.evaluation.probe_evar import fit_evar, metric

PROTOCOLS = ("logreg", "evar")
# the keyword options of each protocol (see fit_logreg and fit_evar)
PROTOCOL_OPTIONS = {
    "logreg": ("cs", "inner_folds", "max_iter", "tol"),
    "evar": (
        "epochs", "lr", "weight_decay", "batch_size", "val_fraction", "patience", "restore_best"
    ),
}  # fmt: skip


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


def _check_protocol(protocol: str, options: Mapping[str, Any]) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"protocol={protocol!r} is not valid; allowed values: {', '.join(PROTOCOLS)}"
        )
    unknown = sorted(set(options) - set(PROTOCOL_OPTIONS[protocol]))
    if unknown:
        raise ValueError(
            f"the {protocol} probe has no option(s) {unknown}; its options: "
            f"{', '.join(PROTOCOL_OPTIONS[protocol])}"
        )


#: A feature whose variance is at most this share of its mean square is constant: float64
#: sums of a constant leave a variance of ~1e-14 of it, and a float32 feature varies by at
#: least ~1e-7 of its size when it varies at all.
CONSTANT_SHARE = 1e-12


def feature_scale(var: Tensor, mean_square: Tensor) -> Tensor:
    """What each feature is divided by when standardised: its standard deviation, and 1
    for the features that are constant in the data the statistics come from (variance at
    most :data:`CONSTANT_SHARE` of the mean square), as scikit-learn's ``StandardScaler``
    does. A tiny stand-in for a zero std would multiply the values such a feature takes
    only at test time by about a million.

    Args:
        var, mean_square: ``[D]`` the features' variance and mean of squares (float64 is
            best: they come from sums).
    Returns:
        ``[D]`` float32.
    """
    var, mean_square = var.double().clamp_min(0), mean_square.double()
    constant = var <= CONSTANT_SHARE * mean_square
    return torch.where(constant, torch.ones_like(var), var.sqrt()).float()


def standardisation(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(mean [D], scale [D])`` of ``x [N, D]``, in float64 (two passes: a constant feature
    has variance 0 exactly) and returned as float32; see :func:`feature_scale`."""
    x = x.double()
    mean = x.mean(0)
    var = (x - mean).square().mean(0)
    return mean.float(), feature_scale(var, x.square().mean(0))


@dataclass
class LinearProbe:
    """A trained linear probe: standardisation statistics and the fitted layer.

    Attributes:
        layer: ``nn.Linear(D, C)``.
        mean, std: ``[D]`` training-feature statistics applied before the layer.
        multilabel: whether the layer is scored with mAP instead of accuracy.
        protocol: ``logreg`` or ``evar``.
        c, c_scores, iterations (logreg): the chosen ``C``, the mean inner-CV
            ``{"metric", "loss"}`` of every candidate, and the final fit's L-BFGS iterations.
        history, best_epoch, train_index, val_index (evar): see
            :class:`stec.evaluation.probe_evar.EvarFit`.
    """

    layer: nn.Linear
    mean: Tensor
    std: Tensor
    multilabel: bool
    protocol: str = "logreg"
    c: float | None = None
    c_scores: dict[float, dict[str, float]] = field(default_factory=dict)
    iterations: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    train_index: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    val_index: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    @property
    def metric_name(self) -> str:
        return "map" if self.multilabel else "accuracy"

    @property
    def val_metric(self) -> float:
        """The held-out score the probe was selected on (NaN when there was none)."""
        if self.protocol == "logreg":
            return self.c_scores.get(self.c, {}).get("metric", float("nan"))
        if not self.history:
            return float("nan")
        return float(self.history[self.best_epoch].get("val_metric", float("nan")))

    @torch.no_grad()
    def scores(self, x: Tensor) -> Tensor:
        """``[N, D]`` features -> ``[N, C]`` logits (on CPU)."""
        device = self.layer.weight.device
        return self.layer((x.float().to(device) - self.mean) / self.std).cpu()

    def evaluate(self, x: Tensor, y: Tensor) -> float:
        """Accuracy (single-label) or macro mAP (multi-label) on ``(x [N, D], y)``."""
        return metric(self.scores(x), y.cpu(), self.multilabel)


def fit_linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    *,
    protocol: str = "logreg",
    multilabel: bool = False,
    n_classes: int | None = None,
    groups: Tensor | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    **options: Any,
) -> LinearProbe:
    """Standardise the features and fit a linear probe with ``protocol``.

    Everything is computed on ``device``; the result depends only on the inputs and
    ``seed`` (the inner folds of ``logreg``, the split and batch order of ``evar``).

    Args:
        train_x: ``[N, D]`` features; train_y: ``[N]`` int labels or ``[N, C]`` multi-hot.
        n_classes: output size for single-label data (default ``max(train_y) + 1``).
        groups: ``[N]`` int (logreg): the inner folds for choosing ``C``, e.g. the
            predefined folds of the training data; None draws ``inner_folds`` folds.
        options: the protocol's own (``PROTOCOL_OPTIONS``). logreg: ``cs`` (candidate
            values of scikit-learn's ``C``; one value skips the inner cross-validation),
            ``inner_folds``, ``max_iter``, ``tol`` (see
            :func:`stec.evaluation.logreg.fit_logreg`). evar: ``epochs``, ``lr``,
            ``weight_decay``, ``batch_size``, ``val_fraction``, ``patience``,
            ``restore_best`` (see :func:`stec.evaluation.probe_evar.fit_evar`).
    Returns:
        The trained :class:`LinearProbe`.
    """
    _check_protocol(protocol, options)
    _check_xy("train", train_x, train_y, multilabel)
    if train_x.shape[0] < 1:
        raise ValueError("linear probe: the training set is empty")
    if groups is not None and protocol != "logreg":
        raise ValueError("groups (inner folds) apply to the logreg probe only")
    x = train_x.float().cpu()
    y = train_y.float().cpu() if multilabel else train_y.long().cpu()
    out_dim = y.shape[1] if multilabel else max(int(y.max()) + 1, n_classes or 0)
    mean, std = standardisation(x)  # constant features: centred, not scaled
    x = (x - mean) / std
    if protocol == "logreg":
        fit = fit_logreg(
            x, y, out_dim, multilabel=multilabel, groups=groups, seed=seed, device=device,
            **options,
        )  # fmt: skip
        return LinearProbe(
            fit.layer, mean.to(device), std.to(device), multilabel, protocol,
            c=fit.c, c_scores=fit.c_scores, iterations=fit.iterations,
        )  # fmt: skip
    fit = fit_evar(x, y, out_dim, multilabel=multilabel, seed=seed, device=device, **options)
    return LinearProbe(
        fit.layer, mean.to(device), std.to(device), multilabel, protocol,
        history=fit.history, best_epoch=fit.best_epoch,
        train_index=fit.train_index, val_index=fit.val_index,
    )  # fmt: skip


def check_two_classes(
    labels: Tensor, class_names: Sequence[str] | None, what: str, advice: str
) -> None:
    """Refuse, in one line, to probe ``[N]`` single-label ``labels`` of one class: any probe
    scores 1.0 on them whatever the features. ``what`` names the items ("the training
    images"), ``advice`` how to give two classes; ``class_names`` name the label indices."""
    if labels.dim() != 1:  # multi-hot labels: mAP, scored per class
        return
    present = labels.unique()
    if present.numel() != 1:
        return
    k = int(present[0])
    name = class_names[k] if class_names is not None and 0 <= k < len(class_names) else k
    raise DataError(
        f"{what} hold one class ({name!r}, {labels.numel()} of them): a linear probe needs "
        f"two or more, or it scores 1.0 whatever the features; give data of at least two "
        f"classes ({advice})"
    )


def labelled_items(
    labels: Tensor, ids: Sequence[str], item: str, advice: str
) -> tuple[Tensor, str]:
    """The items of ``[N]`` single-label ``labels`` that a probe can use: ``[N]`` bool, those
    labelled (``>= 0``), and a line naming the others, left out ("" when there are none).
    Unlabelled items (a manifest's empty label, STL-10's unlabeled split) are data for
    pretraining, not for a probe. ``ids`` name the ``N`` items, ``item`` says what one is
    ("clip"), ``advice`` how to give labels; none labelled is a :class:`DataError`."""
    labelled = labels >= 0
    if not labelled.any():
        raise DataError(f"no {item} has a class label, so there is nothing to probe: {advice}")
    if labelled.all():
        return labelled, ""
    left_out = [ids[i] for i in torch.nonzero(~labelled).flatten().tolist()]
    return labelled, (
        f"{len(left_out)} {item}(s) have no class label and are left out of the probe: "
        f"{name_some(left_out)}"
    )


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    multilabel: bool = False,
    **probe_kwargs: Any,
) -> dict[str, Any]:
    """Fit a linear probe on ``(train_x, train_y)`` and score it on ``(test_x, test_y)``.

    Args:
        train_x: ``[N, D]``; train_y: ``[N]`` int or ``[N, C]`` multi-hot (``multilabel``).
        test_x: ``[M, D]``; test_y: ``[M]`` or ``[M, C]``.
        probe_kwargs: ``protocol``, ``groups``, ``seed``, ``device`` and the protocol's
            options, see :func:`fit_linear_probe`.
    Returns:
        ``{"<metric>", "val_<metric>", "protocol", "n_train", "n_test"}`` with ``<metric>``
        ``accuracy`` (or ``map``: macro mAP over classes with a positive), plus ``"C"`` and
        ``"iterations"`` (logreg; ``val_`` is the inner-CV score at that ``C``) or
        ``"best_epoch"``, ``"epochs_run"``, ``"n_val"`` (evar; ``n_train`` excludes the
        validation rows).
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
        train_x, train_y, multilabel=multilabel, n_classes=n_classes, **probe_kwargs
    )
    name = probe.metric_name
    result: dict[str, Any] = {
        name: probe.evaluate(test_x, test_y),
        f"val_{name}": probe.val_metric,
        "protocol": probe.protocol,
        "n_train": int(train_x.shape[0]),
        "n_test": int(test_x.shape[0]),
    }
    if probe.protocol == "logreg":
        result.update(C=probe.c, iterations=probe.iterations)
    else:
        result.update(
            best_epoch=probe.best_epoch,
            epochs_run=len(probe.history),
            n_train=int(probe.train_index.numel()),
            n_val=int(probe.val_index.numel()),
        )
    return result


def cross_validate(features: Tensor, labels: Tensor, folds: Tensor, **probe_kwargs: Any) -> dict:
    """Leave-one-fold-out linear evaluation (the ESC-50 protocol).

    For each distinct value ``f`` of ``folds`` (in ascending order) a probe is trained on
    the samples of all other folds and tested on fold ``f``; the logreg probe chooses its
    ``C`` by leaving out each of those training folds in turn (nested cross-validation, so
    clips that share a fold stay together). The standard deviation is the population one
    (``ddof=0``) over folds, as numpy reports it.

    Args:
        features: ``[N, D]``; labels: ``[N]`` int or ``[N, C]`` multi-hot;
        folds: ``[N]`` int fold of each sample (at least two distinct values).
        probe_kwargs: passed to :func:`linear_probe` (``multilabel``, ``protocol``, ...).
    Returns:
        ``{"metric", "<metric>_mean", "<metric>_std", "per_fold": {fold: score},
        "n_folds", "protocol"}`` with ``<metric>`` ``accuracy`` (or ``map`` when
        ``multilabel``).
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
    protocol = probe_kwargs.get("protocol", "logreg")
    metric_name = "map" if multilabel else "accuracy"
    per_fold: dict[int, float] = {}
    for fold in fold_ids:
        test = folds == fold
        if protocol == "logreg":
            probe_kwargs = {**probe_kwargs, "groups": folds[~test]}
        result = linear_probe(
            features[~test], labels[~test], features[test], labels[test], **probe_kwargs
        )
        per_fold[fold] = float(result[metric_name])
    scores = torch.tensor(list(per_fold.values()), dtype=torch.float64)
    return {
        "metric": metric_name,
        f"{metric_name}_mean": float(scores.mean()),
        f"{metric_name}_std": float(scores.std(unbiased=False)),
        "per_fold": per_fold,
        "n_folds": len(fold_ids),
        "protocol": protocol,
    }


def probe_options(evaluate: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """The probe keyword arguments of an ``evaluate:`` config section.

    Reads ``protocol`` (default ``logreg``), the chosen protocol's options that the
    section sets (other keys, e.g. ``knn_k`` or the other protocol's options, are left
    out) and ``device`` (``auto`` = the GPU when there is one). The result goes to
    :func:`linear_probe` / :func:`cross_validate` as ``**kwargs``.
    """
    from stec.engine.trainer import resolve_device  # the engine is heavier than this module

    protocol = str(evaluate.get("protocol", "logreg"))
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"evaluate.protocol={protocol!r} is not valid; allowed values: {', '.join(PROTOCOLS)}"
        )
    options = {k: evaluate[k] for k in PROTOCOL_OPTIONS[protocol] if k in evaluate}
    if "cs" in options:
        cs = options["cs"]
        if isinstance(cs, (int, float)):
            cs = [cs]
        try:
            options["cs"] = [float(c) for c in cs]
        except (TypeError, ValueError):
            raise ValueError(
                f"evaluate.cs must be a list of positive numbers, got {cs!r}"
            ) from None
        if not options["cs"] or any(not c > 0 for c in options["cs"]):
            raise ValueError(f"evaluate.cs must be a list of positive numbers, got {cs!r}")
    device = resolve_device(str(evaluate.get("device", "cpu")))
    return {"protocol": protocol, **options, "seed": int(seed), "device": device}
