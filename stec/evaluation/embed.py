"""Embedding a dataset with a frozen encoder, on the device the caller asks for."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn


@contextlib.contextmanager
def frozen_eval(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block and restore every submodule's own mode
    afterwards (not just the root's: a submodule deliberately kept in eval mode, such as
    frozen batch norm, stays so)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def placed_on(device: str | torch.device, *modules: object) -> Iterator[None]:
    """Run the block with every parameter and buffer of ``modules`` on ``device``.

    Afterwards each parameter (with its gradient) and buffer is again the very tensor it
    was before the block: nothing is copied back, values changed on ``device`` are
    dropped, and a module spread over several devices returns to that placement. Entries
    of ``modules`` that are not ``nn.Module`` (plain callables, ``None``) are left alone;
    modules already on ``device`` are not touched. Functions that run a caller's encoder
    place it with this, so that model and data always meet on the same device.
    """
    target = torch.empty(0, device=device).device  # "cuda" -> "cuda:<current>"
    params: list[tuple[dict, str, nn.Parameter, Tensor, Tensor | None]] = []
    buffers: list[tuple[dict, str, Tensor]] = []
    roots = [m for m in modules if isinstance(m, nn.Module)]
    for sub in {id(s): s for root in roots for s in root.modules()}.values():
        for name, p in sub._parameters.items():
            if p is not None:
                params.append((sub._parameters, name, p, p.data, p.grad))
        for name, b in sub._buffers.items():
            if b is not None:
                buffers.append((sub._buffers, name, b))
    tensors = [p for _, _, p, _, _ in params] + [b for _, _, b in buffers]
    if all(t.device == target for t in tensors):
        yield
        return
    for root in roots:
        root.to(target)
    try:
        yield
    finally:
        for store, name, param, data, grad in params:
            store[name] = param  # ``to`` may have put a new Parameter there
            param.grad = None
            param.data = data
            param.grad = grad
        for store, name, buffer in buffers:
            store[name] = buffer


def features_of(encoder: nn.Module, x: Tensor) -> Tensor:
    """Run the encoder and flatten its output to ``[B, D]``.

    A tuple/list output (e.g. ``(h, hidden, z)``) uses its first element, the backbone
    features.
    """
    out = encoder(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, Tensor) or out.dim() < 2:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"the encoder must return a tensor [B, D, ...], got {shape}")
    return out.flatten(1)


def embed(
    encoder: nn.Module,
    loader: Iterable,
    device: str | torch.device = "cpu",
    transform: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Embed every batch of ``loader`` with the frozen ``encoder``.

    The encoder runs in eval mode under ``torch.no_grad()`` (not inference mode, so the
    returned tensors can feed a probe that is trained with autograd); its train/eval mode
    is restored afterwards, submodule by submodule. The encoder and ``transform`` (when it
    is an ``nn.Module``, e.g. a normaliser with buffers) run on ``device`` for the call
    and are left where they were found (:func:`placed_on`). ``None`` batches (a collate
    function's way of dropping unreadable files) are skipped.

    Args:
        encoder: maps ``[B, ...]`` inputs to ``[B, D, ...]`` features (flattened to ``[B, D]``).
        loader: yields ``(x, label, index)`` with ``x`` ``[B, ...]``, ``label`` ``[B]`` int
            or ``[B, C]`` multi-hot float, ``index`` ``[B]`` int dataset indices. A 2-tuple
            ``(x, label)`` is accepted too; its indices count the samples seen so far.
        device: where the encoder, the transform and the batches meet.
        transform: optional ``x -> x`` applied on ``device`` before the encoder
            (e.g. a normaliser).
    Returns:
        ``(features [N, D] float32, labels [N] or [N, C], indices [N] int64)``, all on CPU.
    """
    feats: list[Tensor] = []
    labels: list[Tensor] = []
    indices: list[Tensor] = []
    seen = 0
    with frozen_eval(encoder), placed_on(device, encoder, transform), torch.no_grad():
        for batch_no, batch in enumerate(loader):
            if batch is None:
                continue
            if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
                raise ValueError(
                    f"batch {batch_no}: the loader must yield (x, label, index) or (x, label), "
                    f"got {type(batch).__name__}"
                    + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
                )
            x, label = batch[0], torch.as_tensor(batch[1])
            x = x.to(device, non_blocking=True)
            if transform is not None:
                x = transform(x)
            h = features_of(encoder, x).float().cpu()
            if label.shape[0] != h.shape[0]:
                raise ValueError(
                    f"batch {batch_no}: {h.shape[0]} inputs but {label.shape[0]} labels"
                )
            if len(batch) == 3:
                index = torch.as_tensor(batch[2]).long().reshape(-1).cpu()
            else:
                index = torch.arange(seen, seen + h.shape[0])
            seen += h.shape[0]
            feats.append(h)
            labels.append(label.cpu())
            indices.append(index)
    if not feats:
        raise ValueError("embed: the loader yielded no (non-None) batches")
    return torch.cat(feats), torch.cat(labels), torch.cat(indices)
