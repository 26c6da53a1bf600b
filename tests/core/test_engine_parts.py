"""Parts of the engine: per-rank random streams, the masked online probe, loader settings."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stec.engine.rng import (
    GLOBAL_STREAM,
    LOADER_STREAM,
    capture_rng,
    restore_rng,
    seed_rank,
    stream_seed,
)
from stec.engine.step import host_labels, new_probe, probe_step
from tests.core.test_trainer import make_trainer


def draws() -> tuple[float, float, float]:
    return torch.rand(()).item(), float(np.random.rand()), random.random()


def test_rank_streams_are_reproducible_and_differ_between_ranks():
    seed_rank(7, 0)
    first = draws()
    seed_rank(7, 0)
    assert draws() == first
    seed_rank(7, 1)
    other_rank = draws()
    seed_rank(8, 0)
    other_seed = draws()
    for a, b, c in zip(first, other_rank, other_seed, strict=True):
        assert a != b and a != c
    loader = {stream_seed(7, r, LOADER_STREAM, e) for r in range(2) for e in range(3)}
    assert len(loader) == 6 and all(0 <= s < 2**63 for s in loader)
    assert stream_seed(7, 0, LOADER_STREAM, 0) != stream_seed(7, 0, GLOBAL_STREAM, 0)
    with pytest.raises(ValueError, match="trainer.seed must be a non-negative integer, got -1"):
        seed_rank(-1, 0)


def _orders(seed: int, epoch: int, world: int = 1) -> list[list[int]]:
    from stec.engine.sampler import ResumableSampler

    shards = []
    for rank in range(world):
        sampler = ResumableSampler(40, seed=seed, rank=rank, world=world)
        sampler.set_epoch(epoch)
        shards.append(list(sampler))
    return shards


def test_seeds_never_share_shifted_data_orders():
    # seed + epoch made seed 1 at epoch e replay seed 0 at epoch e + 1
    for epoch in range(3):
        assert _orders(1, epoch) != _orders(0, epoch + 1)
        assert _orders(0, epoch) == _orders(0, epoch)  # reproducible
    orders = {tuple(_orders(seed, epoch)[0]) for seed in range(3) for epoch in range(3)}
    assert len(orders) == 9
    # every rank shuffles alike: the shards split one permutation
    two = _orders(5, 2, world=2)
    assert sorted(two[0] + two[1]) == list(range(40)) and not set(two[0]) & set(two[1])


def test_a_run_begun_with_seed_plus_epoch_orders_keeps_them_on_resume(tmp_path):
    from stec.engine.checkpoint import load_checkpoint, save_checkpoint

    make_trainer(tmp_path / "a", max_steps=3).fit()
    state = load_checkpoint(tmp_path / "a/checkpoints/last.pt")
    assert state["sampler_order"] == "streams"
    del state["sampler_order"]  # as written before the streams
    save_checkpoint(tmp_path / "old.pt", state)
    resumed = make_trainer(tmp_path / "b", max_steps=5, resume=str(tmp_path / "old.pt"))
    resumed.fit()
    assert resumed.sampler.order == "seed+epoch" and resumed.sampler.epoch_seed() == 0 + 1
    assert load_checkpoint(tmp_path / "b/checkpoints/last.pt")["sampler_order"] == "seed+epoch"


class OneGPU:
    """A machine with one CUDA device, for the generators' bookkeeping only."""

    def __init__(self, monkeypatch) -> None:
        self.set: list[tuple[int, int]] = []
        for name, value in (("is_available", True), ("is_initialized", True),
                            ("device_count", 1), ("current_device", 0)):  # fmt: skip
            monkeypatch.setattr(torch.cuda, name, lambda value=value: value)
        for module in (torch.cuda, torch.cuda.random):
            monkeypatch.setattr(module, "set_rng_state", self.set_rng_state)
            monkeypatch.setattr(module, "get_rng_state", self.get_rng_state)

    @staticmethod
    def _index(device) -> int:
        index = device if isinstance(device, int) else torch.device(device).index
        if index is None or index >= 1:
            raise RuntimeError(f"CUDA error: invalid device ordinal {index}")
        return index

    def set_rng_state(self, state, device="cuda"):
        self.set.append((self._index(device), int(state[0])))

    def get_rng_state(self, device="cuda"):
        return torch.full((8,), 10 + self._index(device), dtype=torch.uint8)


def test_rng_written_with_two_gpus_restores_on_one(monkeypatch):
    seed_rank(3, 0)
    state = capture_rng()
    # as written by a process that saw two GPUs: one CUDA state per device
    state["cuda"] = [torch.full((8,), 1, dtype=torch.uint8), torch.full((8,), 2, dtype=torch.uint8)]
    gpu = OneGPU(monkeypatch)
    restore_rng(state)
    assert gpu.set == [(0, 1)]  # its own device's state; the other GPU is not here
    # the state of a restored CPU stream is back too
    seed_rank(3, 0)
    expected = draws()
    restore_rng(state)
    assert draws() == expected


def test_rng_keeps_the_cuda_state_of_the_process_device_only(monkeypatch):
    gpu = OneGPU(monkeypatch)
    state = capture_rng(torch.device("cuda", 0))
    assert torch.equal(state["cuda"], torch.full((8,), 10, dtype=torch.uint8))
    assert "cuda" not in capture_rng(torch.device("cpu"))
    restore_rng(state, torch.device("cuda", 0))
    restore_rng(state, "cpu")  # a CUDA state resumed on the CPU is left out
    assert gpu.set == [(0, 10)]


