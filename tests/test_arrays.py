"""arrays: the row-split GEMM equals one product."""

import numpy as np
import pytest

from cnn_im2col import arrays


@pytest.mark.parametrize("rows", [3, 4, 65])
def test_gemm_split_over_the_pool_equals_one_product(monkeypatch, rows):
    rng = np.random.default_rng(rows)
    a, b = rng.standard_normal((rows, 17)), rng.standard_normal((17, 9))
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
