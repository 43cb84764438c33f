"""Tests for cnn_im2col.datasets.batches: iterate_minibatches."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_im2col.datasets import iterate_minibatches

# ------------------------------------------------------------------------------------------
# iterate_minibatches
# ------------------------------------------------------------------------------------------


def test_iterate_minibatches_in_order():
    x = np.arange(10 * 2).reshape(10, 2)
    y = np.arange(10)
    batches = list(iterate_minibatches(x, y, 4, shuffle=False))
    assert [len(yb) for _, yb in batches] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in batches]), x)
    assert all(np.shares_memory(xb, x) for xb, _ in batches)


def test_iterate_minibatches_shuffled_is_a_seeded_permutation():
    x = np.arange(23, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 2), np.float32)
    y = np.arange(23)
    batches = list(iterate_minibatches(x, y, 5, rng=np.random.default_rng(7)))
    assert [len(yb) for _, yb in batches] == [5, 5, 5, 5, 3]
    order = np.concatenate([yb for _, yb in batches])
    assert sorted(order) == list(range(23)) and not np.array_equal(order, y)
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0, 0, 0], yb)  # pairs stay together
    seeded = np.concatenate([yb for _, yb in iterate_minibatches(x, y, 5, rng=7)])
    np.testing.assert_array_equal(seeded, np.random.default_rng(7).permutation(23))


def test_iterate_minibatches_batch_larger_than_data_and_empty():
    x, y = np.zeros((3, 1)), np.zeros(3)
    assert [len(yb) for _, yb in iterate_minibatches(x, y, 100, rng=0)] == [3]
    assert list(iterate_minibatches(np.zeros((0, 1)), np.zeros(0), 4, rng=0)) == []


@pytest.mark.parametrize("kwargs, error, match", [
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": 2.0}, TypeError, "batch_size"),
    ({"batch_size": True}, TypeError, "batch_size"),
    ({"batch_size": 2, "y": np.zeros(4)}, ValueError, "same length"),
    ({"batch_size": 2, "rng": np.random.RandomState(0)}, TypeError, "rng"),
    ({"batch_size": 2, "rng": 1.5}, TypeError, "rng"),
])
def test_iterate_minibatches_rejects(kwargs, error, match):
    args = {"x": np.zeros((5, 2)), "y": np.zeros(5)}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        list(iterate_minibatches(**args))
