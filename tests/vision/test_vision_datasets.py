"""Datasets on generated fixtures in the real on-disk layouts."""

import logging
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from stec_vision.datasets import (
    ImageFileDataset,
    build_vision_dataset,
    collate_skip_bad,
    image_folder_dataset,
    load_image,
)


def _cifar_images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def _write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


@pytest.fixture()
def cifar10_root(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = []
    for i in range(1, 6):
        imgs = _cifar_images(3, i)
        images.append(imgs)
        _write_pickle(
            folder / f"data_batch_{i}", {"data": imgs.reshape(3, -1), "labels": [i, i + 1, 0]}
        )
    test = _cifar_images(2, 9)
    _write_pickle(folder / "test_batch", {"data": test.reshape(2, -1), "labels": [7, 3]})
    _write_pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return tmp_path, np.concatenate(images), test


def test_cifar10_loads_from_torchvision_layout(cifar10_root):
    root, train_images, test_images = cifar10_root
    train = build_vision_dataset("cifar10", root, "train", 32)
    assert len(train) == 15 and train.classes[3] == "c3"
    image, label, index = train[4]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    assert torch.equal(image, torch.from_numpy(train_images[4])) and (label, index) == (3, 4)
    test = build_vision_dataset("cifar10", root / "cifar-10-batches-py", "test", 16)
    image, label, _ = test[1]
    assert image.shape == (3, 16, 16) and label == 3
    batch = next(iter(DataLoader(train, batch_size=4)))
    assert batch[0].shape == (4, 3, 32, 32) and batch[2].tolist() == [0, 1, 2, 3]


def test_cifar_missing_files_are_named(tmp_path, cifar10_root):
    root, _, _ = cifar10_root
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        build_vision_dataset("cifar10", root, "train", 32)
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        build_vision_dataset("cifar10", tmp_path / "elsewhere", "train", 32)
    with pytest.raises(ValueError, match="train, test"):
        build_vision_dataset("cifar10", root, "val", 32)


def test_cifar100_loads(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    imgs = _cifar_images(4, 0)
    _write_pickle(
        folder / "train",
        {"data": imgs.reshape(4, -1), "fine_labels": [99, 1, 2, 3], "coarse_labels": [0] * 4},
    )
    _write_pickle(
        folder / "test",
        {"data": imgs[:2].reshape(2, -1), "fine_labels": [5, 6], "coarse_labels": [0] * 2},
    )
    _write_pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)]})
    ds = build_vision_dataset("cifar100", tmp_path, "train", 32)
    assert len(ds) == 4 and ds[0][1] == 99 and torch.equal(ds[0][0], torch.from_numpy(imgs[0]))


def test_stl10_loads_binary_layout(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8)
    unlabeled = rng.integers(0, 256, (2, 3, 96, 96), dtype=np.uint8)
    # the binary files store each channel column-major
    (folder / "train_X.bin").write_bytes(train.transpose(0, 1, 3, 2).tobytes())
    (folder / "train_y.bin").write_bytes(np.array([1, 10, 4], dtype=np.uint8).tobytes())
    (folder / "unlabeled_X.bin").write_bytes(unlabeled.transpose(0, 1, 3, 2).tobytes())
    (folder / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)))
    ds = build_vision_dataset("stl10", tmp_path, "train", 96)
    assert len(ds) == 3 and [ds[i][1] for i in range(3)] == [0, 9, 3] and ds.classes[9] == "k9"
    assert torch.equal(ds[1][0], torch.from_numpy(train[1]))
    both = build_vision_dataset("stl10", tmp_path, "train+unlabeled", 64)
    assert len(both) == 5 and both[4][1] == -1 and both[4][0].shape == (3, 64, 64)
    with pytest.raises(FileNotFoundError, match="test_X.bin"):
        build_vision_dataset("stl10", tmp_path, "test", 96)


