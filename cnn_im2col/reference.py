"""Slow, obviously-right oracles that the fast im2col engine is tested and benchmarked against.

Nothing here imports the fast engine (``im2col``, ``conv``, ``functional``): an oracle that
shared code with the thing it checks would share its bugs.

Two independent convolutions, so that each one checks the other:

- ``conv2d_forward`` / ``conv2d_backward``: the primer's per-feature-map ``scipy.signal`` approach
  (``FeatureMap.feed_forward`` / ``propagate_backward``), generalised to batches, many input and
  output maps (Appendix B: sum the 2-D correlations over input maps), padding, stride and both
  bias kinds of Fig. 8.1. This is also the "per-feature-map" baseline of the benchmarks.
- ``conv2d_forward_naive`` / ``conv2d_backward_naive``: one Python loop iteration per output
  neuron, the most literal reading of Eq. 8.20 (forward) and Eq. 8.39/8.47 (backward).

- ``conv2d_forward_general`` / ``conv2d_backward_general``: PyTorch's ``dilation`` and ``groups``
  as well, one loop iteration per output position and one einsum per group. Output size with
  dilation d: ``(H + 2*ph - d*(KH - 1) - 1) // sy + 1`` (the dilated kernel spans d*(KH-1)+1 rows).

And the pooling oracles, looping over output positions (vectorised only over N and C):
``max_pool2d_forward`` / ``max_pool2d_backward`` (Eq. 8.24, the primer's ``MaxPoolingMap``) and
``avg_pool2d_forward`` / ``avg_pool2d_backward`` (the mean, or Eq. 8.22 with one weight per map,
gradients P8.3 / P8.4; ``count_include_pad`` as PyTorch's). Batch normalisation:
``batch_norm2d_forward`` / ``batch_norm2d_backward``, the textbook formulas and the chain rule
through each temporary (the engine uses the fused closed form instead).

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
    "batch_norm2d_backward",
    "batch_norm2d_forward",
    "conv2d_backward",
    "conv2d_backward_general",
    "conv2d_backward_naive",
    "conv2d_forward",
    "conv2d_forward_general",
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
    xp, weight, bias, (sy, sx), (oh, ow) = _conv_forward_setup(
        "conv2d_forward", x, weight, bias, stride, padding
    )
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
        "conv2d_backward", x, weight, dout, stride, padding, bias
    )
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
    xp, weight, bias, (sy, sx), (oh, ow) = _conv_forward_setup(
        "conv2d_forward_naive", x, weight, bias, stride, padding
    )
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
        "conv2d_backward_naive", x, weight, dout, stride, padding, bias
    )
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


def _inside_counts(h, w, kh, kw, sy, sx, ph, pw, oh, ow):
    """(OH, OW): how many cells of each window lie inside the image (not in the padding)."""
    inside = _pad(np.ones((1, 1, h, w)), ph, pw)[0, 0]
    return np.array(
        [
            [inside[i * sy : i * sy + kh, j * sx : j * sx + kw].sum() for j in range(ow)]
            for i in range(oh)
        ]
    )


def _window_weights(owner, count_include_pad, kh, kw, h, w, sy, sx, ph, pw, oh, ow):
    """(OH, OW) factor applied to each window sum before the mean or the scale: 1 when padding
    counts; KH*KW / (cells inside the image) when it does not (the mean over real cells only)."""
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(
            f"{owner}: count_include_pad must be True or False, got {count_include_pad!r}"
        )
    if count_include_pad:
        return np.ones((oh, ow))
    return (kh * kw) / _inside_counts(h, w, kh, kw, sy, sx, ph, pw, oh, ow)


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, scale=None, count_include_pad=True):
    """Average pooling, or Eq. 8.22 (window sum times a per-map weight) when ``scale`` is given.

    Args:
        x: (N, C, H, W).
        kernel_size: int or (KH, KW).
        stride: int or (sy, sx); None means kernel_size.
        padding: int or (ph, pw), at most half the window; zero padding.
        scale: None for the mean; or (C,) weights w, and then out = w[c] * window sum.
        count_include_pad: True (PyTorch's default): the padded zeros count, the divisor is
            always KH*KW. False: the divisor is the number of window cells inside the image;
            with ``scale``, the window sum is first multiplied by KH*KW / (cells inside), so
            that w = 1/(KH*KW) still gives that mean.

    Returns:
        (N, C, OH, OW).
    """
    owner = "avg_pool2d_forward"
    x, (kh, kw), (sy, sx), (ph, pw), (oh, ow) = _pool_setup(owner, x, kernel_size, stride, padding)
    scale = _check_scale(owner, scale, x.shape[1])
    dtype = _common_dtype(x, scale)
    factor = _window_weights(owner, count_include_pad, kh, kw, *x.shape[2:], sy, sx, ph, pw, oh, ow)

    xp = _pad(x.astype(dtype, copy=False), ph, pw)
    out = np.empty(x.shape[:2] + (oh, ow), dtype=dtype)
    for i in range(oh):
        for j in range(ow):
            window_sum = (
                xp[:, :, i * sy : i * sy + kh, j * sx : j * sx + kw].sum(axis=(2, 3)) * factor[i, j]
            )
            out[:, :, i, j] = window_sum / (kh * kw) if scale is None else window_sum * scale
    return out


def avg_pool2d_backward(
    x, dout, kernel_size, stride=None, padding=0, scale=None, count_include_pad=True
):
    """Gradients of ``avg_pool2d_forward``.

    Args:
        x: (N, C, H, W) the forward input.
        dout: (N, C, OH, OW) gradient with respect to the forward output.
        kernel_size, stride, padding, scale, count_include_pad: as in the forward call.

    Returns:
        ``(dx, dscale)``: dx (N, C, H, W); dscale None when scale is None, else (C,).

    dx (P8.3): each dout element is spread over its whole window, times 1/(KH*KW) (mean) or
    times scale[c] (Eq. 8.22), times the window's factor (see the forward); overlapping windows
    accumulate. Padded cells' share is dropped.
    dscale (P8.4): dscale[c] = sum over n and windows of dout * (factor * window sum).
    """
    owner = "avg_pool2d_backward"
    x, (kh, kw), (sy, sx), (ph, pw), (oh, ow) = _pool_setup(owner, x, kernel_size, stride, padding)
    n_, c_, h, w = x.shape
    dout = _check_dout(owner, dout, (n_, c_, oh, ow))
    scale = _check_scale(owner, scale, c_)
    dtype = _common_dtype(x, dout, scale)
    factor = _window_weights(owner, count_include_pad, kh, kw, h, w, sy, sx, ph, pw, oh, ow)

    xp = _pad(x.astype(dtype, copy=False), ph, pw)
    dxp = np.zeros(xp.shape, dtype=dtype)
    dscale = None if scale is None else np.zeros(c_, dtype=dtype)
    for i in range(oh):
        for j in range(ow):
            rows = slice(i * sy, i * sy + kh)
            cols = slice(j * sx, j * sx + kw)
            g = dout[:, :, i, j].astype(dtype, copy=False) * factor[i, j]  # (N, C)
            if scale is None:
                dxp[:, :, rows, cols] += (g / (kh * kw))[:, :, None, None]
            else:
                dxp[:, :, rows, cols] += (g * scale)[:, :, None, None]
                dscale += (g * xp[:, :, rows, cols].sum(axis=(2, 3))).sum(axis=0)
    return dxp[:, :, ph : ph + h, pw : pw + w].copy(), dscale


# --------------------------------------------------------------------------------------------
# Convolution with dilation and groups: loops over output positions, one einsum per group
# --------------------------------------------------------------------------------------------


def _general_setup(owner, x, weight, stride, padding, dilation, groups):
    """Validate a dilated / grouped convolution. Returns ``x, weight, (sy, sx), (ph, pw), (dy, dx),
    groups, (OH, OW)``; the weight is (O, C/groups, KH, KW) and O must be a multiple of groups."""
    x = _as_c_float(x, "x", owner, ndim=4)
    weight = _as_c_float(weight, "weight", owner, ndim=4)
    if (
        isinstance(groups, (bool, np.bool_))
        or not isinstance(groups, (int, np.integer))
        or groups < 1
    ):
        raise ValueError(f"{owner}: groups must be an int >= 1, got {groups!r}")
    groups = int(groups)
    c_, o_ = x.shape[1], weight.shape[0]
    if c_ % groups or o_ % groups:
        raise ValueError(
            f"{owner}: groups={groups} must divide the input channels ({c_}) and the output "
            f"channels ({o_})"
        )
    if weight.shape[1] != c_ // groups:
        raise ValueError(
            f"{owner}: weight must be (O, C/groups, KH, KW) = ({o_}, {c_ // groups}, KH, KW) for "
            f"{c_} input channels and groups={groups}, got shape {weight.shape}"
        )
    sy, sx = pair(stride, "stride", owner)
    ph, pw = pair(padding, "padding", owner, minimum=0)
    dy, dx = pair(dilation, "dilation", owner)
    _, _, h, w = x.shape
    _, _, kh, kw = weight.shape
    # a dilated kernel spans d*(K-1)+1 pixels: the output size is that of a kernel of that size
    oh, ow = _output_hw(
        owner,
        h,
        w,
        dy * (kh - 1) + 1,
        dx * (kw - 1) + 1,
        sy,
        sx,
        ph,
        pw,
        what="dilated kernel extent",
    )
    return x, weight, (sy, sx), (ph, pw), (dy, dx), groups, (oh, ow)


def _field(xp, i, j, kh, kw, sy, sx, dy, dx):
    """The (N, C, KH, KW) input cells that output position (i, j) reads: every dy-th row and
    dx-th column of a window starting at (i*sy, j*sx)."""
    return xp[
        :, :, i * sy : i * sy + dy * (kh - 1) + 1 : dy, j * sx : j * sx + dx * (kw - 1) + 1 : dx
    ]


def conv2d_forward_general(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Cross-correlation with PyTorch's ``dilation`` and ``groups``
    (``torch.nn.functional.conv2d``).

    Args: x: (N, C, H, W) input. weight: (O, C/groups, KH, KW) filters; filters g*O/groups ..
    (g+1)*O/groups - 1 see only the input channels g*C/groups .. (g+1)*C/groups - 1 (groups == C:
    depthwise). bias: None, tied (O,) or untied (O, OH, OW). stride: int or (sy, sx), >= 1. padding:
    int or (ph, pw), >= 0; zero padding on both sides. dilation: int or (dy, dx), >= 1: kernel cell
    (u, v) reads input pixel (i*sy + u*dy, j*sx + v*dx) of the padded input. groups: int >= 1
    dividing both C and O.

    Returns:
        (N, O, OH, OW) with ``OH = (H + 2*ph - dy*(KH - 1) - 1) // sy + 1`` (likewise OW): the
        dilated kernel spans ``dy*(KH - 1) + 1`` rows. At dilation 1 this is the usual
        ``(H + 2*ph - KH) // sy + 1``.

    out[n, o, i, j] = sum_{c in o's group, u, v} weight[o, c', u, v] * x_padded[n, c, i*sy + u*dy,
    j*sx + v*dx] (c' the index of c within its group), + bias.
    """
    owner = "conv2d_forward_general"
    x, weight, (sy, sx), (ph, pw), (dy, dx), groups, (oh, ow) = _general_setup(
        owner, x, weight, stride, padding, dilation, groups
    )
    bias = _check_bias(owner, bias, weight.shape[0], oh, ow)
    dtype = _common_dtype(x, weight, bias)
    xp = _pad(x.astype(dtype, copy=False), ph, pw)
    weight = weight.astype(dtype, copy=False)
    n_ = x.shape[0]
    o_, cg, kh, kw = weight.shape
    og = o_ // groups
    out = np.zeros((n_, o_, oh, ow), dtype=dtype)
    for i in range(oh):
        for j in range(ow):
            field = _field(xp, i, j, kh, kw, sy, sx, dy, dx)
            for g in range(groups):
                out[:, g * og : (g + 1) * og, i, j] = np.einsum(
                    "nckl,ockl->no", field[:, g * cg : (g + 1) * cg], weight[g * og : (g + 1) * og]
                )
    if bias is not None:
        out += bias[:, None, None] if bias.ndim == 1 else bias
    return out


def conv2d_backward_general(
    x, weight, dout, stride=1, padding=0, dilation=1, groups=1, bias="tied"
):
    """Gradients of ``conv2d_forward_general``: ``(dx, dweight, dbias)`` as in ``conv2d_backward``.

    Each output position (i, j) read the field F = x_padded[:, :, i*sy :: dy, j*sx :: dx] (KH x KW
    cells) through its group's filters, so with g = dout[:, group's filters, i, j]:
      dweight[group] += sum_n g[n, o] * F[n, group's channels]
      dx_padded[:, group's channels, field cells] += sum_o g[n, o] * weight[o]
      dbias as in conv2d_backward.
    """
    owner = "conv2d_backward_general"
    x, weight, (sy, sx), (ph, pw), (dy, dx), groups, (oh, ow) = _general_setup(
        owner, x, weight, stride, padding, dilation, groups
    )
    check_choice(bias, "bias", _BIAS_MODES, owner)
    dout = _check_dout(owner, dout, (x.shape[0], weight.shape[0], oh, ow))
    dtype = _common_dtype(x, weight, dout)
    h, w = x.shape[2:]
    xp = _pad(x.astype(dtype, copy=False), ph, pw)
    weight = weight.astype(dtype, copy=False)
    dout = dout.astype(dtype, copy=False)
    o_, cg, kh, kw = weight.shape
    og = o_ // groups
    dxp = np.zeros(xp.shape, dtype=dtype)
    dweight = np.zeros(weight.shape, dtype=dtype)
    for i in range(oh):
        for j in range(ow):
            field = _field(xp, i, j, kh, kw, sy, sx, dy, dx)
            dfield = _field(dxp, i, j, kh, kw, sy, sx, dy, dx)  # a view: += writes into dxp
            for g in range(groups):
                filters, channels = slice(g * og, (g + 1) * og), slice(g * cg, (g + 1) * cg)
                grad = dout[:, filters, i, j]  # (N, O/groups)
                dweight[filters] += np.einsum("no,nckl->ockl", grad, field[:, channels])
                dfield[:, channels] += np.einsum("no,ockl->nckl", grad, weight[filters])
    dx_ = dxp[:, :, ph : ph + h, pw : pw + w].copy()
    return dx_, dweight, _bias_gradient(dout, bias)


# --------------------------------------------------------------------------------------------
# Batch normalisation: the textbook formulas, and the chain rule one temporary at a time
# --------------------------------------------------------------------------------------------


def _bn_setup(owner, x, weight, bias):
    x = _as_c_float(x, "x", owner, ndim=4)
    c_ = x.shape[1]
    vectors = []
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None:
            value = _as_c_float(value, name, owner, ndim=1)
            if value.shape != (c_,):
                raise ValueError(f"{owner}: {name} must have shape ({c_},), got {value.shape}")
        vectors.append(value)
    dtype = _common_dtype(x, *vectors)
    return x.astype(dtype, copy=False), *[
        None if v is None else v.astype(dtype, copy=False) for v in vectors
    ]


def batch_norm2d_forward(
    x,
    weight=None,
    bias=None,
    running_mean=None,
    running_var=None,
    training=True,
    momentum=0.1,
    eps=1e-5,
):
    """PyTorch's ``torch.nn.functional.batch_norm`` on (N, C, H, W), without modifying anything.

    Training: per channel c, mean and BIASED variance over (N, H, W) normalise x; the returned
    running statistics are ``(1 - momentum) * running + momentum * batch`` with the UNBIASED batch
    variance (M / (M - 1) times the biased one, M = N*H*W), or None when none were given. Eval
    (``training=False``): the given running statistics normalise x and are returned unchanged.
    ``weight``/``bias`` None mean 1 and 0.

    Returns ``(y, new_running_mean, new_running_var)``.
    """
    owner = "batch_norm2d_forward"
    x, weight, bias = _bn_setup(owner, x, weight, bias)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    if training:
        mean = x.mean(axis=(0, 2, 3))
        var = ((x - mean[:, None, None]) ** 2).mean(axis=(0, 2, 3))
    else:
        if running_mean is None or running_var is None:
            raise ValueError(
                f"{owner}: eval mode (training=False) needs running_mean and running_var"
            )
        mean, var = np.asarray(running_mean), np.asarray(running_var)
    y = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + eps)
    if weight is not None:
        y = y * weight[:, None, None]
    if bias is not None:
        y = y + bias[:, None, None]
    new_mean, new_var = running_mean, running_var
    if training and running_mean is not None:
        new_mean = (1 - momentum) * np.asarray(running_mean) + momentum * mean
        new_var = (1 - momentum) * np.asarray(running_var) + momentum * var * m / (m - 1)
    return y.astype(x.dtype, copy=False), new_mean, new_var


