"""The im2col strategy (and its NumPy twin) equals the scipy oracle of ``reference`` and the
grouped/dilated oracle, on both backends, with and without the fused ReLU; its weight gradient's
two paths (BLAS, Numba dot products) agree."""

import numpy as np
import pytest
from conftest import in_memory_order, tolerance
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col import arrays, reference
from cnn_im2col import functional as F
from cnn_im2col.conv import im2col as conv_im2col
from cnn_im2col.gradcheck import check_function
from conv.cases import BACKENDS, conv_cases, grouped_dilated_cases, oracle_conv


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=conv_cases())
def test_conv2d_forward_and_gradients_equal_reference(backend, case):
    x, weight, bias, bias_mode, stride, padding, dout, order = case
    rtol, atol = tolerance(x.dtype)
    out, cache = F.conv2d_forward(
        in_memory_order(x, order), weight, bias, stride, padding, backend=backend
    )
    assert out.dtype == x.dtype and out.flags.c_contiguous
    np.testing.assert_allclose(
        out, reference.conv2d_forward(x, weight, bias, stride, padding), rtol, atol
    )

    dx, dweight, dbias = F.conv2d_backward(in_memory_order(dout, order), cache)
    ref_dx, ref_dweight, ref_dbias = reference.conv2d_backward(
        x, weight, dout, stride, padding, bias=bias_mode
    )
    np.testing.assert_allclose(dx, ref_dx, rtol, atol)
    np.testing.assert_allclose(dweight, ref_dweight, rtol, atol)
    if bias_mode is None:
        assert dbias is None
    else:
        assert dbias.shape == bias.shape
        np.testing.assert_allclose(dbias, ref_dbias, rtol, atol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias_mode", ["tied", "untied", None])
def test_conv2d_gradcheck_float64(backend, bias_mode):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 5, 6))
    weight = rng.standard_normal((3, 2, 3, 2))
    bias = {"tied": rng.standard_normal(3), "untied": rng.standard_normal((3, 3, 5)), None: None}[
        bias_mode
    ]
    stride, padding = (2, 1), (1, 0)
    state = {}

    def forward(v):
        out, state["cache"] = F.conv2d_forward(v, weight, bias, stride, padding, backend=backend)
        return out

    check_function(forward, lambda d: F.conv2d_backward(d, state["cache"])[0], x)

    def forward_w(w):
        out, state["cache"] = F.conv2d_forward(x, w, bias, stride, padding, backend=backend)
        return out

    check_function(forward_w, lambda d: F.conv2d_backward(d, state["cache"])[1], weight)
    if bias is not None:

        def forward_b(b):
            out, state["cache"] = F.conv2d_forward(x, weight, b, stride, padding, backend=backend)
            return out

        check_function(forward_b, lambda d: F.conv2d_backward(d, state["cache"])[2], bias)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("bias_mode", ["tied", "untied", "none"])
def test_conv2d_backward_without_input_grad_gives_the_same_parameter_gradients(backend, bias_mode):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 7, 6))
    w = rng.standard_normal((4, 2, 3, 2))
    bias = {"tied": rng.standard_normal(4), "untied": rng.standard_normal((4, 4, 4)), "none": None}[
        bias_mode
    ]
    out, cache = F.conv2d_forward(x, w, bias, stride=(2, 2), padding=1, backend=backend)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = F.conv2d_backward(dout, cache)
    none, dw2, db2 = F.conv2d_backward(dout, cache, input_grad=False)
    assert none is None and dx.shape == x.shape
    np.testing.assert_array_equal(dw2, dw)
    if bias is None:
        assert db is None and db2 is None
    else:
        np.testing.assert_array_equal(db2, db)


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=grouped_dilated_cases())
def test_dilated_grouped_conv2d_equals_the_reference_of_its_groups(backend, case):
    x, weight, bias, bias_mode, stride, padding, dilation, groups, dout, order = case
    rtol, atol = tolerance(x.dtype)
    out, cache = F.conv2d_forward(
        in_memory_order(x, order),
        weight,
        bias,
        stride,
        padding,
        backend=backend,
        dilation=dilation,
        groups=groups,
    )
    ref_out, ref_dx, ref_dw = oracle_conv(x, weight, bias, stride, padding, dilation, groups, dout)
    assert out.shape == ref_out.shape and out.dtype == x.dtype and out.flags.c_contiguous
    np.testing.assert_allclose(out, ref_out, rtol, atol)
    assert (
        F.conv2d_output_shape(
            x.shape[1:], weight.shape, stride, padding, dilation=dilation, groups=groups
        )
        == out.shape[1:]
    )
    dx, dweight, dbias = F.conv2d_backward(in_memory_order(dout, order), cache)
    np.testing.assert_allclose(dx, ref_dx, rtol, atol)
    np.testing.assert_allclose(dweight, ref_dw, rtol, atol)
    if bias_mode is None:
        assert dbias is None
    else:
        np.testing.assert_allclose(
            dbias, dout.sum(axis=(0, 2, 3)) if bias_mode == "tied" else dout.sum(axis=0), rtol, atol
        )


