"""MobileNetV2's fused inverted residual (``conv/inverted_residual.py``, both its plane-by-plane and
its channels-last kernels) equals its slow twin, the three convolutions and two ReLU6 layers run
one by one, on drawn shapes, strides, dilations, paddings, biases and dtypes; ``planning.plan``
makes the step for exactly that pattern, at inference only, and it falls back to its parts where
the kernels do not apply."""

import numpy as np
import pytest
from conftest import tolerance
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col.containers import Residual
from cnn_im2col.conv import channels_last_rows, inverted_residual
from cnn_im2col.inference_blocks import InvertedResidual
from cnn_im2col.layers import Conv2D, ReLU, ReLU6
from cnn_im2col.model import Sequential
from cnn_im2col.planning import plan


def block_layers(c, e, o, stride, padding, dilation, expand, bias, dtype, seed=0):
    """[Conv2D 1x1 -> ReLU6 ->] Conv2D 3x3 depthwise -> ReLU6 -> Conv2D 1x1, random biases."""
    rng = np.random.default_rng(seed)
    mode = "tied" if bias else None
    channels = e if expand else c
    layers = [Conv2D(c, e, 1, bias=mode, dtype=dtype, seed=seed), ReLU6()] if expand else []
    layers += [Conv2D(channels, channels, 3, stride=stride, padding=padding, dilation=dilation,
                      groups=channels, bias=mode, dtype=dtype, seed=seed + 1), ReLU6(),
               Conv2D(channels, o, 1, bias=mode, dtype=dtype, seed=seed + 2)]
    for layer in layers:
        if "bias" in getattr(layer, "params", {}):
            layer.params["bias"][...] = rng.normal(0, 0.5, layer.params["bias"].shape)
    return layers


def unfused(layers, x):
    """The slow twin: each layer's own forward, one after the other."""
    for layer in layers:
        x = layer.forward(x)
    return x


