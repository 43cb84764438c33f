"""Tests for cnn_im2col.onnx's export: files checked by onnx.checker and run by onnxruntime on
hypothesis-drawn networks of every layer kind (and read back), the attributes that carry the
engine's conventions, dtypes, nesting, and every export error."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx_helpers import TOL, ReferenceEvaluator, onnx, run_ort  # skips without onnx, onnxruntime

from cnn_im2col import onnx as cx
from cnn_im2col.layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from cnn_im2col.model import Sequential

TensorProto, helper = onnx.TensorProto, onnx.helper


def randomize(model, seed=0):
    """Non-trivial parameters and running statistics everywhere (biases start at zero, means at
    0)."""
    rng = np.random.default_rng(seed)
    for value in model.params.values():
        value[...] = rng.uniform(-1, 1, value.shape)
    for key, value in model.buffers.items():
        if key.endswith("running_mean"):
            value[...] = rng.uniform(-1, 1, value.shape)
        elif key.endswith("running_var"):
            value[...] = rng.uniform(0.25, 2, value.shape)
    return model


# --------------------------------------------------------------------------- hypothesis networks


@st.composite
def networks(draw):
    """(model, per-sample input shape): conv blocks (grouped, dilated), BatchNorm2D, pooling of both
    kinds (both average-pool divisors), Flatten of both orders or GlobalAvgPool2D, Dense, every
    activation, Dropout, maybe a final Softmax."""
    c, h, w = draw(st.integers(1, 4)), draw(st.integers(5, 9)), draw(st.integers(5, 9))
    shape = (c, h, w)
    layers = []
    for block in range(draw(st.integers(1, 2))):
        k = draw(st.integers(1, min(3, *shape[1:])))
        stride = draw(st.sampled_from([1, 2, (1, 2)]))
        padding = draw(st.sampled_from([0, 1, (1, 0), "valid"] + (["same"] if stride == 1 else [])))
        bias = draw(st.sampled_from(["tied", "untied", None]))
        groups = draw(st.sampled_from([g for g in (1, 2, 3, 4) if shape[0] % g == 0]))
        out = groups * draw(st.integers(1, 2))
        dilation = draw(st.sampled_from([1, 2, (1, 2)]))
        dy, dx = (dilation, dilation) if isinstance(dilation, int) else dilation
        if (
            dy * (k - 1) + 1 > shape[1] or dx * (k - 1) + 1 > shape[2]
        ):  # the dilated kernel must fit unpadded
            dilation = 1
        conv = Conv2D(
            shape[0],
            out,
            k,
            stride,
            padding,
            bias=bias,
            input_size=shape[1:] if bias == "untied" else None,
            seed=block,
            dilation=dilation,
            groups=groups,
        )
        layers.append(conv)
        shape = conv.output_shape(shape)
        if draw(st.booleans()):
            layers.append(
                BatchNorm2D(
                    shape[0], eps=draw(st.sampled_from([1e-5, 1e-3])), affine=draw(st.booleans())
                )
            )
        layers.append(draw(st.sampled_from([ReLU, Sigmoid, Tanh]))())
        if min(shape[1:]) >= 2 and draw(st.booleans()):
            kind = draw(st.sampled_from(["max", "avg", "scale"]))
            size = draw(st.integers(2, min(3, *shape[1:])))
            pool_stride = draw(st.integers(1, size))  # < size: overlapping windows
            pad = draw(st.integers(0, size // 2))
            if kind == "max":
                pool = MaxPool2D(size, pool_stride, pad)
            else:
                pool = AvgPool2D(
                    size,
                    pool_stride,
                    pad,
                    trainable_scale=kind == "scale",
                    channels=shape[0] if kind == "scale" else None,
                    count_include_pad=draw(st.booleans()),
                )
            layers.append(pool)
            shape = pool.output_shape(shape)
    if draw(st.booleans()):
        layers.append(GlobalAvgPool2D())
        shape = (shape[0],)
    else:
        layers.append(Flatten(draw(st.sampled_from(["C", "F"]))))
    features = int(np.prod(shape))
    if draw(st.booleans()):
        layers.append(Dropout(draw(st.sampled_from([0.0, 0.25, 0.5]))))
    hidden = draw(st.integers(1, 6))
    layers += [
        Dense(features, hidden, bias=draw(st.booleans()), seed=7),
        draw(st.sampled_from([ReLU, Sigmoid, Tanh]))(),
        Dense(hidden, 3, seed=8),
    ]
    if draw(st.booleans()):
        layers.append(Softmax())
    return randomize(Sequential(layers), draw(st.integers(0, 100))), (c, h, w)


@settings(max_examples=15, deadline=None)
@given(networks(), st.integers(0, 2**31 - 1))
def test_export_runs_in_onnxruntime_like_the_engine(net, seed):
    model, shape = net
    proto = cx.to_onnx(model, shape)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    x = np.random.default_rng(seed).standard_normal((3, *shape)).astype(np.float32)
    expected = model.forward(x)
    np.testing.assert_allclose(run_ort(proto, x), expected, rtol=TOL, atol=TOL)
    # the batch axis is dynamic
    np.testing.assert_allclose(run_ort(proto, x[:1]), expected[:1], rtol=TOL, atol=TOL)
    # and the file reads back as the same network
    back = cx.from_onnx(proto)
    assert [type(layer) for layer in back.layers] == [type(layer) for layer in model.layers]
    np.testing.assert_allclose(back.forward(x), expected, rtol=1e-6, atol=1e-6)


def test_export_writes_a_file_that_loads_back(tmp_path):
    model = randomize(
        Sequential(
            [
                Conv2D(1, 2, 3, padding="same", bias="untied", input_size=(6, 6)),
                ReLU(),
                AvgPool2D(2, trainable_scale=True, channels=2),
                Flatten("F"),
                Dropout(0.3),
                Dense(18, 4),
            ]
        )
    )
    path = tmp_path / "net.onnx"
    cx.export(model, path, (1, 6, 6))
    x = np.random.default_rng(1).random((2, 1, 6, 6), dtype=np.float32)
    np.testing.assert_allclose(run_ort(path, x), model.forward(x), rtol=TOL, atol=TOL)
    back = cx.load(path)
    assert back.layers[0].bias_mode == "untied" and back.layers[0].padding == [
        1,
        1,
    ]  # "same" of a 3x3
    assert back.layers[3].order == "F" and back.layers[4].p == 0.3
    assert back.layers[2].params["weight"].shape == (2,)
    assert back.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(back.state_dict()[key], value, rtol=1e-6, err_msg=key)
    np.testing.assert_allclose(back.forward(x), model.forward(x), rtol=1e-6, atol=1e-7)


def test_average_pool_divisor_is_count_include_pad():
    """The engine's mean divides by KH*KW with the zero padding counted: count_include_pad=1."""
    model = Sequential([AvgPool2D(3, 1, 1)])
    proto = cx.to_onnx(model, (1, 4, 4))
    (pool,) = [n for n in proto.graph.node if n.op_type == "AveragePool"]
    assert (
        helper.get_attribute_value(next(a for a in pool.attribute if a.name == "count_include_pad"))
        == 1
    )
    x = np.ones((1, 1, 4, 4), np.float32)
    out = run_ort(proto, x)
    assert out[0, 0, 0, 0] == pytest.approx(4 / 9)  # a corner window: 4 pixels in, 5 of padding
    np.testing.assert_allclose(out, model.forward(x), rtol=TOL)


