"""``Sequential``: a stack of layers that predicts, evaluates, summarises, saves and loads; it
trains through the loop it inherits (:class:`cnn_im2col.training.Trainer`).

Public API
----------
- :class:`Sequential` — ``forward``, ``backward``, ``params`` / ``grads`` (flat dicts keyed
  ``"{index}.{name}"`` holding the layers' own arrays), ``predict`` (the outputs),
  ``predict_proba`` (class probabilities), ``evaluate``, ``check_shapes``, ``summary``,
  ``save`` / ``load`` (the model file, :mod:`cnn_im2col.model_files`), ``state_dict`` /
  ``load_state_dict`` (PyTorch's ``nn.Sequential`` key names; the loading,
  :mod:`cnn_im2col.state_dicts`); from the loop: ``fit``, ``load_checkpoint``. It follows the
  layer protocol itself, so a gradient check or a nested stack can treat it as a layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from . import blocks as _blocks
from . import functional as F
from . import inference_blocks as _inference_blocks
from . import model_files, state_dicts
from . import planning as _planning
from ._files import path_text
from .activations import add_relu_grad
from .containers import CONTAINERS, generator_slots, is_container, layer_entry, state_entries
from .fit_arguments import check_loss
from .layers import LAYERS, Conv2D, Dense, Dropout, ReLU, Sigmoid, Softmax, Tanh
from .losses import MeanSquaredError, SoftmaxCrossEntropy
from .metrics import accuracy_for, resolve, wants_accuracy
from .shapes import (
    NonFiniteError,
    as_float_array,
    check_int,
    finite_scans_on,
    finite_scans_skipped,
    is_finite,
    refuse_raw_integers,
)
from .state_dicts import IncompatibleKeys
from .threads import batch_maps, uses_engine_blas
from .training import Trainer

__all__ = ["Sequential"]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


# --------------------------------------------------------------------------------------------
# Sequential
# --------------------------------------------------------------------------------------------


class Sequential(Trainer):
    """Layers applied in order. Itself follows the layer protocol (forward, backward, params, grads,
    output_shape, config, from_config), so it can be gradient-checked or nested.

    ``params`` and ``grads`` are flat dicts ``"{index}.{name}" -> array`` built on every access
    from the layers' own dicts: the arrays are the layers' objects, so an optimizer updating
    ``params`` in place updates the layers.
    """

    infer_takes_skip = True  # a Residual hands its identity shortcut to ``infer`` (see there)

    def __init__(
        self,
        layers: Iterable[Any],
        input_shape: Iterable[int] | None = None,
        class_names: Iterable[str] | None = None,
    ) -> None:
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
            raise TypeError(
                f"Sequential: layers must be a list of layers, got {type(layers).__name__}"
            )
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential: layers must not be empty")
        for i, layer in enumerate(layers):
            missing = [
                attr
                for attr in ("forward", "backward", "params", "grads", "output_shape")
                if not hasattr(layer, attr)
            ]
            if missing or isinstance(layer, type):
                what = (
                    f"the class {layer.__name__} (instantiate it)"
                    if isinstance(layer, type)
                    else repr(layer)
                )
                raise TypeError(
                    f"Sequential: layer {i} must follow the layer protocol (forward, backward, "
                    f"params, grads, output_shape), got {what}"
                    + (f" lacking {missing}" if missing and not isinstance(layer, type) else "")
                )
        self.layers: list[Any] = layers
        self._input_shape: tuple[int, ...] | None = None
        if input_shape is not None:
            self.check_shapes(input_shape)
            self._input_shape = tuple(int(s) for s in input_shape)
        self.class_names: tuple[str, ...] | None = None
        if class_names is not None:
            self.set_class_names(class_names)

    def set_class_names(self, names: Iterable[str]) -> None:
        """Name the classes of a classifier (kept in ``config`` and model files; the ``predict``
        command prints them): one string per output, index = label."""
        names = tuple(names) if not isinstance(names, str) else (names,)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise TypeError(f"Sequential: class_names must be non-empty strings, got {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"Sequential: class_names must differ from each other, got {names!r}")
        self.class_names = names

    # --- container ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Any:
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def named_children(self) -> list[tuple[str, Any]]:
        """``(index as text, layer)``: the first step of every key (``containers.leaves``)."""
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def child_input_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The per-sample input shape of each layer."""
        return [tuple(input_shape), *self.check_shapes(input_shape)[:-1]]

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}) {layer!r}," for i, layer in enumerate(self.layers))
        return f"Sequential([{inner}\n])"

    # --- layer protocol --------------------------------------------------------------------
    @property
    def params(self) -> dict[str, np.ndarray]:
        return {
            f"{i}.{name}": value
            for i, layer in enumerate(self.layers)
            for name, value in layer.params.items()
        }

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return {
            f"{i}.{name}": value
            for i, layer in enumerate(self.layers)
            for name, value in layer.grads.items()
        }

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        """Saved, untrained state (``layer.buffers``, e.g. running statistics), keyed like
        ``params``."""
        return {
            f"{i}.{name}": value
            for i, layer in enumerate(self.layers)
            for name, value in getattr(layer, "buffers", {}).items()
        }

    @uses_engine_blas
    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        """Run the stack. The first layer checks ``x`` (NaN/Inf included); the others get arrays
        made by the layer before and skip that scan, so the output is checked instead: a NaN/Inf
        there means a value overflowed inside the stack (``NonFiniteError``). A stack inside
        another (a Residual's body) leaves both checks to the outermost: a scan per branch cost
        ResNet-20's training step 18 passes over its activations.

        Adjacent built-in layers that compute faster together (Conv2D -> ReLU, ReLU -> MaxPool2D)
        run as one fused block (``blocks.py``), with the same outputs and gradients. ``x`` is
        checked once, by the first step; the others run unchecked on their layers' plans."""
        steps = self._planned_steps()
        x = steps[0].forward(x, training)  # the one check of x, where it enters
        with finite_scans_skipped():
            for step in steps[1:]:
                x = step.run(x, training)  # unchecked: each layer's plan for its input shape
        if finite_scans_on():  # nested in a stack (a Residual's body), the outermost checks
            _check_finite(x, "output", "the input", "Sequential.forward")
        return x

    __call__ = forward

    @property
    def backward_takes_shortcut(self) -> bool:
        """Whether a Residual may hand its identity shortcut's gradient to ``backward`` (see
        there): not to a subclass that replaced ``backward``, which may not take it."""
        return type(self).backward is Sequential.backward

    def joins_skip(self, skip: np.ndarray) -> bool:
        """Whether ``run_joined`` can add a Residual's shortcut output ``skip`` inside this
        stack's last step (``blocks.joins_in_training``)."""
        return _blocks.joins_in_training(self._planned_steps(), skip)

    def run_joined(self, x: np.ndarray, training: bool, skip: np.ndarray, relu: bool
                   ) -> np.ndarray:
        """``forward`` (nested: the outermost stack checks) with ``skip`` added to the output in
        the last step's output pass, then ReLU if ``relu``: a Residual's join, where
        ``joins_skip(skip)`` held. With ``relu``, ``backward`` then takes the gradient of the
        ReLU's output (its last step takes the derivative)."""
        steps = self._planned_steps()
        x = steps[0].forward(x, training)
        with finite_scans_skipped():
            for step in steps[1:-1]:
                x = step.run(x, training)
            return _blocks.run_joined(steps[-1], x, training, skip, relu)

    @uses_engine_blas
    def backward(self, dout: Any, input_grad: bool = True, *,
                 shortcut: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray | None:
        """Backpropagate ``dout`` (shaped like the output); fills every layer's ``grads`` and
        returns the gradient with respect to the input. ``input_grad=False`` (training): that last
        gradient is not needed, so a first ``Conv2D``/``Dense`` skips it (a GEMM and, for a
        convolution, a col2im) and None is returned. ``shortcut=(g, out)`` (arrays of the
        input's shape and dtype, with ``input_grad``): the input gradient plus g where out > 0, a
        Residual's identity shortcut through the ReLU after it (a first ``Conv2D`` adds it as it
        writes its input gradient: ``conv2d_backward``)."""
        steps = getattr(self, "_steps", None)
        if (
            steps is None or steps[-1].last != len(self.layers) - 1
        ):  # no forward yet, or layers changed
            steps = _planning.plan(self.layers)
        if len(steps) == 1 and steps[0].kind == "conv_relu" and not input_grad:
            steps[0].backward(dout, input_grad=False)
            return None
        dout = steps[-1].backward(dout)  # checks dout, NaN/Inf included
        with finite_scans_skipped():
            for k in range(len(steps) - 2, -1, -1):
                step = steps[k]
                if k == 0 and not input_grad and isinstance(self.layers[0], _SKIPS_INPUT_GRAD):
                    step.backward(dout, input_grad=False)
                    return None
                if (k == 0 and shortcut is not None and step.kind == "layer"
                        and type(self.layers[0]) is Conv2D
                        and self.layers[0].params["weight"].dtype == shortcut[0].dtype):
                    dout, shortcut = self.layers[0].backward(dout, shortcut=shortcut), None
                else:
                    dout = step.backward(dout)
            if shortcut is not None:  # in the shortcut's dtype, the input's (Residual's sum)
                dout = add_relu_grad(dout, shortcut[0], shortcut[1], shortcut[0].dtype)
        if finite_scans_on():
            _check_finite(dout, "input gradient", "dout", "Sequential.backward")
        return dout

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.check_shapes(input_shape)[-1]

    def config(self) -> dict:
        config: dict[str, Any] = {
            "layers": [self._layer_entry(i, layer) for i, layer in enumerate(self.layers)]
        }
        if self._input_shape is not None:
            config["input_shape"] = list(self._input_shape)
        if self.class_names is not None:
            config["class_names"] = list(self.class_names)
        return config

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The per-sample input shape, if known: given to the constructor, learned by ``fit``
        (and saved in model files), or stated by the first layer with parameters (a ``Conv2D``
        with ``input_size`` -> (C, H, W), a ``Dense`` -> (in_features,), after layers that keep
        the shape); else None."""
        if self._input_shape is not None:
            return self._input_shape
        for layer in self.layers:
            if isinstance(layer, Conv2D):
                return None if layer.input_size is None else (layer.in_channels, *layer.input_size)
            if isinstance(layer, Dense):
                return (layer.in_features,)
            if not isinstance(layer, _SHAPE_KEEPING):
                return None
        return None

    def input_shape_or(self, input_shape: Any, owner: str) -> Any:
        """``input_shape`` when given, else :attr:`input_shape`; ValueError naming ``owner`` when
        neither is known (for ``summary``, ``onnx.export`` and ``InferenceSession``)."""
        if input_shape is not None:
            return input_shape
        if self.input_shape is None:
            raise ValueError(
                f"{owner}: this model does not know its input shape (no fit yet, and its first "
                f"layer does not state one); pass input_shape=(C, H, W)"
            )
        return self.input_shape

    def _learn_input_shape(self, shape: tuple[int, ...]) -> None:
        """``fit`` records the shape it trained on, unless one is known already."""
        if self._input_shape is None:
            self._input_shape = tuple(int(s) for s in shape)

    @classmethod
    def from_config(
        cls,
        config: Mapping,
        custom_layers: Mapping[str, type] | None = None,
        source: str = "config",
    ) -> Sequential:
        """Rebuild a stack from :meth:`config`; ``custom_layers``: extra ``{class name: class}``.
        Stacks and containers (``containers.CONTAINERS``) nest: their children are built the same
        way. A bad config raises ``ValueError`` naming ``source`` and the layer."""
        registry: dict[str, Any] = {**LAYERS, **CONTAINERS, "Sequential": cls}
        registry.update(custom_layers or {})

        def build(entry: Any, where: str) -> Any:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("config"), Mapping):
                raise ValueError(  # noqa: TRY004 - a bad file
                    f"{where} must be {{'class': name, 'config': {{...}}}}, got {entry!r}"
                )
            name = entry.get("class")
            if name not in registry:
                raise ValueError(
                    f"{where} has unknown class {name!r}; known classes: "
                    f"{', '.join(sorted(registry))}"
                )
            layer_cls, layer_config = registry[name], dict(entry["config"])
            if layer_cls is cls:
                return cls.from_config(layer_config, custom_layers, where)
            try:
                if name in CONTAINERS and layer_cls is CONTAINERS[name]:
                    return layer_cls.from_config(layer_config, build=build, source=where)
                return layer_cls.from_config(layer_config)
            except (TypeError, ValueError) as exc:
                if str(exc).startswith(where):  # a child's error, already naming its place
                    raise ValueError(str(exc)) from None
                raise ValueError(
                    f"{where} ({name}) has a bad config {layer_config!r}: {exc}"
                ) from None

        entries = config.get("layers") if isinstance(config, Mapping) else None
        if not isinstance(entries, list) or not entries:
            raise ValueError(
                f"{source}: 'layers' must be a non-empty list of {{'class', 'config'}}, got "
                f"{entries!r}"
            )
        layers = [build(entry, f"{source}: layer {i}") for i, entry in enumerate(entries)]
        input_shape = config.get("input_shape")
        if input_shape is not None and not isinstance(input_shape, list):
            raise ValueError(f"{source}: 'input_shape' must be a list of ints, got {input_shape!r}")
        try:
            return cls(layers, input_shape=input_shape, class_names=config.get("class_names"))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: bad 'input_shape' or 'class_names': {exc}") from None

    @staticmethod
    def _layer_entry(index: int, layer: Any) -> dict:
        return layer_entry(layer, f"Sequential: layer {index}")

    # --- shapes ------------------------------------------------------------------------------
    def check_shapes(self, input_shape: Iterable[int]) -> list[tuple[int, ...]]:
        """Per-sample output shape of every layer for a per-sample ``input_shape`` such as (1, 28,
        28).

        Raises ``ValueError`` naming the layer that cannot take its predecessor's output: both
        layers (index and repr) and the shapes involved.
        """
        try:
            shape = tuple(check_int(s, "input_shape", "Sequential", minimum=1) for s in input_shape)
        except TypeError:
            raise TypeError(
                "Sequential: input_shape must be a tuple of ints >= 1 (per sample, no batch "
                "axis), "
                f"got {input_shape!r}"
            ) from None
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
                    where = (
                        f"the output of layer {i - 1} {self.layers[i - 1]!r}, of shape "
                        f"{_fmt_shape(shape)}"
                    )
                raise ValueError(
                    f"Sequential: layer {i} {layer!r} cannot take {where}: {exc}"
                ) from None
            shapes.append(out)
            shape = out
        return shapes

    def summary(self, input_shape: Iterable[int] | None = None) -> str:
        """A table: index, layer, per-sample output shape, parameter count; then the totals.
        ``input_shape``: per sample, e.g. (1, 28, 28); None takes :attr:`input_shape`."""
        input_shape = tuple(self.input_shape_or(input_shape, "Sequential.summary"))
        shapes = self.check_shapes(input_shape)
        rows = [("#", "layer", "output shape", "params")]
        rows.append(("", "input", _fmt_shape(input_shape), ""))
        params = self.params.values()
        total = sum(int(p.size) for p in params)
        nbytes = sum(int(p.nbytes) for p in params)
        for i, (layer, shape_in) in enumerate(zip(self.layers, [input_shape, *shapes[:-1]])):
            rows += _summary_rows(layer, str(i), shape_in, depth=0)
        widths = [max(len(row[k]) for row in rows) for k in range(4)]
        lines = []
        for j, row in enumerate(rows):
            lines.append(
                f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  "
                f"{row[3]:>{widths[3]}}"
            )
            if j == 0:
                lines.append("-" * len(lines[0]))
        lines.append("-" * len(lines[0]))
        lines.append(f"Total params: {total:,} ({nbytes / 2**20:.2f} MiB)")
        return "\n".join(lines)

    def num_params(self) -> int:
        return sum(int(p.size) for p in self.params.values())

    # --- state_dict (PyTorch's names) ------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer as ``{name: array}`` (copies), named as PyTorch's
        ``nn.Sequential``.

        ``"{index}.{name}"``, the index counting every layer (parameterless ones included), so the
        keys of a PyTorch ``nn.Sequential`` of the same structure match: Conv2D / Dense
        ``"{i}.weight"`` (O, C, KH, KW) / (out, in) and ``"{i}.bias"``; an untied bias, shape (O,
        OH, OW), is still ``"{i}.bias"``; the learned weight of ``AvgPool2D(trainable_scale=True)``
        (Eq. 8.22's ``w``), shape (C,), is ``"{i}.weight"``, its name in ``params`` too. A layer's
        ``buffers`` dict, if it has one (running statistics), is included the same way; a nested
        ``Sequential`` gives ``"{i}.{j}.{name}"``.
        """
        return {
            key: np.array(value, copy=True) for key, (value, _, _) in self._state_entries().items()
        }

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy ``state`` (names as :meth:`state_dict`) into the layers, cast to each layer's dtype.

        Values: ndarrays or anything ``np.asarray`` converts (CPU torch tensors included; torch is
        never imported). ``strict=True``: missing or unexpected keys are an error; ``strict=False``:
        the keys that match are loaded and the others returned, as PyTorch does. In both modes (as
        in PyTorch) a wrong shape is an error. Every problem is reported in one ``ValueError``
        naming each offending key with the shape expected and received; nothing is copied unless
        every value checks out. Returns ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        """
        owner = "Sequential.load_state_dict"
        return state_dicts.load_state_dict(self, state, strict, owner)

    def _state_entries(self, prefix: str = "") -> dict[str, tuple[Any, dict, str]]:
        """``{key: (array, the dict holding it, its name there)}`` for every parameter and buffer.
        """
        return state_entries(self, prefix)

    # --- inference -------------------------------------------------------------------------
    def _outputs_probabilities(self) -> bool:
        """Whether the last layer squashes the outputs to [0, 1] (Softmax or Sigmoid)."""
        return isinstance(self.layers[-1], (Softmax, Sigmoid))

    def _check_loss_fits(self, loss: Any, owner: str) -> None:
        """A ``Softmax`` output fed to ``SoftmaxCrossEntropy`` (which applies softmax itself, to
        logits) would be squashed twice and train on the wrong gradient: refuse it."""
        if isinstance(self.layers[-1], Softmax) and isinstance(loss, SoftmaxCrossEntropy):
            raise ValueError(
                f"{owner}: the network ends with Softmax and SoftmaxCrossEntropy applies "
                f"the softmax itself, so it would be applied twice; remove the last "
                f"Softmax layer (the loss takes logits; predict_proba gives "
                f"probabilities)"
            )

    def _check_inputs(self, x: Any, owner: str) -> np.ndarray:
        refuse_raw_integers(x, owner)
        x = as_float_array(x, "x", owner)
        if x.ndim < 2:
            raise ValueError(
                f"{owner}: x must be a batch (N, ...) with at least 2 dimensions, "
                f"got shape {x.shape}"
            )
        key = (x.shape[1:], self._layers_key())
        if key not in self.__dict__.setdefault("_checked_shapes", set()):
            self.check_shapes(x.shape[1:])  # once per input shape and stack of layers
            self._checked_shapes.add(key)
        return x

    def _layers_key(self) -> tuple[int, ...]:
        """What the cached plans depend on: the layer objects, in order (a user may replace one)."""
        return tuple(id(layer) for layer in self.layers)

    def _planned_steps(self) -> list:
        """The fused steps of ``planning.plan``, made again only when the layers changed."""
        key = self._layers_key()
        if self.__dict__.get("_steps_key") != key:
            self._steps = _planning.plan(self.layers)
            self._steps_key = key
        return self._steps

    def _outputs(self, x: np.ndarray, batch_size: int, owner: str = "Sequential.predict",
                 infer: Callable[[np.ndarray], np.ndarray] | None = None
                 ) -> Iterable[np.ndarray]:
        """The network's outputs in inference mode, batch by batch (``x`` checked): as ``forward``,
        with each Conv2D -> BatchNorm2D pair folded into one convolution (``infer``, or the
        ``infer`` given: a session's program); an output with NaN or Inf is refused naming
        ``owner``."""
        infer = self.infer if infer is None else infer
        for start in range(0, x.shape[0], batch_size):
            yield self._batch_output(x[start : start + batch_size], owner, infer)

    @staticmethod
    def _batch_output(x: np.ndarray, owner: str, infer: Callable[[np.ndarray], np.ndarray]
                      ) -> np.ndarray:
        """``infer(x)`` for one batch ``x`` (``_outputs``'s), a small batch's maps in the calling
        thread; an output with NaN or Inf is refused naming ``owner``."""
        with batch_maps(x.shape[0]):
            out = infer(x)
        _check_finite(out, "output", "the input", owner)
        return out

    def inference_steps(self) -> tuple[list, list]:
        """``planning.inference_plan`` of the layers (steps, folds), made again only when the layers
        changed."""
        key = self._layers_key()
        if self.__dict__.get("_inference_key") != key:
            self._inference = _planning.inference_plan(self.layers)
            self._inference_key = key
        return self._inference

    def infer(self, x: np.ndarray, skip: np.ndarray | None = None, relu: bool = False
              ) -> np.ndarray:
        """Inference on ``x`` already checked (a batch, finite), with no backward to follow: the
        steps of ``planning.inference_plan``, Conv2D -> BatchNorm2D pairs folded into one
        convolution whose parameters are refreshed from the pair on every call (outputs equal to
        ``forward(x)`` to rounding). Nested stacks and containers fold their own.

        ``skip`` (a Residual's shortcut, of the output's shape) is added to the output, then ReLU
        if ``relu`` (``inference_blocks.infer_with_skip``): inside the last step where it can (a
        fused ``InvertedResidual``, or a Conv2D slice by slice), else after it."""
        steps, folds = self.inference_steps()
        for fold in folds:
            fold.refresh()
        last = len(steps) - 1
        with finite_scans_skipped():
            for i, step in enumerate(steps):
                if i == last and skip is not None:
                    x = _inference_blocks.infer_with_skip(step, x, skip, relu, first=i == 0)
                else:
                    x = _inference_blocks.infer_step(step, x, first=i == 0)
        return x

    @uses_engine_blas
    def predict(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """The network's outputs for ``x`` (N, ...), in inference mode (dropout off, running
        statistics), ``batch_size`` samples at a time: the same numbers as ``forward``, as
        Keras's ``predict``. For class probabilities use :meth:`predict_proba`."""
        owner = "Sequential.predict"
        batch_size = check_int(batch_size, "batch_size", owner, minimum=1)
        x = self._check_inputs(x, owner)
        return np.concatenate(list(self._outputs(x, batch_size)))

    @uses_engine_blas
    def predict_proba(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """Class probabilities ``(N, K)`` of a classifier, in inference mode.

        - K >= 2 outputs: the outputs if the last layer is ``Softmax``, else their softmax (the
          outputs are logits);
        - one output after ``Sigmoid``: the probability ``p`` of class 1, returned as the two
          columns ``[1 - p, p]``.

        Any other network (a regression, several ``Sigmoid`` outputs, a one-output network
        without ``Sigmoid``) is a ``ValueError``: its outputs are not class scores; use
        :meth:`predict`."""
        owner = "Sequential.predict_proba"
        batch_size = check_int(batch_size, "batch_size", owner, minimum=1)
        x = self._check_inputs(x, owner)
        out_shape = self.check_shapes(x.shape[1:])[-1]
        last = self.layers[-1]
        binary = out_shape == (1,) and isinstance(last, Sigmoid)
        if len(out_shape) != 1 or (out_shape[0] < 2 and not binary):
            raise ValueError(
                f"{owner}: class probabilities need K >= 2 class scores per sample (or "
                f"one output after Sigmoid), but this network outputs "
                f"{_fmt_shape(out_shape)} per sample; use predict() for its outputs"
            )
        if isinstance(last, Sigmoid) and not binary:
            raise ValueError(
                f"{owner}: this network's {out_shape[0]} outputs are independent Sigmoid "
                f"values (K >= 2 class scores would be logits or a Softmax), not a "
                f"distribution over classes; use predict() for its outputs"
            )
        parts = []
        for out in self._outputs(x, batch_size):
            if binary:
                out = np.concatenate([1 - out, out], axis=1)
            elif not isinstance(last, Softmax):
                out = F.softmax(out, axis=1)
            parts.append(out)
        return np.concatenate(parts)

    @uses_engine_blas
    def evaluate(
        self, x: Any, y: Any, batch_size: int = 256, loss: Any = None, metrics: Any = ()
    ) -> dict[str, float]:
        """``{"loss": mean loss, "accuracy": fraction correct}`` in inference mode; ``"accuracy"``
        only where it means something (:mod:`cnn_im2col.metrics`: class labels or probability
        rows, or 0/1 targets of a one-output network; not for a regression).

        ``loss``: any loss object (its batch means are weighted by batch size). ``None``: the loss
        of the last ``fit``, if any; else, for class labels, cross-entropy
        (``SoftmaxCrossEntropy`` on the outputs, or, if the last layer is ``Softmax``, the
        negative log of the probability of the true class), and for float targets the mean
        squared error. ``metrics``: more of them by name or as callables
        (:func:`cnn_im2col.metrics.resolve`), each averaged over the samples.
        """
        owner = "Sequential.evaluate"
        batch_size = check_int(batch_size, "batch_size", owner, minimum=1)
        x = self._check_inputs(x, owner)
        out_shape = self.check_shapes(x.shape[1:])[-1]
        y = self._check_targets(y, x.shape[0], out_shape, owner)
        if loss is not None:
            check_loss(loss, owner)
            self._check_loss_fits(loss, owner)
        elif self.trained_loss is not None:
            loss = self.fresh_loss(self.trained_loss)
        elif y.ndim != 1:
            loss = MeanSquaredError()
        elif not isinstance(self.layers[-1], Softmax):
            loss = SoftmaxCrossEntropy()
        accuracy = accuracy_for(out_shape, y, self._outputs_probabilities())
        extra = self._metrics(metrics, out_shape, y, accuracy, owner)
        sums = dict.fromkeys(extra, 0.0)
        total_loss = 0.0
        correct = 0
        for start, out in zip(range(0, x.shape[0], batch_size), self._outputs(x, batch_size)):
            yb = y[start : start + batch_size]
            if loss is None:
                picked = out[np.arange(out.shape[0]), yb].astype(np.float64)
                total_loss += float(-np.log(np.maximum(picked, np.finfo(np.float64).tiny)).sum())
            else:
                total_loss += float(loss.forward(out, yb)) * out.shape[0]
            if accuracy is not None:
                correct += accuracy.correct(out, yb)
            for name, fn in extra.items():
                sums[name] += float(fn(yb, out)) * out.shape[0]
        n = x.shape[0]
        result = {"loss": total_loss / n}
        if accuracy is not None:
            result["accuracy"] = correct / n
        result.update({name: total / n for name, total in sums.items()})
        return result

    def _metrics(
        self, metrics: Any, out_shape: tuple[int, ...], y: np.ndarray, accuracy: Any, owner: str
    ) -> dict[str, Any]:
        """``metrics`` resolved for this task; ``"accuracy"`` where none applies is an error."""
        if wants_accuracy(metrics) and accuracy is None:
            raise ValueError(
                f"{owner}: metric 'accuracy' does not apply: the network outputs "
                f"{_fmt_shape(out_shape)} per sample and the targets are not class "
                f"labels, probability rows or 0/1 values of one output"
            )
        return resolve(metrics, out_shape, y, owner)

    # --- training ------------------------------------------------------------------------------
    def _check_targets(
        self, y: Any, n: int, out_shape: tuple[int, ...], owner: str, name: str = "y"
    ) -> np.ndarray:
        if not isinstance(y, np.ndarray):
            try:
                y = np.asarray(y)
            except (ValueError, TypeError) as exc:
                raise TypeError(
                    f"{owner}: {name} must be an array of labels, got {type(y).__name__}: {exc}"
                ) from None
        if y.dtype.kind not in "iuf" or y.dtype.kind == "b":
            raise TypeError(
                f"{owner}: {name} must be integer class labels (or float targets), got dtype "
                f"{y.dtype}"
            )
        if y.ndim == 0 or y.shape[0] != n:
            got = "a scalar" if y.ndim == 0 else f"{y.shape[0]} rows (shape {y.shape})"
            raise ValueError(f"{owner}: x has {n} samples but {name} has {got}; they must match")
        if y.ndim == 1:
            if y.dtype.kind == "f":
                raise TypeError(f"{owner}: {name} labels must be integers, got dtype {y.dtype}")
            if len(out_shape) != 1:
                raise ValueError(
                    f"{owner}: {name} holds class labels but the network's output per sample is "
                    f"{_fmt_shape(out_shape)}, not (classes,)"
                )
            k = out_shape[0]
            bad = (y < 0) | (y >= k)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"{owner}: {name} labels must be in [0, {k}) for the network's {k} outputs, "
                    f"got {y[i]} at index {i}"
                )
            return y.astype(np.intp, copy=False)
        if y.shape[1:] != tuple(out_shape):
            raise ValueError(
                f"{owner}: {name} targets must have shape (N, *{_fmt_shape(out_shape)}) like the "
                f"network's output, got {y.shape}"
            )
        return as_float_array(y, name, owner)

    def _generators(self) -> dict[str, np.random.Generator]:
        """Every Generator held by a layer (e.g. Dropout's), keyed ``"{index}.{attribute}"``; nested
        stacks included (``"{index}.{inner index}.{attribute}"``)."""
        return {key: gen for key, _, _, gen in generator_slots(self)}

    def _generator_states(self) -> dict[str, dict]:
        return {key: gen.bit_generator.state for key, gen in self._generators().items()}

    def _set_generator_states(self, states: Mapping, owner: str) -> None:
        generators = self._generators()
        for key, state in dict(states).items():
            try:
                generators[key].bit_generator.state = state
            except (ValueError, IndexError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"{owner}: cannot restore the random generator {key!r} ({exc!r}); does the "
                    f"checkpoint belong to this model?"
                ) from None

    # --- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the architecture (JSON) and every parameter to one ``.npz``, atomically."""
        model_files.write_arrays(path, model_files.model_arrays(self))

    @classmethod
    def load(
        cls, path: str | os.PathLike, custom_layers: Mapping[str, type] | None = None
    ) -> Sequential:
        """Rebuild a model saved by :meth:`save` (or a checkpoint). ``custom_layers``: extra
        ``{class name: class}`` beyond ``layers.LAYERS``. Bad files raise ``ValueError`` naming
        the file."""
        text = path_text(path, "Sequential.load")
        with model_files.open_npz(text) as npz:
            return model_files.read_model(npz, text, cls._builder(custom_layers))

    @classmethod
    def _builder(cls, custom_layers: Mapping[str, type] | None):
        """``build(header, source)`` for :func:`model_files.read_model`."""

        def build(header: dict, source: str) -> Sequential:
            return cls.from_config(header, custom_layers=custom_layers, source=source)

        return build


def _summary_rows(
    layer: Any, path: str, input_shape: tuple[int, ...], depth: int
) -> list[tuple[str, str, str, str]]:
    """The summary's rows of one layer: itself, then (for a container, indented one step per level
    of nesting) its children, numbered by their ``state_dict`` paths such as ``3.body.0``."""
    count = sum(int(p.size) for p in layer.params.values())
    shape = _fmt_shape(tuple(layer.output_shape(input_shape)))
    pad = "  " * depth
    if not is_container(layer):
        return [(path, pad + repr(layer), shape, f"{count:,}")]
    rows = [(path, pad + type(layer).__name__, shape, f"{count:,}")]
    for (name, child), child_in in zip(layer.named_children(),
                                       layer.child_input_shapes(input_shape)):
        rows += _summary_rows(child, f"{path}.{name}", child_in, depth + 1)
    return rows


_SHAPE_KEEPING = (ReLU, Sigmoid, Tanh, Dropout)  # layers whose output has their input's shape
_SKIPS_INPUT_GRAD = (Conv2D, Dense)  # layers whose backward takes input_grad=False


def _check_finite(a: np.ndarray, what: str, source: str, owner: str) -> None:
    if not is_finite(a):
        raise NonFiniteError(
            f"{owner}: the {what} contains NaN or Inf although {source} was finite: a value "
            f"overflowed inside the network"
        )
