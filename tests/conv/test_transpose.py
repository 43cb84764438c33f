"""The block transpose (``conv/transpose.py``) against NumPy's ``.T`` copy, its slow twin: every
value where it belongs and nothing else written, for float32 and float64, on drawn shapes (whole
blocks and edges), offsets and strides, with the destination's rows a whole number of cache lines
apart (the blocks then start at a line boundary) and not."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col.conv import transpose


def _view(flat: np.ndarray, start: int, shape: tuple[int, int], stride: int) -> np.ndarray:
    """``flat[start + i*stride + j]`` as a (rows, cols) view."""
    item = flat.itemsize
    return np.lib.stride_tricks.as_strided(flat[start:], shape, (stride * item, item))


@given(dtype=st.sampled_from([np.float32, np.float64]), rows=st.integers(1, 70),
       cols=st.integers(1, 70), s_extra=st.integers(0, 5), d_extra=st.integers(0, 20),
       lines=st.booleans(), s0=st.integers(0, 40), d0=st.integers(0, 40),
       seed=st.integers(0, 2**16))
def test_transpose_into_equals_numpy(dtype, rows, cols, s_extra, d_extra, lines, s0, d0, seed):
    """``dst[d0 + j*d_stride + i] = src[s0 + i*s_stride + j]`` for i < rows, j < cols; every
    other value of dst untouched (NaN stays NaN)."""
    rng = np.random.default_rng(seed)
    s_stride = cols + s_extra
    d_stride = rows + d_extra
    if lines:  # the destination's rows a whole number of 64-byte lines apart
        per_line = 64 // np.dtype(dtype).itemsize
        d_stride = -(-d_stride // per_line) * per_line
    src = rng.standard_normal(s0 + rows * s_stride + cols).astype(dtype)
    dst = np.full(d0 + cols * d_stride + rows + 7, np.nan, dtype=dtype)
    transpose.transpose_into(src, s0, s_stride, rows, cols, dst, d0, d_stride)
    want = np.full_like(dst, np.nan)
    _view(want, d0, (cols, rows), d_stride)[...] = _view(src, s0, (rows, cols), s_stride).T
    np.testing.assert_array_equal(dst, want)
