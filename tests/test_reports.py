"""Tests for cnn_im2col.reports: what the commands report (metrics.json, the curves, the confusion
matrix of ``evaluate``, the per-layer profile of ``bench``), called directly. The commands that
print and write them are tested in tests/cli/."""

import json
from pathlib import Path

import numpy as np
import pytest

from cnn_im2col.layers import Dense, ReLU
from cnn_im2col.model import Sequential
from cnn_im2col.reports import (
    confusion_matrix,
    format_confusion,
    format_profile,
    plot_history,
    profile_layers,
    write_json,
)


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    m = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 4)
    assert m.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    lines = format_confusion(m).splitlines()
    assert lines[0] == "rows: true class, columns: predicted class"
    assert lines[1].startswith("true\\pred") and lines[1].endswith("recall")
    assert lines[2].split() == ["0", "1", "1", "0", "0", "50.00%"]
    assert lines[4].split()[-1] == "66.67%" and lines[5].split()[-1] == "-"  # no image of class 3


def test_plot_history_writes_one_png_and_skips_missing_validation(tmp_path):
    history = {
        "epoch": [1, 2],
        "loss": [0.9, 0.5],
        "accuracy": [0.6, 0.8],
        "val_loss": [None, 0.6],
        "val_accuracy": [None, 0.75],
    }
    path = tmp_path / "curves.png"
    plot_history(history, path, title="a run")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file left


def test_write_json_takes_numpy_values_and_paths(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"accuracy": np.float32(0.5), "counts": np.arange(3), "out": Path("runs")})
    assert json.loads(path.read_text()) == {"accuracy": 0.5, "counts": [0, 1, 2], "out": "runs"}
    assert path.read_text().endswith("}\n")


def test_profile_layers_times_every_layer_and_formats_a_row_each():
    model = Sequential([Dense(6, 5, seed=0), ReLU(), Dense(5, 3, seed=1)])
    rng = np.random.default_rng(0)
    x, y = rng.random((4, 6), dtype=np.float32), rng.integers(0, 3, 4)
    result = profile_layers(model, x, y, batches=2)
    assert result["layers"].shape == (3, 2) and (result["layers"] >= 0).all()
    assert result["total"] >= result["loss"] + result["step"]
    lines = format_profile(model, result, batch_size=4).splitlines()
    assert len(lines) == 1 + 3 + 2  # header, a row per layer, the sum, the step
    assert lines[1].split()[0] == "0" and "Dense(6, 5" in lines[1] and "ReLU()" in lines[2]
    assert "all layers" in lines[4] and lines[5].endswith("images/s")


def test_plot_history_draws_a_regression_without_accuracy_and_never_makes_folders(tmp_path):
    history = {"epoch": [1, 2], "loss": [0.9, 0.5], "accuracy": [None, None], "mse": [2.0, 1.0],
               "val_loss": [None, None], "val_accuracy": [None, None], "val_mse": [1.5, 1.2]}
    plot_history(history, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileNotFoundError, match=r"the folder .*missing does not exist"):
        plot_history(history, tmp_path / "missing" / "r.png")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(TypeError, match=r"plot_history: history must be the dict fit returns"):
        plot_history([1, 2], tmp_path / "x.png")
