"""Packaging: every package folder is declared, and a wheel carries the Hydra configs."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_declared():
    declared = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("stec", "stec_audio", "stec_vision")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found <= declared, found - declared


def test_core_imports_no_modality_package():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "stec").rglob("*.py")
        if "stec_audio" in p.read_text() or "stec_vision" in p.read_text()
    ]
    assert not offenders


@pytest.mark.slow
def test_wheel_contains_the_configs(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("stec-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in (
        "stec_configs/audio/audio.yaml",
        "stec_configs/audio/data/esc50.yaml",
        "stec_configs/vision/vision.yaml",
        "stec_configs/common/method/byol.yaml",
        "stec_configs/common/efference/inverse.yaml",
    ):
        assert config in names, config
    assert "stec/engine/trainer.py" in names and "stec_audio/hear.py" in names
