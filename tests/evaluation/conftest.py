import contextlib

import pytest
import torch

from tests.evaluation.synthetic import make_blobs


@pytest.fixture(autouse=True)
def single_thread():
    """The tensors here are tiny: one intra-op thread avoids thread contention on a busy
    machine, where it can cost tens of times the compute. The same for the BLAS and OpenMP
    pools that scikit-learn (the reference in some tests) uses, when it is installed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(1)
    with limits:
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def blobs() -> tuple[torch.Tensor, torch.Tensor]:
    """1000 samples, 5 well-separated classes, 16 dimensions."""
    return make_blobs(1000, 5, 16, separation=4.0, seed=0)
