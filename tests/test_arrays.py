"""arrays: the GEMM split over the pool (by rows or by columns), a few rows against a transposed
matrix, and the column-blocked matmul equal one product."""

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_im2col import arrays


@pytest.mark.parametrize("rows, columns, transposed", [
    (3, 9, False), (4, 9, False), (65, 9, False),  # by rows, or whole (too few rows)
    (1, 300, False), (5, 129, True), (64, 256, True),  # by columns (b's, transposed or not)
])
def test_gemm_split_over_the_pool_equals_one_product(monkeypatch, rows, columns, transposed):
    rng = np.random.default_rng(rows)
    a = rng.standard_normal((rows, 17))
    b = rng.standard_normal((columns, 17)).T if transposed else rng.standard_normal((17, columns))
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


@settings(deadline=None, max_examples=40)
@given(rows=st.integers(1, 20), k=st.integers(1, 40), n=st.integers(1, 90),
       transposed=st.booleans(), split=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_a_few_rows_against_a_transposed_matrix_equal_one_product(rows, k, n, transposed, split,
                                                                   dtype):
    """``x @ W.T`` with 2 to ``_FEW_ROWS`` rows is taken as ``(W @ x.T).T`` (whole, or split over
    the pool by W's rows), here for every size (no product is left to the small-matrix
    kernels); any other shape or layout goes the usual way."""
    rng = np.random.default_rng(rows * 1000 + k * 10 + n)
    a = rng.standard_normal((rows, k)).astype(dtype)
    b = rng.standard_normal((n, k)).astype(dtype).T if transposed else \
        rng.standard_normal((k, n)).astype(dtype)
    taken = []
    real = arrays._few_rows
    with mock.patch.object(arrays, "_SMALL_PRODUCT", 0), \
            mock.patch.object(arrays, "_PARALLEL_GEMM_MACS", 1 if split else 10**12), \
            mock.patch.object(arrays, "_few_rows",
                              lambda *args: taken.append(1) or real(*args)):
        got = arrays.gemm(a, b)
    assert got.shape == (rows, n) and got.dtype == dtype and got.flags.c_contiguous
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, a.astype(np.float64) @ b.astype(np.float64), rtol=rtol,
                               atol=rtol * k)
    few = 2 <= rows <= arrays._FEW_ROWS and transposed and not b.flags.c_contiguous
    assert bool(taken) == few


@settings(deadline=None, max_examples=40)
@given(
    m=st.integers(1, 40), k=st.integers(1, 12), n=st.integers(1, 300), stack=st.integers(0, 3),
    dtype=st.sampled_from([np.float32, np.float64]), layout=st.sampled_from(["c", "bt", "out"]),
    block=st.sampled_from([16, 32, 100]),
)
def test_matmul_in_column_blocks_equals_one_product(m, k, n, stack, dtype, layout, block):
    # the threshold lowered, so that small products are cut into blocks of `block` columns (or
    # kept whole: transposed operands, blocks below the minimum)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(arrays, "_SMALL_PRODUCT", m * k * block)
        patch.setattr(arrays, "_MIN_BLOCK_COLUMNS", 16)
        _check_matmul(m, k, n, stack, dtype, layout)


@settings(deadline=None, max_examples=40)
@given(
    m=st.integers(1, 300), k=st.integers(1, 12), n=st.integers(1, 40), stack=st.integers(0, 3),
    dtype=st.sampled_from([np.float32, np.float64]), layout=st.sampled_from(["c", "bt", "out"]),
    block=st.sampled_from([8, 16, 33, 100]),
)
def test_matmul_in_row_blocks_equals_one_product(m, k, n, stack, dtype, layout, block):
    # the threshold lowered, so that products with too few columns for column blocks are cut
    # into near-equal blocks of about `block` rows, the whole ones as one stacked product
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(arrays, "_SMALL_PRODUCT", k * n * block)
        patch.setattr(arrays, "_MIN_BLOCK_COLUMNS", 10**9)
        patch.setattr(arrays, "_MIN_BLOCK_ROWS", 4)
        _check_matmul(m, k, n, stack, dtype, layout)


def _check_matmul(m, k, n, stack, dtype, layout):
    rng = np.random.default_rng(m * 1000 + n)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal(((stack,) if stack else ()) + (k, n)).astype(dtype)
    if layout == "bt":  # a transposed view: kept whole
        b = np.ascontiguousarray(np.swapaxes(b, -1, -2)).swapaxes(-1, -2)
    expected = np.matmul(a.astype(np.float64), b.astype(np.float64))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    if layout == "out":  # into a view of a wider array, as the strategies write slices
        wide = np.full(expected.shape[:-1] + (n + 5,), np.nan, dtype=dtype)
        arrays.matmul(a, b, wide[..., 2 : n + 2])
        np.testing.assert_allclose(wide[..., 2 : n + 2], expected, rtol=tol, atol=tol)
        assert np.isnan(wide[..., :2]).all() and np.isnan(wide[..., n + 2 :]).all()
    else:
        got = arrays.matmul(a, b)
        assert got.dtype == dtype and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


