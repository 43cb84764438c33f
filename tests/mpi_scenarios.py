"""Scenarios run under real MPI by tests/test_distributed.py:

    mpiexec -n 2 python -m mpi4py tests/mpi_scenarios.py SCENARIO OUTDIR

Each writes ``OUTDIR/result.json`` from rank 0 (what every rank saw, gathered), for the test to
check. Tiny float64 networks on tiny random data, so that a launch takes seconds.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

from cnn_im2col import (
    SGD,
    Adam,
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    CosineAnnealingLR,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    RandomShift,
    ReLU,
    Residual,
    Sequential,
    SoftmaxCrossEntropy,
    StepLR,
)
from cnn_im2col.exceptions import TrainingInterrupted

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
N = 45  # batches of 8: the last has 5 samples, split 3 + 2 over two ranks


def data(n=N):
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 10, 10)), rng.integers(0, 5, n)


class RunningMean:
    """The identity, with a running mean of its inputs in ``buffers`` (as BatchNorm keeps its
    statistics): each rank sees other samples, so only broadcasting keeps the buffers equal."""

    def __init__(self):
        self.params, self.grads, self.buffers = {}, {}, {"mean": np.zeros(1), "seen": 0}

    def forward(self, x, training=False):
        if training:
            self.buffers["mean"] *= 0.9
            self.buffers["mean"] += 0.1 * x.mean()
            # a scalar: replaced, not mutated
            self.buffers["seen"] = self.buffers["seen"] + x.shape[0]
        return x

    def backward(self, dout):
        return dout

    def output_shape(self, shape):
        return shape


def net(bias="tied", pool=MaxPool2D, dropout=False):
    layers = [Conv2D(1, 3, 3, bias=bias, input_size=(10, 10) if bias == "untied" else None,
                     dtype=np.float64,
                     seed=0), ReLU(), pool(2), Flatten(), Dense(48, 12, dtype=np.float64, seed=1),
              ReLU()]
    if dropout:
        layers.append(Dropout(0.3, seed=2))
    return Sequential([*layers, Dense(12, 5, dtype=np.float64, seed=3)])


def residual_net():
    """A residual network: an identity block, then a strided block with a projection shortcut."""
    def conv(cin, cout, k, seed, **kw):
        return Conv2D(cin, cout, k, dtype=np.float64, seed=seed, **kw)
    return Sequential([
        conv(1, 3, 3, 0, padding=1), ReLU(),
        Residual(Sequential([conv(3, 3, 3, 1, padding=1), ReLU(), conv(3, 3, 3, 2, padding=1)])),
        ReLU(),
        Residual(Sequential([conv(3, 4, 3, 3, stride=2, padding=1), ReLU(), MaxPool2D(1)]),
                 conv(3, 4, 1, 4, stride=2)),
        ReLU(), Flatten(), Dense(100, 5, dtype=np.float64, seed=5)])


def train(model, x, y, comm_=None, epochs=3, batch_size=8, lr=1e-2, **kwargs):
    optimizer = Adam(lr)
    kwargs.setdefault("scheduler", StepLR(optimizer, step_size=4, gamma=0.5))
    return model.fit(x, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                     loss=SoftmaxCrossEntropy(),
                     seed=1, augment=RandomShift(1), validation_data=(x[:11], y[:11]),
                     progress=False, log=None,
                     scheduler_interval="batch", comm=comm_, **kwargs)


def relative_error(a, b):
    return max(
        float(
            np.max(
                np.abs(a.params[k] - b.params[k])) / np.max(np.abs(b.params[k]))) for k in b.params)


def same_on_every_rank(obj):
    every = comm.allgather(obj)
    return all(o == every[0] for o in every)


def param_bytes(model):
    return {k: v.tobytes() for k, v in model.params.items()}


def history_without_times(h):
    return {k: v for k, v in h.items() if k not in ("seconds", "samples_per_s")}


def equivalence(out):
    x, y = data()
    result = {"cases": []}
    for bias in ("tied", "untied"):
        for pool in (MaxPool2D, AvgPool2D):
            single, parallel = net(bias, pool), net(bias, pool)
            h1 = train(single, x, y)
            h2 = train(parallel, x, y, comm)
            result["cases"].append({
                "case": f"{bias} {pool.__name__}", "error": relative_error(parallel, single),
                "loss_error": max(abs(a - b) for a, b in zip(h1["loss"], h2["loss"])),
                "val_loss_error": max(abs(a - b) for a, b in zip(h1["val_loss"], h2["val_loss"])),
                "params_same_on_ranks": same_on_every_rank(param_bytes(parallel)),
                "history_same_on_ranks": same_on_every_rank(h2)})
    single, parallel = residual_net(), residual_net()
    h1 = train(single, x, y)
    h2 = train(parallel, x, y, comm)
    result["cases"].append({
        "case": "residual", "error": relative_error(parallel, single),
        "loss_error": max(abs(a - b) for a, b in zip(h1["loss"], h2["loss"])),
        "params_same_on_ranks": same_on_every_rank(param_bytes(parallel)),
        "history_same_on_ranks": same_on_every_rank(h2)})
    # global batches of 1 on 2 ranks: rank 1's share is always empty
    single, parallel = net(), net()
    train(single, x[:5], y[:5], epochs=2, batch_size=1)
    train(parallel, x[:5], y[:5], comm, epochs=2, batch_size=1)
    result["cases"].append({"case": "batch_size 1", "error": relative_error(parallel, single),
                            "params_same_on_ranks": same_on_every_rank(param_bytes(parallel))})
    # a layer with buffers: rank 0's are broadcast after every step
    parallel = net()
    parallel.layers.insert(3, RunningMean())
    train(parallel, x, y, comm)
    buffers = parallel.layers[3].buffers
    mean, seen = float(buffers["mean"][0]), int(buffers["seen"])
    result["buffers"] = {"same_on_ranks": same_on_every_rank([mean, seen]), "updated": mean != 0.0,
                         "seen": seen}

    mismatches = {
        "data length": lambda: train(net(), x[:N - rank], y[:N - rank], comm),
        "learning rate": lambda: train(net(), x, y, comm, lr=1e-2 * (1 + rank)),
        "model": lambda: train(net(bias="tied" if rank == 0 else None), x, y, comm),
        "labels on one rank": lambda: train(net(), x, np.where(np.arange(N) == 3, 7 * rank, y),
                                            comm),
    }
    result["mismatch"] = {}
    for name, run in mismatches.items():
        try:
            run()
            message = None
        except (ValueError, TypeError) as exc:
            message = f"{type(exc).__name__}: {exc}"
        result["mismatch"][name] = comm.allgather(message)
    return result


def batchnorm(out):
    """BatchNorm2D under 2 ranks keeps per-rank statistics (as DDP): one SGD step on a batch of 8
    equals the mean of the gradients each half of the batch gives with its own statistics, and
    rank 0's running statistics are broadcast."""
    x, y = data(8)

    def bn_net():
        return Sequential([Conv2D(1, 3, 3, dtype=np.float64, seed=0),
                           BatchNorm2D(3, dtype=np.float64), ReLU(), Flatten(),
                           Dense(192, 5, dtype=np.float64, seed=1)])

    def fit(model, comm_=None):
        model.fit(x, y, epochs=1, batch_size=8, optimizer=SGD(0.1), loss=SoftmaxCrossEntropy(),
                  shuffle=False, progress=False, log=None, comm=comm_)

    parallel, single, emulated = bn_net(), bn_net(), bn_net()
    fit(parallel, comm)
    fit(single)
    loss = SoftmaxCrossEntropy()
    grads = {k: np.zeros_like(v) for k, v in emulated.params.items()}
    for half in (slice(0, 4), slice(4, 8)):  # each rank's share, with its own statistics
        model = bn_net()
        loss.forward(model.forward(x[half], training=True), y[half])
        model.backward(loss.backward())
        for k, g in model.grads.items():
            grads[k] += g / 2
        if half.start == 0:
            running = {k: v.copy() for k, v in model.buffers.items()}  # rank 0's
    for k, v in emulated.params.items():
        v -= 0.1 * grads[k]
    return {"error_vs_per_rank_statistics": relative_error(parallel, emulated),
            "error_vs_one_process": relative_error(parallel, single),
            "running_equal_rank_0": all(np.allclose(parallel.buffers[k], v, rtol=1e-12, atol=0)
                                        for k, v in running.items()),
            "params_same_on_ranks": same_on_every_rank(param_bytes(parallel)),
            "buffers_same_on_ranks": same_on_every_rank(
                {k: np.asarray(v).tobytes() for k, v in parallel.buffers.items()})}


