"""The layers of today's small CNNs against PyTorch: one training step's forward + backward of each
layer alone (batch normalisation, depthwise, strided, grouped, dilated and pointwise
convolutions), float32, each framework in a fresh process of its own (NumPy imported first, the
default threads: all cores), alternating which goes first from round to round.

A worker builds the layer (``cnn_im2col.layers``; the PyTorch module with the same arguments),
runs it 3 times untimed, then times ``--reps`` calls of forward (training mode) + backward of a
fixed output gradient and reports their median; the table gives the medians over rounds and the
ratio ours / PyTorch.

    python benchmarks/bench_cnn_layers.py            # writes results/cnn-layers.{json,md}
    python benchmarks/bench_cnn_layers.py --quick    # tiny: what the tests run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402 - benchmarks/ must be on sys.path first

#: name: (kind, N, C, H=W, O, kernel, stride, padding, dilation, groups); kind "bn" uses N, C, H
CASES = {
    "BatchNorm2D, 64x64x32x32": ("bn", 64, 64, 32, 0, 0, 0, 0, 0, 0),
    "depthwise 3x3, 32x64x32x32, groups 64": ("conv", 32, 64, 32, 64, 3, 1, 1, 1, 64),
    "3x3 stride 2, 32x32x32x32 -> 64": ("conv", 32, 32, 32, 64, 3, 2, 1, 1, 1),
    "grouped 3x3, groups 4, 32x64x32x32 -> 64": ("conv", 32, 64, 32, 64, 3, 1, 1, 1, 4),
    "dilated 3x3, dilation 2, 32x32x32x32 -> 64": ("conv", 32, 32, 32, 64, 3, 1, 2, 2, 1),
    "depthwise 3x3 stride 2, 32x96x32x32": ("conv", 32, 96, 32, 96, 3, 2, 1, 1, 96),
    "pointwise 1x1, 32x64x32x32 -> 128": ("conv", 32, 64, 32, 128, 1, 1, 0, 1, 1),
}
QUICK = {
    "BatchNorm2D, 2x4x6x6": ("bn", 2, 4, 6, 0, 0, 0, 0, 0, 0),
    "depthwise 3x3, 2x4x6x6": ("conv", 2, 4, 6, 4, 3, 1, 1, 1, 4),
}


def worker(impl: str, spec: tuple, reps: int) -> dict:
    """Time ``reps`` forward + backward calls of one layer in ``impl`` ("ours" or "torch")."""
    kind, n, c, size, o, k, s, p, d, g = spec
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, size, size)).astype(np.float32)
    if impl == "ours":
        from cnn_im2col.layers import BatchNorm2D, Conv2D

        layer = (BatchNorm2D(c) if kind == "bn" else
                 Conv2D(c, o, k, stride=s, padding=p, dilation=d, groups=g, seed=0))
        dout = rng.standard_normal(layer.forward(x, training=True).shape).astype(np.float32)

        def step():
            layer.forward(x, training=True)
            layer.backward(dout)
    else:
        import torch

        layer = (torch.nn.BatchNorm2d(c) if kind == "bn" else
                 torch.nn.Conv2d(c, o, k, stride=s, padding=p, dilation=d, groups=g)).train()
        tx = torch.from_numpy(x)
        dout = torch.from_numpy(
            rng.standard_normal(tuple(layer(tx).shape)).astype(np.float32))

        def step():
            xs = tx.detach().requires_grad_(True)
            layer(xs).backward(dout)
    for _ in range(3):
        step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"ms": C.median_ms(times)}


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny cases, one round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", default=None, help="folder for cnn-layers.{json,md}")
    parser.add_argument("--worker", nargs=3, metavar=("IMPL", "SPEC", "REPS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    C.check_out_dir(parser, args.out)
    if args.worker:
        impl, spec, reps = args.worker
        print(json.dumps(worker(impl, tuple(json.loads(spec)), int(reps))))
        return None
    torch = C.import_torch()
    if torch is None:
        print("PyTorch is not installed: nothing to compare with")
        return None
    cases = QUICK if args.quick else CASES
    rounds, reps = (1, 2) if args.quick else (args.rounds, args.reps)
    results = []
    for name, spec in cases.items():
        runs: dict[str, list[float]] = {"ours": [], "torch": []}
        for r in range(rounds):
            for impl in (("ours", "torch") if r % 2 == 0 else ("torch", "ours")):
                runs[impl].append(C.run_json_subprocess(
                    [__file__, "--worker", impl, json.dumps(spec), str(reps)])["ms"])
        medians = {impl: float(np.median(v)) for impl, v in runs.items()}
        results.append({"case": name, "ms": medians, "rounds_ms": runs,
                        "ratio": medians["ours"] / medians["torch"]})
    info = C.machine_info(torch)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = [[r["case"], C.fmt(r["ms"]["ours"]), C.fmt(r["ms"]["torch"]), f"{r['ratio']:.2f}x"]
            for r in results]
    table = (C.markdown_table(["forward + backward, training mode", "ours (ms)", "PyTorch (ms)",
                               "ours / PyTorch"], rows)
             + f"\n\n{C.machine_line(info)}; both on {threads} threads; medians of {rounds} "
               f"alternated rounds of {reps} calls, each a fresh process per side")
    C.publish("cnn-layers", {"machine": info, "results": results}, table,
              Path(args.out) if args.out else None)
    return {"results": results}


if __name__ == "__main__":
    main()
