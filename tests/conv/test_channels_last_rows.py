"""MobileNetV2's channels-last rows (``conv/channels_last_rows.py``): the depthwise rows summed in
runs of adjacent pixels equal each pixel summed alone bit for bit and a plain twin to rounding, and
the transposes to and from rows of channels equal NumPy's."""

import numpy as np
from conftest import tolerance
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col.conv import channels_last_rows


@st.composite
def depthwise_rows(draw):
    """The depthwise rows' operands: k samples of H x W maps of E channels as rows (k*H*W + 1, E),
    the last row zeros, and a 3x3 geometry; E draws whole vectors and tails."""
    from cnn_im2col.shapes import dilated_geometry

    dtype = draw(st.sampled_from([np.float32, np.float64]))
    e = draw(st.integers(1, 40))
    stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    padding = draw(st.integers(0, 2))
    size = max(1, 2 * dilation + 1 - 2 * padding)
    height, width = draw(st.integers(size, 20)), draw(st.integers(size, 20))
    k = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    h = (rng.standard_normal((k * height * width + 1, e)) * 3).astype(dtype)
    h[-1] = 0
    g = dilated_geometry(height, width, (3, 3), (stride, stride), (dilation, dilation),
                         (padding, padding), "t")
    return h, rng.standard_normal((3, 3, e)).astype(dtype), rng.standard_normal(e).astype(dtype), \
        height, width, g


def depthwise_rows_twin(h, wd, bd, height, width, g):
    """ReLU6(bd + the 3x3 depthwise taps), written plainly over padded NCHW maps."""
    e = h.shape[1]
    x = h[:-1].reshape(-1, height, width, e)
    padded = np.pad(x, ((0, 0), (g.top, g.bottom), (g.left, g.right), (0, 0)))
    out = np.broadcast_to(bd, (x.shape[0], g.oh, g.ow, e)).copy()
    for i in range(3):
        for j in range(3):
            r0, c0 = i * g.dy, j * g.dx
            out += wd[i, j] * padded[:, r0:r0 + g.sy * (g.oh - 1) + 1:g.sy,
                                     c0:c0 + g.sx * (g.ow - 1) + 1:g.sx]
    return np.clip(out, 0, 6).reshape(-1, e)


@given(case=depthwise_rows())
def test_runs_of_pixels_give_the_bits_of_pixels_one_at_a_time(case):
    """The depthwise rows summed in runs of adjacent pixels (each input vector loaded once for
    the run) equal, bit for bit, each pixel summed alone, and the plain twin to rounding."""
    h, wd, bd, height, width, g = case
    out_plane = g.oh * g.ow
    k = (h.shape[0] - 1) // (height * width)
    outs = []
    for runs in (True, False):
        tables = channels_last_rows.depthwise_tables(height, width, g, h.shape[1], runs)
        d = np.empty((k * out_plane, h.shape[1]), h.dtype)
        channels_last_rows.depthwise_channels_last(h.copy(), bd, False, wd, bd, tables,
                                                   out_plane, d)
        outs.append(d)
    np.testing.assert_array_equal(outs[0], outs[1])
    rtol, atol = tolerance(h.dtype)
    np.testing.assert_allclose(outs[0], depthwise_rows_twin(h, wd, bd, height, width, g),
                               rtol=rtol, atol=atol)


@given(k=st.integers(1, 3), c=st.integers(1, 40), h=st.integers(1, 9), w=st.integers(1, 9),
       joined=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_the_transposes_to_and_from_rows_of_channels(k, c, h, w, joined, dtype, seed):
    """``to_channels_last`` and ``from_channels_last`` (16 pixels at a time, any remainder) against
    NumPy's transpose, bit for bit: the bias, then the shortcut, added in that order."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((k, c, h, w)).astype(dtype)
    rows = np.full((k * h * w + 1, c), 7.0, dtype)  # the row after them is left as it is
    channels_last_rows.to_channels_last(x, rows)
    np.testing.assert_array_equal(rows[:-1], x.transpose(0, 2, 3, 1).reshape(-1, c))
    assert (rows[-1] == 7.0).all()
    bias = rng.standard_normal(c).astype(dtype)
    skip = x if joined else np.empty((0, 0, 0, 0), dtype)
    out = np.full_like(x, np.nan)
    channels_last_rows.from_channels_last(rows[:-1] * 2, bias, skip, out)
    want = (rows[:-1] * 2).reshape(k, h * w, c).transpose(0, 2, 1).reshape(x.shape) + \
        bias[:, None, None]
    np.testing.assert_array_equal(out, want + x if joined else want)
