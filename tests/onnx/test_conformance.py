"""ONNX's own operator conformance cases for the operators a CNN uses
(benchmarks/onnx_conformance.py): none may come out wrong; the count that passes may only grow."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("onnx")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import onnx_conformance as conformance  # noqa: E402 - benchmarks/ must be on sys.path first

# measured 2026-12-04 (44 when written, 52 before Pad and GlobalMaxPool)
PASSING_AT_LEAST = 57  # raise it as operators are added


def test_no_conformance_case_is_wrong_and_the_passing_ones_stay():
    results = conformance.run_all(conformance.cnn_cases())
    wrong = [(r["case"], r["detail"]) for r in results if r["verdict"] == "wrong"]
    assert wrong == []
    passed = [r["case"] for r in results if r["verdict"] == "pass"]
    assert len(passed) >= PASSING_AT_LEAST, passed
    refused = [r for r in results if r["verdict"] == "refused"]
    assert all(r["detail"] for r in refused)  # each refusal says why


def test_the_harness_calls_a_wrong_answer_wrong(monkeypatch):
    """A harness that could not see a wrong number would prove nothing: break Relu's forward and
    its case must come out wrong."""
    from cnn_im2col import layers

    case = next(c for c in conformance.cnn_cases() if c.name == "test_relu")
    assert conformance.run_case(case)[0] == "pass"
    monkeypatch.setattr(layers.ReLU, "run", lambda self, x, training=False: x)
    verdict, detail = conformance.run_case(case)
    assert verdict == "wrong" and "max abs error" in detail
