"""Argument and shape validation shared by every public entry point, and window geometry.

A layer calls in here where input enters (its public ``forward``) and once per new input shape
(its plan: ``conv_geometry``, ``pool_geometry``); the engine's internal paths never do. Every
check here raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, wrong
value) with a message that names who is complaining (``owner``, e.g. ``"Conv2D"``), the argument,
the value received and what is allowed. Kernels never validate; they trust these checks.
"""

from __future__ import annotations

import contextlib
import numbers
import threading
from typing import Any, NamedTuple

import numba as nb
import numpy as np

from . import threads as _threads
from .arrays import flat_slices

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: The largest size, stride or padding ``pair`` accepts: the largest array dimension NumPy can hold.
#: Anything beyond cannot describe a real array, and would overflow the kernels' int64 arguments.
MAX_SIZE = int(np.iinfo(np.intp).max)


class NonFiniteError(ValueError):
    """An input held NaN or Inf. A ``ValueError``; its own class so that training can tell an
    overflowing activation (a divergence) from a genuinely bad argument."""


def _prefix(owner: str) -> str:
    return f"{owner}: " if owner else ""


def check_int(value: Any, name: str, owner: str = "", minimum: int | None = None) -> int:
    """Return ``value`` as a Python int; reject bools, floats and anything below ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        allowed = f"an int >= {minimum}" if minimum is not None else "an int"
        raise TypeError(
            f"{_prefix(owner)}{name} must be {allowed}, got {value!r} ({type(value).__name__})"
        )
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{_prefix(owner)}{name} must be an int >= {minimum}, got {value}")
    return value


def pair(value: Any, name: str, owner: str = "", minimum: int = 1) -> tuple[int, int]:
    """Turn ``int | (int, int)`` into a pair of ints, each ``>= minimum``.

    >>> pair(3, "kernel_size")
    (3, 3)
    >>> pair((2, 1), "stride")
    (2, 1)
    """
    allowed = f"an int >= {minimum} or a pair of them"
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(
                f"{_prefix(owner)}{name} must be {allowed}, got {value!r} (length {len(value)})"
            )
        items = value
    elif isinstance(value, np.ndarray) and value.shape == (2,):
        items = value.tolist()
    else:
        items = (value, value)
    result = []
    for item in items:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Integral):
            raise TypeError(f"{_prefix(owner)}{name} must be {allowed}, got {value!r}")
        if int(item) < minimum:
            raise ValueError(f"{_prefix(owner)}{name} must be {allowed}, got {value!r}")
        if int(item) > MAX_SIZE:
            raise ValueError(
                f"{_prefix(owner)}{name} must be {allowed}, each at most {MAX_SIZE} "
                f"(the largest array dimension), got {value!r}"
            )
        result.append(int(item))
    return result[0], result[1]


def check_choice(value: Any, name: str, choices: tuple, owner: str = "") -> Any:
    """Return ``value`` if it is one of ``choices`` (compared with ==, strings and None allowed)."""
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return value
    raise ValueError(f"{_prefix(owner)}{name} must be one of {choices!r}, got {value!r}")


def check_float(
    value: Any,
    name: str,
    owner: str = "",
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """Return ``value`` as a Python float within the given bounds (open or closed).

    NaN is always refused; +-inf only with ``allow_inf`` (e.g. a -inf pad value for max pooling).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{_prefix(owner)}{name} must be a real number, got {value!r} ({type(value).__name__})"
        )
    value = float(value)
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    ok = not np.isnan(value) if allow_inf else np.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        kind = "a number (not NaN)" if allow_inf else "a finite number"
        raise ValueError(f"{_prefix(owner)}{name} must be {kind} in {interval}, got {value!r}")
    return value


def conv_output_size(
    size: int, kernel: int, stride: int, padding: int, padding_after: int | None = None
) -> int:
    """Output length along one axis: ``(size + 2*padding - kernel) // stride + 1`` (Eq. 8.18/8.19).

    With ``padding_after`` the two sides differ (``padding`` before, ``padding_after`` after), as
    ``"same"`` padding needs for an even kernel. The one place this formula lives.
    """
    if padding_after is None:
        padding_after = padding
    return (size + padding + padding_after - kernel) // stride + 1


