import math

import torch
import torch.nn.functional as F

from stec.losses import (
    action_loss,
    action_regression_loss,
    byol_loss,
    info_nce,
    majority_rate,
    positive_pair_accuracy,
    relic_loss,
)


def test_info_nce_matches_a_direct_computation():
    torch.manual_seed(0)
    z_a, z_b = torch.randn(4, 8), torch.randn(4, 8)
    loss, logits = info_nce(z_a, z_b, temperature=0.5)
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    sim = z @ z.T / 0.5
    sim.fill_diagonal_(float("-inf"))
    target = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])
    assert torch.allclose(loss, F.cross_entropy(sim, target), atol=1e-6)
    assert logits.shape == (8, 8)


def test_info_nce_is_low_for_matching_views_and_accuracy_is_one():
    z = torch.eye(6) * 5
    loss, logits = info_nce(z, z.clone(), temperature=0.1)
    assert loss < 1e-3
    assert positive_pair_accuracy(logits) == 1.0
    worse, _ = info_nce(z, torch.roll(z, 1, 0), temperature=0.1)
    assert worse > 5


def test_byol_loss_range():
    p = torch.randn(5, 4)
    assert torch.allclose(byol_loss(p, p), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(byol_loss(p, -p), torch.tensor(4.0), atol=1e-6)


def test_relic_adds_a_nonnegative_invariance_term():
    torch.manual_seed(1)
    z_a, z_b = torch.randn(6, 8), torch.randn(6, 8)
    nce, _ = info_nce(z_a, z_b, 0.2)
    relic, _ = relic_loss(z_a, z_b, 0.2, alpha=1.0)
    assert relic > nce
    same, _ = relic_loss(z_a, z_a.clone(), 0.2, alpha=1.0)
    nce_same, _ = info_nce(z_a, z_a.clone(), 0.2)
    assert torch.allclose(same, nce_same, atol=1e-5)  # identical views: KL = 0


def test_action_loss_masks_invalid_entries_from_loss_and_accuracy():
    logits = torch.zeros(2, 2, 3)
    logits[0, 0, 1] = 10.0  # right
    logits[1, 0, 2] = 10.0  # wrong, but masked out
    logits[:, 1, 0] = 10.0
    classes = torch.tensor([[1, 0], [0, 1]])
    mask = torch.tensor([[True, True], [False, True]])
    class_mask = torch.ones(2, 3, dtype=torch.bool)
    w = torch.full((2,), 0.5)
    loss, acc = action_loss(logits, classes, mask, class_mask, w)
    assert acc.tolist() == [1.0, 0.5]
    unmasked_loss, _ = action_loss(logits, classes, torch.ones_like(mask), class_mask, w)
    assert loss < unmasked_loss
    none_valid, acc_none = action_loss(logits, classes, torch.zeros_like(mask), class_mask, w)
    assert none_valid == 0 and math.isnan(acc_none[0])


def test_action_loss_ignores_classes_a_target_does_not_have():
    logits = torch.zeros(1, 1, 4)
    logits[0, 0, 3] = 50.0  # class 3 does not exist for this target
    class_mask = torch.tensor([[True, True, False, False]])
    loss, acc = action_loss(
        logits, torch.tensor([[0]]), torch.ones(1, 1, dtype=torch.bool), class_mask, torch.ones(1)
    )
    assert torch.allclose(loss, torch.tensor(math.log(2.0)))


def test_action_loss_weights_targets_not_entries():
    # target 0: certain and right (NLL ~ 0) on 4 valid pairs; target 1: uniform over 2
    # classes (NLL = log 2) on 1 valid pair
    logits = torch.zeros(4, 2, 2)
    logits[:, 0, 1] = 50.0
    classes = torch.tensor([[1, 0]] * 4)
    mask = torch.tensor([[True, False]] * 3 + [[True, True]])
    class_mask = torch.ones(2, 2, dtype=torch.bool)
    even, _ = action_loss(logits, classes, mask, class_mask, torch.tensor([0.5, 0.5]))
    # each target's mean counts once, however many pairs define it
    assert torch.allclose(even, torch.tensor(0.5 * math.log(2.0)), atol=1e-6)
    skewed, _ = action_loss(logits, classes, mask, class_mask, torch.tensor([0.9, 0.1]))
    assert torch.allclose(skewed, torch.tensor(0.1 * math.log(2.0)), atol=1e-6)
    # a target defined nowhere in the batch drops out and the others are renormalised
    only_first = mask & torch.tensor([True, False])
    alone, _ = action_loss(logits, classes, only_first, class_mask, torch.tensor([0.5, 0.5]))
    assert alone < 1e-6


def test_majority_rate_is_the_share_of_the_most_frequent_valid_class():
    classes = torch.tensor([[0, 2], [0, 1], [1, 1], [0, 0]])
    mask = torch.tensor([[True, False], [True, True], [True, True], [False, False]])
    rate = majority_rate(classes, mask, 3)
    assert torch.allclose(rate, torch.tensor([2 / 3, 1.0]))
    assert math.isnan(majority_rate(classes, torch.zeros_like(mask), 3)[0])


def test_action_regression_loss_weights_and_r2():
    values = torch.tensor([[0.5, -1.0], [-0.5, 1.0]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    loss, r2 = action_regression_loss(values.clone(), values, mask, torch.tensor([0.5, 0.5]))
    assert loss == 0 and torch.allclose(r2, torch.ones(2))
    wrong = torch.zeros(2, 2)
    loss, r2 = action_regression_loss(wrong, values, mask, torch.tensor([1.0, 0.0]))
    assert torch.allclose(loss, torch.tensor(0.25)) and torch.allclose(r2, torch.zeros(2))
