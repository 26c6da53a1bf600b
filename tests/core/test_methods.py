"""Each method's loss decreases on a tiny problem, with the efference copy off and on."""

import pytest
import torch

from stec import EFFERENCE_MODES, build_method
from tests.core.toy import ToyBackbone, ToySignals, toy_augmenter


def train_losses(method_name: str, efference: str, steps: int = 60) -> tuple[list[float], dict]:
    torch.manual_seed(0)
    aug = toy_augmenter()
    method = build_method(
        method_name,
        ToyBackbone(),
        32,
        action_space=aug.action_space(),
        efference=efference,
        proj_hidden=64,
        proj_dim=16,
        inverse_hidden=64,
        action_embed_dim=16,
    )
    opt = torch.optim.Adam(method.parameters(), lr=2e-3)
    data = ToySignals(n=64)
    losses, metrics = [], {}
    for step in range(steps):
        x = data.x[torch.randperm(64)[:32]].unsqueeze(1)
        loss, metrics, _ = method(*aug(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.on_step_end(step / steps)
        losses.append(loss.item())
    return losses, metrics


@pytest.mark.parametrize("efference", EFFERENCE_MODES)
@pytest.mark.parametrize("method_name", ["simclr", "byol", "relic"])
def test_loss_decreases(method_name, efference):
    losses, metrics = train_losses(method_name, efference)
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.9 * first, (first, last)
    assert {"loss", "ssl_loss", "pos_acc"} <= set(metrics)
    if efference in ("inverse", "both"):
        assert {"action_loss", "action_acc/shift", "action_acc/gain"} <= set(metrics)
    if efference == "off":
        assert not any(k.startswith("action") for k in metrics)


def test_efference_needs_an_action_space():
    with pytest.raises(ValueError, match="efference='inverse' needs an action space"):
        build_method("byol", ToyBackbone(), 32, action_space=None, efference="inverse")
    with pytest.raises(
        ValueError, match="efference='sideways' is not valid; allowed values: off, inverse"
    ):
        build_method("byol", ToyBackbone(), 32, action_space=None, efference="sideways")
    with pytest.raises(
        ValueError, match="method='moco' is not valid; allowed values: simclr, byol, relic"
    ):
        build_method("moco", ToyBackbone(), 32)


def test_inverse_model_can_read_the_projector_hidden_layer():
    aug = toy_augmenter()
    method = build_method(
        "simclr",
        ToyBackbone(),
        32,
        action_space=aug.action_space(),
        inverse_input="projector_hidden",
        proj_hidden=48,
        proj_dim=16,
        inverse_hidden=16,
    )
    assert method.inverse.net[0].in_features == 2 * 48
    loss, metrics, _ = method(*aug(torch.randn(8, 1, 32)))
    loss.backward()
    assert method.inverse.net[0].weight.grad is not None


def test_byol_target_follows_online_by_ema():
    torch.manual_seed(0)
    method = build_method(
        "byol", ToyBackbone(), 32, efference="off", proj_hidden=16, proj_dim=8, momentum=0.9
    )
    online = next(method.backbone.parameters())
    target = next(method.target_backbone.parameters())
    before = target.detach().clone()
    with torch.no_grad():
        online.add_(1.0)
    method.on_step_end(0.0)
    assert torch.allclose(target, before + 0.1, atol=1e-6)
    assert not target.requires_grad


def test_byol_reloaded_momentum_drives_the_next_ema_update():
    def fresh():
        torch.manual_seed(0)
        return build_method(
            "byol", ToyBackbone(), 32, efference="off", proj_hidden=16, proj_dim=8, momentum=0.5
        )

    trained = fresh()
    trained.on_step_end(0.5)  # the schedule moves the momentum to 0.75
    assert float(trained.momentum) == pytest.approx(0.75)
    reloaded = fresh()
    reloaded.load_state_dict(trained.state_dict())
    target = next(reloaded.target_backbone.parameters())
    before = target.detach().clone()
    with torch.no_grad():
        next(reloaded.backbone.parameters()).copy_(before + 1.0)
    reloaded.on_step_end(1.0)
    assert torch.allclose(target, before + 0.25, atol=1e-6)  # lerp by 1 - 0.75
    assert float(reloaded.momentum) == pytest.approx(1.0)


def test_regression_inverse_model_learns_the_shift():
    torch.manual_seed(0)
    aug = toy_augmenter()
    method = build_method(
        "simclr",
        ToyBackbone(),
        32,
        action_space=aug.action_space(),
        inverse_output="regression",
        proj_hidden=32,
        proj_dim=16,
        inverse_hidden=64,
    )
    opt = torch.optim.Adam(method.parameters(), lr=3e-3)
    data = ToySignals(n=64)
    r2 = []
    for _ in range(200):
        loss, metrics, _ = method(*aug(data.x[torch.randperm(64)[:32]].unsqueeze(1)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        r2.append(float(metrics["action_r2/shift"]))
    assert "action_r2/gain" in metrics and "action_acc/shift" not in metrics
    early, late = sum(r2[:10]) / 10, sum(r2[-20:]) / 20
    assert late > 0.15 and late > early + 0.2, (early, late)


@pytest.mark.parametrize("efference", ["inverse", "both"])
def test_the_efference_copys_weight_rises_over_its_warm_up(efference):
    # with lambda_manip_warmup=0.5 the action losses weigh 0 at the start, half of
    # lambda_manip a quarter of the way in and all of it from halfway; the SSL loss is as is
    torch.manual_seed(0)
    aug = toy_augmenter()
    method = build_method(
        "simclr", ToyBackbone(), 32, action_space=aug.action_space(), efference=efference,
        lambda_switch=2.0, lambda_manip=0.4, lambda_manip_warmup=0.5, proj_hidden=32,
        proj_dim=16, inverse_hidden=32, action_embed_dim=8,
    )  # fmt: skip
    views = aug(ToySignals(n=16).x.unsqueeze(1))
    for progress, weight in [(0.0, 0.0), (0.25, 0.2), (0.5, 0.4), (0.9, 0.4)]:
        method.set_progress(progress)
        loss, metrics, _ = method(*views)
        efference_losses = metrics["action_loss"] + metrics.get("forward_loss", 0.0)
        expected = 2.0 * metrics["ssl_loss"] + weight * efference_losses
        assert torch.allclose(loss, expected), (progress, loss, expected)
    # no warm-up: the whole weight from the first step, whatever the progress
    method = build_method(
        "simclr", ToyBackbone(), 32, action_space=aug.action_space(), efference=efference,
        lambda_manip=0.4, proj_hidden=32, proj_dim=16, inverse_hidden=32, action_embed_dim=8,
    )  # fmt: skip
    method.set_progress(0.0)
    loss, metrics, _ = method(*views)
    expected = metrics["ssl_loss"] + 0.4 * (
        metrics["action_loss"] + metrics.get("forward_loss", 0.0)
    )
    assert torch.allclose(loss, expected)


@pytest.mark.parametrize("warmup", [-0.1, 1.5])
def test_a_warm_up_outside_the_run_is_refused(warmup):
    aug = toy_augmenter()
    with pytest.raises(ValueError, match=f"lambda_manip_warmup={warmup} must be in \\[0, 1\\]"):
        build_method(
            "simclr", ToyBackbone(), 32, action_space=aug.action_space(),
            lambda_manip_warmup=warmup,
        )  # fmt: skip