Padding4 = tuple[int, int, int, int]  # (top, bottom, left, right)


def resolve_padding(
    padding: Any,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    owner: str = "",
    size: tuple[int, int] | None = None,
) -> Padding4:
    """Turn ``int | (ph, pw) | "valid" | "same"`` into ``(top, bottom, left, right)``.

    ``"same"`` gives ``ceil(H / stride)`` outputs (``H`` for stride 1), as ONNX's ``SAME_UPPER``
    and TensorFlow's ``"SAME"``: the padding ``max((ceil(H / s) - 1) * s + kernel - H, 0)`` is split
    with the extra row/column at the bottom/right, as PyTorch does for stride 1 (which is all
    PyTorch allows). With a stride it depends on the input size, so ``size`` (H, W) is needed.
    """
    if isinstance(padding, str):
        check_choice(padding, "padding", ("valid", "same"), owner)
        if padding == "valid":
            return (0, 0, 0, 0)
        if stride == (1, 1):
            (kh, kw) = kernel
            top, left = (kh - 1) // 2, (kw - 1) // 2
            return (top, kh - 1 - top, left, kw - 1 - left)
        if size is None:
            raise ValueError(
                f"{_prefix(owner)}padding='same' with stride {stride} depends on the input size"
            )
        pads = []
        for n, k, s in zip(size, kernel, stride):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return (pads[0], pads[1], pads[2], pads[3])
    ph, pw = pair(padding, "padding", owner, minimum=0)
    return (ph, ph, pw, pw)


class WindowGeometry(NamedTuple):
    """How windows of ``kernel`` move over an ``H x W`` plane; ``oh x ow`` windows fit. With
    dilation ``(dy, dx)`` (convolutions only) the window's cells are that many pixels apart, so it
    spans ``dy*(kh - 1) + 1`` rows; ``oh``/``ow`` already account for it."""

    kh: int
    kw: int
    sy: int
    sx: int
    top: int
    bottom: int
    left: int
    right: int
    oh: int
    ow: int
    dy: int = 1
    dx: int = 1


def window_geometry(
    height: int,
    width: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: Padding4,
    owner: str = "",
    what: str = "kernel",
) -> WindowGeometry:
    """Check the window fits the padded input and return the full geometry (output size
    included)."""
    (kh, kw), (sy, sx), (top, bottom, left, right) = kernel, stride, pads
    if kh > height + top + bottom or kw > width + left + right:
        raise ValueError(
            f"{_prefix(owner)}{what} size {(kh, kw)} is larger than the padded input "
            f"{(height + top + bottom, width + left + right)} (input {(height, width)}, "
            f"padding (top, bottom, left, right) = {pads}); it must fit inside"
        )
    oh = conv_output_size(height, kh, sy, top, bottom)
    ow = conv_output_size(width, kw, sx, left, right)
    return WindowGeometry(kh, kw, sy, sx, top, bottom, left, right, oh, ow)


def float_dtype(dtype: Any, name: str = "dtype", owner: str = "") -> np.dtype:
    """Accept float32 or float64 (as a type, dtype or string); reject everything else."""
    try:
        result = None if dtype is None else np.dtype(dtype)  # np.dtype(None) would be float64
    except TypeError:
        result = None
    if result is None or result not in _FLOAT_DTYPES:
        raise TypeError(f"{_prefix(owner)}{name} must be float32 or float64, got {dtype!r}")
    return result


_scans = threading.local()  # .skip: True inside finite_scans_skipped() (per thread)


def finite_scans_on() -> bool:
    """Whether ``as_float_array`` scans for NaN/Inf here (not inside ``finite_scans_skipped``)."""
    return not getattr(_scans, "skip", False)


def non_finite(name: str, owner: str = "") -> NonFiniteError:
    """The refusal of an input ``name`` that holds NaN or Inf (``as_float_array``'s)."""
    return NonFiniteError(f"{_prefix(owner)}{name} contains NaN or Inf; inputs must be finite")


