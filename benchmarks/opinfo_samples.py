"""PyTorch's own OpInfo sample inputs for conv2d, max_pool2d, avg_pool2d, batch_norm,
adaptive_avg_pool2d and adaptive_max_pool2d (``torch.testing._internal.common_methods_invocations``,
which needs the ``expecttest`` package) run through the engine's layers in float64, forward and
backward.

    pip install torch expecttest   # comparisons only: never dependencies of the package
    python benchmarks/opinfo_samples.py [--out DIR]

Each sample is:

- expressible or not: an argument the layers do not have (an unbatched input, ``return_indices``,
  ``divisor_override``, batch norm over other than (N, C, H, W), ...) makes it inexpressible;
- refused: the layer raises ``ValueError`` / ``TypeError`` naming the argument (e.g. a negative
  momentum, which PyTorch takes);
- pass: output, input gradient and parameter gradients (and updated running statistics) equal to
  PyTorch's autograd to 1e-9 relative;
- wrong: anything else. There must be none.

Prints a table per operator and writes ``results/opinfo-samples.json`` (and ``.md``).
"""

from __future__ import annotations

import argparse
import inspect
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from _common import check_out_dir, publish

OPS = ("nn.functional.conv2d", "nn.functional.max_pool2d", "nn.functional.avg_pool2d",
       "nn.functional.batch_norm", "nn.functional.adaptive_avg_pool2d",
       "nn.functional.adaptive_max_pool2d")
VERDICTS = ("pass", "inexpressible", "refused", "wrong")


class Inexpressible(Exception):
    """The sample uses something the layers do not have."""


def _np(t: Any) -> np.ndarray:
    return t.detach().numpy().copy()


def _takes(cls: type, name: str) -> bool:
    return name in inspect.signature(cls.__init__).parameters


def _pool_args(kind: str, sample: Any) -> dict:
    names = (["kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"]
             if kind == "max" else
             ["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
              "divisor_override"])
    args = dict(zip(names, sample.args))
    args.update(sample.kwargs)
    if args.get("stride") in ((), [], None):
        args["stride"] = None
    if args.pop("return_indices", False):
        raise Inexpressible("return_indices")
    if args.pop("divisor_override", None) is not None:
        raise Inexpressible("divisor_override")
    return args


def build(name: str, sample: Any, torch: Any) -> tuple[Any, dict[str, Any], Any]:
    """``(our layer, {our param name: torch tensor}, torch function of the input)``."""
    from cnn_im2col.layers import (
        AdaptiveAvgPool2D,
        AdaptiveMaxPool2D,
        AvgPool2D,
        BatchNorm2D,
        Conv2D,
        MaxPool2D,
    )

    x = sample.input
    if x.dim() != 4:
        raise Inexpressible(f"a {x.dim()}-d input (the layers take (N, C, H, W))")
    if name == "nn.functional.conv2d":
        weight, *rest = sample.args
        bias = rest[0] if rest else sample.kwargs.get("bias")
        kw = {k: v for k, v in sample.kwargs.items() if k != "bias"}
        o, cg, kh, kw_ = weight.shape
        layer = Conv2D(x.shape[1], o, (kh, kw_), stride=kw.get("stride", 1),
                       padding=kw.get("padding", 0), dilation=kw.get("dilation", 1),
                       groups=kw.get("groups", 1), bias=None if bias is None else "tied",
                       dtype=np.float64)
        params = {"weight": weight} | ({} if bias is None else {"bias": bias})
        return layer, params, lambda t: torch.nn.functional.conv2d(t, weight, bias, **kw)
    if name in ("nn.functional.max_pool2d", "nn.functional.avg_pool2d"):
        kind = "max" if "max" in name else "avg"
        args = _pool_args(kind, sample)
        cls = MaxPool2D if kind == "max" else AvgPool2D
        ours = {k: v for k, v in args.items() if v is not None}
        for key in ("dilation", "ceil_mode", "count_include_pad"):
            default = {"dilation": 1, "ceil_mode": False, "count_include_pad": True}[key]
            if key in ours and not _takes(cls, key):
                if ours[key] not in (default, (default, default), [default, default]):
                    raise Inexpressible(f"{key}={ours[key]!r}")
                del ours[key]
        fn = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
        return cls(**ours), {}, lambda t: fn(t, **args)
    if name == "nn.functional.batch_norm":
        mean, var, *rest = sample.args
        weight = rest[0] if rest else sample.kwargs.get("weight")
        bias = rest[1] if len(rest) > 1 else sample.kwargs.get("bias")
        training = sample.kwargs.get("training", False)
        momentum, eps = sample.kwargs.get("momentum", 0.1), sample.kwargs.get("eps", 1e-5)
        if (weight is None) != (bias is None):
            raise Inexpressible("only one of weight and bias")
        if mean is None or var is None:
            raise Inexpressible("no running statistics")
        layer = BatchNorm2D(x.shape[1], eps=eps, momentum=momentum, affine=weight is not None,
                            dtype=np.float64)
        layer.buffers["running_mean"][...] = _np(mean)
        layer.buffers["running_var"][...] = _np(var)
        params = {} if weight is None else {"weight": weight, "bias": bias}
        saved = (mean.detach().clone(), var.detach().clone())

        def fn(t):
            m, v = saved[0].clone(), saved[1].clone()
            out = torch.nn.functional.batch_norm(t, m, v, weight, bias, training=training,
                                                 momentum=momentum, eps=eps)
            fn.running = (m, v)
            return out

        layer._opinfo_training = training
        return layer, params, fn
    if name in ("nn.functional.adaptive_avg_pool2d", "nn.functional.adaptive_max_pool2d"):
        size, *rest = sample.args
        if (rest and rest[0]) or sample.kwargs.get("return_indices"):
            raise Inexpressible("return_indices")
        size = (size, size) if isinstance(size, int) else tuple(size)
        resolved = tuple(x.shape[2 + i] if s is None else s for i, s in enumerate(size))
        if "max" in name:
            return AdaptiveMaxPool2D(resolved), {}, lambda t: (
                torch.nn.functional.adaptive_max_pool2d(t, size))
        layer = AdaptiveAvgPool2D(resolved)
        return layer, {}, lambda t: torch.nn.functional.adaptive_avg_pool2d(t, size)
    raise AssertionError(name)