@st.composite
def blocks(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    expand = draw(st.booleans())
    # a depthwise layer has 2 channels or more; any count: groups of four, vectors of 8 or 16
    # channels (the depthwise rows), and the rest
    c = draw(st.integers(1 if expand else 2, 9 if expand else 40))
    e = draw(st.integers(2, 40)) if expand else c
    o = draw(st.integers(1, 7))
    stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    padding = draw(st.integers(0, 2))
    size = 2 * dilation + 1 - padding  # the smallest map a window fits in
    h = draw(st.integers(max(1, size), 21))
    w = draw(st.integers(max(1, size), 21))
    n = draw(st.integers(1, 4))
    layers = block_layers(c, e, o, stride, padding, dilation, expand, draw(st.booleans()), dtype,
                          draw(st.integers(0, 100)))
    x = np.random.default_rng(draw(st.integers(0, 2**16))).standard_normal((n, c, h, w)) * 3
    return layers, x.astype(dtype)  # * 3: both of ReLU6's kinks are reached


KERNELS = {"planes": 1, "channels-last": 10**9}  # MIN_PLANE that sends every map to one kernel


def fused(step, x, kernel):
    """The step's output with ``kernel`` running every map size."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inverted_residual, "MIN_PLANE", KERNELS[kernel])
        return step.forward(x, False)


@pytest.mark.parametrize("kernel", KERNELS)
@given(case=blocks())
def test_the_fused_block_equals_its_layers_one_by_one(kernel, case):
    layers, x = case
    step = plan(layers, inference=True)
    assert [s.kind for s in step] == ["inverted_residual"]
    rtol, atol = tolerance(x.dtype)
    np.testing.assert_allclose(fused(step[0], x, kernel), unfused(layers, x), rtol=rtol,
                               atol=atol)
    assert step[0]._fused == {x.shape: True}  # the kernel ran, not the parts


def kernel_operands(layers, x):
    """The block's kernel weights (``block_weights``), its depthwise geometry for ``x`` and its
    output's shape (NCHW)."""
    from cnn_im2col.shapes import dilated_geometry

    expand = len(layers) == 5
    convs = [layer for layer in layers if isinstance(layer, Conv2D)]
    middle = convs[-2]
    w = inverted_residual.block_weights(
        (convs[0].params["weight"], convs[0].params.get("bias")) if expand else None,
        (middle.params["weight"], middle.params.get("bias")),
        (convs[-1].params["weight"], convs[-1].params.get("bias")))
    g = dilated_geometry(x.shape[2], x.shape[3], (3, 3), middle.stride, middle.dilation,
                         middle.padding, "t")
    return w, g, (x.shape[0], convs[-1].out_channels, g.oh, g.ow)


@given(case=blocks(), x_last=st.booleans(), out_last=st.booleans(), joined=st.booleans())
def test_channels_last_maps_give_the_very_bits_of_nchw_ones(case, x_last, out_last, joined):
    """By rows, the kernel reads its input and writes its output (and reads the shortcut)
    channels-last where asked (a session's program chains such blocks): the same values, bit for
    bit, as the NCHW maps transposed; the plane kernel refuses them."""
    layers, x = case
    w, g, out_shape = kernel_operands(layers, x)
    skip = (np.random.default_rng(1).standard_normal(out_shape).astype(x.dtype) if joined
            else None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inverted_residual, "MIN_PLANE", KERNELS["channels-last"])
        want = inverted_residual.forward(x, w, g, skip)
        got = inverted_residual.forward(
            np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x_last else x, w, g,
            None if skip is None else
            np.ascontiguousarray(skip.transpose(0, 2, 3, 1)) if out_last else skip,
            x_last=x_last, out_last=out_last)
    np.testing.assert_array_equal(got.transpose(0, 3, 1, 2) if out_last else got, want)
    if g.sy == g.sx == 1:  # (a strided block always runs by rows)
        with (pytest.MonkeyPatch.context() as patch,
              pytest.raises(ValueError, match="channels-last maps run by rows only")):
            patch.setattr(inverted_residual, "MIN_PLANE", 1)
            inverted_residual.forward(x, w, g, out_last=True)


@given(case=blocks(), x_last=st.booleans(), out_last=st.booleans(), joined=st.booleans())
def test_a_planned_block_gives_forwards_bits_run_after_run(case, x_last, out_last, joined):
    """``planned_forward`` (a session's block at batch 1: its tables and slicing decided once)
    gives ``forward``'s very bits, run after run on other inputs, in every layout; it declines
    where ``forward`` would cut the batch or go plane by plane."""
    layers, x = case
    x = x[:1]  # a batch of one: one slice (two samples or more are cut for the pool's threads)
    w, g, out_shape = kernel_operands(layers, x)
    rng = np.random.default_rng(2)

    def layout(a, last):
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if last else a

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inverted_residual, "MIN_PLANE", KERNELS["channels-last"])
        run = inverted_residual.planned_forward(x.shape, w, g, x_last, out_last)
        assert run is not None
        for _ in range(2):
            xs = (rng.standard_normal(x.shape) * 3).astype(x.dtype)
            skip = (layout(rng.standard_normal(out_shape).astype(x.dtype), out_last) if joined
                    else None)
            want = inverted_residual.forward(layout(xs, x_last), w, g, skip, x_last, out_last)
            np.testing.assert_array_equal(run(layout(xs, x_last), skip), want)
        patch.setattr(inverted_residual, "MIN_PLANE", 1)
        if g.sy == g.sx == 1:  # plane by plane: not planned
            assert inverted_residual.planned_forward(x.shape, w, g) is None
    big = (4, *x.shape[1:])  # a batch that forward cuts into slices for the pool
    assert inverted_residual.planned_forward(big, w, g, x_last, out_last) is None


