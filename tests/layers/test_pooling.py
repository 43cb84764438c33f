"""layers.pooling: global, count_include_pad=False and adaptive pooling against PyTorch and the
gradient check."""

import json

import numpy as np
import pytest

from cnn_im2col.gradcheck import check_layer
from cnn_im2col.layers import AvgPool2D, GlobalAvgPool2D
from layers.cases import F64, distinct_values


def test_global_avg_pool_gradcheck_and_shapes():
    layer = GlobalAvgPool2D()
    assert layer.output_shape((4, 5, 6)) == (4,)
    check_layer(layer, distinct_values((2, 4, 3, 5)))


@pytest.mark.parametrize("scaled", [False, True])
def test_avg_pool_count_include_pad_false_matches_torch_and_round_trips(scaled):
    torch = pytest.importorskip("torch")
    layer = AvgPool2D(
        3,
        2,
        1,
        count_include_pad=False,
        trainable_scale=scaled,
        channels=2 if scaled else None,
        dtype=F64,
    )
    x = distinct_values((2, 2, 5, 6))
    expected = torch.nn.functional.avg_pool2d(
        torch.tensor(x), 3, 2, 1, count_include_pad=False
    ).numpy()
    np.testing.assert_allclose(
        layer.forward(x), expected, rtol=1e-12, atol=1e-12
    )  # the initial scale: the mean
    assert layer.config()["count_include_pad"] is False
    assert "count_include_pad=False" in repr(layer)
    assert repr(AvgPool2D.from_config(json.loads(json.dumps(layer.config())))) == repr(layer)
    check_layer(layer, x)


@pytest.mark.parametrize("size, out", [((7, 5), (3, 2)), ((8, 8), (4, 4)), ((5, 6), (1, 1)),
                                       ((4, 4), (6, 5))])
def test_adaptive_average_pooling_is_pytorchs_and_passes_the_gradient_check(size, out):
    from cnn_im2col.gradcheck import check_layer
    from cnn_im2col.layers import AdaptiveAvgPool2D

    x = np.random.default_rng(0).standard_normal((2, 3, *size))
    layer = AdaptiveAvgPool2D(out)
    y = layer.forward(x)
    assert y.shape == (2, 3, *out) and layer.output_shape((3, *size)) == (3, *out)
    check_layer(AdaptiveAvgPool2D(out), x)
    if out == (1, 1):
        np.testing.assert_allclose(y[:, :, 0, 0], x.mean(axis=(2, 3)))
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.AdaptiveAvgPool2d(out)(tx)
    dout = np.random.default_rng(1).standard_normal(y.shape)
    ty.backward(torch.tensor(dout))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.backward(dout), tx.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size, out", [((7, 5), (3, 2)), ((8, 8), (4, 4)), ((5, 6), (1, 1)),
                                       ((4, 4), (6, 5))])
def test_adaptive_max_pooling_is_pytorchs_ties_included_and_passes_the_gradient_check(size, out):
    from cnn_im2col.gradcheck import check_layer
    from cnn_im2col.layers import AdaptiveMaxPool2D

    rng = np.random.default_rng(0)
    check_layer(AdaptiveMaxPool2D(out), rng.standard_normal((2, 3, *size)))
    x = rng.integers(-2, 3, (2, 3, *size)).astype(np.float64)  # many ties: the first one wins
    layer = AdaptiveMaxPool2D(out)
    y = layer.forward(x)
    assert y.shape == (2, 3, *out) and layer.output_shape((3, *size)) == (3, *out)
    dout = rng.standard_normal(y.shape)
    dx = layer.backward(dout)
    # the slow twin: every window by hand, its first maximum in row-major order
    rows = [((i * size[0]) // out[0], -((-(i + 1) * size[0]) // out[0])) for i in range(out[0])]
    cols = [((j * size[1]) // out[1], -((-(j + 1) * size[1]) // out[1])) for j in range(out[1])]
    twin_dx = np.zeros_like(x)
    for n, c in np.ndindex(2, 3):
        for i, (r0, r1) in enumerate(rows):
            for j, (c0, c1) in enumerate(cols):
                window = x[n, c, r0:r1, c0:c1]
                assert y[n, c, i, j] == window.max()
                r, k = divmod(int(np.argmax(window)), c1 - c0)
                twin_dx[n, c, r0 + r, c0 + k] += dout[n, c, i, j]
    np.testing.assert_array_equal(dx, twin_dx)
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.AdaptiveMaxPool2d(out)(tx)
    ty.backward(torch.tensor(dout))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
