"""Shared settings of the audio augmentation, encoder and HEAR tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """These tests use tiny tensors, for which one intra-op thread is fastest and is not
    slowed down by other processes competing for the cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
