"""The compiled steps of the Winograd strategy (``winograd.py``, which holds the mathematics, the
matrices, the plan and the 36 GEMMs): the weight transform, the input and output transforms and
the adjoints of all three, for the two algorithms with a 6x6 input window (ALPHA = 6, the same
B^T): F(4x4, 3x3) (tile m = 4) and F(2x2, 5x5) (m = 2).

A tile (ty, tx) is the 6x6 input window at row m*ty - PT, column m*tx - PL, giving the m x m
outputs at (m*ty, m*tx); tiles are numbered t = (n*TY + ty)*TX + tx. Transformed arrays hold
element 6*i + j of every tile as one matrix, so that the 36 products are plain GEMMs: V, M^T and
dV^T are (36, T, C), (36, T, K) and (36, T, C), channels innermost (see ``_winograd_input``); the
output's adjoint dM is (36, K, T), and its every 1-D step runs over all of an image's tiles at
once, in flat indices, so that its loop is long enough to vectorise (loops over one row of a
32-wide image's 8 tiles ran 5x slower). A loop writes at most 6 planes at once: the planes are
often a power of two apart, and writing 16 at once thrashed one cache set (5x slower).

Each transform's body takes m as an argument; a module-level wrapper per algorithm binds it as a
constant, so that every loop that depends on it has a constant trip count (``compiled`` finds the
wrapper; each is its own function so that Numba's cache, ``cache=True``, tells them apart).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..arrays import unsigned as _u

# kernel size r -> the suffix of the transforms compiled for its tile (``winograd_input_f43``...)
VARIANTS = {3: "f43", 5: "f25"}
TRANSFORMS = (
    "winograd_input",
    "winograd_input_last",  # x channels-last (N, H, W, C): a session program's (``program.py``)
    "winograd_input_adjoint",
    "winograd_output",
    "winograd_output_last",  # out (and skip) channels-last (N, OH, OW, K)
    "winograd_output_pool",  # out 2x2 max-pooled (N, K, OH // 2, OW // 2)
    "winograd_output_adjoint",
)


def compiled(name: str, kernel_size: int):
    """The transform ``name`` (one of ``TRANSFORMS``) compiled for a kernel of ``kernel_size`` (3
    or 5), looked up when called, so that a profiler's wrapper of the module attribute is seen."""
    return globals()[f"{name}_{VARIANTS[kernel_size]}"]


# B^T's and A^T's integer entries as float32: an int literal times a float32 value is float64 in
# Numba (NumPy's promotion), so ``4 * d`` turned a float32 transform into converts and float64
# arithmetic at half the vector width; a float32 constant keeps float32 data float32 and, exact,
# promotes with float64 data.
_TWO, _FOUR, _FIVE, _EIGHT = (np.float32(k) for k in (2, 4, 5, 8))


@nb.njit(cache=True, nogil=True, inline="always")
def _bt6(d0, d1, d2, d3, d4, d5):
    """B^T @ (d0, ..., d5), B^T's rows (4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0),
    (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)."""
    p, q = d4 - _FOUR * d2, d3 - _FOUR * d1
    s, t = d4 - d2, _TWO * (d3 - d1)
    return _FOUR * d0 - _FIVE * d2 + d4, p + q, p - q, s + t, s - t, _FOUR * d1 - _FIVE * d3 + d5


@nb.njit(cache=True, nogil=True, inline="always")
def _bt6_adjoint(e0, e1, e2, e3, e4, e5):
    """B @ (e0, ..., e5): the adjoint of ``_bt6``."""
    p, q = e1 + e2, e1 - e2
    s, t = e3 + e4, e3 - e4
    return (
        _FOUR * e0,
        _FOUR * (e5 - q) - _TWO * t,
        -_FIVE * e0 - _FOUR * p - s,
        q + _TWO * t - _FIVE * e5,
        e0 + p + s,
        e5,
    )


@nb.njit(cache=True, nogil=True, inline="always")
def _at4(m0, m1, m2, m3, m4, m5):
    """A^T @ (m0, ..., m5) of F(4x4, 3x3), A^T's rows (1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0),
    (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)."""
    p, q = m1 + m2, m1 - m2
    s, t = m3 + m4, m3 - m4
    return m0 + p + s, q + _TWO * t, p + _FOUR * s, q + _EIGHT * t + m5


@nb.njit(cache=True, nogil=True, inline="always")
def _at4_adjoint(g0, g1, g2, g3):
    """A @ (g0, g1, g2, g3): the adjoint of ``_at4``."""
    p, q = g0 + g2, g1 + g3
    s, t = g0 + _FOUR * g2, _TWO * g1 + _EIGHT * g3
    return g0, p + q, p - q, s + t, s - t, g3


@nb.njit(cache=True, nogil=True, inline="always")
def _at2(m0, m1, m2, m3, m4, m5):
    """A^T @ (m0, ..., m5) of F(2x2, 5x5), A^T's rows (1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 1)."""
    return m0 + m1 + m2 + m3 + m4, m1 - m2 + _TWO * (m3 - m4) + m5


@nb.njit(cache=True, nogil=True, inline="always")
def _at2_adjoint(g0, g1):
    """A @ (g0, g1): the adjoint of ``_at2``."""
    return g0, g0 + g1, g0 - g1, g0 + _TWO * g1, g0 - _TWO * g1, g1


_SIXTH, _TWELFTH, _TWENTYFOURTH, _THIRD = (
    1 / 6,
    1 / 12,
    1 / 24,
    1 / 3,
)  # G's entries (a division is ~10x slower)


