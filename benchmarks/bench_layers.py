"""Layer benchmark: Conv2D and pooling, forward and forward+backward, four implementations.

For each case, in the same run and interleaved (round-robin, so a change of load hits all alike):

- ``ref``: the primer's per-feature-map ``scipy.signal`` approach (``cnn_im2col.reference``);
- ``numpy``: the engine with ``backend="numpy"`` (stride tricks, no Numba);
- ``numba``: the engine's default path (Numba kernels + one BLAS GEMM per product);
- ``torch``: PyTorch, when ``import torch`` works (the column is left out otherwise).

Reported: median milliseconds, ratios, achieved GFLOP/s of the convolutions and its fraction of
this machine's GEMM rate measured now (``np.matmul`` on a GEMM of the same M, K, N as the layer's
forward GEMM), and the peak extra memory of one call. Numba's JIT compilation is excluded from the
timings (every implementation runs untimed first) and measured separately in fresh processes: cold
(empty cache) and loaded from the cache.

    python benchmarks/bench_layers.py            # full run, writes benchmarks/results/layers.{json,md}
    python benchmarks/bench_layers.py --quick    # tiny shapes, seconds (what the tests run)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# cnn_im2col before NumPy: then its thread pools can share the cores (see cnn_im2col.threads)
import cnn_im2col  # noqa: F401

# isort: split
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

IMPLS = ("ref", "numpy", "numba", "torch")

# name: (kind, N, C, O, H, W, kernel, padding)
FULL_CASES = {
    "lenet-conv1 (64x1x28x28, 20@5x5)": ("conv", 64, 1, 20, 28, 28, 5, 0),
    "lenet-conv2 (64x20x12x12, 40@5x5)": ("conv", 64, 20, 40, 12, 12, 5, 0),
    "padded 3x3 (32x32x32x32, 64@3x3, pad 1)": ("conv", 32, 32, 64, 32, 32, 3, 1),
    "lenet-conv1, batch 1": ("conv", 1, 1, 20, 28, 28, 5, 0),
    "lenet-conv2, batch 1": ("conv", 1, 20, 40, 12, 12, 5, 0),
    "max pool 2x2 (64x20x24x24)": ("max", 64, 20, 20, 24, 24, 2, 0),
    "avg pool 2x2 (64x20x24x24)": ("avg", 64, 20, 20, 24, 24, 2, 0),
}
QUICK_CASES = {
    "conv (2x2x8x8, 3@3x3)": ("conv", 2, 2, 3, 8, 8, 3, 0),
    "conv padded (2x2x6x6, 3@3x3, pad 1)": ("conv", 2, 2, 3, 6, 6, 3, 1),
    "max pool 2x2 (2x3x8x8)": ("max", 2, 3, 3, 8, 8, 2, 0),
    "avg pool 2x2 (2x3x8x8)": ("avg", 2, 3, 3, 8, 8, 2, 0),
}

COMPILE_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from cnn_im2col import functional as F, _kernels
imported = time.perf_counter() - t0

def run():
    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 12, 12), dtype=np.float32)
    w = rng.random((3, 1, 5, 5), dtype=np.float32)
    y, c = F.conv2d_forward(x, w, np.zeros(3, np.float32))
    F.conv2d_backward(np.ones_like(y), c)
    y, c = F.conv2d_forward(x, w, None, stride=2, padding=1)
    F.conv2d_backward(np.ones_like(y), c)
    r = F.relu(y)
    F.relu_backward(np.ones_like(r), r)
    for k, s, p in ((2, None, 0), (3, 1, 0), (3, 2, 1)):
        o, c = F.max_pool2d_forward(x, k, s, p)
        F.max_pool2d_backward(np.ones_like(o), c)
        o, c = F.avg_pool2d_forward(x, k, s, p)
        F.avg_pool2d_backward(np.ones_like(o), c)

t1 = time.perf_counter(); run(); first = time.perf_counter() - t1
t2 = time.perf_counter(); run(); second = time.perf_counter() - t2
kernels = [v for v in vars(_kernels).values() if hasattr(v, "stats")]
print(json.dumps({
    "import_s": imported, "first_call_s": first, "warm_call_s": second,
    "jit_s": max(0.0, first - second),
    "cache_hits": sum(sum(k.stats.cache_hits.values()) for k in kernels),
    "cache_misses": sum(sum(k.stats.cache_misses.values()) for k in kernels),
}))
"""


