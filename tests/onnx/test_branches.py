"""ONNX graphs that branch and rejoin: Residual, Concat and Gate exported (checked by onnxruntime,
read back), hand-built forks and joins imported, the joins that are refused, and torchvision's
ResNet-18, ResNet-20, MobileNetV2, MobileNetV3-Small and SqueezeNet 1.1 (written in PyTorch),
exported by ``torch.onnx.export`` and imported with PyTorch's outputs and input gradients."""

import warnings

import numpy as np
import pytest
from onnx_helpers import TOL, make_model, onnx, run_ort  # skips without onnx, onnxruntime

from cnn_im2col import onnx as cx
from cnn_im2col.architectures import mobilenetv2, resnet20
from cnn_im2col.containers import Concat, Gate, Residual
from cnn_im2col.layers import (
    AdaptiveAvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    GlobalAvgPool2D,
    HardSigmoid,
    Identity,
    ReLU,
)
from cnn_im2col.model import Sequential

helper = onnx.helper


def randomize(model, seed=0):
    """Parameters and running statistics away from their initial values (BatchNorm's mean 0 and
    var 1 would hide a wrong fold)."""
    rng = np.random.default_rng(seed)
    for value in model.params.values():
        value[...] = rng.uniform(-0.5, 0.5, value.shape)
    for key, value in model.buffers.items():
        if key.endswith("running_mean"):
            value[...] = rng.uniform(-0.5, 0.5, value.shape)
        elif key.endswith("running_var"):
            value[...] = rng.uniform(0.5, 2.0, value.shape)
    return model


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def relative_error(ours, theirs):
    """The largest difference relative to the largest value."""
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))


def kinds(layer):
    """The class names of a tree of layers, depth first (containers included)."""
    names = [type(layer).__name__]
    for _, child in getattr(layer, "named_children", lambda: [])():
        names += kinds(child)
    return names


def se_net():
    """Every container, nested: a residual body holding a gate, a concatenation with an identity
    branch, a projection shortcut."""
    return Sequential([
        Conv2D(3, 8, 3, padding=1), ReLU(),
        Residual(Sequential([Conv2D(8, 8, 3, padding=1, bias=None), BatchNorm2D(8), ReLU(),
                             Gate(Sequential([AdaptiveAvgPool2D(1), Conv2D(8, 4, 1), ReLU(),
                                              Conv2D(4, 8, 1), HardSigmoid()]))])),
        ReLU(),
        Concat([Sequential([Conv2D(8, 4, 1), ReLU()]), Sequential([Identity()])]),
        Residual(Sequential([Conv2D(12, 16, 3, stride=2, padding=1), ReLU()]),
                 Sequential([Conv2D(12, 16, 1, stride=2, bias=None), BatchNorm2D(16)])),
        GlobalAvgPool2D(), Dense(16, 5),
    ])


# ----------------------------------------------------------------------------------- export
def mobilenetv2_net():
    return mobilenetv2(seed=2)


@pytest.mark.parametrize(
    "make, shape",
    [(se_net, (3, 12, 12)), (lambda: resnet20(seed=1, input_shape=(3, 16, 16)), (3, 16, 16)),
     (mobilenetv2_net, (3, 32, 32))],
    ids=["containers", "resnet20", "mobilenetv2"],
)
def test_containers_export_run_in_onnxruntime_and_read_back_as_the_same_tree(make, shape, tmp_path):
    model = randomize(make())
    path = tmp_path / "net.onnx"
    cx.export(model, path, input_shape=shape)
    x = rand(3, *shape, seed=4)
    expected = model.predict(x)
    np.testing.assert_allclose(run_ort(path, x), expected, rtol=TOL, atol=TOL)
    back = cx.load(path)
    assert kinds(back).count("Residual") == kinds(model).count("Residual")
    assert kinds(back).count("Concat") == kinds(model).count("Concat")
    assert kinds(back).count("Gate") == kinds(model).count("Gate")
    np.testing.assert_allclose(back.predict(x), expected, rtol=TOL, atol=TOL)
    # the same arrays in the same order; under the same module paths unless the model nests plain
    # Sequentials, which ONNX writes in line (MobileNetV2's blocks: "3.0.weight" comes back as
    # "9.weight")
    ours, theirs = model.state_dict(), back.state_dict()
    assert len(ours) == len(theirs)
    for mine, back_value in zip(ours.values(), theirs.values()):
        np.testing.assert_array_equal(back_value, mine)
    if make is not mobilenetv2_net:
        assert ours.keys() == theirs.keys()


