"""Tests of the commands on a saved model (cnn_im2col.cli.commands): evaluate, bench, export."""

import json

import numpy as np
import pytest

from cli.cases import train_args
from cnn_im2col import cli
from cnn_im2col.cli.commands import default_model
from cnn_im2col.model import Sequential


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


def test_bench_prints_a_row_per_layer(capsys):
    assert cli.main(["bench", "--batch-size", "4", "--batches", "1"]) == 0
    text = capsys.readouterr().out
    assert "Conv2D(32, 64, 5" in text and "all layers" in text and "images/s" in text


def test_default_model_is_deterministic():
    a, b = default_model(3), default_model(3)
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert a.check_shapes((1, 28, 28))[-1] == (10,)


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
