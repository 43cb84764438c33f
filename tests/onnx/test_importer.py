"""Tests for cnn_im2col.onnx's import: graphs built with onnx.helper (and a torch.onnx.export of a
LeNet and of BatchNorm / grouped / dilated networks when torch is importable) read as the engine's
layers and run like onnxruntime, and every import and load error."""

import warnings

import numpy as np
import pytest
from onnx_helpers import (  # skips without onnx, onnxruntime
    TOL,
    ReferenceEvaluator,
    make_model,
    onnx,
    run_ort,
)

from cnn_im2col import onnx as cx
from cnn_im2col.layers import BatchNorm2D, Conv2D, Dense, Flatten, ReLU
from cnn_im2col.model import Sequential

TensorProto, helper, numpy_helper = onnx.TensorProto, onnx.helper, onnx.numpy_helper


# ------------------------------------------------------------------ import: helper-built graphs


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def assert_imports_like_onnxruntime(proto, input_shape, n=2):
    onnx.checker.check_model(proto)
    model = cx.from_onnx(proto)
    x = rand(n, *input_shape, seed=5)
    np.testing.assert_allclose(model.forward(x), run_ort(proto, x), rtol=TOL, atol=TOL)
    return model


def test_import_gemm_with_alpha_beta_and_untransposed_weight():
    init = {"w": rand(6, 4), "b": rand(4, seed=1)}
    proto = make_model(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], alpha=0.5, beta=2.0)], init, [6]
    )
    model = assert_imports_like_onnxruntime(proto, (6,))
    assert isinstance(model.layers[0], Dense) and model.layers[0].params["weight"].shape == (4, 6)


def test_import_matmul_add_reshape_constant_identity_and_dropout():
    nodes = [
        helper.make_node(
            "Constant", [], ["shape"], value=numpy_helper.from_array(np.array([0, -1], np.int64))
        ),
        helper.make_node("Identity", ["x"], ["x1"]),
        helper.make_node("Reshape", ["x1", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["mm"]),
        helper.make_node("Add", ["b", "mm"], ["z"]),  # the constant first: Add commutes
        helper.make_node("Dropout", ["z", "ratio"], ["d", "mask"]),
        helper.make_node("Softmax", ["d"], ["y"], axis=-1),
    ]
    init = {"w": rand(12, 5), "b": rand(5, seed=1), "ratio": np.array(0.25, np.float32)}
    model = assert_imports_like_onnxruntime(make_model(nodes, init, [3, 2, 2]), (3, 2, 2))
    assert [type(layer).__name__ for layer in model.layers] == [
        "Flatten",
        "Dense",
        "Dropout",
        "Softmax",
    ]
    assert model.layers[2].p == 0.25


def test_import_matmul_without_bias_and_reshape_to_features():
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["y"]),
    ]
    init = {"shape": np.array([-1, 8], np.int64), "w": rand(8, 3)}
    model = assert_imports_like_onnxruntime(make_model(nodes, init, [2, 2, 2]), (2, 2, 2))
    assert "bias" not in model.layers[1].params


def test_import_conv_auto_pad_and_bias_added_after():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], auto_pad="SAME_UPPER"),
        helper.make_node("Add", ["c", "b"], ["a"]),
        helper.make_node("Conv", ["a", "w2"], ["c2"], strides=[2, 1], pads=[1, 0, 1, 0]),
        helper.make_node("Add", ["c2", "b2"], ["y"]),
    ]
    init = {
        "w": rand(3, 2, 2, 2),
        "b": rand(1, 3, 1, 1, seed=1),
        "w2": rand(2, 3, 3, 3, seed=2),
        "b2": rand(2, 3, 3, seed=3),
    }
    model = assert_imports_like_onnxruntime(make_model(nodes, init, [2, 5, 5]), (2, 5, 5))
    assert model.layers[0].padding == "same" and model.layers[0].bias_mode == "tied"
    assert model.layers[1].bias_mode == "untied" and model.layers[1].input_size == [5, 5]


@pytest.mark.parametrize("size, stride, kernel", [((7, 8), (2, 2), 3), ((9, 5), (3, 2), (5, 2)),
                                                  ((6, 6), (2, 2), 1), ((4, 9), (1, 3), 3)])
