"""ONNX import: an ONNX graph (such as ``torch.onnx.export`` of a ResNet, a MobileNet or a
SqueezeNet) as a :class:`~cnn_im2col.model.Sequential`, its branches as containers.

What is read: one graph input and one output, FLOAT or DOUBLE, in the default ONNX domain; the
nodes between them form chains (each node reading the one computed tensor before it, plus
initializers, ``Constant`` nodes or nodes that only rearrange constants, computed on import) and
forks whose branches rejoin at one node, or in steps: ``Add`` of two branches or ``Sum`` of two or
more (a :class:`~cnn_im2col.containers.Residual`, one branch the identity or all computed; more
than two nest as ``b0 + (b1 + (b2 + ...))``), ``Mul`` of a tensor and a branch computed from it (a
:class:`~cnn_im2col.containers.Gate`, squeeze-and-excitation) or ``Concat`` on the channel axis (a
:class:`~cnn_im2col.containers.Concat`). Branches nest. Each node of a chain is read by the
importer its operator has in the operator table (:mod:`.operators`; :mod:`.node_importers` lists
what each one accepts). Anything else is a ``ValueError`` naming the node, its operator and what
is supported; an unreadable file is a ``ValueError`` naming the file. Files are parsed by the
``onnx`` package (protobuf), never unpickled.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import numpy as np

from ..containers import Concat, Gate, Residual
from ..layers import Identity
from ..model import Sequential
from .graph import CLASS_NAMES_KEY, Reader, onnx_package
from .operators import IMPORTERS


def _constant_value(onnx: Any, node: Any, source: str) -> np.ndarray:
    """The value of a ``Constant`` node."""
    if len(node.attribute) == 1:
        attribute = node.attribute[0]
        if attribute.name == "value":
            return _tensor_array(onnx, attribute.t, f"{source}: node {node.name!r} (Constant)")
        if attribute.name in ("value_float", "value_floats", "value_int", "value_ints"):
            value = onnx.helper.get_attribute_value(attribute)
            return np.asarray(value, dtype=np.float32 if "float" in attribute.name else np.int64)
    names = [a.name for a in node.attribute]
    raise ValueError(
        f"{source}: node {node.name!r} (Constant): attributes {names} are not supported; "
        f"supported: one of value, value_float(s), value_int(s)"
    )


#: Operators that only make or rearrange constants: where every input is a constant they are
#: computed on import by ONNX's own reference implementation (torch.onnx writes the pads of a
#: ``Pad`` this way: ConstantOfShape, Concat, Reshape, Slice, Transpose, Cast of Constants).
CONSTANT_FOLDED = frozenset({
    "Cast", "Concat", "ConstantOfShape", "Flatten", "Gather", "Reshape", "Slice", "Squeeze",
    "Transpose", "Unsqueeze",
})


def _fold(onnx: Any, node: Any, constants: dict, source: str) -> dict[str, np.ndarray]:
    """The outputs of ``node``, all of whose inputs are constants, by ``onnx.reference``."""
    from onnx.reference import ReferenceEvaluator

    feeds = {name: constants[name] for name in node.input if name}
    try:
        outputs = ReferenceEvaluator(node).run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - a malformed node: say which
        raise ValueError(
            f"{source}: {_label(node)} of constants cannot be computed ({type(exc).__name__}: "
            f"{exc})"
        ) from None
    return {name: np.asarray(value) for name, value in zip(node.output, outputs) if name}


def _tensor_array(onnx: Any, tensor: Any, what: str) -> np.ndarray:
    try:
        return onnx.numpy_helper.to_array(tensor)
    except Exception as exc:  # noqa: BLE001 - unknown data type, data of the wrong size, ...
        raise ValueError(f"{what}: its data cannot be read ({type(exc).__name__}: {exc})") from None


def _per_sample_shape(value_info: Any) -> tuple[int, ...] | None:
    dims = value_info.type.tensor_type.shape.dim
    shape = tuple(d.dim_value for d in dims[1:])
    return shape if dims and all(s > 0 for s in shape) else None


def from_onnx(proto: Any, source: str = "ONNX model") -> Sequential:
    """A ``Sequential`` from an ``onnx.ModelProto`` (see the module docstring for what is read)."""
    onnx = onnx_package()
    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ValueError(f"{source}: the model does not import the default ONNX operator set")
    constants = {}
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(
                f"{source}: initializer {tensor.name!r} is stored in an external file; supported: "
                f"initializers inside the model file"
            )
        constants[tensor.name] = _tensor_array(
            onnx, tensor, f"{source}: initializer {tensor.name!r}"
        )
    inputs = [v for v in graph.input if v.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(
            f"{source}: the graph has inputs {[v.name for v in inputs]} and outputs "
            f"{[v.name for v in graph.output]}; supported: one input and one output (a chain)"
        )
    elem = inputs[0].type.tensor_type.elem_type
    if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
        raise ValueError(
            f"{source}: the input {inputs[0].name!r} has element type "
            f"{onnx.TensorProto.DataType.Name(elem)}; supported: FLOAT, DOUBLE"
        )
    nodes = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(
                f"{source}: node {node.name!r} ({node.op_type}) is in the operator domain "
                f"{node.domain!r}; supported: the default ONNX domain"
            )
        if node.op_type == "Constant":
            constants[node.output[0]] = _constant_value(onnx, node, source)
        elif node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in constants:
            # a constant renamed (torch.onnx's TrainingMode.PRESERVE writes BatchNorm's scale
            # this way)
            constants[node.output[0]] = constants[node.input[0]]
        elif node.op_type in CONSTANT_FOLDED and all(
                name in constants for name in node.input if name):
            constants.update(_fold(onnx, node, constants, source))
        else:
            nodes.append(node)
    walk = _Walk(onnx, source, nodes, constants, opset, inputs[0].name, graph.output[0].name)
    layers, _ = walk.read(inputs[0].name, _per_sample_shape(inputs[0]))
    walk.check_every_node_read()
    if not layers:
        raise ValueError(
            f"{source}: the graph computes nothing (only Identity nodes): no layer to import"
        )
    model = Sequential(layers)
    shape = _per_sample_shape(inputs[0])
    if shape is not None:
        with contextlib.suppress(ValueError):  # a shape the layers cannot take: leave it unknown
            model.check_shapes(shape)
            model._learn_input_shape(shape)
    names = {p.key: p.value for p in proto.metadata_props}.get(CLASS_NAMES_KEY)
    if names is not None:
        try:
            model.set_class_names(json.loads(names))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: metadata {CLASS_NAMES_KEY!r} is not a list of class "
                             f"names ({exc})") from None
    return model


def _label(node: Any) -> str:
    return f"node {node.name!r} ({node.op_type})" if node.name else f"a {node.op_type} node"


#: How a node that reads two or more computed tensors rejoins the branches of a fork.
JOINS = (
    "Add of 2 tensors or Sum of 2 or more (Residual), Mul of a tensor and a branch of it (Gate), "
    "Concat on axis 1"
)


class _Walk:
    """Reads the graph from its input to its output as a tree of layers and containers.

    A run of nodes each reading the one computed tensor before it is a chain, read by the operator
    table's importers (:class:`.graph.Reader`). A tensor read by several nodes is a fork: each
    branch is read on from its first node until it reaches a node that reads two or more computed
    tensors, a join; every branch must reach the same join, which reads exactly the branches' ends
    (a branch that is the fork's tensor itself is the identity), at once or in steps. The join
    makes the container:
    ``Add`` / ``Sum`` a :class:`~cnn_im2col.containers.Residual`, ``Mul`` a
    :class:`~cnn_im2col.containers.Gate`, ``Concat`` a :class:`~cnn_im2col.containers.Concat`.
    Branches nest (a squeeze-and-excitation gate inside a residual body).
    """

    def __init__(self, onnx: Any, source: str, nodes: list, constants: dict, opset: int,
                 first: str, last: str) -> None:
        self.onnx, self.source, self.nodes = onnx, source, nodes
        self.constants, self.opset, self.last = constants, opset, last
        self.read_nodes: set[int] = set()
        self.consumers: dict[str, list] = {}
        produced = {first, *(name for node in nodes for name in node.output)}
        for node in nodes:
            computed = self.computed(node)
            unknown = [name for name in computed if name not in produced]
            if unknown:
                raise ValueError(
                    f"{source}: {_label(node)} reads {unknown}, which no node computes and no "
                    f"initializer or Constant holds"
                )
            if len(set(computed)) != len(computed):
                raise ValueError(
                    f"{source}: {_label(node)} reads the same tensor twice ({computed}); "
                    f"supported: joins of different branches ({JOINS})"
                )
            for name in computed:
                self.consumers.setdefault(name, []).append(node)

    def computed(self, node: Any) -> list[str]:
        """The node's inputs that the graph computes (not initializers or Constants)."""
        return [name for name in node.input if name and name not in self.constants]

    def _visit(self, node: Any) -> None:
        if id(node) in self.read_nodes:
            raise ValueError(f"{self.source}: {_label(node)} is reached twice: the graph has a "
                             f"cycle")
        self.read_nodes.add(id(node))
        for extra in node.output[1:]:  # e.g. Dropout's mask, MaxPool's indices
            if extra and (extra in self.consumers or extra == self.last):
                raise ValueError(
                    f"{self.source}: {_label(node)}: its second output {extra!r} is used; "
                    f"supported: only the first output of each node"
                )

    def read(self, tensor: str, shape: tuple | None, first: Any = None,
             ) -> tuple[list, tuple | None]:
        """The layers from ``tensor`` to the graph's output, and the output's per-sample shape."""
        layers, join, _, shape = self._read(tensor, shape, first)
        if join is not None:
            raise ValueError(
                f"{self.source}: {_label(join)} reads the tensors {self.computed(join)}, which do "
                f"not all branch from one tensor; supported: branches from one tensor that rejoin "
                f"at one node ({JOINS})"
            )
        return layers, shape

    def _read(self, tensor: str, shape: tuple | None, first: Any = None,
              ) -> tuple[list, Any, str, tuple | None]:
        """Read on from ``tensor`` (through ``first``, if given, as its only reader) until the
        graph's output or a join: (layers, the join or None, the tensor reaching it, its shape)."""
        layers, chain = [], []
        while True:
            users = [first] if first is not None else self.consumers.get(tensor, [])
            first = None
            if tensor == self.last and not users:
                more, shape = self._import(chain, shape)
                return layers + more, None, tensor, shape
            if not users:
                raise ValueError(
                    f"{self.source}: tensor {tensor!r}: no node reads it and it is not the graph's "
                    f"output; supported: every tensor leading to the output"
                )
            if tensor == self.last:
                raise ValueError(
                    f"{self.source}: the output {tensor!r} is also read by "
                    f"{', '.join(_label(n) for n in users)}; supported: an output no node reads"
                )
            if len(users) == 1 and len(self.computed(users[0])) == 1:
                self._visit(users[0])
                chain.append(users[0])
                tensor = users[0].output[0]
                continue
            more, shape = self._import(chain, shape)
            layers, chain = layers + more, []
            if len(users) == 1:  # a join of branches that forked before this run
                return layers, users[0], tensor, shape
            container, tensor, shape = self._fork(tensor, users, shape)
            layers.append(container)

    def _import(self, chain: list, shape: tuple | None) -> tuple[list, tuple | None]:
        """The layers of a chain of nodes, read by the operator table, and the per-sample shape
        after them."""
        reader = Reader(self.onnx, self.source, chain, self.constants, self.opset, shape)
        while reader.position < len(chain):
            node = chain[reader.position]
            reader.position += 1
            importer = IMPORTERS.get(node.op_type)
            if importer is None:
                raise reader.fail(node, "this operator cannot be imported", ", ".join(IMPORTERS))
            try:
                importer(reader, node)
            except ValueError as exc:
                if str(exc).startswith(self.source):
                    raise
                raise ValueError(f"{reader.label(node)}: {exc}") from None
            except (TypeError, KeyError, IndexError) as exc:  # a malformed node the checker let by
                raise ValueError(
                    f"{reader.label(node)}: cannot be read ({type(exc).__name__}: {exc})"
                ) from None
        return reader.layers, reader.shape

    def _fork(self, tensor: str, users: list, shape: tuple | None) -> tuple[Any, str, Any]:
        """Read the branches from ``tensor`` to their join; (the container, the join's output,
        its shape). Branches may rejoin in steps, as ``x + f(x) + g(x)`` is written (``Add(Add(x,
        f(x)), g(x))``): a join that reads only some of the branches makes their container, which
        is read on as one branch from the fork's tensor to the next join."""
        rank = None if shape is None else len(shape) + 1
        pending = []  # per branch: (the tensor reaching its join, the branch's layers, the join)
        for user in users:
            if len(self.computed(user)) > 1:  # the join itself reads the fork: an identity branch
                pending.append((tensor, [], user))
                continue
            layers, join, end, _ = self._read(tensor, shape, user)
            if join is None:
                raise ValueError(
                    f"{self.source}: tensor {tensor!r} branches to {len(users)} nodes and one "
                    f"branch, through {_label(user)}, ends at the graph's output; supported: "
                    f"branches that rejoin ({JOINS})"
                )
            pending.append((end, layers, join))
        while True:
            joins = list({id(j): j for _, _, j in pending}.values())
            ready = [j for j in joins
                     if sorted(self.computed(j)) == sorted(e for e, _, k in pending if k is j)]
            if len(joins) > 1 and not ready:
                names = ", ".join(_label(j) for j in joins)
                raise ValueError(
                    f"{self.source}: the branches from tensor {tensor!r} rejoin at different "
                    f"nodes ({names}); supported: branches that rejoin at one node, or in steps "
                    f"({JOINS})"
                )
            join = joins[0] if len(joins) == 1 else ready[0]
            self._visit(join)
            by_end = {e: layers for e, layers, k in pending if k is join}
            computed = self.computed(join)
            if sorted(computed) != sorted(by_end):
                raise ValueError(
                    f"{self.source}: {_label(join)} reads {computed}, not exactly the {len(users)} "
                    f"branches from tensor {tensor!r}; supported: a join of the branches of one "
                    f"fork ({JOINS})"
                )
            container = self._container(join, [by_end[name] for name in computed], rank)
            out_shape = shape
            if shape is not None:
                try:
                    out_shape = tuple(int(s) for s in container.output_shape(shape))
                except ValueError as exc:
                    raise ValueError(f"{self.source}: {_label(join)}: {exc}") from None
            if len(joins) == 1:
                return container, join.output[0], out_shape
            # a step: the container is one branch from the fork, read on to its next join
            layers, after, end, _ = self._read(join.output[0], out_shape)
            if after is None:
                raise ValueError(
                    f"{self.source}: {_label(join)} joins some branches from tensor {tensor!r} "
                    f"and leads to the graph's output without the others; supported: branches "
                    f"that rejoin ({JOINS})"
                )
            pending = [p for p in pending if p[2] is not join] + [(end, [container, *layers],
                                                                   after)]

    def _container(self, join: Any, branches: list[list], rank: int | None) -> Any:
        """The container the join ``join`` makes of its branches (each a list of layers, [] for
        the identity), in the join's input order; ``rank``: of the tensors joined, if known."""
        reader = Reader(self.onnx, self.source, [join], self.constants, self.opset, None)
        op = join.op_type
        identity = [i for i, layers in enumerate(branches) if not layers]
        if (op == "Add" and len(branches) == 2 or op == "Sum" and len(branches) >= 2) and len(
                identity) < 2:
            reader.attributes(join, {})
            # identity last; a Sum of k branches nests: b0 + (b1 + (... + b(k-1)))
            *bodies, last = sorted(branches, key=lambda layers: not layers)
            block = Sequential(last) if last else None
            for body in reversed(bodies):
                block = Residual(Sequential(body), block)
            return block
        if op == "Mul" and len(branches) == 2 and len(identity) == 1:
            reader.attributes(join, {})
            return Gate(Sequential(branches[1 - identity[0]]))
        if op == "Concat" and len(branches) >= 2:
            axis = reader.attributes(join, {"axis": None})["axis"]
            if axis is not None and axis < 0 and rank is not None:
                axis += rank
            if axis != 1:
                raise reader.fail(join, f"axis {axis}", "Concat on axis 1, the channels")
            return Concat([Sequential(layers or [Identity()]) for layers in branches])
        what = f"{len(branches)} branches, {len(identity)} of them the identity"
        raise reader.fail(join, f"joins {what}", JOINS)

    def check_every_node_read(self) -> None:
        off = [_label(n) for n in self.nodes if id(n) not in self.read_nodes]
        if off:
            raise ValueError(
                f"{self.source}: {', '.join(off)} are not on the path from the input to the "
                f"output; supported: nodes that lead from the input to the output"
            )


def load(path: str | os.PathLike) -> Sequential:
    """Read an ONNX file as a ``Sequential`` (see :func:`from_onnx`); a file that is not a valid
    ONNX model (corrupt, truncated, not ONNX) is a ``ValueError`` naming it."""
    onnx = onnx_package()
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"cnn_im2col.onnx.load: path must be a str or os.PathLike, got {path!r}")
    path_text = os.fspath(path)
    if not os.path.isfile(path_text):
        raise FileNotFoundError(f"{path_text}: no such ONNX file")
    with open(path_text, "rb") as handle:
        data = handle.read()
    try:
        proto = onnx.load_model_from_string(data)  # protobuf: data only, nothing executed
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, the checker's ValidationError, ...
        text = " ".join(str(exc).split())[:300]
        raise ValueError(
            f"{path_text}: not a valid ONNX model file ({type(exc).__name__}: {text})"
        ) from None
    if not proto.graph.node:
        raise ValueError(f"{path_text}: not a valid ONNX model file (its graph has no nodes)")
    return from_onnx(proto, path_text)