def measure_compile(cache_dir: str | None = None) -> dict:
    """Cold compile (fresh, empty ``NUMBA_CACHE_DIR``) vs load from that cache, in new processes."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir or tmp)
        cold = C.run_json_subprocess(["-c", COMPILE_PROBE], env=env)
        cached = C.run_json_subprocess(["-c", COMPILE_PROBE], env=env)
    return {"cold": cold, "cached": cached}


# --------------------------------------------------------------------------------------------


def conv_flop(n, c, o, oh, ow, k):
    return 2.0 * n * o * oh * ow * c * k * k


def make_case(spec, rng):
    kind, n, c, o, h, w, k, p = spec
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    if kind == "conv":
        weight = (rng.standard_normal((o, c, k, k)) * 0.1).astype(np.float32)
        bias = rng.standard_normal(o).astype(np.float32)
        oh, ow = h + 2 * p - k + 1, w + 2 * p - k + 1
        dout = rng.standard_normal((n, o, oh, ow)).astype(np.float32)
        return {"x": x, "weight": weight, "bias": bias, "dout": dout, "oh": oh, "ow": ow}
    oh, ow = (h - k) // k + 1, (w - k) // k + 1
    return {"x": x, "dout": rng.standard_normal((n, c, oh, ow)).astype(np.float32), "oh": oh, "ow": ow}


def runners(spec, data, torch):
    """{impl: {"forward": fn, "forward+backward": fn}} for one case."""
    from cnn_im2col import functional as F
    from cnn_im2col import reference as R

    kind, _, _, _, _, _, k, p = spec
    x, dout = data["x"], data["dout"]
    out = {}
    if kind == "conv":
        weight, bias = data["weight"], data["bias"]

        def engine(backend):
            def fwd():
                return F.conv2d_forward(x, weight, bias, 1, p, backend=backend)[0]

            def fwd_bwd():
                _, cache = F.conv2d_forward(x, weight, bias, 1, p, backend=backend)
                return F.conv2d_backward(dout, cache)
            return {"forward": fwd, "forward+backward": fwd_bwd}

        out["ref"] = {"forward": lambda: R.conv2d_forward(x, weight, bias, 1, p),
                      "forward+backward": lambda: (R.conv2d_forward(x, weight, bias, 1, p),
                                                   R.conv2d_backward(x, weight, dout, 1, p, bias="tied"))}
        out["numpy"], out["numba"] = engine("numpy"), engine("numba")
        if torch is not None:
            tx, tw, tb, td = (torch.from_numpy(a) for a in (x, weight, bias, dout))

            def t_fwd():
                with torch.no_grad():
                    return torch.nn.functional.conv2d(tx, tw, tb, padding=p)

            def t_fwd_bwd():
                xs, ws, bs = (t.detach().requires_grad_(True) for t in (tx, tw, tb))
                y = torch.nn.functional.conv2d(xs, ws, bs, padding=p)
                y.backward(td)
                return xs.grad, ws.grad, bs.grad
            out["torch"] = {"forward": t_fwd, "forward+backward": t_fwd_bwd}
        return out

    fwd_f, bwd_f = ((F.max_pool2d_forward, F.max_pool2d_backward) if kind == "max"
                    else (F.avg_pool2d_forward, F.avg_pool2d_backward))
    ref_f, ref_b = ((R.max_pool2d_forward, R.max_pool2d_backward) if kind == "max"
                    else (R.avg_pool2d_forward, R.avg_pool2d_backward))

    def engine(backend):
        def fwd():
            return fwd_f(x, k, backend=backend)[0]

        def fwd_bwd():
            _, cache = fwd_f(x, k, backend=backend)
            return bwd_f(dout, cache)
        return {"forward": fwd, "forward+backward": fwd_bwd}

    out["ref"] = {"forward": lambda: ref_f(x, k), "forward+backward": lambda: (ref_f(x, k), ref_b(x, dout, k))}
    out["numpy"], out["numba"] = engine("numpy"), engine("numba")
    if torch is not None:
        tx, td = torch.from_numpy(x), torch.from_numpy(dout)
        t_pool = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d

        def t_fwd():
            with torch.no_grad():
                return t_pool(tx, k)

        def t_fwd_bwd():
            xs = tx.detach().requires_grad_(True)
            t_pool(xs, k).backward(td)
            return xs.grad
        out["torch"] = {"forward": t_fwd, "forward+backward": t_fwd_bwd}
    return out


def alternate_uneven(fns: dict, rounds: dict) -> dict:
    """Round-robin timing where each implementation has its own number of rounds (the scipy
    reference is hundreds of times slower than the rest, so it gets fewer). One untimed warm-up."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for r in range(max(rounds.values())):
        for name, fn in fns.items():
            if r < rounds[name]:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


