"""What the ONNX tests share: the optional packages they need (a test module importing this one is
skipped without them) and onnxruntime as the judge of an exported or imported model."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
ReferenceEvaluator = pytest.importorskip("onnx.reference").ReferenceEvaluator

TOL = 1e-5  # onnxruntime vs the engine, float32


def run_ort(proto_or_path, x):
    data = (
        proto_or_path.SerializeToString()
        if hasattr(proto_or_path, "SerializeToString")
        else str(proto_or_path)
    )
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def make_model(nodes, initializers, input_shape, opset=17, extra_outputs=()):
    """A model of ``nodes`` with graph input ``"x"`` (N, *input_shape), FLOAT, the last node's
    output as the graph's output, the initializers as given."""
    helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)]
        + list(extra_outputs),
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    try:  # the output's shape, as an exporter writes it
        return onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    except Exception:  # noqa: BLE001 - graphs that are wrong on purpose: as they are
        return proto
