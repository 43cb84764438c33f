"""``Sequential``: a stack of layers that trains, evaluates, predicts, summarises, saves and loads.

Public API
----------
- :class:`Sequential` — ``forward``, ``backward``, ``params`` / ``grads`` (flat dicts keyed
  ``"{index}.{name}"`` holding the layers' own arrays), ``fit``, ``evaluate``, ``predict``,
  ``check_shapes``, ``summary``, ``save`` / ``load`` and ``save_checkpoint`` / ``load_checkpoint``,
  ``state_dict`` / ``load_state_dict`` (PyTorch's ``nn.Sequential`` key names).
  It follows the layer protocol itself, so a gradient check or a nested stack can treat it as a layer.
- :class:`TrainingDiverged` (a ``FloatingPointError``) — a batch's loss or gradient was NaN/Inf;
  raised *before* that step is applied, naming the epoch and the batch.
- :class:`TrainingInterrupted` — ``fit``'s ``should_stop()`` returned True after a batch; the
  checkpoint (if ``fit`` was given one) was written first.
- :class:`RandomShift` — data augmentation: every image moved by a random whole number of pixels.
- :class:`Checkpoint` — what :meth:`Sequential.load_checkpoint` returns.

Files
-----
A model file is one ``.npz`` (read with ``allow_pickle=False``, written atomically) holding

- ``"__model__"``: UTF-8 JSON as a uint8 array,
  ``{"format": "cnn-im2col.Sequential", "version": 1, "layers": [{"class": ..., "config": ...}]}``;
- ``"param:{index}.{name}"``: every parameter array, in its dtype.

A checkpoint is a model file plus ``"optim:{key}"`` arrays (the optimizer's ``state_dict``) and
``"__training__"`` (JSON: optimizer and scheduler configuration and state, and ``fit``'s position:
epoch, batch, seed, partial sums of the epoch, history, the state of every layer's random
generator). ``Sequential.load`` reads a checkpoint as a model and ignores those extras.

Reproducibility
---------------
``fit(seed=s)`` draws the order of epoch ``e`` from ``default_rng([s, e])`` and the augmentation of
batch ``b`` of epoch ``e`` from ``default_rng([s, e, b])``; layers with their own generators
(``Dropout``) advance them batch by batch and the checkpoint stores their states. So the same seed
gives the same weights, and training resumed from a checkpoint written mid-epoch (or at an epoch
end) ends with exactly the weights of an uninterrupted run. ``seed=None`` draws a seed from the OS
and records it in the history (``history["seed"]``).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from . import blocks as _blocks
from . import functional as F
from . import optim as _optim
from ._files import atomic_write
from .layers import LAYERS, AvgPool2D, Conv2D, Dense, Softmax
from .shapes import NonFiniteError, as_float_array, check_choice, check_int, finite_scans_skipped

__all__ = [
    "Checkpoint",
    "IncompatibleKeys",
    "RandomShift",
    "Sequential",
    "TrainingDiverged",
    "TrainingInterrupted",
]

FORMAT = "cnn-im2col.Sequential"
FORMAT_VERSION = 1
_MODEL_KEY = "__model__"
_TRAINING_KEY = "__training__"
_PARAM_PREFIX = "param:"
_OPTIM_PREFIX = "optim:"

HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "samples_per_s")


class TrainingDiverged(FloatingPointError):
    """The loss or a gradient of a batch was NaN or Inf, or the optimizer step made a parameter
    NaN/Inf. The step was NOT applied: the parameters are those from before that batch (an
    optimizer's internal state, such as momentum, may have advanced in the last case).

    Attributes: ``epoch`` and ``batch`` (1-based), ``loss`` (the bad value), ``lr``.
    """

    def __init__(self, message: str, epoch: int, batch: int, loss: float, lr: float | None) -> None:
        super().__init__(message)
        self.epoch, self.batch, self.loss, self.lr = epoch, batch, loss, lr


class TrainingInterrupted(Exception):
    """``fit`` stopped because ``should_stop()`` returned True after a batch.

    Attributes: ``epoch`` and ``batch`` (1-based: the last batch completed), ``batches`` (per
    epoch), ``checkpoint`` (the path written, or None) and ``history`` so far.
    """

    def __init__(self, message: str, epoch: int, batch: int, batches: int, checkpoint: str | None,
                 history: dict) -> None:
        super().__init__(message)
        self.epoch, self.batch, self.batches = epoch, batch, batches
        self.checkpoint, self.history = checkpoint, history


# --------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------


class RandomShift:
    """Move each image by ``(dy, dx)``, each drawn uniformly from ``-max_shift .. max_shift``.

    Pixels shifted in are ``fill`` (0: the black MNIST background). ``aug(x, rng)`` takes a batch
    ``(N, C, H, W)`` and a Generator and returns a new array; ``max_shift=0`` returns ``x``.
    """

    def __init__(self, max_shift: int = 2, fill: float = 0.0) -> None:
        self.max_shift = check_int(max_shift, "max_shift", "RandomShift", minimum=0)
        if isinstance(fill, (bool, np.bool_)) or not isinstance(fill, numbers.Real):
            raise TypeError(f"RandomShift: fill must be a number, got {fill!r}")
        self.fill = float(fill)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if x.ndim != 4:
            raise ValueError(f"RandomShift: x must be (N, C, H, W), got shape {x.shape}")
        s = self.max_shift
        if s == 0:
            return x
        n, c, h, w = x.shape
        padded = np.full((n, c, h + 2 * s, w + 2 * s), self.fill, dtype=x.dtype)
        padded[:, :, s:s + h, s:s + w] = x
        # windows[n, c, i, j] is the (h, w) crop starting at row i, column j of the padded image
        windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))
        offsets = rng.integers(0, 2 * s + 1, size=(2, n))  # crop at s+dy moves the image by -dy
        return np.ascontiguousarray(windows[np.arange(n), :, offsets[0], offsets[1]])

    def config(self) -> dict:
        return {"max_shift": self.max_shift, "fill": self.fill}

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift}, fill={self.fill})"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _print(message: str) -> None:
    print(message, flush=True)


def _seed_value(seed: Any, owner: str) -> int:
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
    return check_int(seed, "seed", owner, minimum=0)


def _generators(layer: Any) -> dict[str, np.random.Generator]:
    """The numpy Generators a layer holds as attributes (e.g. Dropout's mask generator)."""
    return {k: v for k, v in sorted(vars(layer).items()) if isinstance(v, np.random.Generator)}


def _json_array(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)


def _entry(npz: Any, key: str, path: str) -> np.ndarray:
    """``npz[key]`` as an ndarray, or a ValueError naming the file and the entry (object arrays,
    which would need pickle, members that are not .npy data, corrupt members)."""
    try:
        value = npz[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"{path}: entry {key!r} cannot be read ({exc})") from None
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{path}: entry {key!r} is not a .npy array (got {type(value).__name__}); "  # noqa: TRY004 - a bad file
                         f"not a cnn-im2col model file")
    return value


def _read_json(npz: Any, key: str, path: str) -> Any:
    raw = _entry(npz, key, path)
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"{key!r} must be a 1-D uint8 array, got {raw.dtype} {raw.shape}")
        return json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: {key!r} is not valid JSON ({exc})") from None


