"""Winograd's minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
2016) for stride-1, undilated, ungrouped convolutions with a 6x6 input window: F(4x4, 3x3) for a
3x3 kernel (36 GEMMs, 4x fewer multiply-adds than im2col's one) and F(2x2, 5x5) for a 5x5 kernel
(36 GEMMs, 2.78x fewer).

With r the kernel's size and m = 7 - r the tile's, each m x m block of outputs comes from the 6x6
input window d under it (a *tile*; tiles are m apart and overlap by r - 1). For kernel g of output
map k and input map c,

    Y_k = A^T [ sum_c (G g_kc G^T) * (B^T d_c B) ] A          (* elementwise, 6x6)

with the constant matrices below: ``BT`` (6x6), the same for both, and ``G`` (6 x r), ``AT``
(m x 6) of each (``MATRICES``), all from the interpolation points 0, 1, -1, 2, -2 and infinity.
Element xi = 6i + j of the 6x6 sum over c is a matrix product over all tiles at once:

    U[xi] = (G g G^T)[xi]   (K, C)     the weight, transformed once per call
    V[xi] = (B^T d B)[xi]   (T, C)     the input, every tile (``winograd_kernels``)
    M[xi]^T = V[xi] @ U[xi]^T   (T, K)     36 GEMMs, NumPy's BLAS
    Y     = A^T M A + bias  (N, K, OH, OW)   (``winograd_kernels``, with the fused ReLU)

V and M^T hold the channels innermost, so that the transforms' loops run over a row of tiles
times the channels: long enough to vectorise even on an 8x8 map, whose NCHW rows are 8 values.
Backward is the adjoint of each of those linear steps, so it is exact (the same function's
gradient, not a second approximation):

    dM = A dY A^T per tile (K, T); dU[xi] = dM[xi] @ V[xi]; dW = G^T dU G;
    dV[xi]^T = dM[xi]^T @ U[xi] (T, C); dx = the sum over tiles of B dV B^T on each window.

Why F(4x4, 3x3) and not F(2x2, 3x3) (16 GEMMs, 2.25x fewer multiply-adds, which this module held
before): per output pixel and channel it transforms 2.25 values instead of 4 and multiplies 2.25
instead of 4, and its GEMMs are smaller and stay in cache. Measured 2026-12-02 (Intel Xeon, AVX-512,
one thread), the GEMMs of a 32x32x32x32 -> 64 layer's forward+backward: 10.2 ms against 29.6 ms;
LeNet's conv2 (64x20x12x12 -> 40, 5x5): F(2x2, 5x5)'s GEMMs 1.9-2.4 ms against im2col's 5.7.

Rounding: the transforms' entries reach 5 and 8 (B^T, A^T) and 1/24 (G), so float32 results carry
about 20x im2col's rounding: ~1e-5 of the output's largest value against ~5e-7 (measured up to
512 channels). The tests compare both with float64 references at the same tolerances;
``algorithm="im2col"`` keeps im2col's rounding.

Memory: V, kept for backward, holds 36 values per tile and channel: 2.25 per output pixel for
F(4x4, 3x3) (im2col keeps 9), 9 for F(2x2, 5x5) (im2col keeps 25). Arrays are worked on a batch
slice at a time, on the engine's pool, as in ``conv/im2col.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .. import blas
from .. import threads as _threads
from ..arrays import CORE_CACHE_BYTES, cache_slices, matmul, summed
from ..shapes import WindowGeometry
from . import sample_split, winograd_fused
from . import winograd_kernels as kernels
from .im2col import bias_columns

ALPHA = 6  # input window side; ALPHA**2 transformed planes
BT = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    dtype=np.float64,
)
# kernel size r -> (G (6 x r), A^T (m x 6)), m = 7 - r outputs per tile side
MATRICES = {
    3: (
        np.array(
            [
                [1 / 4, 0, 0],
                [-1 / 6, -1 / 6, -1 / 6],
                [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6],
                [1 / 24, -1 / 12, 1 / 6],
                [0, 0, 1],
            ]
        ),
        np.array(
            [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
            dtype=np.float64,
        ),
    ),
    5: (
        np.array(
            [
                [1 / 4, 0, 0, 0, 0],
                [-1 / 6] * 5,
                [-1 / 6, 1 / 6, -1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6, 1 / 3, 2 / 3],
                [1 / 24, -1 / 12, 1 / 6, -1 / 3, 2 / 3],
                [0, 0, 0, 0, 1],
            ]
        ),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]], dtype=np.float64),
    ),
}


def supports(
    kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], groups: int
) -> bool:
    """Whether Winograd computes this convolution: a 3x3 or 5x5 kernel, stride 1, dilation 1 (any
    groups, padding and input size: a grouped convolution's 36 products are block-diagonal, one
    GEMM per group). The layer asks at construction, ``conv2d_forward`` per call."""
    return tuple(kernel) in ((3, 3), (5, 5)) and (tuple(stride), tuple(dilation)) == (
        (1, 1),
        (1, 1),
    )


def tile(g: WindowGeometry) -> int:
    """m: the outputs per tile side, 4 for a 3x3 kernel, 2 for a 5x5 one."""
    return ALPHA + 1 - g.kh


def _kernel(name: str, g: WindowGeometry):
    """The transform ``name`` (one of ``winograd_kernels.TRANSFORMS``) compiled for this geometry's
    kernel size."""
    return kernels.compiled(name, g.kh)


def tiles(g: WindowGeometry) -> tuple[int, int]:
    """(TY, TX): tiles per column and per row, enough to cover OH x OW (the last may stick out)."""
    m = tile(g)
    return -(-g.oh // m), -(-g.ow // m)


def transform_weight(weight: np.ndarray) -> np.ndarray:
    """(K, C, r, r) -> U (36, K, C), ``U[6a + b] = (G w G^T)[a, b]``, in the weight's dtype."""
    u = np.empty((ALPHA * ALPHA, *weight.shape[:2]), dtype=weight.dtype)
    kernels.winograd_weight(np.ascontiguousarray(weight), u)
    return u


