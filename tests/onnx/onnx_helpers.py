"""What the ONNX tests share: the optional packages they need (a test module importing this one is
skipped without them) and onnxruntime as the judge of an exported or imported model."""

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
