"""The CLIs under torchrun: 2 CPU processes (gloo) pretrain together and write one run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stec.engine.checkpoint import load_checkpoint
from tests.cli.test_audio_cli import TINY as AUDIO_TINY
from tests.cli.test_vision_cli import TINY


def _torchrun(tmp_path, port: int, module: str, *args: str) -> subprocess.CompletedProcess:
    """``pretrain ARGS run_dir=run`` of ``module`` on 2 processes; checks that it ends well
    with one run of 3 steps."""
    env = {**os.environ, "STEC_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={port}", "-m", module, "pretrain", *args, "run_dir=run",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["step"] == 3
    assert (tmp_path / "run/export/encoder.safetensors").exists()
    return done


@pytest.mark.slow
def test_stec_vision_pretrain_under_torchrun(tmp_path):
    done = _torchrun(tmp_path, 29517, "stec_vision.cli", *TINY, "method=simclr", "efference=both")
    assert done.stdout.count("pretraining simclr") == 1  # only rank 0 reports


@pytest.mark.slow
def test_stec_audio_pretrain_under_torchrun_prepares_the_data_on_rank_0_only(tmp_path):
    done = _torchrun(tmp_path, 29519, "stec_audio.cli", *AUDIO_TINY, "data.n_per_class=2")
    assert done.stderr.count("computing normalisation statistics") == 1
