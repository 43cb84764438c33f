"""Tests of the data the command trains on (cnn_im2col.cli.data): your own images in a folder,
CIFAR-10's binary files, a folder holding no data set; Fashion-MNIST's IDX files."""

import json
import os

import numpy as np
import pytest

from cnn_im2col import cli
from cnn_im2col.model import Sequential


def colour_folder(root, per_class=(24, 6), size=(16, 16)):
    """root/train/<colour>/*.png and root/test/<colour>/*.png: noisy squares of three colours."""
    from datasets_helpers import save_image

    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    for split, n in zip(("train", "test"), per_class):
        for name, rgb in colours.items():
            for k in range(n):
                noise = rng.integers(-30, 30, size=(*size, 3))
                pixels = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
                save_image(root / split / name / f"{k:03d}.png", pixels)
    return root


def listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*"))


def test_train_on_a_folder_of_pngs_then_predict_image_files(tmp_path, capsys):
    data = colour_folder(tmp_path / "colours")
    before = listing(data)
    out = tmp_path / "run"
    args = ["train", "--data-dir", str(data), "--epochs", "3", "--val-split", "0",
            "--batch-size", "16", "--no-progress", "--out", str(out)]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    first = text.splitlines()[0]
    assert first.startswith(f"image-folder {data}: 72 train + 18 test images of 3x16x16, "
                            f"3 classes: blue, green, red")
    assert "random left-right flips" in text  # colour images: flips by default
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9
    assert listing(data) == before  # nothing was written into the data folder
    model = Sequential.load(out / "model.npz")
    assert model.class_names == ("blue", "green", "red") and model.input_shape == (3, 16, 16)
    red = data / "test" / "red" / "000.png"
    assert cli.main(["predict", str(out / "model.npz"), str(red)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{red}: red ")
    assert float(line.split()[-1]) > 0.5
    assert cli.main(["predict", str(out / "model.npz"), str(red), "--top", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [c["class"] for c in result[0]["top"]][0] == "red"
    assert sum(c["probability"] for c in result[0]["top"]) == pytest.approx(1, abs=1e-5)
    # an image of another size: an error naming it, unless --resize
    from datasets_helpers import save_image

    big = save_image(tmp_path / "big.png", np.full((20, 24, 3), (220, 30, 30), np.uint8))
    assert cli.main(["predict", str(out / "model.npz"), str(big)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnn-im2col: error: ") and len(err.splitlines()) == 1
    assert "big.png: image is 20x24" in err and "--resize" in err
    assert cli.main(["predict", str(out / "model.npz"), str(big), "--resize"]) == 0
    assert capsys.readouterr().out.split()[1] == "red"
    # the same through ONNX, whose metadata carries the class names
    pytest.importorskip("onnx")
    assert cli.main(["export", str(out / "model.npz"), str(tmp_path / "m.onnx")]) == 0
    capsys.readouterr()
    assert cli.main(["predict", str(tmp_path / "m.onnx"), str(red)]) == 0
    assert capsys.readouterr().out.split()[1] == "red"


def test_train_on_cifar10_binary_files(tmp_path, capsys):
    from datasets_helpers import write_cifar10

    data = tmp_path / "cifar"
    write_cifar10(data, per_batch=4)
    out = tmp_path / "run"
    assert cli.main(["train", "--data-dir", str(data), "--epochs", "1", "--val-split", "0",
                     "--batch-size", "8", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith(f"cifar10 {data}: 20 train + 5 test images of 3x32x32, "
                                           f"10 classes: airplane, automobile")
    assert Sequential.load(out / "model.npz").class_names[-1] == "truck"


def test_a_folder_without_a_data_set_is_refused_and_nothing_is_written(tmp_path, capsys):
    data = tmp_path / "holiday"
    data.mkdir()
    (data / "notes.txt").write_text("not a data set")
    before = listing(data)
    out = tmp_path / "run"
    assert cli.main(["train", "--data-dir", str(data), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cnn-im2col: error: data folder {data} holds no data set")
    assert listing(data) == before
    assert not (data / "mnist.npz").exists()
    assert not out.exists()


def test_fashion_mnist_idx_directory_is_read(capsys):
    """The Debian package dataset-fashion-mnist installs the four .gz IDX files there."""
    from cnn_im2col.datasets import load_mnist

    directory = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(directory):
        pytest.skip(f"{directory}: not installed (apt-get install dataset-fashion-mnist)")
    (x, y), (xt, yt) = load_mnist(directory, progress=False)
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert sorted(np.unique(y)) == list(range(10)) and np.bincount(yt).tolist() == [1000] * 10
