"""Containers that branch and rejoin inside a ``Sequential``: ``Residual``, ``Concat``, ``Gate``.

``Sequential`` stays the spine of every network; these three cover the graphs of today's CNNs:

- ``Residual(body, shortcut=None)``: ``y = body(x) + shortcut(x)``, the shortcut being the
  identity (None) or a projection such as a strided 1x1 ``Conv2D`` with ``BatchNorm2D`` (ResNet's
  basic and bottleneck blocks, MobileNetV2's inverted residuals);
- ``Concat(branches)``: every branch on the same input, the outputs concatenated on the channel
  axis (SqueezeNet's fire module, Inception);
- ``Gate(gate)``: ``y = x * gate(x)``, the gate's output broadcast over ``x`` (squeeze-and-
  excitation, whose gate ends with a sigmoid and has shape (C, 1, 1) per sample).

Each child is any layer, or a ``Sequential`` of layers (a body is usually a ``Sequential``, whose
fused Conv2D -> ReLU -> MaxPool2D steps run as they do at the top level). The containers follow
the layer protocol and nest in each other and in ``Sequential``: ``params`` / ``grads`` /
``buffers`` are the children's, keyed ``"{child name}.{key}"`` (``"body.0.weight"``,
``"shortcut.1.running_mean"``, ``"branches.1.0.bias"``, ``"gate.1.weight"``), which are the module
paths of a PyTorch module with attributes ``body`` / ``shortcut`` (an ``nn.Sequential``),
``branches`` (an ``nn.ModuleList``) and ``gate``, so ``state_dict`` copies across both ways.

This module also holds the one walk over a tree of layers (``named_children``) that the model, its
files and data parallelism use: :func:`leaves`, :func:`state_entries`, :func:`generator_slots`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from .activations import add_relu, add_relu_grad, relu_backward
from .arrays import added
from .shapes import as_float_array, check_dout, finite_scans_skipped

# builds one child from its file entry {"class": name, "config": {...}}; ``Sequential.from_config``
# passes one that knows every class (the built-in layers, these containers, ``Sequential``, the
# user's custom layers)
Build = Callable[[Mapping, str], Any]


# ------------------------------------------------------------------------------------ the walk
def is_container(layer: Any) -> bool:
    """Whether ``layer`` holds other layers (``named_children``): ``Sequential`` and the classes
    here."""
    return callable(getattr(layer, "named_children", None))


def leaves(layer: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, layer)`` of every layer that is not a container, depth first in the children's
    order; ``path`` is the key prefix of its parameters, e.g. ``"3.body.0."``."""
    if not is_container(layer):
        yield prefix, layer
        return
    for name, child in layer.named_children():
        yield from leaves(child, f"{prefix}{name}.")


def state_entries(layer: Any, prefix: str = "") -> dict[str, tuple[Any, dict, str]]:
    """``{key: (array, the dict holding it, its name there)}`` for every parameter and buffer of
    every leaf: the keys of ``state_dict``."""
    entries: dict[str, tuple[Any, dict, str]] = {}
    for path, leaf in leaves(layer, prefix):
        for holder in (leaf.params, getattr(leaf, "buffers", None) or {}):
            for name in holder:
                entries[f"{path}{name}"] = (holder[name], holder, name)
    return entries


def generator_slots(
    layer: Any, prefix: str = ""
) -> list[tuple[str, Any, str, np.random.Generator]]:
    """``(key, leaf, attribute, generator)`` of every numpy Generator a leaf holds as an attribute
    (Dropout's mask generator), in a fixed order; ``key`` is ``"{path}{attribute}"``."""
    slots = []
    for path, leaf in leaves(layer, prefix):
        for attr, value in sorted(vars(leaf).items()):
            if isinstance(value, np.random.Generator):
                slots.append((f"{path}{attr}", leaf, attr, value))
    return slots


def prefixed(children: Iterable[tuple[str, Any]], what: str) -> dict[str, np.ndarray]:
    """The children's ``params`` / ``grads`` / ``buffers`` (``what``) as one dict keyed
    ``"{child name}.{key}"``; the arrays are the children's own objects."""
    return {
        f"{name}.{key}": value
        for name, child in children
        for key, value in (getattr(child, what, None) or {}).items()
    }


def layer_entry(layer: Any, owner: str) -> dict:
    """A layer's file entry ``{"class": name, "config": config()}``; TypeError naming ``owner``
    if the layer cannot be saved."""
    if not hasattr(layer, "config") or not hasattr(type(layer), "from_config"):
        raise TypeError(f"{owner} {layer!r} has no config()/from_config, so it cannot be saved")
    config = layer.config()
    try:
        json.dumps(config)
    except TypeError as exc:
        raise TypeError(f"{owner} {layer!r} has a config that is not JSON-able: {exc}") from None
    return {"class": type(layer).__name__, "config": config}


