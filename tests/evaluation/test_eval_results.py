import json
import os

import pytest
import torch

from stec.evaluation import format_table, write_results

CV = {
    "metric": "accuracy",
    "accuracy_mean": 0.8,
    "accuracy_std": 0.1,
    "per_fold": {1: 0.7, 2: 0.9},
    "n_folds": 2,
}


def test_write_results_json_has_required_keys(tmp_path):
    path = write_results(tmp_path / "sub" / "results.json", {**CV, "extra": torch.tensor(0.5)})
    data = json.loads(path.read_text())
    assert {"accuracy_mean", "accuracy_std", "per_fold"} <= set(data)
    assert data["per_fold"] == {"1": 0.7, "2": 0.9} and data["extra"] == 0.5
    assert os.listdir(tmp_path / "sub") == ["results.json"]  # no temporary file left


def test_write_results_writes_nan_as_null(tmp_path):
    path = write_results(tmp_path / "r.json", {"map": float("nan")})
    assert json.loads(path.read_text()) == {"map": None}


def test_write_results_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_results(path, CV)
    before = path.read_text()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_results(path, {**CV, "accuracy_mean": 0.1})
    assert path.read_text() == before  # the old file is intact
    assert os.listdir(tmp_path) == ["results.json"]  # and the temporary file is gone


def test_write_results_rejects_incomplete_cross_validation(tmp_path):
    with pytest.raises(ValueError, match="accuracy_std"):
        write_results(tmp_path / "r.json", {"per_fold": {1: 0.5}, "accuracy_mean": 0.5})
    assert not (tmp_path / "r.json").exists()


def test_format_table_cross_validation_and_flat():
    table = format_table(CV)
    lines = table.splitlines()
    assert lines[0].split() == ["fold", "accuracy"]
    assert lines[2].split() == ["fold", "1", "0.7000"]
    assert lines[-1].split() == ["mean", "±", "std", "0.8000", "±", "0.1000"]
    assert len({len(line) for line in lines}) == 1  # aligned
    flat = format_table({"knn": 0.5, "action_acc": {"gain": 0.25}, "curve": [1, 2]})
    assert "action_acc/gain" in flat and "0.2500" in flat and "curve" not in flat
