"""Dense linear probes: the upsampling, the mIoU convention, planted and shuffled label maps,
determinism and device placement."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stec.evaluation.dense import (
    channel_stats,
    confusion_matrix,
    dense_cross_entropy,
    dense_probe,
    embed_maps,
    fit_dense_probe,
    interpolation_matrix,
    probe_confusion,
    segmentation_scores,
)
from tests.evaluation.devices import DeviceRecorder

FIT = {"epochs": 15, "lr": 0.05, "batch_size": 16}


def random_masks(n: int, size: int, n_classes: int, seed: int) -> torch.Tensor:
    """``[n, size, size]`` label maps: background 0 with two rectangles of random classes."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for _ in range(2):
            top, left = torch.randint(0, size - 4, (2,), generator=g).tolist()
            h, w = torch.randint(3, size // 2, (2,), generator=g).tolist()
            masks[i, top : top + h, left : left + w] = int(
                torch.randint(1, n_classes, (1,), generator=g)
            )
    return masks


def planted_maps(masks: torch.Tensor, n_classes: int, seed: int) -> torch.Tensor:
    """Features that encode the mask: its one-hot code, plus noise channels."""
    g = torch.Generator().manual_seed(seed)
    onehot = F.one_hot(masks, n_classes).permute(0, 3, 1, 2).float()
    noise = torch.randn(len(masks), 3, *masks.shape[1:], generator=g)
    return torch.cat([onehot + 0.1 * torch.randn(onehot.shape, generator=g), noise], 1)


def test_interpolation_matrices_are_bilinear_upsampling():
    x = torch.randn(2, 3, 4, 5)
    rows, cols = interpolation_matrix(4, 9), interpolation_matrix(5, 13)
    expected = F.interpolate(x, size=(9, 13), mode="bilinear", align_corners=False)
    torch.testing.assert_close(rows @ x @ cols.T, expected, atol=1e-6, rtol=1e-5)
    assert torch.equal(interpolation_matrix(6, 6), torch.eye(6))


def test_miou_matches_a_hand_computed_case():
    ignore = 255
    target = torch.tensor([[0, 0, 1], [1, 2, ignore]])
    pred = torch.tensor([[0, 1, 1], [1, 3, 0]])
    conf = confusion_matrix(pred, target, 5, ignore)
    assert conf.tolist() == [
        [1, 1, 0, 0, 0],
        [0, 2, 0, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ]
    scores = segmentation_scores(conf, ["bg", "a", "b", "c", "d"])
    # bg: TP 1, FN 1 -> 1/2; a: TP 2, FP 1 -> 2/3; b: FN 1 -> 0; c: predicted once, never
    # true -> 0 (counted); d: neither -> no IoU, left out of the mean
    assert scores["iou"]["bg"] == pytest.approx(0.5)
    assert scores["iou"]["a"] == pytest.approx(2 / 3)
    assert scores["iou"]["b"] == 0.0 and scores["iou"]["c"] == 0.0
    assert math.isnan(scores["iou"]["d"])
    assert scores["miou"] == pytest.approx((0.5 + 2 / 3) / 4)
    assert scores["pixel_accuracy"] == pytest.approx(3 / 5)


def test_cross_entropy_skips_ignored_pixels():
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    target[0, :2] = 255
    keep = target != 255
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], target[keep])
    torch.testing.assert_close(dense_cross_entropy(logits, target, 255), expected)


def test_channel_stats_match_the_full_computation():
    maps = torch.randn(10, 4, 3, 5) * torch.tensor([1.0, 2.0, 0.0, 3.0]).view(1, 4, 1, 1) + 1.5
    mean, std = channel_stats(maps, chunk=3)
    flat = maps.movedim(1, -1).reshape(-1, 4).double()
    torch.testing.assert_close(mean, flat.mean(0))
    expected = flat.std(0, correction=0)
    expected[2] = 1.0  # a constant channel is left unscaled
    torch.testing.assert_close(std, expected)


def test_channel_stats_scale_small_channels_and_leave_large_constants_unscaled():
    maps = torch.randn(10, 3, 3, 5)
    maps[:, 0] = maps[:, 0] * 1e-7  # varies, on a small scale: standardised
    maps[:, 1] = 1234.5  # constant, where float64 sums leave a rounding error
    _, std = channel_stats(maps, chunk=3)
    flat = maps.movedim(1, -1).reshape(-1, 3).double()
    torch.testing.assert_close(std[0], flat[:, 0].std(correction=0))
    assert std[1] == 1.0


