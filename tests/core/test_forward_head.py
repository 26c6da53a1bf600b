"""The forward model's own head (``forward_head=own``, EquiMod): what it predicts, what it
reads, and that it learns to use the action."""

import pytest
import torch

from stec import build_method
from stec.losses import info_nce_cross
from tests.core.toy import ToyBackbone, ToySignals, toy_augmenter

SMALL = dict(proj_hidden=32, proj_dim=16, inverse_hidden=32, action_embed_dim=8)


def own_head(method_name: str = "simclr", efference: str = "forward", **kwargs):
    settings = {**SMALL, "forward_head": "own", **kwargs}
    return build_method(
        method_name, ToyBackbone(), 32, action_space=toy_augmenter().action_space(),
        efference=efference, **settings,
    )  # fmt: skip


@pytest.mark.parametrize("method_name", ["simclr", "byol", "relic"])
def test_the_own_head_predicts_its_own_embedding_of_the_other_view(method_name):
    torch.manual_seed(0)
    method = own_head(method_name, temperature=0.2) if method_name != "byol" else own_head("byol")
    view_a, view_b, params_a, params_b = toy_augmenter()(ToySignals(n=16).x.unsqueeze(1))
    loss, metrics, _ = method(view_a, view_b, params_a, params_b)
    # by hand: the own projector embeds both views' features, the predictor maps each
    # view's embedding and the action to the other view to the other's, InfoNCE over them
    space = method.action_space
    u = method.own_projector(method.backbone(torch.cat([view_a, view_b])))
    u_a, u_b = u.chunk(2)
    q_a = method.own_predictor(u_a, method.action_encoder(space.targets(params_a, params_b)))
    q_b = method.own_predictor(u_b, method.action_encoder(space.targets(params_b, params_a)))
    temperature = 0.2 if method_name != "byol" else 0.1
    expected = 0.5 * (info_nce_cross(q_a, u_b, temperature) + info_nce_cross(q_b, u_a, temperature))
    assert torch.allclose(metrics["forward_loss"], expected, atol=1e-6)
    told_next = 0.5 * (
        info_nce_cross(method.own_predictor(u_a, method.action_encoder(
            space.targets(params_a, params_b)).roll(1, 0)), u_b, temperature)
        + info_nce_cross(method.own_predictor(u_b, method.action_encoder(
            space.targets(params_b, params_a)).roll(1, 0)), u_a, temperature)
    )  # fmt: skip
    assert torch.allclose(metrics["forward_told_gain"], told_next - expected, atol=1e-5)
    assert torch.allclose(loss, metrics["ssl_loss"] + 1.0 * expected, atol=1e-5)
    # the method's own predictor is plain: the action goes to the own head only
    if method_name == "byol":
        assert method.predictor.net[0].in_features == method.proj_dim
    else:
        assert method.forward_predictor is None


def test_the_own_head_reads_the_backbone_features_and_no_invariance_loss_trains_it():
    torch.manual_seed(0)
    views = toy_augmenter()(ToySignals(n=16).x.unsqueeze(1))
    method = own_head(lambda_manip=0.0)
    method(*views)[0].backward()
    # the SSL loss alone leaves the own head untouched...
    own = [p.grad for p in (*method.own_projector.parameters(), *method.own_predictor.parameters())]
    assert all(g is None or not g.any() for g in own)
    # ...and with the forward model's weight it trains the head and, through it, the backbone
    method = own_head(lambda_manip=1.0)
    loss, _, _ = method(*views)
    loss.backward()
    assert method.own_projector[0].weight.grad.abs().sum() > 0
    assert method.backbone.net[1].weight.grad.abs().sum() > 0


def test_with_split_features_the_own_head_reads_the_equivariant_part_only():
    torch.manual_seed(0)
    method = own_head(equivariant_dims=8)
    assert method.own_projector[0].in_features == 8
    views = toy_augmenter()(ToySignals(n=16).x.unsqueeze(1))
    h = method.backbone(torch.cat(views[:2])).detach().requires_grad_(True)
    actions = (
        method.action_space.targets(views[2], views[3]),
        method.action_space.targets(views[3], views[2]),
    )
    method.own_forward_loss(method.equivariant(h), actions, 16)[0].backward()
    assert not h.grad[:, :24].any() and h.grad[:, 24:].abs().sum() > 0


def test_the_own_head_learns_to_use_the_action():
    # on the toy problem the own head's loss comes to be lower told each pair's own action
    # than told the next pair's: its embedding follows the action; untrained it does not
    torch.manual_seed(0)
    aug, data = toy_augmenter(), ToySignals(n=64)
    method = own_head(lambda_manip=1.0)
    opt = torch.optim.Adam(method.parameters(), lr=2e-3)
    gains = []
    for _ in range(400):
        x = data.x[torch.randperm(64)[:32]].unsqueeze(1)
        loss, metrics, _ = method(*aug(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        gains.append(float(metrics["forward_told_gain"]))
    first, last = sum(gains[:20]) / 20, sum(gains[-50:]) / 50
    assert abs(first) < 0.1 and last > 0.5, (first, last)


@pytest.mark.parametrize("method_name", ["simclr", "byol"])
def test_the_told_gain_is_the_loss_told_the_next_pairs_action_minus_the_loss(method_name):
    # the shared head's forward model (SimCLR's action-conditioned predictor, BYOL's
    # conditioned predictor) reports it too, the same way
    torch.manual_seed(0)
    method = build_method(
        method_name, ToyBackbone(), 32, action_space=toy_augmenter().action_space(),
        efference="forward", **SMALL,
    )  # fmt: skip
    view_a, view_b, params_a, params_b = toy_augmenter()(ToySignals(n=16).x.unsqueeze(1))
    _, metrics, _ = method(view_a, view_b, params_a, params_b)
    space, encode = method.action_space, method.action_encoder
    emb_ab = encode(space.targets(params_a, params_b))
    emb_ba = encode(space.targets(params_b, params_a))
    z_a, z_b = method.embed(torch.cat([view_a, view_b]))[2].chunk(2)
    if method_name == "simclr":

        def loss(e_ab, e_ba):
            q_a = method.forward_predictor(z_a, e_ab)
            q_b = method.forward_predictor(z_b, e_ba)
            return 0.5 * (info_nce_cross(q_a, z_b, 0.1) + info_nce_cross(q_b, z_a, 0.1))
    else:
        from stec.losses import byol_loss

        t = method.target_projector(method.target_backbone(torch.cat([view_a, view_b])))
        t_a, t_b = t.chunk(2)

        def loss(e_ab, e_ba):
            p_a, p_b = method.predictor(z_a, e_ab), method.predictor(z_b, e_ba)
            return 0.5 * (byol_loss(p_a, t_b) + byol_loss(p_b, t_a))

    with torch.no_grad():
        told = loss(emb_ab.roll(1, 0), emb_ba.roll(1, 0)) - loss(emb_ab, emb_ba)
    assert torch.allclose(metrics["forward_told_gain"], told, atol=1e-5)
    assert abs(told.item()) > 1e-4  # the action changes the prediction


def test_a_forward_head_that_does_not_exist_is_refused():
    allowed = "forward_head='sideways' is not valid; allowed values: shared, own"
    with pytest.raises(ValueError, match=allowed):
        own_head(forward_head="sideways")
