"""The scripts under experiments/ that docs/RESULTS.md quotes, run small on the demo data:
their figures must say what the results say they measure."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("isolated")


def test_crop_coverage_finds_energy_weighted_crops_holding_the_event_more_often():
    rates = _script("crop_coverage").main(["--clips", "6", "--crops", "16"])
    # a uniform 96-frame crop of a 501-frame clip holds a short event about 96/406 of the time
    assert 0.1 < rates["uniform"] < 0.4
    assert rates["energy_weighted"] > rates["uniform"] + 0.25


def test_action_readability_reads_the_gain_and_the_pitch_from_the_views():
    views = ["--passes", "3", "--clips", "400", "--epochs", "2", "--readers", "cnn,xcorr"]
    composed = ["augment=composed", "augment.fader.predict=true"]  # the gain as a target too
    readability = _script("action_readability").main([*views, *composed])
    assert set(readability) == {"geometry.shift_x", "geometry.shift_y", "gain[0]", "gain[1]"}
    gain = readability["gain[0]"]
    assert set(gain) == {"majority", "cnn", "xcorr"}
    assert gain["cnn"] > gain["majority"] + 0.2  # a level ramp changes the whole view
    # the alignment reader sees the pitch shift between the two views' spectra and the time
    # shift between two overlapping views
    pitch, time = readability["geometry.shift_y"], readability["geometry.shift_x"]
    assert pitch["xcorr"] > pitch["majority"] + 0.15
    assert time["xcorr"] > time["majority"] + 0.1
    for scores in readability.values():
        assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_action_readability_reads_the_gain_from_plain_statistics():
    readability = _script("action_readability").main(
        [
            "--readers",
            "stats",
            "--passes",
            "2",
            "--clips",
            "200",
            "augment=composed",
            "augment.fader.predict=true",
        ]  # fmt: skip
    )
    gain = readability["gain[0]"]
    assert set(gain) == {"majority", "linear_concat", "linear_diff", "mlp_concat"}
    # a gain difference moves every log-mel bin's mean: the difference of the views shows it
    assert gain["linear_diff"] > gain["majority"] + 0.2


def test_action_readability_runs_the_whole_view_reader_on_images():
    readability = _script("action_readability").main(
        ["--modality", "vision", "--passes", "1", "--clips", "200", "--epochs", "2"]
    )
    assert {"crop.shift_x", "grayscale[0]", "brightness[0]"} <= set(readability)
    assert all(set(scores) == {"majority", "cnn"} for scores in readability.values())


def test_rrc_in_semitones_is_a_pitch_shift_that_shrinks_with_frequency():
    figures = _script("rrc_in_semitones").main()
    low, high = figures[250.0]["shift"], figures[4000.0]["shift"]
    assert figures[1000.0]["shift"][1] == 0.0  # 44% of views are not zoomed
    # a zoom of the mel axis moves low frequencies up by many semitones, high ones down
    assert low[2] > 10 and high[0] < -5 and high[2] < 2
    assert figures[250.0]["interval_scale"][0] < 0.5  # intervals up to 2x wider


def test_time_alignment_reads_overlapping_views_from_their_changes_not_coarse_frames():
    script = _script("time_alignment")
    fine = script.main(["--clips", "120"])
    coarse = script.main(["--clips", "120", "--block", "8", "--tolerance", "8"])
    # a level ramp that differs between the views hides their alignment in the levels;
    # the frame-to-frame changes keep it, at 10 ms and not at 80 ms
    assert fine["changes"] > 0.8 and fine["changes"] > fine["levels"] + 0.2
    assert coarse["changes"] < 0.5


def test_frame_reader_scale_reads_the_time_shift_in_every_form():
    results = _script("frame_reader_scale").main(
        ["--steps", "60", "--seeds", "1", "--clips", "40", "augment=composed"]
    )
    forms = {"plain", "peaks", "profile", "inputs"}
    assert set(results) == {f"{form} seed 1" for form in forms} | {"majority"}
    time_majority = results["majority"][0]
    for form in forms:
        in_training, _, fresh, _ = results[f"{form} seed 1"]
        # a random encoder's frames already align two views: every form reads the shift
        assert fresh > time_majority + 0.1, (form, fresh, time_majority)
        assert 0.0 <= in_training <= 1.0


def test_paired_across_pairs_two_comparisons_by_seed_per_task(tmp_path):
    def comparison(folder, arm, class_scores, pitch_scores):
        tasks = {
            task: {"arms": {arm: {"per_seed": dict(enumerate(scores))}}}
            for task, scores in (("class", class_scores), ("pitch_register", pitch_scores))
        }
        (tmp_path / folder).mkdir()
        doc = {"arms": {arm: {}}, "tasks": tasks}
        (tmp_path / folder / "comparison.json").write_text(json.dumps(doc))

    comparison("separate", "simclr-inverse", [0.80, 0.82, 0.84], [0.70, 0.72, 0.74])
    # the second has a seed the first lacks: only the common seeds are paired
    comparison("composed", "simclr-inverse", [0.85, 0.86, 0.86, 0.99], [0.69, 0.72, 0.72, 0.0])
    out = _script("paired_across").main([str(tmp_path / "separate"), str(tmp_path / "composed")])
    assert out["class"]["n"] == 3
    assert out["class"]["per_seed"] == pytest.approx({"0": 0.05, "1": 0.04, "2": 0.02})
    assert out["class"]["mean"] == pytest.approx(0.11 / 3)
    # std of (0.05, 0.04, 0.02) is 0.01528; t(2) = 4.303 over sqrt(3)
    assert out["class"]["ci95"] == pytest.approx(4.303 * 0.015275 / 3**0.5, rel=1e-3)
    assert out["pitch_register"]["mean"] == pytest.approx(-0.01)
    # a side may join comparisons: a seed of a later one replaces the earlier one's
    comparison("rerun", "simclr-inverse", [0.86, 0.0, 0.0, 0.90], [0.71, 0.0, 0.0, 0.60])
    (tmp_path / "rerun" / "comparison.json").write_text(
        (tmp_path / "rerun" / "comparison.json").read_text().replace('"1"', '"5"')
        .replace('"2"', '"6"')
    )  # fmt: skip
    joined = f"{tmp_path / 'separate'},{tmp_path / 'rerun'}"
    out = _script("paired_across").main([joined, str(tmp_path / "composed")])
    assert out["class"]["per_seed"] == pytest.approx({"0": -0.01, "1": 0.04, "2": 0.02, "3": 0.09})
    assert out["pitch_register"]["per_seed"]["3"] == pytest.approx(-0.60)
    with pytest.raises(SystemExit, match="no comparison.json in .*missing"):
        _script("paired_across").main([str(tmp_path / "separate"), str(tmp_path / "missing")])
    with pytest.raises(SystemExit, match="no arm 'byol-off'"):
        _script("paired_across").main(
            [str(tmp_path / "separate"), str(tmp_path / "composed"), "--arm", "byol-off"]
        )