def _rel(ours: np.ndarray, theirs: np.ndarray) -> float:
    scale = max(float(np.abs(theirs).max(initial=0.0)), 1e-12)
    return float(np.abs(ours - theirs).max(initial=0.0)) / scale


def run_sample(name: str, sample: Any, torch: Any) -> tuple[str, str]:
    try:
        layer, params, fn = build(name, sample, torch)
        for key, tensor in params.items():
            layer.params[key][...] = _np(tensor)
        x = _np(sample.input)
        training = getattr(layer, "_opinfo_training", False)
        y = layer.forward(x, training=training)
    except Inexpressible as exc:
        return "inexpressible", str(exc)
    except (ValueError, TypeError) as exc:
        return "refused", f"{type(exc).__name__}: {str(exc)[:200]}"
    xt = sample.input.detach().clone().requires_grad_(True)
    for tensor in params.values():
        tensor.grad = None
    yt = fn(xt)
    if y.shape != tuple(yt.shape):
        return "wrong", f"shape {y.shape}, PyTorch {tuple(yt.shape)}"
    r = np.random.default_rng(0).standard_normal(y.shape)
    try:
        dx = layer.backward(r.copy())
    except Exception as exc:  # noqa: BLE001 - a backward that fails after a forward is a bug
        return "wrong", f"backward raised {type(exc).__name__}: {exc}"
    yt.backward(torch.from_numpy(r))
    errors = {"output": _rel(y, _np(yt)), "input grad": _rel(dx, _np(xt.grad))}
    for key, tensor in params.items():
        if tensor.grad is not None:
            errors[f"{key} grad"] = _rel(layer.grads[key], _np(tensor.grad))
    running = getattr(fn, "running", None)
    if running is not None:
        errors["running mean"] = _rel(layer.buffers["running_mean"], _np(running[0]))
        errors["running var"] = _rel(layer.buffers["running_var"], _np(running[1]))
    bad = {k: v for k, v in errors.items() if not v <= 1e-9}
    if bad:
        return "wrong", ", ".join(f"{k} off by {v:.3g}" for k, v in bad.items())
    return "pass", f"largest relative error {max(errors.values()):.2g}"


def run_all() -> list[dict]:
    import torch
    from torch.testing._internal.common_methods_invocations import op_db

    results = []
    for op in op_db:
        if op.name not in OPS or op.variant_test_name:
            continue
        for i, sample in enumerate(op.sample_inputs("cpu", torch.float64, requires_grad=True)):
            verdict, detail = run_sample(op.name, sample, torch)
            results.append({"op": op.name.split(".")[-1], "sample": i, "verdict": verdict,
                            "detail": detail})
    return results


def table(results: list[dict]) -> str:
    counts: dict[str, Counter] = {}
    for r in results:
        counts.setdefault(r["op"], Counter())[r["verdict"]] += 1
    lines = ["| operator | samples | " + " | ".join(VERDICTS) + " |",
             "|---|---|" + "---|" * len(VERDICTS)]
    for op, c in counts.items():
        lines.append(f"| {op} | {sum(c.values())} | " + " | ".join(str(c[v]) for v in VERDICTS)
                     + " |")
    reasons = Counter(r["detail"] for r in results if r["verdict"] == "inexpressible")
    lines += ["", "Inexpressible, by reason: " + ", ".join(f"{k} ({n})"
                                                       for k, n in reasons.most_common())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"),
                        help="folder for opinfo-samples.json / .md")
    args = parser.parse_args(argv)
    check_out_dir(parser, args.out)
    results = run_all()
    wrong = [r for r in results if r["verdict"] == "wrong"]
    for r in wrong:
        print(f"WRONG {r['op']} sample {r['sample']}: {r['detail']}")
    totals = {v: sum(r["verdict"] == v for r in results) for v in VERDICTS}
    publish("opinfo-samples", {"totals": totals, "results": results}, table(results),
            Path(args.out))
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
