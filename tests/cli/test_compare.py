"""The comparison runner: arms x seeds, floors, paired differences, report, resume."""

from __future__ import annotations

import json

import pytest
import torch

from stec.compare import build_plan, mean_ci
from stec_vision.cli import main
from tests.cli.test_vision_cli import TINY


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STEC_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)


def test_plan_pairs_every_efference_arm_with_its_baseline():
    plan = build_plan(["byol", "simclr"], ["off", "inverse"], [0, 1, 2], ablate=["crop"])
    names = {a.name: a for a in plan.arms}
    assert names["byol-inverse"].baseline == "byol-off" and names["byol-off"].baseline is None
    assert names["simclr-inverse-only-crop"].overrides[-1] == "efference.components=[crop]"
    assert names["floor-random"].kind == "floor"


def test_mean_ci_uses_student_t():
    mean, std, ci = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == 1.0 and ci == pytest.approx(4.303 / 3**0.5)


def test_vision_compare_writes_csv_json_report_and_resumes(tmp_path, capsys):
    args = ["compare", *TINY, "compare.methods=[simclr]", "compare.efference=[off,inverse]",
            "compare.seeds=[0,1]", "compare.ablate=[crop]", "compare.floors=[random,pixels]",
            "compare.out=cmp"]  # fmt: skip
    assert main(args) == 0
    out = tmp_path / "cmp"
    summary = json.loads((out / "comparison.json").read_text())
    arms = summary["arms"]
    assert set(arms) == {
        "simclr-off",
        "simclr-inverse",
        "simclr-inverse-only-crop",
        "floor-random",
        "floor-pixels",
    }
    diff = arms["simclr-inverse"]["paired_diff"]
    assert diff["vs"] == "simclr-off" and diff["n"] == 2
    assert "beats_floors" in arms["simclr-inverse"]
    assert (out / "comparison.csv").read_text().startswith("arm,kind,mean")
    report = (out / "report.md").read_text()
    assert "| simclr-inverse |" in report and "curves.png" in report
    for png in ("curves.png", "distance_ratio.png", "embeddings_pca.png", "action_accuracy.png"):
        assert (out / png).stat().st_size > 1000, png
    capsys.readouterr()
    assert main(args) == 0  # everything is done: every arm is skipped
    assert capsys.readouterr().out.count("[skip]") == 10