@nb.njit(cache=True, nogil=True, inline="always")
def _g3(a0, a1, a2):
    """G @ (a0, a1, a2) of F(4x4, 3x3), G's rows (1/4, 0, 0), (-1/6, -1/6, -1/6), (-1/6, 1/6, -1/6),
    (1/24, 1/12, 1/6), (1/24, -1/12, 1/6), (0, 0, 1)."""
    p, q = (a0 + a2) * _SIXTH, a0 * _TWENTYFOURTH + a2 * _SIXTH
    h, m = a1 * _SIXTH, a1 * _TWELFTH
    return 0.25 * a0, -(p + h), h - p, q + m, q - m, a2


@nb.njit(cache=True, nogil=True, inline="always")
def _g3_adjoint(b0, b1, b2, b3, b4, b5):
    """G^T @ (b0, ..., b5): the adjoint of ``_g3``."""
    p, q = b1 + b2, b3 + b4
    return (
        0.25 * b0 - p * _SIXTH + q * _TWENTYFOURTH,
        (b2 - b1) * _SIXTH + (b3 - b4) * _TWELFTH,
        (q - p) * _SIXTH + b5,
    )


@nb.njit(cache=True, nogil=True, inline="always")
def _g5(a0, a1, a2, a3, a4):
    """G @ (a0, ..., a4) of F(2x2, 5x5), G's rows (1/4, 0, 0, 0, 0), -1/6 (1, 1, 1, 1, 1),
    -1/6 (1, -1, 1, -1, 1), 1/24 (1, 2, 4, 8, 16), 1/24 (1, -2, 4, -8, 16), (0, 0, 0, 0, 1)."""
    e, o = (a0 + a2 + a4) * _SIXTH, (a1 + a3) * _SIXTH
    p = a0 * _TWENTYFOURTH + a2 * _SIXTH + a4 * (2 * _THIRD)
    q = a1 * _TWELFTH + a3 * _THIRD
    return 0.25 * a0, -(e + o), o - e, p + q, p - q, a4


@nb.njit(cache=True, nogil=True, inline="always")
def _g5_adjoint(b0, b1, b2, b3, b4, b5):
    """G^T @ (b0, ..., b5): the adjoint of ``_g5``."""
    p, q = b1 + b2, b3 + b4
    d, h = (b2 - b1) * _SIXTH, b3 - b4
    return (
        0.25 * b0 - p * _SIXTH + q * _TWENTYFOURTH,
        d + h * _TWELFTH,
        (q - p) * _SIXTH,
        d + h * _THIRD,
        q * (2 * _THIRD) - p * _SIXTH + b5,
    )


@nb.njit(cache=True, nogil=True)
def winograd_weight(w, u):
    """``u[6a + b, k, c] = (G w[k, c] G^T)[a, b]``, computed in float64, G that of the kernel's size
    r (3 or 5). w: (K, C, r, r); u: (36, K, C), both C-contiguous. Vectorised over c (u's contiguous
    axis): kernel k's r*r taps of every c are gathered, then G is applied down the kernels' columns
    and along their rows (per (k, c), with 36 strided writes each, 256 x 256 3x3 kernels took 34 ms;
    this, 2.7 ms)."""
    k_count, c_count, r = w.shape[0], w.shape[1], w.shape[2]
    plane = k_count * c_count
    wf = w.reshape(w.size)
    uf = u.reshape(u.size)
    taps = np.empty(r * r * c_count)  # taps[(r*i + j)*C + c] = w[k, c, i, j]
    t = np.empty(6 * r * c_count)  # t[(r*a + j)*C + c] = (G w[k, c])[a, j]
    for k in range(k_count):
        for q in range(r * r):
            for c in range(c_count):
                taps[_u(q * c_count + c)] = wf[_u((k * c_count + c) * r * r + q)]
        for j in range(r):  # G down each column of the kernels
            for c in range(c_count):
                s = j * c_count + c
                if r == 3:
                    g0, g1, g2, g3, g4, g5 = _g3(
                        taps[_u(s)], taps[_u(s + 3 * c_count)], taps[_u(s + 6 * c_count)]
                    )
                else:
                    g0, g1, g2, g3, g4, g5 = _g5(
                        taps[_u(s)],
                        taps[_u(s + 5 * c_count)],
                        taps[_u(s + 10 * c_count)],
                        taps[_u(s + 15 * c_count)],
                        taps[_u(s + 20 * c_count)],
                    )
                d = r * c_count
                t[_u(s)], t[_u(s + d)], t[_u(s + 2 * d)] = g0, g1, g2
                t[_u(s + 3 * d)], t[_u(s + 4 * d)], t[_u(s + 5 * d)] = g3, g4, g5
        for a in range(6):  # then G^T along each row
            o = 6 * a * plane + k * c_count
            for c in range(c_count):
                s = r * a * c_count + c
                if r == 3:
                    g0, g1, g2, g3, g4, g5 = _g3(
                        t[_u(s)], t[_u(s + c_count)], t[_u(s + 2 * c_count)]
                    )
                else:
                    g0, g1, g2, g3, g4, g5 = _g5(
                        t[_u(s)],
                        t[_u(s + c_count)],
                        t[_u(s + 2 * c_count)],
                        t[_u(s + 3 * c_count)],
                        t[_u(s + 4 * c_count)],
                    )
                uf[_u(o + c)], uf[_u(o + plane + c)], uf[_u(o + 2 * plane + c)] = g0, g1, g2
                uf[_u(o + 3 * plane + c)], uf[_u(o + 4 * plane + c)], uf[_u(o + 5 * plane + c)] = (
                    g3,
                    g4,
                    g5,
                )