def test_new_layers_export_run_in_onnxruntime_and_read_back():
    """Grouped + dilated Conv ("same" pads the dilated span), BatchNorm2D with trained statistics
    (affine, affine=False, momentum=None), AvgPool2D count_include_pad=False with and without a
    learned scale, a depthwise Conv and GlobalAvgPool2D, in one network."""
    model = Sequential(
        [
            Conv2D(2, 4, 3, padding="same", dilation=2, groups=2, bias="untied", input_size=(7, 7)),
            BatchNorm2D(4),
            ReLU(),
            AvgPool2D(3, 1, 1, count_include_pad=False),
            BatchNorm2D(4, eps=1e-3, affine=False, momentum=None),
            AvgPool2D(3, 1, 1, trainable_scale=True, channels=4, count_include_pad=False),
            Conv2D(4, 4, 3, padding=1, dilation=(1, 2), groups=4),
            BatchNorm2D(4, momentum=0.25),
            GlobalAvgPool2D(),
            Dense(4, 3),
        ]
    )
    x = np.random.default_rng(4).standard_normal((6, 2, 7, 7)).astype(np.float32)
    randomize(model, 4)
    model.forward(x, training=True)  # running statistics (and counters) from two real batches
    model.forward(2 * x + 1, training=True)
    expected = model.forward(x)
    proto = cx.to_onnx(model, (2, 7, 7))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("BatchNormalization") == 3 and ops.count("GlobalAveragePool") == 1
    conv0 = next(n for n in proto.graph.node if n.op_type == "Conv")
    attrs = {a.name: helper.get_attribute_value(a) for a in conv0.attribute}
    assert attrs["group"] == 2 and attrs["dilations"] == [2, 2] and attrs["pads"] == [2, 2, 2, 2]
    bn = {
        a.name: helper.get_attribute_value(a)
        for a in proto.graph.node[ops.index("BatchNormalization")].attribute
    }
    assert bn["momentum"] == pytest.approx(0.9) and bn["epsilon"] == pytest.approx(1e-5)
    pools = [n for n in proto.graph.node if n.op_type == "AveragePool"]
    assert [
        helper.get_attribute_value(a)
        for n in pools
        for a in n.attribute
        if a.name == "count_include_pad"
    ] == [0, 0]
    np.testing.assert_allclose(run_ort(proto, x), expected, rtol=TOL, atol=TOL)
    back = cx.from_onnx(proto)
    assert [type(layer) for layer in back.layers] == [type(layer) for layer in model.layers]
    assert (
        back.layers[0].groups == 2
        and back.layers[0].dilation == (2, 2)
        and back.layers[0].padding == [2, 2]
    )
    assert back.layers[6].groups == 4 and back.layers[6].dilation == (1, 2)
    assert not back.layers[3].count_include_pad and not back.layers[5].count_include_pad
    assert (
        back.layers[1].momentum == 0.1 and back.layers[1].eps == 1e-5
    )  # the decimals, not their float32
    assert back.layers[7].momentum == 0.25 and back.layers[4].eps == 1e-3
    assert back.layers[4].affine  # gamma = 1, beta = 0: the same numbers, trainable
    for i in (1, 4, 7):
        for key in ("running_mean", "running_var"):
            np.testing.assert_array_equal(back.layers[i].buffers[key], model.layers[i].buffers[key])
        assert (
            int(back.layers[i].buffers["num_batches_tracked"]) == 0
        )  # ONNX does not carry the counter
    np.testing.assert_allclose(back.forward(x), expected, rtol=1e-6, atol=1e-6)