def test_matmul_cuts_a_large_product_with_a_short_inner_axis_into_blocks(monkeypatch):
    calls = []
    real = np.matmul

    def spy(a, b, *args, **kwargs):
        calls.append(b.shape[-1])
        return real(a, b, *args, **kwargs)

    a = np.ones((96, 16), np.float32)
    b = np.ones((16, 1024), np.float32)
    monkeypatch.setattr(arrays.np, "matmul", spy)
    out = arrays.matmul(a, b)
    # 10**6 // (96 * 16) = 651 columns, rounded down to 640
    assert calls == [640, 384]
    assert (out == 16).all()
    calls.clear()
    arrays.matmul(np.ones((96, 288), np.float32), np.ones((288, 1024), np.float32))
    assert calls == [1024]  # blocks would be 32 columns wide: kept whole


def test_matmul_cuts_many_rows_with_few_columns_into_one_stacked_product_of_row_blocks(
        monkeypatch):
    calls = []
    real = np.matmul

    def spy(a, b, *args, **kwargs):
        calls.append(a.shape)
        return real(a, b, *args, **kwargs)

    rng = np.random.default_rng(0)
    a = rng.standard_normal((4100, 16)).astype(np.float32)
    b = rng.standard_normal((16, 96)).astype(np.float32)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    monkeypatch.setattr(arrays.np, "matmul", spy)
    out = arrays.matmul(a, b)
    # 4100 * 16 * 96 multiply-adds: 7 blocks of ceil(4100 / 7) = 586 rows, the whole ones (6)
    # stacked into one call, the 584 left in another
    assert calls == [(6, 586, 16), (584, 16)]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    calls.clear()
    arrays.matmul(np.ones((4096, 288), np.float32), np.ones((288, 48), np.float32))
    assert calls == [(4096, 288)]  # blocks would be 73 rows: kept whole
    calls.clear()
    arrays.matmul(np.ones((1024, 16), np.float32), np.ones((16, 48), np.float32))
    assert calls == [(1024, 16)]  # a small product (786,432 multiply-adds): whole


