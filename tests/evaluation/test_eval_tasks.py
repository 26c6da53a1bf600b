import json

import pytest
import torch
import torch.nn.functional as F

from stec.evaluation import cross_validate, cross_validate_tasks, format_table, write_results
from tests.evaluation.synthetic import make_blobs

FAST = {"cs": [1.0]}  # one C: no inner cross-validation


def _clips():
    """300 clips, 3 folds; ``class`` labels every clip, ``parity`` four clips in five,
    ``tags`` (multi-hot) all but the first 30."""
    x, y = make_blobs(300, 4, 8, separation=3.0, seed=0)
    folds = torch.arange(300) % 3 + 1
    parity = torch.where(torch.arange(300) % 5 == 0, -1, y % 2)
    tags = torch.cat([F.one_hot(y, 4).float(), (y < 2).float()[:, None]], 1)
    tags[:30] = -1
    return x, {"class": y, "parity": parity, "tags": tags}, folds


def test_every_task_is_cross_validated_on_its_own_clips():
    x, tasks, folds = _clips()
    result = cross_validate_tasks(x, tasks, folds, **FAST)
    assert list(result) == ["tasks"] and list(result["tasks"]) == ["class", "parity", "tags"]
    by_task = result["tasks"]
    assert by_task["class"] == {**cross_validate(x, tasks["class"], folds, **FAST), "n_clips": 300}
    keep = tasks["parity"] >= 0
    assert by_task["parity"] == {
        **cross_validate(x[keep], tasks["parity"][keep], folds[keep], **FAST),
        "n_clips": 240,
    }
    assert by_task["class"]["accuracy_mean"] > 0.9 and by_task["parity"]["accuracy_mean"] > 0.9
    tags = by_task["tags"]
    assert tags["metric"] == "map" and tags["n_clips"] == 270 and tags["map_mean"] > 0.9
    assert tags == {
        **cross_validate(x[30:], tasks["tags"][30:], folds[30:], multilabel=True, **FAST),
        "n_clips": 270,
    }


def test_probe_options_reach_every_task():
    x, tasks, folds = _clips()
    result = cross_validate_tasks(x, {"class": tasks["class"]}, folds, protocol="evar", epochs=3)
    assert result["tasks"]["class"]["protocol"] == "evar"


def test_bad_tasks_are_named():
    x, tasks, folds = _clips()
    with pytest.raises(ValueError, match=r"task 'short': labels must be \[N\] or \[N, C\]"):
        cross_validate_tasks(x, {"short": tasks["class"][:10]}, folds, **FAST)
    one_fold = torch.where(folds == 1, tasks["class"], -1)
    with pytest.raises(ValueError, match="task 'rare': its 100 labelled clips lie in fewer"):
        cross_validate_tasks(x, {"rare": one_fold}, folds, **FAST)
    with pytest.raises(ValueError, match="at least one task"):
        cross_validate_tasks(x, {}, folds)


def test_task_results_are_written_and_printed(tmp_path):
    x, tasks, folds = _clips()
    tasks["early"] = torch.where(folds < 3, tasks["class"], -1)  # no clip of fold 3
    result = {
        **cross_validate(x, tasks["class"], folds, **FAST),
        **cross_validate_tasks(x, tasks, folds, **FAST),
    }
    written = json.loads(write_results(tmp_path / "results.json", result).read_text())
    assert written["tasks"]["parity"]["per_fold"].keys() == {"1", "2", "3"}
    assert written["tasks"]["tags"]["n_clips"] == 270
    table = format_table(result).split("\n\n")
    assert len(table) == 2 and table[0].startswith("fold")  # the primary metric first
    lines = table[1].splitlines()
    assert lines[0].split() == ["task", "clips", "metric", "mean", "±", "std",
                                "fold", "1", "fold", "2", "fold", "3"]  # fmt: skip
    parity = result["tasks"]["parity"]
    assert lines[3].split()[:3] == ["parity", "240", "accuracy"]
    assert lines[3].split()[3] == f"{parity['accuracy_mean']:.4f}"
    assert lines[3].split()[-1] == f"{parity['per_fold'][3]:.4f}"
    early = result["tasks"]["early"]
    assert lines[5].split()[-1] == f"{early['per_fold'][2]:.4f}"  # fold 3 left blank
    assert lines[4].split()[:3] == ["tags", "270", "map"]
    assert len({len(line) for line in lines}) == 1  # aligned


def test_incomplete_task_results_are_rejected(tmp_path):
    bad = {"tasks": {"pitch": {"metric": "accuracy", "accuracy_mean": 0.5, "per_fold": {1: 0.5}}}}
    with pytest.raises(ValueError, match=r"results\['tasks'\]\['pitch'\].*accuracy_std"):
        write_results(tmp_path / "r.json", bad)
    with pytest.raises(ValueError, match="must be cross-validation results"):
        write_results(tmp_path / "r.json", {"tasks": {"pitch": 0.5}})
    assert not (tmp_path / "r.json").exists()