@given(case=grouped_dilated_cases(), relu=st.booleans())
def test_fast_path_equals_the_numpy_twin_with_fused_relu(case, relu):
    """The Numba blocks (any slicing of the batch) against the NumPy twin, the fused ReLU included:
    out = ReLU(conv) and the gradients are those of conv at dout * (out > 0)."""
    x, weight, bias, _, stride, padding, dilation, groups, dout, _ = case
    rtol, atol = tolerance(x.dtype)
    kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    fast, fast_cache = F.conv2d_forward(x, weight, bias, relu=relu, **kw)
    twin, twin_cache = F.conv2d_forward(x, weight, bias, backend="numpy", relu=relu, **kw)
    plain, plain_cache = F.conv2d_forward(x, weight, bias, backend="numpy", **kw)
    np.testing.assert_allclose(fast, twin, rtol, atol)
    np.testing.assert_allclose(twin, np.maximum(plain, 0) if relu else plain, rtol, atol)
    masked = np.where(plain > 0, dout, 0) if relu else dout
    for a, b, c in zip(
        F.conv2d_backward(dout, fast_cache),
        F.conv2d_backward(dout, twin_cache),
        F.conv2d_backward(masked, plain_cache),
    ):
        if c is None:
            assert a is None and b is None
            continue
        np.testing.assert_allclose(a, b, rtol, atol)
        np.testing.assert_allclose(b, c, rtol, atol)


@pytest.mark.parametrize("keep_cols", [True, False])
def test_conv2d_slices_of_the_batch_do_not_change_the_result(monkeypatch, keep_cols):
    """Tiny slices (one sample each) and one slice for the whole batch give the same numbers."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 2))
    dout = rng.standard_normal((5, 6, 7, 4))
    results = []
    for chunk in (1, 2**40):
        monkeypatch.setattr(arrays, "_CHUNK_BYTES", chunk)
        out, cache = F.conv2d_forward(
            x, w, np.arange(6.0), 1, (1, 0), groups=2, dilation=(1, 2), keep_cols=keep_cols
        )
        results.append((out, *F.conv2d_backward(dout, cache)))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, 1e-12, 1e-12)


@pytest.mark.parametrize("bias_mode", ["tied", "untied", None])
@pytest.mark.parametrize("relu", [False, True])
def test_dilated_grouped_conv2d_gradcheck_float64(bias_mode, relu):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7, 6))
    weight = rng.standard_normal((6, 2, 2, 3))
    kw = {"stride": (1, 2), "padding": (2, 1), "dilation": (2, 1), "groups": 2, "relu": relu}
    bias = {"tied": rng.standard_normal(6), "untied": rng.standard_normal((6, 9, 3)), None: None}[
        bias_mode
    ]
    state = {}

    def forward(v):
        out, state["cache"] = F.conv2d_forward(v, weight, bias, **kw)
        return out

    check_function(forward, lambda d: F.conv2d_backward(d, state["cache"])[0], x)

    def forward_w(w):
        out, state["cache"] = F.conv2d_forward(x, w, bias, **kw)
        return out

    check_function(forward_w, lambda d: F.conv2d_backward(d, state["cache"])[1], weight)


# PyTorch's own notice for padding="same" with an even kernel (it pads a copy); ours pads alike
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
@given(case=grouped_dilated_cases())
def test_dilated_grouped_conv2d_equals_torch(case):
    torch = pytest.importorskip("torch")
    x, weight, bias, bias_mode, stride, padding, dilation, groups, dout, _ = case
    if bias_mode == "untied":
        bias = None
    rtol, atol = tolerance(x.dtype)
    out, cache = F.conv2d_forward(
        x, weight, bias, stride, padding, dilation=dilation, groups=groups
    )
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(weight, requires_grad=True)
    tb = None if bias is None else torch.tensor(bias, requires_grad=True)
    t_out = torch.nn.functional.conv2d(tx, tw, tb, stride, padding, dilation, groups)
    t_out.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol, atol)
    dx, dweight, dbias = F.conv2d_backward(dout, cache)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol, atol)
    np.testing.assert_allclose(dweight, tw.grad.numpy(), rtol, atol)
    if bias is not None:
        np.testing.assert_allclose(dbias, tb.grad.numpy(), rtol, atol)


@given(
    groups=st.sampled_from([1, 2, 3]),
    o=st.integers(1, 12),
    r=st.integers(1, 30),
    length=st.integers(1, 700),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_weight_grad_dot_products_equal_the_blas_product(
    monkeypatch_module, groups, o, r, length, dtype, seed
):
    """The conv's weight gradients, small (Numba dot products) or not (BLAS), equal each group's
    d_t @ cols_t.T in float64."""
    rng = np.random.default_rng(seed)
    d_t = rng.standard_normal((groups * o, length)).astype(dtype)
    cols_t = rng.standard_normal((groups * r, length)).astype(dtype)
    want = np.concatenate(
        [
            d_t[g * o : (g + 1) * o].astype(np.float64)
            @ cols_t[g * r : (g + 1) * r].T.astype(np.float64)
            for g in range(groups)
        ]
    )
    rtol, atol = (
        (1e-4, 1e-4 * np.sqrt(length)) if dtype == np.float32 else (1e-10, 1e-10 * np.sqrt(length))
    )
    for limit in (
        0,
        1024,
    ):  # BLAS for every group; then Numba's dot products where small (the default)
        monkeypatch_module.setattr(conv_im2col, "_DOT_GRAD_MAX", limit)
        got = conv_im2col.weight_grad(d_t, cols_t, groups)
        assert got.dtype == dtype and got.shape == (groups * o, r)
        np.testing.assert_allclose(got, want, rtol, atol)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("limit", [0, 1024])
def test_weight_grad_passes_a_non_finite_gradient_on(monkeypatch, bad, limit):
    """A NaN or Inf in dZ comes out of the weight gradient as non-finite on both paths (BLAS and
    the Numba dot products), so the training guard sees it instead of finite garbage."""
    monkeypatch.setattr(conv_im2col, "_DOT_GRAD_MAX", limit)
    d_t = np.ones((3, 50), dtype=np.float32)
    d_t[1, 17] = bad
    got = conv_im2col.weight_grad(d_t, np.ones((5, 50), dtype=np.float32), 1)
    assert not np.isfinite(got[1]).any() and np.isfinite(np.delete(got, 1, axis=0)).all()