@pytest.mark.parametrize("h", [64, 63, 32, 31, 16, 15, 8, 4, 1])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("expand", [True, False])
def test_mobilenet_shapes_on_both_sides_of_the_threshold(h, stride, expand):
    """Float64, the default thresholds: MobileNetV2's own block shapes, 6x expansion or none."""
    layers = block_layers(8, 48, 8, stride, 1, 1, expand, True, np.float64)
    x = np.random.default_rng(h).standard_normal((3, 8, h, h)) * 3
    step = plan(layers, inference=True)[0]
    np.testing.assert_allclose(step.forward(x, False), unfused(layers, x), rtol=1e-12,
                               atol=1e-12)


def test_maps_go_by_rows_below_the_threshold_and_strided():
    """By rows: maps under MIN_PLANE pixels, and every strided block; plane by plane the rest."""
    from cnn_im2col.shapes import dilated_geometry

    def rows(h, stride):
        g = dilated_geometry(h, h, (3, 3), (stride, stride), (1, 1), (1, 1), "t")
        return inverted_residual.by_rows((1, 8, h, h), g)

    side = int(inverted_residual.MIN_PLANE ** 0.5)
    assert rows(side - 1, 1) and not rows(side, 1) and rows(side, 2)


def test_plan_makes_the_step_for_the_exact_pattern_at_inference_only():
    with_expansion = block_layers(4, 8, 4, 1, 1, 1, True, True, np.float32)
    without = block_layers(4, 4, 6, 2, 1, 1, False, True, np.float32)
    assert [s.kind for s in plan(with_expansion, inference=True)] == ["inverted_residual"]
    assert [s.kind for s in plan(without, inference=True)] == ["inverted_residual"]
    assert "inverted_residual" not in [s.kind for s in plan(with_expansion)]  # training
    # a stem convolution then the block without expansion (MobileNetV2's first layers, flat)
    stem = [Conv2D(3, 4, 3, padding=1), ReLU6()]
    assert [s.kind for s in plan(stem + without, inference=True)] == [
        "conv_activation", "inverted_residual"]
    expected = {  # what each stack is planned as
        "ReLU after the expansion: a block without one after it": (
            [with_expansion[0], ReLU(), *with_expansion[2:]], ["conv_relu", "inverted_residual"]),
        "a full 3x3 middle": (
            [Conv2D(4, 8, 1), ReLU6(), Conv2D(8, 8, 3, padding=1), ReLU6(), Conv2D(8, 4, 1)],
            ["conv_activation", "conv_activation", "layer"]),
        "a 3x3 expansion": (
            [Conv2D(4, 8, 3, padding=1), ReLU6(), *with_expansion[2:]],
            ["conv_activation", "inverted_residual"]),
        "a grouped projection": (
            [*with_expansion[:4], Conv2D(8, 4, 1, groups=2)],
            ["conv_activation", "conv_activation", "layer"]),
        "a subclass": (
            [type("MyConv", (Conv2D,), {})(4, 8, 1), ReLU6(), *with_expansion[2:]],
            ["layer", "layer", "inverted_residual"]),
    }
    for why, (layers, kinds) in expected.items():
        assert [s.kind for s in plan(layers, inference=True)] == kinds, why


@pytest.mark.parametrize("why", ["5x5 depthwise", "untied bias", "two dtypes"])
def test_where_the_kernels_do_not_apply_the_step_runs_its_parts(why):
    layers = block_layers(4, 8, 4, 1, 1, 1, True, True, np.float64)
    if why == "5x5 depthwise":
        layers[2] = Conv2D(8, 8, 5, padding=2, groups=8, dtype=np.float64, seed=3)
    elif why == "untied bias":
        layers[2] = Conv2D(8, 8, 3, padding=1, groups=8, bias="untied", input_size=(6, 6),
                           dtype=np.float64, seed=3)
        layers[2].params["bias"][...] = 0.25
    else:
        layers[4] = Conv2D(8, 4, 1, dtype=np.float32, seed=3)
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6))
    step = plan(layers, inference=True)[0]
    assert step.kind == "inverted_residual"
    np.testing.assert_array_equal(step.forward(x, False), unfused(layers, x))
    assert step._fused == {x.shape: False}
    assert [p.kind for p in step.parts] == ["conv_activation", "conv_activation", "layer"]