def _png(path, colour, size=(20, 14)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture()
def folder_with_broken_images(tmp_path):
    root = tmp_path / "imagenet"
    _png(root / "train" / "cat" / "a.png", (255, 0, 0))
    _png(root / "train" / "cat" / "sub" / "b.jpg", (250, 5, 5))
    _png(root / "train" / "dog" / "c.png", (0, 0, 255))
    _png(root / "train" / "dog" / "d.png", (0, 10, 250))
    (root / "train" / "dog" / "empty.png").write_bytes(b"")
    (root / "train" / "cat" / "notes.jpg").write_text("not an image")
    (root / "train" / "cat" / "readme.txt").write_text("ignored: not an image extension")
    good = (root / "train" / "dog" / "d.png").read_bytes()
    (root / "train" / "dog" / "truncated.png").write_bytes(good[: len(good) // 2 + 20])
    return root


def test_imagefolder_skips_broken_images(folder_with_broken_images, caplog):
    root = folder_with_broken_images
    with caplog.at_level(logging.WARNING):
        ds = build_vision_dataset("imagefolder", root, "train", 8)
    assert ds.classes == ["cat", "dog"]
    bad = sorted(p.rsplit("/", 1)[-1] for p, _ in ds.bad_files)
    assert bad == ["empty.png", "notes.jpg"] and "skipped 2 unreadable" in caplog.text
    # the truncated file passes the header scan and fails when decoded
    assert len(ds) == 5
    loader = DataLoader(ds, batch_size=5, collate_fn=collate_skip_bad)
    images, labels, indices = next(iter(loader))
    assert images.shape == (4, 3, 8, 8) and images.dtype == torch.uint8
    assert sorted(labels.tolist()) == [0, 0, 1, 1]
    assert "3 skipped" in ds.summary() and "truncated.png" in ds.summary()
    red = images[labels == 0][0]
    assert red[0].float().mean() > 240 and red[2].float().mean() < 15


def test_imagefolder_full_scan_catches_truncated(folder_with_broken_images):
    ds = image_folder_dataset(folder_with_broken_images, "train", 8, scan="full")
    assert len(ds) == 4 and len(ds.bad_files) == 3


def test_a_mistaken_imagefolder_root_says_what_the_root_holds(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"imagefolder: .*nowhere does not exist"):
        image_folder_dataset(tmp_path / "nowhere", "train", 8)
    # the root given as the split's own folder (its class folders, no train/ in it)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
    with pytest.raises(FileNotFoundError) as err:
        image_folder_dataset(tmp_path, "train", 8)
    message = str(err.value)
    assert "found ['cat', 'dog']" in message
    assert "data.root is the folder that holds train/<class>/<image>" in message


def test_imagefolder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="split='val'"):
        image_folder_dataset(tmp_path, "val", 8)
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        image_folder_dataset(tmp_path, "train", 8)
    (tmp_path / "train" / "x").mkdir()
    (tmp_path / "train" / "x" / "bad.png").write_bytes(b"xx")
    with pytest.raises(ValueError, match="no readable images"):
        image_folder_dataset(tmp_path, "train", 8)
    with pytest.raises(ValueError, match="scan"):
        ImageFileDataset([], 8, [], scan="quick")


def test_collate_all_bad_gives_empty_batch():
    images, labels, indices = collate_skip_bad([None, None])
    assert images.shape[0] == 0 and labels.numel() == 0 and indices.numel() == 0


def test_load_image_resizes_shorter_side_and_centre_crops(tmp_path):
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :8] = 255  # a white band on the left, cropped away by the centre crop
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", 10)
    assert image.shape == (3, 10, 10) and image.max() < 60 and image[:, :, 2:].max() == 0
    Image.fromarray(pixels[..., 0], mode="L").save(tmp_path / "gray.png")
    assert load_image(tmp_path / "gray.png", 10).shape == (3, 10, 10)


def test_manifest(tmp_path):
    for name, colour in (("a", (255, 0, 0)), ("b", (0, 255, 0)), ("c", (0, 0, 255))):
        _png(tmp_path / "img" / f"{name}.png", colour)
    (tmp_path / "img" / "broken.png").write_bytes(b"garbage")
    (tmp_path / "m.csv").write_text(
        "path,label,split\nimg/a.png,zebra,train\nimg/b.png,ant,train\nimg/c.png,zebra,test\n"
        "img/broken.png,ant,train\n" + f"{tmp_path / 'img' / 'b.png'},,train\n"
    )
    ds = build_vision_dataset("manifest", tmp_path / "m.csv", "train", 8)
    assert ds.classes == ["ant", "zebra"] and len(ds) == 3 and len(ds.bad_files) == 1
    assert [ds[i][1] for i in range(3)] == [1, 0, -1]
    assert len(build_vision_dataset("manifest", tmp_path / "m.csv", "all", 8)) == 4
    with pytest.raises(ValueError, match="allowed values: test, train"):
        build_vision_dataset("manifest", tmp_path / "m.csv", "val", 8)
    (tmp_path / "n.csv").write_text("path,label\nimg/a.png,3\nimg/b.png,1\n")
    ds = build_vision_dataset("manifest", tmp_path / "n.csv", None, 8)
    assert [ds[i][1] for i in range(2)] == [3, 1] and len(ds.classes) == 4
    with pytest.raises(ValueError, match="no 'split' column"):
        build_vision_dataset("manifest", tmp_path / "n.csv", "train", 8)
    (tmp_path / "bad.csv").write_text("file,label\nimg/a.png,1\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['path'\]"):
        build_vision_dataset("manifest", tmp_path / "bad.csv", None, 8)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="cifar10, cifar100, stl10, imagefolder, manifest, demo"):
        build_vision_dataset("mnist", "/tmp", "train", 32)