def dropout(out):
    """Dropout and augmentation under K ranks: saved for the test to compare across launches of
    different sizes (per-sample keys make the result independent of K)."""
    x, y = data()
    parallel = net(dropout=True)
    train(parallel, x, y, comm)
    if rank == 0:
        np.savez(out / f"dropout-{comm.Get_size()}.npz", **parallel.params)
    return {"params_same_on_ranks": same_on_every_rank(param_bytes(parallel))}


def resume(out):
    x, y = data()
    full = net(dropout=True)

    def run(model, **kwargs):
        optimizer = kwargs.pop("optimizer", None) or Adam(1e-2)
        scheduler = kwargs.pop("scheduler", None) or CosineAnnealingLR(optimizer, t_max=18)
        return model.fit(x, y, epochs=3, batch_size=8, optimizer=optimizer,
                         loss=SoftmaxCrossEntropy(), seed=1,
                         augment=RandomShift(1), validation_data=(x[:11], y[:11]), progress=False,
                         log=None,
                         scheduler=scheduler, scheduler_interval="batch", comm=comm, **kwargs)

    h_full = run(full, checkpoint=out / "full.npz")
    calls = []

    def stop_on_rank_1():  # only rank 1 asks: every rank must stop after the same batch
        calls.append(1)
        return rank == 1 and len(calls) == 8

    result = {}
    try:
        run(net(dropout=True), checkpoint=out / "part.npz", should_stop=stop_on_rank_1)
        result["interrupted"] = comm.allgather(None)
    except TrainingInterrupted as exc:
        result["interrupted"] = comm.allgather([exc.epoch, exc.batch])
    comm.Barrier()  # rank 0 has written the checkpoint
    ckpt = Sequential.load_checkpoint(out / "part.npz")
    h_resumed = run(ckpt.model, optimizer=ckpt.optimizer, scheduler=ckpt.scheduler,
                    resume=ckpt.state,
                    checkpoint=out / "part.npz")
    result["bit_identical"] = comm.allgather(
        all(np.array_equal(full.params[k], ckpt.model.params[k])
            for k in full.params))
    result["history_equal"] = comm.allgather(
        history_without_times(h_full) == history_without_times(h_resumed))
    result["checkpoint_state"] = [ckpt.state["epoch"], ckpt.state["batch"]]
    return result


