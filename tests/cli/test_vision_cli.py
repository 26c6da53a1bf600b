"""stec-vision end to end on generated data: CIFAR-10 in torchvision's on-disk format, an
ImageFolder tree with broken images, and the demo set."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from stec.engine.checkpoint import load_checkpoint
from stec.engine.export import export_backbone
from stec_vision.cli import main
from stec_vision.encoders import build_vision_encoder, encoder_meta, load_vision_encoder

TINY = [
    "encoder=small", "encoder.width=8", "method.proj_hidden=32", "method.proj_dim=16",
    "efference.inverse_hidden=32", "efference.action_embed_dim=8", "trainer.optimizer=adamw",
    "trainer.lr=0.001", "trainer.batch_size=8", "trainer.max_steps=3", "trainer.num_workers=0",
    "trainer.progress=false", "trainer.warmup_steps=0", "evaluate.epochs=3",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STEC_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)


def write_cifar10(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(name, n):
        labels = rng.integers(0, 10, n).tolist()
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": labels}, handle, protocol=2)

    for i in range(1, 6):
        dump(f"data_batch_{i}", 8)
    dump("test_batch", 10)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle, protocol=2)
    return root


def test_cifar10_pretrain_evaluate_embed(tmp_path):
    data = ["data=cifar10", f"data.root={write_cifar10(tmp_path / 'cifar')}"]
    # the cifar10 option carries the official S-TEC hyper-parameters; TINY shrinks them
    assert main(["pretrain", *data, "run_dir=run", "efference=inverse", *TINY]) == 0
    state = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    assert state["step"] == 3 and state["config"]["method"]["temperature"] == 0.5
    assert state["config"]["efference"]["lambda_manip"] == pytest.approx(1.0 * 4 / 6)
    assert state["config"]["efference"]["components"] == ["crop"]
    assert main(["evaluate", *data, "checkpoint=run", *TINY]) == 0
    results = json.loads((tmp_path / "run/results.json").read_text())
    assert {"accuracy", "knn_accuracy"} <= set(results) and results["n_test"] == 10
    encoder, meta = load_vision_encoder(tmp_path / "run")
    assert meta["normalize"] == "cifar10" and meta["feature_dim"] == results["feature_dim"]
    assert main(["embed", *data, "checkpoint=run", "out=e.npy", *TINY]) == 0
    assert np.load(tmp_path / "e.npy", allow_pickle=True).item()["embeddings"].shape[0] == 10


def test_imagefolder_with_broken_images(tmp_path):
    root = tmp_path / "tree"
    rng = np.random.default_rng(1)
    for split, n in (("train", 12), ("val", 4)):
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
            (folder / "broken.jpg").write_bytes(b"not an image")
    data = ["data=imagefolder", f"data.root={root}", "data.size=16"]
    assert main(["pretrain", *data, "run_dir=r", "method=byol", "efference=both", *TINY]) == 0
    assert main(["evaluate", *data, "checkpoint=r", *TINY]) == 0
    results = json.loads((tmp_path / "r/results.json").read_text())
    assert results["n_train"] == 24 and results["n_test"] == 8


def test_demo_random_floor(tmp_path):
    assert main(["evaluate", "checkpoint=random", *TINY]) == 0
    results = json.loads((tmp_path / "runs/vision/random-demo/results.json").read_text())
    assert 0.0 <= results["accuracy"] <= 1.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["pretrain", "data=cifar11"], "data"),
        (
            ["pretrain", "trainer.amp=fp8"],
            "trainer.amp='fp8' is not valid; allowed values: off, bf16, fp16",
        ),
        (["pretrain", "data=cifar10"], "data.root"),
        (["pretrain", "method=simclrr"], "allowed values for method: byol, relic, simclr"),
        (
            ["pretrain", "efference=inversee"],
            "allowed values for efference: both, forward, inverse, off",
        ),
        (["pretrain", "trainer.epoch=3"], "did you mean 'trainer.epochs'?"),
        (["pretrain", "encoder.widht=8"], "did you mean 'encoder.width'?"),
    ],
)
def test_config_errors_name_the_key(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_internal_error_keeps_its_traceback_and_debug_is_in_the_help(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("label_names")

    monkeypatch.setattr("stec_vision.cli.dataset", broken)
    assert main(["pretrain", *TINY]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error: KeyError: 'label_names'" in err
    assert main(["--help"]) == 0
    assert "--debug" in capsys.readouterr().out


def _small_export(folder, width=8):
    model, dim = build_vision_encoder("small", width=width)
    meta = {"modality": "vision", "encoder": encoder_meta("small", width=width)}
    return export_backbone(model, folder, {**meta, "feature_dim": dim, "normalize": "none"})


def _edit_meta(folder, change):
    meta = json.loads((folder / "encoder.json").read_text())
    change(meta)
    (folder / "encoder.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda f: (f / "encoder.json").write_text("{"), "encoder.json: not valid JSON"),
        (lambda f: _edit_meta(f, lambda m: m.pop("encoder")), '"encoder" must be'),
        (
            lambda f: _edit_meta(f, lambda m: m["encoder"]["kwargs"].update(width=16)),
            "encoder.safetensors: the weights do not match encoder 'small'",
        ),
        (
            lambda f: _edit_meta(f, lambda m: m["encoder"]["kwargs"].update(depth=3)),
            "encoder.json: ",
        ),
        (
            lambda f: (f / "encoder.safetensors").write_bytes(b"\0" * 16),
            "encoder.safetensors: cannot read the weights",
        ),
    ],
)
def test_a_malformed_export_is_one_line_naming_file_and_problem(corrupt, message, tmp_path, capsys):
    folder = _small_export(tmp_path / "exp")
    corrupt(folder)
    for command in (["evaluate"], ["embed", "out=e.npy"]):
        assert main([*command, f"checkpoint={folder}", *TINY]) == 2
        err = capsys.readouterr().err
        assert message in err and str(folder) in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