def test_float64_and_mixed_dtypes_follow_the_engine():
    """The engine casts a layer's input to its dtype; the export does it with Cast nodes.
    onnxruntime's CPU provider has no float64 Conv, so float64 files are run by onnx's reference
    evaluator."""
    model = randomize(
        Sequential([Conv2D(2, 3, 3, dtype=np.float64), Tanh(), Flatten(), Dense(27, 4)])
    )
    proto = cx.to_onnx(model, (2, 5, 5))
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert [n.op_type for n in proto.graph.node].count("Cast") == 1
    x = np.random.default_rng(2).standard_normal((2, 2, 5, 5))
    out = ReferenceEvaluator(proto).run(None, {"input": x})[0]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, model.forward(x), rtol=TOL, atol=TOL)
    # dtype="float32": everything float32, runnable by onnxruntime
    single = cx.to_onnx(model, (2, 5, 5), dtype="float32")
    assert not [n for n in single.graph.node if n.op_type == "Cast"]
    np.testing.assert_allclose(
        run_ort(single, x.astype(np.float32)), model.forward(x), rtol=1e-4, atol=1e-5
    )


def test_nested_sequential_is_exported_in_line():
    inner = Sequential([Conv2D(1, 2, 3), ReLU()])
    model = randomize(Sequential([inner, Flatten(), Dense(8, 2)]))
    proto = cx.to_onnx(model, (1, 4, 4))
    assert {t.name for t in proto.graph.initializer} == set(model.state_dict())
    x = np.random.default_rng(3).random((2, 1, 4, 4), dtype=np.float32)
    np.testing.assert_allclose(run_ort(proto, x), model.forward(x), rtol=TOL, atol=TOL)