def weight_grad(du: np.ndarray, r: int) -> np.ndarray:
    """The adjoint of ``transform_weight``: dU (36, K, C) -> dW (K, C, r, r) = G^T dU G."""
    dw = np.empty((*du.shape[1:], r, r), dtype=du.dtype)
    kernels.winograd_weight_adjoint(np.ascontiguousarray(du), dw)
    return dw


def transform_input(x: np.ndarray, g: WindowGeometry) -> np.ndarray:
    """x (n, C, H, W), C-contiguous -> V (36, n*TY*TX, C)."""
    ty, tx = tiles(g)
    v = np.empty((ALPHA * ALPHA, x.shape[0] * ty * tx, x.shape[1]), dtype=x.dtype)
    _kernel("winograd_input", g)(x, g.top, g.left, ty, tx, v)
    return v


def products_layout(u: np.ndarray) -> np.ndarray:
    """U (36, K, C / groups) as the forward's products read it: U^T (36, C / groups, K),
    contiguous (V @ U^T with U^T a transposed view took 1.6-1.7x as long in OpenBLAS)."""
    return np.ascontiguousarray(u.transpose(0, 2, 1))


# A batch slice's V (its largest temporary) at most one core's second-level cache: measured
# 2026-12-06, Intel Xeon (2 MiB a core), 2 threads, a session's program alternated in one process
# (16 rounds), slices of at most 512 KiB (the engine's default) / 2 MiB: ResNet-20 at batch 64
# 22.9 -> 20.8 ms (0.91x; 3 and 4 MiB 0.996x and 1.000x of 2, 8 MiB 1.07x), vgg-bn 6.97 -> 6.63
# (0.95x; 3 MiB 1.03x of 2); longer products for OpenBLAS and fewer slices' Python. A training
# step did not move (ResNet-20 1.001x). Where the cache is 512 KiB (AMD's Zen 3), or unknown, the
# slices stay as they were; on a 1 MiB one (Zen 4) they take 1 MiB, unmeasured there (on the Xeon
# 1 MiB measured 0.963x of 512 KiB).
_SLICE_BYTES = CORE_CACHE_BYTES  # None: cache_slices' default

# a slice's forward as one compiled pass where it applies (``winograd_fused.py``); False: always
# the three steps of ``slice_forward_unfused``
_FUSED = True
# a slice's backward as one compiled call where NumPy's BLAS is callable from it; False: its steps
# from Python (``slice_backward``)
_ONE_CALL_BACKWARD = True


def fuses_inference(samples: int) -> bool:
    """Whether an inference forward (no V kept) of a batch of ``samples`` runs fused (where
    ``winograd_fused.fuses``): from 2 samples on. Measured 2026-12-06, Intel Xeon, one thread, a
    slice's forward, channels-last in and out as a session passes them, fused / unfused: 11
    samples 0.895x (16 channels at 32x32), 0.818x (32 at 16x16), 0.868x (64 at 8x8); 2 samples
    0.99x, 0.90x, 0.98x; 1 sample 1.11x, 0.84x, 1.15x (a sample's V stays in cache unfused, and
    8x8 maps have 4 tiles, too few rows for the register tile)."""
    return samples >= 2