def test_the_masked_probe_step_equals_training_on_the_labelled_items():
    torch.manual_seed(0)
    features, labels = torch.randn(6, 5), torch.tensor([2, -1, 0, 1, -1, 2])
    masked = new_probe(5, 3, seed=4, device=torch.device("cpu"))
    selected = new_probe(5, 3, seed=4, device=torch.device("cpu"))
    assert torch.equal(masked.weight, selected.weight)  # the same start from the seed alone
    opt_masked = torch.optim.Adam(masked.parameters(), lr=0.1)
    opt_selected = torch.optim.Adam(selected.parameters(), lr=0.1)
    for _ in range(3):
        acc = probe_step(masked, opt_masked, features, labels, labelled=4)
        keep = labels >= 0
        logits = selected(features[keep])
        opt_selected.zero_grad()
        F.cross_entropy(logits, labels[keep]).backward()
        opt_selected.step()
        expected = (logits.argmax(1) == labels[keep]).float().mean()
        assert torch.allclose(acc, expected)
    assert torch.allclose(masked.weight, selected.weight, atol=1e-6)
    assert torch.allclose(masked.bias, selected.bias, atol=1e-6)


def test_host_labels_of_raw_items_and_of_ready_views():
    x, labels = torch.zeros(3, 2), torch.tensor([1, -1, 0])
    assert host_labels((x, labels, torch.arange(3)), raw=True) is labels
    assert host_labels((x, x, {}, {}, labels), raw=False) is labels
    assert host_labels((x, x, {}, {}), raw=False) is None
    assert host_labels((x, torch.zeros(3, 4)), raw=True) is None  # multi-label: no probe


def test_loader_settings(tmp_path):
    loader = make_trainer(tmp_path, num_workers=2, prefetch_factor=3).loader
    assert loader.persistent_workers and loader.prefetch_factor == 3
    assert not loader.pin_memory  # pinned memory only for CUDA
    loader = make_trainer(tmp_path, num_workers=2, persistent_workers=False).loader
    assert not loader.persistent_workers and loader.prefetch_factor == 2
    loader = make_trainer(tmp_path, num_workers=0).loader
    assert not loader.persistent_workers and loader.prefetch_factor is None
    with pytest.raises(ValueError, match=r"trainer.prefetch_factor=0 must be an integer >= 1"):
        make_trainer(tmp_path, num_workers=1, prefetch_factor=0)
    with pytest.raises(ValueError, match=r"trainer.num_workers=-1 must be an integer >= 0"):
        make_trainer(tmp_path, num_workers=-1)


def test_persistent_workers_give_the_same_run_as_fresh_workers_each_epoch(tmp_path):
    runs = []
    for persistent in (True, False):
        trainer = make_trainer(
            tmp_path / str(persistent), num_workers=2, persistent_workers=persistent
        )
        trainer.fit()
        runs.append(trainer.method.state_dict())
    for key, value in runs[0].items():
        assert torch.equal(value, runs[1][key]), key


def test_a_modality_declares_its_added_keys_once_with_one_default(monkeypatch):
    from stec.engine import checkpoint

    monkeypatch.setattr(checkpoint, "KEYS_ADDED", dict(checkpoint.KEYS_ADDED))
    checkpoint.declare_keys_added({"augment.echo.taps": 1})
    checkpoint.declare_keys_added({"augment.echo.taps": 1})  # again, the same: fine
    old = {"augment": {"echo": {"p": 0.5}}}
    assert checkpoint.settings_of(old) == {"augment": {"echo": {"p": 0.5, "taps": 1}}}
    with pytest.raises(
        ValueError, match=r"'augment.echo.taps' is already declared with the default 1"
    ):
        checkpoint.declare_keys_added({"augment.echo.taps": 2})


def test_keys_of_a_model_the_mode_does_not_build_change_no_result():
    # an inverse arm has no forward model: its forward head and action embedding are
    # inert, so a comparison that adds a forward arm to a folder reuses the inverse arm;
    # a forward arm has no inverse model, so the inverse model's own keys are inert
    from stec.engine.checkpoint import settings_of, training_changes
    from tests.core.test_resume_settings import _run

    inverse, inverse_own = _run(mode="inverse"), _run(mode="inverse", forward_head="own")
    inverse_wide = _run(mode="inverse", forward_head="own", action_embed_dim=64)
    assert settings_of(inverse) == settings_of(inverse_own) == settings_of(inverse_wide)
    assert training_changes(inverse, inverse_wide) == []
    both, both_own = _run(mode="both"), _run(mode="both", forward_head="own")
    assert training_changes(both, both_own) == ["efference.forward_head: 'shared' -> 'own'"]
    forward = _run(mode="forward")
    tuned = _run(mode="forward", inverse_hidden=64, inverse_output="regression")
    assert settings_of(forward) == settings_of(tuned) and training_changes(forward, tuned) == []
    # what both models share still counts in each
    assert training_changes(forward, _run(mode="forward", lambda_manip=0.3)) == [
        "efference.lambda_manip: 1.0 -> 0.3"
    ]
    assert training_changes(inverse, _run(mode="inverse", equivariant_dims=8)) == [
        "efference.equivariant_dims: 0 -> 8"
    ]