def bench_case(name, spec, torch, rounds, ref_rounds, rng):
    kind, n, c, o, h, w, k, p = spec
    data = make_case(spec, rng)
    fns = runners(spec, data, torch)
    impls = [i for i in IMPLS if i in fns]
    result = {"case": name, "kind": kind, "shape": {"N": n, "C": c, "O": o, "H": h, "W": w, "kernel": k,
                                                     "padding": p}, "modes": {}}
    gemm = None
    if kind == "conv":
        m_, k_, n_ = o, c * k * k, n * data["oh"] * data["ow"]
        gemm = C.gemm_rate(m_, k_, n_)
        result["gemm"] = gemm
    for mode in ("forward", "forward+backward"):
        times = alternate_uneven({i: fns[i][mode] for i in impls},
                                 {i: (ref_rounds if i == "ref" else rounds) for i in impls})
        entry = {"median_ms": {i: C.median_ms(times[i]) for i in impls},
                 "rounds": {i: len(times[i]) for i in impls}}
        ms = entry["median_ms"]
        entry["speedup_numba_vs"] = {i: ms[i] / ms["numba"] for i in impls if i != "numba"}
        if kind == "conv":
            flop = conv_flop(n, c, o, data["oh"], data["ow"], k) * (1 if mode == "forward" else 3)
            entry["gflop"] = flop / 1e9
            entry["gflops"] = {i: C.gflops(flop, ms[i] / 1e3) for i in impls}
            entry["fraction_of_gemm_rate"] = {i: entry["gflops"][i] / gemm["gflops"] for i in impls}
        result["modes"][mode] = entry
    return result, fns


def measure_memory(result: dict, fns: dict) -> None:
    """Peak extra memory of one call of each implementation and mode (after all timings: the
    malloc setting that makes it measurable would slow the timed calls down)."""
    for mode, entry in result["modes"].items():
        memory = {}
        for i in entry["median_ms"]:
            memory[i], method = C.peak_extra_bytes(fns[i][mode])
        entry["peak_extra_bytes"] = memory
        entry["memory_method"] = method


