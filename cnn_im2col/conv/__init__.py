"""Convolution: the public forward/backward pair and the choice of strategy.

Six strategies compute the same cross-correlation (as in PyTorch and Eq. 8.20), each in its own
module with its forward/backward pair, its cache type and its Numba kernels:

- ``conv/im2col.py``: im2col + GEMM, any kernel, stride, padding, dilation and groups; with
  ``backend="numpy"`` its slow twin (stride tricks and NumPy's matmul);
- ``conv/depthwise.py``: direct kernels for ``groups == C == O`` (no im2col matrix);
- ``conv/pointwise.py``: a 1x1 kernel without padding or groups, one GEMM per sample from NCHW
  into NCHW (no im2col matrix, no layout passes);
- ``conv/direct.py``: a 3x3 or 5x5 kernel of at most 4 input channels (a first layer), from the
  input's phase planes four output maps at a time;
- ``conv/tiled.py``: any other strided kernel (groups 1), a tile of output pixels
  x output channels held in vector registers over the taps (no im2col matrix), its backward on
  the same tile;
- ``conv/dilated.py``: a dilated stride-1 convolution as the undilated one of its polyphase
  components, by Winograd, where Winograd pays for those;
- ``conv/winograd.py``: F(4x4, 3x3) or F(2x2, 5x5) for 3x3 or 5x5 kernels with stride 1,
  dilation 1 (any groups: one GEMM per group), when ``algorithm="auto"`` finds it worthwhile (per
  group) or ``"winograd"`` asks.

``conv2d_forward`` validates its arguments, works out the geometry, ``choose`` picks the strategy,
and the strategy runs on checked arrays; ``conv2d_backward`` hands the cache back to the strategy
that made it. A layer does the validation and the choice once per input shape (its plan) and calls
the strategy itself. ``owner`` names the caller in error messages (a layer passes its own name).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from ..activations import add_relu_grad
from ..im2col import BACKENDS
from ..shapes import (
    SliceScans,
    WindowGeometry,
    as_float_array,
    check_choice,
    check_dout,
    check_input_channels,
    check_int,
    dilated_geometry,
    finite_scans_on,
    non_finite,
    pair,
)
from . import depthwise, dilated, direct, im2col, pointwise, tiled, winograd

# how a "numba" convolution is lowered to GEMMs: "auto" picks (see ``choose``)
ALGORITHMS = ("auto", "im2col", "winograd")

# groups == in_channels == out_channels: the direct kernels (conv/depthwise.py) instead of one GEMM
# per channel (that module's docstring has the measurement)
_DEPTHWISE_DIRECT = True
# 1x1 kernels without padding or groups: one GEMM per sample (conv/pointwise.py) instead of im2col
_POINTWISE_DIRECT = True
# 3x3 and 5x5 kernels of at most direct.MAX_CHANNELS input channels under "auto": computed from the
# input's phase planes (conv/direct.py) instead of through a K*K*C-row im2col matrix
_FEW_CHANNELS_DIRECT = True
# other strided kernels (groups 1) under "auto": in register tiles (conv/tiled.py) instead of
# through an im2col matrix as costly to copy as its short GEMM. Measured 2026-12-05,
# Intel Xeon, 2 threads, 3x3 stride 2 pad 1, forward with ReLU, us, (N, C, H=W, O), im2col / the
# direct kernel / tiled: (64, 16, 32, 32) 1966-2172 / 1526-1549 / 754-794; (64, 32, 16, 64)
# 1304-1312 / - / 634-649; (64, 8, 32, 16) 1007 / 603 / 551; (64, 24, 32, 48) 3398 / 3177 / 2210;
# (1, 32, 16, 64) 77-79 / - / 49-52 (its operands laid out once, as a session does); a ResNet's 1x1
# stride-2 projection, im2col / tiled: (64, 16, 32, 32) 606 / 462, (64, 32, 16, 64) 480 / 362, (1,
# 16, 32, 32) 45 / 37
_STRIDED_TILED = True

# "auto" takes Winograd when both channel counts, both output sides and the batch's output pixels
# per map (N*OH*OW) reach these. Below them, the transforms' passes over the data and the GEMMs'
# short inner dimension (C), or the weight's own transforms (K*C*36 values, each call), cost more
# than the multiply-adds saved. Measured 2026-12-02, Intel Xeon (AVX-512), 2 threads, Winograd /
# im2col time, forward+backward (forward alone), (N, C, K, H=W, pad 1): (64, 1, 16, 28) 2.92;
# (64, 3, 16, 32) 1.26; (64, 8, 16, 32) 0.70-0.83 (0.99); (64, 16, 16, 32) 0.58; (32, 32, 64, 32)
# 0.58-0.63 (0.64); (64, 64, 64, 14) 0.65-0.76 (0.79); (16, 64, 64, 56) 0.41; (32, 128, 128, 8)
# 0.71-0.77 (0.88); (8, 64, 64, 8) 0.96 (0.96); (64, 64, 64, 7) 0.91; (64, 32, 32, 4) 0.87 (0.86);
# (1, 64, 64, 32) 0.54 (0.55); (1, 16, 16, 8) 1.41 (1.57); (16, 256, 256, 4) 1.23 (1.21);
# (8, 256, 256, 4) 1.62. 5x5 kernels, F(2x2, 5x5), (N, C, K, H=W, pad): (64, 20, 40, 12, 0),
# LeNet's conv2, 0.76 (0.91); (64, 8, 16, 12, 0) 0.78 (0.94); (64, 16, 16, 8, 0) 0.62;
# (32, 32, 64, 16, 2) 0.67; (8, 64, 64, 8, 2) 0.79 (0.82); (16, 64, 128, 8, 2) 0.68;
# (1, 20, 40, 12, 0) 1.46 (1.51); (64, 3, 16, 32, 2) 1.10 (1.40); (2, 128, 128, 8, 2) 1.46 (1.66):
# the same thresholds hold. With the weight transformed once and no backward (a session's
# convolutions, ``frozen``) the pixel count no longer matters: measured 2026-12-04, Intel Xeon, 2
# threads, channels-innermost transforms, Winograd / im2col forward time, (N, C, K, H=W, pad 1):
# (1, 16, 16, 8) 0.69; (1, 32, 32, 8) 0.43; (1, 64, 64, 4) 0.43; (1, 128, 128, 4) 0.75; (4, 64, 64,
# 4) 0.37; (2, 64, 64, 8) 0.45; (1, 8, 8, 16) 0.83; (8, 256, 256, 4) 0.47, where training's forward
# + backward took 1.17, 1.07, 3.51, 9.25, 1.57, 1.66, 1.05 and 2.76 of im2col's time.
AUTO_MIN_CHANNELS = 8
AUTO_MIN_SIDE = 4
AUTO_MIN_PIXELS = 512

# each strategy's cache type -> the strategy whose backward takes it
_STRATEGY_OF_CACHE = {
    im2col.Im2colCache: im2col,
    depthwise.DepthwiseCache: depthwise,
    pointwise.PointwiseCache: pointwise,
    winograd.WinogradCache: winograd,
    dilated.DilatedCache: dilated,
    tiled.TiledCache: tiled,
}

ConvCache = (
    im2col.Im2colCache | depthwise.DepthwiseCache | pointwise.PointwiseCache
    | winograd.WinogradCache | dilated.DilatedCache | tiled.TiledCache
)


class ConvPlan(NamedTuple):
    """A convolution's plan for one input shape: its geometry and the strategy module that runs it
    (``forward(x, weight, bias, geometry, ...)`` / ``backward(dout, cache, ...)``)."""

    geometry: WindowGeometry
    strategy: ModuleType


def choose(
    algorithm: str,
    backend: str,
    weight_shape: tuple[int, ...],
    g: WindowGeometry,
    groups: int,
    in_channels: int,
    batch: int,
    owner: str,
    frozen: bool = False,
) -> ModuleType:
    """The strategy for a convolution of ``batch`` samples of ``in_channels`` channels with a weight
    of ``weight_shape`` and geometry ``g`` (arguments already validated): depthwise where groups ==
    C == O (numba), pointwise for a 1x1 kernel without padding, dilation or groups (numba), direct
    for a 3x3 or 5x5 kernel of at most ``direct.MAX_CHANNELS`` input channels, groups 1 ("auto"),
    tiled for any other strided kernel, groups 1 ("auto"),
    Winograd where ``algorithm`` asks for it or ``"auto"`` finds it applies and pays
    (``winograd_pays``: at least 8 input and output channels per group, an output of at least
    4x4 and, unless ``frozen``, 512 output pixels per map in the batch), im2col elsewhere. Raises
    if ``"winograd"`` cannot. ``frozen``: for a caller that transforms the weight once and never
    runs backward (a session's)."""
    use_winograd = _use_winograd(algorithm, backend, weight_shape, g, groups, owner, batch, frozen)
    if algorithm == "winograd":
        return winograd  # asked for by name (it applies: _use_winograd raised otherwise)
    if backend == "numba" and _DEPTHWISE_DIRECT and groups == in_channels == weight_shape[0] > 1:
        return depthwise
    if backend == "numba" and _POINTWISE_DIRECT and pointwise.supports(weight_shape, g, groups):
        return pointwise
    if (algorithm == "auto" and backend == "numba" and _FEW_CHANNELS_DIRECT
            and direct.supports(weight_shape, g, groups)):
        return direct
    if (algorithm == "auto" and backend == "numba" and _STRIDED_TILED
            and tiled.supports(weight_shape, g, groups)):
        return tiled
    if (algorithm == "auto" and backend == "numba" and dilated.supports(weight_shape, g, groups)
            and winograd_pays(weight_shape[1], weight_shape[0] // groups,
                              dilated.inner_geometry(g), batch * g.dy * g.dx)):
        return dilated  # its phases' undilated convolution is one Winograd pays for
    return winograd if use_winograd else im2col


def _use_winograd(
    algorithm: str,
    backend: str,
    weight_shape: tuple[int, ...],
    g: WindowGeometry,
    groups: int,
    owner: str,
    batch: int,
    frozen: bool = False,
) -> bool:
    if algorithm == "im2col":
        return False
    fits = winograd.supports(weight_shape[2:], (g.sy, g.sx), (g.dy, g.dx), groups)
    if algorithm == "winograd":
        if backend != "numba":
            raise ValueError(
                f"{owner}: algorithm='winograd' needs backend='numba'; got backend={backend!r}"
            )
        if not fits:
            raise ValueError(
                f"{owner}: algorithm='winograd' needs a 3x3 or 5x5 kernel, stride 1 and dilation "
                f"1; got kernel {tuple(weight_shape[2:])}, stride {(g.sy, g.sx)}, "
                f"dilation {(g.dy, g.dx)}"
            )
        return True
    # per group: a grouped convolution's products are one GEMM per group
    return backend == "numba" and fits and winograd_pays(
        weight_shape[1], weight_shape[0] // groups, g, batch, frozen)


def winograd_pays(in_channels: int, out_channels: int, g: WindowGeometry, batch: int,
                  frozen: bool = False) -> bool:
    """Whether ``algorithm="auto"`` takes Winograd for a convolution it ``supports``, on a batch of
    ``batch`` samples (the thresholds above; ``frozen``: with the weight transformed once and no
    backward, at any pixel count)."""
    return (
        min(in_channels, out_channels) >= AUTO_MIN_CHANNELS
        and min(g.oh, g.ow) >= AUTO_MIN_SIDE
        and (frozen or batch * g.oh * g.ow >= AUTO_MIN_PIXELS)
    )


def conv2d_output_shape(
    input_shape: tuple[int, int, int],
    weight_shape: tuple[int, int, int, int],
    stride: Any = 1,
    padding: Any = 0,
    owner: str = "conv2d",
    dilation: Any = 1,
    groups: int = 1,
) -> tuple[int, int, int]:
    """(C, H, W) -> (O, OH, OW) for a weight of shape (O, C/groups, KH, KW); raises if the kernel
    cannot fit. ``OH = (H + pad_top + pad_bottom - dilation*(KH - 1) - 1) // stride + 1``."""
    out_channels, group_channels, kh, kw = weight_shape
    groups = _check_groups(groups, out_channels, owner)
    in_channels = group_channels * groups
    if len(input_shape) != 3 or input_shape[0] != in_channels:
        raise ValueError(
            f"{owner}: input must be ({in_channels}, H, W) (channels, height, width), "
            f"got {tuple(input_shape)}"
        )
    steps, dil = pair(stride, "stride", owner), pair(dilation, "dilation", owner)
    g = dilated_geometry(input_shape[1], input_shape[2], (kh, kw), steps, dil, padding, owner)
    return (out_channels, g.oh, g.ow)


def _check_groups(groups: Any, out_channels: int, owner: str) -> int:
    """``groups`` as an int >= 1 dividing the output channels (from a weight (O, C/groups, KH, KW)
    it always divides the input channels)."""
    groups = check_int(groups, "groups", owner, minimum=1)
    if out_channels % groups:
        raise ValueError(
            f"{owner}: groups must divide out_channels; got groups={groups} and "
            f"out_channels={out_channels}"
        )
    return groups


def _check_bias(
    bias: Any, out_shape: tuple[int, int, int], dtype: np.dtype, owner: str
) -> np.ndarray | None:
    if bias is None:
        return None
    bias = as_float_array(bias, "bias", owner, dtype=dtype)
    if bias.shape not in (out_shape[:1], out_shape):
        raise ValueError(
            f"{owner}: bias must have shape {out_shape[:1]} (tied) or {out_shape} (untied, "
            f"one per output neuron), got {bias.shape}"
        )
    return np.ascontiguousarray(bias)


def conv2d_forward(
    x: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    backend: str = "numba",
    owner: str = "conv2d",
    *,
    keep_cols: bool = True,
    dilation: Any = 1,
    groups: int = 1,
    relu: bool = False,
    then: Callable[[slice, np.ndarray], None] | None = None,
    algorithm: str = "auto",
) -> tuple[np.ndarray, ConvCache]:
    """Cross-correlate ``x`` (N, C, H, W) with ``weight`` (O, C/groups, KH, KW) and add ``bias``.

    ``bias``: ``None``; tied, shape (O,), one per feature map; or untied, shape (O, OH, OW), one per
    output neuron (Fig. 8.1). ``stride``, ``dilation``: int or pair. ``padding``: int, (ph, pw),
    ``"valid"`` or ``"same"`` (``ceil(H / stride)`` outputs, the extra cell at the end).
    ``groups``: the channels split into that many independent convolutions (PyTorch's meaning; it
    must divide C and O).
    ``relu=True``: the output is ReLU(conv), computed in the same pass (a fused Conv2D -> ReLU).
    ``x`` is cast to the weight's dtype (float32 or float64).
    Returns ``out`` (N, O, OH, OW), C-contiguous, and the cache for ``conv2d_backward``.
    ``keep_cols=False`` (inference): the im2col matrix (C/groups*KH*KW values per output position
    and group, the layer's largest array) is built a slice at a time and not kept; the cache holds
    ``x`` instead, and ``conv2d_backward`` rebuilds the matrix if it is ever called.
    ``then(s, out[s])``: called once for each batch slice ``s`` (together they cover the batch),
    right after that slice's output is written, on the thread that wrote it, while it is in cache
    (a fused Conv2D -> ReLU -> MaxPool2D pools there); it must touch only slice ``s``.
    ``algorithm`` (``"numba"`` backend): ``"im2col"``; ``"winograd"``, F(4x4, 3x3) or F(2x2, 5x5),
    for a 3x3 or 5x5 kernel with stride 1 and dilation 1 only (float32 rounding about 20x
    im2col's, ~1e-5 of the output's scale); ``"auto"`` (default): the direct depthwise,
    pointwise and few-channel 3x3 / 5x5 kernels, Winograd (for dilated kernels, on the polyphase
    components) where it applies and pays, im2col elsewhere (``choose``).
    """
    check_choice(backend, "backend", BACKENDS, owner)
    check_choice(algorithm, "algorithm", ALGORITHMS, owner)
    weight = as_float_array(weight, "weight", owner, ndim=4)
    x = as_float_array(x, "x", owner, ndim=4, dtype=weight.dtype)
    out_channels = weight.shape[0]
    groups = _check_groups(groups, out_channels, owner)
    check_input_channels(x, weight.shape[1] * groups, owner)
    steps, dil = pair(stride, "stride", owner), pair(dilation, "dilation", owner)
    g = dilated_geometry(x.shape[2], x.shape[3], weight.shape[2:], steps, dil, padding, owner)
    bias = _check_bias(bias, (out_channels, g.oh, g.ow), weight.dtype, owner)
    strategy = choose(algorithm, backend, weight.shape, g, groups, x.shape[1], x.shape[0], owner)
    return strategy.forward(
        np.ascontiguousarray(x),
        weight,
        bias,
        g,
        groups=groups,
        backend=backend,
        owner=owner,
        keep=keep_cols,
        relu=bool(relu),
        then=then,
    )


def conv2d_backward(
    dout: Any,
    cache: ConvCache,
    input_grad: bool = True,
    *,
    dout_of: Callable[[slice], np.ndarray] | None = None,
    dz_into: Callable[[slice, np.ndarray, np.ndarray], None] | None = None,
    shortcut: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of ``conv2d_forward``: ``(dx, dweight, dbias)`` with the shapes of x, weight, bias.

    ``dout`` is the gradient of the forward's output (after the fused ReLU when ``relu=True``).
    Or ``dout=None`` and ``dout_of(s)``: that gradient for batch slice ``s`` (C-contiguous, of the
    output's dtype and slice shape, already validated), computed on the thread that then uses it,
    while it is in cache (a fused MaxPool2D's backward runs there); called once per slice.
    ``dz_into(s, d_t, bias_grad)``, beside ``dout_of``: what the im2col path then makes of it,
    written directly: dZ.T (O, n*OH*OW) of slice ``s`` into ``d_t``, the fused ReLU's derivative
    applied, and its row sums into ``bias_grad`` (O,), float64 (a fused MaxPool2D routes its
    gradient there, ``pooling.max_pool2d_grad_cm_into``); the other strategies call ``dout_of``.
    ``dbias`` is None when there was no bias; ``dx`` is None with ``input_grad=False`` (not
    computed: a network's first layer never needs it).

    ``shortcut=(g, out)`` (arrays of x's shape, checked by the caller): dx gets ``g`` where
    ``out`` > 0 added, an identity shortcut's gradient through the ReLU after a
    residual block whose body starts with this convolution (``containers.Residual``). The
    Winograd strategy adds it as it writes dx (where both are C-contiguous, of x's dtype), the
    others after (``activations.add_relu_grad``); the same bits either way.
    """
    strategy = _STRATEGY_OF_CACHE[type(cache)]
    fused = (shortcut is not None and strategy is winograd and input_grad
             and all(a.shape == cache.x_shape and a.dtype == cache.weight.dtype
                     and a.flags.c_contiguous for a in shortcut))
    dx, dweight, dbias = _backward(dout, cache, strategy, input_grad, dout_of, dz_into,
                                   **({"shortcut": shortcut} if fused else {}))
    if shortcut is not None and not fused and dx is not None:
        dx = add_relu_grad(dx, shortcut[0], shortcut[1], dx.dtype)
    return dx, dweight, dbias


def _backward(dout: Any, cache: ConvCache, strategy: ModuleType, input_grad: bool,
              dout_of: Callable[[slice], np.ndarray] | None,
              dz_into: Callable[[slice, np.ndarray, np.ndarray], None] | None,
              **shortcut: Any) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``conv2d_backward`` by ``strategy``, ``dout`` checked here (its NaN/Inf scan included);
    ``shortcut``: the Winograd strategy's, passed on."""
    if dout_of is not None:
        return strategy.backward(None, cache, input_grad, dout_of=dout_of, dz_into=dz_into,
                                 **shortcut)
    g, weight = cache.geometry, cache.weight
    expected = (cache.x_shape[0], weight.shape[0], g.oh, g.ow)
    scan = finite_scans_on()
    dout = np.ascontiguousarray(check_dout(dout, expected, weight.dtype, cache.owner,
                                           finite=False))
    if not scan:
        return strategy.backward(dout, cache, input_grad, **shortcut)
    # the NaN/Inf scan rides with the strategy, as the forward's does (``Conv2D.forward``): each
    # slice scanned by the thread that has just been given it; a non-finite dout is refused as
    # ``check_dout`` refuses it, once the slices are done (nothing of the layer's is written yet)
    scans = SliceScans(dout)
    # a NaN or Inf in dout makes NaNs in the products before it is refused: not the user's to see
    # ("invalid value" is only raised from a finite dout after an overflow, which still warns)
    with np.errstate(invalid="ignore"):
        grads = strategy.backward(None, cache, input_grad, dout_of=scans.scan, **shortcut)
    if not scans.finite():
        raise non_finite("dout", cache.owner)
    return grads
