"""The read gate (``read_gate``): a target trains the encoder only as far as the inverse
model reads it above its majority rate, while the inverse model learns from every target."""

import copy

import pytest
import torch

from stec import ActionSpace, Continuous, InverseModel, build_method
from stec.actions import ActionTargets
from tests.core.toy import ToyBackbone, ToySignals, toy_augmenter


def two_targets() -> ActionSpace:
    return ActionSpace([Continuous("shift", -1, 1, n_bins=2), Continuous("gain", -1, 1, n_bins=2)])


def targets(classes: list[list[int]], mask: list[list[bool]] | None = None) -> ActionTargets:
    c = torch.tensor(classes)
    m = torch.ones_like(c, dtype=torch.bool) if mask is None else torch.tensor(mask)
    return ActionTargets(classes=c, values=c.float(), mask=m)


@pytest.mark.parametrize("output", ["categorical", "regression"])
def test_the_gate_scales_each_targets_gradient_into_the_inputs_not_the_models_own(output):
    torch.manual_seed(0)
    model = InverseModel(6, two_targets(), hidden=16, output=output, read_gate=0.05).eval()
    # a margin of noise (under 2 points) opens nothing; 2 + 2.5 points opens half
    model.read_margin.copy_(torch.tensor([0.015, 0.045]))
    assert model.gate().tolist() == pytest.approx([0.0, 0.5])
    plain = copy.deepcopy(model)
    plain.read_gate = 0.0  # the same weights, every gradient whole
    h_a, h_b = torch.randn(8, 6), torch.randn(8, 6)
    y = targets([[0, 1], [1, 0]] * 4)
    for kept, gate in enumerate(model.gate().tolist()):  # the loss of one target at a time
        mask = torch.zeros(8, 2, dtype=torch.bool)
        mask[:, kept] = True
        y.mask = mask
        grads = []
        for m in (model, plain):
            inputs = (h_a.clone().requires_grad_(), h_b.clone().requires_grad_())
            m.zero_grad()
            out = m.gated(*inputs)
            assert out.shape == m(*inputs).shape
            loss, _ = m.loss(out, y)
            loss.backward()
            grads.append((loss, inputs[0].grad, [p.grad.clone() for p in m.parameters()]))
        (loss_g, input_g, params_g), (loss_p, input_p, params_p) = grads
        assert torch.equal(loss_g, loss_p)  # the gate changes no value
        assert input_p.abs().sum() > 0
        assert torch.allclose(input_g, gate * input_p, atol=1e-7)
        for g, p in zip(params_g, params_p, strict=True):  # the model learns from both
            assert torch.allclose(g, p, atol=1e-7)


def test_the_gates_second_pass_moves_the_running_statistics_as_one_pass_would():
    torch.manual_seed(0)
    gated = InverseModel(6, two_targets(), hidden=16, read_gate=0.05).train()
    plain = copy.deepcopy(gated)
    plain.read_gate = 0.0
    inputs = torch.randn(8, 6), torch.randn(8, 6)
    for model in (gated, plain):
        model.gated(*inputs)
    buffers = dict(plain.named_buffers())
    moved = [name for name in buffers if "running_mean" in name]
    assert moved and all(buffers[name].abs().sum() > 0 for name in moved)
    for name, value in gated.named_buffers():
        assert torch.equal(value, buffers[name]), name