def tables(results: list[dict], impls: list[str]) -> str:
    heads = ["case", "mode", *[f"{i} ms" for i in impls], *[f"numba vs {i}" for i in impls if i != "numba"],
             "numba GFLOP/s", "% of GEMM rate", *[f"{i} MiB" for i in impls]]
    rows = []
    for r in results:
        for mode, e in r["modes"].items():
            ms = e["median_ms"]
            rows.append([r["case"], mode, *[ms.get(i) for i in impls],
                         *[(f"{e['speedup_numba_vs'][i]:.3g}x" if i in e["speedup_numba_vs"] else None)
                           for i in impls if i != "numba"],
                         e.get("gflops", {}).get("numba"),
                         (100 * e["fraction_of_gemm_rate"]["numba"]) if "fraction_of_gemm_rate" in e else None,
                         *[(e["peak_extra_bytes"][i] / 2**20 if i in e["peak_extra_bytes"] else None)
                           for i in impls]])
    return C.markdown_table(heads, rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes and few rounds (seconds)")
    parser.add_argument("--threads", type=int, default=None, help="engine threads (default: all cores)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per implementation")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    parser.add_argument("--no-compile", action="store_true", help="skip the JIT compile measurement")
    parser.add_argument("--out", type=Path, default=None, help="results directory (default benchmarks/results)")
    parser.add_argument("--name", default=None, help="results file stem (default layers, or layers-quick)")
    args = parser.parse_args(argv)

    from cnn_im2col import threads

    threads.set_num_threads(args.threads)
    n_threads = threads.get_num_threads()
    torch = C.import_torch(not args.no_torch)
    if torch is not None:
        torch.set_num_threads(n_threads)
    cases = QUICK_CASES if args.quick else FULL_CASES
    rounds = args.rounds or (3 if args.quick else 15)
    ref_rounds = 2 if args.quick else 3
    machine = C.machine_info(torch)

    compile_times = None if args.no_compile else measure_compile()
    rng = np.random.default_rng(0)
    results, all_fns = [], []
    for name, spec in cases.items():
        result, fns = bench_case(name, spec, torch, rounds, ref_rounds, rng)
        results.append(result)
        all_fns.append(fns)
        print(f"  timed: {name}", file=sys.stderr, flush=True)
    C.configure_malloc()  # from here on, every large allocation is its own mapping: RSS tells usage
    for result, fns in zip(results, all_fns):
        measure_memory(result, fns)
    del all_fns
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    impls = [i for i in IMPLS if i in results[0]["modes"]["forward"]["median_ms"]]

    md = [f"# Layer benchmark{' (quick)' if args.quick else ''}", "", f"Machine: {C.machine_line(machine)}.", "",
          ("Median milliseconds over interleaved rounds (ref: the primer's scipy.signal loops; numpy / numba: "
          "this engine's two backends; torch: PyTorch). `numba vs X` = X's time / numba's time. GFLOP/s "
          "counts 2·N·O·OH·OW·C·KH·KW per forward (x3 with backward); `% of GEMM rate` compares it with "
          "np.matmul on a GEMM of the layer's forward M, K, N, measured in the same run. MiB: peak extra "
          f"resident memory of one call ({results[0]['modes']['forward']['memory_method']})."), "",
          tables(results, impls), ""]
    gemm_rows = [[r["case"], r["gemm"]["m"], r["gemm"]["k"], r["gemm"]["n"], r["gemm"]["ms"], r["gemm"]["gflops"]]
                 for r in results if "gemm" in r]
    md += ["GEMM rate of this machine now (np.matmul, float32):", "",
           C.markdown_table(["case", "M", "K", "N", "ms", "GFLOP/s"], gemm_rows), ""]
    if compile_times:
        cold, cached = compile_times["cold"], compile_times["cached"]
        md += ["JIT compilation (fresh processes, excluded from the timings above):", "",
               C.markdown_table(["run", "import s", "first call s", "JIT s (first - warm)", "cache hits", "cache misses"],
                                [["cold (empty NUMBA_CACHE_DIR)", cold["import_s"], cold["first_call_s"], cold["jit_s"],
                                  cold["cache_hits"], cold["cache_misses"]],
                                 ["cached (second process)", cached["import_s"], cached["first_call_s"],
                                  cached["jit_s"], cached["cache_hits"], cached["cache_misses"]]]), ""]
    markdown = "\n".join(md)
    data = C.finite_or_none({"benchmark": "layers", "quick": args.quick, "machine": machine,
                             "threads": n_threads, "torch_threads": n_threads if torch is not None else None,
                             "compile": compile_times, "results": results})
    name = args.name or ("layers-quick" if args.quick else "layers")
    C.publish(name, data, markdown, args.out)
    return data


if __name__ == "__main__":
    main()