def finite_scans_skipped() -> contextlib.AbstractContextManager:
    """Inside this block (in this thread), ``as_float_array`` does not scan for NaN/Inf.

    For ``Sequential``: each layer after the first gets an array made by the layer before, so
    scanning it again costs a full pass over memory (measured 8% of a LeNet training step) and
    finds nothing new; the stack checks its own input, output and gradients instead.
    """
    return _threads.LocalFlag(_scans, "skip", True)


# --------------------------------------------------------------------------- finiteness


@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def all_finite(a):
    """Whether every element of the 1-D ``a`` is finite, in one pass: ``v - v`` is 0 for a finite
    ``v`` and NaN for +-Inf and NaN, so the sum is 0 exactly when all are finite. ``reassoc`` only
    (the sum of zeros may be split over vector lanes); never ``nnan``/``ninf``, which would let the
    compiler fold ``v - v`` to 0."""
    total = a.dtype.type(0)
    for p in range(a.shape[0]):
        total += a[p] - a[p]
    return total == 0


# A scan is split over the pool from this many values on; below, handing half to a worker costs
# more than the second core saves. Measured 2026-12-04, Intel Xeon, 2 threads with the cores kept
# awake (threads.py), float32, one pass -> two halves, ms: 500k 0.03 -> 0.06-0.08, 1M 0.10 ->
# 0.07-0.08, 2M 0.27 -> 0.18, 8M 1.09 -> 0.62 (a 500k array is in L2, a 1M one is not); 3.1M
# was bimodal, 0.42 -> 0.27 or 0.48. The layer rows of bench_cnn_layers, which scan x and dout
# each step: BatchNorm2D 64x64x32x32 3.56 -> 3.19 ms, depthwise stride 2 3.63 -> 3.46.
_PARALLEL_SCAN = 1_000_000


def is_finite(a: np.ndarray) -> bool:
    """Whether every element of a float array of any shape and layout is finite, in one compiled
    pass with no temporary, split over the pool from ``_PARALLEL_SCAN`` values on: every input
    check (``as_float_array``, ``check_dout``), and training checks every gradient and parameter
    each step. Measured on 64,000 values 0.006 ms float32 / 0.014 ms float64, against 0.065 /
    0.035 ms for a float64 ``np.sum``; on a 32x96x32x32 float32 input 0.42 ms against 0.64 for
    ``np.isfinite(x).all()`` (Intel Xeon, one thread)."""
    flat = a.reshape(-1)  # a copy only where ``a`` is not contiguous
    if flat.size < _PARALLEL_SCAN or _threads.get_num_threads() == 1:
        return bool(all_finite(flat))  # on the caller's thread, not entering the pool
    parts = flat_slices(flat.size, _PARALLEL_SCAN)
    return all(_threads.parallel_map(lambda part: bool(all_finite(flat[part])), parts))


class SliceScans:
    """NaN/Inf scans of a C-contiguous batch's slices, each made by the thread that has the slice
    in hand (a strategy's per-slice hook), while it is in that core's cache, instead of a pass of
    its own over memory; ``finite()`` once the slices are done. A convolution's forward scans x so
    and its backward dout (``Conv2D.forward``, ``conv.conv2d_backward``)."""

    __slots__ = ("array", "results")

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.results = array, []

    def scan(self, s: slice) -> np.ndarray:
        """Scan ``array[s]`` and return it."""
        part = self.array[s]
        self.results.append(bool(all_finite(part.reshape(-1))))
        return part

    def finite(self) -> bool:
        """Whether every slice scanned so far was finite."""
        return all(self.results)


