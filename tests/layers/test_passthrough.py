"""layers.passthrough: Dropout's mask and Flatten's column stacking."""

import numpy as np

from cnn_im2col.layers import Dropout, Flatten


def test_dropout_training_masks_and_rescales():
    layer = Dropout(0.25, seed=3)
    x = np.ones((400, 50), dtype=np.float32)
    y = layer.forward(x, training=True)
    kept = y != 0
    assert 0.72 < kept.mean() < 0.78
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    dx = layer.backward(np.full_like(x, 2.0))
    np.testing.assert_array_equal(dx, np.where(kept, 2 / 0.75, 0).astype(np.float32))
    assert layer.forward(x) is not None and np.array_equal(layer.forward(x), x)


def test_flatten_f_is_the_column_stacking_of_eq_8_26():
    x = np.arange(2 * 2 * 3 * 3, dtype=np.float32).reshape(2, 2, 3, 3)
    y = Flatten("F").forward(x)
    expected = np.concatenate([x[:, c].transpose(0, 2, 1).reshape(2, -1) for c in range(2)], axis=1)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(
        y[0, :3], x[0, 0, :, 0]
    )  # the first column of the first map comes first
