"""LARS and its parameter groups, checked value by value against the official S-TEC recipe:
LARS (trust coefficient, weight decay, momentum 0.9) for weights, plain SGD with momentum
and without weight decay for biases and normalisation parameters."""

import pytest
import torch
from torch import nn

from stec import build_method
from stec.cli import ConfigError, compose_config, trainer_config
from stec.engine.optim import LARS, build_optimizer, param_groups
from stec.engine.trainer import Trainer, TrainerConfig
from tests.core.toy import ToyBackbone, ToySignals, toy_augmenter

EPS = 1e-8  # the denominator guard of the LARS reference implementation


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, bias=True)
        self.bn2d = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 4, bias=True)
        self.bn1d = nn.BatchNorm1d(4)
        self.ln = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2, bias=False)


def _ids(params):
    return {id(p) for p in params}


def test_param_groups_split_weights_from_biases_and_norm_parameters():
    model = Tiny()
    decayed, plain = param_groups(model, weight_decay=0.1)
    assert _ids(decayed["params"]) == _ids([model.conv.weight, model.fc.weight, model.head.weight])
    assert _ids(plain["params"]) == _ids(
        [
            model.conv.bias,
            model.fc.bias,
            model.bn2d.weight,
            model.bn2d.bias,
            model.bn1d.weight,
            model.bn1d.bias,
            model.ln.weight,
            model.ln.bias,
        ]
    )
    assert (decayed["weight_decay"], plain["weight_decay"]) == (0.1, 0.0)
    assert (decayed["lars_exclude"], plain["lars_exclude"]) == (False, True)


def _set_grads(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)


def _lars_update(w, g, wd, eta):
    """The reference LARS direction: ``(g + wd·w) · η‖w‖ / (‖g‖ + wd‖w‖ + eps)``."""
    trust = eta * w.norm() / (g.norm() + wd * w.norm() + EPS)
    return (g + wd * w) * trust


@pytest.mark.parametrize("eta", [0.001, 0.02])
def test_two_lars_steps_match_the_formula(eta):
    torch.manual_seed(0)
    model = Tiny()
    with torch.no_grad():  # non-trivial norm parameters, so that decay would show
        for p in model.parameters():
            p.add_(0.5)
    lr, wd, momentum = 0.7, 0.3, 0.9  # a large decay separates ‖g‖ + wd‖w‖ from ‖g + wd·w‖
    opt = build_optimizer(model, "lars", lr, wd, momentum, trust_coefficient=eta)
    assert isinstance(opt, LARS)
    weights = _ids([model.conv.weight, model.fc.weight, model.head.weight])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _set_grads(model, 1)
    grads1 = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    after1 = {n: p.detach().clone() for n, p in model.named_parameters()}
    _set_grads(model, 2)
    grads2 = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    for name, p in model.named_parameters():
        w0, g1, g2 = before[name], grads1[name], grads2[name]
        if id(p) in weights:
            d1 = _lars_update(w0, g1, wd, eta)
            w1 = w0 - lr * d1
            d2 = _lars_update(w1, g2, wd, eta)
        else:  # plain SGD with momentum: no weight decay, no trust ratio
            d1, d2 = g1, g2
            w1 = w0 - lr * d1
        assert torch.allclose(after1[name], w1, atol=1e-6), name
        assert torch.allclose(p.detach(), w1 - lr * (momentum * d1 + d2), atol=1e-6), name


def test_lars_leaves_a_zero_weight_or_zero_gradient_unscaled():
    w = nn.Parameter(torch.zeros(3))
    opt = LARS([{"params": [w], "weight_decay": 0.1, "lars_exclude": False}], lr=1.0)
    w.grad = torch.tensor([1.0, -2.0, 0.5])
    opt.step()
    assert torch.allclose(w.detach(), -torch.tensor([1.0, -2.0, 0.5]))


def test_trust_coefficient_is_validated():
    model = Tiny()
    with pytest.raises(ValueError, match="trust_coefficient must be positive"):
        build_optimizer(model, "lars", 0.1, 0.0, trust_coefficient=0.0)


def test_trainer_passes_its_trust_coefficient_to_lars(tmp_path):
    aug = toy_augmenter()
    method = build_method(
        "simclr", ToyBackbone(), 32, action_space=aug.action_space(), proj_hidden=8, proj_dim=4
    )
    cfg = TrainerConfig(
        epochs=1, batch_size=16, optimizer="lars", lr=0.1, trust_coefficient=0.005, progress=False
    )
    trainer = Trainer(method, ToySignals(n=32), cfg, tmp_path, augmenter=aug)
    assert [g["trust_coefficient"] for g in trainer.optimizer.param_groups] == [0.005, 0.005]
    assert TrainerConfig().trust_coefficient == 0.001  # LARS's own default (You et al. 2017)


def test_config_key_trust_coefficient():
    cfg = compose_config("vision", ["trainer.trust_coefficient=0.002"])
    assert trainer_config(cfg).trust_coefficient == 0.002
    assert trainer_config(compose_config("vision", [])).trust_coefficient == 0.001
    with pytest.raises(ConfigError, match=r"trainer.trust_coefficient=-1 must be positive"):
        trainer_config(compose_config("vision", ["trainer.trust_coefficient=-1"]))


def test_lars_step_stays_on_the_device_without_host_synchronisation():
    # meta tensors have no values: any .item() or Python branch on a norm would raise
    model = Tiny().to("meta")
    for p in model.parameters():
        p.grad = torch.empty_like(p)
    opt = build_optimizer(model, "lars", 0.1, 1e-6)
    opt.step()
    opt.step()
    assert all(opt.state[p]["momentum_buffer"].is_meta for p in model.parameters())


def test_resuming_an_optimiser_state_that_names_the_coefficient_eta():
    model = Tiny()
    opt = build_optimizer(model, "lars", 0.1, 1e-6)
    state = opt.state_dict()
    for group in state["param_groups"]:
        group["eta"] = group.pop("trust_coefficient") * 20
    fresh = build_optimizer(model, "lars", 0.1, 1e-6)
    fresh.load_state_dict(state)
    assert [g["trust_coefficient"] for g in fresh.param_groups] == [0.02, 0.02]
    _set_grads(model, 3)
    fresh.step()
