"""The training step never makes the host wait for the device, except in SyncBatchNorm.

On this CPU machine the step runs on ``device="meta"`` under a detector of every
synchronising operation (tests/core/syncs.py); on a GPU, the same steps run under
``torch.cuda.set_sync_debug_mode``. Under DDP with ``trainer.sync_batchnorm=true``,
PyTorch's SyncBatchNorm forward synchronises: the last test shows where and how often
(``benchmarks/gpu_check.py``'s ``syncbn`` check measures it on a GPU).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from stec import build_method
from stec.engine.trainer import Trainer, TrainerConfig
from stec_audio.encoders import AudioNTT2020
from tests.core.audio_toy import LogMels, audio_augmenter, composed_augmenter
from tests.core.syncs import HostSyncDetector
from tests.core.toy import ToyBackbone, ToySignals, toy_augmenter


def make(kind: str, method_name: str, efference: str, device: str, **overrides) -> Trainer:
    torch.manual_seed(0)
    reads: dict = {}  # what the inverse model reads: the pooled features by default
    if kind == "toy":
        aug, data = toy_augmenter(), ToySignals(n=32)
        backbone: nn.Module = ToyBackbone()
        dim = 32
    elif kind == "audio-composed":  # the map, the frame-reading inverse model, the split,
        aug, data = composed_augmenter(), LogMels()  # the read gate
        backbone, dim = AudioNTT2020(n_mels=16, d=32), 32
        reads = {"inverse_input": "frames", "equivariant_dims": 8, "read_gate": 0.05}
    else:
        aug, data = audio_augmenter(kind == "audio-energy"), LogMels()
        backbone, dim = AudioNTT2020(n_mels=16, d=32), 32
    method = build_method(
        method_name,
        backbone,
        dim,
        action_space=aug.action_space(),
        efference=efference,
        proj_hidden=32,
        proj_dim=16,
        inverse_hidden=32,
        **reads,
    )
    cfg = TrainerConfig(
        epochs=1, batch_size=8, progress=False, device=device, grad_clip=1.0, **overrides
    )
    return Trainer(method, data, cfg, "unused", augmenter=aug, num_classes=3)


def meta_syncs(kind: str, method_name: str, efference: str, steps: int = 3) -> set:
    trainer = make(kind, method_name, efference, "meta")
    batch = next(iter(trainer.loader))
    with HostSyncDetector() as detector:
        for _ in range(steps):
            trainer.train_step(batch)
    return set(detector.syncs)


STEPS = [
    (kind, method_name, efference)
    for kind in ("toy", "audio", "audio-composed")
    for method_name in ("simclr", "byol")
    for efference in ("off", "inverse")
]


@pytest.mark.parametrize(("kind", "method_name", "efference"), STEPS)
def test_the_engine_never_synchronises_in_a_training_step(kind, method_name, efference):
    syncs = meta_syncs(kind, method_name, efference)
    assert not syncs, sorted(s.site for s in syncs)


@pytest.mark.parametrize("kind", ["toy", "audio-energy", "audio-composed"])
def test_a_whole_step_never_synchronises(kind):
    syncs = meta_syncs(kind, "simclr", "inverse", steps=2)
    assert not syncs, sorted(s.site for s in syncs)


def test_the_detector_sees_what_would_synchronise():
    detector = HostSyncDetector()
    x = torch.ones(4, device="meta")
    with detector:
        float(x.sum())
        torch.isfinite(x).all().item()
        x.tolist()
        torch.ones(()).item()  # a host tensor: no sync
    assert [s.op for s in detector.syncs] == [
        "aten._local_scalar_dense.default",
        "aten._local_scalar_dense.default",
        "aten._to_copy.default",
    ]
    assert all(s.site == "<outside the packages>" for s in detector.syncs)


def test_the_energy_weighted_crop_draws_without_a_sync_and_by_energy():
    assert not meta_syncs("audio-energy", "simclr", "off", steps=1)
    # the exponential race draws offsets in proportion to the segment energies
    from stec_audio.augment.time import TimeCrop

    x = torch.full((4000, 1, 2, 12), -20.0)
    x[..., 8:] = 0.0  # the last four frames hold all the energy
    torch.manual_seed(0)
    offsets = TimeCrop(frames=4, energy_weighted=True, uniform_mix=0.0).sample_offsets(x)
    share = torch.bincount(offsets, minlength=9).float() / len(offsets)
    # offsets 5..8 overlap the loud part by 1..4 frames: their probabilities grow 1:2:3:4
    assert torch.allclose(share[5:], torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.03)
    assert share[:5].sum() < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method_name", ["simclr", "byol"])
def test_cuda_steps_under_sync_debug_mode(method_name):
    trainer = make("audio", method_name, "inverse", "cuda")
    batch = next(iter(trainer.loader))
    trainer.train_step(batch)  # warm-up: lazy initialisation may synchronise once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                trainer.train_step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    sites = {f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)}
    assert not sites, sorted(sites)


class MetaBatchNormKernels(TorchDispatchMode):
    """Shapes for SyncBatchNorm's CUDA-only kernels on meta tensors (no data, no sync)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func).split(".")[1]
        x = args[0]
        per_channel = lambda: x.new_empty(x.shape[1])  # noqa: E731
        if name in ("batch_norm_stats", "batch_norm_gather_stats_with_counts"):
            return per_channel(), per_channel()
        if name in ("batch_norm_elemt", "batch_norm_backward_elemt"):
            return torch.empty_like(x)
        if name == "batch_norm_backward_reduce":
            return tuple(per_channel() for _ in range(4))
        return func(*args, **(kwargs or {}))


def gpu_check():
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("gpu_check", root / "benchmarks/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_syncbatchnorm_under_ddp_synchronises_the_host_in_every_layer():
    # trainer.sync_batchnorm=true under DDP (on in every official vision preset): PyTorch's
    # SyncBatchNorm drops the statistics of ranks with an empty batch by boolean masks,
    # whose sizes the host must read, in every layer's forward
    trainer = make("toy", "simclr", "inverse", "meta")
    batch = next(iter(trainer.loader))
    per_call = []
    layers = sum(isinstance(m, nn.BatchNorm1d) for m in trainer.method.modules())
    with gpu_check().SyncBatchNormPath(trainer.method) as path:
        assert path.layers == layers >= 2  # backbone, projector, inverse model
        plain_forward = nn.SyncBatchNorm.forward

        def counted(layer, x):
            before = len(detector.syncs)
            out = plain_forward(layer, x)
            per_call.append({s.op for s in detector.syncs[before:]})
            return out

        nn.SyncBatchNorm.forward = counted
        try:
            with HostSyncDetector() as detector, MetaBatchNormKernels():
                trainer.train_step(batch)
        finally:
            nn.SyncBatchNorm.forward = plain_forward
    assert path.calls == len(per_call) >= path.layers
    assert all(ops == {"aten.index.Tensor"} for ops in per_call), per_call
    # nothing else in the step synchronises
    assert len(detector.syncs) == 3 * path.calls