class Custom:
    """A user's layer: follows the protocol, has no ONNX exporter."""

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x, training=False):
        return x

    def backward(self, dout):
        return dout

    def output_shape(self, shape):
        return shape

    def __repr__(self):
        return "Custom()"


def test_export_errors(tmp_path):
    path = tmp_path / "net.onnx"
    path.write_bytes(b"old")
    with pytest.raises(
        ValueError,
        match=r"layer 1 Custom\(\) \(Custom\) cannot be exported to ONNX; "
        r"exportable layers: Conv2D",
    ):
        cx.export(Sequential([ReLU(), Custom(), ReLU()]), path, (1, 3, 3))
    assert path.read_bytes() == b"old"  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]  # no temporary file left
    with pytest.raises(
        ValueError, match=r"layer 0 Dense\(4, 2\) cannot take the input of shape \(3,\)"
    ):
        cx.export(Sequential([Dense(4, 2)]), path, (3,))
    with pytest.raises(TypeError, match="per-sample shape"):
        cx.export(Sequential([Dense(4, 2)]), path, 4)
    with pytest.raises(ValueError, match=r"export: this model does not know its input shape .*"
                                         r"pass input_shape=\(C, H, W\)"):
        cx.export(Sequential([ReLU()]), path)
    with pytest.raises(TypeError, match="must be a Sequential"):
        cx.export(Dense(4, 2), path, (4,))
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        cx.export(Sequential([Dense(4, 2)]), path, (4,), dtype="int8")
    with pytest.raises(
        ValueError,
        match=r"layer 1 BatchNorm2D\(2, track_running_stats=False\): "
        r"track_running_stats=False normalises with the batch's statistics",
    ):
        cx.export(
            Sequential([Conv2D(1, 2, 3), BatchNorm2D(2, track_running_stats=False)]),
            path,
            (1, 5, 5),
        )
    assert path.read_bytes() == b"old"