def test_branches_of_different_dtypes_are_cast_to_the_common_one():
    model = Sequential([Conv2D(2, 2, 1), Residual(Sequential([Conv2D(2, 2, 1, dtype=np.float64)]))])
    randomize(model)
    proto = cx.to_onnx(model, input_shape=(2, 3, 3))
    ops = [node.op_type for node in proto.graph.node]
    assert ops[-2:] == ["Add", "Identity"] and "Cast" in ops
    x = rand(2, 2, 3, 3)
    np.testing.assert_allclose(
        onnx.reference.ReferenceEvaluator(proto).run(None, {"input": x})[0],
        model.predict(x), rtol=1e-12, atol=1e-12,
    )


def test_adaptive_pool_exports_where_onnx_has_its_windows():
    for size, op in [(1, "GlobalAveragePool"), (2, "AveragePool")]:
        model = Sequential([AdaptiveAvgPool2D(size)])
        proto = cx.to_onnx(model, input_shape=(2, 4, 6))
        assert [n.op_type for n in proto.graph.node][0] == op
        x = rand(2, 2, 4, 6)
        np.testing.assert_allclose(run_ort(proto, x), model.predict(x), rtol=TOL, atol=TOL)
    with pytest.raises(ValueError, match=r"layer 0 AdaptiveAvgPool2D.* pools 5x5 to 2x2, windows "
                                         r"of different sizes"):
        cx.to_onnx(Sequential([AdaptiveAvgPool2D(2)]), input_shape=(1, 5, 5))


# ------------------------------------------------------------------------- hand-built graphs
W = rand(3, 3, 1, 1, seed=1)


def conv(x, y, name):
    return helper.make_node("Conv", [x, "w"], [y], name=name, kernel_shape=[1, 1])


@pytest.mark.parametrize(
    "nodes, tree",
    [
        ([conv("x", "c", "c"), helper.make_node("Add", ["x", "c"], ["y"])],
         ["Sequential", "Residual", "Sequential", "Conv2D"]),
        ([conv("x", "c", "c"), helper.make_node("Relu", ["x"], ["r"]),
          helper.make_node("Sum", ["r", "c"], ["y"])],
         ["Sequential", "Residual", "Sequential", "ReLU", "Sequential", "Conv2D"]),
        ([helper.make_node("GlobalAveragePool", ["x"], ["p"]), conv("p", "c", "c"),
          helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])],
         ["Sequential", "Gate", "Sequential", "AdaptiveAvgPool2D", "Conv2D", "Sigmoid"]),
        ([conv("x", "c", "c"), helper.make_node("Concat", ["x", "c"], ["y"], axis=-3)],
         ["Sequential", "Concat", "Sequential", "Identity", "Sequential", "Conv2D"]),
        ([helper.make_node("Relu", ["x"], ["r"]), conv("r", "c", "c"),
          helper.make_node("Add", ["r", "c"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
          helper.make_node("Mul", ["a", "b"], ["y"])],
         ["Sequential", "ReLU", "Residual", "Sequential", "Conv2D", "Gate", "Sequential", "ReLU"]),
        # x + conv(x) + relu(x), as torch.onnx writes it: Add(Add(x, c), r), joined in steps
        ([conv("x", "c", "c"), helper.make_node("Relu", ["x"], ["r"]),
          helper.make_node("Add", ["x", "c"], ["a"]), helper.make_node("Add", ["a", "r"], ["y"])],
         ["Sequential", "Residual", "Sequential", "Residual", "Sequential", "Conv2D",
          "Sequential", "ReLU"]),
    ],
    ids=["add-identity-first", "sum-two-branches", "mul-gate-first", "concat-identity", "chained",
         "joined-in-steps"],
)
def test_forks_and_joins_import_as_containers_like_onnxruntime(nodes, tree):
    proto = make_model(nodes, {"w": W}, [3, 4, 4])
    onnx.checker.check_model(proto)
    model = cx.from_onnx(proto)
    assert kinds(model) == tree
    x = rand(2, 3, 4, 4, seed=5)
    np.testing.assert_allclose(model.forward(x), run_ort(proto, x), rtol=TOL, atol=TOL)
    assert model.input_shape == (3, 4, 4)


