"""Parts of the engine: per-rank random streams, the masked online probe, loader settings."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stec.engine.rng import GLOBAL_STREAM, LOADER_STREAM, seed_rank, stream_seed
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
