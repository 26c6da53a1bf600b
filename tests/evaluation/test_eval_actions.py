import pytest
import torch
from torch import nn

import stec
from stec import ActionSpace, Binary, Continuous
from stec.evaluation import action_prediction_accuracy, embed_pairs, probe_actions
from tests.evaluation.devices import DeviceRecorder, assert_unchanged, snapshot

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


class PairMethod(nn.Module):
    """A stand-in for a trained method: its inverse model guesses whether the gain rose."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Linear(8, 4)
        self.inverse = nn.Linear(8, 2)

    def forward(self, view_a, view_b, params_a, params_b):
        logits = self.inverse(torch.cat([self.backbone(view_a), self.backbone(view_b)], 1))
        rose = (params_b["gain"] > params_a["gain"]).long()
        return logits.sum(), {"action_acc/gain": (logits.argmax(1) == rose).float().mean()}, None


def test_action_prediction_accuracy_runs_the_method_on_the_device_and_puts_it_back():
    method = DeviceRecorder(PairMethod())
    batches = _pairs(2)
    on_cpu = action_prediction_accuracy(method, batches)
    with torch.no_grad():
        expected = [float(method.inner(*b)[1]["action_acc/gain"]) for b in batches]
    assert on_cpu["action_acc/gain"] == pytest.approx(sum(expected) / 2)
    before = snapshot(method)
    method.calls.clear()
    on_meta = action_prediction_accuracy(method, batches, device="meta")
    assert len(method.calls) == 2 and method.devices_seen() == {"meta"}
    assert set(on_meta) == {"action_acc/gain"}
    assert_unchanged(method, before)


def test_embed_pairs_runs_the_encoder_on_the_device_and_targets_on_the_cpu():
    encoder = DeviceRecorder(nn.Sequential(nn.Linear(8, 6), nn.BatchNorm1d(6)))
    before = snapshot(encoder)
    batches = _pairs(3, batch=4)
    h_a, h_b, targets = embed_pairs(encoder, [batches[0], None, *batches[1:]], SPACE, device="meta")
    assert len(encoder.calls) == 3 and encoder.devices_seen() == {"meta"}
    assert h_a.shape == h_b.shape == (12, 6)
    assert_unchanged(encoder, before)
    expected = [SPACE.targets(b[2], b[3]) for b in batches]
    assert torch.equal(targets.classes, torch.cat([t.classes for t in expected]))
    assert torch.equal(targets.mask, torch.cat([t.mask for t in expected]))
    # on the CPU the features are the encoder's (eval mode) on each view
    h_a, h_b, _ = embed_pairs(encoder, batches[:1], SPACE)
    with torch.no_grad():
        encoder.inner.eval()
        torch.testing.assert_close(h_a, encoder.inner(batches[0][0]))
        torch.testing.assert_close(h_b, encoder.inner(batches[0][1]))


def _repeated_clips(n_clips: int = 150, passes: int = 3, batch: int = 50):
    """Every clip gives ``passes`` view pairs (as ``evaluate.action_probe_epochs`` passes
    over the data do). Its features identify the clip, and the flip of each of its pairs
    is the clip's own: only memorising clips predicts it."""
    g = torch.Generator().manual_seed(5)
    features = torch.randn(n_clips, 64, generator=g)
    flips = torch.randint(0, 2, (2, n_clips), generator=g)
    order = torch.cat([torch.randperm(n_clips, generator=g) for _ in range(passes)])
    out = []
    for ids in order.split(batch):
        views = features[ids] + 0.01 * torch.randn(len(ids), 64, generator=g)
        params = [{"gain": torch.zeros(len(ids)), "flip": flips[side, ids]} for side in range(2)]
        out.append((views, views.clone(), params[0], params[1], ids))
    return out


def test_pairs_of_one_clip_stay_on_one_side_of_the_probe_split():
    kwargs = dict(hidden=128, epochs=30, lr=1e-2, batch_size=64)
    by_clip = probe_actions(nn.Identity(), _repeated_clips(), SPACE, **kwargs)
    # held-out clips were never seen: their flips cannot be read from the features
    assert by_clip["action_acc/flip"] < 0.7
    # split by pair, held-out pairs mostly come from clips seen in training: memorised
    by_pair = probe_actions(nn.Identity(), [b[:4] for b in _repeated_clips()], SPACE, **kwargs)
    assert by_pair["action_acc/flip"] > 0.9
    with pytest.raises(ValueError, match="3 clip ids for 50 view pairs"):
        probe_actions(nn.Identity(), [(*_repeated_clips()[0][:4], torch.arange(3))], SPACE)
