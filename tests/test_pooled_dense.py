"""The compiled classifier head (GlobalAvgPool2D -> Dense) against its twin, the two layers."""

import numpy as np
from conftest import tolerance
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col import pooled_dense
from cnn_im2col.layers import Dense, GlobalAvgPool2D


def layers_twin(x, weight, bias):
    """The mean of each map, then x @ weight.T + bias, in float64."""
    means = x.astype(np.float64).mean(axis=(2, 3))
    out = means @ weight.astype(np.float64).T
    return out if bias is None else out + bias


@given(n=st.integers(1, 5), c=st.integers(1, 40), h=st.integers(1, 9), w=st.integers(1, 9),
       k=st.integers(1, 12), bias=st.booleans(), x_dtype=st.sampled_from([np.float32, np.float64]),
       w_dtype=st.sampled_from([np.float32, np.float64]), layout=st.sampled_from(["C", "view"]),
       seed=st.integers(0, 2**16))
def test_the_head_equals_the_pool_then_the_product(n, c, h, w, k, bias, x_dtype, w_dtype, layout,
                                                   seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c, h, w)) * 3 + 1).astype(x_dtype)
    if layout == "view":  # every other column of a wider map (not C-contiguous from 2 columns)
        x = np.repeat(x, 2, axis=3)[..., ::2]
    weight = rng.standard_normal((k, c)).astype(w_dtype)
    b = rng.standard_normal(k).astype(w_dtype) if bias else None
    out = pooled_dense.pooled_dense(x, weight, b)
    assert out.shape == (n, k) and out.dtype == w_dtype
    single = np.float32 in (x_dtype, w_dtype)
    np.testing.assert_allclose(out, layers_twin(x, weight, b),
                               *tolerance(np.float32 if single else np.float64))


def test_the_head_equals_the_layers_and_carries_a_nan():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 8, 5, 5)).astype(np.float32)
    pool, dense = GlobalAvgPool2D(), Dense(8, 4, seed=1)
    dense.params["bias"][...] = rng.standard_normal(4)
    expected = dense.forward(pool.forward(x))
    out = pooled_dense.pooled_dense(x, dense.params["weight"], dense.params["bias"])
    np.testing.assert_allclose(out, expected, *tolerance(np.float32))
    x[1, 2, 3, 4] = np.nan
    out = pooled_dense.pooled_dense(x, dense.params["weight"], dense.params["bias"])
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()


def test_only_a_head_of_at_most_max_macs_fits():
    assert pooled_dense.fits(64, 64, 10)  # ResNet-20's at batch 64
    assert pooled_dense.fits(1, pooled_dense.MAX_MACS, 1)
    assert not pooled_dense.fits(2, pooled_dense.MAX_MACS, 1)
    assert not pooled_dense.fits(64, 2048, 1000)  # an ImageNet ResNet's