def test_the_step_is_for_inference_only():
    step = InvertedResidual(tuple(block_layers(4, 8, 4, 1, 1, 1, True, True, np.float32)), 0)
    x = np.zeros((1, 4, 5, 5), np.float32)
    with pytest.raises(RuntimeError, match=r"InvertedResidual\(.*\) is an inference step"):
        step.run(x, True)
    with pytest.raises(RuntimeError, match=r"is an inference step: it has no backward"):
        step.backward(np.zeros(1))


def test_predict_of_a_network_of_blocks_equals_forward_and_training_is_unchanged(monkeypatch):
    """In a Sequential: predict takes the fused step (with its BatchNorms folded first, and a
    Residual's identity shortcut added inside it: the Residual's own join never runs), forward
    and backward the layers."""
    from cnn_im2col.architectures import inverted_residual as make_block
    from cnn_im2col.layers import BatchNorm2D

    net = Sequential([Conv2D(3, 8, 3, padding=1, dtype=np.float64), ReLU6(),
                      make_block(8, 8, 1, 6, [1, 2, 3], np.float64),
                      make_block(8, 16, 2, 6, [4, 5, 6], np.float64)])
    rng = np.random.default_rng(1)
    for key, value in net.buffers.items():
        value[...] = rng.uniform(0.5, 1.5, value.shape) if key.endswith("var") else rng.normal(
            0, 0.3, value.shape)
    x = rng.standard_normal((5, 3, 16, 16))
    expected = net.forward(x)

    def no_join(*args, **kwargs):
        raise AssertionError("the Residual joined its branches itself")

    with monkeypatch.context() as patch:
        patch.setattr(Residual, "_join", no_join)
        np.testing.assert_allclose(net.predict(x), expected, rtol=1e-11, atol=1e-12)
    body = net.layers[2].body
    assert [s.kind for s in body._inference[0]] == ["inverted_residual"]
    assert any(isinstance(layer, BatchNorm2D) for layer in body.layers)
    out = net.forward(x, training=True)
    assert net.backward(np.ones_like(out)).shape == x.shape


def test_the_fused_block_matches_torch():
    torch = pytest.importorskip("torch")
    layers = block_layers(8, 48, 12, 2, 1, 1, True, True, np.float32)
    x = np.random.default_rng(0).standard_normal((4, 8, 17, 17)).astype(np.float32) * 3
    convs = [layer for layer in layers if isinstance(layer, Conv2D)]
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(8, 48, 1), torch.nn.ReLU6(),
        torch.nn.Conv2d(48, 48, 3, stride=2, padding=1, groups=48), torch.nn.ReLU6(),
        torch.nn.Conv2d(48, 12, 1))
    with torch.no_grad():
        for ours, module in zip(convs, theirs[::2]):
            module.weight.copy_(torch.from_numpy(ours.params["weight"]))
            module.bias.copy_(torch.from_numpy(ours.params["bias"]))
        expected = theirs(torch.from_numpy(x)).numpy()
    step = plan(layers, inference=True)[0]
    for kernel in KERNELS:
        np.testing.assert_allclose(fused(step, x, kernel), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("skip_kind", ["same dtype", "float64 on float32", "strided"])
def test_a_skip_is_added_to_the_output_inside_the_kernel_or_after_it(kernel, skip_kind):
    """A Residual's identity shortcut: the block's output + skip, in NumPy's result dtype."""
    layers = block_layers(6, 24, 6, 1, 1, 1, True, True, np.float32)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 6, 9, 9)) * 3).astype(np.float32)
    skip = {"same dtype": x, "float64 on float32": x.astype(np.float64),
            "strided": np.repeat(x, 2, axis=-1)[..., ::2]}[skip_kind]
    step = plan(layers, inference=True)[0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inverted_residual, "MIN_PLANE", KERNELS[kernel])
        out = step.run(x, False, skip)
    expected = np.add(unfused(layers, x), skip, dtype=np.result_type(np.float32, skip))
    assert out.dtype == expected.dtype
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"InvertedResidual\(.*\): skip must have the output's "
                                         r"shape \(3, 6, 9, 9\), got \(3, 6, 9, 8\)"):
        step.run(x, False, skip[..., :8])