def as_float_array(
    x: Any,
    name: str,
    owner: str = "",
    ndim: int | None = None,
    dtype: np.dtype | None = None,
    finite: bool = True,
) -> np.ndarray:
    """Validate a numeric array and return it as float32/float64.

    - object, string, complex, datetime and void arrays raise ``TypeError``;
    - bool, integer and float16 arrays are converted (to ``dtype``, default float32);
    - float32/float64 arrays keep their dtype unless ``dtype`` says otherwise (no copy if not
      needed);
    - a wrong ``ndim``, an empty array or (with ``finite``, outside ``finite_scans_skipped``)
      NaN/Inf raise ``ValueError``.
    """
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged nested lists and the like
            raise TypeError(
                f"{_prefix(owner)}{name} must be a numeric array, got {type(x).__name__}: {exc}"
            ) from None
    if x.dtype.kind not in "biuf":
        raise TypeError(
            f"{_prefix(owner)}{name} must be a real numeric array (bool, int or float), "
            f"got dtype {x.dtype}"
        )
    if ndim is not None and x.ndim != ndim:
        raise ValueError(
            f"{_prefix(owner)}{name} must be {ndim}-D, got {x.ndim}-D array of shape {x.shape}"
        )
    if x.size == 0:
        raise ValueError(f"{_prefix(owner)}{name} must not be empty, got shape {x.shape}")
    if dtype is None:
        dtype = x.dtype if x.dtype in _FLOAT_DTYPES else np.dtype(np.float32)
    x = x.astype(dtype, copy=False)
    if finite and finite_scans_on() and not is_finite(x):
        raise non_finite(name, owner)
    return x


def check_input_channels(x: np.ndarray, expected: int, owner: str, name: str = "x") -> None:
    """Raise if an NCHW array does not have ``expected`` channels."""
    if x.shape[1] != expected:
        raise ValueError(
            f"{owner}: {name} must have {expected} channels (shape (N, {expected}, H, W)), "
            f"got shape {x.shape}"
        )


def check_dout(dout: Any, expected: tuple[int, ...], dtype: np.dtype, owner: str,
               finite: bool = True) -> np.ndarray:
    """Validate an upstream gradient: numeric, finite (unless ``finite`` is False: the caller
    scans it), cast to ``dtype``, shaped like the output."""
    dout = as_float_array(dout, "dout", owner, dtype=dtype, finite=finite)
    if dout.shape != tuple(expected):
        raise ValueError(
            f"{owner}: dout must have the output's shape {tuple(expected)}, got {dout.shape}"
        )
    return dout


def dilated_geometry(
    height: int,
    width: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: Any,
    owner: str,
) -> WindowGeometry:
    """The geometry of a (dilated) kernel: its span ``dil*(k - 1) + 1`` must fit the padded input,
    and ``"same"`` pads the span (``resolve_padding``: the extra cell at the bottom/right)."""
    span = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    pads = resolve_padding(padding, span, stride, owner, size=(height, width))
    what = (
        "kernel"
        if dilation == (1, 1)
        else f"kernel {tuple(kernel)} with dilation {tuple(dilation)}: its span"
    )
    g = window_geometry(height, width, span, stride, pads, owner, what=what)
    return g._replace(kh=kernel[0], kw=kernel[1], dy=dilation[0], dx=dilation[1])


def check_nchw(x_shape: tuple[int, ...], channels: int | None, owner: str, name: str = "x") -> None:
    """Raise unless ``x_shape`` is (N, C, H, W) with ``channels`` channels (any, if None): the
    shape checks of ``as_float_array(ndim=4)`` and ``check_input_channels``, on a shape."""
    if len(x_shape) != 4:
        raise ValueError(
            f"{_prefix(owner)}{name} must be 4-D, got {len(x_shape)}-D array of shape "
            f"{tuple(x_shape)}"
        )
    if channels is not None and x_shape[1] != channels:
        raise ValueError(
            f"{owner}: {name} must have {channels} channels (shape (N, {channels}, H, W)), "
            f"got shape {tuple(x_shape)}"
        )


def conv_geometry(
    x_shape: tuple[int, ...],
    channels: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: Any,
    owner: str,
) -> WindowGeometry:
    """A convolution layer's plan check for an input shape, in one call: ``x_shape`` is (N,
    ``channels``, H, W) and the (dilated) kernel fits it; returns its geometry."""
    check_nchw(x_shape, channels, owner)
    return dilated_geometry(x_shape[2], x_shape[3], kernel, stride, dilation, padding, owner)


