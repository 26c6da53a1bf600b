"""Fixtures shared across test packages."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Run in a fresh folder with its own data cache (the demo sets are generated there),
    on one thread, so that tests of the CLIs neither read nor leave state elsewhere."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STEC_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