def test_import_and_export_strided_same_upper_like_onnxruntime(size, stride, kernel, tmp_path):
    """ONNX's SAME_UPPER with strides (TensorFlow's "SAME"): ceil(H / s) outputs, the extra padding
    at the end; imported as Conv2D(padding="same"), and exported back with its explicit pads."""
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], strides=list(stride),
                              auto_pad="SAME_UPPER")]
    proto = make_model(nodes, {"w": rand(3, 2, *k)}, [2, *size])
    model = assert_imports_like_onnxruntime(proto, (2, *size))
    assert model.layers[0].padding == "same"
    out = model.check_shapes((2, *size))[-1]
    assert out == (3, -(-size[0] // stride[0]), -(-size[1] // stride[1]))
    x = rand(2, 2, *size, seed=4)
    path = tmp_path / "same.onnx"
    cx.export(model, path, input_shape=(2, *size))
    np.testing.assert_allclose(run_ort(str(path), x), model.forward(x), rtol=TOL, atol=TOL)


def test_import_pools_and_flatten_f():
    nodes = [
        helper.make_node(
            "MaxPool", ["x"], ["m"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]
        ),
        helper.make_node(
            "AveragePool", ["m"], ["a"], kernel_shape=[2, 2], strides=[2, 2], count_include_pad=0
        ),  # no padding: the divisor is the same
        helper.make_node(
            "AveragePool",
            ["a"],
            ["a2"],
            kernel_shape=[2, 2],
            pads=[1, 1, 1, 1],
            count_include_pad=1,
        ),
        helper.make_node("Mul", ["a2", "s"], ["s2"]),
        helper.make_node("Transpose", ["s2"], ["t"], perm=[0, 1, 3, 2]),
        helper.make_node("Flatten", ["t"], ["y"], axis=1),
    ]
    model = assert_imports_like_onnxruntime(
        make_model(nodes, {"s": rand(2, 1, 1)}, [2, 6, 6]), (2, 6, 6)
    )
    assert [type(layer).__name__ for layer in model.layers] == [
        "MaxPool2D",
        "AvgPool2D",
        "AvgPool2D",
        "Flatten",
    ]
    assert model.layers[2].params["weight"].shape == (2,) and model.layers[3].order == "F"
    assert model.layers[0].stride == (1, 1)  # ONNX's default stride is 1, not the window


@pytest.mark.parametrize("flatten", ["Flatten", "Reshape"])
def test_import_grouped_dilated_conv_batch_norm_and_global_average_pool(flatten):
    nodes = [
        helper.make_node(
            "Conv", ["x", "w", "b"], ["c"], group=2, dilations=[2, 1], pads=[2, 1, 2, 1]
        ),
        helper.make_node(
            "BatchNormalization",
            ["c", "g", "beta", "mean", "var"],
            ["n"],
            epsilon=1e-3,
            momentum=0.8,
        ),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["c2"], group=4, dilations=[2, 2], pads=[2, 2, 2, 2]),
        helper.make_node(
            "AveragePool", ["c2"], ["a"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]
        ),
        helper.make_node("BatchNormalization", ["a", "g", "beta", "mean", "var"], ["n2"]),
        helper.make_node("GlobalAveragePool", ["n2"], ["p"]),
        (
            helper.make_node("Flatten", ["p"], ["f"])
            if flatten == "Flatten"
            else helper.make_node("Reshape", ["p", "shape"], ["f"])
        ),
        helper.make_node("Gemm", ["f", "wd"], ["y"], transB=1),
    ]
    init = {
        "w": rand(4, 1, 3, 3),
        "b": rand(4, seed=1),
        "g": rand(4, seed=2),
        "beta": rand(4, seed=3),
        "mean": rand(4, seed=4),
        "var": np.linspace(0.5, 2, 4, dtype=np.float32),
        "w2": rand(4, 1, 3, 3, seed=5),
        "shape": np.array([0, -1], np.int64),
        "wd": rand(3, 4, seed=6),
    }
    model = assert_imports_like_onnxruntime(make_model(nodes, init, [2, 7, 6]), (2, 7, 6), n=3)
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D",
        "BatchNorm2D",
        "ReLU",
        "Conv2D",
        "AvgPool2D",
        "BatchNorm2D",
        "GlobalAvgPool2D",
        "Dense",
    ]
    conv, norm, _, depthwise, pool, norm2 = model.layers[:6]
    assert (conv.in_channels, conv.groups, conv.dilation, conv.padding) == (2, 2, (2, 1), [2, 1])
    assert (depthwise.groups, depthwise.dilation, depthwise.padding) == (4, (2, 2), [2, 2])
    assert (
        norm.eps == 1e-3 and norm.momentum == 0.2 and norm2.eps == 1e-5 and norm2.momentum == 0.1
    )  # ONNX defaults
    np.testing.assert_array_equal(norm.buffers["running_var"], init["var"])
    np.testing.assert_array_equal(norm.params["weight"], init["g"])
    assert not pool.count_include_pad  # ONNX's default divisor: the cells inside the image