def test_a_probe_on_planted_maps_reaches_miou_one_and_shuffled_masks_stay_at_chance():
    n_classes = 4
    train_masks, test_masks = random_masks(48, 16, n_classes, 0), random_masks(16, 16, n_classes, 1)
    train, test = planted_maps(train_masks, n_classes, 2), planted_maps(test_masks, n_classes, 3)
    result = dense_probe(train, train_masks, test, test_masks, n_classes, **FIT)
    assert result["miou"] > 0.99 and result["pixel_accuracy"] > 0.995
    assert result["train_miou"] > 0.99
    # the features no longer describe the masks they are trained on: nothing to learn
    shuffled = train_masks[torch.randperm(48, generator=torch.Generator().manual_seed(0))]
    chance = dense_probe(train, shuffled, test, test_masks, n_classes, **FIT)
    assert chance["majority_miou"] == result["majority_miou"]
    assert chance["miou"] < chance["majority_miou"] + 0.05 and chance["miou"] < 0.3


def test_upsampled_coarse_maps_recover_block_masks():
    """A map at 1/4 resolution whose cells encode 4x4 blocks: away from block edges the
    upsampled logits are exact, so the probe is right on the interior pixels."""
    n_classes = 3
    g = torch.Generator().manual_seed(0)
    cells = torch.randint(0, n_classes, (40, 4, 4), generator=g)
    masks = cells.repeat_interleave(4, 1).repeat_interleave(4, 2)
    maps = F.one_hot(cells, n_classes).permute(0, 3, 1, 2).float()
    probe = fit_dense_probe(maps, masks, n_classes, **FIT)
    pred = probe(maps, (16, 16)).argmax(1)
    interior = torch.zeros(16, 16, dtype=torch.bool)
    for i in range(4):
        interior[4 * i + 1 : 4 * i + 3, :] = True
    interior &= interior.T.clone()
    assert torch.equal(pred[:, interior], masks[:, interior])


def test_the_fit_is_deterministic_given_the_seed():
    masks = random_masks(20, 8, 3, 0)
    maps = planted_maps(masks, 3, 1)
    one, two = (fit_dense_probe(maps, masks, 3, seed=5, **FIT) for _ in range(2))
    other = fit_dense_probe(maps, masks, 3, seed=6, **FIT)
    assert torch.equal(one.linear.weight, two.linear.weight)
    assert not torch.equal(one.linear.weight, other.linear.weight)


def test_probe_and_data_live_on_the_requested_device():
    masks = random_masks(6, 8, 3, 0)
    maps = planted_maps(masks, 3, 1)
    probe = fit_dense_probe(maps, masks, 3, epochs=2, batch_size=4, device="meta")
    assert {p.device.type for p in [*probe.parameters(), *probe.buffers()]} == {"meta"}
    conf = probe_confusion(probe, maps, masks, batch_size=4)
    assert conf.is_meta and conf.shape == (3, 3)


def test_embed_maps_runs_the_encoder_on_the_device_and_keeps_the_map_shape():
    encoder = DeviceRecorder(nn.Conv2d(3, 5, 3, stride=2, padding=1))
    batches = [(torch.rand(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.uint8), torch.arange(2))]
    maps, labels, index = embed_maps(encoder, batches * 2, device="meta")
    assert encoder.devices_seen() == {"meta"} and len(encoder.calls) == 2
    assert maps.shape == (4, 5, 4, 4) and labels.shape == (4, 8, 8)
    plain = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    x = torch.rand(3, 3, 8, 8)
    maps, _, _ = embed_maps(plain, [(x, torch.zeros(3, 8, 8), torch.arange(3))])
    torch.testing.assert_close(maps, plain(x).detach())
    with pytest.raises(ValueError, match=r"feature maps \[B, C, h, w\]"):
        embed_maps(nn.Flatten(), [(x, torch.zeros(3, 8, 8), torch.arange(3))])


@pytest.mark.parametrize(
    "labels, n_classes, ignore, message",
    [
        (torch.full((2, 4, 4), 7), 4, 255, "label value 7 is outside 0..3"),
        (torch.full((2, 4, 4), -1), 4, 255, "label value -1 is outside 0..3"),
        (torch.zeros(2, 4, 4), 4, 2, "ignore_index outside 0..n_classes-1"),
        (torch.zeros(2, 4, 4).float(), 4, 255, "integer class indices"),
        (torch.zeros(3, 4, 4, dtype=torch.long), 4, 255, "the same N"),
    ],
)
def test_bad_label_maps_are_named(labels, n_classes, ignore, message):
    if labels.dtype == torch.float and "integer" not in message:
        labels = labels.long()
    with pytest.raises(ValueError, match=message):
        fit_dense_probe(torch.rand(2, 3, 4, 4), labels, n_classes, ignore_index=ignore)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_fit_is_deterministic_on_cuda(monkeypatch):
    masks = random_masks(20, 8, 3, 0)
    maps = planted_maps(masks, 3, 1)
    # deterministic mode refuses cuBLAS products unless its workspace is pinned
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    try:
        one, two = (fit_dense_probe(maps, masks, 3, device="cuda", **FIT) for _ in range(2))
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(one.linear.weight, two.linear.weight)
    cpu = fit_dense_probe(maps, masks, 3, **FIT)
    torch.testing.assert_close(one.linear.weight.cpu(), cpu.linear.weight, atol=1e-3, rtol=1e-3)