@nb.njit(cache=True, nogil=True)
def winograd_weight_adjoint(du, dw):
    """The adjoint of ``winograd_weight``: ``dw[k, c] = G^T dU[k, c] G``,
    dU[a, b] = du[6a + b, k, c], computed in float64, vectorised over c as it is. du: (36, K, C);
    dw (written): (K, C, r, r)."""
    k_count, c_count, r = dw.shape[0], dw.shape[1], dw.shape[2]
    plane = k_count * c_count
    uf = du.reshape(du.size)
    wf = dw.reshape(dw.size)
    t = np.empty(6 * r * c_count)  # t[(r*a + j)*C + c] = (dU[k, c] G)[a, j]
    taps = np.empty(r * r * c_count)  # taps[(r*i + j)*C + c] = dw[k, c, i, j]
    for k in range(k_count):
        for a in range(6):  # G along each row
            o = 6 * a * plane + k * c_count
            for c in range(c_count):
                b0, b1, b2 = (
                    nb.float64(uf[_u(o + c)]),
                    uf[_u(o + plane + c)],
                    uf[_u(o + 2 * plane + c)],
                )
                b3, b4, b5 = (
                    uf[_u(o + 3 * plane + c)],
                    uf[_u(o + 4 * plane + c)],
                    uf[_u(o + 5 * plane + c)],
                )
                s = r * a * c_count + c
                if r == 3:
                    t[_u(s)], t[_u(s + c_count)], t[_u(s + 2 * c_count)] = _g3_adjoint(
                        b0, b1, b2, b3, b4, b5
                    )
                else:
                    (
                        t[_u(s)],
                        t[_u(s + c_count)],
                        t[_u(s + 2 * c_count)],
                        t[_u(s + 3 * c_count)],
                        t[_u(s + 4 * c_count)],
                    ) = _g5_adjoint(b0, b1, b2, b3, b4, b5)
        d = r * c_count
        for j in range(r):  # then G^T down each column
            for c in range(c_count):
                s = j * c_count + c
                b0, b1, b2 = t[_u(s)], t[_u(s + d)], t[_u(s + 2 * d)]
                b3, b4, b5 = t[_u(s + 3 * d)], t[_u(s + 4 * d)], t[_u(s + 5 * d)]
                if r == 3:
                    taps[_u(s)], taps[_u(s + d)], taps[_u(s + 2 * d)] = _g3_adjoint(
                        b0, b1, b2, b3, b4, b5
                    )
                else:
                    (
                        taps[_u(s)],
                        taps[_u(s + d)],
                        taps[_u(s + 2 * d)],
                        taps[_u(s + 3 * d)],
                        taps[_u(s + 4 * d)],
                    ) = _g5_adjoint(b0, b1, b2, b3, b4, b5)
        for q in range(r * r):
            for c in range(c_count):
                wf[_u((k * c_count + c) * r * r + q)] = taps[_u(q * c_count + c)]


# The channels-inner transforms' row layout (``_winograd_input``'s ``xt`` and ``r``): a padded
# row of a row of tiles, split into its m column phases of ``txp`` entries of C channels each.


@nb.njit(cache=True, nogil=True, inline="always")
def _phase_row(m, tx_count, cc):
    """(txp, ph, rl): entries a phase (tile tx reads entries tx .. tx + 5 // m), values a phase,
    values a row."""
    txp = tx_count + 5 // m
    return txp, txp * cc, m * txp * cc