def test_import_dilated_conv_auto_pad_same_pads_the_dilated_span():
    """SAME_UPPER pads (KH - 1) * dilation as the ONNX spec says; onnxruntime refuses dilated SAME
    convolutions, so onnx's reference evaluator is the judge here."""
    proto = make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], dilations=[1, 3], auto_pad="SAME_UPPER")],
        {"w": rand(2, 1, 2, 2)},
        [1, 7, 8],
    )  # spans 2 x 4: one more row / column at the end
    model = cx.from_onnx(proto)
    assert model.layers[0].padding == "same" and model.layers[0].dilation == (1, 3)
    x = rand(2, 1, 7, 8, seed=3)
    expected = ReferenceEvaluator(proto).run(None, {"x": x})[0]
    assert expected.shape == (2, 2, 7, 8)
    np.testing.assert_allclose(model.forward(x), expected, rtol=TOL, atol=TOL)


def test_torch_exported_lenet_reproduces_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.ReLU(),
        nn.Linear(120, 10),
    ).eval()
    x = torch.rand(5, 1, 28, 28)
    path = tmp_path / "lenet.onnx"
    # torch 2.13's default exporter (dynamo) needs onnxscript; the TorchScript one (dynamo=False)
    # does not
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (x,),
                str(path),
                dynamo=False,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
            )
    except Exception as exc:  # noqa: BLE001 - e.g. an exporter that needs a missing package
        pytest.skip(f"torch.onnx.export is unavailable here: {type(exc).__name__}: {exc}")
    model = cx.load(path)
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D",
        "ReLU",
        "MaxPool2D",
        "Conv2D",
        "Tanh",
        "AvgPool2D",
        "Flatten",
        "Dense",
        "ReLU",
        "Dense",
    ]
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(model.forward(x.numpy()), expected, rtol=1e-4, atol=1e-4)
    # the weights are PyTorch's, under PyTorch's names
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    assert model.state_dict().keys() == state.keys()
    for key, value in state.items():
        np.testing.assert_array_equal(model.state_dict()[key], value)


