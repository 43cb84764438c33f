"""program: a frozen network compiled for one input shape computes exactly what
``Sequential.infer`` computes on the same plans (its slow, obviously-right twin), bit for bit."""

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_im2col import architectures, blocks
from cnn_im2col.containers import Residual
from cnn_im2col.layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    MaxPool2D,
    ReLU,
    ReLU6,
)
from cnn_im2col.model import Sequential
from cnn_im2col.planning import folds_frozen
from cnn_im2col.program import compile_stack
from cnn_im2col.shapes import finite_scans_skipped
from cnn_im2col.threads import engine_blas


class Halve(Layer):
    """A user's layer: the program runs it through its own ``forward``."""

    def forward(self, x, training=False):
        return np.asarray(x) * 0.5

    def backward(self, dout):
        return np.asarray(dout) * 0.5

    def output_shape(self, input_shape):
        return tuple(input_shape)


def _every_step_kind(dtype):
    """(3, 12, 12) -> 5: each kind of step the program compiles, and the ones it leaves to their own
    ``infer``: a first step that is a user's layer, Conv2D -> BN -> ReLU (folded) -> MaxPool2D on
    im2col and on the direct kernel, Conv2D -> ReLU6, a Residual -> ReLU whose shortcut is a 1x1
    Conv2D and whose body ends in a Conv2D (joined in its slices), a Residual whose body is a
    Conv2D (its own infer), a shortcut of another dtype (joined after its step), a nested
    Sequential, Dropout, Dense -> ReLU."""
    other = np.float64 if dtype == np.float32 else np.float32
    return Sequential([
        Halve(),
        Conv2D(3, 16, 3, padding=1, dtype=dtype, seed=0), ReLU(), MaxPool2D(2),
        Conv2D(16, 24, 3, padding=1, dtype=dtype, seed=1), BatchNorm2D(24, dtype=dtype), ReLU6(),
        Residual(Sequential([Conv2D(24, 32, 3, padding=1, dtype=dtype, seed=2), ReLU(),
                             Conv2D(32, 32, 3, padding=1, dtype=dtype, seed=3),
                             BatchNorm2D(32, dtype=dtype)]),
                 Conv2D(24, 32, 1, dtype=dtype, seed=4)),
        ReLU(),
        Residual(Conv2D(32, 32, 3, padding=1, dtype=dtype, seed=5)),
        Residual(Sequential([Conv2D(32, 32, 3, padding=1, dtype=dtype, seed=6)]),
                 Conv2D(32, 32, 1, dtype=other, seed=7)),
        Sequential([Conv2D(32, 16, 3, padding=1, dtype=dtype, seed=8), ReLU(), MaxPool2D(2)]),
        Dropout(0.5),
        Flatten(),
        Dense(16 * 3 * 3, 8, dtype=dtype, seed=9), ReLU(),
        Dense(8, 5, dtype=dtype, seed=10),
    ])


def _starts_with_containers(dtype):
    """(4, 8, 8) -> 4: a Residual first (its BatchNorms folded by ``infer`` too, as by a program),
    then a Concat and a ReLU."""
    from cnn_im2col.containers import Concat

    return Sequential([
        Residual(Sequential([Conv2D(4, 4, 3, padding=1, bias=None, dtype=dtype, seed=0),
                             BatchNorm2D(4, dtype=dtype), ReLU(),
                             Conv2D(4, 4, 3, padding=1, bias=None, dtype=dtype, seed=1),
                             BatchNorm2D(4, dtype=dtype)])),
        Concat([Sequential([Conv2D(4, 2, 1, dtype=dtype, seed=2), BatchNorm2D(2, dtype=dtype)]),
                Conv2D(4, 2, 3, padding=1, dtype=dtype, seed=3)]),
        ReLU(), Flatten(), Dense(4 * 8 * 8, 4, dtype=dtype, seed=4),
    ])


NETS = {
    "every_step_kind": lambda dtype: (_every_step_kind(dtype), (3, 12, 12)),
    "starts_with_containers": lambda dtype: (_starts_with_containers(dtype), (4, 8, 8)),
    "vgg_bn": lambda dtype: (architectures.vgg_bn(input_shape=(3, 16, 16), dtype=dtype),
                             (3, 16, 16)),
    "resnet20": lambda dtype: (architectures.resnet20(input_shape=(3, 16, 16), dtype=dtype),
                               (3, 16, 16)),
    "mobilenetv2": lambda dtype: (architectures.mobilenetv2(input_shape=(3, 16, 16),
                                                            dtype=dtype), (3, 16, 16)),
}


