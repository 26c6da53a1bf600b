"""Two CPU processes (gloo) give the same loss and gradients as one process on the global
batch, with contrastive negatives gathered across ranks."""

import pytest
import torch
import torch.multiprocessing as mp

from tests.core import ddp_worker


@pytest.mark.parametrize("method_name", ["simclr", "byol"])
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
