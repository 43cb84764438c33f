"""Tests for the ``cnn-im2col`` command (cnn_im2col.cli) on a tiny synthetic IDX data set, plus one
real run on MNIST."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import synthetic_digits

from cnn_im2col import cli
from cnn_im2col.cli.arguments import build_parser
from cnn_im2col.cli.commands import default_model
from cnn_im2col.cli.settings import DEFAULTS, TRAIN_DEFAULTS, _resolve_settings
from cnn_im2col.cli.train import _StopRequest
from cnn_im2col.datasets import write_idx
from cnn_im2col.model import Sequential


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("idx")
    x, y = synthetic_digits(240, 0)
    xt, yt = synthetic_digits(60, 1)
    write_idx(d / "train-images-idx3-ubyte", x)
    write_idx(d / "train-labels-idx1-ubyte", y)
    write_idx(d / "t10k-images-idx3-ubyte.gz", xt)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", yt)
    return d


def train_args(idx_dir, out, *extra):
    return [
        "train",
        "--data-dir",
        str(idx_dir),
        "--limit",
        "200",
        "--val-split",
        "40",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def same_params(a, b):
    pa, pb = Sequential.load(a).params, Sequential.load(b).params
    return pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_train_writes_model_metrics_and_curves(idx_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(train_args(idx_dir, out)) == 0
    captured = capsys.readouterr()
    assert "data: 160 training, 40 validation, 60 test images" in captured.out
    assert "Total params: 317,066" in captured.out
    assert "epoch 1/1: loss" in captured.out and "val_accuracy" in captured.out
    final = captured.out.strip().splitlines()[-1]
    assert final.startswith("test accuracy ") and "total time" in final
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.npz",
        "curves.png",
        "metrics.json",
        "model.npz",
    ]

    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "test_accuracy",
        "test_loss",
        "total_seconds",
        "samples_per_s",
        "history",
        "settings",
        "arguments",
    ):
        assert key in metrics, key
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["epochs"] == 1
    assert metrics["history"]["epoch"] == [1] and len(metrics["history"]["val_accuracy"]) == 1
    assert metrics["settings"]["limit"] == 200 and metrics["arguments"]["data_dir"] == str(idx_dir)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = Sequential.load(out / "model.npz")
    assert model.check_shapes((1, 28, 28))[-1] == (10,)


def test_training_learns_the_synthetic_classes(idx_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(train_args(idx_dir, out, "--epochs", "3", "--lr", "0.003")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9, capsys.readouterr().out


def test_evaluate_prints_loss_accuracy_and_confusion_matrix(idx_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(train_args(idx_dir, out, "--val-split", "0")) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(out / "model.npz"), "--data-dir", str(idx_dir)]) == 0
    text = capsys.readouterr().out
    assert "60 test images" in text and "test loss" in text and "accuracy" in text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("true\\pred"))
    rows = lines[start + 1 : start + 11]
    assert [int(r.split()[0]) for r in rows] == list(range(10))
    counts = np.array([[int(v) for v in r.split()[1:11]] for r in rows])
    assert counts.sum() == 60
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.trace(counts) == round(60 * metrics["test_accuracy"])


def test_sigint_checkpoints_and_resume_matches_an_uninterrupted_run(
    idx_dir, tmp_path, monkeypatch, capsys
):
    reference = tmp_path / "reference"
    assert cli.main(train_args(idx_dir, reference, "--epochs", "2")) == 0

    calls = {"n": 0}
    original = _StopRequest.__call__

    def signal_on_seventh_batch(self):
        calls["n"] += 1
        if calls["n"] == 7:  # epoch 2 (5 batches per epoch), a real SIGINT through the handler
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)  # Python's handler, or SIG_IGN in a background job
    monkeypatch.setattr(_StopRequest, "__call__", signal_on_seventh_batch)
    assert cli.main(train_args(idx_dir, out, "--epochs", "2")) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "SIGINT received" in err
    assert f"Resume with: cnn-im2col train --resume {out}" in err
    assert (out / "checkpoint.npz").is_file() and not (out / "model.npz").exists()
    state = Sequential.load_checkpoint(out / "checkpoint.npz").state
    assert state["epoch"] == 1 and state["batch"] == 2  # mid-epoch: 2 of 5 batches of epoch 2 done
    assert signal.getsignal(signal.SIGINT) is before  # the handler it found, restored

    # starting afresh in the same directory is refused; resuming with other settings too
    assert cli.main(train_args(idx_dir, out, "--epochs", "2")) == 2
    assert "--resume" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "train",
                "--resume",
                str(out),
                "--lr",
                "0.5",
                "--no-progress",
                "--data-dir",
                str(idx_dir),
            ]
        )
        == 2
    )
    assert "--lr 0.5 (the run used " in capsys.readouterr().err

    assert cli.main(["train", "--resume", str(out), "--no-progress"]) == 0  # the run's --data-dir
    assert "resuming" in capsys.readouterr().out
    assert same_params(out / "model.npz", reference / "model.npz")
    resumed = json.loads((out / "metrics.json").read_text())
    full = json.loads((reference / "metrics.json").read_text())
    assert resumed["test_accuracy"] == full["test_accuracy"] and resumed["resumed"] is True
    assert resumed["history"]["loss"] == pytest.approx(full["history"]["loss"], rel=1e-12)


def test_sigterm_exits_143_and_resume_at_epoch_end(idx_dir, tmp_path, monkeypatch, capsys):
    reference = tmp_path / "reference"
    assert cli.main(train_args(idx_dir, reference, "--epochs", "2", "--optimizer", "sgd")) == 0
    calls = {"n": 0}
    original = _StopRequest.__call__

    def term_at_epoch_end(self):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self)

    out = tmp_path / "run"
    monkeypatch.setattr(_StopRequest, "__call__", term_at_epoch_end)
    assert cli.main(train_args(idx_dir, out, "--epochs", "2", "--optimizer", "sgd")) == 143
    monkeypatch.undo()
    assert "SIGTERM received" in capsys.readouterr().err
    assert (
        cli.main(["train", "--resume", str(out), "--no-progress", "--data-dir", str(idx_dir)]) == 0
    )
    assert same_params(out / "model.npz", reference / "model.npz")


def test_real_sigint_in_a_subprocess(idx_dir, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "cnn_im2col.cli", *train_args(idx_dir, out, "--epochs", "500")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # wait until training runs
            if line.startswith("epoch 1/500"):
                break
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Resume with" in stderr
    ckpt = Sequential.load_checkpoint(out / "checkpoint.npz")
    assert ckpt.state["epochs"] == 500 and ckpt.state["epoch"] >= 1


def test_divergence_is_one_line_exit_2_and_keeps_the_checkpoint(idx_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(train_args(idx_dir, out, "--epochs", "3", "--optimizer", "sgd", "--lr", "1e30"))
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("cnn-im2col: error: training diverged at epoch ")
    assert "batch" in err and "learning rate" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (out / "model.npz").exists()


def test_bad_flags_are_argparse_errors(capsys):
    for argv in (
        ["train", "--epochs", "0"],
        ["train", "--lr", "-1"],
        ["train", "--optimizer", "rmsprop"],
        ["train", "--batch-size", "x"],
        ["frobnicate"],
        [],
    ):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
        assert "usage:" in capsys.readouterr().err


def test_package_errors_are_one_line_without_traceback(idx_dir, tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path / "absent.npz")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("cnn-im2col: error: ") and "absent.npz" in err and len(err.splitlines()) == 1
    )
    junk = tmp_path / "junk.npz"
    junk.write_text("nope")
    assert cli.main(["evaluate", str(junk), "--data-dir", str(idx_dir)]) == 2
    assert "not a cnn-im2col model file" in capsys.readouterr().err
    assert cli.main(train_args(idx_dir, tmp_path / "r", "--val-split", "500")) == 2
    assert (
        "--val-split 500 must be smaller than the number of training images (200)"
        in capsys.readouterr().err
    )
    (tmp_path / "a-file").write_text("")
    assert cli.main(train_args(tmp_path / "a-file", tmp_path / "r")) == 2
    assert "must be a directory" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path / "nothing-here")]) == 2
    assert "no checkpoint.npz" in capsys.readouterr().err


def test_bench_prints_a_row_per_layer(capsys):
    assert cli.main(["bench", "--batch-size", "4", "--batches", "1"]) == 0
    text = capsys.readouterr().out
    assert "Conv2D(32, 64, 5" in text and "all layers" in text and "images/s" in text


def test_default_model_is_deterministic():
    a, b = default_model(3), default_model(3)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert a.check_shapes((1, 28, 28))[-1] == (10,)


def test_real_mnist_one_epoch_on_5000_images(tmp_path, capsys):
    """Downloads MNIST as a new user would (cached afterwards), trains 1 epoch on 5,000 images."""
    from cnn_im2col.datasets import load_mnist

    try:
        load_mnist()  # the per-user cache (or $CNN_IM2COL_DATA), fetched once
    except ConnectionError as exc:
        pytest.skip(f"MNIST not cached and no source reachable: {exc}")
    out = tmp_path / "mnist"
    start = time.perf_counter()
    code = cli.main(
        [
            "train",
            "--limit",
            "5000",
            "--val-split",
            "0",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--optimizer",
            "sgd",
            "--lr",
            "0.05",
            "--shift",
            "0",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_images"] == 10000
    print(
        f"1 epoch on 5000 MNIST images: test accuracy {metrics['test_accuracy']:.4f} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    assert metrics["test_accuracy"] >= 0.95, text


def test_export_a_trained_model_to_onnx_and_evaluate_it(idx_dir, tmp_path, capsys):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "run"
    assert cli.main(train_args(idx_dir, out, "--val-split", "0")) == 0
    capsys.readouterr()
    onnx_path = tmp_path / "model.onnx"
    # the trained model knows the shape it was trained on (fit records it in the model file)
    assert cli.main(["export", str(out / "model.npz"), str(onnx_path)]) == 0
    text = capsys.readouterr().out
    assert "input (N, 1, 28, 28), output (N, 10)" in text and "onnxruntime vs the engine" in text
    # the same predictions in onnxruntime as in the engine, on the test images
    from cnn_im2col.datasets import read_idx

    x = read_idx(idx_dir / "t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255
    model = Sequential.load(out / "model.npz")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"input": x})[0]
    np.testing.assert_allclose(theirs, model.forward(x), rtol=1e-5, atol=1e-5)
    assert np.array_equal(theirs.argmax(axis=1), model.forward(x).argmax(axis=1))
    # evaluate reads the .onnx file: the same numbers as from the .npz
    assert cli.main(["evaluate", str(out / "model.npz"), "--data-dir", str(idx_dir)]) == 0
    from_npz = capsys.readouterr().out.splitlines()[1]
    assert cli.main(["evaluate", str(onnx_path), "--data-dir", str(idx_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[1] == from_npz


def test_export_takes_the_shape_from_the_model_and_reports_errors(tmp_path, capsys):
    pytest.importorskip("onnx")
    from cnn_im2col.layers import Conv2D, Dense, Flatten, ReLU

    path = tmp_path / "mlp.npz"
    Sequential([ReLU(), Dense(6, 4), ReLU(), Dense(4, 3)]).save(path)
    assert cli.main(["export", str(path), str(tmp_path / "mlp.onnx")]) == 0
    assert "input (N, 6), output (N, 3)" in capsys.readouterr().out
    conv = tmp_path / "conv.npz"
    Sequential([Conv2D(2, 3, 3, bias="untied", input_size=(5, 6)), Flatten()]).save(conv)
    assert cli.main(["export", str(conv), str(tmp_path / "conv.onnx")]) == 0
    assert "input (N, 2, 5, 6), output (N, 36)" in capsys.readouterr().out
    unknown = tmp_path / "unknown.npz"  # a first Conv2D without input_size, never fitted
    Sequential([Conv2D(1, 2, 3), Flatten()]).save(unknown)
    assert cli.main(["export", str(unknown), str(tmp_path / "unknown.onnx")]) == 2
    assert "does not say the shape of its input; give it with --input-shape" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "unknown.onnx").exists()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 not onnx")
    assert cli.main(["evaluate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnn-im2col: error: ") and "bad.onnx: not a valid ONNX model file" in err
    assert len(err.splitlines()) == 1


# --------------------------------------------------------------------------- --model NAME|FILE.json


def test_train_model_by_name_records_it_and_evaluate_reads_it(idx_dir, tmp_path, capsys):
    out = tmp_path / "vgg"
    assert (
        cli.main(
            train_args(idx_dir, out, "--model", "vgg-bn", "--limit", "64", "--val-split", "16")
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "BatchNorm2D(32)" in text and "training: 1 epoch" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["model"] == "vgg-bn"
    for name in ("model.npz", "checkpoint.npz"):
        assert cli.main(["evaluate", str(out / name), "--data-dir", str(idx_dir)]) == 0
        evaluated = capsys.readouterr().out
        assert (
            f"accuracy {100 * metrics['test_accuracy']:.2f}%" in evaluated
        )  # running statistics restored


def test_vgg_bn_trains_with_its_own_default_epochs(monkeypatch):
    args = build_parser().parse_args(["train", "--model", "vgg-bn"])
    settings, _ = _resolve_settings(args)
    assert (
        settings["epochs"] == TRAIN_DEFAULTS["vgg-bn"]["epochs"]
        and settings["model"] == "vgg-bn"
    )
    args = build_parser().parse_args(["train", "--model", "vgg-bn", "--epochs", "2"])
    assert _resolve_settings(args)[0]["epochs"] == 2  # a flag beats the architecture's default
    assert (
        _resolve_settings(build_parser().parse_args(["train"]))[0]["epochs"]
        == DEFAULTS["epochs"]
    )


def test_resnet20_brings_he_et_al_s_recipe_flips_included_and_no_flip_turns_them_off():
    def settings(*flags):
        return _resolve_settings(build_parser().parse_args(["train", *flags]))[0]

    recipe = settings("--model", "resnet20")
    assert (recipe["epochs"], recipe["optimizer"], recipe["lr"], recipe["flip"]) == (
        20, "sgd", 0.1, True)
    assert settings("--model", "resnet20", "--no-flip")["flip"] is False
    assert settings("--model", "vgg-bn")["flip"] is None  # by the data: on for colour only


def test_train_model_from_json_and_bad_model(idx_dir, tmp_path, capsys):
    from cnn_im2col.architectures import lenet

    path = tmp_path / "lenet.json"
    path.write_text(json.dumps(lenet(seed=5).config()))
    out = tmp_path / "json"
    assert cli.main(train_args(idx_dir, out, "--model", str(path))) == 0
    assert "Total params: 85,670" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["settings"]["model"] == str(path)
    assert cli.main(train_args(idx_dir, tmp_path / "bad", "--model", "resnet")) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(
            "cnn-im2col: error: model must be one of "
            "['default', 'lenet', 'mobilenetv2', 'resnet20', 'vgg-bn']"
        )
        and "'resnet'" in err
    )
    assert not (tmp_path / "bad").exists()  # refused before any data is read or anything written


def test_resume_keeps_the_model_of_the_run(idx_dir, tmp_path, monkeypatch, capsys):
    reference = tmp_path / "reference"
    assert cli.main(train_args(idx_dir, reference, "--epochs", "2", "--model", "lenet")) == 0
    calls = {"n": 0}

    def stop_on_third_batch(self):
        calls["n"] += 1
        return calls["n"] == 3

    out = tmp_path / "run"
    monkeypatch.setattr(_StopRequest, "__call__", stop_on_third_batch)
    assert cli.main(train_args(idx_dir, out, "--epochs", "2", "--model", "lenet")) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--model", "default", "--no-progress"]) == 2
    assert "--model default (the run used lenet)" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert same_params(out / "model.npz", reference / "model.npz")
    assert json.loads((out / "metrics.json").read_text())["settings"]["model"] == "lenet"


def test_fashion_mnist_idx_directory_is_read(capsys):
    """The Debian package dataset-fashion-mnist installs the four .gz IDX files there."""
    from cnn_im2col.datasets import load_mnist

    directory = "/usr/share/datasets/fashion-mnist"
    if not os.path.isdir(directory):
        pytest.skip(f"{directory}: not installed (apt-get install dataset-fashion-mnist)")
    (x, y), (xt, yt) = load_mnist(directory, progress=False)
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert sorted(np.unique(y)) == list(range(10)) and np.bincount(yt).tolist() == [1000] * 10


# --------------------------------------------------------------------------- your own images


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


def test_train_into_a_finished_run_needs_overwrite_and_an_unwritable_out_is_refused_first(
        idx_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(train_args(idx_dir, out)) == 0
    capsys.readouterr()
    assert cli.main(train_args(idx_dir, out)) == 2
    assert "holds a finished run; give --overwrite" in capsys.readouterr().err
    assert cli.main(train_args(idx_dir, out, "--overwrite")) == 0
    capsys.readouterr()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(train_args(idx_dir, blocker / "sub")) == 2
    assert "cannot write there" in capsys.readouterr().err


def test_resume_with_more_epochs_extends_a_finished_run(idx_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(train_args(idx_dir, out)) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "extending the finished run from 1 to 2 epochs: a new cosine cycle" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["history"]["epoch"] == [1, 2] and metrics["settings"]["epochs"] == 2
    assert cli.main(["train", "--resume", str(out), "--epochs", "1", "--no-progress"]) == 2
    assert "--epochs 1 (the run used 2)" in capsys.readouterr().err


def test_a_json_model_without_seeds_trains_to_the_same_weights_twice(idx_dir, tmp_path, capsys):
    from cnn_im2col.architectures import lenet

    config = lenet(seed=5).config()
    for entry in config["layers"]:
        entry["config"].pop("seed", None)  # as a user writes it: no seeds
    path = tmp_path / "noseed.json"
    path.write_text(json.dumps(config))
    for name in ("a", "b"):
        assert cli.main(train_args(idx_dir, tmp_path / name, "--model", str(path))) == 0
    assert same_params(tmp_path / "a" / "model.npz", tmp_path / "b" / "model.npz")
    assert cli.main(train_args(idx_dir, tmp_path / "c", "--model", str(path), "--seed", "1")) == 0
    assert not same_params(tmp_path / "a" / "model.npz", tmp_path / "c" / "model.npz")


def test_shift_too_large_and_export_into_a_missing_folder_are_refused(idx_dir, tmp_path, capsys):
    assert cli.main(train_args(idx_dir, tmp_path / "r", "--shift", "30")) == 2
    err = capsys.readouterr().err
    assert "RandomShift(max_shift=30, fill=0.0) is too large for 28x28 images" in err
    assert not (tmp_path / "r" / "checkpoint.npz").exists()
    assert cli.main(train_args(idx_dir, tmp_path / "ok")) == 0
    capsys.readouterr()
    pytest.importorskip("onnx")
    missing = tmp_path / "no" / "such" / "m.onnx"
    assert cli.main(["export", str(tmp_path / "ok" / "model.npz"), str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
