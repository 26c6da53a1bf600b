"""The inverse model learns a learnable action and stays at chance on shuffled actions."""

import torch

from stec import ActionSpace, Continuous, InverseModel
from tests.core.toy import LENGTH, CyclicShift

N_BINS = 4


def train_inverse(shuffle: bool, steps: int = 300) -> float:
    torch.manual_seed(0)
    shift = CyclicShift(max_share=0.5)
    space = ActionSpace([Continuous("shift", -0.5, 0.5, n_bins=N_BINS)])
    model = InverseModel(LENGTH, space, hidden=128)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps + 50):
        x = torch.randn(128, 1, LENGTH)
        view_a, p_a = shift(x)
        view_b, p_b = shift(x)
        targets = space.targets(p_a, p_b)
        if shuffle:
            targets.classes = targets.classes[torch.randperm(len(targets.classes))]
        logits = model(view_a.flatten(1), view_b.flatten(1))
        loss, metrics = model.loss(logits, targets)
        if step < steps:
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:  # held-out evaluation on fresh signals
            model.eval()
            accs = getattr(train_inverse, "accs", [])
            accs.append(float(metrics["action_acc/shift"]))
            train_inverse.accs = accs
    accs = train_inverse.accs[-50:]
    train_inverse.accs = []
    return sum(accs) / len(accs)


def test_inverse_model_beats_chance_on_a_learnable_action():
    acc = train_inverse(shuffle=False)
    assert acc > 0.7, acc  # chance is about 1/4 (the relative shift is peaked at 0)


def test_inverse_model_stays_near_chance_on_shuffled_actions():
    acc = train_inverse(shuffle=True)
    assert acc < 0.5, acc


def test_inverse_model_reports_accuracy_next_to_the_majority_rate_per_component():
    space = ActionSpace([Continuous("shift", -0.5, 0.5, n_bins=N_BINS), Continuous("gain", -1, 1)])
    model = InverseModel(4, space, hidden=8, component_weights={"gain": 3.0})
    assert torch.allclose(model.target_weight, torch.tensor([0.25, 0.75]))

    def targets(shift, gain):
        n = len(shift)
        return space.targets(
            {"shift": torch.zeros(n), "gain": torch.zeros(n)},
            {"shift": torch.tensor(shift), "gain": torch.tensor(gain)},
        )

    first = targets([0.0, 0.0, 0.0, 0.4], [0.0, 0.1, 0.9, 0.9])
    model.loss(model(torch.randn(4, 4), torch.randn(4, 4)), first)
    _, metrics = model.loss(model(torch.randn(4, 4), torch.randn(4, 4)), first)
    assert set(metrics) == {
        "action_acc/shift",
        "action_acc/gain",
        "action_majority/shift",
        "action_majority/gain",
    }
    # the most frequent class seen before this batch answers every pair
    assert float(metrics["action_majority/shift"]) == 0.75
    # a batch where the running majority is wrong: the floor is not the batch's own majority
    second = targets([0.4, 0.4, 0.4, 0.4], [0.0, 0.0, 0.0, 0.0])
    _, metrics = model.loss(model(torch.randn(4, 4), torch.randn(4, 4)), second)
    assert float(metrics["action_majority/shift"]) == 0.0
    assert model.seen_classes[0].sum() == 12
    # evaluation does not count
    model.eval()
    model.loss(model(torch.randn(4, 4), torch.randn(4, 4)), second)
    assert model.seen_classes[0].sum() == 12


def test_component_weights_come_from_the_config():
    from stec.cli import build_method_from_config, compose_config
    from tests.core.toy import ToyBackbone, toy_augmenter

    cfg = compose_config("audio", ["augment=separate", "efference.component_weights={shift: 4.0}"])
    space = toy_augmenter().action_space()
    method = build_method_from_config(cfg, ToyBackbone(), 32, space)
    weights = method.inverse.target_weight
    assert torch.allclose(
        weights[space.slices["shift"]].sum(), torch.tensor(4 / (4 + len(space) - 1))
    )
