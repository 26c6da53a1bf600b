"""Two CPU processes (gloo): the same loss and gradients as one process on the global batch
(with contrastive negatives gathered across ranks), a random stream per rank, and an exact
resume of every rank's state."""

import time

import pytest
import torch
import torch.multiprocessing as mp

from stec.engine.checkpoint import load_checkpoint
from tests.core import ddp_worker


# simclr+own: the forward model's own head gathers its candidates over the ranks too;
# simclr+gate: the read gate's two passes of the inverse model under DDP
@pytest.mark.parametrize("method_name", ["simclr", "byol", "simclr+own", "simclr+gate"])
def test_two_process_ddp_matches_single_process(tmp_path, method_name):
    out = tmp_path / "ddp.pt"
    mp.spawn(
        ddp_worker.worker,
        args=(2, str(tmp_path / "init"), method_name, str(out), str(tmp_path / "run")),
        nprocs=2,
        join=True,
    )
    result = torch.load(out, weights_only=True)
    method, _ = ddp_worker.make_method(method_name)
    loss, grads = ddp_worker.gradients(method, method_name, ddp_worker.fixed_batch())
    assert torch.allclose(result["loss"], loss, atol=1e-5)
    assert set(result["grads"]) == set(grads)
    for name, grad in grads.items():
        assert torch.allclose(result["grads"][name], grad, atol=1e-5, rtol=1e-4), name
    assert result["replicas_equal"]
    assert (tmp_path / "run/checkpoints/last.pt").exists()


def spawn(tmp_path, fn, *args, name="init", timeout=240):
    """Run ``fn`` on 2 ranks; a rank left waiting in a collective fails the test."""
    context = mp.start_processes(
        fn, args=(2, str(tmp_path / name), *args), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{fn.__name__} did not finish within {timeout} s")


def test_ranks_draw_their_own_augmentations_and_worker_streams(tmp_path):
    out = tmp_path / "streams.pt"
    spawn(tmp_path, ddp_worker.worker_streams, str(out), str(tmp_path / "run"))
    rank0, rank1 = torch.load(out, weights_only=True)
    assert len(rank0["params"]) == len(rank1["params"]) == 2
    for step0, step1 in zip(rank0["params"], rank1["params"], strict=True):
        for name in ("shift", "gain"):
            assert not torch.equal(step0[name], step1[name]), name
    # the loader workers' torch, numpy and Python streams differ between ranks too
    draws0, draws1 = rank0["worker_draws"], rank1["worker_draws"]
    assert draws0.shape == (4, 3)
    assert (draws0 != draws1).all()


def test_kill_and_resume_under_two_processes_matches_an_uninterrupted_run(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    spawn(tmp_path, ddp_worker.worker_resume, str(full), 0, False, name="i1")
    spawn(tmp_path, ddp_worker.worker_resume, str(cut), 6, False, name="i2")
    assert load_checkpoint(cut / "checkpoints/last.pt")["step"] == 4  # steps 5-6 are lost
    spawn(tmp_path, ddp_worker.worker_resume, str(cut), 0, True, name="i3")
    a = load_checkpoint(full / "checkpoints/last.pt")
    b = load_checkpoint(cut / "checkpoints/last.pt")
    assert a["step"] == b["step"] == 12 and a["world_size"] == b["world_size"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    banks = [rank["augmenter"]["pipeline.augmenters.1.bank"] for rank in a["ranks"]]
    assert not torch.equal(banks[0], banks[1])  # each rank keeps its own mixup memory
    for rank_a, rank_b in zip(a["ranks"], b["ranks"], strict=True):
        for key, value in rank_a["augmenter"].items():
            assert torch.equal(value, rank_b["augmenter"][key]), key
        assert torch.equal(rank_a["rng"]["torch"], rank_b["rng"]["torch"])


def test_gathered_negatives_and_skipped_batches_use_host_values_only(tmp_path):
    out = tmp_path / "host.pt"
    spawn(tmp_path, ddp_worker.worker_host_values, str(out))
    rank0, rank1 = torch.load(out, weights_only=True)
    expected = torch.cat([torch.arange(6.0).reshape(3, 2), torch.arange(10.0).reshape(5, 2) + 100])
    assert torch.equal(rank0["gathered"], expected) and torch.equal(rank1["gathered"], expected)
    assert (rank0["offset"], rank1["offset"]) == (0, 3)
    # each row's gradient is the sum over both ranks of its weight (its position + 1)
    assert torch.equal(rank0["grad"], 2 * torch.arange(1.0, 4.0)[:, None].expand(3, 2))
    assert torch.equal(rank1["grad"], 2 * torch.arange(4.0, 9.0)[:, None].expand(5, 2))
    assert rank0["full"] == rank1["full"] == (True, (3, 5))
    assert rank0["lonely"] == rank1["lonely"] == (False, (1, 2))


def test_a_signal_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    out = tmp_path / "stop.pt"
    spawn(tmp_path, ddp_worker.worker_stop, str(tmp_path / "run"), str(out), timeout=120)
    assert torch.load(out, weights_only=True) == [(3, True), (3, True)]
    state = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    assert state["step"] == 3 and state["world_size"] == 2
    assert not (tmp_path / "run/export").exists()
