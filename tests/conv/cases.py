"""Hypothesis cases and the grouped/dilated oracle shared by the convolution strategies' tests.

The oracle is the reference convolution, which knows neither dilation nor groups: a dilated
kernel is the kernel with DY-1 / DX-1 zeros between its cells, and a grouped convolution is one
convolution per group, concatenated over the output channels."""

import numpy as np
from conftest import in_memory_order, tolerance
from hypothesis import strategies as st

from cnn_im2col import conv, reference
from cnn_im2col import functional as F
from cnn_im2col.gradcheck import check_function
from cnn_im2col.shapes import dilated_geometry

BACKENDS = ["numba", "numpy"]


def distinct_from(draw, low, high, other):
    return draw(st.integers(low, high).filter(lambda v: v != other))


@st.composite
def conv_cases(draw):
    """N, C, O, H, W with KH != KW, sy != sx, ph != pw, every bias mode, both dtypes, three
    layouts."""
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    kh = draw(st.integers(1, 4))
    kw = distinct_from(draw, 1, 4, kh)
    sy = draw(st.integers(1, 3))
    sx = distinct_from(draw, 1, 3, sy)
    ph = draw(st.integers(0, 2))
    pw = distinct_from(draw, 0, 2, ph)
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    bias = draw(st.sampled_from(["tied", "untied", None]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    order = draw(st.sampled_from(["C", "F", "strided"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c, kh, kw)).astype(dtype)
    oh, ow = (h + 2 * ph - kh) // sy + 1, (w + 2 * pw - kw) // sx + 1
    b = {"tied": rng.standard_normal(o), "untied": rng.standard_normal((o, oh, ow)), None: None}[
        bias
    ]
    b = None if b is None else b.astype(dtype)
    dout = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    return x, weight, b, bias, (sy, sx), (ph, pw), dout, order


def dilate_kernel(weight, dilation):
    dy, dx = dilation
    o, c, kh, kw = weight.shape
    out = np.zeros((o, c, dy * (kh - 1) + 1, dx * (kw - 1) + 1), dtype=weight.dtype)
    out[:, :, ::dy, ::dx] = weight
    return out


def same_padding(kernel, dilation):
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    tops = [(s - 1) // 2 for s in spans]
    return tops, [s - 1 - t for s, t in zip(spans, tops)]


def oracle_conv(x, weight, bias, stride, padding, dilation, groups, dout):
    """(out, dx, dweight) from reference.conv2d_forward/backward, group by group, dilated kernel."""
    if padding == "same":
        tops, bottoms = same_padding(weight.shape[2:], dilation)
        x = np.pad(x, ((0, 0), (0, 0), (tops[0], bottoms[0]), (tops[1], bottoms[1])))
        padding, crop = 0, (tops, bottoms)
    else:
        crop = None
    wd = dilate_kernel(weight, dilation)
    cg, og = x.shape[1] // groups, weight.shape[0] // groups
    outs, dxs, dws = [], [], []
    for g in range(groups):
        xg, wg = x[:, g * cg : (g + 1) * cg], wd[g * og : (g + 1) * og]
        outs.append(reference.conv2d_forward(xg, wg, None, stride, padding))
        dxg, dwg, _ = reference.conv2d_backward(
            xg, wg, dout[:, g * og : (g + 1) * og], stride, padding, bias=None
        )
        dxs.append(dxg)
        dws.append(dwg[:, :, :: dilation[0], :: dilation[1]])
    out, dx, dw = (
        np.concatenate(outs, axis=1),
        np.concatenate(dxs, axis=1),
        np.concatenate(dws, axis=0),
    )
    if bias is not None:
        out = out + (bias[:, None, None] if bias.ndim == 1 else bias)
    if crop is not None:
        (t0, t1), (b0, b1) = crop
        dx = dx[:, :, t0 : dx.shape[2] - b0, t1 : dx.shape[3] - b1]
    return out, dx, dw


@st.composite
def grouped_dilated_cases(draw):
    groups = draw(st.integers(1, 3))
    c, o = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    n = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    if stride == (1, 1) and draw(st.booleans()):
        padding = "same"
        pads = same_padding((kh, kw), dilation)
        pads = [(pads[0][0], pads[1][0]), (pads[0][1], pads[1][1])]
    else:
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        pads = [(padding[0], padding[0]), (padding[1], padding[1])]
    span = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    h = draw(st.integers(max(1, span[0] - sum(pads[0])), 9))
    w = draw(st.integers(max(1, span[1] - sum(pads[1])), 9))
    oh = (h + sum(pads[0]) - span[0]) // stride[0] + 1
    ow = (w + sum(pads[1]) - span[1]) // stride[1] + 1
    bias_mode = draw(st.sampled_from(["tied", "untied", None]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    order = draw(st.sampled_from(["C", "F", "strided"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c // groups, kh, kw)).astype(dtype)
    bias = {"tied": rng.standard_normal(o), "untied": rng.standard_normal((o, oh, ow)), None: None}[
        bias_mode
    ]
    bias = None if bias is None else bias.astype(dtype)
    dout = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    return x, weight, bias, bias_mode, stride, padding, dilation, groups, dout, order


def check_conv_gradients(x, weight, bias, **kw):
    """Finite differences of ``conv2d_forward(x, weight, bias, **kw)`` against
    ``conv2d_backward``'s gradient of x, of the weight and, if there is one, of the bias (float64).
    Returns the last forward's cache, for asserting which strategy ran."""
    values = {"x": x, "weight": weight, "bias": bias}
    state = {}
    for index, (name, value) in enumerate(values.items()):
        if value is None:
            continue

        def forward(v, name=name):
            args = {**values, name: v}
            out, state["cache"] = F.conv2d_forward(args["x"], args["weight"], args["bias"], **kw)
            return out

        check_function(
            forward, lambda d, index=index: F.conv2d_backward(d, state["cache"])[index], value
        )
    return state["cache"]


def draw_conv_case(draw, n, c, o, kernel, stride, dilation, padding, largest=13):
    """The rest of a drawn convolution case for these sizes: the input's sides (up to ``largest``,
    at least one window), dtype, bias mode (tied, untied, none), layout, and the arrays.
    Returns (x, weight, bias, stride, padding, dilation, dout, order)."""
    (kh, kw), (dy, dx), (ph, pw) = kernel, dilation, padding
    h = draw(st.integers(max(1, (kh - 1) * dy + 1 - 2 * ph), largest))
    w = draw(st.integers(max(1, (kw - 1) * dx + 1 - 2 * pw), largest))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    bias_mode = draw(st.sampled_from(["tied", "untied", None]))
    g = dilated_geometry(h, w, kernel, stride, dilation, padding, "test")
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((o, c, kh, kw)).astype(dtype)
    bias = {"tied": rng.standard_normal(o), "untied": rng.standard_normal((o, g.oh, g.ow)),
            None: None}[bias_mode]
    bias = None if bias is None else bias.astype(dtype)
    dout = rng.standard_normal((n, o, g.oh, g.ow)).astype(dtype)
    order = draw(st.sampled_from(["C", "F", "strided"]))
    return x, weight, bias, stride, padding, dilation, dout, order


def check_strategy_against_im2col(case, relu, input_grad, strategy):
    """A drawn case through ``algorithm="auto"``, which must choose ``strategy``, against the
    im2col path (forward and backward, to rounding) and the oracle (without ReLU): each batch slice
    handed to ``then`` once, right after it is written."""
    x, weight, bias, stride, padding, dilation, dout, order = case
    rtol, atol = tolerance(x.dtype)
    kw = {"stride": stride, "padding": padding, "dilation": dilation, "relu": relu}
    results = []
    for algorithm in ("auto", "im2col"):
        seen = []

        def then(s, out_slice, seen=seen):
            seen.append((s.start, s.stop, out_slice.copy()))

        out, cache = F.conv2d_forward(in_memory_order(x, order), weight, bias,
                                      algorithm=algorithm, then=then, **kw)
        results.append((out, *F.conv2d_backward(dout, cache, input_grad=input_grad)))
        starts = sorted((start, stop) for start, stop, _ in seen)
        assert [a for a, _ in starts] == [0] + [b for _, b in starts[:-1]]
        assert starts[-1][1] == x.shape[0]
        for start, stop, values in seen:
            np.testing.assert_array_equal(values, out[start:stop])
    assert conv.choose("auto", "numba", weight.shape, dilated_geometry(
        x.shape[2], x.shape[3], weight.shape[2:], stride, dilation, padding, "t"), 1,
        x.shape[1], x.shape[0], "t") is strategy
    for a, b in zip(*results):
        if a is None:
            assert b is None
        else:
            np.testing.assert_allclose(a, b, rtol, atol)
    if not relu:
        ref_out, _, ref_dw = oracle_conv(x, weight, bias, stride, padding, dilation, 1, dout)
        np.testing.assert_allclose(results[0][0], ref_out, rtol, atol)
        np.testing.assert_allclose(results[0][2], ref_dw, rtol, atol)