@pytest.mark.parametrize(
    "nodes, message",
    [
        ([conv("x", "c", "c"), helper.make_node("Relu", ["x"], ["r"]),
          helper.make_node("Mul", ["r", "c"], ["y"], name="m")],
         r"node 'm' \(Mul\): joins 2 branches, 0 of them the identity; supported: Add of 2"),
        ([helper.make_node("Add", ["x", "x"], ["y"], name="twice")],
         r"node 'twice' \(Add\) reads the same tensor twice \(\['x', 'x'\]\)"),
        ([conv("x", "c", "c"), helper.make_node("Concat", ["x", "c"], ["y"], name="cat", axis=2)],
         r"node 'cat' \(Concat\): axis 2; supported: Concat on axis 1"),
        ([conv("x", "c", "c"), helper.make_node("Relu", ["x"], ["y"])],
         r"tensor 'c': no node reads it"),
        ([helper.make_node("Relu", ["x"], ["r"]), conv("x", "c", "c"),
          helper.make_node("Concat", ["r", "c"], ["y"], name="cat", axis=1),
          helper.make_node("Sigmoid", ["y"], ["z"])],
         r"the output 'y' is also read by a Sigmoid node"),
    ],
    ids=["mul-of-two-branches", "add-x-x", "concat-axis", "dangling",
         "output-read"],
)
def test_joins_that_are_not_containers_are_refused_naming_the_node(nodes, message):
    proto = make_model(nodes, {"w": W}, [3, 4, 4])
    if nodes[-1].op_type == "Sigmoid":  # the graph's output is y, which the Sigmoid reads
        proto.graph.output[0].name = "y"
    with pytest.raises(ValueError, match=message):
        cx.from_onnx(proto)


# ---------------------------------------------------------------- torchvision through torch.onnx
def torch_export(net, x, path):
    torch = pytest.importorskip("torch")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17,
                              input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    except Exception as exc:  # noqa: BLE001 - e.g. an exporter that needs a missing package
        pytest.skip(f"torch.onnx.export is unavailable here: {type(exc).__name__}: {exc}")


def torch_randomize(net, torch, seed=0):
    """Random BatchNorm statistics and affine parameters, so that the exporter's folding of each
    BatchNorm into its Conv is tested with values that matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(torch.rand(c, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(c, generator=generator) - 0.5)
    return net.eval()


NETS = {  # name: (builder, input size, the containers expected, has max pooling)
    "resnet20": ("resnet20", 32, {"Residual": 9}, False),
    "resnet18": ("resnet18", 64, {"Residual": 8}, True),
    "mobilenetv2": ("MobileNetV2", 64, {"Residual": 10}, False),
    "mobilenetv3-small": ("MobileNetV3Small", 64, {"Residual": 6, "Gate": 9}, False),
    "squeezenet1.1": ("SqueezeNet11", 64, {"Concat": 8}, True),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(NETS))
def test_torchvision_structures_import_with_pytorch_outputs_and_input_gradients(
    name, dtype, tmp_path
):
    """float32, as exported: outputs to 1e-4 of their scale and input gradients to 1e-3, except
    the input gradients of the networks with max pooling: there a window whose two largest values
    are within float32 rounding of each other may route its gradient to the other one (measured on
    SqueezeNet: 0.13 over 3 seeds x 8 images, and 2e-15 in float64). float64: outputs to 1e-10,
    input gradients to 1e-8 (they are ~1e-11 here, sums that cancel): no tie can upset those."""
    torch = pytest.importorskip("torch")
    import torchvision_nets

    builder, size, containers, max_pooling = NETS[name]
    torch.manual_seed(0)
    net = torch_randomize(getattr(torchvision_nets, builder)(), torch)
    if dtype == "float64":
        net = net.double()
    x = torch.rand(2, 3, size, size, dtype=getattr(torch, dtype))
    path = tmp_path / f"{name}.onnx"
    torch_export(net, x, path)
    model = cx.load(path)
    for kind, count in containers.items():
        assert kinds(model).count(kind) == count, kind
    x.requires_grad_(True)
    y = net(x)
    dout = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    y.backward(dout)
    ours = model.forward(x.detach().numpy())
    assert ours.dtype == np.dtype(dtype)
    dx = model.backward(dout.numpy())
    tolerance = {"float32": (1e-4, 1e-3), "float64": (1e-10, 1e-8)}[dtype]
    assert relative_error(ours, y.detach().numpy()) < tolerance[0]
    if dtype == "float64" or not max_pooling:
        assert relative_error(dx, x.grad.numpy()) < tolerance[1]
    np.testing.assert_allclose(model.predict(x.detach().numpy()), ours, rtol=tolerance[0],
                               atol=tolerance[0] * np.abs(ours).max())
