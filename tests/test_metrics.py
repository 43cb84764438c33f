"""metrics: which accuracy a task allows, and fit's extra metrics by name or callable."""

import numpy as np
import pytest

from cnn_im2col.metrics import NAMED, Accuracy, accuracy_for, resolve


def test_the_accuracy_follows_the_task():
    labels = np.array([0, 2, 1])
    rows = np.eye(3)[labels]
    assert accuracy_for((3,), labels, False) == Accuracy("argmax")
    assert accuracy_for((3,), rows, False) == Accuracy("argmax")
    assert accuracy_for((3,), np.random.default_rng(0).random((3, 3)), False) is None  # regression
    assert accuracy_for((1,), np.array([[0.0], [1.0]]), True) == Accuracy("threshold", 0.5)
    assert accuracy_for((1,), np.array([[0.0], [1.0]]), False) == Accuracy("threshold", 0.0)
    assert accuracy_for((1,), np.array([[0.2], [1.0]]), True) is None
    assert accuracy_for((2, 3), labels, False) is None


def test_correct_counts_argmax_and_threshold_predictions():
    out = np.array([[0.1, 0.9], [0.8, 0.2], [0.4, 0.6]])
    assert Accuracy("argmax").correct(out, np.array([1, 0, 0])) == 2
    one = np.array([[0.7], [0.2], [0.55]])
    assert Accuracy("threshold", 0.5).correct(one, np.array([[1.0], [1.0], [1.0]])) == 2
    assert Accuracy("threshold", 0.0).correct(one - 0.5, np.array([[1.0], [0.0], [1.0]])) == 3


def test_named_metrics_and_callables_resolve_and_bad_ones_are_named():
    y = np.array([0, 1, 2, 3, 4, 0])
    out = np.random.default_rng(1).standard_normal((6, 6))

    def my_metric(y_true, y_pred):
        return 1.0

    resolved = resolve(["accuracy", "mse", "top5_accuracy", my_metric], (6,), y, "fit")
    assert list(resolved) == ["mse", "top5_accuracy", "my_metric"]  # accuracy: the loop's own
    onehot = np.eye(6)[y]
    assert resolved["mse"](y, out) == pytest.approx(np.mean((out - onehot) ** 2))
    top5 = np.argsort(-out, axis=1)[:, :5]
    assert resolved["top5_accuracy"](y, out) == pytest.approx(np.mean((top5 == y[:, None]).any(1)))
    assert NAMED["mae"](y, out) == pytest.approx(np.mean(np.abs(out - onehot)))
    with pytest.raises(ValueError, match=r"fit: unknown metric 'f1'"):
        resolve(["f1"], (6,), y, "fit")
    with pytest.raises(ValueError, match=r"'top5_accuracy' needs at least 5 class scores"):
        resolve(["top5_accuracy"], (3,), y, "fit")
    with pytest.raises(TypeError, match=r"metrics must be names or callables"):
        resolve([3], (6,), y, "fit")

    def loss(y_true, y_pred):
        return 0.0

    with pytest.raises(ValueError, match=r"metric name 'loss' is taken by the history"):
        resolve([loss], (6,), y, "fit")
