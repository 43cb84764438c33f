"""Layer benchmark: Conv2D and pooling, forward and forward+backward, four implementations.

For each case, in the same run and interleaved (round-robin, so a change of load hits all alike):

- ``ref``: the primer's per-feature-map ``scipy.signal`` approach (``cnn_im2col.reference``);
- ``numpy``: the engine with ``backend="numpy"`` (stride tricks, no Numba);
- ``numba``: the engine's default path (Numba kernels + BLAS GEMMs; for a 3x3 stride-1 layer,
  Winograd's F(4x4, 3x3));
- ``im2col``: the same backend with ``algorithm="im2col"``, on the cases where the default takes
  Winograd instead (the column is empty elsewhere): the two strategies side by side;
- ``torch``: PyTorch, when ``import torch`` works (the column is left out otherwise), timed in a
  worker process of its own, run before and after the others (its medians pool both runs): in the
  same process, PyTorch's OpenMP workers keep spinning after each call on the cores the engine's
  next call needs (measured: LeNet's conv2 forward 3.9 ms alone, 10.5 ms right after a PyTorch
  call).

Reported: median milliseconds, ratios, achieved GFLOP/s of the convolutions and its fraction of
this machine's GEMM rate measured now (``np.matmul`` on a GEMM of the same M, K, N as the layer's
forward GEMM), and the peak extra memory of one call. Numba's JIT compilation is excluded from the
timings (every implementation runs untimed first) and measured separately in fresh processes: cold
(empty cache) and loaded from the cache.

    python benchmarks/bench_layers.py            # full run, writes results/layers.{json,md}
    python benchmarks/bench_layers.py --quick    # tiny shapes, seconds (what the tests run)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# NumPy first, as a user's script (the engine's speed no longer depends on the order)
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

IMPLS = ("ref", "numpy", "im2col", "numba", "torch")
MODES = ("forward", "forward+backward")

# name: (kind, N, C, O, H, W, kernel, padding[, dilation, groups]); kind "net": the LeNet of
# bench_train at batch N ("forward": inference latency, "forward+backward": one training step's);
# kind "vgg": the command's vgg-bn network (architectures.vgg_bn: 3x3 convolutions + BatchNorm)
# likewise
FULL_CASES = {
    "lenet-conv1 (64x1x28x28, 20@5x5)": ("conv", 64, 1, 20, 28, 28, 5, 0),
    "lenet-conv2 (64x20x12x12, 40@5x5)": ("conv", 64, 20, 40, 12, 12, 5, 0),
    "padded 3x3 (32x32x32x32, 64@3x3, pad 1)": ("conv", 32, 32, 64, 32, 32, 3, 1),
    "dilated 3x3 (32x32x32x32, 64@3x3, pad 2, dilation 2)": (
        "conv",
        32,
        32,
        64,
        32,
        32,
        3,
        2,
        2,
        1,
    ),
    "grouped 3x3 (32x32x32x32, 64@3x3, pad 1, groups 4)": ("conv", 32, 32, 64, 32, 32, 3, 1, 1, 4),
    "depthwise 3x3 (32x64x32x32, 64@3x3, pad 1, groups 64)": (
        "conv",
        32,
        64,
        64,
        32,
        32,
        3,
        1,
        1,
        64,
    ),
    "lenet-conv1, batch 1": ("conv", 1, 1, 20, 28, 28, 5, 0),
    "lenet-conv2, batch 1": ("conv", 1, 20, 40, 12, 12, 5, 0),
    "LeNet network, batch 1 (inference latency / train step)": ("net", 1, 1, 10, 28, 28, 5, 0),
    "vgg-bn network, batch 128 (inference / train step)": ("vgg", 128, 1, 10, 28, 28, 3, 1),
    "max pool 2x2 (64x20x24x24)": ("max", 64, 20, 20, 24, 24, 2, 0),
    "avg pool 2x2 (64x20x24x24)": ("avg", 64, 20, 20, 24, 24, 2, 0),
}
QUICK_CASES = {
    "conv (2x2x8x8, 3@3x3)": ("conv", 2, 2, 3, 8, 8, 3, 0),
    "conv padded (2x2x6x6, 3@3x3, pad 1)": ("conv", 2, 2, 3, 6, 6, 3, 1),
    "conv on Winograd (8x16x8x8, 16@3x3, pad 1)": ("conv", 8, 16, 16, 8, 8, 3, 1),
    "conv dilated grouped (2x4x8x8, 4@3x3, pad 2, dilation 2, groups 2)": (
        "conv",
        2,
        4,
        4,
        8,
        8,
        3,
        2,
        2,
        2,
    ),
    "LeNet network, batch 1": ("net", 1, 1, 10, 28, 28, 5, 0),
    "vgg-bn network, batch 2": ("vgg", 2, 1, 10, 28, 28, 3, 1),
    "max pool 2x2 (2x3x8x8)": ("max", 2, 3, 3, 8, 8, 2, 0),
    "avg pool 2x2 (2x3x8x8)": ("avg", 2, 3, 3, 8, 8, 2, 0),
}


def unpack(spec) -> tuple:
    """(kind, N, C, O, H, W, kernel, padding, dilation, groups): the defaults filled in."""
    return (*spec, 1, 1)[:10]


COMPILE_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import importlib
import numpy as np
from cnn_im2col import functional as F
imported = time.perf_counter() - t0
KERNEL_MODULES = [importlib.import_module("cnn_im2col." + name) for name in (
    "threads", "arrays", "im2col", "conv.im2col", "conv.depthwise", "conv.winograd", "pooling",
    "normalization", "activations")]

def run():
    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 12, 12), dtype=np.float32)
    w = rng.random((3, 1, 5, 5), dtype=np.float32)
    y, c = F.conv2d_forward(x, w, np.zeros(3, np.float32))
    F.conv2d_backward(np.ones_like(y), c)
    y, c = F.conv2d_forward(x, w, None, stride=2, padding=1)
    F.conv2d_backward(np.ones_like(y), c)
    y, c = F.conv2d_forward(rng.random((2, 8, 6, 6), dtype=np.float32),
                            rng.random((8, 8, 3, 3), dtype=np.float32),
                            None, padding=1, algorithm="winograd")
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
kernels = list({id(v): v for m in KERNEL_MODULES for v in vars(m).values()
                 if hasattr(v, "stats")}.values())
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


def conv_flop(n, c, o, oh, ow, k, groups=1):
    return 2.0 * n * o * oh * ow * (c // groups) * k * k


def make_case(spec, rng):
    kind, n, c, o, h, w, k, p, d, g = unpack(spec)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    if kind in ("net", "vgg"):
        return {"x": x, "y": np.arange(n) % 10, "dout": None, "oh": 1, "ow": 1}
    if kind == "conv":
        weight = (rng.standard_normal((o, c // g, k, k)) * 0.1).astype(np.float32)
        bias = rng.standard_normal(o).astype(np.float32)
        oh, ow = h + 2 * p - d * (k - 1), w + 2 * p - d * (k - 1)
        dout = rng.standard_normal((n, o, oh, ow)).astype(np.float32)
        return {"x": x, "weight": weight, "bias": bias, "dout": dout, "oh": oh, "ow": ow}
    oh, ow = (h - k) // k + 1, (w - k) // k + 1
    return {
        "x": x,
        "dout": rng.standard_normal((n, c, oh, ow)).astype(np.float32),
        "oh": oh,
        "ow": ow,
    }


def runners(spec, data):
    """{impl: {"forward": fn, "forward+backward": fn}} for one case: ref, numpy, numba."""
    from cnn_im2col import functional as F
    from cnn_im2col import reference as R
    from cnn_im2col.conv.winograd import WinogradCache

    kind, _, _, _, _, _, k, p, d, g = unpack(spec)
    x, dout = data["x"], data["dout"]
    out = {}
    if kind == "net":
        return {"numba": net_runners(data)}
    if kind == "vgg":
        return {"numba": vgg_runners(data, "auto"), "im2col": vgg_runners(data, "im2col")}
    if kind == "conv":
        weight, bias = data["weight"], data["bias"]

        def engine(backend, algorithm="auto"):
            kw = {"backend": backend, "dilation": d, "groups": g, "algorithm": algorithm}

            def fwd():
                return F.conv2d_forward(x, weight, bias, 1, p, **kw)[0]

            def fwd_bwd():
                _, cache = F.conv2d_forward(x, weight, bias, 1, p, **kw)
                return F.conv2d_backward(dout, cache)

            return {"forward": fwd, "forward+backward": fwd_bwd}

        if (d, g) == (1, 1):  # the primer's approach knows neither dilation nor groups
            out["ref"] = {
                "forward": lambda: R.conv2d_forward(x, weight, bias, 1, p),
                "forward+backward": lambda: (
                    R.conv2d_forward(x, weight, bias, 1, p),
                    R.conv2d_backward(x, weight, dout, 1, p, bias="tied"),
                ),
            }
        out["numpy"], out["numba"] = engine("numpy"), engine("numba")
        if isinstance(
            F.conv2d_forward(x, weight, bias, 1, p, dilation=d, groups=g)[1], WinogradCache
        ):
            out["im2col"] = engine(
                "numba", "im2col"
            )  # the default took Winograd: the other strategy too
        return out

    fwd_f, bwd_f = (
        (F.max_pool2d_forward, F.max_pool2d_backward)
        if kind == "max"
        else (F.avg_pool2d_forward, F.avg_pool2d_backward)
    )
    ref_f, ref_b = (
        (R.max_pool2d_forward, R.max_pool2d_backward)
        if kind == "max"
        else (R.avg_pool2d_forward, R.avg_pool2d_backward)
    )

    def engine(backend):
        def fwd():
            return fwd_f(x, k, backend=backend)[0]

        def fwd_bwd():
            _, cache = fwd_f(x, k, backend=backend)
            return bwd_f(dout, cache)

        return {"forward": fwd, "forward+backward": fwd_bwd}

    out["ref"] = {
        "forward": lambda: ref_f(x, k),
        "forward+backward": lambda: (ref_f(x, k), ref_b(x, dout, k)),
    }
    out["numpy"], out["numba"] = engine("numpy"), engine("numba")
    return out


def net_runners(data) -> dict:
    """The engine's LeNet (``bench_train.our_network``): inference on the batch, and one training
    step's forward + loss + backward."""
    import bench_train

    from cnn_im2col.losses import SoftmaxCrossEntropy
    from cnn_im2col.model import Sequential

    model, loss, x, y = (
        Sequential(bench_train.our_network()),
        SoftmaxCrossEntropy(),
        data["x"],
        data["y"],
    )

    def step():
        loss.forward(model.forward(x, training=True), y)
        return model.backward(loss.backward(), input_grad=False)

    return {"forward": lambda: model.forward(x), "forward+backward": step}


