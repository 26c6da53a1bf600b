"""The inverse model can read what pooling over time loses, and the features can be split
so that the invariance term never pulls on the inverse model's part."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from stec import ActionSpace, Continuous, InverseModel, SimCLR
from stec.efference import FrameCorrelation
from tests.core.toy import toy_augmenter

FRAMES, DIM, MAX_SHIFT = 12, 16, 3


def _shifted_pairs(batch: int) -> tuple[Tensor, Tensor, Tensor]:
    """Frame sequences ``b[t] = a[t + k]`` for ``k`` in ``[-3, 3]`` (new frames where ``a``
    has none), and ``k``."""
    long = torch.randn(batch, FRAMES + 2 * MAX_SHIFT, DIM)
    k = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (batch,))
    steps = torch.arange(FRAMES)
    a = long[:, MAX_SHIFT + steps]
    b = long[torch.arange(batch)[:, None], MAX_SHIFT + steps + k[:, None]]
    return a, b, k


def test_the_lag_profile_peaks_at_the_shift_between_the_sequences():
    torch.manual_seed(0)
    reader = FrameCorrelation(DIM, proj=16, groups=4, max_lag=5)
    a, b, k = _shifted_pairs(64)
    out = reader(a, b)
    assert out.shape == (64, reader.out_dim) and reader.out_dim == 4 * 13
    profile, height, where = out[:, :44].reshape(64, 4, 11), out[:, 44:48], out[:, 48:]
    # b[t] = a[t + k]: the change at t in a meets its copy in b at lag -k
    assert torch.equal(profile.argmax(dim=2), (5 - k)[:, None].expand(64, 4))
    assert torch.allclose(height, profile.amax(2))
    # the soft argmax says where the peak is, as a share of the largest lag
    assert (where - (-k / 5)[:, None]).abs().max() < 0.25
    # sequences of other lengths (a longer view) work, lags beyond them read 0
    short = reader(a[:, :3], b[:, :4])[:, :44].reshape(64, 4, 11)
    assert torch.equal(short[..., :2], torch.zeros(64, 4, 2))


def test_standardised_peaks_are_read_at_unit_scale_and_leave_the_profile_as_it_is():
    a, b, _ = _shifted_pairs(64)
    torch.manual_seed(0)
    plain = FrameCorrelation(DIM, proj=16, groups=4, max_lag=5)
    torch.manual_seed(0)
    standardised = FrameCorrelation(DIM, proj=16, groups=4, max_lag=5, standardise_peaks=True)
    out, std_out = plain(a, b), standardised(a, b)
    assert std_out.shape == out.shape
    torch.testing.assert_close(std_out[:, :44], out[:, :44])  # the profile itself
    peaks = out[:, 44:]
    expected = (peaks - peaks.mean(0)) / (peaks.var(0, unbiased=False) + 1e-5).sqrt()
    torch.testing.assert_close(std_out[:, 44:], expected, rtol=1e-4, atol=1e-4)
    # a flat profile's soft argmax hardly moves; standardised, it spans a unit's range
    assert peaks[:, 4:].std(0).max() < 0.5 and std_out[:, 48:].std(0).min() > 0.9
    # the statistics are kept for evaluation, and only when asked for: an inverse model
    # saved before the option existed loads into one made without it
    assert set(standardised.state_dict()) - set(plain.state_dict()) == {
        "peak_norm.running_mean",
        "peak_norm.running_var",
        "peak_norm.num_batches_tracked",
    }
    space = ActionSpace([Continuous("shift", -3.5, 3.5, n_bins=7)])
    saved = InverseModel(DIM, space, hidden=8, frame_dim=DIM).state_dict()
    InverseModel(DIM, space, hidden=8, frame_dim=DIM).load_state_dict(saved)
    with pytest.raises(RuntimeError, match="peak_norm"):
        InverseModel(DIM, space, hidden=8, frame_dim=DIM, standardise_peaks=True).load_state_dict(
            saved
        )


def _train(frames: bool, steps: int = 250) -> float:
    torch.manual_seed(0)
    space = ActionSpace([Continuous("shift", -MAX_SHIFT - 0.5, MAX_SHIFT + 0.5, n_bins=7)])
    model = InverseModel(DIM, space, hidden=64, frame_dim=DIM if frames else 0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    accuracy = []
    for step in range(steps + 20):
        a, b, k = _shifted_pairs(128)
        targets = space.targets({"shift": torch.zeros(128)}, {"shift": k.float()})
        # the pooled features (max + mean over time) barely see where the content sits
        h_a, h_b = a.amax(1) + a.mean(1), b.amax(1) + b.mean(1)
        logits = model(h_a, h_b, a, b) if frames else model(h_a, h_b)
        loss, metrics = model.loss(logits, targets)
        if step < steps:
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            model.eval()
            accuracy.append(float(metrics["action_acc/shift"]))
    return sum(accuracy) / len(accuracy)


def test_reading_the_frames_makes_a_time_shift_readable_that_pooled_features_hide():
    pooled, frames = _train(frames=False), _train(frames=True)
    assert frames > 0.9, frames
    assert pooled < 0.5, pooled  # 7 classes, the middle one 1/7 of pairs


class FramedBackbone(nn.Module):
    """A toy backbone with the frame interface: ``[B, 1, L] -> [B, L/4, D]`` frames, the
    clip feature their max + mean."""

    def __init__(self, dim: int = 24) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, dim, 4, stride=4)
        self.feature_dim = self.frame_dim = dim
        self.last_h: Tensor | None = None

    def features_with_frames(self, x: Tensor) -> tuple[Tensor, Tensor]:
        frames = self.conv(x).transpose(1, 2)
        self.last_frames = frames
        if frames.requires_grad:
            frames.retain_grad()
        self.last_h = frames.amax(1) + frames.mean(1)
        if self.last_h.requires_grad:
            self.last_h.retain_grad()
        return self.last_h, frames

    def forward(self, x: Tensor) -> Tensor:
        return self.features_with_frames(x)[0]


def _feature_grads(lambda_switch: float, lambda_manip: float) -> Tensor:
    torch.manual_seed(0)
    views = toy_augmenter()
    backbone = FramedBackbone()
    method = SimCLR(backbone, 24, action_space=views.action_space(), inverse_input="frames",
                    equivariant_dims=8, lambda_switch=lambda_switch, lambda_manip=lambda_manip,
                    proj_hidden=32, proj_dim=16, inverse_hidden=32)  # fmt: skip
    loss, metrics, _ = method(*views(torch.randn(16, 1, 32)))
    loss.backward()
    assert "target_acc/shift" not in metrics  # single-target components: no per-target rows
    return backbone.last_h.grad.abs().sum(0)


def test_the_invariance_term_never_reaches_the_equivariant_features():
    ssl_only = _feature_grads(lambda_switch=1.0, lambda_manip=0.0)
    assert ssl_only[16:].sum() == 0 and ssl_only[:16].sum() > 0
    inverse_only = _feature_grads(lambda_switch=0.0, lambda_manip=1.0)
    assert inverse_only[:16].sum() == 0 and inverse_only[16:].sum() > 0


def _frame_grads(detach_frames: bool) -> tuple[Tensor, Tensor, SimCLR]:
    """The gradient of the action loss on the backbone's frames, and the part of it that
    reaches them through the pooled features."""
    torch.manual_seed(0)
    views = toy_augmenter()
    backbone = FramedBackbone()
    method = SimCLR(backbone, 24, action_space=views.action_space(), inverse_input="frames",
                    equivariant_dims=8, lambda_switch=0.0, detach_frames=detach_frames,
                    proj_hidden=32, proj_dim=16, inverse_hidden=32)  # fmt: skip
    loss, _, _ = method(*views(torch.randn(16, 1, 32)))
    loss.backward(retain_graph=True)
    frames, h = backbone.last_frames, backbone.last_h
    grad = frames.grad.clone()  # before autograd.grad, whose pass adds to it again
    (through_pooled,) = torch.autograd.grad(h, frames, h.grad)
    return grad, through_pooled, method


def test_detached_frames_are_read_but_train_the_encoder_only_through_the_pooled_features():
    grad, through_pooled, method = _frame_grads(detach_frames=True)
    torch.testing.assert_close(grad, through_pooled)
    assert through_pooled.abs().sum() > 0  # the equivariant features still learn
    assert method.inverse.frame_reader.proj.weight.grad.abs().sum() > 0  # the reader learns
    grad, through_pooled, _ = _frame_grads(detach_frames=False)
    assert (grad - through_pooled).abs().sum() > 1e-3 * grad.abs().sum()


def test_wrong_frame_or_split_settings_say_what_is_needed():
    space = toy_augmenter().action_space()
    with pytest.raises(ValueError, match="features_with_frames"):
        SimCLR(nn.Linear(32, 8), 8, action_space=space, inverse_input="frames")
    with pytest.raises(ValueError, match=r"equivariant_dims=8 must be an integer in \[0, 8\)"):
        SimCLR(FramedBackbone(8), 8, action_space=space, equivariant_dims=8)
    with pytest.raises(ValueError, match="inverse_input must be backbone or frames"):
        SimCLR(FramedBackbone(8), 8, action_space=space, equivariant_dims=2,
               inverse_input="projector_hidden")  # fmt: skip
    with pytest.raises(ValueError, match="needs inverse_input=frames, not 'backbone'"):
        SimCLR(FramedBackbone(8), 8, action_space=space, detach_frames=True)
    with pytest.raises(ValueError, match="standardise_peaks=true .* not 'backbone'"):
        SimCLR(FramedBackbone(8), 8, action_space=space, standardise_peaks=True)
    # without an efference copy there is nothing to split off
    plain = SimCLR(FramedBackbone(8), 8, action_space=space, efference="off", equivariant_dims=2)
    assert plain.invariant_dims == 8


def test_the_action_probe_reads_the_frames_when_the_inverse_model_does():
    from stec.evaluation import probe_actions

    torch.manual_seed(0)
    space = ActionSpace([Continuous("shift", -12.5, 12.5, n_bins=5)])
    long = torch.randn(640, 1, 96)
    k = torch.randint(-12, 13, (640,))
    steps = torch.arange(64)
    view_a = long[:, :, 16 + steps]
    view_b = long[torch.arange(640)[:, None], :, 16 + steps + k[:, None]].transpose(1, 2)
    batches = [
        (
            view_a[i : i + 64],
            view_b[i : i + 64],
            {"shift": torch.zeros(64)},
            {"shift": k[i : i + 64].float()},
        )  # fmt: skip
        for i in range(0, 640, 64)
    ]
    encoder = FramedBackbone(16)
    pooled = probe_actions(encoder, batches, space, epochs=40, hidden=64)
    framed = probe_actions(encoder, batches, space, epochs=40, hidden=64, frames=True)
    majority = framed["majority_acc/shift"]
    assert framed["action_acc/shift"] > majority + 0.3
    assert pooled["action_acc/shift"] < majority + 0.15
    with pytest.raises(ValueError, match="has no features_with_frames"):
        probe_actions(nn.Flatten(), batches, space, frames=True)
