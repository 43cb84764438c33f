"""Training step of today's small CNNs against PyTorch: ResNet-20 (batch 64, 3x32x32) and
MobileNetV2 x0.5 (batch 32, 3x64x64), forward + loss + backward in training mode, and the peak
memory of each side.

Each framework runs in a fresh process of its own (NumPy imported first, the engine's and
PyTorch's default threads: all cores), alternating which goes first from round to round. A worker
builds the network (``cnn_im2col.architectures``; for PyTorch the module of the same structure,
``torch_twins.torch_twin``), warms up with 3 steps, times ``--steps`` steps and reports their
median, its resident memory once the imports are done and the network is built, and its peak
resident memory (``ru_maxrss``); the table gives the medians over rounds, the ratio ours / PyTorch
and the peak RSS of both (the largest over rounds) with, in brackets, what training added to the
first figure (the PyTorch worker imports the engine too, to build the same structure: compare the
bracketed figures).

    python benchmarks/bench_networks.py            # writes results/networks.{json,md}
    python benchmarks/bench_networks.py --quick    # tiny: what the tests run
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

#: name: (architecture, batch, per-sample input shape); mobilenetv2's width multiplier is 0.5
NETWORKS = {
    "resnet20": ("resnet20", 64, (3, 32, 32)),
    "mobilenetv2 x0.5": ("mobilenetv2", 32, (3, 64, 64)),
}
QUICK = {"resnet20": ("resnet20", 2, (3, 16, 16))}


def worker(impl: str, name: str, steps: int, quick: bool) -> dict:
    """Time ``steps`` training steps of network ``name`` in ``impl`` ("ours" or "torch")."""
    arch, batch, shape = (QUICK if quick else NETWORKS)[name]
    rss_imports = C.peak_rss_bytes()
    rng = np.random.default_rng(0)
    x = rng.random((batch, *shape), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    from cnn_im2col.architectures import build

    model = build(arch, seed=0, input_shape=shape, classes=10)
    if impl == "ours":
        from cnn_im2col.losses import SoftmaxCrossEntropy

        loss = SoftmaxCrossEntropy()

        def step():
            loss.forward(model.forward(x, training=True), y)
            model.backward(loss.backward(), input_grad=False)
    else:
        import torch
        from torch_twins import torch_twin

        net = torch_twin(model, torch).train()
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def step():
            net.zero_grad(set_to_none=False)
            torch.nn.functional.cross_entropy(net(tx), ty).backward()
    rss_imports = max(rss_imports, C.peak_rss_bytes())  # after the framework's own imports
    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"ms": C.median_ms(times), "rss_after_imports": rss_imports,
            "peak_rss": C.peak_rss_bytes()}


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one tiny network, one round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default=None, help="folder for networks.{json,md}")
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "NAME", "STEPS", "QUICK"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    C.check_out_dir(parser, args.out)
    if args.worker:
        impl, name, steps, quick = args.worker
        print(json.dumps(worker(impl, name, int(steps), quick == "1")))
        return None
    torch = C.import_torch()
    if torch is None:
        print("PyTorch is not installed: nothing to compare with")
        return None
    networks = QUICK if args.quick else NETWORKS
    rounds, steps = (1, 2) if args.quick else (args.rounds, args.steps)
    results = []
    for name in networks:
        runs: dict[str, list[dict]] = {"ours": [], "torch": []}
        for r in range(rounds):
            for impl in (("ours", "torch") if r % 2 == 0 else ("torch", "ours")):
                runs[impl].append(C.run_json_subprocess(
                    [__file__, "--worker", impl, name, str(steps), "1" if args.quick else "0"]))
        row = {"network": name, "batch": networks[name][1], "input": list(networks[name][2])}
        for impl, done in runs.items():
            row[impl] = {"ms": float(np.median([d["ms"] for d in done])),
                         "rounds_ms": [d["ms"] for d in done],
                         "peak_rss": max(d["peak_rss"] for d in done),
                         "rss_after_imports": max(d["rss_after_imports"] for d in done)}
        row["ratio"] = row["ours"]["ms"] / row["torch"]["ms"]
        results.append(row)
    def memory(side: dict) -> str:
        mib = 1 << 20
        return (f"{side['peak_rss'] / mib:.0f} "
                f"(+{(side['peak_rss'] - side['rss_after_imports']) / mib:.0f})")

    rows = [[r["network"], r["batch"], "x".join(map(str, r["input"])),
             C.fmt(r["ours"]["ms"]), C.fmt(r["torch"]["ms"]), f"{r['ratio']:.2f}x",
             memory(r["ours"]), memory(r["torch"])] for r in results]
    info = C.machine_info(torch)
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    table = (C.markdown_table(["network", "batch", "input", "ours (ms/step)", "PyTorch (ms/step)",
                               "ours / PyTorch", "ours peak RSS MiB (+training)",
                               "PyTorch peak RSS MiB (+training)"], rows)
             + f"\n\n{C.machine_line(info)}; both on {threads} threads; medians of {rounds} "
               f"alternated rounds of {steps} steps, each a fresh process per side")
    C.publish("networks", {"machine": info, "results": results}, table,
              Path(args.out) if args.out else None)
    return {"results": results}


if __name__ == "__main__":
    main()
