"""Inference against onnxruntime, where users deploy: the same ONNX file, each side in its own
fresh process, alternated.

For each network (``vgg-bn``, ``resnet20``, ``mobilenetv2`` of ``cnn_im2col.architectures``, for
3x32x32 images and 10 classes, BatchNorm running statistics set away from (0, 1)):

1. the engine's model is exported once to ``<tmp>/<name>.onnx`` (``cnn_im2col.onnx.export``);
2. for each batch size (1 and 64) and each round, three fresh processes run one after the other,
   in rotating order: ``ours`` loads that file with ``cnn_im2col.onnx.load`` and times
   ``model.predict`` (which checks on every call whether the parameters changed);
   ``session`` loads it the same way and times ``cnn_im2col.InferenceSession(model).run`` (a
   frozen copy: planned and folded once); ``ort`` times an ``onnxruntime.InferenceSession`` on it,
   with ``intra_op_num_threads`` = the cores (2 here) and its default graph optimisations;
3. each process warms up, then reports the median of its repetitions; the table gives the median
   over rounds and the ratios to onnxruntime. Every process imports NumPy first.

A network the exporter cannot write yet is reported as such. The outputs of both sides are
compared on the first batch (relative error), so a fast wrong answer cannot hide.

    python benchmarks/bench_inference.py            # writes results/inference.{json,md}
    python benchmarks/bench_inference.py --quick    # tiny: what the tests run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402 - benchmarks/ must be on sys.path first

NETWORKS = ("vgg-bn", "resnet20", "mobilenetv2")
INPUT_SHAPE = (3, 32, 32)


def export_network(name: str, path: Path) -> str | None:
    """Write the network as ONNX; None, or why it could not be exported."""
    from cnn_im2col import onnx as cx
    from cnn_im2col.architectures import build

    model = build(name, seed=0, input_shape=INPUT_SHAPE, classes=10)
    rng = np.random.default_rng(0)
    for key, value in model.buffers.items():  # running statistics of a trained network
        if key.endswith("running_mean"):
            value[...] = rng.normal(0, 0.2, value.shape)
        elif key.endswith("running_var"):
            value[...] = rng.uniform(0.5, 1.5, value.shape)
    try:
        cx.export(model, path, input_shape=INPUT_SHAPE)
    except (ValueError, TypeError) as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return None


def worker(impl: str, path: str, batch: int, reps: int, threads: int) -> dict:
    """Time ``reps`` predictions of ``batch`` images; the median in ms, and the first output."""
    x = np.random.default_rng(1).random((batch, *INPUT_SHAPE), dtype=np.float32)
    if impl in ("ours", "session"):
        from cnn_im2col import InferenceSession, set_num_threads
        from cnn_im2col import onnx as cx

        set_num_threads(threads)
        model = cx.load(path)
        if impl == "session":
            session = InferenceSession(model, INPUT_SHAPE)

            def run():
                return session.run(x, batch_size=batch)
        else:
            def run():
                return model.predict(x, batch_size=batch)
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name

        def run():
            return session.run(None, {feed: x})[0]
    out = run()
    for _ in range(3):  # warm-up: JIT, caches, the allocator
        run()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"ms": C.median_ms(times), "first": np.asarray(out[0], dtype=np.float64).tolist()}


def measure(path: Path, batch: int, rounds: int, reps: int, threads: int) -> dict:
    impls = ("ours", "session", "ort")
    runs: dict[str, list[float]] = {impl: [] for impl in impls}
    first: dict[str, list[float]] = {}
    for r in range(rounds):
        for impl in impls[r % 3:] + impls[: r % 3]:  # each side first, second and last in turn
            result = C.run_json_subprocess([__file__, "--worker", impl, str(path), str(batch),
                                            str(reps), str(threads)])
            runs[impl].append(result["ms"])
            first[impl] = result["first"]
    ort = np.asarray(first["ort"])
    scale = max(np.max(np.abs(ort)), 1e-30)
    error = max(float(np.max(np.abs(np.asarray(first[impl]) - ort)) / scale)
                for impl in ("ours", "session"))
    medians = {impl: float(np.median(v)) for impl, v in runs.items()}
    return {"ms": medians, "rounds": runs, "ratio": medians["ours"] / medians["ort"],
            "session_ratio": medians["session"] / medians["ort"], "output_relative_error": error}


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one network, tiny rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="folder for inference.{json,md}")
    parser.add_argument("--worker", nargs=5, metavar=("IMPL", "PATH", "BATCH", "REPS", "THREADS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    C.check_out_dir(parser, args.out)
    if args.worker:
        impl, path, batch, reps, threads = args.worker
        print(json.dumps(worker(impl, path, int(batch), int(reps), int(threads))))
        return None
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    networks = NETWORKS[:1] if args.quick else NETWORKS
    batches = {1: 5 if args.quick else 200, 64: 2 if args.quick else 20}
    rounds = 1 if args.quick else args.rounds
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in networks:
            path = Path(tmp) / f"{name}.onnx"
            refused = export_network(name, path)
            for batch, reps in batches.items():
                row = {"network": name, "batch": batch}
                if refused:
                    row["not_exported"] = refused
                else:
                    row.update(measure(path, batch, rounds, reps, int(threads)))
                results.append(row)
    rows = [[r["network"], r["batch"],
             *((C.fmt(r["ms"]["ours"]), C.fmt(r["ms"]["session"]), C.fmt(r["ms"]["ort"]),
                f"{r['ratio']:.2f}x", f"{r['session_ratio']:.2f}x",
                f"{r['output_relative_error']:.1e}") if "ms" in r else
               ("-", "-", "-", "not exported", "-", r["not_exported"]))] for r in results]
    info = C.machine_info()
    table = (C.markdown_table(["network", "batch", "predict (ms)", "session (ms)",
                               "onnxruntime (ms)", "predict / onnxruntime",
                               "session / onnxruntime", "output rel. error"], rows)
             + f"\n\n{C.machine_line(info)}; onnxruntime {threads} intra-op threads; medians of "
               f"{rounds} rounds in rotating order, each a fresh process per side")
    C.publish("inference", {"machine": info, "results": results}, table,
              Path(args.out) if args.out else None)
    return {"results": results}


if __name__ == "__main__":
    main()