def kill(out):
    x, y = data()
    calls = []

    def die_in_epoch_2():  # polled before each step's Allreduce: rank 1 dies mid-step
        calls.append(1)
        if rank == 1 and len(calls) == 9:
            (out / "killed").write_text(str(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
        return False

    train(net(), x, y, comm, checkpoint=out / "kill.npz", should_stop=die_in_epoch_2)
    return {"finished": True}  # not reached


def cli_resume(out):
    """``train`` interrupted on rank 1 only (as by a SIGTERM to that rank), then ``--resume``d, ends
    with the weights of an uninterrupted run; ``metrics.json`` records the world size."""
    from conftest import synthetic_digits

    from cnn_im2col import cli
    from cnn_im2col.cli.train import StopRequest
    from cnn_im2col.datasets import write_idx

    idx = out / "idx"
    if rank == 0:
        idx.mkdir()
        x, y = synthetic_digits(120, 0)
        xt, yt = synthetic_digits(30, 1)
        for name, a in (("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", y),
                        ("t10k-images-idx3-ubyte", xt), ("t10k-labels-idx1-ubyte", yt)):
            write_idx(idx / name, a)
    comm.Barrier()

    def args(run, *extra):
        return ["train", "--data-dir", str(idx), "--val-split", "20", "--epochs", "2",
                "--batch-size", "16",
                "--no-progress", "--out", str(out / run), *extra]

    codes = {"full": cli.main(args("full"))}
    polls = []
    original = StopRequest.__call__

    def sigterm_to_rank_1_at_batch_9(self):
        polls.append(1)
        if rank == 1 and len(polls) == 9:
            self.signum = signal.SIGTERM
        return original(self)

    StopRequest.__call__ = sigterm_to_rank_1_at_batch_9
    codes["interrupted"] = cli.main(args("part"))
    StopRequest.__call__ = original
    codes["resumed"] = cli.main(["train", "--resume", str(out / "part"), "--no-progress"])
    result = {"codes": comm.allgather(codes)}
    if rank == 0:
        a, b = (Sequential.load(out / run / "model.npz").params for run in ("full", "part"))
        result["bit_identical"] = all(np.array_equal(a[k], b[k]) for k in a)
        result["world_size"] = json.loads((out / "part" / "metrics.json").read_text())["world_size"]
    return result


if __name__ == "__main__":
    scenario, out = sys.argv[1], Path(sys.argv[2])
    result = {"equivalence": equivalence, "resume": resume, "kill": kill, "cli-resume": cli_resume,
              "dropout": dropout, "batchnorm": batchnorm}[scenario](out)
    if rank == 0:
        (out / "result.json").write_text(json.dumps(result, indent=1))
