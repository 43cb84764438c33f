"""Slow, obviously-right oracles that the fast im2col engine is tested and benchmarked against.

Nothing here imports the fast engine (``im2col``, ``functional``, ``_kernels``): an oracle that
shared code with the thing it checks would share its bugs.

Two independent convolutions, so that each one checks the other:

- ``conv2d_forward`` / ``conv2d_backward``: the primer's per-feature-map ``scipy.signal`` approach
  (``FeatureMap.feed_forward`` / ``propagate_backward``), generalised to batches, many input and
  output maps (Appendix B: sum the 2-D correlations over input maps), padding, stride and both
  bias kinds of Fig. 8.1. This is also the "per-feature-map" baseline of the benchmarks.
- ``conv2d_forward_naive`` / ``conv2d_backward_naive``: one Python loop iteration per output
  neuron, the most literal reading of Eq. 8.20 (forward) and Eq. 8.39/8.47 (backward).

And the pooling oracles, looping over output positions (vectorised only over N and C):
``max_pool2d_forward`` / ``max_pool2d_backward`` (Eq. 8.24, the primer's ``MaxPoolingMap``) and
``avg_pool2d_forward`` / ``avg_pool2d_backward`` (the mean, or Eq. 8.22 with one weight per map,
gradients P8.3 / P8.4).

Conventions (as the rest of the package): layout NCHW; conv weights (O, C, KH, KW); the operation
is cross-correlation, as in PyTorch; output size ``(H + 2*ph - KH) // sy + 1`` (``shapes``).
Inputs may be float32 or float64 (bool/int arrays are converted to float32), in any memory order;
when arguments differ in dtype they are promoted (float32 with float64 gives float64) and every
result has that dtype. Non-finite inputs (NaN, Inf) are rejected, as everywhere in the package.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from cnn_im2col.shapes import (
    as_float_array,
    check_choice,
    check_input_channels,
    conv_output_size,
    pair,
)

__all__ = [
    "avg_pool2d_backward",
    "avg_pool2d_forward",
    "conv2d_backward",
    "conv2d_backward_naive",
    "conv2d_forward",
    "conv2d_forward_naive",
    "max_pool2d_backward",
    "max_pool2d_forward",
]

_BIAS_MODES = ("tied", "untied", None)


# --------------------------------------------------------------------------------------------
# Validation shared by both convolutions (the arithmetic is not shared)
# --------------------------------------------------------------------------------------------


def _common_dtype(*arrays):
    return np.result_type(*[a.dtype for a in arrays if a is not None])


def _as_c_float(a, name, owner, ndim=None):
    """Validated float array, C-contiguous: NumPy's reductions add in memory order, so making
    every input C-ordered first gives bit-identical results for C, F and strided inputs."""
    return np.ascontiguousarray(as_float_array(a, name, owner, ndim=ndim))


def _output_hw(owner, h, w, kh, kw, sy, sx, ph, pw, what="kernel_size"):
    """Output (OH, OW); raise if the window does not fit in the padded input."""
    if kh > h + 2 * ph or kw > w + 2 * pw:
        raise ValueError(
            f"{owner}: {what} {(kh, kw)} is larger than the padded input "
            f"{(h + 2 * ph, w + 2 * pw)} (H + 2*ph, W + 2*pw) for input size {(h, w)} "
            f"and padding {(ph, pw)}"
        )
    return conv_output_size(h, kh, sy, ph), conv_output_size(w, kw, sx, pw)


def _conv_setup(owner, x, weight, stride, padding):
    """Validate x (N, C, H, W), weight (O, C, KH, KW), stride and padding.

    Returns ``x, weight, (sy, sx), (ph, pw), (OH, OW)`` with x and weight as float arrays.
    """
    x = _as_c_float(x, "x", owner, ndim=4)
    weight = _as_c_float(weight, "weight", owner, ndim=4)
    check_input_channels(x, weight.shape[1], owner)
    sy, sx = pair(stride, "stride", owner)
    ph, pw = pair(padding, "padding", owner, minimum=0)
    _, _, h, w = x.shape
    _, _, kh, kw = weight.shape
    oh, ow = _output_hw(owner, h, w, kh, kw, sy, sx, ph, pw, what="weight's kernel size")
    return x, weight, (sy, sx), (ph, pw), (oh, ow)


def _conv_forward_setup(owner, x, weight, bias, stride, padding):
    """What both forward oracles start from: validated arrays in one dtype and the padded input.

    Returns ``x_padded, weight, bias, (sy, sx), (OH, OW)`` (bias None, (O,) or (O, OH, OW)).
    """
    x, weight, (sy, sx), (ph, pw), (oh, ow) = _conv_setup(owner, x, weight, stride, padding)
    bias = _check_bias(owner, bias, weight.shape[0], oh, ow)
    dtype = _common_dtype(x, weight, bias)
    x, weight = x.astype(dtype, copy=False), weight.astype(dtype, copy=False)
    if bias is not None:  # dtype is at least bias's own: the cast is exact
        bias = bias.astype(dtype, copy=False)
    return _pad(x, ph, pw), weight, bias, (sy, sx), (oh, ow)


def _conv_backward_setup(owner, x, weight, dout, stride, padding, bias):
    """What both backward oracles start from: validated arrays in one dtype and the padded input.

    Returns ``x_padded, weight, dout, (sy, sx), (ph, pw), (H, W)``.
    """
    x, weight, (sy, sx), (ph, pw), (oh, ow) = _conv_setup(owner, x, weight, stride, padding)
    check_choice(bias, "bias", _BIAS_MODES, owner)
    dout = _check_dout(owner, dout, (x.shape[0], weight.shape[0], oh, ow))
    dtype = _common_dtype(x, weight, dout)
    x, weight, dout = (a.astype(dtype, copy=False) for a in (x, weight, dout))
    return _pad(x, ph, pw), weight, dout, (sy, sx), (ph, pw), x.shape[2:]


def _check_bias(owner, bias, o, oh, ow):
    """Validate a forward bias: None, tied (O,) or untied (O, OH, OW)."""
    if bias is None:
        return None
    bias = _as_c_float(bias, "bias", owner)
    if bias.shape not in ((o,), (o, oh, ow)):
        raise ValueError(
            f"{owner}: bias must be None, shape ({o},) (tied) or ({o}, {oh}, {ow}) (untied), "
            f"got shape {bias.shape}"
        )
    return bias


def _check_dout(owner, dout, expected_shape):
    dout = _as_c_float(dout, "dout", owner, ndim=4)
    if dout.shape != tuple(expected_shape):
        raise ValueError(
            f"{owner}: dout must have the forward output's shape {tuple(expected_shape)}, "
            f"got {dout.shape}"
        )
    return dout


def _pad(x, ph, pw, value=0.0):
    """Pad the two spatial axes of an NCHW array with a constant."""
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _bias_gradient(dout, bias_mode):
    if bias_mode is None:
        return None
    if bias_mode == "tied":  # one bias per map touches every neuron of it (Eq. 8.36)
        return dout.sum(axis=(0, 2, 3))
    return dout.sum(axis=0)  # untied: one bias per neuron, summed over the batch only


# --------------------------------------------------------------------------------------------
# Convolution, the primer's way: scipy.signal per (sample, output map, input map)
# --------------------------------------------------------------------------------------------


def conv2d_forward(x, weight, bias=None, stride=1, padding=0):
    """Cross-correlate a batch with a filter bank, one ``scipy.signal.correlate2d`` per map pair.

    Args:
        x: (N, C, H, W) input.
        weight: (O, C, KH, KW) filters.
        bias: None, tied (O,) or untied (O, OH, OW).
        stride: int or (sy, sx), >= 1.
        padding: int or (ph, pw), >= 0; zero padding on both sides.

    Returns:
        (N, O, OH, OW) with ``OH = (H + 2*ph - KH) // sy + 1`` (likewise OW).

    Output map o of sample n is the sum over input maps c of the valid correlation of
    x_padded[n, c] with weight[o, c] (the primer's Appendix B); a stride keeps every sy-th row
    and sx-th column of the stride-1 result, counted from the first.
    """
    xp, weight, bias, (sy, sx), (oh, ow) = _conv_forward_setup("conv2d_forward", x, weight, bias, stride, padding)
    n_, c_, _, _ = xp.shape
    o_ = weight.shape[0]
    out = np.zeros((n_, o_, oh, ow), dtype=xp.dtype)
    for n in range(n_):
        for o in range(o_):
            for c in range(c_):
                stride1 = signal.correlate2d(xp[n, c], weight[o, c], mode="valid")
                out[n, o] += stride1[::sy, ::sx]
    if bias is not None:
        # tied (O,) is shared by every neuron of a map; untied (O, OH, OW) is one per neuron
        out += bias[:, None, None] if bias.ndim == 1 else bias
    return out


def _dilate(dout, sy, sx):
    """Insert (sy - 1) zero rows and (sx - 1) zero columns between the elements of dout.

    (N, O, OH, OW) -> (N, O, (OH-1)*sy + 1, (OW-1)*sx + 1): the gradient of the stride-1
    output, which is zero where the stride skipped a position.
    """
    n_, o_, oh, ow = dout.shape
    dil = np.zeros((n_, o_, (oh - 1) * sy + 1, (ow - 1) * sx + 1), dtype=dout.dtype)
    dil[:, :, ::sy, ::sx] = dout
    return dil


def conv2d_backward(x, weight, dout, stride=1, padding=0, bias="tied"):
    """Gradients of ``conv2d_forward``, the primer's ``FeatureMap.propagate_backward`` generalised.

    Args:
        x: (N, C, H, W) the forward input.
        weight: (O, C, KH, KW) the forward filters.
        dout: (N, O, OH, OW) gradient of the loss with respect to the forward output.
        stride, padding: as in the forward call.
        bias: "tied", "untied" or None: which bias the forward call had.

    Returns:
        ``(dx, dweight, dbias)``: dx (N, C, H, W), dweight (O, C, KH, KW), dbias (O,) for
        "tied" (summed over N, OH, OW), (O, OH, OW) for "untied" (summed over N), None for None.

    With dZ the stride-dilated dout (zeros where the stride skipped):
    dweight[o, c] = sum_n correlate2d(x_padded[n, c], dZ[n, o], "valid"), cropped to (KH, KW);
    dx_padded[n, c] = sum_o convolve2d(dZ[n, o], weight[o, c], "full"), then cropped to the
    unpadded input. Rows/columns past the last window that the stride reached get zero.
    """
    xp, weight, dout, (sy, sx), (ph, pw), (h, w) = _conv_backward_setup(
        "conv2d_backward", x, weight, dout, stride, padding, bias)
    n_, c_ = xp.shape[:2]
    o_, _, kh, kw = weight.shape
    dtype = xp.dtype
    dz = _dilate(dout, sy, sx)
    dh, dw = dz.shape[2:]  # (OH-1)*sy + 1 <= H + 2*ph - KH + 1, so the crops below are valid

    dweight = np.zeros(weight.shape, dtype=dtype)
    dxp = np.zeros(xp.shape, dtype=dtype)
    for n in range(n_):
        for o in range(o_):
            for c in range(c_):
                # the valid extent is (Hp - dh + 1, Wp - dw + 1) >= (KH, KW); entries past
                # (KH, KW) are offsets beyond the filter (they exist when the stride leaves
                # trailing rows/columns unread), so keep the first KH x KW
                dweight[o, c] += signal.correlate2d(xp[n, c], dz[n, o], mode="valid")[:kh, :kw]
                # full convolution covers (dh + KH - 1, dw + KW - 1) <= (Hp, Wp); the rest of
                # the padded input was never read by any window and keeps a zero gradient
                dxp[n, c, : dh + kh - 1, : dw + kw - 1] += signal.convolve2d(
                    dz[n, o], weight[o, c], mode="full"
                )
    dx = dxp[:, :, ph : ph + h, pw : pw + w].copy()  # the padding's gradient goes nowhere
    return dx, dweight, _bias_gradient(dout, bias)


# --------------------------------------------------------------------------------------------
# Convolution, naive loops: Eq. 8.20 and Eq. 8.39/8.47 neuron by neuron
# --------------------------------------------------------------------------------------------


def conv2d_forward_naive(x, weight, bias=None, stride=1, padding=0):
    """Same contract as ``conv2d_forward``, one loop iteration per output neuron (Eq. 8.20).

    out[n, o, i, j] = sum_{c, u, v} weight[o, c, u, v] * x_padded[n, c, i*sy + u, j*sx + v]
                      + bias
    """
    xp, weight, bias, (sy, sx), (oh, ow) = _conv_forward_setup("conv2d_forward_naive", x, weight, bias, stride,
                                                                padding)
    n_ = xp.shape[0]
    o_, _, kh, kw = weight.shape
    out = np.zeros((n_, o_, oh, ow), dtype=xp.dtype)
    for n in range(n_):
        for o in range(o_):
            for i in range(oh):
                for j in range(ow):
                    field = xp[n, :, i * sy : i * sy + kh, j * sx : j * sx + kw]  # (C, KH, KW)
                    value = np.sum(field * weight[o])
                    if bias is not None:
                        value += bias[o] if bias.ndim == 1 else bias[o, i, j]
                    out[n, o, i, j] = value
    return out


def conv2d_backward_naive(x, weight, dout, stride=1, padding=0, bias="tied"):
    """Same contract as ``conv2d_backward``, one loop iteration per output neuron.

    Each output neuron (n, o, i, j) read the field x_padded[n, :, i*sy : i*sy+KH, j*sx : j*sx+KW]
    through weight[o], so its gradient g = dout[n, o, i, j] flows back as
      dweight[o]      += g * field           (Eq. 8.47)
      field gradient  += g * weight[o]       (Eq. 8.39/8.40)
      dbias[o] or dbias[o, i, j] += g        (Eq. 8.36)
    """
    xp, weight, dout, (sy, sx), (ph, pw), (h, w) = _conv_backward_setup(
        "conv2d_backward_naive", x, weight, dout, stride, padding, bias)
    n_, o_, oh, ow = dout.shape
    kh, kw = weight.shape[2:]
    dtype = xp.dtype
    dxp = np.zeros(xp.shape, dtype=dtype)
    dweight = np.zeros(weight.shape, dtype=dtype)
    dbias = {None: None, "tied": np.zeros(o_, dtype), "untied": np.zeros((o_, oh, ow), dtype)}[bias]
    for n in range(n_):
        for o in range(o_):
            for i in range(oh):
                for j in range(ow):
                    g = dout[n, o, i, j]
                    rows = slice(i * sy, i * sy + kh)
                    cols = slice(j * sx, j * sx + kw)
                    dweight[o] += g * xp[n, :, rows, cols]
                    dxp[n, :, rows, cols] += g * weight[o]
                    if bias == "tied":
                        dbias[o] += g
                    elif bias == "untied":
                        dbias[o, i, j] += g
    dx = dxp[:, :, ph : ph + h, pw : pw + w].copy()
    return dx, dweight, dbias


# --------------------------------------------------------------------------------------------
# Pooling: loops over output positions, vectorised over N and C
# --------------------------------------------------------------------------------------------


def _pool_setup(owner, x, kernel_size, stride, padding):
    """Validate a pooling call. Returns ``x, (KH, KW), (sy, sx), (ph, pw), (OH, OW)``.

    Padding is at most half the window on each axis (``2*ph <= KH``), as in PyTorch: then every
    window holds at least one real input element.
    """
    x = _as_c_float(x, "x", owner, ndim=4)
    kh, kw = pair(kernel_size, "kernel_size", owner)
    sy, sx = pair(kernel_size if stride is None else stride, "stride", owner)
    ph, pw = pair(padding, "padding", owner, minimum=0)
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(
            f"{owner}: padding must be at most half the window on each axis "
            f"(2*padding <= kernel_size), got padding {(ph, pw)} with kernel_size {(kh, kw)}"
        )
    _, _, h, w = x.shape
    oh, ow = _output_hw(owner, h, w, kh, kw, sy, sx, ph, pw)
    return x, (kh, kw), (sy, sx), (ph, pw), (oh, ow)


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """Max pooling (Eq. 8.24), each map on its own.

    Args:
        x: (N, C, H, W).
        kernel_size: int or (KH, KW).
        stride: int or (sy, sx); None means kernel_size (non-overlapping windows).
        padding: int or (ph, pw), at most half the window; padded cells are -inf, so they
            never win.

    Returns:
        (N, C, OH, OW), ``OH = (H + 2*ph - KH) // sy + 1`` (likewise OW).
    """
    owner = "max_pool2d_forward"
    x, (kh, kw), (sy, sx), (ph, pw), (oh, ow) = _pool_setup(owner, x, kernel_size, stride, padding)
    xp = _pad(x, ph, pw, value=-np.inf)
    out = np.empty(x.shape[:2] + (oh, ow), dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            window = xp[:, :, i * sy : i * sy + kh, j * sx : j * sx + kw]
            out[:, :, i, j] = window.max(axis=(2, 3))
    return out


def max_pool2d_backward(x, dout, kernel_size, stride=None, padding=0):
    """Gradient of ``max_pool2d_forward`` with respect to x.

    Args:
        x: (N, C, H, W) the forward input.
        dout: (N, C, OH, OW) gradient with respect to the forward output.
        kernel_size, stride, padding: as in the forward call.

    Returns:
        dx (N, C, H, W).

    Each output's gradient goes to one input: the FIRST maximum of its window in scan order
    (row-major within the window, i.e. ``argmax`` of the flattened window); the other cells of
    the window get nothing. When windows overlap (stride < kernel_size) an input that is the
    maximum of several windows receives the sum of their gradients, exactly as the primer's
    ``MaxPoolingMap.propagate_backward`` (``a_prev_gradient[max_position] += ...``).
    """
    owner = "max_pool2d_backward"
    x, (kh, kw), (sy, sx), (ph, pw), (oh, ow) = _pool_setup(owner, x, kernel_size, stride, padding)
    n_, c_, h, w = x.shape
    dout = _check_dout(owner, dout, (n_, c_, oh, ow))
    dtype = _common_dtype(x, dout)

    xp = _pad(x, ph, pw, value=-np.inf)
    dxp = np.zeros(xp.shape, dtype=dtype)
    nn, cc = np.meshgrid(np.arange(n_), np.arange(c_), indexing="ij")
    for i in range(oh):
        for j in range(ow):
            window = xp[:, :, i * sy : i * sy + kh, j * sx : j * sx + kw]
            first_max = window.reshape(n_, c_, kh * kw).argmax(axis=2)  # first one on ties
            u, v = np.divmod(first_max, kw)
            # within one (i, j) every (n, c) is a distinct cell, so fancy-index += is safe;
            # accumulation across overlapping windows happens over the (i, j) loop
            dxp[nn, cc, i * sy + u, j * sx + v] += dout[:, :, i, j]
    # a -inf pad cell never wins over a real (finite) value, so no gradient is lost here
    return dxp[:, :, ph : ph + h, pw : pw + w].copy()


def _check_scale(owner, scale, c_):
    if scale is None:
        return None
    scale = _as_c_float(scale, "scale", owner)
    if scale.shape != (c_,):
        raise ValueError(
            f"{owner}: scale must be None or one weight per map, shape ({c_},), "
            f"got shape {scale.shape}"
        )
    return scale


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, scale=None):
    """Average pooling, or Eq. 8.22 (window sum times a per-map weight) when ``scale`` is given.

    Args:
        x: (N, C, H, W).
        kernel_size: int or (KH, KW).
        stride: int or (sy, sx); None means kernel_size.
        padding: int or (ph, pw), at most half the window; zero padding, and the padded
            zeros count: the divisor is always KH*KW (PyTorch's ``count_include_pad=True``).
        scale: None for the mean; or (C,) weights w, and then out = w[c] * window sum.

    Returns:
        (N, C, OH, OW).
    """
    owner = "avg_pool2d_forward"
    x, (kh, kw), (sy, sx), (ph, pw), (oh, ow) = _pool_setup(owner, x, kernel_size, stride, padding)
    scale = _check_scale(owner, scale, x.shape[1])
    dtype = _common_dtype(x, scale)

    xp = _pad(x.astype(dtype, copy=False), ph, pw)
    out = np.empty(x.shape[:2] + (oh, ow), dtype=dtype)
    for i in range(oh):
        for j in range(ow):
            window_sum = xp[:, :, i * sy : i * sy + kh, j * sx : j * sx + kw].sum(axis=(2, 3))
            out[:, :, i, j] = window_sum / (kh * kw) if scale is None else window_sum * scale
    return out


def avg_pool2d_backward(x, dout, kernel_size, stride=None, padding=0, scale=None):
    """Gradients of ``avg_pool2d_forward``.

    Args:
        x: (N, C, H, W) the forward input.
        dout: (N, C, OH, OW) gradient with respect to the forward output.
        kernel_size, stride, padding, scale: as in the forward call.

    Returns:
        ``(dx, dscale)``: dx (N, C, H, W); dscale None when scale is None, else (C,).

    dx (P8.3): each dout element is spread over its whole window, times 1/(KH*KW) (mean) or
    times scale[c] (Eq. 8.22); overlapping windows accumulate. Padded cells' share is dropped.
    dscale (P8.4): dscale[c] = sum over n and windows of dout * window sum.
    """
    owner = "avg_pool2d_backward"
    x, (kh, kw), (sy, sx), (ph, pw), (oh, ow) = _pool_setup(owner, x, kernel_size, stride, padding)
    n_, c_, h, w = x.shape
    dout = _check_dout(owner, dout, (n_, c_, oh, ow))
    scale = _check_scale(owner, scale, c_)
    dtype = _common_dtype(x, dout, scale)

    xp = _pad(x.astype(dtype, copy=False), ph, pw)
    dxp = np.zeros(xp.shape, dtype=dtype)
    dscale = None if scale is None else np.zeros(c_, dtype=dtype)
    for i in range(oh):
        for j in range(ow):
            rows = slice(i * sy, i * sy + kh)
            cols = slice(j * sx, j * sx + kw)
            g = dout[:, :, i, j].astype(dtype, copy=False)  # (N, C)
            if scale is None:
                dxp[:, :, rows, cols] += (g / (kh * kw))[:, :, None, None]
            else:
                dxp[:, :, rows, cols] += (g * scale)[:, :, None, None]
                dscale += (g * xp[:, :, rows, cols].sum(axis=(2, 3))).sum(axis=0)
    return dxp[:, :, ph : ph + h, pw : pw + w].copy(), dscale