def vgg_runners(data, algorithm: str) -> dict:
    """The engine's vgg-bn with every Conv2D's ``algorithm`` set: inference on the batch, and one
    training step's forward + loss + backward."""
    from cnn_im2col.architectures import vgg_bn
    from cnn_im2col.losses import SoftmaxCrossEntropy
    from cnn_im2col.model import Sequential

    config = vgg_bn().config()
    for entry in config["layers"]:
        if entry["class"] == "Conv2D":
            entry["config"]["algorithm"] = algorithm
    model, loss, x, y = Sequential.from_config(config), SoftmaxCrossEntropy(), data["x"], data["y"]

    def step():
        loss.forward(model.forward(x, training=True), y)
        return model.backward(loss.backward(), input_grad=False)

    return {"forward": lambda: model.forward(x), "forward+backward": step}


def torch_vgg_bn(torch):
    """architectures.vgg_bn in PyTorch (its own initial weights: only the time is compared)."""
    nn = torch.nn
    layers = []
    for cin, cout, pool in [(1, 32, True), (32, 64, False), (64, 64, True)]:
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 256),
        nn.ReLU(),
        nn.Dropout(0.4),
        nn.Linear(256, 10),
    )


def torch_runners(spec, data, torch):
    """{"forward": fn, "forward+backward": fn}: the same case in PyTorch, on the same arrays."""
    kind, _, _, _, _, _, k, p, d, g = unpack(spec)
    tx = torch.from_numpy(data["x"])
    if kind in ("net", "vgg"):
        import bench_train

        model, ty = (
            bench_train.Torch(torch).net if kind == "net" else torch_vgg_bn(torch),
            torch.from_numpy(data["y"]),
        )

        def t_infer():
            model.eval()  # BatchNorm's running statistics, no dropout: as the engine's inference
            with torch.no_grad():
                return model(tx)

        def t_step():
            model.train()
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(tx), ty).backward()

        return {"forward": t_infer, "forward+backward": t_step}
    td = torch.from_numpy(data["dout"])
    if kind == "conv":
        tw, tb = torch.from_numpy(data["weight"]), torch.from_numpy(data["bias"])

        def t_fwd():
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tw, tb, padding=p, dilation=d, groups=g)

        def t_fwd_bwd():
            xs, ws, bs = (t.detach().requires_grad_(True) for t in (tx, tw, tb))
            torch.nn.functional.conv2d(xs, ws, bs, padding=p, dilation=d, groups=g).backward(td)
            return xs.grad, ws.grad, bs.grad

        return {"forward": t_fwd, "forward+backward": t_fwd_bwd}
    t_pool = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d

    def t_fwd():
        with torch.no_grad():
            return t_pool(tx, k)

    def t_fwd_bwd():
        xs = tx.detach().requires_grad_(True)
        t_pool(xs, k).backward(td)
        return xs.grad

    return {"forward": t_fwd, "forward+backward": t_fwd_bwd}