@pytest.mark.parametrize("m, k, n, wide", [
    (1, 4096, 256, True), (3, 2048, 512, True),  # a Dense layer's weight larger than a core's L2
    (7, 4096, 600, True),  # large enough that the pool would split it, were its maps not serial
    (1, 512, 512, False), (2, 1024, 128, False),  # it fits: stays on one thread
    (64, 288, 256, False), (17, 4096, 256, False),  # not a few rows: stays
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_small_batchs_dense_product_takes_the_idle_cores_blas_for_the_same_bits(
        monkeypatch, m, k, n, wide, dtype):
    """Where a small batch runs serially (``threads.cores_idle``), a Dense layer's product with a
    weight above ``_WIDE_STREAMED`` runs with OpenBLAS on the pool's threads (``_on_idle_cores``)
    and gives the bits of the single-threaded one: OpenBLAS splits the outputs, not the sums."""
    from cnn_im2col import threads

    rng = np.random.default_rng(m * k + n)
    x = rng.standard_normal((m, k)).astype(dtype)
    weight = rng.standard_normal((n, k)).astype(dtype)
    threads.set_num_threads(2)
    widened = []
    real = threads.idle_cores_blas

    def noting():
        widened.append(1)
        return real()

    monkeypatch.setattr(threads, "idle_cores_blas", noting)
    with threads.engine_blas():
        alone = arrays.gemm(x, weight.T)
        assert not widened
        with threads.batch_maps(1):
            got = arrays.gemm(x, weight.T)
    assert bool(widened) == wide
    np.testing.assert_array_equal(got, alone)


@given(n=st.integers(1, 300), per_sample=st.integers(1, 2**22), per_thread=st.integers(1, 3),
       threads=st.integers(1, 4))
def test_cache_slices_cover_the_batch_in_slices_of_one_size_where_they_can(
        n, per_sample, per_thread, threads):
    """The slices cover range(n) in order; there are a multiple of the threads of them (or n, when
    there are fewer samples), at least per_thread a thread; their sizes differ by at most one;
    no slice is larger than the plain rule's (ceil(n*bytes / chunk) slices, rounded up to a
    multiple of the threads) would make it; and there are no more of them than that size needs
    (32 samples: 16 slices of 2, not 14 of 2 and 4 of 1)."""
    chunk = 2**19
    with mock.patch.object(arrays._threads, "get_num_threads", lambda: threads):
        slices = arrays.cache_slices(n, per_sample, chunk, per_thread)
    assert [s.start for s in slices] == [0] + [s.stop for s in slices[:-1]]
    assert slices[-1].stop == n
    sizes = [s.stop - s.start for s in slices]
    assert max(sizes) - min(sizes) <= 1
    plain = max(threads * per_thread, -(-n * per_sample // chunk))
    plain = -(-plain // threads) * threads
    assert max(sizes) == -(-n // min(plain, n))
    assert len(slices) % threads == 0 or len(slices) == n
    assert len(slices) >= min(n, threads * per_thread)
    fewest = -(-n // max(sizes))  # as few slices as their largest allows, threads permitting
    if fewest % threads == 0 and fewest >= threads * per_thread:
        assert len(slices) == fewest


@settings(max_examples=25)
@given(count=st.integers(1, 6), size=st.integers(1, 300), transposed=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_summed_adds_left_to_right_as_a_serial_loop(count, size, transposed, dtype, seed):
    """The same bits as ``total += part`` in order, on the pool (any size split: the threshold
    lowered), into the first part when it is C-contiguous, into a copy of it when not."""
    rng = np.random.default_rng(seed)
    parts = [rng.standard_normal((size, 3)).astype(dtype) for _ in range(count)]
    if transposed:
        parts[0] = np.ascontiguousarray(parts[0].T).T  # a view that is not C-contiguous
    expected = parts[0].copy()
    for part in parts[1:]:
        expected += part
    first = parts[0]
    with mock.patch.object(arrays, "_PARALLEL_ELEMENTS", 1):
        got = arrays.summed(parts)
    np.testing.assert_array_equal(got, expected)
    assert (got is first) == first.flags.c_contiguous  # a (1, 3) view is, transposed or not


@settings(max_examples=25)
@given(size=st.integers(1, 300), same=st.booleans(), seed=st.integers(0, 2**16))
def test_added_is_numpys_add_into_a_new_array(size, same, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((size, 2)).astype(np.float32)
    b = rng.standard_normal((size, 2)).astype(np.float32 if same else np.float64)
    with mock.patch.object(arrays, "_PARALLEL_ELEMENTS", 1):
        got = arrays.added(a, b, np.float32)
    expected = np.empty_like(a)
    np.add(a, b, out=expected)
    assert got.dtype == np.float32 and not np.shares_memory(got, a)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_prefetch_hint_compiles_for_both_dtypes_and_changes_nothing(dtype):
    """``arrays.prefetch`` inside a compiled loop (as the batch-norm kernels use it: the next
    run's values, up to the array's last one) leaves the array and the loop's result as they
    were."""
    import numba as nb

    @nb.njit
    def sum_with_hints(flat, run):
        total = 0.0
        for start in range(0, flat.size, run):
            count = min(run, flat.size - start)
            arrays.prefetch(flat, start, count)
            for i in range(start, start + count):
                total += flat[i]
        return total

    flat = np.random.default_rng(0).standard_normal(1000).astype(dtype)
    before = flat.copy()
    for run in (1, 7, 16, 333, 1000):
        assert sum_with_hints(flat, run) == pytest.approx(float(flat.astype(np.float64).sum()))
    np.testing.assert_array_equal(flat, before)


def test_core_cache_bytes_reads_the_level_2_cache_linux_reports(tmp_path):
    """The level-2 data or unified cache of cpu0 (not an instruction cache, not another level),
    in K or M; None where the folder is missing or unreadable."""
    from cnn_im2col.arrays import core_cache_bytes

    def cache(index, level, kind, size):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, text in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(f"{text}\n")

    cache(0, 1, "Data", "48K")
    cache(1, 2, "Instruction", "64K")
    cache(2, 2, "Unified", "2048K")
    cache(3, 3, "Unified", "32M")
    assert core_cache_bytes(str(tmp_path)) == 2 * 2**20
    (tmp_path / "index2" / "size").write_text("1M\n")
    assert core_cache_bytes(str(tmp_path)) == 2**20
    (tmp_path / "index2" / "size").write_text("lots\n")
    assert core_cache_bytes(str(tmp_path)) is None
    assert core_cache_bytes(str(tmp_path / "missing")) is None


def test_column_blocks_only_for_a_short_inner_axis_where_the_core_cache_is_large():
    # the Intel Xeon's rule (2 MiB of L2 a core): K <= 48; elsewhere (or unknown) no limit
    assert arrays._max_blocked_inner(2 * 2**20) == 48
    assert arrays._max_blocked_inner(2**20) > 10**9 and arrays._max_blocked_inner(None) > 10**9
    rule = arrays.product_blocks.py_func
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(arrays, "_MAX_BLOCKED_INNER", 48)
        assert rule(128, 48, 4096) == (160, 0)  # 10**6 // (128 * 48) = 162 columns, whole vectors
        assert rule(128, 64, 1024) == (0, 0)  # K = 64: whole (row blocks would be 15 rows)
        assert rule(4096, 64, 96) == (0, 158)  # too few columns anyway: the row rule, as before
        patch.setattr(arrays, "_MAX_BLOCKED_INNER", 2**62)
        assert rule(128, 64, 1024) == (112, 0)
    # the compiled rule (blas.matmul's) reads the same limit as arrays.matmul's
    for m, k, n in ((128, 48, 4096), (128, 64, 1024), (16, 96, 4096), (4096, 64, 96)):
        assert arrays.product_blocks(m, k, n) == rule(m, k, n)