def batch_norm2d_backward(
    x, dout, weight=None, running_mean=None, running_var=None, training=True, eps=1e-5
):
    """Gradients of ``batch_norm2d_forward``: ``(dx, dweight, dbias)`` (dweight = sum dout * xhat,
    dbias = sum dout, returned even when the forward had no weight/bias).

    Training: the chain rule through every temporary of the forward pass (xmu = x - mean, var, std,
    xhat = xmu / std), each step its own line, with no closed form: dxhat = dout*weight, dvar =
    sum(dxhat * xmu) * -1/2 (var + eps)^(-3/2), dmean = -sum(dxhat) / std + dvar * mean(-2 xmu), dx
    = dxhat / std + dvar * 2 xmu / M + dmean / M. Eval: the statistics are constants, dx = dout *
    weight / sqrt(running_var + eps) and xhat uses the running statistics.
    """
    owner = "batch_norm2d_backward"
    x, weight, _ = _bn_setup(owner, x, weight, None)
    dout = _check_dout(owner, dout, x.shape).astype(x.dtype, copy=False)
    gamma = np.ones(x.shape[1], x.dtype) if weight is None else weight
    axes = (0, 2, 3)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    if training:
        mean = x.mean(axis=axes)
        xmu = x - mean[:, None, None]
        var = (xmu**2).mean(axis=axes)
    else:
        if running_mean is None or running_var is None:
            raise ValueError(
                f"{owner}: eval mode (training=False) needs running_mean and running_var"
            )
        var = np.asarray(running_var)
        xmu = x - np.asarray(running_mean)[:, None, None]
    std = np.sqrt(var + eps)
    dxhat = dout * gamma[:, None, None]
    if training:
        xhat = xmu / std[:, None, None]
        dvar = (dxhat * xmu).sum(axis=axes) * -0.5 * (var + eps) ** -1.5
        dmean = -dxhat.sum(axis=axes) / std + dvar * (-2 * xmu).mean(axis=axes)
        dx = (
            dxhat / std[:, None, None]
            + dvar[:, None, None] * 2 * xmu / m
            + dmean[:, None, None] / m
        )
    else:
        xhat = xmu / std[:, None, None]
        dx = dxhat / std[:, None, None]
    return dx.astype(x.dtype, copy=False), (dout * xhat).sum(axis=axes), dout.sum(axis=axes)
