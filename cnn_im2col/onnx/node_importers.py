"""The importers: for each ONNX operator that starts a layer in a chain, the function that reads
its node from a :class:`~.graph.Reader` and appends the layer (``importer(reader, node)``; it may
consume the next node too, e.g. a bias ``Add``), the one its row of the operator table
(:mod:`.operators`) names; with their helpers (a window's attributes and ``auto_pad``, a
parameter's float dtype, a Dense from a weight and a bias).

What is read
------------
``Conv`` (any ``group`` dividing the output channels, any ``dilations``; symmetric pads or the pads
of ``"same"``; ``auto_pad`` NOTSET, VALID, SAME_UPPER (any stride), and SAME_LOWER for stride 1
and odd kernel spans),
``Conv`` + ``Add`` of a constant (a bias: (O, 1, 1) tied, (O, OH, OW) untied), ``Relu``,
``Sigmoid``, ``Tanh``, ``MaxPool`` / ``AveragePool`` (symmetric pads of at most half the window;
``ceil_mode`` 0 or 1; ``dilations`` for MaxPool; ``count_include_pad`` 0 or 1), an
``AveragePool`` + ``Mul`` by a (C, 1, 1) constant (the learned scale), ``BatchNormalization`` in
inference form only (``training_mode`` 0, one output; constant scale, B, mean and var of shape
(C,)): a ``BatchNorm2D`` with ``affine=True`` (a scale of ones stays trainable), eps = ``epsilon``,
momentum = 1 - ``momentum``, the running statistics from mean and var and ``num_batches_tracked``
0 (ONNX does not carry it); ``GlobalAveragePool`` followed by ``Flatten(axis=1)`` or ``Reshape``
to (N, -1) (a ``GlobalAvgPool2D``), ``Flatten(axis=1)``, ``Reshape`` to (N, -1), ``Transpose``
[0, 1, 3, 2] + ``Flatten`` (Flatten order "F"), ``Gemm`` (transA 0), ``MatMul`` (+ ``Add``),
``GlobalAveragePool`` alone (an ``AdaptiveAvgPool2D(1)``: (N, C, 1, 1), as in a squeeze-and-
excitation gate), ``Softmax`` over axis 1, ``Clip`` (0, 6) as ``ReLU6``, ``HardSigmoid`` (alpha
1/6, beta 1/2), ``HardSwish``, ``LeakyRelu``, ``Dropout``, ``Identity`` (dropped),
``GlobalMaxPool`` (an ``AdaptiveMaxPool2D(1)``), ``Pad`` of H and W with a finite constant (a
``ZeroPad2D`` / ``ConstantPad2D``; zeros before a ``Conv`` or an unpadded ``AveragePool`` fold into
its padding where the sum is one the layer has: symmetric, or stride-1 ``"same"``). Initializers
become the layers' parameters, in their dtype (float32 or float64). Anything else is a
``ValueError`` naming the node, its operator and what is supported. The forks and joins between
chains (``Add``, ``Sum``, ``Mul``, ``Concat`` of computed tensors) are read by the importer's walk
of the graph (:mod:`.importer`), which makes them containers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..functional import conv2d_output_shape
from ..layers import (
    AdaptiveAvgPool2D,
    AdaptiveMaxPool2D,
    AvgPool2D,
    BatchNorm2D,
    ConstantPad2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    HardSigmoid,
    LeakyReLU,
    MaxPool2D,
    ReLU6,
    Softmax,
    ZeroPad2D,
)
from ..shapes import resolve_padding
from .graph import Reader, load_into, window_span


def _float_dtype(reader: Reader, node: Any, array: np.ndarray, what: str) -> np.dtype:
    if array.dtype not in (np.float32, np.float64):
        raise reader.fail(node, f"its {what} is {array.dtype}", "float32 or float64 parameters")
    return array.dtype


def _window(
    reader: Reader, node: Any, attrs: dict, kernel_rank: int, dilated: bool = False
) -> tuple:
    """(kernel, stride, (top, bottom, left, right), dilation) from the Conv/pool attributes, 2-D
    only; a dilation other than 1 only where ``dilated`` (Conv, MaxPool)."""
    kernel = attrs["kernel_shape"]
    if kernel is None or len(kernel) != kernel_rank:
        raise reader.fail(
            node, f"kernel_shape {kernel} is not two-dimensional", "2-D (NCHW) windows"
        )
    kernel = tuple(int(k) for k in kernel)
    stride = tuple(int(s) for s in (attrs["strides"] or (1, 1)))
    dilations = tuple(int(d) for d in (attrs["dilations"] or (1, 1)))
    if len(dilations) != 2 or min(dilations) < 1:
        raise reader.fail(node, f"dilations {list(dilations)}", "2 dilations of at least 1")
    if not dilated and dilations != (1, 1):
        raise reader.fail(
            node, f"dilations {list(dilations)}",
            "dilations 1 for AveragePool (dilated Conv and MaxPool are read)"
        )
    pads = tuple(int(p) for p in (attrs["pads"] or (0, 0, 0, 0)))
    if len(stride) != 2 or len(pads) != 4:
        raise reader.fail(
            node, f"strides {list(stride)} / pads {list(pads)}", "2-D strides and 4 pads"
        )
    top, left, bottom, right = pads
    return kernel, stride, (top, bottom, left, right), dilations


def _auto_pad(
    reader: Reader,
    node: Any,
    attrs: dict,
    kernel: tuple,
    stride: tuple,
    pads: tuple,
    allow_same: bool,
) -> tuple:
    mode = attrs.get("auto_pad", "NOTSET") or "NOTSET"
    if mode == "NOTSET":
        return pads
    if mode == "VALID":
        return (0, 0, 0, 0)
    odd = kernel[0] % 2 == 1 and kernel[1] % 2 == 1
    if allow_same and stride == (1, 1) and (mode == "SAME_UPPER" or (mode == "SAME_LOWER" and odd)):
        return resolve_padding("same", kernel, stride)
    if allow_same and mode == "SAME_UPPER":
        return "same"  # strided: pads that depend on the input size, as Conv2D(padding="same")
    raise reader.fail(
        node,
        f"auto_pad {mode!r} (stride {list(stride)}, kernel {list(kernel)})",
        "NOTSET, VALID, and for Conv SAME_UPPER (SAME_LOWER with stride 1 and odd kernels)",
    )


def import_conv(reader: Reader, node: Any) -> None:
    attrs = reader.attributes(
        node,
        {
            "auto_pad": "NOTSET",
            "dilations": None,
            "group": 1,
            "kernel_shape": None,
            "pads": None,
            "strides": None,
        },
    )
    weight = reader.constant(node, 1, "weight")
    dtype = _float_dtype(reader, node, weight, "weight")
    if weight.ndim != 4:
        raise reader.fail(
            node, f"its weight has shape {weight.shape}", "2-D convolutions, weight (O, C, KH, KW)"
        )
    groups = int(attrs["group"])
    out_channels = weight.shape[0]
    if groups < 1 or out_channels % groups:
        raise reader.fail(
            node,
            f"group {groups} with a weight of shape {weight.shape}",
            "a group count of at least 1 that divides the output channels (weight's first axis)",
        )
    if attrs["kernel_shape"] is None:
        attrs["kernel_shape"] = list(weight.shape[2:])
    kernel, stride, pads, dilation = _window(reader, node, attrs, 2, dilated=True)
    if kernel != weight.shape[2:]:
        raise reader.fail(
            node,
            f"kernel_shape {list(kernel)} differs from the weight's {weight.shape}",
            "a kernel_shape equal to the weight's (KH, KW)",
        )
    span = window_span(kernel, dilation)  # auto_pad and "same" pad the dilated kernel's extent
    pads = _auto_pad(reader, node, attrs, span, stride, pads, allow_same=True)
    top, bottom, left, right = (0, 0, 0, 0) if pads == "same" else pads
    if pads == "same":
        padding: Any = "same"
    elif (top, left) == (bottom, right):
        padding = (top, left)
    elif stride == (1, 1) and pads == resolve_padding("same", span, stride):
        padding = "same"
    else:
        raise reader.fail(
            node,
            f"asymmetric pads [top, left, bottom, right] = {[top, left, bottom, right]}",
            "symmetric pads, or the pads of 'same' (stride 1, extra row/column at the end)",
        )
    in_channels = weight.shape[1] * groups  # the weight is (O, C/groups, KH, KW)
    bias = reader.constant(node, 2, "bias", required=False)
    bias_mode: str | None = "tied" if bias is not None else None
    input_size = None
    if (
        bias is None and (fused := reader.fuse("Add")) is not None
    ):  # Conv + Add: a bias added afterwards
        add_node, bias = fused
        out_hw = None
        if reader.shape is not None:
            out_hw = conv2d_output_shape(
                reader.shape, weight.shape, stride, padding, reader.label(node), dilation, groups
            )[1:]
        shape = bias.shape[1:] if bias.ndim == 4 and bias.shape[0] == 1 else bias.shape
        if shape == (out_channels, 1, 1):  # broadcast over N, H, W: one per map
            bias_mode = "tied"
        elif out_hw is not None and shape == (out_channels, *out_hw):
            bias_mode, input_size = "untied", reader.shape[1:]
        else:
            raise reader.fail(
                add_node,
                f"adds a constant of shape {bias.shape} to the output of a Conv with "
                f"{out_channels} maps" + ("" if out_hw else " (input size unknown)"),
                f"a bias of shape ({out_channels}, 1, 1) (tied) or ({out_channels}, OH, OW) "
                f"(untied, with a known input size)",
            )
    layer = Conv2D(
        in_channels,
        out_channels,
        kernel,
        stride,
        padding,
        bias=bias_mode,
        input_size=input_size,
        dtype=dtype,
        dilation=dilation,
        groups=groups,
    )
    arrays = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    reader.add_layer(node, load_into(layer, **arrays))


def import_pool(reader: Reader, node: Any) -> None:
    average = node.op_type == "AveragePool"
    allowed = {
        "auto_pad": "NOTSET",
        "ceil_mode": 0,
        "dilations": None,
        "kernel_shape": None,
        "pads": None,
        "strides": None,
    }
    allowed.update({"count_include_pad": 0} if average else {"storage_order": 0})
    attrs = reader.attributes(node, allowed)
    if attrs["ceil_mode"] not in (0, 1):
        raise reader.fail(node, f"ceil_mode {attrs['ceil_mode']}", "ceil_mode 0 or 1")
    ceil_mode = bool(attrs["ceil_mode"])
    kernel, stride, pads, dilation = _window(reader, node, attrs, 2, dilated=not average)
    top, bottom, left, right = _auto_pad(
        reader, node, attrs, kernel, stride, pads, allow_same=False
    )
    if (top, left) != (bottom, right):
        raise reader.fail(
            node,
            f"asymmetric pads [top, left, bottom, right] = {[top, left, bottom, right]}",
            "symmetric pads of at most half the window",
        )
    # count_include_pad 0 (ONNX's default): the divisor counts only the cells inside the image
    include_pad = bool(attrs["count_include_pad"]) if average else True
    try:
        if not average:
            layer: Any = MaxPool2D(kernel, stride, (top, left), ceil_mode, dilation)
        elif (
            fused := reader.fuse("Mul")
        ) is not None:  # AveragePool + Mul: a learned scale per map
            mul_node, factor = fused
            channels = factor.shape[-3] if factor.ndim >= 3 else 0
            if factor.ndim not in (3, 4) or factor.shape[-2:] != (1, 1) or factor.size != channels:
                raise reader.fail(
                    mul_node,
                    f"multiplies the average pool by a constant of shape {factor.shape}",
                    "a scale of shape (C, 1, 1), one per feature map",
                )
            dtype = _float_dtype(reader, mul_node, factor, "scale")
            layer = AvgPool2D(
                kernel,
                stride,
                (top, left),
                trainable_scale=True,
                channels=channels,
                dtype=dtype,
                count_include_pad=include_pad,
                ceil_mode=ceil_mode,
            )
            load_into(layer, weight=factor.reshape(-1) / (kernel[0] * kernel[1]))
        else:
            layer = AvgPool2D(kernel, stride, (top, left), count_include_pad=include_pad,
                              ceil_mode=ceil_mode)
    except ValueError as exc:  # e.g. padding more than half the window
        raise reader.fail(node, str(exc), "symmetric pads of at most half the window") from None
    reader.add_layer(node, layer)


def _float32_value(value: float) -> float:
    """A float attribute (stored as float32) as the decimal it was written from: 1e-5, not
    9.99999974e-06."""
    return float(str(np.float32(value)))


def import_batch_norm(reader: Reader, node: Any) -> None:
    attrs = reader.attributes(node, {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0})
    extra = [name for name in node.output[1:] if name]
    if attrs["training_mode"] != 0 or extra:
        raise reader.fail(
            node,
            f"training mode (training_mode {attrs['training_mode']}, outputs {list(node.output)})",
            "inference: training_mode 0 and one output (Y)",
        )
    arrays = {
        what: reader.constant(node, index, what)
        for index, what in enumerate(("scale", "bias", "mean", "var"), start=1)
    }
    dtype = _float_dtype(reader, node, arrays["mean"], "mean")
    for what, value in arrays.items():
        _float_dtype(reader, node, value, what)
        if value.ndim != 1 or value.shape != arrays["scale"].shape:
            shapes = {k: v.shape for k, v in arrays.items()}
            raise reader.fail(
                node, f"its inputs have shapes {shapes}", "scale, bias, mean and var of shape (C,)"
            )
    momentum = 1.0 - _float32_value(
        attrs["momentum"]
    )  # ONNX weighs the running value: PyTorch's 1 - m
    # affine=True even for gamma = 1, beta = 0: the same numbers, and the parameters stay trainable
    layer = BatchNorm2D(
        arrays["scale"].shape[0],
        eps=_float32_value(attrs["epsilon"]),
        momentum=float(f"{momentum:.12g}"),
        dtype=dtype,
    )
    load_into(layer, weight=arrays["scale"], bias=arrays["bias"])
    np.copyto(layer.buffers["running_mean"], arrays["mean"], casting="same_kind")
    np.copyto(layer.buffers["running_var"], arrays["var"], casting="same_kind")
    reader.add_layer(node, layer)


def import_global_avg_pool(reader: Reader, node: Any) -> None:
    """``GlobalAveragePool`` + ``Flatten`` / ``Reshape`` to (N, -1): the (N, C) of
    GlobalAvgPool2D; alone, the (N, C, 1, 1) of ``AdaptiveAvgPool2D(1)``."""
    reader.attributes(node, {})
    following = reader.nodes[reader.position] if reader.position < len(reader.nodes) else None
    if following is None or following.op_type not in ("Flatten", "Reshape"):
        # (N, C, 1, 1) kept, as in a squeeze-and-excitation gate
        reader.add_layer(node, AdaptiveAvgPool2D(1))
        return
    if reader.shape is not None:
        if len(reader.shape) != 3:
            raise reader.fail(node, f"input of per-sample shape {reader.shape}", "(C, H, W) input")
        reader.shape = (reader.shape[0], 1, 1)
    reader.position += 1
    (import_flatten if following.op_type == "Flatten" else import_reshape)(
        reader, following
    )  # checks it
    reader.layers[-1] = GlobalAvgPool2D()  # the Flatten of (C, 1, 1) is the pool's (N, C) already


def import_global_max_pool(reader: Reader, node: Any) -> None:
    """``GlobalMaxPool``: the (N, C, 1, 1) of ``AdaptiveMaxPool2D(1)``."""
    reader.attributes(node, {})
    reader.add_layer(node, AdaptiveMaxPool2D(1))


def import_pad(reader: Reader, node: Any) -> None:
    """``Pad`` of the two spatial axes of (N, C, H, W) with a constant: a ``ZeroPad2D`` or a
    ``ConstantPad2D``, folded into a following ``Conv`` or ``AveragePool`` where that computes the
    same numbers (:func:`.graph.fold_zero_pad`)."""
    if reader.opset < 11:  # pads and value were attributes
        attrs = reader.attributes(node, {"mode": "constant", "pads": None, "value": 0.0})
        pads, value = np.asarray(attrs["pads"] or [], np.int64), np.float64(attrs["value"])
        axes = None
    else:
        attrs = reader.attributes(node, {"mode": "constant"})
        pads = reader.constant(node, 1, "pads")
        given = reader.constant(node, 2, "constant_value", required=False)
        value = np.float64(0.0) if given is None or given.size == 0 else given.reshape(-1)[0]
        axes = reader.constant(node, 3, "axes", required=False)
    if attrs["mode"] != "constant":
        raise reader.fail(node, f"mode {attrs['mode']!r}", "mode 'constant'")
    rank = 4 if reader.shape is None else len(reader.shape) + 1
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes.reshape(-1)]
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if len(pads) != 2 * len(axes) or rank != 4:
        raise reader.fail(node, f"pads {pads} for axes {axes} of a rank-{rank} tensor",
                          "4-D (N, C, H, W) input, 2 pads per axis")
    begin = dict(zip(axes, pads[:len(axes)]))
    end = dict(zip(axes, pads[len(axes):]))
    if any(begin.get(a, 0) or end.get(a, 0) for a in (0, 1)) or min(pads) < 0:
        raise reader.fail(node, f"pads {pads} (axes {axes})",
                          "pads of at least 0 on the spatial axes (H, W) only")
    if not np.isfinite(value):
        raise reader.fail(node, f"constant_value {float(value)}", "a finite constant value")
    sides = [begin.get(3, 0), end.get(3, 0), begin.get(2, 0), end.get(2, 0)]  # PyTorch's order
    layer = ZeroPad2D(sides) if float(value) == 0.0 else ConstantPad2D(sides, float(value))
    reader.add_layer(node, layer)


def import_activation(cls: type) -> Callable:
    def import_activation(reader: Reader, node: Any) -> None:
        reader.attributes(node, {})
        reader.add_layer(node, cls())

    return import_activation


def import_softmax(reader: Reader, node: Any) -> None:
    default = -1 if reader.opset >= 13 else 1
    axis = reader.attributes(node, {"axis": default})["axis"]
    rank = None if reader.shape is None else len(reader.shape) + 1
    if rank is not None and axis < 0:
        axis += rank
    # before opset 13, Softmax flattened every axis from `axis` on: the same as the engine's only
    # in 2-D
    if axis == 1 and (reader.opset >= 13 or rank == 2):
        reader.add_layer(node, Softmax())
        return
    raise reader.fail(
        node,
        f"axis {axis} (input rank {rank or 'unknown'}, opset {reader.opset})",
        "a softmax over axis 1, the classes",
    )


def import_flatten(reader: Reader, node: Any, order: str = "C") -> None:
    axis = reader.attributes(node, {"axis": 1})["axis"]
    if axis < 0 and reader.shape is not None:
        axis += len(reader.shape) + 1
    if axis != 1:
        raise reader.fail(node, f"axis {axis}", "axis 1: (N, ...) -> (N, -1)")
    reader.add_layer(node, Flatten(order))


def import_reshape(reader: Reader, node: Any, order: str = "C") -> None:
    if reader.attributes(node, {"allowzero": 0})["allowzero"] != 0:
        raise reader.fail(node, "allowzero 1", "allowzero 0")
    target = [int(v) for v in np.asarray(reader.constant(node, 1, "shape")).reshape(-1)]
    features = None if reader.shape is None else int(np.prod(reader.shape))
    if len(target) == 2 and (
        target[1] == -1
        and target[0] >= 0
        or target[0] in (-1, 0)
        and features is not None
        and target[1] == features
    ):
        reader.add_layer(node, Flatten(order))
        return
    raise reader.fail(
        node,
        f"shape {target} (features per sample: {features or 'unknown'})",
        "a reshape to (N, -1): shape [0, -1], [N, -1] or [-1, features]",
    )


def import_transpose(reader: Reader, node: Any) -> None:
    perm = reader.attributes(node, {"perm": None})["perm"]
    following = reader.nodes[reader.position] if reader.position < len(reader.nodes) else None
    if (
        list(perm or []) == [0, 1, 3, 2]
        and following is not None
        and following.op_type in ("Flatten", "Reshape")
    ):
        reader.position += (
            1  # Transpose + Flatten: Flatten(order="F"), the column stacking of Eq. 8.26
        )
        (import_flatten if following.op_type == "Flatten" else import_reshape)(
            reader, following, "F"
        )
        return
    raise reader.fail(
        node,
        f"perm {perm}" + ("" if following is None else f" followed by {following.op_type}"),
        "perm [0, 1, 3, 2] right before Flatten / Reshape to (N, -1) (Flatten order 'F')",
    )


def _dense(reader: Reader, node: Any, weight: np.ndarray, bias: np.ndarray | None) -> None:
    """A Dense layer from a weight (out, in) and an optional bias of out values."""
    dtype = _float_dtype(reader, node, weight, "weight")
    out_features, in_features = weight.shape
    if bias is not None and bias.size != out_features and bias.size != 1:
        raise reader.fail(
            node,
            f"bias of shape {bias.shape} for {out_features} outputs",
            f"a bias of {out_features} values",
        )
    layer = Dense(in_features, out_features, bias=bias is not None, dtype=dtype)
    arrays = {"weight": weight}
    if bias is not None:
        arrays["bias"] = np.broadcast_to(bias.reshape(-1), (out_features,))
    reader.add_layer(node, load_into(layer, **arrays))


def import_gemm(reader: Reader, node: Any) -> None:
    attrs = reader.attributes(node, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
    if attrs["transA"] != 0:
        raise reader.fail(node, "transA 1", "transA 0 (the input as (N, features))")
    weight = reader.constant(node, 1, "weight")
    if weight.ndim != 2:
        raise reader.fail(node, f"its weight has shape {weight.shape}", "a 2-D weight")
    weight = (weight if attrs["transB"] else weight.T) * weight.dtype.type(attrs["alpha"])
    bias = reader.constant(node, 2, "bias", required=False)
    if bias is not None:
        bias = bias * bias.dtype.type(attrs["beta"])
    _dense(reader, node, weight, bias)


def import_matmul(reader: Reader, node: Any) -> None:
    reader.attributes(node, {})
    weight = reader.constant(node, 1, "weight")
    if weight.ndim != 2:
        raise reader.fail(node, f"its weight has shape {weight.shape}", "a 2-D weight (in, out)")
    fused = reader.fuse("Add")
    _dense(
        reader, node if fused is None else fused[0], weight.T, None if fused is None else fused[1]
    )


def import_clip(reader: Reader, node: Any) -> None:
    """``Clip`` with constant bounds 0 and 6 is ReLU6 (min and max are inputs from opset 11,
    attributes before)."""
    attrs = reader.attributes(node, {"min": None, "max": None})
    low, high = attrs["min"], attrs["max"]
    if reader.opset >= 11:
        low = reader.constant(node, 1, "min", required=False)
        high = reader.constant(node, 2, "max", required=False)
    bounds = [None if v is None else float(np.asarray(v).reshape(-1)[0]) for v in (low, high)]
    if bounds != [0.0, 6.0]:
        raise reader.fail(node, f"Clip bounds {bounds}", "Clip(0, 6), a ReLU6")
    reader.add_layer(node, ReLU6())


def import_hard_sigmoid(reader: Reader, node: Any) -> None:
    attrs = reader.attributes(node, {"alpha": 0.2, "beta": 0.5})
    alpha, beta = float(attrs["alpha"]), float(attrs["beta"])
    if not (np.isclose(alpha, 1 / 6, rtol=1e-6) and np.isclose(beta, 0.5, rtol=1e-6)):
        raise reader.fail(
            node, f"alpha {alpha:g} and beta {beta:g}", "alpha 1/6 and beta 1/2 (PyTorch's)"
        )
    reader.add_layer(node, HardSigmoid())


def import_leaky_relu(reader: Reader, node: Any) -> None:
    alpha = _float32_value(reader.attributes(node, {"alpha": 0.01})["alpha"])
    try:
        layer = LeakyReLU(alpha)
    except ValueError as exc:
        raise reader.fail(node, str(exc), "alpha > 0") from None
    reader.add_layer(node, layer)


def import_dropout(reader: Reader, node: Any) -> None:
    attrs = reader.attributes(node, {"seed": 0, "ratio": 0.5, "is_test": 0})
    ratio = reader.constant(node, 1, "ratio", required=False)
    training = reader.constant(node, 2, "training_mode", required=False)
    if training is not None and bool(np.asarray(training).reshape(-1)[0]):
        raise reader.fail(
            node, "training_mode true (dropout at inference)", "training_mode false or absent"
        )
    p = float(np.asarray(ratio).reshape(-1)[0]) if ratio is not None else float(attrs["ratio"])
    try:
        layer = Dropout(p)
    except ValueError as exc:
        raise reader.fail(node, str(exc), "a ratio in [0, 1)") from None
    reader.add_layer(node, layer)


def import_identity(reader: Reader, node: Any) -> None:
    reader.attributes(node, {})  # nothing to compute: no layer