def _new_history() -> dict[str, list]:
    return {key: [] for key in HISTORY_KEYS}


def _empty_like_history(history: Any) -> dict[str, list]:
    fresh = _new_history()
    if isinstance(history, Mapping):
        for key in HISTORY_KEYS:
            fresh[key] = list(history.get(key, []))
    return fresh


@dataclass
class Checkpoint:
    """What :meth:`Sequential.load_checkpoint` returns.

    ``model`` holds the saved weights; ``optimizer`` (rebuilt from its config with its state
    loaded) and ``scheduler`` (or None) continue where they stopped; ``state`` is ``fit``'s position,
    to pass as ``fit(..., resume=state)``; ``extra`` is whatever JSON the caller stored.
    """

    model: Sequential
    optimizer: Any
    scheduler: Any
    state: dict
    extra: dict = field(default_factory=dict)


class IncompatibleKeys(NamedTuple):
    """What :meth:`Sequential.load_state_dict` returns, as PyTorch's: the model's keys absent from
    the state, and the state's keys the model does not have (both empty after a strict load)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


#: state_dict names that differ from the layer's own parameter names (no PyTorch counterpart, so
#: a name that says what it is rather than "weight")
_STATE_NAMES: dict[type, dict[str, str]] = {AvgPool2D: {"weight": "scale"}}


def _shape_of(value: Any) -> Any:
    try:
        return np.shape(value)
    except (TypeError, ValueError, RuntimeError):
        return f"<{type(value).__name__}>"


# --------------------------------------------------------------------------------------------
# Sequential
# --------------------------------------------------------------------------------------------


class Sequential:
    """Layers applied in order. Itself follows the layer protocol (forward, backward, params, grads,
    output_shape, config, from_config), so it can be gradient-checked or nested.

    ``params`` and ``grads`` are flat dicts ``"{index}.{name}" -> array`` built on every access
    from the layers' own dicts: the arrays are the layers' objects, so an optimizer updating
    ``params`` in place updates the layers.
    """

    def __init__(self, layers: Iterable[Any]) -> None:
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
            raise TypeError(f"Sequential: layers must be a list of layers, got {type(layers).__name__}")
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential: layers must not be empty")
        for i, layer in enumerate(layers):
            missing = [attr for attr in ("forward", "backward", "params", "grads", "output_shape")
                       if not hasattr(layer, attr)]
            if missing or isinstance(layer, type):
                what = f"the class {layer.__name__} (instantiate it)" if isinstance(layer, type) else repr(layer)
                raise TypeError(f"Sequential: layer {i} must follow the layer protocol (forward, backward, "
                                f"params, grads, output_shape), got {what}" +
                                (f" lacking {missing}" if missing and not isinstance(layer, type) else ""))
        self.layers: list[Any] = layers

    # --- container ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Any:
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}) {layer!r}," for i, layer in enumerate(self.layers))
        return f"Sequential([{inner}\n])"

    # --- layer protocol --------------------------------------------------------------------
    @property
    def params(self) -> dict[str, np.ndarray]:
        return {f"{i}.{name}": value for i, layer in enumerate(self.layers) for name, value in layer.params.items()}

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return {f"{i}.{name}": value for i, layer in enumerate(self.layers) for name, value in layer.grads.items()}

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        """Run the stack. The first layer checks ``x`` (NaN/Inf included); the others get arrays
        made by the layer before and skip that scan, so the output is checked instead: a NaN/Inf
        there means a value overflowed inside the stack (``NonFiniteError``).

        Adjacent built-in layers that compute faster together (Conv2D -> ReLU, ReLU -> MaxPool2D)
        run as one fused block (``blocks.py``), with the same outputs and gradients."""
        steps = self._steps = _blocks.plan(self.layers)
        x = _blocks.forward(self.layers, steps[0], x, training)
        with finite_scans_skipped():
            for step in steps[1:]:
                x = _blocks.forward(self.layers, step, x, training)
        _check_finite(x, "output", "the input", "Sequential.forward")
        return x

    __call__ = forward

    def backward(self, dout: Any, input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate ``dout`` (shaped like the output); fills every layer's ``grads`` and
        returns the gradient with respect to the input. ``input_grad=False`` (training): that last
        gradient is not needed, so a first ``Conv2D``/``Dense`` skips it (a GEMM and, for a
        convolution, a col2im) and None is returned."""
        steps = getattr(self, "_steps", None)
        if steps is None or steps[-1].last != len(self.layers) - 1:  # no forward yet, or layers changed
            steps = _blocks.plan(self.layers)
        if len(steps) == 1 and steps[0].kind == "conv_relu" and not input_grad:
            _blocks.backward(self.layers, steps[0], dout, input_grad=False)
            return None
        dout = _blocks.backward(self.layers, steps[-1], dout)  # checks dout, NaN/Inf included
        with finite_scans_skipped():
            for k in range(len(steps) - 2, -1, -1):
                step = steps[k]
                if k == 0 and not input_grad and isinstance(self.layers[0], _SKIPS_INPUT_GRAD):
                    _blocks.backward(self.layers, step, dout, input_grad=False)
                    return None
                dout = _blocks.backward(self.layers, step, dout)
        _check_finite(dout, "input gradient", "dout", "Sequential.backward")
        return dout

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.check_shapes(input_shape)[-1]

    def config(self) -> dict:
        return {"layers": [self._layer_entry(i, layer) for i, layer in enumerate(self.layers)]}

    @classmethod
    def from_config(cls, config: Mapping, custom_layers: Mapping[str, type] | None = None,
                    source: str = "config") -> Sequential:
        registry: dict[str, Any] = {**LAYERS, "Sequential": cls}  # stacks may nest
        registry.update(custom_layers or {})
        entries = config.get("layers") if isinstance(config, Mapping) else None
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{source}: 'layers' must be a non-empty list of {{'class', 'config'}}, got {entries!r}")
        layers = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("config"), Mapping):
                raise ValueError(f"{source}: layer {i} must be {{'class': name, 'config': {{...}}}}, got {entry!r}")  # noqa: TRY004 - a bad file
            name = entry.get("class")
            if name not in registry:
                raise ValueError(f"{source}: layer {i} has unknown class {name!r}; known classes: "
                                 f"{', '.join(sorted(registry))}")
            try:
                if registry[name] is cls:
                    layers.append(cls.from_config(dict(entry["config"]), custom_layers, f"{source}, layer {i}"))
                else:
                    layers.append(registry[name].from_config(dict(entry["config"])))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{source}: layer {i} ({name}) has a bad config {dict(entry['config'])!r}: "
                                 f"{exc}") from None
        return cls(layers)

    @staticmethod
    def _layer_entry(index: int, layer: Any) -> dict:
        name = type(layer).__name__
        if not hasattr(layer, "config") or not hasattr(type(layer), "from_config"):
            raise TypeError(f"Sequential: layer {index} {layer!r} has no config()/from_config, so it cannot be saved")
        config = layer.config()
        try:
            json.dumps(config)
        except TypeError as exc:
            raise TypeError(f"Sequential: layer {index} {layer!r} has a config that is not JSON-able: {exc}") from None
        return {"class": name, "config": config}

    # --- shapes ------------------------------------------------------------------------------
    def check_shapes(self, input_shape: Iterable[int]) -> list[tuple[int, ...]]:
        """Per-sample output shape of every layer for a per-sample ``input_shape`` such as (1, 28, 28).

        Raises ``ValueError`` naming the layer that cannot take its predecessor's output: both
        layers (index and repr) and the shapes involved.
        """
        try:
            shape = tuple(check_int(s, "input_shape", "Sequential", minimum=1) for s in input_shape)
        except TypeError:
            raise TypeError(f"Sequential: input_shape must be a tuple of ints >= 1 (per sample, no batch axis), "
                            f"got {input_shape!r}") from None
        if not shape:
            raise ValueError("Sequential: input_shape must not be empty")
        shapes = []
        for i, layer in enumerate(self.layers):
            try:
                out = tuple(int(s) for s in layer.output_shape(shape))
            except (ValueError, TypeError) as exc:
                if i == 0:
                    where = f"the input of shape {_fmt_shape(shape)}"
                else:
                    where = f"the output of layer {i - 1} {self.layers[i - 1]!r}, of shape {_fmt_shape(shape)}"
                raise ValueError(f"Sequential: layer {i} {layer!r} cannot take {where}: {exc}") from None
            shapes.append(out)
            shape = out
        return shapes

    def summary(self, input_shape: Iterable[int]) -> str:
        """A table: index, layer, per-sample output shape, parameter count; then the totals."""
        input_shape = tuple(input_shape)
        shapes = self.check_shapes(input_shape)
        rows = [("#", "layer", "output shape", "params")]
        rows.append(("", "input", _fmt_shape(input_shape), ""))
        total = 0
        nbytes = 0
        for i, (layer, shape) in enumerate(zip(self.layers, shapes)):
            count = sum(int(p.size) for p in layer.params.values())
            nbytes += sum(int(p.nbytes) for p in layer.params.values())
            total += count
            rows.append((str(i), repr(layer), _fmt_shape(shape), f"{count:,}"))
        widths = [max(len(row[k]) for row in rows) for k in range(4)]
        lines = []
        for j, row in enumerate(rows):
            lines.append(f"{row[0]:>{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]:>{widths[3]}}")
            if j == 0:
                lines.append("-" * len(lines[0]))
        lines.append("-" * len(lines[0]))
        lines.append(f"Total params: {total:,} ({nbytes / 2**20:.2f} MiB)")
        return "\n".join(lines)

    def num_params(self) -> int:
        return sum(int(p.size) for p in self.params.values())

    # --- state_dict (PyTorch's names) ------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer as ``{name: array}`` (copies), named as PyTorch's ``nn.Sequential``.

        ``"{index}.{name}"``, the index counting every layer (parameterless ones included), so the
        keys of a PyTorch ``nn.Sequential`` of the same structure match: Conv2D / Dense ``"{i}.weight"``
        (O, C, KH, KW) / (out, in) and ``"{i}.bias"``; an untied bias, shape (O, OH, OW), is still
        ``"{i}.bias"``; the learned scale of ``AvgPool2D(trainable_scale=True)``, shape (C,), is
        ``"{i}.scale"``. A layer's ``buffers`` dict, if it has one (running statistics), is included
        the same way; a nested ``Sequential`` gives ``"{i}.{j}.{name}"``.
        """
        return {key: np.array(value, copy=True) for key, (value, _, _) in self._state_entries().items()}

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy ``state`` (names as :meth:`state_dict`) into the layers, cast to each layer's dtype.

        Values: ndarrays or anything ``np.asarray`` converts (CPU torch tensors included; torch is
        never imported). ``strict=True``: missing or unexpected keys are an error; ``strict=False``:
        the keys that match are loaded and the others returned, as PyTorch does. In both modes (as in
        PyTorch) a wrong shape is an error. Every problem is reported in one ``ValueError`` naming
        each offending key with the shape expected and received; nothing is copied unless every
        value checks out. Returns ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        """
        owner = "Sequential.load_state_dict"
        if not isinstance(state, Mapping):
            raise TypeError(f"{owner}: state must be a mapping {{name: array}}, got {type(state).__name__}")
        if not isinstance(strict, (bool, np.bool_)):
            raise TypeError(f"{owner}: strict must be True or False, got {strict!r}")
        entries = self._state_entries()
        missing = [key for key in entries if key not in state]
        unexpected = [key for key in state if key not in entries]
        problems = []
        if strict:
            problems += [f"missing key {key!r} (expected shape {entries[key][0].shape})" for key in missing]
            problems += [f"unexpected key {key!r} (received shape {_shape_of(state[key])})" for key in unexpected]
        ready = []
        for key, (target, holder, name) in entries.items():
            if key not in state:
                continue
            try:
                value = np.asarray(state[key])
            except (TypeError, ValueError, RuntimeError) as exc:  # e.g. a CUDA tensor, a ragged list
                problems.append(f"key {key!r}: cannot be read as an array ({exc})")
                continue
            target_shape = np.shape(target)
            if value.shape != target_shape:
                problems.append(f"key {key!r}: expected shape {target_shape}, received {value.shape}")
            elif value.dtype.kind not in "biuf":
                problems.append(f"key {key!r}: expected numbers, received dtype {value.dtype}")
            elif value.dtype.kind == "f" and not np.isfinite(value).all():
                problems.append(f"key {key!r}: contains NaN or Inf")
            else:
                ready.append((target, holder, name, value))
        if problems:
            raise ValueError(f"{owner}: the state does not fit this model: " + "; ".join(problems))
        for target, holder, name, value in ready:
            if isinstance(target, np.ndarray) and target.ndim > 0:
                np.copyto(target, value, casting="unsafe")  # in place: optimizers hold these arrays
            else:  # a scalar buffer (a count): keep its type
                holder[name] = np.asarray(value, dtype=np.asarray(target).dtype)
        return IncompatibleKeys(missing, unexpected)

    def _state_entries(self, prefix: str = "") -> dict[str, tuple[Any, dict, str]]:
        """``{key: (array, the dict holding it, its name there)}`` for every parameter and buffer."""
        entries: dict[str, tuple[Any, dict, str]] = {}
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Sequential):
                entries.update(layer._state_entries(f"{prefix}{i}."))
                continue
            renames = _STATE_NAMES.get(type(layer), {})
            for holder in (layer.params, getattr(layer, "buffers", None) or {}):
                for name in holder:
                    entries[f"{prefix}{i}.{renames.get(name, name)}"] = (holder[name], holder, name)
        return entries

    # --- inference -------------------------------------------------------------------------
    def _ends_with_softmax(self) -> bool:
        return isinstance(self.layers[-1], Softmax)

    def _batches(self, x: np.ndarray, batch_size: int) -> Iterable[np.ndarray]:
        for start in range(0, x.shape[0], batch_size):
            yield x[start:start + batch_size]

    def _check_inputs(self, x: Any, owner: str) -> np.ndarray:
        x = as_float_array(x, "x", owner)
        if x.ndim < 2:
            raise ValueError(f"{owner}: x must be a batch (N, ...) with at least 2 dimensions, got shape {x.shape}")
        self.check_shapes(x.shape[1:])
        return x

    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Class probabilities ``(N, K)``: the outputs if the last layer is ``Softmax``, else the
        softmax of the outputs (the logits). Runs in inference mode (dropout off)."""
        owner = "Sequential.predict"
        batch_size = check_int(batch_size, "batch_size", owner, minimum=1)
        x = self._check_inputs(x, owner)
        outs = []
        for xb in self._batches(x, batch_size):
            out = self.forward(xb, training=False)
            outs.append(out if self._ends_with_softmax() else F.softmax(out, axis=1))
        return np.concatenate(outs)

    def evaluate(self, x: Any, y: Any, batch_size: int = 256, loss: Any = None) -> dict[str, float]:
        """``{"loss": mean loss, "accuracy": fraction of argmax == label}`` in inference mode.

        ``loss=None``: cross-entropy (``SoftmaxCrossEntropy`` on the outputs, or, if the last layer
        is ``Softmax``, the negative log of the probability of the true class). Any loss object
        works otherwise (its batch means are weighted by batch size).
        """
        owner = "Sequential.evaluate"
        batch_size = check_int(batch_size, "batch_size", owner, minimum=1)
        x = self._check_inputs(x, owner)
        y = self._check_targets(y, x.shape[0], self.check_shapes(x.shape[1:])[-1], owner)
        if loss is not None:
            _check_loss(loss, owner)
        elif not self._ends_with_softmax():
            from .losses import SoftmaxCrossEntropy

            loss = SoftmaxCrossEntropy()
        total_loss = 0.0
        correct = 0
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            out = self.forward(xb, training=False)
            if loss is None:
                picked = out[np.arange(out.shape[0]), yb].astype(np.float64)
                total_loss += float(-np.log(np.maximum(picked, np.finfo(np.float64).tiny)).sum())
            else:
                total_loss += float(loss.forward(out, yb)) * xb.shape[0]
            correct += _correct(out, yb)
        n = x.shape[0]
        return {"loss": total_loss / n, "accuracy": correct / n}

    # --- training ------------------------------------------------------------------------------
    def _check_targets(self, y: Any, n: int, out_shape: tuple[int, ...], owner: str, name: str = "y") -> np.ndarray:
        if not isinstance(y, np.ndarray):
            try:
                y = np.asarray(y)
            except (ValueError, TypeError) as exc:
                raise TypeError(f"{owner}: {name} must be an array of labels, got {type(y).__name__}: {exc}") from None
        if y.dtype.kind not in "iuf" or y.dtype.kind == "b":
            raise TypeError(f"{owner}: {name} must be integer class labels (or float targets), got dtype {y.dtype}")
        if y.ndim == 0 or y.shape[0] != n:
            got = "a scalar" if y.ndim == 0 else f"{y.shape[0]} rows (shape {y.shape})"
            raise ValueError(f"{owner}: x has {n} samples but {name} has {got}; they must match")
        if y.ndim == 1:
            if y.dtype.kind == "f":
                raise TypeError(f"{owner}: {name} labels must be integers, got dtype {y.dtype}")
            if len(out_shape) != 1:
                raise ValueError(f"{owner}: {name} holds class labels but the network's output per sample is "
                                 f"{_fmt_shape(out_shape)}, not (classes,)")
            k = out_shape[0]
            bad = (y < 0) | (y >= k)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{owner}: {name} labels must be in [0, {k}) for the network's {k} outputs, "
                                 f"got {y[i]} at index {i}")
            return y.astype(np.intp, copy=False)
        if y.shape[1:] != tuple(out_shape):
            raise ValueError(f"{owner}: {name} targets must have shape (N, *{_fmt_shape(out_shape)}) like the "
                             f"network's output, got {y.shape}")
        return as_float_array(y, name, owner)

    def fit(self, x: Any, y: Any, *, epochs: int, batch_size: int, optimizer: Any, loss: Any,
            validation_data: tuple[Any, Any] | None = None, seed: int | None = None, progress: bool = True,
            shuffle: bool = True, scheduler: Any = None, scheduler_interval: str = "epoch",
            augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
            callbacks: Iterable[Callable[[Sequential, dict], Any]] = (),
            checkpoint: str | os.PathLike | None = None, checkpoint_extra: dict | None = None,
            resume: Mapping | None = None, should_stop: Callable[[], bool] | None = None,
            log: Callable[[str], None] | None = _print) -> dict[str, list]:
        """Train with minibatches; return the history (per-epoch lists).

        - ``x`` (N, ...) and ``y``: labels ``(N,)`` in ``[0, K)`` or targets shaped like the output;
          validated up front (lengths, label range, NaN/Inf in ``x``, the whole stack's shapes).
        - ``optimizer``: ``step(params, grads)`` and ``lr`` (``optim.SGD``, ``optim.Adam``);
          ``loss``: ``forward(pred, target) -> float`` / ``backward()`` (``losses.*``).
        - ``scheduler``: stepped after every epoch (``scheduler_interval="epoch"``) or every batch
          (``"batch"``; then its periods count batches).
        - ``augment(xb, rng) -> xb``: applied to each training batch (e.g. :class:`RandomShift`).
        - ``callbacks``: each called as ``cb(model, logs)`` after every epoch (logs: that epoch's
          metrics); returning ``False`` stops training after that epoch.
        - ``checkpoint``: path of a checkpoint written (atomically) at every epoch end and when
          ``should_stop`` stops training; ``checkpoint_extra``: JSON stored in it.
        - ``resume``: the ``state`` of :meth:`load_checkpoint` (use its optimizer and scheduler too).
        - ``should_stop()``: polled after every batch; if True, the checkpoint is written and
          :class:`TrainingInterrupted` raised.
        - ``progress``: a tqdm bar per epoch (loss, accuracy, samples/s); ``log``: where the
          one-line epoch summaries go (default stdout; None for silence).

        History keys: epoch, loss, accuracy, val_loss, val_accuracy (None without validation data),
        lr (at the epoch's start), seconds (the epoch, validation included), samples_per_s
        (training samples per second), plus ``"seed"`` (the seed used).

        A batch whose loss or gradient is NaN/Inf raises :class:`TrainingDiverged` (a
        ``FloatingPointError``) naming the epoch and batch, before the step is applied.
        """
        owner = "Sequential.fit"
        epochs = check_int(epochs, "epochs", owner, minimum=1)
        batch_size = check_int(batch_size, "batch_size", owner, minimum=1)
        check_choice(scheduler_interval, "scheduler_interval", ("epoch", "batch"), owner)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"{owner}: shuffle must be True or False, got {shuffle!r}")
        _not_a_class(optimizer, "optimizer", owner, "Adam(1e-3)")
        if not (hasattr(optimizer, "step") and hasattr(optimizer, "lr")):
            raise TypeError(f"{owner}: optimizer must have step(params, grads) and lr (e.g. optim.Adam), "
                            f"got {type(optimizer).__name__}")
        _check_loss(loss, owner)
        _not_a_class(scheduler, "scheduler", owner, "CosineAnnealingLR(optimizer, t_max=10)")
        if scheduler is not None and not hasattr(scheduler, "step"):
            raise TypeError(f"{owner}: scheduler must have step() (e.g. optim.CosineAnnealingLR), "
                            f"got {type(scheduler).__name__}")
        if augment is not None and not callable(augment):
            raise TypeError(f"{owner}: augment must be a callable augment(x, rng) -> x, got {augment!r}")
        callbacks = list(callbacks)
        for cb in callbacks:
            if not callable(cb):
                raise TypeError(f"{owner}: callbacks must be callables cb(model, logs), got {cb!r}")
        if should_stop is not None and not callable(should_stop):
            raise TypeError(f"{owner}: should_stop must be a callable returning bool, got {should_stop!r}")
        if checkpoint is not None:
            checkpoint = _path(checkpoint, owner, "checkpoint")
            if not (hasattr(optimizer, "state_dict") and hasattr(optimizer, "config")):
                raise TypeError(f"{owner}: checkpointing needs an optimizer with state_dict() and config() "
                                f"(optim.SGD, optim.Adam), got {type(optimizer).__name__}")
        if checkpoint_extra is not None:
            try:
                json.dumps(dict(checkpoint_extra))
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{owner}: checkpoint_extra must be a JSON-able dict, got {checkpoint_extra!r} "
                                f"({exc})") from None

        x = self._check_inputs(x, owner)
        n = x.shape[0]
        out_shape = self.check_shapes(x.shape[1:])[-1]
        y = self._check_targets(y, n, out_shape, owner)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError(f"{owner}: validation_data must be a pair (x_val, y_val), got {type(validation_data).__name__}")
            xv = as_float_array(validation_data[0], "validation x", owner)
            if xv.shape[1:] != x.shape[1:]:
                raise ValueError(f"{owner}: validation x must have per-sample shape {x.shape[1:]} like x, "
                                 f"got {xv.shape[1:]} (shape {xv.shape})")
            yv = self._check_targets(validation_data[1], xv.shape[0], out_shape, owner, name="validation y")
            val = (xv, yv)

        seed_value = _seed_value(seed, owner)
        batches = math.ceil(n / batch_size)
        history = _new_history()
        start_epoch, start_batch = 0, 0
        sums = [0.0, 0, 0]  # loss * count, correct, count (of the current epoch)
        elapsed = 0.0  # training seconds already spent in the current epoch
        lr_at_start = float(optimizer.lr)
        if resume is not None:
            start_epoch, start_batch, seed_value, sums, elapsed, lr_at_start, history = self._apply_resume(
                resume, n=n, batch_size=batch_size, epochs=epochs, shuffle=bool(shuffle), owner=owner,
                seed=seed, lr=lr_at_start)
        history_seed = seed_value

        def save(epoch: int, batch: int, part: list, spent: float, lr0: float) -> None:
            if checkpoint is None:
                return
            state = {"epoch": epoch, "batch": batch, "seed": seed_value, "n": n, "batch_size": batch_size,
                     "epochs": epochs, "shuffle": bool(shuffle), "sums": list(part), "elapsed": spent,
                     "lr_at_epoch_start": lr0, "history": history,
                     "generators": self._generator_states()}
            self.save_checkpoint(checkpoint, optimizer, scheduler=scheduler, state=state, extra=checkpoint_extra)

        tqdm = _tqdm() if progress else None
        backup: dict[str, np.ndarray] = {}  # the parameters before the current step
        for epoch in range(start_epoch, epochs):
            first = start_batch if epoch == start_epoch else 0
            if epoch != start_epoch or resume is None:
                lr_at_start = float(optimizer.lr)
            if first == 0:
                sums, elapsed = [0.0, 0, 0], 0.0
            order = np.random.default_rng([seed_value, epoch]).permutation(n) if shuffle else None
            bar = None
            if tqdm is not None:
                bar = tqdm(total=batches, initial=first, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
                           leave=False, dynamic_ncols=True, file=sys.stderr)
            t_epoch = time.perf_counter()
            t_mark = t_epoch
            try:
                for b in range(first, batches):
                    index = order[b * batch_size:(b + 1) * batch_size] if shuffle else slice(b * batch_size,
                                                                                               (b + 1) * batch_size)
                    xb, yb = x[index], y[index]
                    if augment is not None:
                        xb = _augmented(augment(xb, np.random.default_rng([seed_value, epoch, b])), xb.shape, owner)
                    try:
                        out, value, grads = self._train_step(xb, yb, loss)
                        self._optimizer_step(optimizer, grads, backup, value)
                    except _NonFinite as exc:
                        lr = float(optimizer.lr) if hasattr(optimizer, "lr") else None
                        lr_text = f"{lr:.3g}" if lr is not None else "?"
                        raise TrainingDiverged(
                            f"training diverged at epoch {epoch + 1}/{epochs}, batch {b + 1}/{batches}: "
                            f"{exc.what}. This step was not applied. The learning rate ({lr_text}) is "
                            f"probably too high; try one 3-10x smaller", epoch + 1, b + 1, exc.value, lr) from None
                    if scheduler is not None and scheduler_interval == "batch":
                        scheduler.step()
                    count = xb.shape[0]
                    sums[0] += value * count
                    sums[1] += _correct(out, yb)
                    sums[2] += count
                    now = time.perf_counter()
                    if bar is not None:
                        spent = elapsed + (now - t_epoch)
                        bar.update(1)
                        bar.set_postfix_str(f"loss={sums[0] / sums[2]:.4f} acc={sums[1] / sums[2]:.4f} "
                                            f"{sums[2] / max(spent, 1e-9):.0f} samples/s", refresh=False)
                    t_mark = now
                    if should_stop is not None and should_stop():
                        spent = elapsed + (t_mark - t_epoch)
                        save(epoch, b + 1, sums, spent, lr_at_start)
                        where = f"epoch {epoch + 1}/{epochs}, batch {b + 1}/{batches}"
                        msg = f"training stopped after {where}"
                        if checkpoint is not None:
                            msg += f"; checkpoint written to {checkpoint}"
                        raise TrainingInterrupted(msg, epoch + 1, b + 1, batches,
                                                  None if checkpoint is None else str(checkpoint), history)
            finally:
                if bar is not None:
                    bar.close()
            train_seconds = elapsed + (t_mark - t_epoch)
            if scheduler is not None and scheduler_interval == "epoch":
                scheduler.step()
            val_metrics = None
            if val is not None:
                val_metrics = self.evaluate(val[0], val[1], batch_size=max(256, batch_size),
                                            loss=_fresh_loss(loss))
            seconds = elapsed + (time.perf_counter() - t_epoch)
            count = max(sums[2], 1)
            logs = {
                "epoch": epoch + 1,
                "loss": sums[0] / count,
                "accuracy": sums[1] / count,
                "val_loss": None if val_metrics is None else val_metrics["loss"],
                "val_accuracy": None if val_metrics is None else val_metrics["accuracy"],
                "lr": lr_at_start,
                "seconds": seconds,
                "samples_per_s": sums[2] / max(train_seconds, 1e-9),
            }
            for key in HISTORY_KEYS:
                history[key].append(logs[key])
            if log is not None:
                line = (f"epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f}, accuracy {logs['accuracy']:.4f}")
                if val_metrics is not None:
                    line += f", val_loss {logs['val_loss']:.4f}, val_accuracy {logs['val_accuracy']:.4f}"
                line += f", lr {lr_at_start:.3g}, {seconds:.1f} s, {logs['samples_per_s']:.0f} samples/s"
                log(line)
            save(epoch + 1, 0, [0.0, 0, 0], 0.0, float(optimizer.lr))
            stop = False
            for cb in callbacks:
                if cb(self, dict(logs)) is False:
                    stop = True
            if stop:
                break
        result = dict(history)
        result["seed"] = history_seed
        return result

    def _train_step(self, xb: np.ndarray, yb: np.ndarray, loss: Any) -> tuple[np.ndarray, float, dict]:
        """Forward, loss, backward; raise ``_NonFinite`` if the loss or a gradient is NaN/Inf."""
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # reported below as a divergence
                out = self.forward(xb, training=True)
                value = float(loss.forward(out, yb))
                if not math.isfinite(value):
                    raise _NonFinite(f"the loss is {value}", value)
                self.backward(loss.backward(), input_grad=False)
        except NonFiniteError as exc:
            # the layers and losses refuse non-finite inputs: an activation or a gradient overflowed
            raise _NonFinite(f"a value overflowed ({exc})", math.nan) from None
        grads = self.grads
        for key, g in grads.items():
            if not _finite(g):
                raise _NonFinite(f"the gradient of {key} is not finite (loss {value:.6g})", value)
        return out, value, grads

    def _optimizer_step(self, optimizer: Any, grads: dict, backup: dict, value: float) -> None:
        """``optimizer.step``; if it makes a parameter NaN/Inf, put every parameter back as it was
        and raise ``_NonFinite`` (the optimizer's own state, e.g. momentum, has advanced)."""
        params = self.params
        for key, p in params.items():
            kept = backup.get(key)
            if kept is None or kept.shape != p.shape or kept.dtype != p.dtype:
                backup[key] = p.copy()
            else:
                np.copyto(kept, p)
        with np.errstate(over="ignore", invalid="ignore"):  # reported below as a divergence
            optimizer.step(params, grads)
            bad = next((key for key, p in params.items() if not _finite(p)), None)
        if bad is not None:
            for key, p in params.items():
                np.copyto(p, backup[key])
            raise _NonFinite(f"the optimizer step made {bad} non-finite (loss {value:.6g}; the parameters were "
                             f"restored to before the step)", value)

    def _apply_resume(self, resume: Mapping, *, n: int, batch_size: int, epochs: int, shuffle: bool,
                      owner: str, seed: Any, lr: float) -> tuple:
        if not isinstance(resume, Mapping):
            raise TypeError(f"{owner}: resume must be the state of a checkpoint (a dict), got {type(resume).__name__}")
        try:
            epoch, batch = int(resume["epoch"]), int(resume["batch"])
            saved = {"n": int(resume["n"]), "batch_size": int(resume["batch_size"]),
                     "epochs": int(resume["epochs"]), "shuffle": bool(resume["shuffle"])}
            seed_value = int(resume["seed"])
            sums = [float(resume["sums"][0]), int(resume["sums"][1]), int(resume["sums"][2])]
            elapsed = float(resume["elapsed"])
            lr0 = float(resume.get("lr_at_epoch_start", lr))
            history = _empty_like_history(resume.get("history"))
            generators = resume.get("generators", {})
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{owner}: resume is not a valid checkpoint state ({exc!r})") from None
        now = {"n": n, "batch_size": batch_size, "epochs": epochs, "shuffle": shuffle}
        diff = [f"{k} {now[k]} (checkpoint: {saved[k]})" for k in now if now[k] != saved[k]]
        if diff:
            raise ValueError(f"{owner}: cannot resume: this run differs from the checkpointed one in "
                             f"{', '.join(diff)}; resume with the same data and settings")
        if seed is not None and int(seed) != seed_value:
            raise ValueError(f"{owner}: cannot resume: seed {seed} differs from the checkpoint's seed {seed_value}")
        if not 0 <= epoch <= epochs:
            raise ValueError(f"{owner}: resume epoch {epoch} is outside 0..{epochs}")
        self._set_generator_states(generators, owner)
        return epoch, batch, seed_value, sums, elapsed, lr0, history

    def _generators(self) -> dict[str, np.random.Generator]:
        """Every Generator held by a layer (e.g. Dropout's), keyed ``"{index}.{attribute}"``; nested
        stacks included (``"{index}.{inner index}.{attribute}"``)."""
        found = {}
        for i, layer in enumerate(self.layers):
            inner = layer._generators() if isinstance(layer, Sequential) else _generators(layer)
            for name, gen in inner.items():
                found[f"{i}.{name}"] = gen
        return found

    def _generator_states(self) -> dict[str, dict]:
        return {key: gen.bit_generator.state for key, gen in self._generators().items()}

    def _set_generator_states(self, states: Mapping, owner: str) -> None:
        generators = self._generators()
        for key, state in dict(states).items():
            try:
                generators[key].bit_generator.state = state
            except (ValueError, IndexError, KeyError, TypeError) as exc:
                raise ValueError(f"{owner}: cannot restore the random generator {key!r} ({exc!r}); does the "
                                 f"checkpoint belong to this model?") from None

    # --- files ---------------------------------------------------------------------------------
    def _model_arrays(self) -> dict[str, np.ndarray]:
        header = {"format": FORMAT, "version": FORMAT_VERSION, **self.config()}
        arrays = {_MODEL_KEY: _json_array(header)}
        for key, value in self.params.items():
            arrays[_PARAM_PREFIX + key] = np.ascontiguousarray(value)
        return arrays

    def save(self, path: str | os.PathLike) -> None:
        """Write the architecture (JSON) and every parameter to one ``.npz``, atomically."""
        arrays = self._model_arrays()
        with atomic_write(path, "wb") as handle:
            np.savez(handle, **arrays)

    def save_checkpoint(self, path: str | os.PathLike, optimizer: Any, scheduler: Any = None,
                        state: Mapping | None = None, extra: Mapping | None = None) -> None:
        """Model + optimizer state + scheduler state + ``fit``'s position (``state``), atomically.

        ``extra`` is any JSON-able dict stored beside them (the CLI keeps its arguments there).
        """
        arrays = self._model_arrays()
        if not hasattr(optimizer, "state_dict") or not hasattr(optimizer, "config"):
            raise TypeError(f"save_checkpoint: optimizer must have state_dict() and config(), got {type(optimizer).__name__}")
        scalars = {}
        for key, value in optimizer.state_dict().items():
            if isinstance(value, np.ndarray):
                arrays[_OPTIM_PREFIX + key] = value
            else:
                scalars[key] = value
        training = {
            "optimizer": optimizer.config(),
            "optimizer_scalars": scalars,
            "scheduler": None if scheduler is None else {
                "config": scheduler.config(), "state": scheduler.state_dict()},
            "state": dict(state or {}),
            "extra": dict(extra or {}),
        }
        arrays[_TRAINING_KEY] = _json_array(training)
        with atomic_write(path, "wb") as handle:
            np.savez(handle, **arrays)

    @classmethod
    def _open(cls, path_text: str) -> Any:
        if not os.path.isfile(path_text):
            raise FileNotFoundError(f"{path_text}: no such model file")
        try:
            npz = np.load(path_text, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path_text}: not a cnn-im2col model file (.npz): {exc}") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError(f"{path_text}: a .npy file (a single array), not a cnn-im2col model file (.npz)")  # noqa: TRY004
        return npz

    @classmethod
    def _load_from(cls, npz: Any, path: str, custom_layers: Mapping[str, type] | None) -> Sequential:
        files = set(npz.files)
        if _MODEL_KEY not in files:
            raise ValueError(f"{path}: not a cnn-im2col model file: it has no {_MODEL_KEY!r} entry")
        header = _read_json(npz, _MODEL_KEY, path)
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"{path}: not a cnn-im2col model file (format {header.get('format') if isinstance(header, dict) else header!r})")
        version = header.get("version")
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise ValueError(f"{path}: model format version {version!r} is not supported (this version reads "
                             f"1..{FORMAT_VERSION}); upgrade cnn-im2col")
        model = cls.from_config(header, custom_layers=custom_layers, source=str(path))
        expected = model.params
        stored = {key[len(_PARAM_PREFIX):] for key in files if key.startswith(_PARAM_PREFIX)}
        unknown = sorted(key for key in files if not key.startswith((_PARAM_PREFIX, _OPTIM_PREFIX))
                         and key not in (_MODEL_KEY, _TRAINING_KEY))
        missing = sorted(set(expected) - stored)
        extra = sorted(stored - set(expected))
        if missing or extra or unknown:
            raise ValueError(f"{path}: the arrays do not match the architecture: missing parameters {missing}, "
                             f"unexpected parameters {extra}, unknown entries {unknown}")
        for key, target in expected.items():
            value = _entry(npz, _PARAM_PREFIX + key, path)
            if value.shape != target.shape:
                raise ValueError(f"{path}: parameter {key!r} has shape {value.shape}, the architecture needs "
                                 f"{target.shape}")
            if value.dtype.kind != "f":
                raise ValueError(f"{path}: parameter {key!r} has dtype {value.dtype}, it must be float")
            if not np.isfinite(value).all():
                raise ValueError(f"{path}: parameter {key!r} contains NaN or Inf")
            np.copyto(target, value, casting="same_kind")
        return model

    @classmethod
    def load(cls, path: str | os.PathLike, custom_layers: Mapping[str, type] | None = None) -> Sequential:
        """Rebuild a model saved by :meth:`save` (or a checkpoint). ``custom_layers``: extra
        ``{class name: class}`` beyond ``layers.LAYERS``. Bad files raise ``ValueError`` naming the file."""
        path_text = _path(path, "Sequential.load")
        with cls._open(path_text) as npz:
            return cls._load_from(npz, path_text, custom_layers)

    @classmethod
    def load_checkpoint(cls, path: str | os.PathLike,
                        custom_layers: Mapping[str, type] | None = None) -> Checkpoint:
        """Read a checkpoint written by :meth:`save_checkpoint` (e.g. by ``fit(checkpoint=...)``)."""
        path_text = _path(path, "Sequential.load_checkpoint")
        with cls._open(path_text) as npz:
            model = cls._load_from(npz, path_text, custom_layers)
            if _TRAINING_KEY not in npz.files:
                raise ValueError(f"{path_text}: a model file, not a checkpoint (no optimizer or training state)")
            training = _read_json(npz, _TRAINING_KEY, path_text)
            optim_arrays = {key[len(_OPTIM_PREFIX):]: _entry(npz, key, path_text)
                            for key in npz.files if key.startswith(_OPTIM_PREFIX)}
        try:
            opt_config = dict(training["optimizer"])
            name = opt_config.get("name")
            if name not in ("SGD", "Adam"):
                raise ValueError(f"unknown optimizer {name!r}")
            optimizer = getattr(_optim, name).from_config(opt_config)
            optimizer.load_state_dict({**training["optimizer_scalars"], **optim_arrays})
            scheduler = None
            if training.get("scheduler"):
                sched_config = dict(training["scheduler"]["config"])
                sched_name = sched_config.pop("name")
                if sched_name not in ("StepLR", "CosineAnnealingLR"):
                    raise ValueError(f"unknown scheduler {sched_name!r}")
                scheduler = getattr(_optim, sched_name)(optimizer, **sched_config)
                scheduler.load_state_dict(training["scheduler"]["state"])
            state = dict(training.get("state") or {})
            extra = dict(training.get("extra") or {})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path_text}: the checkpoint's training state is broken: {exc}") from None
        return Checkpoint(model, optimizer, scheduler, state, extra)


class _NonFinite(Exception):
    def __init__(self, what: str, value: float) -> None:
        super().__init__(what)
        self.what, self.value = what, value


def _augmented(xb: Any, shape: tuple[int, ...], owner: str) -> np.ndarray:
    """Check what ``augment`` returned: a finite batch of the shape it was given (a NaN from it
    would otherwise surface as a divergence of training)."""
    xb = as_float_array(xb, "the batch returned by augment", owner)
    if xb.shape != shape:
        raise ValueError(f"{owner}: augment must return a batch of the shape it was given, {shape}, got {xb.shape}")
    return xb


_SKIPS_INPUT_GRAD = (Conv2D, Dense)  # layers whose backward takes input_grad=False


def _check_finite(a: np.ndarray, what: str, source: str, owner: str) -> None:
    if not _finite(a):
        raise NonFiniteError(f"{owner}: the {what} contains NaN or Inf although {source} was finite: a value "
                             f"overflowed inside the network")


def _finite(a: np.ndarray) -> bool:
    """Whether every element is finite, in one cheap pass: any NaN/Inf makes the float64 sum
    non-finite, and a float64 sum of finite float32 values cannot overflow (of float64 values only
    beyond ~1e300, far outside anything trainable)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return math.isfinite(float(np.sum(a, dtype=np.float64)))


def _path(path: Any, owner: str, name: str = "path") -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{owner}: {name} must be a str or os.PathLike, got {path!r} ({type(path).__name__})")
    return os.fspath(path)


def _not_a_class(value: Any, name: str, owner: str, example: str) -> None:
    if isinstance(value, type):
        raise TypeError(f"{owner}: {name} must be an instance, got the class {value.__name__} "
                        f"(instantiate it, e.g. {example})")


def _check_loss(loss: Any, owner: str) -> None:
    _not_a_class(loss, "loss", owner, "SoftmaxCrossEntropy()")
    if not (hasattr(loss, "forward") and hasattr(loss, "backward")):
        raise TypeError(f"{owner}: loss must have forward(pred, target) and backward() "
                        f"(e.g. losses.SoftmaxCrossEntropy()), got {loss!r}")


def _fresh_loss(loss: Any) -> Any:
    """A new loss of the same kind, so validation does not overwrite the training loss's cache."""
    try:
        return type(loss).from_config(loss.config())
    except Exception:  # noqa: BLE001 - a custom loss without config: reuse it
        return loss


def _correct(out: np.ndarray, y: np.ndarray) -> int:
    """How many argmax predictions match labels (or the argmax of dense targets)."""
    if out.ndim != 2:
        return 0
    labels = y if y.ndim == 1 else y.argmax(axis=1)
    return int(np.count_nonzero(out.argmax(axis=1) == labels))


def _tqdm() -> Any:
    from tqdm.auto import tqdm

    return tqdm
