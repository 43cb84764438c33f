"""ONNX's own operator conformance cases (``onnx.backend.test.case.node``, shipped in the ``onnx``
wheel) through ``cnn_im2col.onnx.from_onnx``: how many pass, are refused, or are wrong.

    python benchmarks/onnx_conformance.py [--out DIR]

Only the cases built entirely from the operators a CNN uses (``CNN_OPERATORS``) are counted. Each
case's inputs after the first become initializers (the engine's layers hold their weights; the
batch is the one graph input). A case then:

- passes: it imports, and the forward pass on the first input gives the expected output to the
  case's own tolerances;
- is refused: the import (or the forward pass) raises ``ValueError`` / ``TypeError`` with a
  message, as an unsupported graph must;
- is wrong: anything else (a wrong number, a wrong shape, another exception). There must be none.

Prints a markdown table per operator and writes ``results/onnx-conformance.json`` (and ``.md``).
"""

from __future__ import annotations

import argparse
import copy
import io
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from _common import check_out_dir, publish

CNN_OPERATORS = frozenset({
    "Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Conv", "Dropout", "Flatten",
    "Gemm", "GlobalAveragePool", "GlobalMaxPool", "HardSigmoid", "HardSwish", "Identity",
    "LeakyRelu", "MatMul", "MaxPool", "Mul", "Pad", "Relu", "Reshape", "Sigmoid", "Softmax", "Sum",
    "Tanh",
})
VERDICTS = ("pass", "refused", "wrong")


def cnn_cases() -> list:
    """The node cases whose every node is one of ``CNN_OPERATORS`` (expanded cases included)."""
    from onnx.backend.test.case import node

    with warnings.catch_warnings():  # some generators divide by zero on purpose
        warnings.simplefilter("ignore")
        cases = node.collect_testcases(None)
    return [c for c in cases
            if c.model.graph.node and {n.op_type for n in c.model.graph.node} <= CNN_OPERATORS]


def with_initializers(model, inputs: list[np.ndarray]):
    """A copy of ``model`` whose graph inputs after the first are initializers holding
    ``inputs[1:]`` (optional inputs given as empty names stay absent)."""
    from onnx import numpy_helper

    model = copy.deepcopy(model)
    graph = model.graph
    for value_info, array in zip(list(graph.input[1:]), inputs[1:]):
        graph.initializer.append(numpy_helper.from_array(np.asarray(array), value_info.name))
        graph.input.remove(value_info)
    return model


def run_case(case) -> tuple[str, str]:
    """``(verdict, detail)`` of one case (see the module docstring)."""
    from cnn_im2col.onnx import from_onnx

    inputs, outputs = case.data_sets[0]
    if not inputs:
        return "refused", "no graph input"  # not importable by construction; counted as refused
    try:
        model = from_onnx(with_initializers(case.model, list(inputs)), source=case.name)
        got = model.forward(np.asarray(inputs[0]))
    except (ValueError, TypeError) as exc:
        return "refused", f"{type(exc).__name__}: {str(exc)[:300]}"
    except Exception as exc:  # noqa: BLE001 - anything else is an engine bug: counted as wrong
        return "wrong", f"raised {type(exc).__name__}: {str(exc)[:300]}"
    if len(outputs) != 1:
        return "wrong", f"imported a graph of {len(outputs)} outputs as one"
    expected = np.asarray(outputs[0])
    if got.shape != expected.shape:
        return "wrong", f"shape {got.shape}, expected {expected.shape}"
    rtol, atol = max(case.rtol, 1e-5), max(case.atol, 1e-6)
    if not np.allclose(got, expected, rtol=rtol, atol=atol):
        error = float(np.max(np.abs(got - expected)))
        return "wrong", f"max abs error {error:.3g} (rtol {rtol}, atol {atol})"
    return "pass", ""


def run_all(cases: Iterable) -> list[dict]:
    results = []
    for case in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            verdict, detail = run_case(case)
        ops = sorted({n.op_type for n in case.model.graph.node})
        results.append({"case": case.name, "operators": ops, "verdict": verdict,
                        "detail": detail})
    return results


def table(results: list[dict]) -> str:
    per_op: dict[str, Counter] = {}
    for r in results:
        key = "+".join(r["operators"])
        per_op.setdefault(key, Counter())[r["verdict"]] += 1
    totals = Counter(r["verdict"] for r in results)
    out = io.StringIO()
    out.write("| operators | pass | refused | wrong |\n|---|---|---|---|\n")
    for key in sorted(per_op):
        c = per_op[key]
        out.write(f"| {key} | {c['pass']} | {c['refused']} | {c['wrong']} |\n")
    out.write(f"| **all {len(results)}** | **{totals['pass']}** | **{totals['refused']}** | "
              f"**{totals['wrong']}** |\n")
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"),
                        help="folder for onnx-conformance.json / .md")
    args = parser.parse_args(argv)
    check_out_dir(parser, args.out)
    results = run_all(cnn_cases())
    wrong = [r for r in results if r["verdict"] == "wrong"]
    for r in wrong:
        print(f"WRONG {r['case']}: {r['detail']}")
    totals = {v: sum(r["verdict"] == v for r in results) for v in VERDICTS}
    publish("onnx-conformance", {"totals": totals, "results": results}, table(results),
            Path(args.out))
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
