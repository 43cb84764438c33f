"""Tests for cnn_im2col.datasets.open_data_dir: which layouts a data folder is recognised as, the
refusal of a folder holding none, describe(), and that a data folder is never written to."""

from __future__ import annotations

import numpy as np
import pytest
from datasets_helpers import (
    make_image_folder,
    small_mnist,
    snapshot,
    write_cifar10,
    write_cifar100,
    write_idx_dir,
)

from cnn_im2col.datasets import LAYOUTS, detect_layout, open_data_dir


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_IM2COL_CACHE", str(tmp_path / "user-cache"))


def idx_folder(directory):
    (trx, try_), _, (tex, tey) = small_mnist(np.random.default_rng(0), n_train=6, n_test=4)
    directory.mkdir(parents=True)
    write_idx_dir(directory, (trx, try_, tex, tey))
    return int(max(try_.max(), tey.max())) + 1


def test_idx_files(tmp_path):
    count = idx_folder(tmp_path / "fashion")
    before = snapshot(tmp_path / "fashion")
    data = open_data_dir(tmp_path / "fashion")
    assert data.kind == "idx" and data.image_shape == (1, 28, 28)
    assert data.classes == tuple(str(k) for k in range(count))
    assert data.describe() == (f"idx {tmp_path / 'fashion'}: 6 train + 4 test images of 1x28x28, "
                               f"{count} classes: {', '.join(data.classes)}")
    assert snapshot(tmp_path / "fashion") == before and not (tmp_path / "user-cache").exists()


@pytest.mark.parametrize("nested", [False, True])
def test_cifar10(tmp_path, nested):
    write_cifar10(tmp_path / "c" / ("cifar-10-batches-bin" if nested else ""))
    before = snapshot(tmp_path / "c")
    assert detect_layout(tmp_path / "c")[0] == "cifar10"
    data = open_data_dir(tmp_path / "c")
    assert data.kind == "cifar10" and data.image_shape == (3, 32, 32)
    assert data.describe().endswith("15 train + 4 test images of 3x32x32, 10 classes: airplane, "
                                    "automobile, bird, cat, deer, dog, frog, horse, ship, truck")
    assert snapshot(tmp_path / "c") == before


def test_cifar100(tmp_path):
    write_cifar100(tmp_path / "c100")
    data = open_data_dir(tmp_path / "c100")
    assert data.kind == "cifar100" and len(data.classes) == 100
    assert "100 classes: fine0, fine1" in data.describe() and "(+90 more)" in data.describe()


@pytest.mark.parametrize("layout", ["tree", "split"])
def test_image_folders(tmp_path, layout):
    if layout == "tree":
        make_image_folder(tmp_path / "pets", classes=("cat", "dog"), per_class=5)
    else:
        make_image_folder(tmp_path / "pets" / "train", classes=("cat", "dog"), per_class=4)
        make_image_folder(tmp_path / "pets" / "test", classes=("cat", "dog"), per_class=1)
    before = snapshot(tmp_path / "pets")
    data = open_data_dir(tmp_path / "pets")
    assert data.kind == "image-folder" and data.classes == ("cat", "dog")
    assert data.describe().startswith(f"image-folder {tmp_path / 'pets'}: 8 train + 2 test images "
                                      f"of 3x8x10, 2 classes: cat, dog; ")
    assert snapshot(tmp_path / "pets") == before


def test_a_folder_with_no_data_set_is_refused_and_left_alone(tmp_path):
    folder = tmp_path / "typo"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    (folder / "loose.png").write_bytes(b"images must be in class folders")
    (folder / "empty-subfolder").mkdir()
    before = snapshot(folder)
    with pytest.raises(ValueError) as info:
        open_data_dir(folder)
    message = str(info.value)
    assert message.startswith(f"data folder {folder} holds no data set this engine reads")
    assert all(layout in message for layout in LAYOUTS)
    assert snapshot(folder) == before and not (tmp_path / "user-cache").exists()


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_data_dir(tmp_path / "absent")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        open_data_dir(tmp_path / "f")
    with pytest.raises(TypeError, match="path"):
        open_data_dir(3)


def test_image_options_are_refused_for_fixed_format_data(tmp_path):
    write_cifar10(tmp_path / "c")
    with pytest.raises(ValueError, match="image_size apply to image folders only"):
        open_data_dir(tmp_path / "c", image_size=(16, 16))
    idx_folder(tmp_path / "i")
    with pytest.raises(ValueError, match="channels apply to image folders only"):
        open_data_dir(tmp_path / "i", channels=3)


def test_splits_give_the_load_mnist_form(tmp_path):
    make_image_folder(tmp_path / "d", per_class=5)
    (x_train, y_train), (x_test, y_test) = open_data_dir(tmp_path / "d").splits()
    assert x_train.shape[0] == y_train.shape[0] == 8 and x_test.shape[0] == y_test.shape[0] == 2


def test_the_mnist_cache_of_load_mnist_is_read_never_fetched(tmp_path):
    (trx, try_), _, (tex, tey) = small_mnist(np.random.default_rng(1), n_train=5, n_test=3)
    folder = tmp_path / "m"
    folder.mkdir()
    np.savez(folder / "mnist.npz", x_train=trx, y_train=try_, x_test=tex, y_test=tey)
    before = snapshot(folder)
    data = open_data_dir(folder)
    assert data.kind == "mnist" and data.classes == tuple("0123456789")
    np.testing.assert_array_equal(data.y_test, tey)
    (folder / "mnist.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"mnist\.npz is not a valid MNIST cache"):
        open_data_dir(folder)
    assert sorted(snapshot(folder)) == sorted(before)