def test_a_normalization_layer_exports_as_batch_normalization_and_comes_back_equal(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from cnn_im2col import onnx as cnn_onnx
    from cnn_im2col.layers import Conv2D, Flatten, Normalization

    rng = np.random.default_rng(0)
    x = (rng.random((5, 3, 6, 6)) * [[[0.5]], [[2.0]], [[0.1]]]).astype(np.float32)
    model = Sequential([Normalization(3).adapt(x), Conv2D(3, 2, 3, seed=0), Flatten()],
                       class_names=None)
    path = tmp_path / "n.onnx"
    cnn_onnx.export(model, path, input_shape=(3, 6, 6))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = model.forward(x)
    np.testing.assert_allclose(session.run(None, {"input": x})[0], ours, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cnn_onnx.load(path).forward(x), ours, rtol=1e-5, atol=1e-5)


def test_the_mobile_activations_go_to_onnx_and_come_back_with_the_same_numbers(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from cnn_im2col import onnx as cnn_onnx
    from cnn_im2col.layers import (
        Conv2D,
        Flatten,
        HardSigmoid,
        HardSwish,
        Identity,
        LeakyReLU,
        ReLU6,
    )

    model = Sequential([Conv2D(2, 4, 3, seed=0), ReLU6(), Conv2D(4, 4, 1, seed=1), HardSwish(),
                        Conv2D(4, 4, 1, seed=2), LeakyReLU(0.2), Identity(), HardSigmoid(),
                        Flatten()])
    x = (np.random.default_rng(0).standard_normal((3, 2, 6, 6)) * 4).astype(np.float32)
    path = tmp_path / "mobile.onnx"
    cnn_onnx.export(model, path, input_shape=(2, 6, 6))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = model.forward(x)
    np.testing.assert_allclose(session.run(None, {"input": x})[0], ours, rtol=1e-5, atol=1e-6)
    back = cnn_onnx.load(path)
    assert [type(layer).__name__ for layer in back.layers] == [
        "Conv2D", "ReLU6", "Conv2D", "HardSwish", "Conv2D", "LeakyReLU", "HardSigmoid", "Flatten"]
    assert back.layers[5].negative_slope == 0.2
    np.testing.assert_allclose(back.forward(x), ours, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "layer",
    [
        MaxPool2D(3, 2, 1, ceil_mode=True),
        MaxPool2D(2, 2, ceil_mode=True, dilation=2),
        MaxPool2D(3, 1, 1, dilation=(2, 1)),
        AvgPool2D(3, 2, 1, ceil_mode=True, count_include_pad=False),
        AvgPool2D(3, 2, 1, ceil_mode=True),
        AvgPool2D(2, 2, ceil_mode=True),
    ],
    ids=repr,
)
@pytest.mark.parametrize("size", [7, 8])
def test_pools_with_ceil_mode_and_dilation_run_like_onnxruntime_and_read_back(layer, size):
    model = Sequential([layer])
    x = np.random.default_rng(size).standard_normal((2, 3, size, size)).astype(np.float32)
    proto = cx.to_onnx(model, input_shape=(3, size, size))
    np.testing.assert_allclose(run_ort(proto, x), model.predict(x), rtol=TOL, atol=TOL)
    back = cx.from_onnx(proto)
    assert back.config()["layers"] == model.config()["layers"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_padding_and_adaptive_max_pooling_run_like_onnxruntime_and_read_back(dtype):
    from cnn_im2col.layers import AdaptiveMaxPool2D, ConstantPad2D, ZeroPad2D

    model = Sequential([ZeroPad2D((0, 1, 0, 1)), Conv2D(3, 4, 3, stride=2, dtype=dtype, seed=0),
                        ConstantPad2D((1, 1, 0, 2), -0.5), AdaptiveMaxPool2D(2), ZeroPad2D(1),
                        AdaptiveMaxPool2D(1)])
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 8)).astype(dtype)
    proto = cx.to_onnx(model, input_shape=(3, 9, 8))
    assert [n.op_type for n in proto.graph.node] == [
        "Pad", "Conv", "Pad", "MaxPool", "Pad", "GlobalMaxPool", "Identity"]
    # onnxruntime has no float64 Conv: ONNX's reference evaluator judges that dtype
    theirs = run_ort(proto, x) if dtype == np.float32 else ReferenceEvaluator(proto).run(
        None, {"input": x})[0]
    np.testing.assert_allclose(theirs, model.predict(x), rtol=TOL, atol=TOL)
    back = cx.from_onnx(proto)
    dt = "" if dtype == np.float32 else ", dtype='float64'"
    assert [repr(layer) for layer in back.layers] == [  # 6x6 to 2x2: a MaxPool of 3x3 windows
        "ZeroPad2D((0, 1, 0, 1))", f"Conv2D(3, 4, 3, stride=2{dt})", "ConstantPad2D((1, 1, 0, 2), "
        "value=-0.5)", "MaxPool2D(3, stride=3)", "ZeroPad2D(1)", "AdaptiveMaxPool2D(1)"]
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    with pytest.raises(ValueError, match=r"AdaptiveMaxPool2D\(2\).* pools 5x5 to 2x2, windows of "
                                         r"different sizes"):
        cx.to_onnx(Sequential([AdaptiveMaxPool2D(2)]), input_shape=(1, 5, 5))