@pytest.mark.parametrize("mode", ["EVAL", "PRESERVE"])
def test_torch_exported_batch_norm_grouped_dilated_conv_and_global_pool_reproduce_pytorch(
    tmp_path, mode
):
    """TrainingMode.EVAL (the default) folds a BatchNorm that follows a Conv into the Conv; PRESERVE
    keeps every BatchNormalization (its scale and bias behind Identity nodes)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=2, dilation=2, groups=2),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=(1, 2), dilation=(1, 2), groups=4, bias=False),
        nn.ReLU(),
        nn.BatchNorm2d(4, eps=1e-3, momentum=0.3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    x = torch.rand(6, 2, 9, 9)
    net.train()
    net(x)
    net(2 * x)  # running statistics away from 0 and 1
    net.eval()
    path = tmp_path / "net.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (x,),
                str(path),
                dynamo=False,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                training=getattr(torch.onnx.TrainingMode, mode),
            )
    except Exception as exc:  # noqa: BLE001 - e.g. an exporter that needs a missing package
        pytest.skip(f"torch.onnx.export is unavailable here: {type(exc).__name__}: {exc}")
    model = cx.load(path)
    names = [type(layer).__name__ for layer in model.layers]
    tail = ["Conv2D", "ReLU", "BatchNorm2D", "GlobalAvgPool2D", "Dense"]
    assert names == (
        ["Conv2D", "ReLU", *tail] if mode == "EVAL" else ["Conv2D", "BatchNorm2D", "ReLU", *tail]
    )
    conv, depthwise = [layer for layer in model.layers if isinstance(layer, Conv2D)]
    assert (conv.groups, conv.dilation, depthwise.groups, depthwise.dilation) == (
        2,
        (2, 2),
        4,
        (1, 2),
    )
    norm = [layer for layer in model.layers if isinstance(layer, BatchNorm2D)][-1]
    assert norm.eps == 1e-3 and norm.momentum == 0.3  # ONNX's momentum 0.7: 1 - PyTorch's
    np.testing.assert_allclose(norm.buffers["running_var"], net[5].running_var.numpy(), rtol=1e-6)
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(model.forward(x.numpy()), expected, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- import errors


def conv_node(**attributes):
    return make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv1", **attributes)],
        {"w": rand(4, 2, 3, 3)},
        [2, 6, 6],
    )


def batch_norm_node(
    outputs=("y",), inputs=("x", "g", "b", "m", "v"), shapes=(3, 3, 3, 3), **attributes
):
    init = {name: np.ones(n, np.float32) for name, n in zip(inputs[1:], shapes)}
    return make_model(
        [
            helper.make_node(
                "BatchNormalization", list(inputs), list(outputs), name="bn", **attributes
            )
        ],
        init,
        [3, 4, 4],
    )


@pytest.mark.parametrize(
    ("proto", "message"),
    [
        (
            make_model(
                [helper.make_node("Conv", ["x", "w"], ["y"], name="conv1", group=3)],
                {"w": rand(4, 1, 3, 3)},
                [3, 6, 6],
            ),
            (
                r"node 'conv1' \(Conv\): group 3 with a weight of shape \(4, 1, 3, 3\); "
                r"supported: a group count of at least 1 that divides the output channels"
            ),
        ),
        (
            make_model(
                [helper.make_node("Conv", ["x", "w"], ["y"], name="conv1", group=2)],
                {"w": rand(4, 1, 3, 3)},
                [3, 6, 6],
            ),
            r"node 'conv1' \(Conv\): Conv2D\(2, 4, 3, bias=None, groups=2\): "
            r"input must be \(2, H, W\)",
        ),
        (
            conv_node(dilations=[0, 1]),
            r"node 'conv1' \(Conv\): dilations \[0, 1\]; supported: 2 dilations of at least 1",
        ),
        (
            make_model(
                [
                    helper.make_node(
                        "AveragePool", ["x"], ["y"], name="pool", kernel_shape=[2, 2],
                        dilations=[2, 2],
                    )
                ],
                {},
                [1, 5, 5],
            ),
            r"\(AveragePool\): dilations \[2, 2\]; supported: dilations 1 for AveragePool",
        ),
        (
            batch_norm_node(outputs=("y", "rm", "rv"), training_mode=1),
            (
                r"node 'bn' \(BatchNormalization\): training mode "
                r"\(training_mode 1, outputs \['y', 'rm', 'rv'\]\); "
                r"supported: inference: training_mode 0 and one output"
            ),
        ),
        (
            batch_norm_node(spatial=1),
            (
                r"node 'bn' \(BatchNormalization\): attribute 'spatial' is not supported; "
                r"supported: epsilon, momentum, training_mode"
            ),
        ),
        (
            batch_norm_node(shapes=(3, 3, 4, 3)),
            (
                r"node 'bn' \(BatchNormalization\): its inputs have shapes .*'mean': "
                r"\(4,\).*supported: scale, bias, mean and var of shape \(C,\)"
            ),
        ),
        (
            batch_norm_node(shapes=(4, 4, 4, 4)),
            (
                r"node 'bn' \(BatchNormalization\): BatchNorm2D\(4\): input must be "
                r"\(4, H, W\), got \(3, 4, 4\)"
            ),
        ),
        (
            make_model(
                [helper.make_node("GlobalAveragePool", ["x"], ["y"], name="gap")], {}, [3]
            ),
            r"node 'gap' \(GlobalAveragePool\): AdaptiveAvgPool2D\(.*\): input must be "
            r"\(C, H, W\), got \(3,\)",
        ),
        (
            conv_node(pads=[1, 0, 0, 0]),
            r"node 'conv1' \(Conv\): asymmetric pads .*supported: symmetric pads",
        ),
        (
            conv_node(strides=[2, 2], auto_pad="SAME_LOWER"),
            r"auto_pad 'SAME_LOWER' \(stride \[2, 2\].*supported: NOTSET, VALID, and for Conv "
            r"SAME_UPPER",
        ),
        (
            make_model(
                [
                    helper.make_node(
                        "MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], ceil_mode=2
                    )
                ],
                {},
                [1, 5, 5],
            ),
            r"node 'pool' \(MaxPool\): ceil_mode 2; supported: ceil_mode 0 or 1",
        ),
        (
            make_model(
                [
                    helper.make_node(
                        "MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], pads=[2, 2, 2, 2]
                    )
                ],
                {},
                [1, 5, 5],
            ),
            r"\(MaxPool\): MaxPool2D: padding must be at most half the window",
        ),
        (
            make_model([helper.make_node("Elu", ["x"], ["y"], name="act")], {}, [3]),
            r"node 'act' \(Elu\): this operator cannot be imported; "
            r"supported: Conv, Relu, Sigmoid, Tanh, MaxPool",
        ),
        (
            make_model(
                [
                    helper.make_node("Relu", ["x"], ["r"], name="a"),
                    helper.make_node("Sub", ["r", "x"], ["y"], name="join"),
                ],
                {},
                [3],
            ),
            r"node 'join' \(Sub\): joins 2 branches, 1 of them the identity; supported: Add "
            r"of 2 tensors or Sum of 2 or more \(Residual\), Mul",
        ),
        (
            make_model(
                [helper.make_node("Flatten", ["x"], ["y"], name="f", axis=2)], {}, [2, 3, 3]
            ),
            r"node 'f' \(Flatten\): axis 2; supported: axis 1",
        ),
        (
            make_model([helper.make_node("Softmax", ["x"], ["y"], name="s")], {}, [2, 3, 3]),
            r"node 's' \(Softmax\): axis 3 .*supported: a softmax over axis 1",
        ),
        (
            make_model([helper.make_node("Relu", ["x"], ["y"], name="r", alpha=1.0)], {}, [3]),
            r"node 'r' \(Relu\): attribute 'alpha' is not supported",
        ),
        (
            make_model(
                [helper.make_node("Gemm", ["x", "w"], ["y"], name="g", transA=1)],
                {"w": rand(3, 3)},
                [3],
            ),
            r"node 'g' \(Gemm\): transA 1; supported: transA 0",
        ),
        (
            make_model(
                [helper.make_node("Reshape", ["x", "s"], ["y"], name="r")],
                {"s": np.array([0, 3, -1])},
                [3, 2, 2],
            ),
            r"node 'r' \(Reshape\): shape \[0, 3, -1\] .*supported: a reshape to \(N, -1\)",
        ),
        (
            make_model(
                [helper.make_node("Transpose", ["x"], ["y"], name="t", perm=[0, 2, 3, 1])],
                {},
                [2, 3, 3],
            ),
            r"node 't' \(Transpose\): perm \[0, 2, 3, 1\]; "
            r"supported: perm \[0, 1, 3, 2\] right before Flatten",
        ),
        (make_model([helper.make_node("Identity", ["x"], ["y"])], {}, [3]), r"computes nothing"),
    ],
    ids=[
        "group",
        "group-channels",
        "dilations",
        "pool-dilations",
        "batch-norm-training",
        "batch-norm-attribute",
        "batch-norm-shapes",
        "batch-norm-channels",
        "gap-rank",
        "asymmetric-pads",
        "auto-pad",
        "ceil-mode",
        "pool-padding",
        "unknown-op",
        "branch",
        "flatten-axis",
        "softmax-axis",
        "attribute",
        "transA",
        "reshape",
        "transpose",
        "nothing",
    ],
)
def test_import_errors_name_the_node_the_operator_and_what_is_supported(proto, message):
    with pytest.raises(ValueError, match=message):
        cx.from_onnx(proto)


def test_import_errors_off_chain_nodes_and_computed_weights():
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Sigmoid", ["c"], ["z"])]
    proto = make_model(nodes[:1], {"c": np.ones(3, np.float32)}, [3])
    proto.graph.node.append(nodes[1])
    with pytest.raises(
        ValueError, match=r"a Sigmoid node are not on the path from the input to the output"
    ):
        cx.from_onnx(proto)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["y"], name="mm"),
    ]
    with pytest.raises(
        ValueError, match=r"node 'mm' \(MatMul\) reads \['w'\], which no node computes"
    ):
        cx.from_onnx(make_model(nodes, {}, [3]))
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Relu", ["c"], ["k"]),  # computed, but from a constant only
        helper.make_node("Add", ["r", "k"], ["y"], name="join"),
    ]
    with pytest.raises(
        ValueError,
        match=r"node 'join' \(Add\) reads the tensors \['r', 'k'\], which do not all branch "
        r"from one tensor",
    ):
        cx.from_onnx(make_model(nodes, {"c": np.ones(3, np.float32)}, [3]))


def test_import_refuses_two_inputs():
    proto = make_model([helper.make_node("Add", ["x", "x2"], ["y"], name="add")], {}, [3])
    proto.graph.input.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["N", 3]))
    with pytest.raises(
        ValueError,
        match=r"the graph has inputs \['x', 'x2'\] .*supported: one input and one output",
    ):
        cx.from_onnx(proto)


def test_import_refuses_a_used_second_output():
    node = helper.make_node("Dropout", ["x", "r"], ["y", "mask"], name="drop")
    proto = make_model(
        [node],
        {"r": np.array(0.5, np.float32)},
        [3],
        extra_outputs=[helper.make_tensor_value_info("mask", TensorProto.BOOL, None)],
    )
    with pytest.raises(ValueError, match=r"one input and one output"):
        cx.from_onnx(proto)


def test_load_errors_name_the_file(tmp_path):
    good = tmp_path / "good.onnx"
    cx.export(Sequential([Conv2D(1, 2, 3), ReLU(), Flatten(), Dense(8, 2)]), good, (1, 4, 4))
    data = good.read_bytes()
    for name, content in [
        ("truncated.onnx", data[: len(data) // 2]),
        ("random.onnx", bytes(range(256)) * 4),
        ("empty.onnx", b""),
        ("text.onnx", b"this is not a model\n"),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=rf"{name}: not a valid ONNX model file"):
            cx.load(path)
    with pytest.raises(FileNotFoundError, match="missing.onnx: no such ONNX file"):
        cx.load(tmp_path / "missing.onnx")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        cx.load(3)


def test_import_refuses_unreadable_initializer_data():
    proto = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"w": rand(3, 2)}, [3])
    proto.graph.initializer[0].raw_data = b"\x00" * 5  # 6 floats need 24 bytes
    with pytest.raises(ValueError, match=r"initializer 'w': its data cannot be read"):
        cx.from_onnx(proto)


# ------------------------------------------------------------------ Pad, GlobalMaxPool, Sum


def test_torch_exported_pads_fold_into_convs_and_pools_where_exact_and_stay_layers_elsewhere(
        tmp_path):
    """torch.onnx writes F.pad's pads as a subgraph of constants (ConstantOfShape, Concat, Slice,
    Transpose, ...), computed on import. A zero Pad folds into the next Conv / AveragePool when the
    sum of the paddings is one the layer has (symmetric, or stride-1 "same"); a TensorFlow-style
    pad before a strided conv, a pad of another value and a pad before a max pool stay layers."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 4, 3, 2),  # TF "SAME", stride 2: a layer
        nn.ConstantPad2d(1, 0.5), nn.MaxPool2d(2),  # not zeros: a layer
        nn.ZeroPad2d(1), nn.Conv2d(4, 4, 3),  # folds: padding 1
        nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(4, 4, 2),  # folds: stride-1 "same"
        nn.ZeroPad2d(1), nn.AvgPool2d(3, 1),  # folds: padding 1, the zeros counted
        nn.ZeroPad2d((1, 0, 1, 0)), nn.Conv2d(4, 4, 2),  # SAME_LOWER: a layer
        nn.ZeroPad2d(1), nn.MaxPool2d(3),  # zeros are not max pooling's -inf: a layer
        nn.AdaptiveMaxPool2d(1),  # GlobalMaxPool
    ).eval()
    x = torch.randn(3, 3, 17, 16)
    path = tmp_path / "pads.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17)
    model = cx.load(path)
    assert [repr(layer) for layer in model.layers] == [
        "ZeroPad2D((0, 1, 0, 1))", "Conv2D(3, 4, 3, stride=2)", "ConstantPad2D(1, value=0.5)",
        "MaxPool2D(2, stride=2)", "Conv2D(4, 4, 3, padding=1)", "Conv2D(4, 4, 2, padding='same')",
        "AvgPool2D(3, stride=1, padding=1)", "ZeroPad2D((1, 0, 1, 0))", "Conv2D(4, 4, 2)",
        "ZeroPad2D(1)", "MaxPool2D(3, stride=3)", "AdaptiveMaxPool2D(1)"]
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(model.forward(x.numpy()), expected, rtol=1e-5, atol=1e-6)
    tx = x.clone().requires_grad_(True)
    dout = np.random.default_rng(0).standard_normal(expected.shape).astype(np.float32)
    net(tx).backward(torch.tensor(dout))
    model.forward(x.numpy(), training=True)
    np.testing.assert_allclose(model.backward(dout), tx.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_import_pad_of_opset_2_attributes_and_refusals():
    init = {"w": rand(2, 3, 3, 3)}
    old = make_model([helper.make_node("Pad", ["x"], ["p"], pads=[0, 0, 1, 1, 0, 0, 1, 1]),
                      helper.make_node("Conv", ["p", "w"], ["y"])], init, [3, 5, 5], opset=10)
    model = assert_imports_like_onnxruntime(old, [3, 5, 5])
    assert [repr(layer) for layer in model.layers] == ["Conv2D(3, 2, 3, padding=1, bias=None)"]

    def pad(pads, mode="constant", value=None):
        inputs = ["x", "pads"] + (["v"] if value is not None else [])
        extra = {"v": np.float32(value)} if value is not None else {}
        return make_model([helper.make_node("Pad", inputs, ["y"], mode=mode)],
                          {"pads": np.array(pads, np.int64), **extra}, [3, 4, 4])

    for proto, message in [
        (pad([0, 0, 1, 1, 0, 0, 1, 1], mode="reflect"),
         r"node \(Pad\): mode 'reflect'; supported: mode 'constant'"),
        (pad([0, 1, 0, 0, 0, 0, 0, 0]), r"pads \[0, 1, 0, 0, 0, 0, 0, 0\].*supported: pads of at "
                                        r"least 0 on the spatial axes \(H, W\) only"),
        (pad([0, 0, -1, 0, 0, 0, 0, 0]), r"supported: pads of at least 0"),
        (pad([0, 0, 1, 1, 0, 0, 1, 1], value=np.inf), r"constant_value inf; supported: a finite"),
    ]:
        with pytest.raises(ValueError, match=message):
            cx.from_onnx(proto)


def test_import_a_sum_of_three_branches_as_nested_residuals():
    """Sum(x, conv1(x), conv2(x)): x + (conv1(x) + conv2(x)) as Residual(conv1, Residual(conv2,
    identity)) - the identity last, as for two."""
    init = {"w1": rand(3, 3, 1, 1, seed=1), "w2": rand(3, 3, 3, 3, seed=2)}
    proto = make_model([
        helper.make_node("Conv", ["x", "w1"], ["a"]),
        helper.make_node("Conv", ["x", "w2"], ["b"], pads=[1, 1, 1, 1]),
        helper.make_node("Sum", ["a", "x", "b"], ["s"]),
        helper.make_node("GlobalMaxPool", ["s"], ["y"]),
    ], init, [3, 5, 5])
    model = assert_imports_like_onnxruntime(proto, [3, 5, 5])
    residual = model.layers[0]
    assert type(residual).__name__ == "Residual" and type(residual.shortcut).__name__ == "Residual"
    assert residual.shortcut.shortcut is None
    assert [repr(layer) for layer in model.layers[1:]] == ["AdaptiveMaxPool2D(1)"]
    back = cx.from_onnx(cx.to_onnx(model, input_shape=(3, 5, 5)))  # written as two Adds
    x = rand(2, 3, 5, 5, seed=3)
    np.testing.assert_allclose(back.forward(x), model.forward(x), rtol=1e-6, atol=1e-6)