def test_the_gate_follows_each_targets_accuracy_above_its_majority_rate():
    model = InverseModel(6, two_targets(), hidden=16, read_gate=0.05).train()
    y = targets([[0, 0], [0, 0], [1, 0], [1, 1]])  # majority rates: shift 1/2, gain 3/4
    right = torch.zeros(4, 2, 2)
    right[torch.arange(4), 0, y.classes[:, 0]] = 5.0  # shift always right
    right[torch.arange(4), 1, 1 - y.classes[:, 1]] = 5.0  # gain always wrong
    # the first batch: no class counted yet, so the majority floor is a blind guess
    _, metrics = model.loss(right, y)
    assert model.read_margin.tolist() == [0.0, 0.0]
    _, metrics = model.loss(right, y)  # now the floor knows class 0 leads both
    assert metrics["action_majority/shift"] == pytest.approx(0.5)
    expected = [0.02 * (1.0 - 0.5), 0.02 * (0.0 - 0.75)]
    assert model.read_margin.tolist() == pytest.approx(expected)
    assert model.gate().tolist() == [0.0, 0.0]  # 1 point above: not read yet
    assert metrics["action_gate/shift"] == 0.0
    # a target undefined in a batch keeps its mean; evaluation changes nothing
    model.loss(right, targets(y.classes.tolist(), [[True, False]] * 4))
    assert model.read_margin[1] == pytest.approx(expected[1])
    assert model.read_margin[0] == pytest.approx(0.98 * expected[0] + 0.02 * 0.5)
    before = model.read_margin.clone()
    model.eval().loss(right, y)
    assert torch.equal(model.read_margin, before)
    # read far above its majority for long, the target trains the encoder fully
    model.train()
    for _ in range(2):  # 4 batches counted: 0.5 * (1 - 0.98^4) = 3.9 points, 2 + 1.9
        model.loss(right, y)
    assert model.gate()[0] == pytest.approx((0.5 * (1 - 0.98**4) - 0.02) / 0.05, abs=1e-5)
    for _ in range(200):
        model.loss(right, y)
    assert model.gate().tolist() == [1.0, 0.0]


def test_an_action_nobody_reads_leaves_the_encoder_to_the_ssl_loss():
    def grads(read_gate: float) -> tuple[list, list, dict]:
        torch.manual_seed(0)
        method = build_method(
            "simclr", ToyBackbone(), 32, action_space=toy_augmenter().action_space(),
            efference="inverse", lambda_switch=0.0, proj_hidden=32, proj_dim=16,
            inverse_hidden=32, read_gate=read_gate,
        )  # fmt: skip
        views = toy_augmenter()(ToySignals(n=16).x.unsqueeze(1))
        loss, metrics, _ = method(*views)
        loss.backward()
        backbone = [p.grad for p in method.backbone.parameters()]
        inverse = [p.grad for p in method.inverse.parameters()]
        return backbone, inverse, metrics

    backbone, inverse, metrics = grads(0.05)  # a new run reads nothing yet: the gate is shut
    assert all(g is None or not g.any() for g in backbone)
    assert any(g is not None and g.abs().sum() > 0 for g in inverse)
    assert all(v == 0 for k, v in metrics.items() if k.startswith("action_gate/"))
    backbone, _, metrics = grads(0.0)  # without the gate the action loss trains the encoder
    assert any(g is not None and g.abs().sum() > 0 for g in backbone)
    assert not any(k.startswith("action_gate/") for k in metrics)


def test_a_regression_model_is_gated_by_the_share_of_variance_it_reads():
    # the floor of a regression is guessing the batch's mean (R² 0); far worse counts as -1,
    # so that an untrained model's wild guesses do not hold the gate shut for long
    model = InverseModel(6, two_targets(), hidden=16, output="regression", read_gate=0.05)
    y = targets([[0, 0], [0, 1], [1, 0], [1, 1]])
    prediction = torch.stack([y.values[:, 0], torch.full((4,), 3.0)], dim=1)  # shift exact
    _, metrics = model.train().loss(prediction, y)
    assert metrics["action_r2/gain"] == pytest.approx(1 - 6.5 / 0.25)
    assert model.read_margin.tolist() == pytest.approx([0.02, -0.02])
    assert metrics["action_gate/shift"] == 0.0  # 2 points: read at all, not yet let through
    for _ in range(200):
        model.loss(prediction, y)
    assert model.gate().tolist() == [1.0, 0.0]
    before = model.read_margin.clone()
    model.eval().loss(prediction, y)
    assert torch.equal(model.read_margin, before)


def test_a_gate_that_cannot_work_is_refused():
    with pytest.raises(ValueError, match="read_gate=-0.1 must be a number >= 0"):
        InverseModel(6, two_targets(), read_gate=-0.1)
