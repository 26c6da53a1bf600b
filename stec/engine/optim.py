"""Optimisers (LARS, SGD, AdamW) and the per-step warmup + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

OPTIMIZERS = ("lars", "sgd", "adamw")


class LARS(Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017).

    For a weight ``w`` with gradient ``g`` the step direction is
    ``(g + wd·w) · η‖w‖ / (‖g‖ + wd·‖w‖ + 1e-8)``, accumulated in a momentum buffer
    (``buf = momentum·buf + d``, no dampening) and applied as ``w -= lr·buf``: the update
    of the LARS paper and of the reference implementation the official S-TEC code trains
    with. A weight or gradient of norm 0 takes the plain gradient step.

    Parameter groups with ``lars_exclude=True`` (biases and normalisation parameters, see
    :func:`param_groups`) get neither weight decay nor the trust ratio: plain SGD with
    momentum, as in the official S-TEC code, SimCLR and BYOL.

    Args:
        trust_coefficient: ``η``. 0.001 is the LARS paper's value and the one of the
            official S-TEC, SimCLR and BYOL recipes; their learning rates (e.g. 4.0 for
            S-TEC on CIFAR) are tuned for it.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"optimizer.lr must be positive, got {lr}")
        if trust_coefficient <= 0:
            raise ValueError(f"LARS trust_coefficient must be positive, got {trust_coefficient}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            lars_exclude=False,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # checkpoints written before the key was renamed
            if "eta" in group:
                group.setdefault("trust_coefficient", group.pop("eta"))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not group["lars_exclude"]:
                    p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    trust = group["trust_coefficient"] * p_norm / (g_norm + wd * p_norm + 1e-8)
                    adapted = grad.add(p, alpha=wd).mul_(trust)
                    # no host synchronisation: both branches are computed on the device
                    grad = torch.where((p_norm > 0) & (g_norm > 0), adapted, grad)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights (decayed, adapted) and biases + norm parameters (neither).

    Norm parameters are found by module type (batch, layer and group norm) and biases by
    name or by being 1-D, so every normalisation layer is covered wherever it sits (the
    official S-TEC code matches the names ``bias`` and ``bn``, which misses the batch-norm
    scales inside ResNet shortcuts, ``downsample.1.weight``).
    """
    decay, no_decay = [], []
    for module in model.modules():
        is_norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            (no_decay if is_norm or name.endswith("bias") or param.ndim <= 1 else decay).append(
                param
            )
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
    ]


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    trust_coefficient: float = 0.001,
) -> Optimizer:
    """``lars`` | ``sgd`` | ``adamw`` over :func:`param_groups` (``trust_coefficient``: LARS
    only)."""
    if name not in OPTIMIZERS:
        raise ValueError(
            f"optimizer.name={name!r} is not valid; allowed values: {', '.join(OPTIMIZERS)}"
        )
    groups = param_groups(model, weight_decay)
    if name == "lars":
        return LARS(
            groups,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
        )
    for group in groups:
        group.pop("lars_exclude")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warmup from 0, then cosine decay to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Picklable LR lambda (so the scheduler state dict round-trips)."""

    def __init__(self, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> None:
        self.total_steps, self.warmup_steps, self.min_ratio = total_steps, warmup_steps, min_ratio

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, self.total_steps, self.warmup_steps, self.min_ratio)


def build_scheduler(
    optimizer: Optimizer, total_steps: int, warmup_steps: int, min_ratio: float = 0.0
) -> LambdaLR:
    return LambdaLR(optimizer, WarmupCosine(total_steps, warmup_steps, min_ratio))
