"""How well can the action (the efference copy) be read from a representation?

- :func:`action_prediction_accuracy`: the trained method's own inverse model, scored on
  held-out view pairs;
- :func:`probe_actions`: a fresh inverse model trained on the *frozen* features of any
  encoder (a random-init floor, a method trained with ``efference=off``, ...) and scored
  on held-out pairs: which actions are learnable from the representation?
- :func:`embed_pairs`: the frozen features of both views of every pair, with the
  relative-action targets (what :func:`probe_actions` learns from).

The module being evaluated runs on ``device`` for the call and is left where it was found
(:func:`stec.evaluation.embed.placed_on`). A batch is ``(view_a, view_b, params_a,
params_b)``, optionally followed by the ids ``[B]`` of the clips the pairs were made from:
pairs of one clip (several passes over the data make several pairs of each) then stay on
one side of the probe's train/held-out split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from stec.actions import ActionSpace, ActionTargets, ViewParams
from stec.efference import InverseModel
from stec.evaluation.embed import features_of, frozen_eval, placed_on

PairBatch = tuple[Tensor, Tensor, ViewParams, ViewParams]  # plus, optionally, clip ids [B]


def _to(params: ViewParams, device: str | torch.device) -> ViewParams:
    return {k: v.to(device, non_blocking=True) for k, v in params.items()}


def _unpack(batch_no: int, batch) -> PairBatch:
    return _unpack_with_ids(batch_no, batch)[:4]


def _unpack_with_ids(
    batch_no: int, batch
) -> tuple[Tensor, Tensor, ViewParams, ViewParams, Tensor | None]:
    if not isinstance(batch, (tuple, list)) or len(batch) not in (4, 5):
        raise ValueError(
            f"batch {batch_no}: expected (view_a, view_b, params_a, params_b[, clip_ids]), got "
            f"{type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    ids = torch.as_tensor(batch[4]).reshape(-1).long().cpu() if len(batch) == 5 else None
    if ids is not None and ids.numel() != batch[0].shape[0]:
        raise ValueError(
            f"batch {batch_no}: {ids.numel()} clip ids for {batch[0].shape[0]} view pairs"
        )
    return batch[0], batch[1], batch[2], batch[3], ids


def action_prediction_accuracy(
    method: nn.Module, batches: Iterable[PairBatch | None], device: str | torch.device = "cpu"
) -> dict[str, float]:
    """Mean of the ``action_acc/*`` (or ``action_r2/*``) metrics a trained method reports.

    The method (an :class:`stec.methods.SSLMethod` with an inverse model, i.e.
    ``efference`` ``inverse`` or ``both``) runs on ``device``, in eval mode under
    ``no_grad``, on every ``(view_a, view_b, params_a, params_b)`` batch; its placement and
    train/eval mode are restored afterwards and ``None`` batches are skipped. Each
    component's value is the mean of the per-batch values weighted by batch size, over the
    batches where it is defined (not NaN).

    Returns:
        ``{"action_acc/<component>": float, ...}`` (``action_r2/...`` for a regression
        inverse model).
    """
    if getattr(method, "inverse", None) is None:
        raise ValueError(
            "action_prediction_accuracy needs a method with an inverse model "
            "(efference=inverse or both); use probe_actions for other encoders"
        )
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    with frozen_eval(method), placed_on(device, method), torch.no_grad():
        for batch_no, batch in enumerate(batches):
            if batch is None:
                continue
            view_a, view_b, params_a, params_b = _unpack(batch_no, batch)
            _, metrics, _ = method(
                view_a.to(device), view_b.to(device), _to(params_a, device), _to(params_b, device)
            )
            for name, value in metrics.items():
                if not name.startswith(("action_acc/", "action_r2/")):
                    continue
                value = float(value)
                if math.isnan(value):
                    continue
                sums[name] = sums.get(name, 0.0) + value * view_a.shape[0]
                weights[name] = weights.get(name, 0.0) + view_a.shape[0]
    if not weights:
        raise ValueError("action_prediction_accuracy: no batch produced an action metric")
    return {name: sums[name] / weights[name] for name in sums}


def embed_pairs(
    encoder: nn.Module,
    batches: Iterable[PairBatch | None],
    action_space: ActionSpace,
    *,
    device: str | torch.device = "cpu",
    transform: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor, ActionTargets]:
    """Frozen features of both views of every pair, and the relative-action targets.

    Both views of a batch go through the encoder together, on ``device`` (encoder and
    ``transform`` are placed there for the call, in eval mode under ``no_grad``, and put
    back afterwards); ``None`` batches are skipped. The targets are computed on the CPU
    from the view parameters.

    Returns:
        ``(h_a [N, D], h_b [N, D], targets)``, all on the CPU.
    """
    return _embed_pairs(encoder, batches, action_space, device, transform)[:3]


def _embed_pairs(
    encoder: nn.Module,
    batches: Iterable[PairBatch | None],
    action_space: ActionSpace,
    device: str | torch.device,
    transform: Callable[[Tensor], Tensor] | None,
    frames: list[Tensor] | None = None,
) -> tuple[Tensor, Tensor, ActionTargets, Tensor]:
    """:func:`embed_pairs` plus the clip of every pair ``[N]``: the batches' clip ids, or
    a clip of its own for each pair of a batch without them. With a ``frames`` list, the
    features and frame sequences come from ``encoder.features_with_frames(x)``, and those of
    every batch's views (``[2B, T, C]``, views a then b) are appended to it."""
    feats_a, feats_b, classes, values, masks, clips = [], [], [], [], [], []
    own = 0  # ids of the pairs without one, apart from every given id
    with frozen_eval(encoder), placed_on(device, encoder, transform), torch.no_grad():
        for batch_no, batch in enumerate(batches):
            if batch is None:
                continue
            view_a, view_b, params_a, params_b, ids = _unpack_with_ids(batch_no, batch)
            if ids is None:
                ids = -1 - own - torch.arange(view_a.shape[0])
                own += view_a.shape[0]
            clips.append(ids)
            views = torch.cat([view_a, view_b]).to(device)
            if transform is not None:
                views = transform(views)
            if frames is not None:
                h, sequences = encoder.features_with_frames(views)
                h = h.float()
                frames.append(sequences.float().cpu())
            else:
                h = features_of(encoder, views).float()
            b = view_a.shape[0]
            feats_a.append(h[:b].cpu())
            feats_b.append(h[b:].cpu())
            t = action_space.targets(_to(params_a, "cpu"), _to(params_b, "cpu"))
            classes.append(t.classes)
            values.append(t.values)
            masks.append(t.mask)
    if not feats_a:
        raise ValueError("embed_pairs: no (non-None) batches")
    targets = ActionTargets(torch.cat(classes), torch.cat(values), torch.cat(masks))
    return torch.cat(feats_a), torch.cat(feats_b), targets, torch.cat(clips)


def clip_split(
    clips: Tensor, test_fraction: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``(test_idx, train_idx)`` of pairs whose clips are ``clips [N]``: whole clips, in a
    random order, go to the held-out side until it holds ``round(N * test_fraction)``
    pairs, so no clip has pairs on both sides. With one pair per clip this is a random
    split of the pairs."""
    unique, of_pair = clips.unique(return_inverse=True)
    order = torch.randperm(unique.numel(), generator=generator)
    sizes = torch.bincount(of_pair, minlength=unique.numel())[order]
    n_test = int(round(clips.numel() * test_fraction))
    held_out = torch.zeros(unique.numel(), dtype=torch.bool)
    held_out[order[: int(torch.searchsorted(sizes.cumsum(0), n_test)) + 1]] = True
    test = held_out[of_pair]
    return torch.nonzero(test).flatten(), torch.nonzero(~test).flatten()


def _subset(t: ActionTargets, idx: Tensor) -> ActionTargets:
    return ActionTargets(t.classes[idx], t.values[idx], t.mask[idx])


def probe_actions(
    encoder: nn.Module,
    batches: Iterable[PairBatch | None],
    action_space: ActionSpace,
    *,
    device: str | torch.device = "cpu",
    transform: Callable[[Tensor], Tensor] | None = None,
    hidden: int = 256,
    output: str = "categorical",
    epochs: int = 50,
    lr: float = 1e-3,
    batch_size: int = 256,
    test_fraction: float = 0.2,
    seed: int = 0,
    frames: bool = False,
) -> dict[str, float]:
    """Train a fresh :class:`~stec.efference.InverseModel` on frozen features and score it.

    Both views of every batch are embedded once by the frozen ``encoder`` on ``device``
    (:func:`embed_pairs`; ``None`` batches are skipped). The view pairs are split into
    train and held-out (``test_fraction`` of the pairs) by clip (:func:`clip_split`: the
    batches' clip ids, else one clip per pair), so a held-out pair never comes from a clip
    the probe was trained on; the inverse model (``hidden`` units, batch norm) is trained
    with Adam on ``device`` on the train pairs for ``epochs`` epochs, and scored on all
    held-out pairs at once. Initialisation and batch order depend only on ``seed``; the
    global RNG state is restored afterwards.

    Alongside, ``majority_acc/<component>`` gives the accuracy of always predicting each
    target's most frequent training class: the floor an informative representation beats.
    Components with several targets also get ``target_acc/<target>`` and
    ``target_majority/<target>`` per target.

    ``frames=True`` reads what an inverse model with ``inverse_input=frames`` reads: a
    sequence of the encoder's features that keeps time as well as the pooled features
    (``encoder.features_with_frames``).

    Args:
        encoder: maps views ``[B, ...]`` to features ``[B, D, ...]`` (e.g. ``method.backbone``).
        batches: ``(view_a, view_b, params_a, params_b[, clip_ids])`` batches, e.g.
            from :class:`stec.augment.TwoViews` and the dataset's item indices.
        action_space: the components to predict (e.g. ``two_views.action_space()``).
    Returns:
        ``{"action_acc/<component>": float, "majority_acc/<component>": float, ...}``
        (``action_r2/<component>`` and no majority entries for ``output="regression"``).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if frames and not callable(getattr(encoder, "features_with_frames", None)):
        raise ValueError(
            f"probe_actions(frames=True): {type(encoder).__name__} has no features_with_frames"
        )
    sequences: list[Tensor] | None = [] if frames else None
    h_a, h_b, targets, clips = _embed_pairs(
        encoder, batches, action_space, device, transform, sequences
    )
    f_a, f_b = _frames_of_views(sequences) if sequences else (None, None)

    def inputs(idx: Tensor) -> tuple[Tensor, ...]:
        read = (h_a[idx], h_b[idx]) + ((f_a[idx], f_b[idx]) if f_a is not None else ())
        return tuple(x.to(device) for x in read)

    generator = torch.Generator().manual_seed(seed)
    test_idx, train_idx = clip_split(clips, test_fraction, generator)
    if int(round(clips.numel() * test_fraction)) < 1 or train_idx.numel() < 2:
        raise ValueError(
            f"probe_actions: {clips.numel()} view pairs of {clips.unique().numel()} clips are "
            f"too few to split train/held-out"
        )
    train_t = _subset(targets, train_idx)
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        frame_dim = f_a.shape[-1] if f_a is not None else 0
        model = InverseModel(h_a.shape[1], action_space, hidden, output, frame_dim=frame_dim)
        model = model.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    n_train = train_idx.numel()
    model.train()
    for _ in range(epochs):
        order = train_idx[torch.randperm(n_train, generator=generator)]
        for start in range(0, n_train, batch_size):
            idx = order[start : start + batch_size]
            if idx.numel() < 2:  # batch norm needs two samples
                continue
            pred = model(*inputs(idx))
            loss, _ = model.loss(pred, _to_device(_subset(targets, idx), device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        pred = model(*inputs(test_idx))
        test_t = _subset(targets, test_idx)
        _, metrics = model.loss(pred, _to_device(test_t, device))
    # the model's own majority metric is the held-out batch's; the floor below uses the
    # training pairs' most frequent class, as a guess made without seeing the test pairs
    result = {
        name: float(value)
        for name, value in metrics.items()
        if name.startswith(("action_acc/", "action_r2/", "target_acc/"))
    }
    if output == "categorical":
        result.update(_majority(train_t, test_t, action_space))
    return result


def _frames_of_views(batches: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Each batch's ``[2B, T, D]`` frames (views a then b) -> all views a, all views b."""
    halves = [batch.chunk(2) for batch in batches]
    return torch.cat([a for a, _ in halves]), torch.cat([b for _, b in halves])


def _to_device(t: ActionTargets, device: str | torch.device) -> ActionTargets:
    return ActionTargets(t.classes.to(device), t.values.to(device), t.mask.to(device))


def _majority(train: ActionTargets, test: ActionTargets, space: ActionSpace) -> dict[str, float]:
    """Held-out accuracy of predicting each target's most frequent (valid) training class."""
    result = {}
    for name, sl in space.slices.items():
        hits, count = 0.0, 0.0
        for t in range(sl.start, sl.stop):
            valid_train = train.classes[train.mask[:, t], t]
            valid_test = test.classes[test.mask[:, t], t]
            if valid_train.numel() == 0 or valid_test.numel() == 0:
                continue
            mode = valid_train.bincount().argmax()
            hits += float((valid_test == mode).sum())
            count += valid_test.numel()
            if sl.stop - sl.start > 1:
                right = float((valid_test == mode).float().mean())
                result[f"target_majority/{space.target_names[t]}"] = right
        result[f"majority_acc/{name}"] = hits / count if count else float("nan")
    return result
