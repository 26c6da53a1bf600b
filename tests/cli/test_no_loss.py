"""Nothing a user made is lost: runs, results, data roots and exports (both CLIs)."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from stec.engine.checkpoint import load_checkpoint
from stec.engine.export import export_backbone
from stec_audio.cli import main as audio
from stec_audio.data.demo import ensure_demo_dataset
from stec_audio.data.demo_notes import ensure_notes_dataset
from stec_audio.data.frontend import NormStats
from stec_audio.encoders import AudioNTT2020
from stec_vision.cli import main as vision
from stec_vision.demo import ensure_demo_images
from stec_vision.encoders import build_vision_encoder, encoder_meta
from stec_vision.torchvision_export import export_torchvision
from tests.cli.test_audio_cli import TINY as AUDIO_TINY
from tests.cli.test_audio_cli import _tiny_export
from tests.cli.test_vision_cli import TINY as VISION_TINY

pytestmark = pytest.mark.usefixtures("isolated")

CLIS = {"audio": (audio, [*AUDIO_TINY, "data.n_per_class=2"]), "vision": (vision, VISION_TINY)}


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _made_run(folder, *parts: str) -> dict:
    """A run folder holding ``parts`` (as a finished or killed run leaves them); returns
    the bytes of every file, to check that nothing changed."""
    files = {
        "checkpoint": folder / "checkpoints" / "last.pt",
        "metrics": folder / "metrics.csv",
        "export": folder / "export" / "encoder.safetensors",
    }
    made = {}
    for part in parts:
        files[part].parent.mkdir(parents=True, exist_ok=True)
        files[part].write_bytes(f"the user's {part}".encode())
        made[files[part]] = files[part].read_bytes()
    return made


@pytest.mark.parametrize("modality", sorted(CLIS))
@pytest.mark.parametrize("parts", [("checkpoint", "metrics", "export"), ("metrics",), ("export",)])
def test_pretrain_into_a_run_dir_holding_a_run_is_refused(modality, parts, tmp_path, capsys):
    main, tiny = CLIS[modality]
    made = _made_run(tmp_path / "run", *parts)
    assert main(["pretrain", "run_dir=run", *tiny]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "run_dir=run already holds a run" in line
    assert "trainer.resume=auto" in line and "trainer.overwrite=true" in line
    assert "new run_dir" in line
    for path, content in made.items():
        assert path.read_bytes() == content
    assert not (tmp_path / "run" / "config.json").exists()  # refused before any work


def test_overwrite_replaces_the_run_and_its_stale_results(tmp_path, capsys):
    made = _made_run(tmp_path / "run", "checkpoint", "metrics", "export")
    (tmp_path / "run" / "results.json").write_text("{}")  # evaluated the old weights
    (tmp_path / "run" / "notes.txt").write_text("mine")  # not a run output: kept
    assert vision(["pretrain", "run_dir=run", "trainer.overwrite=true", *VISION_TINY]) == 0
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["step"] == 3
    for path, content in made.items():
        assert path.read_bytes() != content
    assert not (tmp_path / "run" / "results.json").exists()
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


# found only once the method is built around the encoder: after every check of the keys alone
# the inverse model reads pooled features here, so it has no frames to detach
LATE_SETTING_ERROR = [
    "efference=inverse",
    "efference.inverse_input=backbone",
    "efference.detach_frames=true",
]


@pytest.mark.parametrize("modality", sorted(CLIS))
def test_a_start_refused_for_a_setting_replaces_nothing(modality, tmp_path, capsys):
    main, tiny = CLIS[modality]
    made = _made_run(tmp_path / "run", "checkpoint", "metrics", "export")
    (tmp_path / "run" / "results.json").write_text("{}")
    overwrite = ["pretrain", "run_dir=run", "trainer.overwrite=true", *tiny]
    assert main([*overwrite, *LATE_SETTING_ERROR]) == 2
    assert "needs inverse_input=frames" in _one_line(capsys.readouterr().err)
    for path, content in made.items():  # the run it was told to replace is still whole
        assert path.read_bytes() == content
    assert (tmp_path / "run" / "results.json").read_text() == "{}"
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize("modality", sorted(CLIS))
def test_a_start_refused_for_a_setting_writes_nothing(modality, tmp_path, capsys):
    main, tiny = CLIS[modality]
    assert main(["pretrain", "run_dir=run", *tiny, *LATE_SETTING_ERROR]) == 2
    assert "needs inverse_input=frames" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_a_resume_reuses_the_statistics_of_a_checkpointed_run_only(tmp_path):
    """stats.json left by a start that never reached a checkpoint does not describe what a
    fresh start trains on (other clips, another front end): it is recomputed, not served."""
    run = tmp_path / "run"
    run.mkdir()
    NormStats(123.0, 45.0).save(run / "stats.json")
    assert audio(["pretrain", "run_dir=run", "trainer.resume=auto", *CLIS["audio"][1]]) == 0
    assert NormStats.load(run / "stats.json") != NormStats(123.0, 45.0)
    # with its checkpoint beside them, the run's statistics are what its resume trains with
    NormStats(123.0, 45.0).save(run / "stats.json")
    tiny = [*CLIS["audio"][1], "trainer.max_steps=4"]
    assert audio(["pretrain", "run_dir=run", "trainer.resume=auto", *tiny]) == 0
    assert NormStats.load(run / "stats.json") == NormStats(123.0, 45.0)
    assert json.loads((run / "export/encoder.json").read_text())["norm"]["mean"] == 123.0


def test_a_run_dir_without_a_run_is_used(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    assert vision(["pretrain", "run_dir=run", *VISION_TINY]) == 0
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    # and the same command again continues it only when told so
    assert vision(["pretrain", "run_dir=run", *VISION_TINY]) == 2
    assert vision(["pretrain", "run_dir=run", "trainer.resume=auto", *VISION_TINY]) == 0


@pytest.mark.parametrize("modality", sorted(CLIS))
@pytest.mark.parametrize("command", ["evaluate", "embed out=e.npy"])
def test_a_stopped_run_without_its_export_says_how_to_finish_it(
    modality, command, tmp_path, capsys
):
    main, _ = CLIS[modality]
    made = _made_run(tmp_path / "run", "checkpoint", "metrics")
    assert main([*command.split(), "checkpoint=run"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "run holds a training checkpoint but no export" in line
    assert "pretrain run_dir=run trainer.resume=auto" in line
    for path, content in made.items():
        assert path.read_bytes() == content


FAST_EVAL = ["data.n_per_class=2", "data.labels=[]", "evaluate.cs=[1.0]", *AUDIO_TINY]


def test_evaluate_reads_an_export_file_for_what_it_is(tmp_path, capsys):
    folder, _, _ = _tiny_export(tmp_path / "run" / "export")
    weights = folder / "encoder.safetensors"
    assert audio(["evaluate", f"checkpoint={weights}", *FAST_EVAL]) == 0
    results = json.loads((folder / "results.json").read_text())
    assert results["checkpoint"] == str(weights) and results["n_clips"] == 20


@pytest.mark.parametrize("modality", sorted(CLIS))
@pytest.mark.parametrize("command", ["evaluate", "embed"])
def test_a_checkpoint_file_that_is_no_export_is_refused_before_any_work(
    modality, command, tmp_path, capsys
):
    main, tiny = CLIS[modality]
    _made_run(tmp_path / "run", "checkpoint")
    for given, hint in (("run/checkpoints/last.pt", "checkpoint=run"), ("w.pth", "")):
        (tmp_path / given).write_bytes(b"weights")
        out = "out=e.npy" if command == "embed" else "out=r.json"
        args = [command, f"checkpoint={given}", out, *tiny]
        assert main(args) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"checkpoint={given} is a file" in line
        assert "a run folder" in line and "encoder.safetensors" in line
        assert line.endswith(hint)  # the run a training checkpoint belongs to
    assert not list(tmp_path.rglob("*.json")) and not (tmp_path / "e.npy").exists()
    assert not (tmp_path / "cache").exists()  # no data was read or generated


def test_evaluating_two_weight_files_keeps_both_results(tmp_path):
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        torch.save(AudioNTT2020(d=32).state_dict(), tmp_path / f"w{seed}.pth")
        assert audio(["evaluate", "checkpoint=init", f"encoder.init=w{seed}.pth", *FAST_EVAL]) == 0
        (path,) = set((tmp_path / "runs/audio").glob("init-*/results.json")) - set(paths)
        paths.append(path)
    assert paths[0].parent.name.startswith("init-w1-") and paths[0].parent.name.endswith("-demo")
    assert paths[1].parent.name.startswith("init-w2-")
    first = [json.loads(p.read_text())["per_fold"] for p in paths]
    assert first[0] != first[1]  # each folder holds its own weights' results


@pytest.mark.parametrize(
    "main, args",
    [
        (audio, ["prepare", "data.n_per_class=2"]),
        (audio, ["prepare", "data=notes", "data.n_per_class=2"]),
        (vision, ["evaluate", "checkpoint=random", *VISION_TINY]),
    ],
)
def test_a_mistyped_root_of_generated_data_is_never_created(main, args, tmp_path, capsys):
    assert main([*args, "data.root=nowhere/demo"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "data.root='nowhere/demo' does not exist" in line and "STEC_CACHE" in line
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "cache").exists()


def test_generated_data_goes_into_an_existing_root_the_user_named(tmp_path):
    (tmp_path / "mine").mkdir()
    assert audio(["prepare", "data.n_per_class=1", "data.root=mine", *AUDIO_TINY]) == 0
    assert len(list((tmp_path / "mine").glob("*/audio/*.wav"))) == 10
    assert not (tmp_path / "cache" / "demo_audio").exists()


def test_prepared_data_defaults_to_the_cache_folder(tmp_path, monkeypatch):
    assert audio(["prepare", "data.n_per_class=1", *AUDIO_TINY]) == 0
    (folder,) = (tmp_path / "cache" / "prepared").glob("demo-*")
    assert list(folder.glob("stats-*.json")) and (folder / "cache" / "config.json").exists()
    assert not (tmp_path / "prepared").exists()
    # from another working directory, the same data is found prepared
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert audio(["prepare", "data.n_per_class=1", *AUDIO_TINY]) == 0
    assert [p.name for p in (tmp_path / "cache" / "prepared").iterdir()] == [folder.name]
    assert not (tmp_path / "elsewhere" / "prepared").exists()


def _private(path) -> int:
    """The permission bits of ``path`` that the umask would have given, but it lacks."""
    umask = os.umask(0)
    os.umask(umask)
    usual = (0o777 if path.is_dir() else 0o666) & ~umask
    return usual & ~stat.S_IMODE(path.stat().st_mode)


def test_exports_and_generated_sets_get_the_usual_permissions(tmp_path):
    folder, _, _ = _tiny_export(tmp_path / "export")
    for path in (folder / "encoder.safetensors", folder / "encoder.json"):
        assert _private(path) == 0, oct(path.stat().st_mode)
    model, dim = build_vision_encoder("resnet18")
    meta = {"modality": "vision", "encoder": encoder_meta("resnet18"), "feature_dim": dim}
    export_backbone(model, tmp_path / "r18", {**meta, "normalize": "none"})
    for out in ("r18.safetensors", "r18.pth"):
        weights, sidecar = export_torchvision(tmp_path / "r18", tmp_path / out)
        assert _private(weights) == 0 and _private(sidecar) == 0
    audio_root = ensure_demo_dataset(tmp_path, n_per_class=1)
    notes_root = ensure_notes_dataset(tmp_path, n_per_class=1)
    images = ensure_demo_images(tmp_path, n_per_class=1, n_test_per_class=1, size=16)
    for root in (audio_root, notes_root, images):
        assert _private(root) == 0, (root, oct(root.stat().st_mode))


def _resnet_export(folder):
    model, dim = build_vision_encoder("resnet18")
    meta = {"modality": "vision", "encoder": encoder_meta("resnet18"), "feature_dim": dim}
    return export_backbone(model, folder, {**meta, "normalize": "none"})


@pytest.mark.parametrize("modality", sorted(CLIS))
def test_an_output_never_replaces_an_exported_encoder_or_a_folder(modality, tmp_path, capsys):
    main, tiny = CLIS[modality]
    folder = _resnet_export(tmp_path / "run" / "export")
    kept = {path: path.read_bytes() for path in folder.iterdir()}
    cases = [
        (["evaluate", "checkpoint=random", f"out={folder / 'encoder.json'}"], "exported encoder"),
        (["evaluate", "checkpoint=random", f"out={folder}"], "is a folder"),
        (["evaluate", "checkpoint=random", "out=results.csv"], "a .json file name"),
    ]
    if modality == "vision":
        cases += [
            (["export", f"checkpoint={folder}", f"out={folder / 'encoder.safetensors'}"], "exported encoder"),
            (["export", f"checkpoint={folder}", f"out={folder / 'encoder.pth'}"], "exported encoder"),
        ]  # fmt: skip
    for args, message in cases:
        assert main([*args, *tiny]) == 2
        line = _one_line(capsys.readouterr().err)
        assert message in line
    assert {path: path.read_bytes() for path in folder.iterdir()} == kept
    assert not (tmp_path / "cache").exists()  # refused before any work


@pytest.mark.parametrize("modality", sorted(CLIS))
def test_an_output_never_replaces_a_file_that_exists(modality, tmp_path, capsys):
    # a run's config, a user's own file, an earlier output: each stays as it was, and the
    # line says how to go on
    main, tiny = CLIS[modality]
    (tmp_path / "run").mkdir()
    files = {
        tmp_path / "run" / "config.json": b'{"seed": 0}',
        tmp_path / "mine.npy": b"a user's array",
        tmp_path / "earlier.parquet": b"earlier embeddings",
        tmp_path / "mine.pth": b"a user's weights",
        tmp_path / "other.json": b"the sidecar of other.safetensors",
    }
    for path, content in files.items():
        path.write_bytes(content)
    cases = [
        ["evaluate", "checkpoint=random", f"out={tmp_path / 'run' / 'config.json'}"],
        ["embed", "checkpoint=random", f"out={tmp_path / 'mine.npy'}"],
        ["embed", "checkpoint=random", f"out={tmp_path / 'earlier.parquet'}"],
    ]
    if modality == "vision":
        folder = _resnet_export(tmp_path / "export")
        cases += [
            ["export", f"checkpoint={folder}", f"out={tmp_path / 'mine.pth'}"],
            ["export", f"checkpoint={folder}", f"out={tmp_path / 'other.safetensors'}"],
        ]
    for args in cases:
        assert main([*args, *tiny]) == 2
        line = _one_line(capsys.readouterr().err)
        assert (
            "already exists; nothing was written: choose another file name, or move it away" in line
        )
    assert {path: path.read_bytes() for path in files} == files
    assert not (tmp_path / "other.safetensors").exists()


@pytest.mark.parametrize("modality", sorted(CLIS))
def test_a_folder_key_that_names_a_file_is_one_line(modality, tmp_path, capsys):
    # a run folder or a comparison's folder given as a file's path, or a path under one:
    # one line naming the key, and the file as it was
    main, tiny = CLIS[modality]
    mine = tmp_path / "notes.txt"
    mine.write_text("a user's notes")
    cases = [
        (["pretrain", f"run_dir={mine}"], "run_dir"),
        (["pretrain", f"run_dir={mine / 'run'}"], "run_dir"),
        (["evaluate", "checkpoint=random", f"run_dir={mine}"], "run_dir"),
        (["compare", f"compare.out={mine}"], "compare.out"),
    ]
    if modality == "audio":  # where the prepared statistics and caches go
        cases += [(["prepare", f"data.prepared={mine}"], "data.prepared")]
    for args, key in cases:
        assert main([*args, *tiny]) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"{key}=" in line and f"{mine} is a file, not a folder: give a folder's path" in line
    assert mine.read_text() == "a user's notes"
    # a generated set's root that is a file is said to be one, not to be missing
    assert main(["pretrain", f"data.root={mine}", *tiny]) == 2
    assert "is a file, not a folder; the generated data goes" in _one_line(capsys.readouterr().err)


def test_a_damaged_checkpoint_is_one_line_that_says_how_to_go_on(tmp_path, capsys):
    main, tiny = CLIS["audio"]
    assert main(["pretrain", "run_dir=run", *tiny]) == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # a copy cut short
    damaged = checkpoint.read_bytes()
    capsys.readouterr()
    # a broken checkpoint is a failed run (status 1), not a mistake in the input
    assert main(["pretrain", "run_dir=run", "trainer.resume=auto", *tiny]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "last.pt could not be read" in line
    assert line.endswith(
        "it cannot be resumed: start afresh in a new run_dir=..., or replace this run with "
        "trainer.overwrite=true instead of trainer.resume"
    )
    assert checkpoint.read_bytes() == damaged


@pytest.mark.parametrize("modality", sorted(CLIS))
def test_evaluating_again_keeps_the_earlier_results(modality, tmp_path, capsys):
    # an evaluation's results are a user's too (the data or the weights may be gone since):
    # a second evaluation into the same folder is one line, and out= puts it elsewhere
    main, tiny = CLIS[modality]
    tiny = [*tiny, "data.labels=[]", "evaluate.cs=[1.0]"] if modality == "audio" else tiny
    results = f"runs/{modality}/random-demo/results.json"
    assert main(["evaluate", "checkpoint=random", *tiny]) == 0
    kept = (tmp_path / results).read_bytes()
    assert main(["evaluate", "checkpoint=random", "seed=1", *tiny]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{results} already holds an evaluation; nothing was done" in line
    assert "out=FILE.json" in line and "move it away" in line
    assert (tmp_path / results).read_bytes() == kept
    assert main(["evaluate", "checkpoint=random", "seed=1", "out=again.json", *tiny]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["checkpoint"] == "random" and (tmp_path / results).read_bytes() == kept


@pytest.mark.parametrize(
    "modality, part, key",
    [("audio", "sed", "with_sed"), ("vision", "segmentation", "with_segmentation")],
)
def test_the_parts_of_an_evaluation_never_replace_earlier_ones(
    modality, part, key, tmp_path, capsys
):
    # a dense evaluation beside the clip or image one goes to PART/<the results' name>: two
    # out= names in one folder keep both, and an earlier part refuses the run before any work
    main, tiny = CLIS[modality]
    if modality == "audio":
        tiny = [*tiny, "data.n_per_class=3", "data.labels=[]", "evaluate.cs=[1.0]"]
    else:
        tiny = [*tiny, "segmentation.epochs=1"]
    both = ["evaluate", "checkpoint=random", f"evaluate.{key}=true", *tiny]
    for name, seed in (("one", 0), ("two", 1)):
        assert main([*both, f"out={name}.json", f"seed={seed}"]) == 0
    one, two = ((tmp_path / part / f"{n}.json").read_text() for n in ("one", "two"))
    assert json.loads(one) != json.loads(two)  # each its own encoder's, none replaced
    earlier = tmp_path / f"runs/{modality}/random-demo/{part}/results.json"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("an earlier evaluation")
    assert main(both) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"runs/{modality}/random-demo/{part}/results.json already holds an evaluation" in line
    assert earlier.read_text() == "an earlier evaluation"
    assert not (tmp_path / f"runs/{modality}/random-demo/results.json").exists()