def pool_plan(
    x_shape: tuple[int, ...],
    channels: int | None,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    owner: str,
    ceil_mode: bool = False,
    dilation: Any = 1,
) -> WindowGeometry:
    """A pooling layer's plan check for an input shape, in one call: ``x_shape`` is (N, C, H, W)
    (C == ``channels`` unless None) and the window fits; returns its geometry."""
    check_nchw(x_shape, channels, owner)
    return pool_geometry(x_shape[2], x_shape[3], kernel, stride, padding, owner, ceil_mode,
                         dilation)


def pool_geometry(
    height: int, width: int, kernel_size: Any, stride: Any, padding: Any, owner: str,
    ceil_mode: bool = False, dilation: Any = 1,
) -> WindowGeometry:
    """Window geometry of a pooling layer, as PyTorch's: stride defaults to the window; padding
    at most half of it; ``dilation`` spaces the window's cells (it spans ``d*(k - 1) + 1``).

    ``ceil_mode``: the output size rounds up, ``ceil((H + 2p - span) / s) + 1``, less one if the
    last window would start in the bottom padding; the windows that overhang the padded input are
    expressed as extra padding at the bottom / right (``g.bottom - g.top`` cells), where a max
    pool reads -inf and an average pool neither sums nor counts.
    """
    kernel = pair(kernel_size, "kernel_size", owner)
    steps = kernel if stride is None else pair(stride, "stride", owner)
    ph, pw = pair(padding, "padding", owner, minimum=0)
    dy, dx = pair(dilation, "dilation", owner)
    if ph > kernel[0] // 2 or pw > kernel[1] // 2:
        raise ValueError(
            f"{owner}: padding must be at most half the window ({kernel[0] // 2}, "
            f"{kernel[1] // 2}) for kernel_size {kernel}, got {(ph, pw)}"
        )
    span = (dy * (kernel[0] - 1) + 1, dx * (kernel[1] - 1) + 1)
    extra = [0, 0]
    if ceil_mode:
        for axis, (size, pad) in enumerate(((height, ph), (width, pw))):
            room = size + 2 * pad - span[axis]
            if room >= 0:
                count = -(-room // steps[axis]) + 1
                if (count - 1) * steps[axis] >= size + pad:  # would start in the end padding
                    count -= 1
                extra[axis] = max(0, (count - 1) * steps[axis] + span[axis] - (size + 2 * pad))
    what = "pooling window" if (dy, dx) == (1, 1) else (
        f"pooling window {kernel} with dilation {(dy, dx)}: its span")
    g = window_geometry(height, width, span, steps, (ph, ph + extra[0], pw, pw + extra[1]),
                        owner, what=what)
    # a dilated window can step over the whole input: its output would be -inf (PyTorch's too,
    # whose backward then aborts), so such a geometry is refused
    for axis, (size, pad, count, d) in enumerate(((height, ph, g.oh, dy), (width, pw, g.ow, dx))):
        for i in range(count):
            cells = range(i * steps[axis] - pad, i * steps[axis] - pad + span[axis], d)
            if not any(0 <= c < size for c in cells):
                raise ValueError(
                    f"{owner}: for an input of {height}x{width}, the window of output "
                    f"{'row' if axis == 0 else 'column'} {i} reads only padding (cells "
                    f"{list(cells)} of 0..{size - 1}), so it has no value; use less padding "
                    f"or dilation"
                )
    return g._replace(kh=kernel[0], kw=kernel[1], dy=dy, dx=dx)


def refuse_raw_integers(x: Any, owner: str) -> None:
    """Integer inputs beyond [0, 1] are almost always raw pixels (uint8 0..255): a network fed
    those trains with huge losses and no hint, so they are refused with the fix."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "iu" and x.size:
        low, high = int(x.min()), int(x.max())
        if low < 0 or high > 1:
            raise ValueError(
                f"{owner}: x holds integers from {low} to {high} (dtype {x.dtype}); the "
                f"network takes floats, images scaled to [0, 1]: pass x / 255 for 8-bit "
                f"pixels, or x.astype(np.float32) for integer features"
            )