# The 36 products of each step, block-diagonal over the groups: group g's K / G filters see only
# its C / G channels (``groups == 1``: one product of each pair).


def output_products(v: np.ndarray, ut: np.ndarray, groups: int) -> np.ndarray:
    """M^T (36, T, K) = V (36, T, C) @ U^T (36, C / groups, K)."""
    if groups == 1:
        return matmul(v, ut)
    tiles_, cg, k = v.shape[1], ut.shape[1], ut.shape[2]
    mt = np.empty((v.shape[0], tiles_, k), dtype=v.dtype)
    np.matmul(
        v.reshape(v.shape[0], tiles_, groups, cg).transpose(0, 2, 1, 3),
        ut.reshape(ut.shape[0], cg, groups, k // groups).transpose(0, 2, 1, 3),
        out=mt.reshape(v.shape[0], tiles_, groups, k // groups).transpose(0, 2, 1, 3),
    )
    return mt


def weight_products(dm: np.ndarray, v: np.ndarray, groups: int) -> np.ndarray:
    """dU (36, K, C / groups) = dM (36, K, T) @ V (36, T, C)."""
    if groups == 1:
        return matmul(dm, v)
    k, tiles_, cg = dm.shape[1], dm.shape[2], v.shape[2] // groups
    du = matmul(
        dm.reshape(dm.shape[0], groups, k // groups, tiles_),
        v.reshape(v.shape[0], tiles_, groups, cg).transpose(0, 2, 1, 3),
    )
    return du.reshape(dm.shape[0], k, cg)


def input_products(u: np.ndarray, dm: np.ndarray, groups: int) -> np.ndarray:
    """dV^T (36, T, C) = dM^T @ U: dM (36, K, T), U (36, K, C / groups)."""
    if groups == 1:
        return matmul(dm.transpose(0, 2, 1), u)
    k, cg, tiles_ = u.shape[1], u.shape[2], dm.shape[2]
    dvt = np.empty((dm.shape[0], tiles_, groups * cg), dtype=np.result_type(dm, u))
    np.matmul(
        dm.reshape(dm.shape[0], groups, k // groups, tiles_).transpose(0, 1, 3, 2),
        u.reshape(u.shape[0], groups, k // groups, cg),
        out=dvt.reshape(dm.shape[0], tiles_, groups, cg).transpose(0, 2, 1, 3),
    )
    return dvt


# the output kernels' "no shortcut to add", per dtype: empty, of a shortcut's type (four
# dimensions, C-contiguous), so that one compiled kernel a dtype serves both (each signature is
# another compilation of several seconds)
_NO_SKIP = {np.dtype(t): np.empty((0, 0, 0, 0), dtype=t) for t in (np.float32, np.float64)}


def slice_forward(x: np.ndarray, p: ForwardPlan, out: np.ndarray,
                  skip: np.ndarray | None = None, keep: bool = True) -> np.ndarray | None:
    """One batch slice of ``p``'s forward: ``out`` (n, K, OH, OW) (written) = f(conv(x) + bias
    [+ skip]) from x (n, C, H, W); ``skip``: None, or of out's shape and dtype, C-contiguous.
    Returns V (36, n*TY*TX, C), for ``slice_backward``, if ``keep``, else None. (x and out
    channels-last where ``p`` was planned so.) Without ``keep``, where ``p.fused``, the slice
    runs as one compiled pass (``winograd_fused.py``), and where ``p.split``, its one sample in two
    threads' halves (``sample_split.py``); the slow twin of both is ``slice_forward_unfused``."""
    if keep or p.fused is None:
        if not keep and p.split is not None and sample_split.forward(
                p.split, x, p.geometry.top, p.geometry.left, p.ty, p.tx, p.relu, skip, out):
            return None
        v = slice_forward_unfused(x, p, out, skip)
        return v if keep else None
    p.fused(x, p.geometry.top, p.geometry.left, p.ty, p.tx, p.ut, p.bias2, p.relu,
            _NO_SKIP[out.dtype] if skip is None else skip, out, p.chunk, *p.layout)
    return None


def slice_forward_unfused(x: np.ndarray, p: ForwardPlan, out: np.ndarray,
                          skip: np.ndarray | None = None) -> np.ndarray:
    """``slice_forward`` as three steps over the whole slice: the input transform (V), the 36
    products in one BLAS call, the output transform. Returns V."""
    channels = p.ut.shape[1] * p.groups
    v = np.empty((ALPHA * ALPHA, x.shape[0] * p.ty * p.tx, channels), dtype=x.dtype)
    p.input_kernel(x, p.geometry.top, p.geometry.left, p.ty, p.tx, v)
    p.output_kernel(output_products(v, p.ut, p.groups), p.ty, p.tx, p.bias2, p.relu,
                    _NO_SKIP[out.dtype] if skip is None else skip, out)
    return v


def slice_backward(
    dout: np.ndarray,
    y: np.ndarray | None,
    v: np.ndarray | None,
    u: np.ndarray,
    g: WindowGeometry,
    dx: np.ndarray | None,
    groups: int = 1,
    shortcut: tuple[np.ndarray, np.ndarray] | None = None,
    x: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One batch slice's gradients: dout (n, K, OH, OW), C-contiguous; y: the forward's output when
    it fused a ReLU (its derivative is ``y > 0``), else None; V from ``slice_forward``, or None
    and x (n, C, H, W), C-contiguous, to make it again from; U (36, K, C / groups). Writes ``dx``
    (n, C, H, W) when it is given, plus ``g`` where ``out`` > 0 for ``shortcut=(g, out)`` (each
    of dx's shape, C-contiguous: ``conv2d_backward``'s). Returns (dU (36, K, C / groups), tied
    bias gradient (K,), float64); ``weight_grad`` turns the slices' summed dU into dW. With groups
    1, at least 2 filters, channels and tiles, and NumPy's own BLAS callable (``blas.library``),
    the steps run as one compiled call (``winograd_fused.winograd_backward_*``: the same
    products, so the same bits)."""
    ty, tx = tiles(g)
    tiles_ = dout.shape[0] * ty * tx
    # (a product with one row or column NumPy computes as a vector product, not a GEMM: other bits)
    general = min(dout.shape[1], u.shape[2], tiles_) >= 2
    library = blas.library() if groups == 1 and general and _ONE_CALL_BACKWARD else None
    dm = np.empty((ALPHA * ALPHA, dout.shape[1], tiles_), dtype=dout.dtype)
    tied = np.empty(dout.shape[1], dtype=np.float64)
    if library is not None:
        channels = u.shape[2]
        du = np.empty((ALPHA * ALPHA, dout.shape[1], channels), dtype=dout.dtype)
        none = _NO_SKIP[dout.dtype]
        if v is None:
            v = np.empty((ALPHA * ALPHA, tiles_, channels), dtype=dout.dtype)
        else:
            x = none
        skip_grad, skip_out = shortcut if shortcut is not None else (none, none)
        getattr(winograd_fused, f"winograd_backward_{kernels.VARIANTS[g.kh]}")(
            dout, dout if y is None else y, y is not None, x, g.top, g.left, ty, tx, u, library,
            skip_grad, skip_out, none if dx is None else dx, dm, v, du, tied,
        )
        return du, tied
    if v is None:
        v = transform_input(x, g)
    _kernel("winograd_output_adjoint", g)(
        dout, dout if y is None else y, y is not None, ty, tx, dm, tied
    )
    du = weight_products(dm, v, groups)
    if dx is not None:
        skip_grad, skip_out = (shortcut if shortcut is not None
                               else (_NO_SKIP[dx.dtype], _NO_SKIP[dx.dtype]))
        _kernel("winograd_input_adjoint", g)(
            input_products(u, dm, groups), g.top, g.left, ty, tx, skip_grad, skip_out, dx
        )
    return du, tied


# --------------------------------------------------------------------------- the strategy


class WinogradCache(NamedTuple):
    """What backward needs of a Winograd convolution."""

    x_shape: tuple[int, int, int, int]
    weight: np.ndarray
    bias_shape: tuple[int, ...] | None
    geometry: WindowGeometry
    owner: str
    transformed: np.ndarray  # the transformed weight U (36, K, C / groups)
    v: list[np.ndarray] | None  # each slice's transformed input V; None: rebuilt from x
    x: np.ndarray | None  # the input, kept instead of V (keep=False)
    slices: list[slice]
    out: np.ndarray | None  # relu=True: the output, whose sign is ReLU's derivative
    groups: int = 1


class ForwardPlan(NamedTuple):
    """A Winograd forward bound to an input shape and a weight: all but the input, made once by
    ``plan_forward`` and run by ``run_forward`` (per call in training, once per batch size in a
    session's program, ``program.py``)."""

    geometry: WindowGeometry
    out_shape: tuple[int, int, int, int]  # (N, K, OH, OW); channels-last or pooled: see plan
    bias2: np.ndarray  # (K, 1) tied or (K, OH*OW) untied (``bias_columns``)
    u: np.ndarray  # U (36, K, C / groups), the transformed weight
    ut: np.ndarray  # U^T (36, C / groups, K), as the products read it (``products_layout``)
    groups: int
    relu: bool
    ty: int  # tiles per column and per row (``tiles``)
    tx: int
    slices: list[slice]  # the batch slices, each V in a core's cache (``_SLICE_BYTES``)
    input_kernel: Callable  # winograd_input_* and winograd_output_* for the kernel's size
    output_kernel: Callable
    fused: Callable | None  # winograd_fused_* where it applies (``winograd_fused.fuses``), or None
    chunk: int  # the fused kernel's samples a chunk
    layout: tuple[bool, bool, bool]  # (x_last, out_last, pool), as planned
    split: sample_split.SplitPlan | None  # a session's sample in two threads' halves, or None


def plan_forward(
    x_shape: tuple[int, int, int, int],
    weight: np.ndarray,
    bias: np.ndarray | None,
    g: WindowGeometry,
    *,
    groups: int = 1,
    relu: bool = False,
    transformed: tuple[np.ndarray, np.ndarray] | None = None,
    x_last: bool = False,
    out_last: bool = False,
    pool: bool = False,
    fuse: bool = False,
    split: bool = False,
) -> ForwardPlan:
    """The plan of ``forward``'s arguments for inputs of ``x_shape`` (N, C, H, W). ``transformed``:
    ``(U, products_layout(U))``, made once by a caller whose weight cannot change (a session's),
    else made here. ``x_last``: the input comes channels-last, (N, H, W, C); ``out_last``: the
    output (and a shortcut to join) is written channels-last, (N, OH, OW, K). The transforms keep
    channels innermost, so that these layouts spare their gather and scatter (a session's program
    passes channels-last maps from one Winograd convolution to the next). ``pool``: the output is
    max-pooled 2x2 with stride 2 in the output transform, (N, K, OH // 2, OW // 2) (a session's
    Conv2D -> ReLU -> MaxPool2D; the bias tied or none, no shortcut). ``fuse``: a slice's forward
    runs as one compiled pass where that applies (``winograd_fused.py``), and keeps no V
    (training's forward, and inference's from 2 samples on: ``fuses_inference``). ``split``: a
    batch of one sample unfused runs in two halves, the second on a pool worker lent a compiled
    loop, where that applies (``sample_split.py``: a session's). The kernels are looked up now,
    so that a profiler's wrapper of the module attribute is seen by plans made after it."""
    if pool and (out_last or (bias is not None and bias.ndim != 1)):
        raise ValueError("winograd.plan_forward: pool=True takes a tied bias or none, and writes "
                         f"NCHW; got bias of shape {np.shape(bias)}, out_last={out_last}")
    n, out_channels = x_shape[0], weight.shape[0]
    if transformed is None:
        u = transform_weight(weight)
        transformed = (u, products_layout(u))
    ty, tx = tiles(g)
    per_sample = ALPHA**2 * x_shape[1] * ty * tx * weight.itemsize
    if pool:
        out_shape = (n, out_channels, g.oh // 2, g.ow // 2)
        output = "winograd_output_pool"
    elif out_last:
        out_shape, output = (n, g.oh, g.ow, out_channels), "winograd_output_last"
    else:
        out_shape, output = (n, out_channels, g.oh, g.ow), "winograd_output"
    fused = (None if not fuse or not _FUSED
             or not winograd_fused.fuses(out_channels, groups, weight.dtype)
             else getattr(winograd_fused, f"winograd_fused_{kernels.VARIANTS[g.kh]}"))
    bias2 = bias_columns(bias, out_channels, weight.dtype)
    halves = (None if not split or fused is not None
              else sample_split.plan(x_shape, transformed[1], bias2, tile(g), g.top, ty, tx,
                                       groups, (x_last, out_last, pool), out_shape))
    return ForwardPlan(
        g, out_shape, bias2, *transformed, groups, relu, ty, tx,
        cache_slices(n, per_sample, _SLICE_BYTES),
        _kernel("winograd_input_last" if x_last else "winograd_input", g), _kernel(output, g),
        fused, winograd_fused.chunk_samples(n, per_sample), (x_last, out_last, pool), halves,
    )


def run_forward(
    p: ForwardPlan,
    x: np.ndarray,
    keep: bool = False,
    then: Callable[[slice, np.ndarray], None] | None = None,
    skip: np.ndarray | None = None,
) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """``p`` on x (N, C, H, W) of its shape (channels-last if planned so), C-contiguous in the
    weight's dtype: the output (``p.out_shape``) and, with ``keep``, each slice's V; ``then(s,
    out[s])`` after each slice. ``skip``: a Residual's shortcut of the output's shape and dtype,
    C-contiguous, added in the output transform before the plan's ReLU (as
    ``activations.add_into`` would add it after)."""
    out = np.empty(p.out_shape, dtype=p.u.dtype)

    def tiled(s: slice) -> np.ndarray | None:
        v = slice_forward(x[s], p, out[s], None if skip is None else skip[s], keep)
        if then is not None:
            then(s, out[s])
        return v

    kept = _threads.parallel_map(tiled, p.slices)
    return out, kept if keep else None


def forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None,
    g: WindowGeometry,
    *,
    groups: int = 1,
    backend: str = "numba",
    owner: str = "conv2d",
    keep: bool = True,
    relu: bool = False,
    then: Callable[[slice, np.ndarray], None] | None = None,
    transformed: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, WinogradCache]:
    """``conv2d_forward``'s Winograd strategy on checked arguments (as ``conv.im2col.forward``;
    ``supports`` holds, numba): ``plan_forward`` then ``run_forward``. ``keep=False``: V is not
    kept (the cache keeps x), and the forward is fused where it applies from 2 samples on
    (``fuses_inference``). With ``keep`` (training) the forward is fused where it applies, and
    then V is not kept either: backward makes it again from x (``winograd_fused.py`` has the
    measurement). ``transformed``: as ``plan_forward``'s."""
    p = plan_forward(x.shape, weight, bias, g, groups=groups, relu=relu, transformed=transformed,
                     fuse=keep or fuses_inference(x.shape[0]))
    keep = keep and p.fused is None
    out, kept = run_forward(p, x, keep, then)
    cache = WinogradCache(
        x.shape,
        weight,
        None if bias is None else bias.shape,
        g,
        owner,
        p.u,
        kept,
        None if keep else x,
        p.slices,
        out if relu else None,
        groups,
    )
    return out, cache


def backward(
    dout: np.ndarray | None,
    cache: WinogradCache,
    input_grad: bool = True,
    *,
    dout_of: Callable[[slice], np.ndarray] | None = None,
    dz_into: Callable[[slice, np.ndarray, np.ndarray], None] | None = None,
    shortcut: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``conv2d_backward`` of a Winograd convolution, slice by slice (``slice_backward``); ``dout``
    checked, or None and ``dout_of(s)`` per slice (``dz_into`` is the im2col layout's, unused).
    ``shortcut=(g, out)``: g where out > 0 is added to dx as each slice writes it."""
    g, weight, bias_shape, slices = cache.geometry, cache.weight, cache.bias_shape, cache.slices
    dx = np.empty(cache.x_shape, dtype=weight.dtype) if input_grad else None
    relu = cache.out is not None

    def block(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        s = slices[i]
        d = np.ascontiguousarray(dout[s]) if dout_of is None else dout_of(s)
        y = cache.out[s] if relu else None
        du, tied = slice_backward(
            d, y, None if cache.v is None else cache.v[i], cache.transformed, g,
            None if dx is None else dx[s], cache.groups,
            None if shortcut is None else (shortcut[0][s], shortcut[1][s]),
            x=None if cache.v is not None else cache.x[s],
        )
        untied = None
        if bias_shape is not None and len(bias_shape) == 3:
            untied = (d if y is None else np.where(y > 0, d, 0)).sum(axis=0)
        return du, tied, untied

    parts = _threads.parallel_map(block, list(range(len(slices))))
    dweight = weight_grad(summed([part[0] for part in parts]), weight.shape[2])
    if bias_shape is None:
        dbias = None
    elif len(bias_shape) == 1:
        dbias = sum(p[1] for p in parts).astype(weight.dtype)
    else:
        dbias = sum(p[2] for p in parts).astype(weight.dtype)
    return dx, dweight, dbias
