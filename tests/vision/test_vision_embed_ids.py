"""stec-vision embed writes ids users can join on (file paths relative to the data root, or
the index for CIFAR/STL pickles), and the canvas / eval-resize loading is wired through
pretrain and evaluate."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stec.cli import compose_config
from stec_vision import cli
from stec_vision.datasets import ArrayImageDataset, JoinedDataset, item_ids
from tests.cli.test_vision_cli import TINY, write_cifar10

pytestmark = pytest.mark.usefixtures("isolated")


def _tree(root, sizes=((20, 24), (30, 18))):
    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("train", 6), ("val", 2)):
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = sizes[i % len(sizes)]
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                    folder / f"{i}.png"
                )
                files.setdefault(split, []).append(f"{split}/{cls}/{i}.png")
    return files


def _ids(path):
    return [str(i) for i in np.load(path, allow_pickle=True).item()["ids"]]


def test_imagefolder_ids_are_paths_relative_to_the_data_root(tmp_path):
    files = _tree(tmp_path / "tree")
    data = ["data=imagefolder", f"data.root={tmp_path / 'tree'}", "data.size=16"]
    assert cli.main(["embed", *data, "checkpoint=random", "out=e.npy", *TINY]) == 0
    stored = np.load(tmp_path / "e.npy", allow_pickle=True).item()
    assert _ids(tmp_path / "e.npy") == files["val"]
    assert stored["labels"].tolist() == [0, 0, 1, 1]  # cat, cat, dog, dog
    assert cli.main(["embed", *data, "checkpoint=random", "out=e.parquet", *TINY]) == 0
    assert pd.read_parquet(tmp_path / "e.parquet")["id"].tolist() == files["val"]


def test_manifest_ids_are_the_paths_as_listed(tmp_path):
    files = _tree(tmp_path / "tree")
    rows = [(f"tree/{p}", p.split("/")[1], p.split("/")[0]) for s in files for p in files[s]]
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(tmp_path / "m.csv", index=False)
    data = [
        "data=manifest",
        f"data.root={tmp_path / 'm.csv'}",
        "data.size=16",
        "data.test_split=val",
    ]
    assert cli.main(["embed", *data, "checkpoint=random", "out=e.npy", *TINY]) == 0
    assert _ids(tmp_path / "e.npy") == [f"tree/{p}" for p in files["val"]]


def test_cifar_ids_are_indices(tmp_path):
    data = ["data=cifar10", f"data.root={write_cifar10(tmp_path / 'cifar')}"]
    assert cli.main(["embed", *data, "checkpoint=random", "out=e.npy", *TINY]) == 0
    assert _ids(tmp_path / "e.npy") == [str(i) for i in range(10)]


def test_joined_splits_carry_global_indices_and_split_ids():
    images = np.zeros((3, 3, 8, 8), dtype=np.uint8)
    joined = JoinedDataset(
        [ArrayImageDataset(images[:2], [0, 1], 8, ["a", "b"]),
         ArrayImageDataset(images, [-1, -1, -1], 8, [])],
        ["train", "unlabeled"],
    )  # fmt: skip
    assert [joined[i][2] for i in range(5)] == [0, 1, 2, 3, 4]
    assert item_ids(joined, [0, 1, 2, 4]) == ["train:0", "train:1", "unlabeled:0", "unlabeled:2"]
    assert joined.classes == ["a", "b"]


def test_canvas_training_and_resized_evaluation_through_the_cli(tmp_path, monkeypatch):
    _tree(tmp_path / "tree")
    data = [
        "data=imagefolder", f"data.root={tmp_path / 'tree'}", "data.size=16",
        "data.canvas=24", "data.eval_resize=20",
    ]  # fmt: skip
    cfg = compose_config("vision", [*data, *TINY])
    image, _, _ = cli.dataset(cfg, "train", train=True)[0]
    assert image.shape == (3, 25, 24)  # a packed canvas
    assert cli.dataset(cfg, "val")[0][0].shape == (3, 16, 16)
    built = {}

    def spy(*args, **kwargs):
        built.update(kwargs)
        return real(*args, **kwargs)

    real = cli.build_two_views
    monkeypatch.setattr(cli, "build_two_views", spy)
    assert cli.main(["pretrain", *data, "run_dir=r", *TINY]) == 0
    assert built["canvas"] is True
    assert cli.main(["evaluate", *data, "checkpoint=r", *TINY]) == 0
    assert json.loads((tmp_path / "r/results.json").read_text())["n_test"] == 4


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.canvas=-1", "data.canvas=-1 is not valid: expected an integer >= 0"),
        ("data.eval_resize=8", "data.eval_resize=8 must be 0 (off) or at least data.size=16"),
    ],
)
def test_loading_keys_are_validated(tmp_path, override, message, capsys):
    _tree(tmp_path / "tree")
    data = ["data=imagefolder", f"data.root={tmp_path / 'tree'}", "data.size=16", override]
    assert cli.main(["pretrain" if "canvas" in override else "evaluate", *data,
                     "checkpoint=random", *TINY]) == 2  # fmt: skip
    assert message in capsys.readouterr().err


def test_stl10_preset_pretrains_on_joined_splits_and_embeds_with_indices(tmp_path):
    folder = tmp_path / "stl" / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", 6), ("test", 4), ("unlabeled", 6)):
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        (folder / f"{name}_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())
        if name != "unlabeled":
            labels = rng.integers(1, 11, n, dtype=np.uint8)
            (folder / f"{name}_y.bin").write_bytes(labels.tobytes())
    data = ["data=stl10", f"data.root={tmp_path / 'stl'}", "data.size=32"]
    cfg = compose_config("vision", [*data, *TINY])
    joined = cli.dataset(cfg, cfg.data.pretrain_split, train=True)
    assert len(joined) == 12 and item_ids(joined, [5, 6]) == ["train:5", "unlabeled:0"]
    assert cli.main(["pretrain", *data, "run_dir=r", *TINY]) == 0
    assert cli.main(["embed", *data, "checkpoint=r", "out=e.npy", *TINY]) == 0
    assert _ids(tmp_path / "e.npy") == ["0", "1", "2", "3"]
