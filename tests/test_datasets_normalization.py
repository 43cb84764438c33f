"""Tests for cnn_im2col.datasets.normalization: per-channel statistics and their application."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_im2col.datasets import channel_stats, normalize


def test_stats_match_numpy_per_channel():
    rng = np.random.default_rng(0)
    x = rng.random((50, 3, 5, 7), dtype=np.float32) * np.array([1, 0.5, 0.1],
                                                                np.float32)[None, :, None, None]
    mean, std = channel_stats(x)
    assert mean.dtype == std.dtype == np.float32 and mean.shape == std.shape == (3,)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, x.astype(np.float64).std(axis=(0, 2, 3)), rtol=1e-6)


def test_stats_are_chunked_without_losing_precision(monkeypatch):
    from cnn_im2col.datasets import normalization as module

    monkeypatch.setattr(module, "_CHUNK", 3)  # many chunks, an uneven last one
    x = (np.random.default_rng(1).random((10, 2, 4, 4)) + 1000).astype(np.float32)
    mean, std = channel_stats(x)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-7)
    np.testing.assert_allclose(std, x.astype(np.float64).std(axis=(0, 2, 3)), rtol=1e-4)


def test_normalized_training_set_has_zero_mean_unit_std():
    x = np.random.default_rng(2).random((40, 3, 6, 6), dtype=np.float32)
    mean, std = channel_stats(x)
    z = normalize(x, mean, std)
    assert z.dtype == np.float32 and z.shape == x.shape and not np.shares_memory(z, x)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-4)
    np.testing.assert_array_equal(normalize(x[:3], mean, std), z[:3])  # the same for any batch


def test_a_constant_channel_is_centred_not_divided():
    x = np.random.default_rng(3).random((8, 2, 3, 3), dtype=np.float32)
    x[:, 1] = 0.25
    mean, std = channel_stats(x)
    assert std[1] == 1 and mean[1] == pytest.approx(0.25)
    assert np.all(normalize(x, mean, std)[:, 1] == 0)


@pytest.mark.parametrize("call, error, match", [
    (lambda: channel_stats(np.zeros((0, 3, 2, 2), np.float32)), ValueError, "N >= 1"),
    (lambda: channel_stats(np.zeros((2, 2, 2), np.float32)), ValueError, r"\(N, C, H, W\)"),
    (lambda: channel_stats(np.zeros((2, 3, 2, 2), np.uint8)), TypeError, "floating point"),
    (lambda: channel_stats([[1.0]]), TypeError, "numpy array"),
    (lambda: normalize(np.zeros((1, 3, 2, 2), np.float32), np.zeros(2), np.ones(3)), ValueError,
     r"mean must have shape \(3,\)"),
    (lambda: normalize(np.zeros((1, 3, 2, 2), np.float32), np.zeros(3), np.zeros(3)), ValueError,
     "std must be positive"),
    (lambda: normalize(np.zeros((1, 1, 2, 2), np.float32), [np.nan], [1.0]), ValueError,
     "mean must be finite"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