def torch_worker(args) -> dict:
    """In its own process: time every case in PyTorch; "
    "{case: {mode: {"seconds", "peak_extra_bytes"}}}."""
    torch = C.import_torch()
    torch.set_num_threads(args.threads)
    C.keep_freed_memory()  # as in the engine's timings
    out = {
        "torch": {"version": torch.__version__, "num_threads": torch.get_num_threads()},
        "cases": {},
    }
    fns = {}
    for index, (name, spec) in enumerate(cases_for(args).items()):
        fns[name] = torch_runners(spec, make_case(spec, np.random.default_rng(index)), torch)
        out["cases"][name] = {
            mode: {"seconds": alternate_uneven({"torch": fn}, {"torch": args.rounds})["torch"]}
            for mode, fn in fns[name].items()
        }
    C.configure_malloc()
    for name, modes in fns.items():
        for mode, fn in modes.items():
            (
                out["cases"][name][mode]["peak_extra_bytes"],
                out["cases"][name][mode]["memory_method"],
            ) = C.peak_extra_bytes(fn)
    return out


def alternate_uneven(fns: dict, rounds: dict, burst: int = 3) -> dict:
    """Round-robin timing where each implementation has its own number of rounds (the scipy
    reference is hundreds of times slower than the rest, so it gets fewer).

    In each round every fast implementation runs once untimed, then ``burst`` timed calls back to
    back: timed warm, as in a training loop. A call timed right after another implementation's
    (the reference's 0.3-3 s of scipy loops evict the caches and let the thread pools fall asleep)
    is not what training sees: measured, LeNet's conv2 forward took 6.3 ms warm, 13 ms after 0.3 s
    idle and 18 ms right after a reference call. The reference is timed once per round: at
    seconds per call it has no such warm-up to lose.
    """
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for r in range(max(rounds.values())):
        for name, fn in fns.items():
            if r >= rounds[name]:
                continue
            timed = 1 if name == "ref" else burst
            if name != "ref":
                fn()
            for _ in range(timed):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return times


