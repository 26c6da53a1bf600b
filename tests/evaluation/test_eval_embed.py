import pytest
import torch
from torch import nn

from stec.evaluation import embed
from tests.evaluation.devices import DeviceRecorder, assert_unchanged, snapshot


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(12, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 4)
    )


def _batches():
    g = torch.Generator().manual_seed(0)
    single = [
        (torch.randn(3, 2, 6, generator=g), torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12]))
    ]
    return [
        single[0],
        None,  # a batch whose files could not be read
        (torch.randn(2, 2, 6, generator=g), torch.tensor([1, 1]), torch.tensor([13, 14])),
        None,
    ]


def test_embed_skips_none_and_matches_eval_forward():
    encoder = _encoder()
    encoder.train()
    batches = _batches()
    feats, labels, idx = embed(encoder, batches)
    assert feats.shape == (5, 4) and feats.dtype == torch.float32
    assert labels.tolist() == [0, 1, 2, 1, 1]
    assert idx.tolist() == [10, 11, 12, 13, 14]
    with torch.no_grad():
        reference = encoder.eval()(torch.cat([batches[0][0], batches[2][0]]))
    torch.testing.assert_close(feats, reference)
    assert not feats.requires_grad


def test_embed_restores_modes_and_leaves_batch_norm_stats():
    encoder = _encoder()
    encoder.train()
    encoder[2].eval()  # a submodule kept in eval mode on purpose (frozen batch norm)
    before = encoder[2].running_mean.clone()
    embed(encoder, _batches())
    assert encoder.training and encoder[1].training and not encoder[2].training
    assert torch.equal(encoder[2].running_mean, before)
    encoder.eval()
    embed(encoder, _batches())
    assert not any(m.training for m in encoder.modules())


def test_embed_restores_mode_after_an_error():
    encoder = _encoder().train()
    with pytest.raises(ValueError, match="batch 1"):
        embed(encoder, [_batches()[0], ("only-one",)])
    assert encoder.training


def test_embed_applies_transform_and_multi_hot_labels():
    encoder = _encoder()
    x = torch.randn(4, 2, 6)
    multi_hot = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    feats, labels, idx = embed(encoder, [(x, multi_hot)], transform=lambda v: v * 0)
    with torch.no_grad():
        expected = encoder.eval()(torch.zeros_like(x))
    torch.testing.assert_close(feats, expected)
    assert torch.equal(labels, multi_hot) and idx.tolist() == [0, 1, 2, 3]


def test_embed_rejects_an_empty_loader():
    with pytest.raises(ValueError, match="no"):
        embed(_encoder(), [None, None])


class Standardise(nn.Module):
    """A transform with buffers, like a normaliser."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def test_embed_runs_encoder_and_transform_on_the_device_and_puts_them_back():
    encoder = DeviceRecorder(_encoder())
    transform = DeviceRecorder(Standardise(0.5, 2.0), host_output=False)
    weight = encoder.inner[1].weight
    weight.grad = torch.ones_like(weight)
    grad = weight.grad
    before, before_transform = snapshot(encoder), snapshot(transform)
    feats, labels, idx = embed(encoder, _batches(), device="meta", transform=transform)
    # every call met its module on the requested device
    assert len(encoder.calls) == len(transform.calls) == 2
    assert encoder.devices_seen() == transform.devices_seen() == {"meta"}
    assert feats.shape == (5, 4) and labels.tolist() == [0, 1, 2, 1, 1]
    assert idx.tolist() == [10, 11, 12, 13, 14]
    # ...and both are back on the CPU: the same parameter objects, values and gradient
    assert_unchanged(encoder, before)
    assert_unchanged(transform, before_transform)
    assert encoder.inner[1].weight is weight and weight.grad is grad


def test_embed_on_the_modules_own_device_moves_nothing():
    encoder = _encoder()
    storage = encoder[1].weight.data_ptr()
    feats, _, _ = embed(encoder, _batches()[:1], device=torch.device("cpu"))
    assert encoder[1].weight.data_ptr() == storage
    with torch.no_grad():
        torch.testing.assert_close(feats, encoder.eval()(_batches()[0][0]))