@nb.njit(cache=True, nogil=True, inline="always")
def _padded_column(u, m, ph, cc):
    """Where padded column ``u`` starts in a phase-split row: phase u % m, entry u // m (so
    window column u of tile 0; tile tx's is tx*C further)."""
    return (u % m) * ph + (u // m) * cc


@nb.njit(cache=True, nogil=True, inline="always")
def _winograd_input(x, pt, pl, m, ty_count, tx_count, v, last):
    """``v[6i + j, t, c] = (B^T d B)[i, j]``, d the 6x6 window of tile t in x[n, c] (padding reads
    0), tiles ``m`` (4 or 2) apart.

    x: (N, C, H, W); v (written): (36, N*TY*TX, C); both C-contiguous. Channels innermost, so that
    every loop runs over a whole row of tiles times the channels (an NCHW row of an 8x8 map is too
    short to vectorise: the channel-major transform this replaced took 2.0x, 2.5x and 3.8x as long
    on slices of 32x32, 16x16 and 8x8 maps of 16, 32 and 64 channels; Intel Xeon, one thread,
    2026-12-04). Per row of tiles, B^T down the 6 window rows over the whole row at once, written
    with each padded row split into its m column phases (``r[i][l][e][c]`` = padded column m*e +
    l), so that window column l' of every tile of the row is one contiguous run: phase l' % m from
    entry l' // m on; then B along the window rows (``_winograd_input_rows``). A channels-last x
    is read where it lies, column by column; an NCHW x is first gathered channels-last and
    phase-split whole (``xt``). The reads in place made the channels-last transform 12-25% faster
    (2026-12-05, Intel Xeon, one thread: 32x32 maps of 16 channels 9.5 -> 8.5 us a sample at
    batch 1, 36.5 -> 31.6 us at batch 4; 8x8 maps of 64 channels 2.9 -> 2.3 us), the same bits.
    """
    if last:
        n_count, height, width, c_count = x.shape
    else:
        n_count, c_count, height, width = x.shape
    cc, hw = c_count, height * width
    txp, ph, rl = _phase_row(m, tx_count, cc)
    xf = x.reshape(x.size)
    r = np.empty(6 * rl, x.dtype)  # r[i*rl + q]: B^T's row i down the window rows, column q
    vf = v.reshape(v.size)
    plane = v.shape[1] * cc
    span = tx_count * cc
    if last:  # x's rows are read where they lie, in the phases' order
        row_len = width * cc
        zero = np.zeros(row_len, x.dtype)  # a window row outside the image
        # (the six rows are chosen here as in the NCHW loop below: an inlined helper returning
        # them made both transforms 10-15% slower, 2026-12-05, Intel Xeon)
        for n in range(n_count):
            for ty in range(ty_count):
                y0 = m * ty - pt
                s0 = (n * height + y0) * row_len
                a0, o0 = (xf, s0) if 0 <= y0 < height else (zero, 0)
                a1, o1 = (xf, s0 + row_len) if 0 <= y0 + 1 < height else (zero, 0)
                a2, o2 = (xf, s0 + 2 * row_len) if 0 <= y0 + 2 < height else (zero, 0)
                a3, o3 = (xf, s0 + 3 * row_len) if 0 <= y0 + 3 < height else (zero, 0)
                a4, o4 = (xf, s0 + 4 * row_len) if 0 <= y0 + 4 < height else (zero, 0)
                a5, o5 = (xf, s0 + 5 * row_len) if 0 <= y0 + 5 < height else (zero, 0)
                for u in range(m * txp):  # B^T down the window rows of padded column u
                    w = u - pl
                    dst = _padded_column(u, m, ph, cc)
                    if 0 <= w < width:
                        src = w * cc
                        for c in range(cc):
                            r0, r1, r2, r3, r4, r5 = _bt6(
                                a0[_u(o0 + src + c)], a1[_u(o1 + src + c)],
                                a2[_u(o2 + src + c)], a3[_u(o3 + src + c)],
                                a4[_u(o4 + src + c)], a5[_u(o5 + src + c)])
                            r[_u(dst + c)], r[_u(rl + dst + c)] = r0, r1
                            r[_u(2 * rl + dst + c)], r[_u(3 * rl + dst + c)] = r2, r3
                            r[_u(4 * rl + dst + c)], r[_u(5 * rl + dst + c)] = r4, r5
                    else:
                        for i in range(6):
                            for c in range(cc):
                                r[_u(i * rl + dst + c)] = 0.0
                _winograd_input_rows(r, m, ph, cc, rl, plane, span,
                                     (n * ty_count + ty) * tx_count, vf)
        return
    xt = np.empty(n_count * height * rl, x.dtype)
    for n in range(n_count):
        for y in range(height):
            row = (n * height + y) * rl
            for u in range(m * txp):
                w = u - pl
                dst = row + _padded_column(u, m, ph, cc)
                if 0 <= w < width:  # a gather: x's channels are hw apart
                    src = (n * cc * height + y) * width + w
                    for c in range(cc):
                        xt[_u(dst + c)] = xf[_u(src + c * hw)]
                else:
                    for c in range(cc):
                        xt[_u(dst + c)] = 0.0
    zero = np.zeros(rl, x.dtype)  # a window row outside the image
    for n in range(n_count):
        for ty in range(ty_count):
            y0 = m * ty - pt
            s0 = (n * height + y0) * rl
            a0, o0 = (xt, s0) if 0 <= y0 < height else (zero, 0)
            a1, o1 = (xt, s0 + rl) if 0 <= y0 + 1 < height else (zero, 0)
            a2, o2 = (xt, s0 + 2 * rl) if 0 <= y0 + 2 < height else (zero, 0)
            a3, o3 = (xt, s0 + 3 * rl) if 0 <= y0 + 3 < height else (zero, 0)
            a4, o4 = (xt, s0 + 4 * rl) if 0 <= y0 + 4 < height else (zero, 0)
            a5, o5 = (xt, s0 + 5 * rl) if 0 <= y0 + 5 < height else (zero, 0)
            for q in range(rl):  # B^T down the window rows of the whole row of tiles
                r0, r1, r2, r3, r4, r5 = _bt6(a0[_u(o0 + q)], a1[_u(o1 + q)], a2[_u(o2 + q)],
                                              a3[_u(o3 + q)], a4[_u(o4 + q)], a5[_u(o5 + q)])
                r[_u(q)], r[_u(rl + q)], r[_u(2 * rl + q)] = r0, r1, r2
                r[_u(3 * rl + q)], r[_u(4 * rl + q)], r[_u(5 * rl + q)] = r3, r4, r5
            _winograd_input_rows(r, m, ph, cc, rl, plane, span,
                                 (n * ty_count + ty) * tx_count, vf)


@nb.njit(cache=True, nogil=True, inline="always")
def _winograd_input_rows(r, m, ph, cc, rl, plane, span, t0, vf):
    """The second half of ``_winograd_input`` for one row of tiles, from t0 on: B along window
    row i of every tile (``r``, B^T down the window rows, phase-split) into planes 6i .. 6i + 5,
    one output plane a loop (six planes written in one loop ran 1.2x slower)."""
    for i in range(6):
        s, o = i * rl, 6 * i * plane + t0 * cc
        p0, p1 = s + _padded_column(0, m, ph, cc), s + _padded_column(1, m, ph, cc)
        p2, p3 = s + _padded_column(2, m, ph, cc), s + _padded_column(3, m, ph, cc)
        p4, p5 = s + _padded_column(4, m, ph, cc), s + _padded_column(5, m, ph, cc)
        for k in range(6):  # one output plane a loop: _bt6's other outputs are dropped
            for q in range(span):
                vf[_u(o + k * plane + q)] = _bt6(
                    r[_u(p0 + q)], r[_u(p1 + q)], r[_u(p2 + q)],
                    r[_u(p3 + q)], r[_u(p4 + q)], r[_u(p5 + q)],
                )[k]


@nb.njit(cache=True, nogil=True, inline="always")
def _winograd_input_adjoint(dvt, pt, pl, m, ty_count, tx_count, skip_grad, skip_out, dx):
    """The adjoint of ``_winograd_input``: ``dx`` (written whole) = the sum over tiles of B dV B^T,
    each on its 6x6 window (windows ``m`` apart overlap; cells in the padding are dropped), plus,
    unless ``skip_grad`` is empty, ``skip_grad`` where ``skip_out`` > 0 (an identity shortcut's
    gradient through the ReLU after its block, added as ``activations.add_relu_grad`` adds it:
    the same bits, and no pass of its own).

    dvt: (36, N*TY*TX, C), channels innermost as ``_winograd_input`` writes V; dx, skip_grad,
    skip_out: (N, C, H, W) (or both empty); all C-contiguous. Its steps in reverse, in its
    layout: per row of tiles, B along each window row of every tile times the channels at once,
    each window column added into its column phase of a row buffer (``h``, the layout of
    ``_winograd_input``'s ``r``); then B down the 6 window rows, added into a channels-last,
    phase-split copy of dx (``xt``); finally xt is scattered into dx. (The channel-major adjoint
    this replaced took 1.3x, 1.6x and 1.9x as long on slices of 32x32, 16x16 and 8x8 maps of 16,
    32 and 64 channels; Intel Xeon, one thread.)
    """
    n_count, c_count, height, width = dx.shape
    cc, hw = c_count, height * width
    txp, ph, rl = _phase_row(m, tx_count, cc)
    xt = np.zeros(n_count * height * rl, dx.dtype)
    sink = np.empty(6 * rl, dx.dtype)  # the window rows outside the image
    h = np.empty(6 * rl, dx.dtype)  # h[i*rl + q]: B along window row i, column q of the row
    d = np.empty(6 * tx_count * cc, dx.dtype)  # d[l*span + q]: window column l of the row's tiles
    vf = dvt.reshape(dvt.size)
    plane = dvt.shape[1] * cc
    span = tx_count * cc
    for n in range(n_count):
        for ty in range(ty_count):
            o = (n * ty_count + ty) * span
            for i in range(6):  # B along window row i of every tile of the row (planes 6i + k)
                s = 6 * i * plane + o
                for q in range(span):
                    d0, d1, d2, d3, d4, d5 = _bt6_adjoint(
                        vf[_u(s + q)], vf[_u(s + plane + q)], vf[_u(s + 2 * plane + q)],
                        vf[_u(s + 3 * plane + q)], vf[_u(s + 4 * plane + q)],
                        vf[_u(s + 5 * plane + q)],
                    )
                    d[_u(q)], d[_u(span + q)], d[_u(2 * span + q)] = d0, d1, d2
                    d[_u(3 * span + q)], d[_u(4 * span + q)], d[_u(5 * span + q)] = d3, d4, d5
                row = i * rl
                for q in range(rl):
                    h[_u(row + q)] = 0.0
                for col in range(6):  # window column col: phase col % m, from entry col // m
                    dst, src = row + _padded_column(col, m, ph, cc), col * span
                    for q in range(span):
                        h[_u(dst + q)] += d[_u(src + q)]
            y0 = m * ty - pt
            s0 = (n * height + y0) * rl
            a0, o0 = (xt, s0) if 0 <= y0 < height else (sink, 0)
            a1, o1 = (xt, s0 + rl) if 0 <= y0 + 1 < height else (sink, rl)
            a2, o2 = (xt, s0 + 2 * rl) if 0 <= y0 + 2 < height else (sink, 2 * rl)
            a3, o3 = (xt, s0 + 3 * rl) if 0 <= y0 + 3 < height else (sink, 3 * rl)
            a4, o4 = (xt, s0 + 4 * rl) if 0 <= y0 + 4 < height else (sink, 4 * rl)
            a5, o5 = (xt, s0 + 5 * rl) if 0 <= y0 + 5 < height else (sink, 5 * rl)
            for q in range(rl):  # then B down the window rows, into the image's rows
                x0, x1, x2, x3, x4, x5 = _bt6_adjoint(
                    h[_u(q)], h[_u(rl + q)], h[_u(2 * rl + q)], h[_u(3 * rl + q)],
                    h[_u(4 * rl + q)], h[_u(5 * rl + q)],
                )
                a0[_u(o0 + q)] += x0
                a1[_u(o1 + q)] += x1
                a2[_u(o2 + q)] += x2
                a3[_u(o3 + q)] += x3
                a4[_u(o4 + q)] += x4
                a5[_u(o5 + q)] += x5
    xf = dx.reshape(dx.size)
    for n in range(n_count):
        for y in range(height):
            row = (n * height + y) * rl
            # map by map, gathered from xt's row, which stays in cache (scattered over the maps,
            # 4 KiB apart on a 32x32 map, the writes ran 5x slower)
            for c in range(cc):
                dst = (n * cc + c) * hw + y * width
                for w in range(width):  # every column lies under a window: w + pl < m*txp
                    xf[_u(dst + w)] = xt[_u(row + _padded_column(w + pl, m, ph, cc) + c)]
    if skip_grad.size > 0:  # a pass of its own over the slice, in cache (in the gather: 5x slower)
        gf, of = skip_grad.reshape(skip_grad.size), skip_out.reshape(skip_out.size)
        zero = dx.dtype.type(0)
        for i in range(xf.size):
            xf[i] = xf[i] + (gf[i] if of[i] > zero else zero)


@nb.njit(cache=True, nogil=True, inline="always")
def _winograd_output(mt, m, ty_count, tx_count, bias, relu, skip, out, last, pool):
    """``out[n, k]``'s m x m block of tile t = f(A^T M A + bias + skip), M[i, j] = mt[6i + j, t,
    k] (f = ReLU if ``relu``; m = 4 or 2, A^T that of F(m x m, (7 - m) x (7 - m))); the last row
    and column of tiles are cut to the output's size.

    mt: (36, N*TY*TX, K) (the products' layout, channels innermost); bias: (K, 1) tied (zeros for
    none) or (K, OH*OW) untied; skip: out's shape (a Residual's shortcut, added after the bias:
    the join of a separate pass, in the same rounding) or empty (none); out (written): (N, K,
    OH, OW), or (N, OH, OW, K) if ``last``; all C-contiguous. Per row of tiles,
    over its tiles times the channels at once: A^T down the tiles' columns, then A along their rows
    into ``z`` (``z[(a*m + b)*span + tx*K + k]``: output (a, b) of tile tx, map k), then each
    output row of each map gathered from z with the bias and ReLU.

    ``pool``: out is (N, K, OH // 2, OW // 2), the 2x2 stride-2 max pool of f(...) (bias tied, no
    skip), each window inside one tile (m is even): the pool's comparisons in its order
    (``pooling.max_pool_values_2x2``), so the very values of pooling the output, which is never
    written whole.
    """
    if pool:
        n_count, k_count, oh_count, ow_count = out.shape[0], out.shape[1], 0, 0
    elif last:
        n_count, oh_count, ow_count, k_count = out.shape
    else:
        n_count, k_count, oh_count, ow_count = out.shape
    kk = k_count
    plane = mt.shape[1] * kk
    mf = mt.reshape(mt.size)
    of = out.reshape(out.size)
    sf = skip.reshape(skip.size)
    joined = skip.size > 0
    untied = bias.shape[1] > 1
    span = tx_count * kk
    r = np.empty(6 * m * span, mt.dtype)  # r[(6a + j)*span + q]: A^T's row a down column j
    z = np.empty(m * m * span, mt.dtype)
    zero = np.zeros(1, mt.dtype)[0]  # ReLU's 0 in the data's type (a float literal is float64)
    if pool:
        ph_count, pw_count = out.shape[2], out.shape[3]
        zp = np.empty((m // 2) * (m // 2) * span, mt.dtype)  # the windows' maxima, as z
        brow = np.empty(span, mt.dtype)  # the tied bias of every (tile, map) of a row: z's layout
        for q in range(span):
            brow[q] = bias[q % kk, 0]
    for n in range(n_count):
        for ty in range(ty_count):
            base = (n * ty_count + ty) * span
            for j in range(6):  # A^T down column j of every tile of the row (planes 6i + j)
                o = j * plane + base
                for q in range(span):
                    if m == 4:
                        y0, y1, y2, y3 = _at4(
                            mf[_u(o + q)], mf[_u(o + 6 * plane + q)], mf[_u(o + 12 * plane + q)],
                            mf[_u(o + 18 * plane + q)], mf[_u(o + 24 * plane + q)],
                            mf[_u(o + 30 * plane + q)],
                        )
                        r[_u(j * span + q)], r[_u((6 + j) * span + q)] = y0, y1
                        r[_u((12 + j) * span + q)], r[_u((18 + j) * span + q)] = y2, y3
                    else:
                        r[_u(j * span + q)], r[_u((6 + j) * span + q)] = _at2(
                            mf[_u(o + q)], mf[_u(o + 6 * plane + q)], mf[_u(o + 12 * plane + q)],
                            mf[_u(o + 18 * plane + q)], mf[_u(o + 24 * plane + q)],
                            mf[_u(o + 30 * plane + q)],
                        )
            for a in range(m):  # then A along row a of every tile
                s, d = 6 * a * span, m * a * span
                for q in range(span):
                    if m == 4:
                        y0, y1, y2, y3 = _at4(
                            r[_u(s + q)], r[_u(s + span + q)], r[_u(s + 2 * span + q)],
                            r[_u(s + 3 * span + q)], r[_u(s + 4 * span + q)],
                            r[_u(s + 5 * span + q)],
                        )
                        z[_u(d + q)], z[_u(d + span + q)] = y0, y1
                        z[_u(d + 2 * span + q)], z[_u(d + 3 * span + q)] = y2, y3
                    else:
                        z[_u(d + q)], z[_u(d + span + q)] = _at2(
                            r[_u(s + q)], r[_u(s + span + q)], r[_u(s + 2 * span + q)],
                            r[_u(s + 3 * span + q)], r[_u(s + 4 * span + q)],
                            r[_u(s + 5 * span + q)],
                        )
            if pool:  # each 2x2 window's maximum for every tile and map at once, then a gather
                for pa in range(min(m // 2, ph_count - (m // 2) * ty)):
                    for pb in range(m // 2):  # window (pa, pb) of each tile: z's rows 2pa, 2pa + 1
                        a0 = (2 * pa * m + 2 * pb) * span  # ... columns 2pb, 2pb + 1
                        a1 = a0 + m * span
                        d = (pa * (m // 2) + pb) * span
                        for q in range(span):
                            v0, v1 = z[_u(a0 + q)] + brow[q], z[_u(a0 + span + q)] + brow[q]
                            v2, v3 = z[_u(a1 + q)] + brow[q], z[_u(a1 + span + q)] + brow[q]
                            if relu:
                                v0 = v0 if v0 > 0 else zero
                                v1 = v1 if v1 > 0 else zero
                                v2 = v2 if v2 > 0 else zero
                                v3 = v3 if v3 > 0 else zero
                            best = v1 if v1 > v0 else v0  # the pool's order: a NaN never wins
                            best = v2 if v2 > best else best
                            zp[_u(d + q)] = v3 if v3 > best else best
                    for k in range(kk):
                        dst = ((n * kk + k) * ph_count + (m // 2) * ty + pa) * pw_count
                        src = pa * (m // 2) * span + k
                        for px in range(pw_count):  # window px: tile 2px // m, its (px % (m/2))
                            zz = (px % (m // 2)) * span + ((2 * px) // m) * kk
                            of[_u(dst + px)] = zp[_u(src + zz)]
                continue
            if last:  # each output pixel's K maps: a copy from z (k is innermost in both)
                for a in range(min(m, oh_count - m * ty)):
                    y = m * ty + a
                    for xx in range(ow_count):
                        dst = ((n * oh_count + y) * ow_count + xx) * kk
                        src = (a * m + xx % m) * span + (xx // m) * kk
                        for k in range(kk):
                            val = z[_u(src + k)] + bias[k, y * ow_count + xx if untied else 0]
                            if joined:
                                val += sf[_u(dst + k)]
                            of[_u(dst + k)] = val if not relu or val > 0 else 0.0
                continue
            for k in range(kk):  # each output row of map k: a gather from z (k is innermost)
                image = (n * kk + k) * oh_count * ow_count
                for a in range(min(m, oh_count - m * ty)):
                    y = m * ty + a
                    dst, src = image + y * ow_count, a * m * span + k
                    if untied:
                        for xx in range(ow_count):
                            of[_u(dst + xx)] = z[_u(src + (xx % m) * span + (xx // m) * kk)] + bias[
                                k, y * ow_count + xx
                            ]
                    else:
                        b0 = bias[k, 0]
                        for xx in range(ow_count):
                            of[_u(dst + xx)] = z[_u(src + (xx % m) * span + (xx // m) * kk)] + b0
                    if joined:
                        for xx in range(ow_count):
                            of[_u(dst + xx)] += sf[_u(dst + xx)]
                    if relu:
                        for xx in range(ow_count):
                            val = of[_u(dst + xx)]
                            of[_u(dst + xx)] = val if val > 0 else 0.0


@nb.njit(cache=True, nogil=True, inline="always")
def _winograd_output_adjoint(dout, y, relu, m, ty_count, tx_count, dm, bias_grad):
    """The adjoint of ``_winograd_output``'s A^T M A: ``dm[6i + j, k, t] = (A dY A^T)[i, j]``, dY
    the m x m block of dout (times ``y > 0`` if ``relu``) of tile t, zero beyond the output's edge;
    ``bias_grad[k]`` (written, float64) = the sum of that dY over the slice.

    dout, y: (N, K, OH, OW) (y unused without relu); dm (written): (36, K, N*TY*TX); all
    C-contiguous. ``_winograd_output``'s steps in reverse, map by map: dY's rows into ``z`` (its
    layout), A along the tiles' rows, then down their columns.
    """
    n_count, k_count, oh_count, ow_count = dout.shape
    tiles = ty_count * tx_count
    count = dm.shape[2]
    plane = dm.shape[1] * count
    df = dout.reshape(dout.size)
    yf = y.reshape(y.size)
    mf = dm.reshape(dm.size)
    z = np.zeros(
        m * m * count, dout.dtype
    )  # z[a*m*count + m*t + b]: dY at tile t's (a, b); 0 past the edges
    s = np.empty(
        6 * m * count, dout.dtype
    )  # s[(6a + j)*count + t]: A's row j along row a of tile t
    for k in range(k_count):
        total = 0.0
        for n in range(n_count):
            image = (n * k_count + k) * oh_count * ow_count
            for yy in range(oh_count):
                src = image + yy * ow_count
                dst = m * ((yy % m) * count + n * tiles + (yy // m) * tx_count)
                if relu:
                    for xx in range(ow_count):
                        g = df[_u(src + xx)] if yf[_u(src + xx)] > 0 else 0.0
                        z[_u(dst + xx)] = g
                        total += g
                else:
                    for xx in range(ow_count):
                        g = df[_u(src + xx)]
                        z[_u(dst + xx)] = g
                        total += g
        bias_grad[k] = total
        for a in range(m):  # A along each row of every tile
            src, dst = m * a * count, 6 * a * count
            for t in range(count):
                e = src + m * t
                if m == 4:
                    c0, c1, c2, c3, c4, c5 = _at4_adjoint(
                        z[_u(e)], z[_u(e + 1)], z[_u(e + 2)], z[_u(e + 3)]
                    )
                else:
                    c0, c1, c2, c3, c4, c5 = _at2_adjoint(z[_u(e)], z[_u(e + 1)])
                d = dst + t
                s[_u(d)], s[_u(d + count)], s[_u(d + 2 * count)] = c0, c1, c2
                s[_u(d + 3 * count)], s[_u(d + 4 * count)], s[_u(d + 5 * count)] = c3, c4, c5
        for j in range(6):  # then A down each column of every tile: planes 6i + j, i = 0..5
            o = j * plane + k * count
            for t in range(count):
                if m == 4:
                    c0, c1, c2, c3, c4, c5 = _at4_adjoint(
                        s[_u(j * count + t)],
                        s[_u((6 + j) * count + t)],
                        s[_u((12 + j) * count + t)],
                        s[_u((18 + j) * count + t)],
                    )
                else:
                    c0, c1, c2, c3, c4, c5 = _at2_adjoint(
                        s[_u(j * count + t)], s[_u((6 + j) * count + t)]
                    )
                mf[_u(o + t)] = c0
                mf[_u(o + 6 * plane + t)] = c1
                mf[_u(o + 12 * plane + t)] = c2
                mf[_u(o + 18 * plane + t)] = c3
                mf[_u(o + 24 * plane + t)] = c4
                mf[_u(o + 30 * plane + t)] = c5


# The kernels proper: each body above with its tile m a constant, so that every loop over m, 6 - m
# or m*m has a constant trip count and every branch on m is folded away (with m an argument, the
# transforms ran 1.4-1.8x slower). "f43": F(4x4, 3x3), m = 4; "f25": F(2x2, 5x5), m = 2.


@nb.njit(cache=True, nogil=True)
def winograd_input_f43(x, pt, pl, ty_count, tx_count, v):
    _winograd_input(x, pt, pl, 4, ty_count, tx_count, v, False)


@nb.njit(cache=True, nogil=True)
def winograd_input_last_f43(x, pt, pl, ty_count, tx_count, v):
    _winograd_input(x, pt, pl, 4, ty_count, tx_count, v, True)


@nb.njit(cache=True, nogil=True)
def winograd_input_f25(x, pt, pl, ty_count, tx_count, v):
    _winograd_input(x, pt, pl, 2, ty_count, tx_count, v, False)


@nb.njit(cache=True, nogil=True)
def winograd_input_last_f25(x, pt, pl, ty_count, tx_count, v):
    _winograd_input(x, pt, pl, 2, ty_count, tx_count, v, True)


@nb.njit(cache=True, nogil=True)
def winograd_input_adjoint_f43(dv, pt, pl, ty_count, tx_count, skip_grad, skip_out, dx):
    _winograd_input_adjoint(dv, pt, pl, 4, ty_count, tx_count, skip_grad, skip_out, dx)


@nb.njit(cache=True, nogil=True)
def winograd_input_adjoint_f25(dv, pt, pl, ty_count, tx_count, skip_grad, skip_out, dx):
    _winograd_input_adjoint(dv, pt, pl, 2, ty_count, tx_count, skip_grad, skip_out, dx)


@nb.njit(cache=True, nogil=True)
def winograd_output_f43(mm, ty_count, tx_count, bias, relu, skip, out):
    _winograd_output(mm, 4, ty_count, tx_count, bias, relu, skip, out, False, False)


@nb.njit(cache=True, nogil=True)
def winograd_output_last_f43(mm, ty_count, tx_count, bias, relu, skip, out):
    _winograd_output(mm, 4, ty_count, tx_count, bias, relu, skip, out, True, False)


@nb.njit(cache=True, nogil=True)
def winograd_output_pool_f43(mm, ty_count, tx_count, bias, relu, skip, out):
    _winograd_output(mm, 4, ty_count, tx_count, bias, relu, skip, out, False, True)


@nb.njit(cache=True, nogil=True)
def winograd_output_f25(mm, ty_count, tx_count, bias, relu, skip, out):
    _winograd_output(mm, 2, ty_count, tx_count, bias, relu, skip, out, False, False)


@nb.njit(cache=True, nogil=True)
def winograd_output_last_f25(mm, ty_count, tx_count, bias, relu, skip, out):
    _winograd_output(mm, 2, ty_count, tx_count, bias, relu, skip, out, True, False)


@nb.njit(cache=True, nogil=True)
def winograd_output_pool_f25(mm, ty_count, tx_count, bias, relu, skip, out):
    _winograd_output(mm, 2, ty_count, tx_count, bias, relu, skip, out, False, True)


# ``reassoc``: the float64 bias-gradient sum may be reordered, so that it vectorises.
@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def winograd_output_adjoint_f43(dout, y, relu, ty_count, tx_count, dm, bias_grad):
    _winograd_output_adjoint(dout, y, relu, 4, ty_count, tx_count, dm, bias_grad)


@nb.njit(cache=True, nogil=True, fastmath={"reassoc"})
def winograd_output_adjoint_f25(dout, y, relu, ty_count, tx_count, dm, bias_grad):
    _winograd_output_adjoint(dout, y, relu, 2, ty_count, tx_count, dm, bias_grad)
