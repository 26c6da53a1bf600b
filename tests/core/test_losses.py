import math

import torch
import torch.nn.functional as F

from stec.losses import (
    action_loss,
    action_regression_loss,
    byol_loss,
    guess_accuracy,
    info_nce,
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


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def test_relic_invariance_term_by_hand_excludes_each_views_similarity_to_itself():
    # two samples in 2-D: a view's candidates are the other view of its sample (the positive)
    # and both views of the other sample; its similarity to itself is no candidate
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    t = 0.5
    cos = {("a0", "b0"): 0.6, ("a0", "a1"): 0.0, ("a0", "b1"): 0.8,
           ("b0", "a0"): 0.6, ("b0", "b1"): 0.96, ("b0", "a1"): 0.8,
           ("a1", "b1"): 0.6, ("a1", "a0"): 0.0, ("a1", "b0"): 0.8,
           ("b1", "a1"): 0.6, ("b1", "b0"): 0.96, ("b1", "a0"): 0.8}  # fmt: skip
    # candidates by role: (positive, the other sample's view of the same kind, its other view)
    roles = {"a0": ("b0", "a1", "b1"), "b0": ("a0", "b1", "a1"),
             "a1": ("b1", "a0", "b0"), "b1": ("a1", "b0", "a0")}  # fmt: skip
    p = {v: _softmax([cos[(v, c)] / t for c in roles[v]]) for v in roles}
    kl = sum(_kl(p[f"b{i}"], p[f"a{i}"]) + _kl(p[f"a{i}"], p[f"b{i}"]) for i in (0, 1)) / 2
    expected = kl / 2  # batch mean of the two directions' average
    nce, _ = info_nce(a, b, t)
    relic, _ = relic_loss(a, b, t, alpha=1.0)
    assert torch.allclose(relic - nce, torch.tensor(expected), atol=1e-6)
    relic3, _ = relic_loss(a, b, t, alpha=3.0)
    assert torch.allclose(relic3 - nce, torch.tensor(3 * expected), atol=1e-5)


def test_relic_gradient_follows_kl_from_the_detached_other_view():
    # KL(sg(p_b) || p_a) + KL(sg(p_a) || p_b): each view's distribution moves towards the other
    torch.manual_seed(3)
    z_a, z_b = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    relic, logits = relic_loss(z_a, z_b, 0.3, alpha=1.0)
    nce, _ = info_nce(z_a, z_b, 0.3)
    grads = torch.autograd.grad(relic - nce, (z_a, z_b), retain_graph=True)
    logits_a, logits_b = logits[:3], logits[3:].roll(3, dims=1)  # b's rows in a's column roles
    valid = torch.isfinite(logits_a)
    log_p_a = torch.log_softmax(logits_a, 1).masked_fill(~valid, 0)
    log_p_b = torch.log_softmax(logits_b, 1).masked_fill(~valid, 0)
    kl_ab = (log_p_b.detach().exp() * (log_p_b.detach() - log_p_a)).sum(1).mean()
    kl_ba = (log_p_a.detach().exp() * (log_p_a.detach() - log_p_b)).sum(1).mean()
    expected = torch.autograd.grad(0.5 * (kl_ab + kl_ba), (z_a, z_b))
    for got, want in zip(grads, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6)


def test_relic_with_gathered_candidates_matches_the_local_batch():
    torch.manual_seed(4)
    z_a, z_b = torch.randn(4, 6), torch.randn(4, 6)
    whole, _ = relic_loss(z_a, z_b, 0.2, alpha=0.7)
    halves = [
        relic_loss(z_a[s], z_b[s], 0.2, alpha=0.7, offset=s.start, candidates=(z_a, z_b))[0]
        for s in (slice(0, 2), slice(2, 4))
    ]
    assert torch.allclose(whole, sum(halves) / 2, atol=1e-6)


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


def test_guess_accuracy_scores_a_constant_answer_on_the_valid_entries():
    classes = torch.tensor([[0, 2], [0, 1], [1, 1], [0, 0]])
    mask = torch.tensor([[True, False], [True, True], [True, True], [False, False]])
    rate = guess_accuracy(classes, mask, torch.tensor([0, 1]))
    assert torch.allclose(rate, torch.tensor([2 / 3, 1.0]))
    assert math.isnan(guess_accuracy(classes, torch.zeros_like(mask), torch.tensor([0, 0]))[0])


def test_action_regression_loss_weights_and_r2():
    values = torch.tensor([[0.5, -1.0], [-0.5, 1.0]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    loss, r2 = action_regression_loss(values.clone(), values, mask, torch.tensor([0.5, 0.5]))
    assert loss == 0 and torch.allclose(r2, torch.ones(2))
    wrong = torch.zeros(2, 2)
    loss, r2 = action_regression_loss(wrong, values, mask, torch.tensor([1.0, 0.0]))
    assert torch.allclose(loss, torch.tensor(0.25)) and torch.allclose(r2, torch.zeros(2))


def test_relic_creates_no_tensor_off_the_inputs_device():
    # on "meta" any tensor made on another device would fail the arithmetic
    z_a = torch.randn(4, 8, device="meta", requires_grad=True)
    gathered = (torch.randn(8, 8, device="meta"), torch.randn(8, 8, device="meta"))
    loss, logits = relic_loss(z_a, z_a * 2, 0.1, alpha=1.0, offset=4, candidates=gathered)
    loss.backward()
    assert loss.device.type == z_a.grad.device.type == "meta" and logits.shape == (8, 16)
