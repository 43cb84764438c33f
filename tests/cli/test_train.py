"""Tests of ``cnn-im2col train`` (cnn_im2col.cli.train) on a tiny synthetic IDX data set, plus one
real run on MNIST: the files a run writes, SIGINT / SIGTERM and --resume, divergence, --out,
--model NAME|FILE.json."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cli.cases import train_args
from cnn_im2col import cli
from cnn_im2col.cli.train import StopRequest
from cnn_im2col.model import Sequential


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


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_bars_only_where_stderr_is_a_terminal(idx_dir, tmp_path, capsys, monkeypatch,
                                                       terminal):
    """Without --no-progress, the per-batch bars go to stderr only where it is a terminal: a log
    file or a pipe gets the one-line epoch summaries alone (tqdm's own default, disable=None)."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)  # capsys's stream
    args = [a for a in train_args(idx_dir, tmp_path / "run") if a != "--no-progress"]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert "epoch 1/1: loss" in captured.out  # the summary, either way
    assert ("epoch 1/1:" in captured.err) == terminal  # the bar's label
    assert ("batch" in captured.err) == terminal


def test_training_learns_the_synthetic_classes(idx_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(train_args(idx_dir, out, "--epochs", "3", "--lr", "0.003")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.9, capsys.readouterr().out


def test_sigint_checkpoints_and_resume_matches_an_uninterrupted_run(
    idx_dir, tmp_path, monkeypatch, capsys
):
    reference = tmp_path / "reference"
    assert cli.main(train_args(idx_dir, reference, "--epochs", "2")) == 0

    calls = {"n": 0}
    original = StopRequest.__call__

    def signal_on_seventh_batch(self):
        calls["n"] += 1
        if calls["n"] == 7:  # epoch 2 (5 batches per epoch), a real SIGINT through the handler
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)  # Python's handler, or SIG_IGN in a background job
    monkeypatch.setattr(StopRequest, "__call__", signal_on_seventh_batch)
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
    original = StopRequest.__call__

    def term_at_epoch_end(self):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self)

    out = tmp_path / "run"
    monkeypatch.setattr(StopRequest, "__call__", term_at_epoch_end)
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
    monkeypatch.setattr(StopRequest, "__call__", stop_on_third_batch)
    assert cli.main(train_args(idx_dir, out, "--epochs", "2", "--model", "lenet")) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(out), "--model", "default", "--no-progress"]) == 2
    assert "--model default (the run used lenet)" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert same_params(out / "model.npz", reference / "model.npz")
    assert json.loads((out / "metrics.json").read_text())["settings"]["model"] == "lenet"


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