def cases_for(args) -> dict:
    return QUICK_CASES if args.quick else FULL_CASES


def time_case(spec, rounds, ref_rounds, rng) -> tuple[dict, dict, dict, dict | None]:
    """Time one case here (ref, numpy, im2col, numba, interleaved): (data, fns, {mode: {impl:
    seconds}}, this machine's GEMM rate for the layer's forward GEMM, measured now)."""
    kind, n, c, o, _, _, k, _, _, g = unpack(spec)
    data = make_case(spec, rng)
    fns = runners(spec, data)
    gemm = (
        C.gemm_rate(o // g, c // g * k * k, n * data["oh"] * data["ow"]) if kind == "conv" else None
    )
    times = {
        mode: alternate_uneven(
            {i: fns[i][mode] for i in fns}, {i: (ref_rounds if i == "ref" else rounds) for i in fns}
        )
        for mode in MODES
    }
    return data, fns, times, gemm


def case_result(name, spec, data, times, gemm, torch_runs) -> dict:
    """Medians, ratios, GFLOP/s and the fraction of the GEMM rate of one case; PyTorch's times
    pooled from its worker runs."""
    kind, n, c, o, h, w, k, p, d, g = unpack(spec)
    result = {
        "case": name,
        "kind": kind,
        "shape": {
            "N": n,
            "C": c,
            "O": o,
            "H": h,
            "W": w,
            "kernel": k,
            "padding": p,
            "dilation": d,
            "groups": g,
        },
        "modes": {},
    }
    if gemm is not None:
        result["gemm"] = gemm
    for mode in MODES:
        mode_times = dict(times[mode])
        if torch_runs:
            mode_times["torch"] = [
                t for run in torch_runs for t in run["cases"][name][mode]["seconds"]
            ]
        impls = [i for i in IMPLS if i in mode_times]
        entry = {
            "median_ms": {i: C.median_ms(mode_times[i]) for i in impls},
            "rounds": {i: len(mode_times[i]) for i in impls},
        }
        ms = entry["median_ms"]
        entry["speedup_numba_vs"] = {i: ms[i] / ms["numba"] for i in impls if i != "numba"}
        if kind == "conv":
            flop = conv_flop(n, c, o, data["oh"], data["ow"], k, g) * (
                1 if mode == "forward" else 3
            )
            entry["gflop"] = flop / 1e9
            entry["gflops"] = {i: C.gflops(flop, ms[i] / 1e3) for i in impls}
            entry["fraction_of_gemm_rate"] = {i: entry["gflops"][i] / gemm["gflops"] for i in impls}
        result["modes"][mode] = entry
    return result


def measure_memory(result: dict, fns: dict, torch_runs: list) -> None:
    """Peak extra memory of one call of each implementation and mode (after all timings: the
    malloc setting that makes it measurable would slow the timed calls down). PyTorch's was
    measured the same way in its worker process."""
    for mode, entry in result["modes"].items():
        memory = {}
        for i in entry["median_ms"]:
            if i == "torch":
                memory[i] = max(
                    run["cases"][result["case"]][mode]["peak_extra_bytes"] for run in torch_runs
                )
            else:
                memory[i], method = C.peak_extra_bytes(fns[i][mode])
        entry["peak_extra_bytes"] = memory
        entry["memory_method"] = method


def tables(results: list[dict], impls: list[str]) -> str:
    heads = [
        "case",
        "mode",
        *[f"{i} ms" for i in impls],
        *[f"numba vs {i}" for i in impls if i != "numba"],
        "numba GFLOP/s",
        "% of GEMM rate",
        *[f"{i} MiB" for i in impls],
    ]
    rows = []
    for r in results:
        for mode, e in r["modes"].items():
            ms = e["median_ms"]
            rows.append(
                [
                    r["case"],
                    mode,
                    *[ms.get(i) for i in impls],
                    *[
                        (f"{e['speedup_numba_vs'][i]:.3g}x" if i in e["speedup_numba_vs"] else None)
                        for i in impls
                        if i != "numba"
                    ],
                    e.get("gflops", {}).get("numba"),
                    (100 * e["fraction_of_gemm_rate"]["numba"])
                    if "fraction_of_gemm_rate" in e
                    else None,
                    *[
                        (e["peak_extra_bytes"][i] / 2**20 if i in e["peak_extra_bytes"] else None)
                        for i in impls
                    ],
                ]
            )
    return C.markdown_table(heads, rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes and few rounds (seconds)")
    parser.add_argument(
        "--threads", type=int, default=None, help="engine threads (default: all cores)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per implementation")
    parser.add_argument(
        "--no-torch", action="store_true", help="leave PyTorch out even if installed"
    )
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the JIT compile measurement"
    )
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", type=Path, default=None, help="results directory (default benchmarks/results)"
    )
    parser.add_argument(
        "--name", default=None, help="results file stem (default layers, or layers-quick)"
    )
    args = parser.parse_args(argv)
    C.check_out_dir(parser, args.out)

    from cnn_im2col import threads

    threads.set_num_threads(args.threads)
    n_threads = threads.get_num_threads()
    args.threads = n_threads
    args.rounds = args.rounds or (3 if args.quick else 15)
    if args.torch_worker:
        print(json.dumps(C.finite_or_none(torch_worker(args))))
        return {}
    has_torch = not args.no_torch and importlib.util.find_spec("torch") is not None
    cases = cases_for(args)
    ref_rounds = 2 if args.quick else 3
    machine = C.machine_info()

    compile_times = None if args.no_compile else measure_compile()
    worker = [
        str(Path(__file__).resolve()),
        "--torch-worker",
        "--threads",
        str(n_threads),
        "--rounds",
        str(args.rounds),
    ] + (["--quick"] if args.quick else [])
    torch_runs = (
        [C.run_json_subprocess(worker)] if has_torch else []
    )  # before ours, and again after
    C.keep_freed_memory()  # steady-state allocation, as in a training loop (see _common)
    timed = []
    for index, (name, spec) in enumerate(cases.items()):
        timed.append(
            (name, spec, *time_case(spec, args.rounds, ref_rounds, np.random.default_rng(index)))
        )
        print(f"  timed: {name}", file=sys.stderr, flush=True)
    if has_torch:
        torch_runs.append(C.run_json_subprocess(worker))
        machine["torch"] = torch_runs[0]["torch"]
    results = [
        case_result(name, spec, data, times, gemm, torch_runs)
        for name, spec, data, _, times, gemm in timed
    ]
    all_fns = [fns for _, _, _, fns, _, _ in timed]
    C.configure_malloc()  # from here on, every large allocation is its own mapping: RSS tells usage
    for result, fns in zip(results, all_fns):
        measure_memory(result, fns, torch_runs)
    del all_fns, timed
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    impls = [i for i in IMPLS if any(i in r["modes"]["forward"]["median_ms"] for r in results)]

    md = [
        f"# Layer benchmark{' (quick)' if args.quick else ''}",
        "",
        f"Machine: {C.machine_line(machine)}.",
        "",
        (
            "Median milliseconds over interleaved rounds; in each round every implementation but "
            "the reference "
            "runs once untimed, then 3 times timed, back to back (warm, as in a training loop), "
            "the reference "
            "once. ref: the primer's scipy.signal loops; numpy / numba: this engine's two "
            "backends (numba as a user "
            "gets it: Winograd's F(4x4, 3x3) for a 3x3 stride-1 layer); im2col: numba with "
            "algorithm='im2col', where "
            "the default took Winograd; torch: "
            "PyTorch, timed the same way in a process of its own, once before and once after the "
            "others (its "
            "idle OpenMP workers spin on the cores the engine's next call needs). All timings "
            "reuse freed memory "
            "as a training loop does (glibc's thresholds raised; otherwise each call page-faults "
            "fresh mappings). `numba vs X` = X's time / numba's time. GFLOP/s "
            "counts 2·N·O·OH·OW·C·KH·KW per forward (x3 with backward); `% of GEMM rate` compares "
            "it with "
            "np.matmul on a GEMM of the layer's forward M, K, N, measured in the same run. MiB: "
            "peak extra "
            f"resident memory of one call ({results[0]['modes']['forward']['memory_method']})."
        ),
        "",
        tables(results, impls),
        "",
    ]
    gemm_rows = [
        [
            r["case"],
            r["gemm"]["m"],
            r["gemm"]["k"],
            r["gemm"]["n"],
            r["gemm"]["ms"],
            r["gemm"]["gflops"],
        ]
        for r in results
        if "gemm" in r
    ]
    md += [
        "GEMM rate of this machine now (np.matmul, float32):",
        "",
        C.markdown_table(["case", "M", "K", "N", "ms", "GFLOP/s"], gemm_rows),
        "",
    ]
    if compile_times:
        cold, cached = compile_times["cold"], compile_times["cached"]
        md += [
            "JIT compilation (fresh processes, excluded from the timings above):",
            "",
            C.markdown_table(
                [
                    "run",
                    "import s",
                    "first call s",
                    "JIT s (first - warm)",
                    "cache hits",
                    "cache misses",
                ],
                [
                    [
                        "cold (empty NUMBA_CACHE_DIR)",
                        cold["import_s"],
                        cold["first_call_s"],
                        cold["jit_s"],
                        cold["cache_hits"],
                        cold["cache_misses"],
                    ],
                    [
                        "cached (second process)",
                        cached["import_s"],
                        cached["first_call_s"],
                        cached["jit_s"],
                        cached["cache_hits"],
                        cached["cache_misses"],
                    ],
                ],
            ),
            "",
        ]
    markdown = "\n".join(md)
    data = C.finite_or_none(
        {
            "benchmark": "layers",
            "quick": args.quick,
            "machine": machine,
            "threads": n_threads,
            "torch_threads": n_threads if has_torch else None,
            "compile": compile_times,
            "results": results,
        }
    )
    name = args.name or ("layers-quick" if args.quick else "layers")
    C.publish(name, data, markdown, args.out)
    return data


if __name__ == "__main__":
    main()
