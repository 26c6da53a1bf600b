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
from stec_vision.demo import DEMO_CLASSES
from stec_vision.encoders import build_vision_encoder, encoder_meta, load_vision_encoder

TINY = [
    "encoder=small", "encoder.width=8", "method.proj_hidden=32", "method.proj_dim=16",
    "efference.inverse_hidden=32", "efference.action_embed_dim=8", "trainer.optimizer=adamw",
    "trainer.lr=0.001", "trainer.batch_size=8", "trainer.max_steps=3", "trainer.num_workers=0",
    "trainer.progress=false", "trainer.warmup_steps=0", "evaluate.epochs=3",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("isolated")


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


def test_a_test_split_of_one_class_is_scored_without_its_distance_ratio(tmp_path, capsys):
    # a small validation folder holding one class: the probe's accuracy is well defined,
    # the within/between-class distance ratio is not (no "between")
    root = tmp_path / "tree"
    rng = np.random.default_rng(2)
    for split, classes in (("train", ("cat", "dog")), ("val", ("cat",))):
        for cls in classes:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(6):
                shade = 40 if cls == "cat" else 200  # the classes differ in brightness
                pixels = np.clip(rng.normal(shade, 20, (20, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    data = ["data=imagefolder", f"data.root={root}", "data.size=16"]
    assert main(["evaluate", *data, "checkpoint=pixels", "out=one.json", *TINY]) == 0
    results = json.loads((tmp_path / "one.json").read_text())
    assert results["n_test"] == 6 and results["accuracy"] == 1.0
    assert results["class_distance_ratio"] is None
    assert "class_distance_ratio" in capsys.readouterr().out


def test_a_training_split_of_one_class_is_one_line_not_a_perfect_score(tmp_path, capsys):
    root = tmp_path / "tree"
    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        folder = root / split / "cat"
        folder.mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
                folder / f"{i}.png"
            )
    data = ["data=imagefolder", f"data.root={root}", "data.size=16"]
    assert main(["evaluate", *data, "checkpoint=random", "out=one.json", *TINY]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        "stec-vision evaluate: error: the training images hold one class ('cat', 4 of them): "
        "a linear probe needs two or more, or it scores 1.0 whatever the features; give data "
        "of at least two classes (data=imagefolder: one folder of images per class)"
    ]


def test_manifest_images_without_a_label_are_left_out_of_the_probe_and_named(tmp_path, capsys):
    rng = np.random.default_rng(4)
    (tmp_path / "imgs").mkdir()
    rows = []
    for i in range(30):
        pixels = rng.integers(0, 90, (16, 16, 3)) + (150 if i % 2 else 0)
        Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
        label = "" if i in (3, 5, 24) else "ab"[i % 2]
        rows.append((f"imgs/{i}.png", label, "test" if i >= 20 else "train"))

    def manifest(name, kept):
        lines = ["path,label,split", *(",".join(r) for r in kept)]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        return ["data=manifest", f"data.root={name}", "data.size=16", "checkpoint=random"]

    assert main(["evaluate", *manifest("all.csv", rows), "out=all.json", *TINY]) == 0
    out = capsys.readouterr().out
    assert (
        "train split: 2 image(s) have no class label and are left out of the probe: "
        "imgs/3.png, imgs/5.png" in out
    )
    assert "test split: 1 image(s) have no class label" in out and "imgs/24.png" in out
    labelled = [r for r in rows if r[1]]
    assert main(["evaluate", *manifest("labelled.csv", labelled), "out=l.json", *TINY]) == 0
    every, only = (json.loads((tmp_path / f).read_text()) for f in ("all.json", "l.json"))
    assert (every["n_train"], every["n_test"]) == (only["n_train"], only["n_test"]) == (18, 9)
    assert every["accuracy"] == only["accuracy"] and every["knn_accuracy"] == only["knn_accuracy"]
    # no label at all: one line, nothing written
    bare = [(path, "", split) for path, _, split in rows]
    assert main(["evaluate", *manifest("bare.csv", bare), "out=b.json", *TINY]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no image has a class label" in error[0], error
    assert not (tmp_path / "b.json").exists()


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


# --- segmentation and the torchvision export -------------------------------------------

SEG = [*TINY, "segmentation.epochs=5", "segmentation.lr=0.05", "segmentation.batch_size=2"]
COLOURS = {0: (20, 40, 220), 1: (230, 30, 30), 2: (30, 220, 40)}  # background, box, disc


def write_segmentation_tree(root, n_train=10, n_test=4, width=16, height=16, suffix=".png"):
    """ROOT/<split>/[sub/]<i><suffix> with masks ROOT/masks/<split>/[sub/]<i>.png: a class-1
    box and a class-2 disc whose colours give the class, on a noisy background."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:height, 0:width]
    for split, n in (("train", n_train), ("val", n_test)):
        for i in range(n):
            mask = np.zeros((height, width), np.uint8)
            top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
            mask[top : top + 6, left : left + 7] = 1
            cy, cx = rng.integers(4, height - 4), rng.integers(4, width - 4)
            mask[(ys - cy) ** 2 + (xs - cx) ** 2 <= 9] = 2
            pixels = np.array([COLOURS[c] for c in range(3)], np.float64)[mask]
            pixels += rng.normal(0, 8, pixels.shape)
            name = f"sub/{i}" if i % 2 else str(i)
            for folder, ext, data in (
                (root / split, suffix, np.clip(pixels, 0, 255).astype(np.uint8)),
                (root / "masks" / split, ".png", mask),
            ):
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(data).save(folder / f"{name}{ext}", quality=95)
    (root / "masks" / "classes.txt").write_text("background\nbox\ndisc\n")
    return root


def seg_data(root, *extra):
    return ["data=imagefolder", f"data.root={root}", "data.size=16", *extra]


def test_segmentation_pixel_floor_on_colour_coded_classes(tmp_path):
    """The pixel floor is a per-pixel colour classifier: where colour gives the class, it
    segments perfectly."""
    data = seg_data(write_segmentation_tree(tmp_path / "seg"))
    args = ["evaluate", "task=segmentation", "checkpoint=pixels", "out=seg.json", *data, *SEG]
    assert main(args) == 0
    results = json.loads((tmp_path / "seg.json").read_text())
    assert results["task"] == "segmentation" and results["num_classes"] == 3
    assert results["n_train"] == 10 and results["n_test"] == 4
    assert results["feature_map"] == [3, 16, 16] and results["mask_size"] == [16, 16]
    assert set(results["iou"]) == {"background", "box", "disc"}
    assert results["miou"] > 0.98 and results["pixel_accuracy"] > 0.99
    assert results["majority_miou"] < 0.3


def test_segmentation_of_resized_jpeg_images(tmp_path):
    """JPEG images at another size, resized and cropped with their masks: only the blended
    edges of the shapes are left in doubt."""
    root = write_segmentation_tree(tmp_path / "seg", width=30, height=26, suffix=".jpg")
    args = ["evaluate", "task=segmentation", "checkpoint=pixels", "out=seg.json", *SEG]
    assert main([*args, *seg_data(root, "data.eval_resize=20")]) == 0
    results = json.loads((tmp_path / "seg.json").read_text())
    assert results["miou"] > results["majority_miou"] + 0.5 and results["pixel_accuracy"] > 0.9


def test_segmentation_on_the_demo_writes_beside_classification(tmp_path):
    for floor in ("random", "pixels"):
        args = ["evaluate", "task=segmentation", f"checkpoint={floor}", "segmentation.epochs=2"]
        assert main([*args, *TINY]) == 0
        path = tmp_path / f"runs/vision/{floor}-demo/segmentation/results.json"
        results = json.loads(path.read_text())
        assert results["n_train"] == 1600 and results["n_test"] == 400
        assert list(results["iou"]) == ["background", *DEMO_CLASSES]
        assert 0.0 <= results["miou"] <= 1.0 and 0.5 < results["majority_pixel_accuracy"] < 0.95
    # colour alone cannot tell the shapes apart: the pixel floor stays near the majority
    assert results["miou"] < results["majority_miou"] + 0.03
    assert not (tmp_path / "runs/vision/random-demo/results.json").exists()
    # with_segmentation: classification and segmentation as two tasks of one results file
    # (elsewhere: the floor's folder holds a segmentation already, and it is kept)
    both = [
        "evaluate",
        "checkpoint=random",
        "evaluate.with_segmentation=true",
        "segmentation.epochs=2",
        "out=both.json",
    ]
    assert main([*both, *TINY]) == 0
    results = json.loads((tmp_path / "both.json").read_text())
    dense = json.loads((tmp_path / "segmentation/both.json").read_text())
    tasks = results["tasks"]
    assert tasks["classification"]["accuracy_mean"] == results["accuracy"]
    assert tasks["segmentation"]["miou_mean"] == dense["miou"]
    assert tasks["segmentation"]["per_fold"] == {"test": dense["miou"]}


def _break_first_mask(root, how):
    mask = root / "masks" / "train" / "0.png"
    if how == "missing":
        mask.unlink()
    elif how == "size":
        Image.fromarray(np.zeros((5, 7), np.uint8)).save(mask)
    elif how == "value":
        values = np.asarray(Image.open(mask)).copy()
        values[0, 0] = 7
        Image.fromarray(values).save(mask)
    elif how == "no-classes":
        (root / "masks" / "classes.txt").unlink()


@pytest.mark.parametrize(
    "how, extra, message",
    [
        ("missing", [], "masks: 1 of 10 images have no mask"),
        ("size", [], "another size than the image: "),
        ("value", [], "0.png holds class index 7; allowed: 0..2"),
        ("no-classes", [], "set segmentation.num_classes=N"),
        (None, ["segmentation.num_classes=5"], "num_classes=5 but "),
        (None, ["task=detection"], "task='detection' is not valid; allowed values: classification, segmentation"),
        (None, ["data=cifar10"], "task=segmentation needs images with masks; data=cifar10 has none"),
        (None, ["segmentation.epochs=0"], "segmentation.epochs=0 is not valid: expected an integer >= 1"),
    ],
)  # fmt: skip
def test_segmentation_input_errors_are_one_line(tmp_path, capsys, how, extra, message):
    root = write_segmentation_tree(tmp_path / "seg", n_train=10, n_test=2)
    if how:
        _break_first_mask(root, how)
    args = ["evaluate", "task=segmentation", "checkpoint=pixels", *seg_data(root), *SEG]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    if how in ("missing", "size", "value"):
        assert str(root / "masks" / "train" / "0.png") in err


def test_export_torchvision_from_the_cli(tmp_path, capsys):
    model, dim = build_vision_encoder("resnet18", cifar_stem=True)
    meta = {"modality": "vision", "encoder": encoder_meta("resnet18", cifar_stem=True)}
    export_backbone(model, tmp_path / "run" / "export", {**meta, "feature_dim": dim})
    assert main(["export", "checkpoint=run", "format=torchvision", "out=tv/r18.pth"]) == 0
    assert "tv/r18.pth" in capsys.readouterr().out
    state = torch.load(tmp_path / "tv/r18.pth", weights_only=True)
    assert set(state) == set(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    sidecar = json.loads((tmp_path / "tv/r18.json").read_text())
    assert sidecar["cifar_stem"] is True and sidecar["maxpool"] is False
    assert main(["export", "checkpoint=run"]) == 0  # the default file, in the export folder
    assert (tmp_path / "run/export/torchvision_resnet18.pth").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["export"], "export needs a run or export folder"),
        (["export", "checkpoint=random"], "export needs a run or export folder"),
        (["export", "checkpoint=small", "format=onnx"], "format='onnx' is not valid; allowed values: torchvision"),
        (["export", "checkpoint=small"], "needs a ResNet, but the exported encoder is 'small'"),
    ],
)  # fmt: skip
def test_export_errors_are_one_line(tmp_path, capsys, args, message):
    _small_export(tmp_path / "small")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_compare_scores_arms_by_miou_with_task_segmentation(tmp_path):
    args = ["compare", "task=segmentation", *TINY, "segmentation.epochs=1",
            "compare.methods=[simclr]", "compare.efference=[off]", "compare.seeds=[0]",
            "compare.floors=[pixels]", "compare.out=cmp"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((tmp_path / "cmp/comparison.json").read_text())
    assert summary["metric"] == "miou" and set(summary["arms"]) == {"simclr-off", "floor-pixels"}
    floor = json.loads((tmp_path / "cmp/floor-pixels/seed0/results.json").read_text())
    assert summary["arms"]["floor-pixels"]["mean"] == floor["miou"]
    assert "dense probe, mIoU" in (tmp_path / "cmp/report.md").read_text()