def test_a_skip_is_added_after_the_parts_where_the_kernels_do_not_apply():
    layers = block_layers(4, 8, 4, 1, 1, 1, True, True, np.float64)
    layers[2] = Conv2D(8, 8, 5, padding=2, groups=8, dtype=np.float64, seed=3)
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6))
    step = plan(layers, inference=True)[0]
    np.testing.assert_array_equal(step.run(x, False, x), unfused(layers, x) + x)
    assert step._fused == {x.shape: False}


@pytest.mark.parametrize("stride, dilation, padding", [(2, 1, 1), (3, 2, 2), (2, 1, 0)])
def test_the_plane_kernel_itself_handles_strides_and_dilations(stride, dilation, padding):
    """``forward`` sends strided blocks to the channels-last kernel; the plane kernel is general
    all the same (one geometry code with the depthwise strategy) and is held to it here."""
    from cnn_im2col.shapes import dilated_geometry

    layers = block_layers(5, 12, 7, stride, padding, dilation, True, True, np.float64)
    x = np.random.default_rng(stride).standard_normal((2, 5, 17, 16)) * 3
    expected = unfused(layers, x)
    expand, middle, project = layers[0], layers[2], layers[4]
    w = inverted_residual.block_weights(
        (expand.params["weight"], expand.params["bias"]),
        (middle.params["weight"], middle.params["bias"]),
        (project.params["weight"], project.params["bias"]))
    g = dilated_geometry(17, 16, (3, 3), (stride, stride), (dilation, dilation), padding, "t")
    out = np.empty_like(expected)
    inverted_residual.inverted_residual_forward(
        x, w.expand, w.expand_bias, w.depthwise, w.depthwise_bias, g.sy, g.sx, g.dy, g.dx, g.top,
        g.left, w.project, w.project_bias, np.empty((0, 0, 0, 0)), out)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("h", [8, 16])
def test_a_block_in_a_residual_with_a_relu_after_it_joins_after_the_kernel(h):
    """A Residual -> ReLU around the block: the kernels add no ReLU, so the join and the ReLU
    come after the step (``inference_blocks.infer_with_skip``), equal to forward to rounding."""
    layers = block_layers(8, 24, 8, 1, 1, 1, True, "tied", np.float32)
    model = Sequential([Residual(Sequential(layers)), ReLU()])
    x = np.random.default_rng(6).standard_normal((3, 8, h, h)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), model.forward(x), *tolerance(np.float32))
    body_steps = model.layers[0].body._inference[0]
    assert [s.kind for s in body_steps] == ["inverted_residual"]


@given(case=blocks(), x_last=st.booleans(), out_last=st.booleans(), joined=st.booleans(),
       part=st.integers(1, 5))
