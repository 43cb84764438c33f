"""Data parallelism over an MPI communicator (mpi4py): what the training loop needs and nothing
else.

Public API
----------
- :func:`detect_comm` — ``MPI.COMM_WORLD`` when this process was started by an MPI launcher
  (``mpiexec``, ``srun``) with more than one rank, else None. Needs the ``mpi`` extra (mpi4py).
- :func:`threads_per_rank` — (cores this process may use) / (ranks on this node): the default
  number of threads per rank, so that ranks on one node do not oversubscribe it (MPICH does not
  pin ranks to cores, so every rank sees every core).
- :class:`DataParallel` — used by :func:`cnn_im2col.training.fit` when given a communicator of
  size K > 1: each rank's contiguous share of a global batch, one fused ``Allreduce`` per step over
  a persistent flat buffer (the gradients, each rank's weighted by its sample count, followed by the
  step's metric sums and flags), the broadcast of rank 0's parameters, optimizer and scheduler state
  and layer buffers, and the one collective at the start that checks that the ranks agree
  (on :func:`fingerprint`: data sizes and CRC-32s, architecture, hyperparameters, resume position).
- :class:`SampleKeyedGenerator` — what a layer's generator (Dropout's) becomes for one step, so
  that each sample's mask is the same whichever rank holds it.
- :func:`share` — rank r's contiguous share of a batch of n samples.

This module imports mpi4py only when a communicator is used; it knows nothing of the model class.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from .containers import generator_slots, leaves

__all__ = ["MPI_ENVIRONMENT", "DataParallel", "SampleKeyedGenerator", "detect_comm", "fingerprint",
           "launched_by_mpi", "share", "threads_per_rank", "world_size"]

#: Environment variables set by the MPI launchers (MPICH/Intel MPI's Hydra, Open MPI, PMIx, Slurm's
#: PMI).
MPI_ENVIRONMENT = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")


def launched_by_mpi() -> bool:
    """Whether an MPI launcher started this process (or mpi4py.MPI is already imported, as under
    ``python -m mpi4py``)."""
    return "mpi4py.MPI" in sys.modules or any(name in os.environ for name in MPI_ENVIRONMENT)


def detect_comm() -> Any:
    """``mpi4py.MPI.COMM_WORLD`` if this process is one of several MPI ranks, else None.

    Raises ImportError (saying how to install it) if an MPI launcher started us but mpi4py is
    missing.
    """
    if not launched_by_mpi():
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("this process was started by an MPI launcher (" +
                          ", ".join(v for v in MPI_ENVIRONMENT if v in os.environ) +
                          " set) but mpi4py is not installed; install it with pip install "
                          "'cnn-im2col[mpi]'") from None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def threads_per_rank(comm: Any) -> int:
    """Cores usable by this process divided by the ranks of ``comm`` on this node (at least 1)."""
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        on_node = local.Get_size()
    finally:
        local.Free()
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else (os.cpu_count() or 1))
    return max(1, cores // on_node)


def world_size(comm: Any, owner: str) -> int:
    """``comm.Get_size()``, or a TypeError if ``comm`` is not an mpi4py communicator."""
    if not all(hasattr(comm, name) for name in ("Get_size", "Get_rank", "Allreduce", "bcast",
                                                "allgather")):
        raise TypeError(
            f"{owner}: comm must be an mpi4py communicator (e.g. mpi4py.MPI.COMM_WORLD) or None, "
            f"got {type(comm).__name__}")
    return int(comm.Get_size())


def share(count: int, rank: int, size: int) -> tuple[int, int]:
    """``(start, stop)``: rank ``rank``'s contiguous share of ``count`` samples split over ``size``
    ranks; the first ``count % size`` ranks take one more than the others (an empty share when
    ``count < size``)."""
    base, extra = divmod(count, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def _checksum(a: np.ndarray) -> str:
    """CRC-32 of an array's bytes with its dtype and shape: ranks holding different data disagree.
    """
    data = np.ascontiguousarray(a)
    return f"{data.dtype.str}{list(data.shape)}:{zlib.crc32(data.reshape(-1).view(np.uint8)):08x}"


def _without_seeds(config: Any) -> Any:
    """A model config minus the layers' ``seed`` entries: rank 0's weights are broadcast, so layers
    seeded differently on different ranks are no disagreement."""
    if isinstance(config, Mapping):
        return {k: _without_seeds(v) for k, v in config.items() if k != "seed"}
    if isinstance(config, list):
        return [_without_seeds(v) for v in config]
    return config


def _model_config(model: Any) -> Any:
    """The architecture without layer seeds, layer by layer; a layer without a config (it cannot be
    saved, but it can train) by its class name alone."""
    layers = []
    for layer in model.layers:
        if hasattr(layer, "layers"):
            layers.append({"class": type(layer).__name__, "layers": _model_config(layer)})
            continue
        try:
            layers.append({"class": type(layer).__name__, "config": _without_seeds(layer.config())})
        except Exception:  # noqa: BLE001 - no (JSON-able) config: the class must do
            layers.append({"class": type(layer).__name__})
    return layers


def _config(obj: Any) -> Any:
    if obj is None:
        return None
    try:
        return json.loads(json.dumps({"class": type(obj).__name__, "config": obj.config()},
                                     default=str))
    except Exception:  # noqa: BLE001 - an object without a JSON-able config: its class and repr
        return {"class": type(obj).__name__, "repr": repr(obj)}


def fingerprint(model: Any, x: np.ndarray, y: np.ndarray, val: tuple | None,
                **settings: Any) -> dict:
    """What every rank must agree on before training: the data (sizes and checksums), the
    architecture, the hyperparameters (``settings``: epochs, batch_size, shuffle, seed, optimizer,
    scheduler, scheduler_interval, loss, augment, resume)."""
    found = {
        "training samples": int(x.shape[0]),
        "x": _checksum(x),
        "y": _checksum(y),
        "validation data": None if val is None else [_checksum(val[0]), _checksum(val[1])],
        "model": _model_config(model),
        "parameters": {k: f"{p.dtype} {tuple(p.shape)}" for k, p in model.params.items()},
    }
    for key, value in settings.items():
        if key in ("optimizer", "scheduler", "loss", "augment"):
            value = _config(value)
        elif key == "resume":
            value = None if value is None else {
                k: value.get(k) for k in ("epoch", "batch", "seed", "sums")}
        found[key] = value
    return json.loads(json.dumps(found, default=str))


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    """Nested dicts and lists as ``{"a.b.0": leaf}``, so a disagreement names the exact setting."""
    if isinstance(value, Mapping) and value:
        found: dict[str, Any] = {}
        for k, v in value.items():
            found.update(_leaves(v, f"{prefix}.{k}"))
        return found
    if isinstance(value, list) and value and any(isinstance(v, (Mapping, list)) for v in value):
        found = {f"{prefix} length": len(value)}
        for i, v in enumerate(value):
            found.update(_leaves(v, f"{prefix}.{i}"))
        return found
    return {prefix: value}


def _brief(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class SampleKeyedGenerator(np.random.Generator):
    """A Generator whose first ``random(shape)`` returns rows ``offset .. offset + shape[0]`` of the
    draw of shape ``(offset + shape[0], *shape[1:])``: it draws and drops ``offset`` rows first.

    So a layer that draws one per-sample mask per step over the batch axis (Dropout) masks every
    sample of a global batch alike whichever rank holds it. Later draws in the same step are not
    shifted (no layer of this package makes them).
    """

    def __init__(self, bit_generator: np.random.BitGenerator, offset: int) -> None:
        super().__init__(bit_generator)
        self.offset = int(offset)

    def random(self, size: Any = None, dtype: Any = np.float64,
               out: np.ndarray | None = None) -> Any:
        shape = out.shape if out is not None else size
        if self.offset and shape is not None:
            shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
            skip = self.offset * int(np.prod(shape[1:], dtype=np.int64)) if shape else 0
            while skip > 0:  # in chunks: the dropped rows need not be held at once
                chunk = min(skip, 1 << 20)
                super().random(chunk, dtype=dtype)
                skip -= chunk
        self.offset = 0
        return super().random(size, dtype=dtype, out=out)


class DataParallel:
    """Data-parallel training over ``comm`` (size K > 1): see the module docstring."""

    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = comm
        self.rank, self.size = int(comm.Get_rank()), int(comm.Get_size())
        self.buffer = np.empty(0)
        self._layout: tuple = ()
        self._views: dict[str, np.ndarray] = {}
        self._flat: dict[str, np.ndarray] = {}
        self._buffer_pack = np.empty(0)

    # --- shares ----------------------------------------------------------------------------
    def share(self, count: int) -> tuple[int, int]:
        """``(start, stop)`` of this rank's share of ``count`` samples (see :func:`share`)."""
        return share(count, self.rank, self.size)

    # --- the step's collective ------------------------------------------------------------------
    def _build(self, grads: Mapping[str, np.ndarray], extras: int) -> None:
        layout = tuple((k, g.shape, g.dtype.str) for k, g in grads.items()) + (extras,)
        if layout == self._layout:
            return
        dtype = np.result_type(*[g.dtype for g in grads.values()]) if grads else np.float64
        total = sum(int(g.size) for g in grads.values())
        self.buffer = np.zeros(total + extras, dtype=dtype)
        self._views, self._flat, offset = {}, {}, 0
        for key, g in grads.items():
            part = self.buffer[offset:offset + g.size]
            self._flat[key], self._views[key] = part, part.reshape(g.shape)
            offset += g.size
        self._grad_part = self.buffer[:total]
        self._tail = self.buffer[total:]
        self._layout = layout

    def allreduce_gradients(self, grads: Mapping[str, np.ndarray], count: int, total: int,
                            extras: list[float]) -> tuple[dict[str, np.ndarray], list[float]]:
        """Sum ``count * grads`` (this rank's mean gradient over its ``count`` samples) and
        ``extras`` over the ranks in one in-place Allreduce; return the global mean gradient (views
        into the persistent buffer, divided by ``total``, the global batch) and the summed extras.
        """
        self._build(grads, len(extras))
        for key, g in grads.items():
            if count:
                np.multiply(g.reshape(-1), count, out=self._flat[key])
            else:  # an empty share: zeros, whatever (stale, even NaN) gradient the layer holds
                self._flat[key].fill(0)
        self._tail[:] = extras
        self.comm.Allreduce(self._mpi.IN_PLACE, self.buffer, op=self._mpi.SUM)
        sums = [float(v) for v in self._tail]
        self._grad_part /= total
        return self._views, sums

    # --- state kept equal on every rank ----------------------------------------------------------
    @staticmethod
    def layer_buffers(model: Any) -> dict[str, tuple[dict, str]]:
        """Every layer's ``buffers`` (e.g. running statistics, counts), nested stacks included, as
        ``{"{index}.{name}": (the layer's buffers dict, name)}``: scalars are replaced, not mutated.
        """
        found: dict[str, tuple[dict, str]] = {}
        for path, leaf in leaves(model):
            holder = getattr(leaf, "buffers", None) or {}
            found.update({f"{path}{name}": (holder, name) for name in holder})
        return found

    @staticmethod
    def _set_buffer(holder: dict, name: str, value: Any) -> None:
        current = holder[name]
        if isinstance(current, np.ndarray) and current.ndim > 0:
            # in place: others may hold it
            np.copyto(current, np.reshape(value, current.shape), casting="unsafe")
        else:
            dtype = np.asarray(current).dtype
            holder[name] = np.asarray(value, dtype=dtype).reshape(np.shape(current))

    def broadcast_buffers(self, model: Any) -> None:
        """Rank 0's layer buffers to every rank, in one Bcast (nothing to do if there are none)."""
        slots = list(self.layer_buffers(model).values())
        if not slots:
            return
        values = [np.asarray(holder[name]) for holder, name in slots]
        total = sum(v.size for v in values)
        dtype = np.result_type(*[v.dtype for v in values])
        if self._buffer_pack.size != total or self._buffer_pack.dtype != dtype:
            self._buffer_pack = np.empty(total, dtype=dtype)
        offset = 0
        for v in values:
            self._buffer_pack[offset:offset + v.size] = v.ravel()
            offset += v.size
        self.comm.Bcast(self._buffer_pack, root=0)
        offset = 0
        for (holder, name), v in zip(slots, values):
            self._set_buffer(holder, name, self._buffer_pack[offset:offset + v.size])
            offset += v.size

    def broadcast_state(self, model: Any, optimizer: Any, scheduler: Any) -> None:
        """Rank 0's parameters, layer buffers, optimizer and scheduler state to every rank."""
        state = None
        if self.rank == 0:
            slots = self.layer_buffers(model).items()
            state = {"params": model.params,
                     "buffers": {key: holder[name] for key, (holder, name) in slots},
                     "optimizer": (optimizer.state_dict() if hasattr(optimizer, "state_dict")
                                   else None),
                     "scheduler": (scheduler.state_dict()
                                   if scheduler is not None and hasattr(scheduler, "state_dict")
                                   else None)}
        state = self.comm.bcast(state, root=0)
        if self.rank == 0:
            return
        params = model.params
        for key, value in state["params"].items():
            np.copyto(params[key], value)
        buffers = self.layer_buffers(model)
        for key, value in state["buffers"].items():
            self._set_buffer(*buffers[key], value)
        if state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        if state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])

    @contextlib.contextmanager
    def keyed_generators(self, model: Any, key: list[int], offset: int) -> Iterator[None]:
        """For one step, every layer generator (Dropout's) is replaced by a
        :class:`SampleKeyedGenerator` seeded by ``key + [index]`` and shifted to this rank's first
        sample, ``offset``: the masks of a sample do not depend on the number of ranks, and a
        resumed run needs no generator state. The layers get their own generators back afterwards.
        """
        slots = [slot[1:] for slot in generator_slots(model)]
        for i, (layer, attr, gen) in enumerate(slots):
            seeded = type(gen.bit_generator)(np.random.SeedSequence([*key, i]))
            setattr(layer, attr, SampleKeyedGenerator(seeded, offset))
        try:
            yield
        finally:
            for layer, attr, gen in slots:
                setattr(layer, attr, gen)

    # --- small collectives ---------------------------------------------------------------------
    def agree(self, mine: dict, owner: str) -> None:
        """The one collective at the start: gather every rank's ``fingerprint``; if any differs from
        rank 0's (or a rank reports an ``"error"``), raise the same ValueError on every rank."""
        every = self.comm.allgather(mine)
        problems = []
        for r, theirs in enumerate(every):
            if "error" in theirs:
                problems.append(f"rank {r} failed: {theirs['error']}")
        if not problems:
            root = {k: v for key, value in every[0].items() for k, v in _leaves(value, key).items()}
            for r, theirs in enumerate(every[1:], start=1):
                mine = {
                    k: v for key, value in theirs.items() for k, v in _leaves(value, key).items()}
                for key in dict.fromkeys([*root, *mine]):
                    if mine.get(key, "(none)") != root.get(key, "(none)"):
                        problems.append(f"rank {r} has {key} {_brief(mine.get(key, '(none)'))} "
                                        f"(rank 0: {_brief(root.get(key, '(none)'))})")
        if problems:
            raise ValueError(
                f"{owner}: the {self.size} MPI ranks must train on the same data with the same "
                f"model and settings, but " + "; ".join(problems) + "; no step was taken")

    def from_root(self, values: list[float]) -> list[float]:
        """Rank 0's ``values`` on every rank."""
        return list(self.comm.bcast(list(values) if self.rank == 0 else None, root=0))

    def from_root_object(self, value: Any) -> Any:
        return self.comm.bcast(value if self.rank == 0 else None, root=0)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is True on any rank."""
        return bool(self.comm.allreduce(bool(flag), op=self._mpi.LOR))

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks, in float64."""
        data = np.asarray(values, dtype=np.float64)
        self.comm.Allreduce(self._mpi.IN_PLACE, data, op=self._mpi.SUM)
        return data.tolist()
