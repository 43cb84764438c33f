"""``blas.gemm``, NumPy's own BLAS product called from compiled code, gives ``np.matmul``'s very
bits; ``blas.library()`` finds NumPy's OpenBLAS, and is None where it cannot be trusted."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col import blas


def test_numpys_openblas_is_found():
    """NumPy's wheels from PyPI carry OpenBLAS: its two products are found, with its integer
    width (the wheels' build is ILP64, its symbols suffixed "64_")."""
    assert blas.library() is not None
    assert blas.library().shape == (3,) and blas.library()[0] and blas.library()[1]
    assert blas.library()[2] in (0, 1)
    assert not blas.library().flags.writeable


@given(m=st.integers(2, 70), k=st.integers(0, 70), n=st.integers(2, 70),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_gemm_gives_numpys_matmul_bits(m, k, n, dtype, seed):
    """Where ``np.matmul`` takes its general product (both sides 2 or more), ``gemm`` calls the
    same ``cblas_?gemm`` the same way: the same bits, on every drawn shape and dtype (an inner
    axis of 0: zeros)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    out = np.full((m, n), np.nan, dtype)
    blas.gemm(blas.library(), a, b, out)
    np.testing.assert_array_equal(out, a @ b)


@given(m=st.integers(2, 40), k=st.integers(1, 40), n=st.integers(2, 40),
       offset=st.integers(0, 7), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_gemm_of_views_with_leading_dimensions_gives_numpys_bits(m, k, n, offset, dtype, seed):
    """Column blocks of larger arrays (rows longer than the block): ``gemm`` passes their leading
    dimensions as NumPy's matmul does, so the same bits; the rest of ``out`` is left alone."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k + offset)).astype(dtype)[:, offset:]
    b = rng.standard_normal((k, n + 2 * offset)).astype(dtype)[:, offset : offset + n]
    whole = np.full((m, n + offset), np.nan, dtype)
    out = whole[:, offset:]
    blas.gemm(blas.library(), a, b, out)
    np.testing.assert_array_equal(out, np.matmul(a, b))
    assert np.isnan(whole[:, :offset]).all()


@given(m=st.integers(2, 70), k=st.integers(0, 70), n=st.integers(2, 70),
       offset=st.integers(0, 5), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_gemm_at_gives_the_bits_of_numpys_matmul_of_a_transposed_view(m, k, n, offset, dtype,
                                                                       seed):
    """``gemm_at(a, b)`` is ``a.T @ b`` called as NumPy's matmul calls it for the transposed view
    (TransA, a's own leading dimension): the same bits, rows of a longer than its block too."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m + offset)).astype(dtype)[:, offset:]
    b = rng.standard_normal((k, n)).astype(dtype)
    out = np.full((m, n), np.nan, dtype)
    blas.gemm_at(blas.library(), a, b, out)
    np.testing.assert_array_equal(out, np.matmul(a.T, b))


@pytest.mark.parametrize("m, k, n", [(50, 16, 96),  # small: one product
                                     (64, 80, 480),  # column blocks (MobileNetV2's 4x4 blocks)
                                     (1024, 16, 96), (1024, 96, 16), (1000, 96, 16),  # row blocks
                                     (96, 480, 80)])  # too few rows and columns for blocks
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_gives_the_engines_matmul_bits(m, k, n, dtype):
    """``blas.matmul`` cuts a product as ``arrays.matmul`` does (whole, column blocks, row blocks
    and their remainder) and so gives its very bits."""
    from cnn_im2col import arrays

    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    out = np.full((m, n), np.nan, dtype)
    blas.matmul(blas.library(), a, b, out)
    np.testing.assert_array_equal(out, arrays.matmul(a, b))


@pytest.mark.parametrize("m, n", [(1, 5), (5, 1), (1, 1)])
def test_gemm_of_a_vector_is_the_product_to_rounding(m, n):
    """With a side of 1 NumPy's matmul calls gemv or a dot; ``gemm`` still calls gemm: the same
    product, its sums perhaps rounded otherwise."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, 33)), rng.standard_normal((33, n))
    out = np.empty((m, n))
    blas.gemm(blas.library(), a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)


def test_without_numpys_library_or_with_other_bits_no_blas_is_used(monkeypatch):
    """``_find`` gives None (callers keep NumPy's matmul) where NumPy's core cannot be opened, or
    where the products found do not give NumPy's bits on the probe."""
    monkeypatch.setattr(blas, "_numpy_library", lambda: None)
    assert blas._find() is None
    monkeypatch.undo()
    monkeypatch.setattr(blas, "_matches_numpy", lambda found: False)
    assert blas._find() is None
    monkeypatch.undo()
    found = blas._find()
    assert found is not None and np.array_equal(found, blas.library())