def _with_statistics(model, seed=0):
    """Running statistics that are not the identity, in nested blocks too, so folds matter."""
    rng = np.random.default_rng(seed)
    for key, value in model.buffers.items():
        if key.endswith("running_var"):
            value[...] = rng.uniform(0.5, 2.0, value.shape)
        elif key.endswith("running_mean"):
            value[...] = rng.normal(0, 0.1, value.shape)
    return model


@pytest.mark.parametrize("name", sorted(NETS))
@settings(max_examples=6)
@given(n=st.integers(1, 5), dtype=st.sampled_from([np.float32, np.float64]),
       data=st.data())
def test_the_program_computes_what_infer_computes(name, n, dtype, data):
    model, shape = NETS[name](dtype)
    _with_statistics(model)
    seed = data.draw(st.integers(0, 2**16), label="seed")
    x = np.random.default_rng(seed).standard_normal((n, *shape)).astype(dtype)
    with engine_blas(), folds_frozen(), finite_scans_skipped():
        program, out_shape = compile_stack(model, x.shape)
        got = program(x)
        expected = model.infer(x)
        again = program(x)  # a program runs many times
    assert out_shape == expected.shape
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(again, expected)


@pytest.mark.parametrize("name", ["resnet20", "vgg_bn"])
def test_a_program_runs_its_convolutions_without_the_per_call_lookups(name, monkeypatch):
    """Every convolution of ResNet-20 and vgg-bn is compiled: none goes through
    ``blocks.conv_forward`` (the per-call plan and weight lookups a program saves)."""
    model, shape = NETS[name](np.float32)
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    calls = []
    real = blocks.conv_forward
    monkeypatch.setattr(blocks, "conv_forward",
                        lambda conv, *a, **k: calls.append(conv) or real(conv, *a, **k))
    with engine_blas(), folds_frozen(), finite_scans_skipped():
        model.infer(x)
        assert calls  # the slow path does go through it
        calls.clear()
        program, _ = compile_stack(model, x.shape)
        program(x)
    assert calls == []


def test_resnet_joins_its_shortcuts_in_winograds_output_transform(monkeypatch):
    """Each of ResNet-20's nine blocks ends in a Winograd convolution (a session's, at any size),
    and the program adds the block's shortcut inside its output transform (``slice_forward``'s
    ``skip``): no join of its own. All nine run a batch slice at a time: the seven identity
    blocks through both their convolutions (``_two_winograd_by_slices``), the two with a
    projection through their strided convolution, their shortcut and their Winograd convolution
    (``_projection_by_slices``): ``run_forward``, which runs one convolution over the whole
    batch, is never called."""
    from cnn_im2col.conv import winograd

    model, shape = NETS["resnet20"](np.float32)
    x = np.random.default_rng(0).random((8, *shape), dtype=np.float32)
    joined, whole = set(), []
    slice_forward, run_forward = winograd.slice_forward, winograd.run_forward

    def spy_slice(x, p, out, skip=None, keep=True):
        if skip is not None:
            joined.add(id(p))
        return slice_forward(x, p, out, skip, keep)

    with engine_blas(), folds_frozen(), finite_scans_skipped():
        program, _ = compile_stack(model, x.shape)
        want = model.infer(x)
        monkeypatch.setattr(winograd, "slice_forward", spy_slice)
        monkeypatch.setattr(winograd, "run_forward",
                            lambda p, *a, **k: whole.append(p.geometry) or run_forward(p, *a, **k))
        np.testing.assert_array_equal(program(x), want)
    assert len(joined) == 9
    assert len(whole) == 0


