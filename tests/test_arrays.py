"""arrays: the GEMM split over the pool (by rows or by columns) and the column-blocked matmul equal
one product."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_im2col import arrays


@pytest.mark.parametrize("rows, columns, transposed", [
    (3, 9, False), (4, 9, False), (65, 9, False),  # by rows, or whole (too few rows)
    (1, 300, False), (5, 129, True), (64, 256, True),  # by columns (b's, transposed or not)
])
def test_gemm_split_over_the_pool_equals_one_product(monkeypatch, rows, columns, transposed):
    rng = np.random.default_rng(rows)
    a = rng.standard_normal((rows, 17))
    b = rng.standard_normal((columns, 17)).T if transposed else rng.standard_normal((17, columns))
    monkeypatch.setattr(
        arrays, "_PARALLEL_GEMM_MACS", 1
    )  # split even these (when there are 2+ threads)
    np.testing.assert_allclose(arrays.gemm(a, b), a @ b, rtol=1e-12)
    np.testing.assert_allclose(
        arrays.gemm(a.astype(np.float32), b.astype(np.float32)),
        (a @ b).astype(np.float32),
        rtol=1e-5,
        atol=1e-5,
    )


@settings(deadline=None, max_examples=40)
@given(
    m=st.integers(1, 40), k=st.integers(1, 12), n=st.integers(1, 300), stack=st.integers(0, 3),
    dtype=st.sampled_from([np.float32, np.float64]), layout=st.sampled_from(["c", "bt", "out"]),
    block=st.sampled_from([16, 32, 100]),
)
def test_matmul_in_column_blocks_equals_one_product(m, k, n, stack, dtype, layout, block):
    # the threshold lowered, so that small products are cut into blocks of `block` columns (or
    # kept whole: transposed operands, blocks below the minimum)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(arrays, "_SMALL_PRODUCT", m * k * block)
        patch.setattr(arrays, "_MIN_BLOCK_COLUMNS", 16)
        _check_matmul(m, k, n, stack, dtype, layout)


def _check_matmul(m, k, n, stack, dtype, layout):
    rng = np.random.default_rng(m * 1000 + n)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal(((stack,) if stack else ()) + (k, n)).astype(dtype)
    if layout == "bt":  # a transposed view: kept whole
        b = np.ascontiguousarray(np.swapaxes(b, -1, -2)).swapaxes(-1, -2)
    expected = np.matmul(a.astype(np.float64), b.astype(np.float64))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    if layout == "out":  # into a view of a wider array, as the strategies write slices
        wide = np.full(expected.shape[:-1] + (n + 5,), np.nan, dtype=dtype)
        arrays.matmul(a, b, wide[..., 2 : n + 2])
        np.testing.assert_allclose(wide[..., 2 : n + 2], expected, rtol=tol, atol=tol)
        assert np.isnan(wide[..., :2]).all() and np.isnan(wide[..., n + 2 :]).all()
    else:
        got = arrays.matmul(a, b)
        assert got.dtype == dtype and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


def test_matmul_cuts_a_large_product_with_a_short_inner_axis_into_blocks(monkeypatch):
    calls = []
    real = np.matmul

    def spy(a, b, *args, **kwargs):
        calls.append(b.shape[-1])
        return real(a, b, *args, **kwargs)

    a = np.ones((96, 16), np.float32)
    b = np.ones((16, 1024), np.float32)
    monkeypatch.setattr(arrays.np, "matmul", spy)
    out = arrays.matmul(a, b)
    # 10**6 // (96 * 16) = 651 columns, rounded down to 640
    assert calls == [640, 384]
    assert (out == 16).all()
    calls.clear()
    arrays.matmul(np.ones((96, 288), np.float32), np.ones((288, 1024), np.float32))
    assert calls == [1024]  # blocks would be 32 columns wide: kept whole