def _indent(text: str) -> str:
    return text.replace("\n", "\n  ")


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _check_child(child: Any, what: str, owner: str) -> Any:
    missing = [a for a in ("forward", "backward", "params", "grads", "output_shape")
               if not hasattr(child, a)]
    if isinstance(child, type) or missing:
        got = f"the class {child.__name__} (instantiate it)" if isinstance(child, type) else repr(
            child)
        raise TypeError(
            f"{owner}: {what} must be a layer (forward, backward, params, grads, output_shape) or "
            f"a Sequential, got {got}"
        )
    return child


# ------------------------------------------------------------------------------- containers
def infer_child(child: Any, x: np.ndarray) -> np.ndarray:
    """A child at inference: its own ``infer`` where it has one, else ``forward``."""
    infer = getattr(child, "infer", None)
    return infer(x) if callable(infer) else child.forward(x, training=False)


class Container:
    """What the containers share: the layer protocol over named children, the boundary check,
    config and repr. A subclass defines ``named_children``, ``output_shape``, ``_join`` and
    ``backward``."""

    def named_children(self) -> list[tuple[str, Any]]:
        raise NotImplementedError

    @property
    def params(self) -> dict[str, np.ndarray]:
        return prefixed(self.named_children(), "params")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return prefixed(self.named_children(), "grads")

    @property
    def buffers(self) -> dict[str, np.ndarray]:
        return prefixed(self.named_children(), "buffers")

    def child_input_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The per-sample input shape of each child: every child here sees the block's input."""
        return [tuple(input_shape)] * len(self.named_children())

    def forward(self, x: Any, training: bool = False) -> np.ndarray:
        """Check ``x`` (numeric, finite) where it enters, then run the children on it."""
        return self.run(as_float_array(x, "x", type(self).__name__), training)

    __call__ = forward

    def run(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """``forward`` on ``x`` already checked: the children, then their join; keeps what
        ``backward`` needs."""
        y, self._cache = self._join(x, self._forward_children(x, training))
        return y

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Inference with no backward to follow (``predict``, ``evaluate``): each child's own
        ``infer`` where it has one (a ``Sequential`` folds its Conv2D -> BatchNorm2D pairs), and
        nothing kept for a backward."""
        return self._join(x, self._forward_children(x, False, infer=True))[0]

    def _join(self, x: np.ndarray, outputs: list[np.ndarray]) -> tuple[np.ndarray, Any]:
        """The block's output from its children's, and what its ``backward`` needs."""
        raise NotImplementedError

    def _children_shapes(self, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Each child's per-sample output shape; ValueError naming the block and the child."""
        shapes = []
        for (name, child), shape in zip(self.named_children(), self.child_input_shapes(
                input_shape)):
            try:
                shapes.append(tuple(int(s) for s in child.output_shape(shape)))
            except (ValueError, TypeError) as exc:
                raise ValueError(
                    f"{type(self).__name__}: its {name} cannot take an input of shape "
                    f"{_shape_text(shape)}: {exc}"
                ) from None
        return shapes

    def _check_shapes(self, x: np.ndarray) -> None:
        # plan once: the shapes of a new input shape are checked before anything runs, so a block
        # whose branches do not rejoin is named with every branch's shape
        checked = self.__dict__.setdefault("_checked_shapes", set())
        if x.shape[1:] not in checked:
            if x.ndim < 2:
                raise ValueError(f"{type(self).__name__}: x must have a batch axis, (N, ...), "
                                 f"got shape {x.shape}")
            self.output_shape(x.shape[1:])
            checked.add(x.shape[1:])

    def _forward_children(
        self, x: np.ndarray, training: bool, infer: bool = False
    ) -> list[np.ndarray]:
        self._check_shapes(x)
        # x was checked where it entered: the children skip the NaN/Inf scan of their input
        with finite_scans_skipped():
            if infer:
                return [infer_child(child, x) for _, child in self.named_children()]
            return [child.forward(x, training=training) for _, child in self.named_children()]

    def _cached(self) -> Any:
        cache = getattr(self, "_cache", None)
        if cache is None:
            raise RuntimeError(
                f"{type(self).__name__}: backward() called before forward(); run forward first"
            )
        return cache

    def __repr__(self) -> str:
        inner = "".join(f"\n  {name}={_indent(repr(child))}," for name, child in self._repr_items())
        return f"{type(self).__name__}({inner}\n)"

    def _repr_items(self) -> list[tuple[str, Any]]:
        return self.named_children()

    @classmethod
    def _build(cls, entry: Any, what: str, build: Build | None, source: str) -> Any:
        if build is None:
            raise TypeError(
                f"{cls.__name__}.from_config needs build= (Sequential.from_config passes it: it "
                f"knows every layer class)"
            )
        if not isinstance(entry, Mapping):
            raise ValueError(f"{source}: {what} must be {{'class': name, 'config': {{...}}}}, "
                             f"got {entry!r}")
        return build(entry, f"{source}, {what}")


def _branch_gradient(owner: str, name: str, grad: Any, shape: tuple[int, ...]) -> Any:
    """A branch's input gradient, refused unless it has the input's ``shape``: a user's layer
    returning a wrong one would otherwise be broadcast into the sum, silently."""
    if np.shape(grad) != tuple(shape):
        raise ValueError(
            f"{owner}: the {name}'s backward returned a gradient of shape {np.shape(grad)}; its "
            f"input had shape {tuple(shape)}"
        )
    return grad


class Residual(Container):
    """``y = body(x) + shortcut(x)``: a residual block without its final activation (put a
    ``ReLU`` after it, as ResNet does). ``shortcut=None`` is the identity; otherwise a layer or a
    ``Sequential`` (ResNet's projection: a strided 1x1 ``Conv2D`` and a ``BatchNorm2D``). The body's
    and the shortcut's outputs must have the same shape.

    Input (N, ...) -> output (N, ...) of the body's shape. ``state_dict`` keys:
    ``"body.{key}"`` and ``"shortcut.{key}"``.
    """

    def __init__(self, body: Any, shortcut: Any = None) -> None:
        self.body = _check_child(body, "body", "Residual")
        self.shortcut = None if shortcut is None else _check_child(shortcut, "shortcut", "Residual")
        self._cache: Any = None

    def named_children(self) -> list[tuple[str, Any]]:
        children = [("body", self.body)]
        if self.shortcut is not None:
            children.append(("shortcut", self.shortcut))
        return children

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        shapes = self._children_shapes(input_shape)
        body = shapes[0]
        shortcut = shapes[1] if self.shortcut is not None else input_shape
        if body != shortcut:
            what = "the shortcut" if self.shortcut is not None else "the identity shortcut"
            raise ValueError(
                f"Residual: for an input of shape {_shape_text(input_shape)} the body gives "
                f"{_shape_text(body)} and {what} {_shape_text(shortcut)} per sample; they must "
                f"be equal to be added"
                + ("" if self.shortcut is not None else
                   " (give a projection shortcut, e.g. a strided 1x1 Conv2D, to change the shape)")
            )
        return body

    def run(self, x: np.ndarray, training: bool = False, relu: bool = False) -> np.ndarray:
        """``forward`` on ``x`` already checked. ``relu=True``: ReLU(body + shortcut), in the
        join's one pass (``blocks.ResidualReLU``, a Residual -> ReLU); ``backward`` then takes the
        output as ``relu_out``. A body that can (``joins_skip``: a Sequential ending in a
        BatchNorm2D, as ResNet's) adds the shortcut, and takes the ReLU, in its last step's
        output pass (``run_joined``): the shortcut runs first, and the join has no pass of its
        own."""
        joins = getattr(self.body, "joins_skip", None)
        if joins is None:
            y, cache = self._join(x, self._forward_children(x, training), relu)
            self._cache = (*cache, False)
            return y
        self._check_shapes(x)
        with finite_scans_skipped():  # x was checked where it entered
            shortcut = x if self.shortcut is None else self.shortcut.forward(x, training=training)
            joined = joins(shortcut)
            if joined:
                y = self.body.run_joined(x, training, shortcut, relu)
            else:
                y = self._join(x, [self.body.forward(x, training=training), shortcut], relu)[0]
        self._cache = (x.shape, x.dtype, y.shape, y.dtype, joined)
        return y

    def infer(self, x: np.ndarray, relu: bool = False) -> np.ndarray:
        """``Container.infer``, with the ReLU of ``run``. A body whose ``infer`` takes ``skip`` (a
        ``Sequential``) gets the shortcut's output (``x`` itself for an identity) and the ReLU, so
        that its last step may join them while it writes its output (MobileNetV2's fused block,
        a ResNet block's last convolution: ``inference_blocks.infer_with_skip``)."""
        if getattr(self.body, "infer_takes_skip", False):
            self._check_shapes(x)
            with finite_scans_skipped():
                shortcut = x if self.shortcut is None else infer_child(self.shortcut, x)
                return self.body.infer(x, skip=shortcut, relu=relu)
        return self._join(x, self._forward_children(x, False, infer=True), relu)[0]

    def _join(self, x: np.ndarray, outputs: list[np.ndarray], relu: bool = False
              ) -> tuple[np.ndarray, Any]:
        body = outputs[0]
        shortcut = outputs[1] if self.shortcut is not None else x
        if relu:
            y = add_relu(body, shortcut)
        else:
            y = np.add(body, shortcut, dtype=np.result_type(body, shortcut))
        return y, (x.shape, x.dtype, y.shape, y.dtype)

    def backward(self, dout: Any, relu_out: np.ndarray | None = None) -> np.ndarray:
        """The input gradient for ``dout``, the output's. ``relu_out``: the output of ``run``
        with ``relu=True`` (its sign is the ReLU's derivative), and dout the ReLU's output's
        gradient: a body that joined the shortcut takes the derivative in its last step, and the
        identity shortcut in the final sum; otherwise it is taken first."""
        x_shape, x_dtype, y_shape, y_dtype, joined = self._cached()
        dout = check_dout(dout, y_shape, y_dtype, type(self).__name__)
        if relu_out is not None and not joined:
            dout, relu_out = relu_backward(dout, relu_out), None
        with finite_scans_skipped():
            if (self.shortcut is None and relu_out is not None
                    and getattr(self.body, "backward_takes_shortcut", False)):
                # the identity's gradient added where the body's first step writes its own
                dout = np.ascontiguousarray(dout)
                return _branch_gradient("Residual", "body", self.body.backward(
                    dout, shortcut=(dout, relu_out)), x_shape)
            body_dx = _branch_gradient("Residual", "body", self.body.backward(dout), x_shape)
            if self.shortcut is None and relu_out is not None:
                return add_relu_grad(body_dx, dout, relu_out, x_dtype)
            if self.shortcut is None:
                other = dout
            else:
                other = self.shortcut.backward(
                    dout if relu_out is None else relu_backward(dout, relu_out))
        # one pass into a new array, on the pool (never in place: a branch's gradient may be a
        # view of dout, or of an array a user's layer keeps)
        return added(body_dx, _branch_gradient("Residual", "shortcut", other, x_shape), x_dtype)

    def config(self) -> dict:
        return {
            "body": layer_entry(self.body, "Residual: the body"),
            "shortcut": None if self.shortcut is None else layer_entry(
                self.shortcut, "Residual: the shortcut"),
        }

    @classmethod
    def from_config(cls, config: Mapping, build: Build | None = None,
                    source: str = "config") -> Residual:
        unknown = set(config) - {"body", "shortcut"}
        if unknown or "body" not in config:
            raise ValueError(f"{source}: Residual takes 'body' and 'shortcut', got keys "
                             f"{sorted(config)}")
        body = cls._build(config["body"], "body", build, source)
        shortcut = config.get("shortcut")
        if shortcut is not None:
            shortcut = cls._build(shortcut, "shortcut", build, source)
        return cls(body, shortcut)

    def _repr_items(self) -> list[tuple[str, Any]]:
        return self.named_children() if self.shortcut is not None else [("body", self.body)]


class Concat(Container):
    """Every branch on the same input, the outputs concatenated on the channel axis (axis 1 of
    (N, C, ...)), as ``torch.cat(..., dim=1)``: SqueezeNet's fire module, Inception. The branches'
    outputs must agree on every axis but the channels.

    Input (N, ...) -> output (N, C1 + C2 + ..., ...). ``state_dict`` keys: ``"branches.{i}.{key}"``.
    """

    def __init__(self, branches: Iterable[Any]) -> None:
        if isinstance(branches, (str, bytes)) or not isinstance(branches, Iterable):
            raise TypeError(f"Concat: branches must be a list of layers, got "
                            f"{type(branches).__name__}")
        branches = list(branches)
        if len(branches) < 2:
            raise ValueError(f"Concat: branches must hold at least 2 layers, got {len(branches)}")
        self.branches = [_check_child(b, f"branch {i}", "Concat") for i, b in enumerate(branches)]
        self._cache: Any = None

    def named_children(self) -> list[tuple[str, Any]]:
        return [(f"branches.{i}", branch) for i, branch in enumerate(self.branches)]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        shapes = self._children_shapes(input_shape)
        if any(len(s) < 2 or s[1:] != shapes[0][1:] for s in shapes):
            raise ValueError(
                f"Concat: for an input of shape {_shape_text(input_shape)} the branches give "
                f"{', '.join(_shape_text(s) for s in shapes)} per sample; they must agree on "
                f"every axis but the first (the channels) to be concatenated"
            )
        return (sum(s[0] for s in shapes), *shapes[0][1:])

    def _join(self, x: np.ndarray, outputs: list[np.ndarray]) -> tuple[np.ndarray, Any]:
        y = np.concatenate(outputs, axis=1)
        return y, (x.shape, x.dtype, y.shape, y.dtype, [o.shape[1] for o in outputs])

    def backward(self, dout: Any) -> np.ndarray:
        x_shape, x_dtype, y_shape, y_dtype, channels = self._cached()
        dout = check_dout(dout, y_shape, y_dtype, type(self).__name__)
        dx = np.zeros(x_shape, dtype=x_dtype)
        start = 0
        with finite_scans_skipped():
            for i, (branch, c) in enumerate(zip(self.branches, channels)):
                # a contiguous copy of the branch's channels: layers' backward passes expect one
                grad = branch.backward(np.ascontiguousarray(dout[:, start:start + c]))
                dx += _branch_gradient("Concat", f"branch {i}", grad, x_shape)
                start += c
        return dx

    def config(self) -> dict:
        return {"branches": [layer_entry(b, f"Concat: branch {i}")
                             for i, b in enumerate(self.branches)]}

    @classmethod
    def from_config(cls, config: Mapping, build: Build | None = None,
                    source: str = "config") -> Concat:
        branches = config.get("branches")
        if set(config) != {"branches"} or not isinstance(branches, list):
            raise ValueError(f"{source}: Concat takes 'branches', a list, got {dict(config)!r}")
        return cls([cls._build(b, f"branch {i}", build, source) for i, b in enumerate(branches)])


class Gate(Container):
    """``y = x * gate(x)``: the gate's output, per sample of the input's shape or broadcast over it
    (e.g. (C, 1, 1) for (C, H, W)), scales the input element-wise. Squeeze-and-excitation is
    ``Gate(Sequential([AdaptiveAvgPool2D(1), Conv2D(C, S, 1), ReLU(), Conv2D(S, C, 1),
    Sigmoid()]))`` (HardSigmoid in MobileNetV3).

    Input (N, ...) -> output of the same shape. ``state_dict`` keys: ``"gate.{key}"``.
    """

    def __init__(self, gate: Any) -> None:
        self.gate = _check_child(gate, "gate", "Gate")
        self._cache: Any = None

    def named_children(self) -> list[tuple[str, Any]]:
        return [("gate", self.gate)]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        gate = self._children_shapes(input_shape)[0]
        if len(gate) != len(input_shape) or any(g not in (1, s) for g, s in zip(gate,
                                                                                  input_shape)):
            raise ValueError(
                f"Gate: for an input of shape {_shape_text(input_shape)} the gate gives "
                f"{_shape_text(gate)} per sample; it must have the input's shape or broadcast "
                f"over it (each axis equal or 1, e.g. (C, 1, 1))"
            )
        return input_shape

    def _join(self, x: np.ndarray, outputs: list[np.ndarray]) -> tuple[np.ndarray, Any]:
        (g,) = outputs
        y = np.multiply(x, g, dtype=np.result_type(x, g))
        return y, (x, g, y.shape, y.dtype)

    def backward(self, dout: Any) -> np.ndarray:
        x, g, y_shape, y_dtype = self._cached()
        dout = check_dout(dout, y_shape, y_dtype, type(self).__name__)
        # d(x * g)/dg summed over the axes g was broadcast on
        axes = tuple(i for i, (a, b) in enumerate(zip(g.shape, x.shape)) if a != b)
        dg = np.multiply(dout, x).sum(axis=axes, keepdims=True).astype(g.dtype, copy=False)
        with finite_scans_skipped():
            dx = np.multiply(dout, g, dtype=x.dtype)
            dx += _branch_gradient("Gate", "gate", self.gate.backward(dg), x.shape)
        return dx

    def config(self) -> dict:
        return {"gate": layer_entry(self.gate, "Gate: the gate")}

    @classmethod
    def from_config(cls, config: Mapping, build: Build | None = None,
                    source: str = "config") -> Gate:
        if set(config) != {"gate"}:
            raise ValueError(f"{source}: Gate takes 'gate', got keys {sorted(config)}")
        return cls(cls._build(config["gate"], "gate", build, source))


CONTAINERS: dict[str, type[Container]] = {cls.__name__: cls for cls in (Residual, Concat, Gate)}