class Strided(Layer):
    """A user's layer that hands on its input's values as a view that is not C-contiguous."""

    def forward(self, x, training=False):
        return np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)

    def backward(self, dout):
        return dout

    def output_shape(self, input_shape):
        return tuple(input_shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("before", ["user's layer", "a view", "Winograd"])
def test_a_basic_block_by_slices_takes_what_it_cannot_run_to_the_body(dtype, relu, before,
                                                                      monkeypatch):
    """An identity block of two Winograd convolutions with float32 weights runs a batch slice at a
    time on float32 C-contiguous input, NCHW or channels-last (after a Winograd convolution):
    neither convolution over the whole batch; input of another dtype or a view goes to the body's
    program (its conversions, its join in NumPy's dtype), each convolution over the whole batch.
    Both equal ``infer`` bit for bit."""
    from cnn_im2col.conv import winograd

    first = {"user's layer": Halve(), "a view": Strided(),
             "Winograd": Conv2D(8, 8, 3, padding=1, dtype=dtype, seed=2)}[before]
    block = _with_statistics(Sequential([first, Residual(Sequential([
        Conv2D(8, 8, 3, padding=1, bias=None, seed=0), BatchNorm2D(8), ReLU(),
        Conv2D(8, 8, 3, padding=1, seed=1)]))] + ([ReLU()] if relu else [])))
    x = np.random.default_rng(1).standard_normal((6, 8, 10, 10)).astype(dtype)
    whole = []  # the convolutions run over the whole batch
    run_forward = winograd.run_forward
    with engine_blas(), folds_frozen(), finite_scans_skipped():
        program, _ = compile_stack(block, x.shape)
        want = block.infer(x)
        monkeypatch.setattr(winograd, "run_forward",
                            lambda p, *a, **k: whole.append(p) or run_forward(p, *a, **k))
        got = program(x)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    by_slices = dtype == np.float32 and before != "a view"
    assert len(whole) == (before == "Winograd") + (0 if by_slices else 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("before", ["user's layer", "a view", "Winograd"])
@pytest.mark.parametrize("after", ["nothing", "Winograd"])
def test_a_downsampling_block_by_slices_takes_what_it_cannot_run_to_the_whole(dtype, before,
                                                                             after, monkeypatch):
    """A Residual around a strided Conv2D -> BN -> ReLU -> Conv2D -> BN with a strided 1x1
    Conv2D -> BN shortcut (ResNet's downsampling block) runs a batch slice at a time when its
    input is C-contiguous in its weights' dtype (NCHW after a user's layer, channels-last after a
    Winograd convolution; its output channels-last when a Winograd convolution follows): no
    convolution over the whole batch. Input of another dtype or a view goes to the block's
    program, each convolution over the whole batch. Both equal ``infer`` bit for bit."""
    from cnn_im2col.conv import tiled, winograd

    first = {"user's layer": Halve(), "a view": Strided(),
             "Winograd": Conv2D(8, 8, 3, padding=1, dtype=dtype, seed=2)}[before]
    layers = [first, Residual(
        Sequential([Conv2D(8, 16, 3, stride=2, padding=1, bias=None, seed=0), BatchNorm2D(16),
                    ReLU(), Conv2D(16, 16, 3, padding=1, bias=None, seed=1), BatchNorm2D(16)]),
        Sequential([Conv2D(8, 16, 1, stride=2, bias=None, seed=3), BatchNorm2D(16)])), ReLU()]
    if after == "Winograd":
        layers.append(Conv2D(16, 8, 3, padding=1, seed=4))
    block = _with_statistics(Sequential(layers))
    x = np.random.default_rng(3).standard_normal((6, 8, 12, 12)).astype(dtype)
    whole = []  # the convolutions run over the whole batch
    run_forward, tiled_forward = winograd.run_forward, tiled.forward
    with engine_blas(), folds_frozen(), finite_scans_skipped():
        program, _ = compile_stack(block, x.shape)
        want = block.infer(x)
        monkeypatch.setattr(winograd, "run_forward",
                            lambda p, *a, **k: whole.append(p) or run_forward(p, *a, **k))
        monkeypatch.setattr(tiled, "forward",
                            lambda *a, **k: whole.append(a[1].shape) or tiled_forward(*a, **k))
        got = program(x)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    by_slices = dtype == np.float32 and before != "a view"
    outside = (before == "Winograd") + (after == "Winograd")
    assert len(whole) == outside + (0 if by_slices else 3)


def test_a_block_whose_middle_has_other_channels_runs_its_bodys_program(monkeypatch):
    """8 -> 32 -> 8 channels: the two convolutions' batch slices differ (a transformed input of 8
    or 32 channels a sample), so the block runs the body's program, whose products keep their
    rows (OpenBLAS may round a product of another row count otherwise): ``infer``'s bits."""
    from cnn_im2col.conv import winograd

    block = _with_statistics(Sequential([Halve(), Residual(Sequential([
        Conv2D(8, 32, 3, padding=1, bias=None, seed=0), BatchNorm2D(32), ReLU(),
        Conv2D(32, 8, 3, padding=1, seed=1)])), ReLU()]))
    x = np.random.default_rng(2).standard_normal((64, 8, 16, 16)).astype(np.float32)
    with engine_blas(), folds_frozen(), finite_scans_skipped():
        program, _ = compile_stack(block, x.shape)
        plans = [winograd.plan_forward((64, c, 16, 16), np.ones((k, c, 3, 3), np.float32), None,
                                       block.layers[1].body.layers[0].plan(x.shape).geometry)
                 for c, k in ((8, 32), (32, 8))]
        assert plans[0].slices != plans[1].slices
        want = block.infer(x)
        whole, run_forward = [], winograd.run_forward
        monkeypatch.setattr(winograd, "run_forward",
                            lambda p, *a, **k: whole.append(p) or run_forward(p, *a, **k))
        np.testing.assert_array_equal(program(x), want)
    assert len(whole) == 2  # each convolution over the whole batch


@pytest.mark.parametrize("name, counts", [("resnet20", (21, 20, 20)), ("vgg_bn", (1, 1, 0)),
                                          ("every_step_kind", (1, 1, 0))])
def test_maps_pass_channels_last_from_one_convolution_to_the_next(name, counts, monkeypatch):
    """Where a Winograd or tiled convolution (a direct-strategy one runs in tiles there, for the
    same bits) feeds a Winograd or tiled one (vgg-bn's second convolution; the joined body in
    ``every_step_kind``; all of ResNet-20 from its stem on, its strided and 1x1 projections and the
    blocks that join them included), the program plans the first to write channels-last and the
    second to read it, and nowhere else: a pool, an activation step or another strategy gets NCHW.
    ``counts``: the convolutions that write channels-last, that read so, and that do both
    (ResNet-20's last block writes channels-last, and the program copies that to NCHW for the
    pool). The bits are those of ``Sequential.infer`` (also the test above)."""
    from cnn_im2col.conv import tiled, winograd

    model, shape = NETS[name](np.float32)
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    # the convolutions planned channels-last: Winograd's by their weights, the tiles' by their
    # layouts (made once per convolution; ``run_tiles`` runs both a whole tiled step and a
    # downsampling block's slices)
    writers, readers = set(), set()
    real, real_tiles = winograd.plan_forward, tiled.run_tiles

    def seen(key, out_last, x_last):
        if out_last:
            writers.add(key)
        if x_last:
            readers.add(key)

    def plan_forward(x_shape, weight, *args, **kwargs):
        seen(id(weight), kwargs.get("out_last"), kwargs.get("x_last"))
        return real(x_shape, weight, *args, **kwargs)

    def run_tiles(x, layout, g, relu, out, channels_last=False):
        seen(id(layout), channels_last, layout.geometry.x_last)
        return real_tiles(x, layout, g, relu, out, channels_last)

    monkeypatch.setattr(winograd, "plan_forward", plan_forward)
    monkeypatch.setattr(tiled, "run_tiles", run_tiles)
    with engine_blas(), folds_frozen(), finite_scans_skipped():
        program, _ = compile_stack(model, x.shape)
        np.testing.assert_array_equal(program(x), model.infer(x))
    assert (len(writers), len(readers), len(writers & readers)) == counts


@pytest.mark.parametrize("name, pooled", [("vgg_bn", 1), ("every_step_kind", 1)])
def test_a_winograd_convolution_then_relu_then_2x2_pool_pools_in_its_output_transform(
        name, pooled, monkeypatch):
    """vgg-bn's second convolution (and the nested stack's in ``every_step_kind``) is a Winograd
    Conv2D -> ReLU -> MaxPool2D(2): the program plans its output transform to pool, so that the
    full-size output is never written; the bits are ``Sequential.infer``'s."""
    from cnn_im2col.conv import winograd

    model, shape = NETS[name](np.float32)
    x = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
    pools = []
    real = winograd.plan_forward
    monkeypatch.setattr(winograd, "plan_forward",
                        lambda *a, **k: pools.append(k.get("pool", False)) or real(*a, **k))
    with engine_blas(), folds_frozen(), finite_scans_skipped():
        program, _ = compile_stack(model, x.shape)
        np.testing.assert_array_equal(program(x), model.infer(x))
    assert sum(pools) == pooled


def test_mobilenets_blocks_by_rows_pass_channels_last_maps_along_their_chain(monkeypatch):
    """MobileNetV2's blocks on small maps run by rows (``inverted_residual.by_rows``): from the
    first of them to the last, through the identity Residuals around them and the stacks that
    hold them, each block reads the one before it channels-last and writes for the next, and the
    last hands its rows to the fused head (1x1 -> ReLU6 -> global pool,
    ``pointwise.forward_pooled``). On 16x16 images every block runs by rows, and the stem (a
    direct-strategy convolution, run in tiles there) writes the first block's input channels-last
    too, so nothing converts; the bits are ``Sequential.infer``'s."""
    from cnn_im2col.conv import inverted_residual, pointwise

    model, shape = NETS["mobilenetv2"](np.float32)
    _with_statistics(model)  # folds that matter, made after the program is planned
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    calls = []
    real, real_head = inverted_residual._rows, pointwise.forward_pooled

    def rows(x, w, tables, out_plane, x_last, out_last, *rest):
        if not calls or calls[-1][2] is not w:  # a block's first slice
            calls.append((x_last, out_last, w))
        return real(x, w, tables, out_plane, x_last, out_last, *rest)

    def head(x, weight_t, bias, activation=None, x_last=False):
        calls.append((x_last, "head"))
        return real_head(x, weight_t, bias, activation, x_last)

    with engine_blas(), finite_scans_skipped():
        expected = copy.deepcopy(model).infer(x)  # the model's own folds not yet made
        with folds_frozen():
            program, _ = compile_stack(model, x.shape)  # a session's order: planned first
            monkeypatch.setattr(inverted_residual, "_rows", rows)
            monkeypatch.setattr(pointwise, "forward_pooled", head)
            out = program(x)
            monkeypatch.undo()
    np.testing.assert_array_equal(out, expected)
    calls = [call[:2] for call in calls]
    chain = [i for i, (x_last, out_last) in enumerate(calls) if x_last or out_last is True]
    assert len(chain) >= 10 and chain == list(range(len(calls)))  # every block, then the head
    assert calls[-1] == (True, "head")
    assert all(calls[i] == (True, True) for i in chain[:-1])


@pytest.mark.parametrize("n", [2, 64])
def test_mobilenets_blocks_that_slice_a_batch_alike_run_as_one_chain(n, monkeypatch):
    """Consecutive blocks by rows, alone or in identity Residuals, whose batch slices agree
    (``inverted_residual.link_slices``) run as one chain: each slice through all of them in one
    map (``planned_chain``); a block that slices otherwise starts the next chain. The same
    kernels on the same rows: ``Sequential.infer``'s bits, which runs them block by block."""
    from cnn_im2col.conv import inverted_residual

    model, shape = NETS["mobilenetv2"](np.float32)
    _with_statistics(model)
    x = np.random.default_rng(n).random((n, *shape), dtype=np.float32)
    chains = []
    real = inverted_residual.planned_chain

    def planned_chain(links):
        chains.append(links)
        return real(links)

    monkeypatch.setattr(inverted_residual, "planned_chain", planned_chain)
    with engine_blas(), finite_scans_skipped():
        expected = copy.deepcopy(model).infer(x)
        with folds_frozen():
            program, _ = compile_stack(model, x.shape)
            out = program(x)
    np.testing.assert_array_equal(out, expected)
    assert chains and all(len(links) >= 2 for links in chains)
    assert any(link.residual for links in chains for link in links)
    for links in chains:
        slices = inverted_residual.link_slices(links[0])
        assert all(inverted_residual.link_slices(link) == slices for link in links)
        assert all(a.shape[0] == b.shape[0] for a, b in zip(links, links[1:]))