def test_the_rows_in_one_compiled_call_equal_the_rows_around_numpys_matmul(case, x_last,
                                                                           out_last, joined,
                                                                           part):
    """``rows_compiled`` (the products through ``blas.gemm``, one call without the GIL) gives
    ``rows_numpy``'s bits (NumPy's matmul between the compiled passes), ``part`` samples at a
    time, in every layout, with and without an expansion or a shortcut, where both products are
    general ones (rows and columns both 2 or more: for a vector NumPy's matmul calls gemv); to
    rounding where one is a vector. Parts of any size give the values of the whole slice at once
    (to rounding: BLAS may round a short product otherwise). ``_rows`` takes the NumPy path where
    no BLAS was found."""
    from cnn_im2col import blas

    BLAS = blas.library()

    assert BLAS is not None, "NumPy's OpenBLAS was not found: the compiled rows cannot run here"
    layers, x = case
    w, g, out_shape = kernel_operands(layers, x)
    channels = w.depthwise.shape[0]
    tables = channels_last_rows.depthwise_tables(x.shape[2], x.shape[3], g, channels)
    rng = np.random.default_rng(3)
    skip = rng.standard_normal(out_shape).astype(x.dtype) if joined else None

    def layout(a, last):
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if last else a

    xs = layout(x, x_last)
    skips = np.empty((0, 0, 0, 0), x.dtype) if skip is None else layout(skip, out_last)
    shape = (out_shape[0], g.oh, g.ow, out_shape[1]) if out_last else out_shape
    got, want, whole, fallback = (np.full(shape, np.nan, x.dtype) for _ in range(4))
    operands = (w.expand_t, w.expand_bias, w.depthwise_last, w.depthwise_bias, w.project_t,
                w.project_bias, tables, g.oh * g.ow, skips)
    inverted_residual.rows_compiled(BLAS, xs, x_last, out_last, *operands, got, part)
    inverted_residual.rows_numpy(xs, w, tables, g.oh * g.ow, x_last, out_last, skips, want, part)
    rows = min(part, x.shape[0], x.shape[0] % part or part)  # the smallest part's samples
    general = rows * x.shape[2] * x.shape[3] >= 2 and rows * g.oh * g.ow >= 2 and \
        min(channels, out_shape[1]) >= 2
    if general:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, *tolerance(x.dtype))
    inverted_residual.rows_compiled(BLAS, xs, x_last, out_last, *operands, whole, x.shape[0])
    np.testing.assert_allclose(got, whole, *tolerance(x.dtype))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(blas, "library", lambda: None)
        inverted_residual._rows(xs, w, tables, g.oh * g.ow, x_last, out_last, skips, fallback)
    inverted_residual.rows_numpy(xs, w, tables, g.oh * g.ow, x_last, out_last, skips, want,
                                 inverted_residual._part_samples(
                                     x.shape[2] * x.shape[3], g.oh * g.ow, channels, x.itemsize))
    np.testing.assert_array_equal(fallback, want)


@pytest.mark.parametrize("c, e, o, h, stride, part", [
    (80, 480, 80, 4, 1, 4),  # the expansion in column blocks
    (16, 96, 16, 32, 1, 1),  # both products in row blocks
    (16, 96, 24, 32, 2, 1),  # strided: the expansion in row blocks
    (48, 288, 48, 8, 1, 1)])  # whole products
def test_the_compiled_rows_cut_mobilenets_products_as_the_engines_matmul(c, e, o, h, stride,
                                                                         part):
    """On MobileNetV2's own shapes, large enough that ``arrays.matmul`` cuts its products into
    blocks, the compiled rows cut them alike (``blas.matmul``): ``rows_numpy``'s very bits."""
    from cnn_im2col import blas

    BLAS = blas.library()

    layers = block_layers(c, e, o, stride, 1, 1, True, True, np.float32, seed=c)
    x = np.random.default_rng(e).standard_normal((part + 1, c, h, h)).astype(np.float32) * 3
    w, g, out_shape = kernel_operands(layers, x)
    tables = channels_last_rows.depthwise_tables(h, h, g, e)
    xs = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    skips = np.empty((0, 0, 0, 0), np.float32)
    shape = (out_shape[0], g.oh, g.ow, out_shape[1])
    got, want = np.empty(shape, np.float32), np.empty(shape, np.float32)
    inverted_residual.rows_compiled(BLAS, xs, True, True, w.expand_t, w.expand_bias,
                                    w.depthwise_last, w.depthwise_bias, w.project_t,
                                    w.project_bias, tables, g.oh * g.ow, skips, got, part)
    inverted_residual.rows_numpy(xs, w, tables, g.oh * g.ow, True, True, skips, want, part)
    np.testing.assert_array_equal(got, want)
