import pytest
import torch
from torch import nn

import stec
from stec import ActionSpace, Binary, Continuous
from stec.evaluation import action_prediction_accuracy, probe_actions

SPACE = ActionSpace([Continuous("gain", -1.0, 1.0, n_bins=4), Binary("flip")])


def _pairs(n_batches: int, batch: int = 32, dim: int = 8, seed: int = 0):
    """Views whose first feature is the view's gain; the flip flag leaves no trace."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        base = torch.randn(batch, dim, generator=g)
        gains = torch.rand(2, batch, generator=g) - 0.5
        flips = torch.randint(0, 2, (2, batch), generator=g)
        views = []
        for side in range(2):
            v = base.clone()
            v[:, 0] = 4.0 * gains[side]
            views.append(v)
        params = [{"gain": gains[side], "flip": flips[side]} for side in range(2)]
        out.append((views[0], views[1], params[0], params[1]))
    return out


def _simclr(efference: str = "inverse") -> stec.SimCLR:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
    return stec.SimCLR(
        backbone, 16, SPACE, efference=efference, proj_hidden=32, proj_dim=16, inverse_hidden=32
    )


def test_action_prediction_accuracy_on_tiny_simclr():
    method = _simclr().train()
    batches = _pairs(3)
    result = action_prediction_accuracy(method, [batches[0], None, batches[1], batches[2]])
    assert set(result) == {"action_acc/gain", "action_acc/flip"}
    assert all(0.0 <= v <= 1.0 for v in result.values())
    assert method.training and method.inverse.training
    # With one batch it is exactly what the method reports for it in eval mode.
    single = action_prediction_accuracy(method, batches[:1])
    with torch.no_grad():
        _, metrics, _ = method.eval()(*batches[0])
    assert single["action_acc/gain"] == pytest.approx(float(metrics["action_acc/gain"]))


def test_action_prediction_accuracy_needs_an_inverse_model():
    with pytest.raises(ValueError, match="probe_actions"):
        action_prediction_accuracy(_simclr("off"), _pairs(1))


def test_probe_actions_finds_the_encoded_action_only():
    encoder = nn.Identity()
    result = probe_actions(
        encoder, _pairs(30), SPACE, hidden=64, epochs=10, lr=3e-3, batch_size=128
    )
    assert set(result) == {
        "action_acc/gain",
        "action_acc/flip",
        "majority_acc/gain",
        "majority_acc/flip",
    }
    # The gain is in the features, so its relative action is learnable...
    assert result["action_acc/gain"] > result["majority_acc/gain"] + 0.25
    # ...the flip leaves no trace, so nothing beats guessing.
    assert result["action_acc/flip"] < 0.65


def test_probe_actions_is_deterministic_and_keeps_the_global_rng():
    method = _simclr("off")
    state = torch.get_rng_state()
    a = probe_actions(method.backbone, _pairs(4), SPACE, hidden=16, epochs=2)
    assert torch.equal(torch.get_rng_state(), state)
    b = probe_actions(method.backbone, _pairs(4), SPACE, hidden=16, epochs=2)
    assert a == b
