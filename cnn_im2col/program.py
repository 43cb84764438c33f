"""A frozen network compiled for one input shape: a session's program.

``Sequential.infer`` finds its way on every call: each stack looks up its steps and folds, each
Residual checks its shapes, each step its plan, each convolution its geometry, batch slices and
bias columns, through five or six calls a layer. On a batch of one that was about half of
ResNet-20's latency (measured 2026-12-04, Intel Xeon: 0.55-0.65 of 1.23-1.5 ms over the kernels'
~0.6). A program makes all of that once, for one input shape (N, ...), and keeps closures that
only call kernels, as an onnxruntime session runs the graph it planned when it was made:

- each step of ``planning.inference_plan``, its Conv2D -> BatchNorm2D pairs folded once;
- each convolution's strategy for the frozen plan (``Conv2D.plan(shape, frozen=True)``), its
  bias, for Winograd the whole ``winograd.ForwardPlan`` (its weight transformed once), for the
  tiled strategy its operands' layout (``tiled.tile_layout``, made once);
- ResNet's and MobileNetV2's Residual blocks: the body's program with the shortcut joined in its
  last convolution's slices (``inference_blocks.infer_with_skip``'s join), the shortcut's
  program; ResNet's identity and downsampling blocks a batch slice at a time through all their
  convolutions (``_two_winograd_by_slices``, ``_projection_by_slices``);
- MobileNetV2's fused block: its kernels' weights and geometry (``InvertedResidual.kernel_plan``);
  consecutive blocks by rows on channels-last maps (alone or in identity Residuals) that slice the
  batch alike run as one chain, each batch slice through all of them in one map
  (``inverted_residual.planned_chain``: one hand-off for the chain, not one a block; measured
  2026-12-06, Intel Xeon, MobileNetV2's session, alternated in one process: 0.978x at batch 64,
  four chains of 2-5 blocks, 0.966x at batch 1, one chain of 17);
- a MobileNet's fused head (``ConvGlobalPool``): its weight as the rows' operand, made once.

Any other step runs its own ``infer`` (a user's layer, a pool, Dense, a MobileNetV2 block whose
layers take other strategies), as does a first step that checks its input: the
program is ``Sequential.infer`` with the lookups taken out, the same kernels on the same plans,
so it gives the same numbers (``tests/test_program.py`` compares them bit for bit). Nothing is
compared with its sources again: only for a network nothing can change, a session's private copy
(``session.py``), run inside ``planning.folds_frozen``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import threads as _threads
from .activations import add_into
from .blocks import (
    ConvReLU,
    ConvReLUPool,
    LayerStep,
    ResidualReLU,
    frozen_tile_layout,
    frozen_transform,
    pools_2x2,
)
from .containers import Residual, infer_child
from .conv import direct, inverted_residual, pointwise, sample_split, tiled, winograd
from .inference_blocks import (
    ConvActivation,
    ConvGlobalPool,
    InferenceStep,
    InvertedResidual,
    add_skip,
    infer_step,
    infer_with_skip,
    joins_in_slices,
)
from .layers import Conv2D
from .model import Sequential
from .pooling import max_pool2d_values_into
from .shapes import WindowGeometry

# x (N, ...) -> output; with a join, (x, skip) -> output + skip (then ReLU)
Run = Callable[..., np.ndarray]
ConvRun = Callable[[np.ndarray, Any], np.ndarray]  # (x, then) -> output


def compile_stack(stack: Sequential, shape: tuple[int, ...], first: bool = True,
                  join: bool = False, relu: bool = False, x_last: bool = False,
                  out_last: bool = False) -> tuple[Run, tuple[int, ...]]:
    """``stack.infer`` for inputs of ``shape`` (N, ...) as one closure, and its output's shape.
    ``first``: the stack is where input enters: a first step that is not compiled checks it, as
    ``infer_step`` does (a compiled convolution converts it to its dtype, as its check would).
    ``join``: the closure takes (x, skip) and adds skip, a Residual's shortcut of the output's
    shape, then ReLU if ``relu`` (``Sequential.infer``'s ``skip`` and ``relu``). ``x_last``: x
    comes channels-last (N, H, W, C); ``out_last``: the output goes so (with ``join``, the
    shortcut's layout: an identity shortcut is the input, ``out_last == x_last``).

    Maps pass channels-last from a step that can write them so to one that can read them
    (``_layouts``): Winograd convolutions, MobileNetV2's blocks run by rows, identity Residuals
    around them (whose output keeps their input's layout) and stacks of these. Their kernels work
    channels-innermost, so that these maps spare a gather and a scatter each.

    A program where input enters (``first``) plans its single sample's convolutions split in two
    threads' halves only if it has ``sample_split.MIN_LAYERS`` of them (``sample_split.planning``).
    """
    if first:
        with sample_split.planning():
            return _compile_stack(stack, shape, first, join, relu, x_last, out_last)
    return _compile_stack(stack, shape, first, join, relu, x_last, out_last)


def _compile_stack(stack: Sequential, shape: tuple[int, ...], first: bool, join: bool,
                   relu: bool, x_last: bool, out_last: bool) -> tuple[Run, tuple[int, ...]]:
    steps, folds = stack.inference_steps()
    for fold in folds:
        fold.refresh()  # inside folds_frozen: made once, never compared again
    shapes = _shapes(steps, shape)
    layouts = _layouts(steps, shapes, first, x_last, out_last)
    links = [_chain_link(step, shapes[i], layouts[i])
             if not (first and i == 0) and not (join and i == len(steps) - 1) else None
             for i, step in enumerate(steps)]
    runs: list[Run] = []
    i = 0
    while i < len(steps):
        end = _chain_end(links, i)
        if end - i >= 2:
            runs.append(inverted_residual.planned_chain(links[i:end]))
            i = end
            continue
        step, (step_x_last, step_out_last) = steps[i], layouts[i]
        run, _ = _compile_step(step, shapes[i], first and i == 0, join and i == len(steps) - 1,
                               relu, step_x_last, step_out_last)
        if step_x_last and not step_out_last and _keeps_layout(step, shapes[i]):
            run = _to_nchw(run)  # its output is in its input's layout, which the next cannot take
        runs.append(run)
        i += 1
    *head, last_run = runs

    def run_stack(x: np.ndarray, *skip: np.ndarray) -> np.ndarray:
        for run in head:
            x = run(x)
        return last_run(x, *skip)

    return run_stack, shapes[-1]


def _chain_link(step: InferenceStep, shape: tuple[int, ...], layout: tuple[bool, bool]
                ) -> inverted_residual.ChainLink | None:
    """``step`` as a link of ``inverted_residual.planned_chain``: MobileNetV2's block run by
    rows, channels-last in and out, alone or in an identity Residual (no ReLU after it); else
    None."""
    if layout != (True, True):
        return None
    residual = type(step.layer) is Residual if isinstance(step, LayerStep) else False
    if residual:
        block = step.layer
        if block.shortcut is not None or type(block.body) is not Sequential:
            return None
        inner, folds = block.body.inference_steps()
        if len(inner) != 1:
            return None
        for fold in folds:
            fold.refresh()  # as the body's own program would (inside folds_frozen: once)
        step = inner[0]
    if not _ir_by_rows(step, shape):
        return None
    kernels = step.kernel_plan(shape)
    return None if kernels is None else inverted_residual.ChainLink(*kernels, shape, residual)


def _chain_end(links: list[inverted_residual.ChainLink | None], start: int) -> int:
    """The end of the run of links from ``start`` that slice the batch alike (``start`` itself
    where there is no link there)."""
    if links[start] is None:
        return start
    slices = inverted_residual.link_slices(links[start])
    end = start + 1
    while (end < len(links) and links[end] is not None
           and inverted_residual.link_slices(links[end]) == slices):
        end += 1
    return end


def _shapes(steps: list[InferenceStep], shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The input shape of each step and, last, the output's."""
    shapes = [shape]
    for step in steps:
        shapes.append(_output_shape(step, shapes[-1]))
    return shapes


def _layouts(steps: list[InferenceStep], shapes: list[tuple[int, ...]], first: bool, x_last: bool,
             out_last: bool) -> list[tuple[bool, bool]]:
    """Per step of a stack: whether its input and its output are channels-last. The stack's
    input and its last step's output are as asked; between two steps, channels-last where the
    one can write it and the next read it."""
    layouts, layout = [], x_last
    for i, step in enumerate(steps):
        if i == len(steps) - 1:
            out = out_last
        else:
            out = (_gives_last(step, shapes[i], first and i == 0, layout)
                   and _takes_last(steps[i + 1], shapes[i + 1]))
        layouts.append((layout, out))
        layout = out
    return layouts


def _to_nchw(run: Run) -> Run:
    """``run`` with its channels-last output (N, H, W, C) copied to NCHW."""
    return lambda x: np.ascontiguousarray(run(x).transpose(0, 3, 1, 2))


def _compile_step(step: InferenceStep, shape: tuple[int, ...], first: bool, join: bool, relu: bool,
                  x_last: bool = False, out_last: bool = False) -> tuple[Run, tuple[int, ...]]:
    """``step`` on inputs of ``shape`` (N, ...) as a closure, and its output's shape. ``x_last``
    / ``out_last``: its input comes / its output goes channels-last (only where ``_takes_last`` /
    ``_gives_last`` allowed it)."""
    out_shape = _output_shape(step, shape)
    layer = step.layer if isinstance(step, LayerStep) else None
    kernels = (step.kernel_plan(shape) if isinstance(step, InvertedResidual) and not first
               else None)
    if kernels is not None and not (join and relu):  # MobileNetV2's block: no ReLU after a join
        run = _inverted_residual(step, shape, *kernels, x_last, out_last)
        return (run if join else lambda x: run(x, None)), out_shape
    if join:
        if type(layer) is Conv2D and not first:
            return _conv_with_skip(layer, shape, out_shape, relu, x_last, out_last), out_shape
        return (lambda x, skip: infer_with_skip(step, x, skip, relu, first)), out_shape
    if isinstance(step, ConvReLU):
        conv = _conv_run(step.conv, shape, relu=True, x_last=x_last, out_last=out_last)
        return (lambda x: conv(x, None)), out_shape
    if type(layer) is Conv2D:
        conv = _conv_run(layer, shape, relu=False, x_last=x_last, out_last=out_last)
        return (lambda x: conv(x, None)), out_shape
    if isinstance(step, ConvActivation):
        conv = _conv_run(step.conv, shape, relu=False, x_last=x_last, out_last=out_last)
        return (lambda x: conv(x, step.activate)), out_shape
    if isinstance(step, ConvReLUPool):
        return _conv_relu_pool(step, shape, out_shape, x_last), out_shape
    if isinstance(step, ConvGlobalPool) and not first and step.fused(shape, frozen=True):
        return _conv_global_pool(step, x_last), out_shape
    if isinstance(step, ResidualReLU):
        return _residual(step.residual, shape, True, x_last, out_last), out_shape
    if type(layer) is Residual:
        return _residual(layer, shape, False, x_last, out_last), out_shape
    if type(layer) is Sequential:
        return compile_stack(layer, shape, first=False, x_last=x_last, out_last=out_last)[0], \
            out_shape
    return (lambda x: infer_step(step, x, first)), out_shape


def _step_conv(step: InferenceStep) -> Conv2D | None:
    """The convolution a step starts with, where the program compiles it (``_compile_step``)."""
    if isinstance(step, (ConvReLU, ConvActivation, ConvReLUPool)):
        return step.conv
    if isinstance(step, LayerStep) and type(step.layer) is Conv2D:
        return step.layer
    return None


def _winograd(conv: Conv2D | None, shape: tuple[int, ...]) -> bool:
    return conv is not None and conv.plan(shape, frozen=True).strategy is winograd


def _writes_last(conv: Conv2D | None, shape: tuple[int, ...]) -> bool:
    """Whether ``conv`` can write its output channels-last here: on Winograd, or in tiles
    (``_tiled``)."""
    return _winograd(conv, shape) or _tiled(conv, shape)


def _tiled(conv: Conv2D | None, shape: tuple[int, ...]) -> bool:
    """Whether ``conv`` can run on the tiled kernel here, reading or writing channels-last maps:
    on the tiled strategy, or on the direct one (whose sums the tiles give bit for bit), its bias
    tied or none."""
    if conv is None or conv.plan(shape, frozen=True).strategy not in (tiled, direct):
        return False
    bias = conv.params.get("bias")
    return bias is None or bias.ndim == 1


def _ir_by_rows(step: InferenceStep, shape: tuple[int, ...]) -> bool:
    """Whether ``step`` is MobileNetV2's block on its fused kernels, run by rows for this shape."""
    if not isinstance(step, InvertedResidual):
        return False
    g = step.kernel_geometry(shape)
    return g is not None and inverted_residual.by_rows(shape, g)


def _projection(step: InferenceStep) -> Residual | None:
    """The Residual of ``step`` (then ReLU or not) if its shortcut is a stack (ResNet's
    projection: a strided 1x1 convolution and its folded batch norm) and its body a stack that
    joins the shortcut in its last step: the program can run both with their input and their
    output channels-last, each as its steps allow (``_takes_last``, ``_gives_last``)."""
    residual = (step.residual if isinstance(step, ResidualReLU)
                else step.layer if isinstance(step, LayerStep) else None)
    if (type(residual) is not Residual or type(residual.shortcut) is not Sequential
            or type(residual.body) is not Sequential
            or not getattr(residual.body, "infer_takes_skip", False)):
        return None
    return residual


def _stack_gives_last(stack: Sequential, shape: tuple[int, ...], x_last: bool) -> bool:
    """Whether the last step of ``stack`` (not a program's first) can write channels-last."""
    steps = stack.inference_steps()[0]
    shapes = _shapes(steps, shape)
    into_last = _layouts(steps, shapes, False, x_last, False)[-1][0]
    return _gives_last(steps[-1], shapes[-2], False, into_last)


def _takes_last(step: InferenceStep, shape: tuple[int, ...]) -> bool:
    """Whether ``step`` (not a stack's first) can read its input channels-last: a Winograd
    convolution (``winograd.plan_forward``), a block by rows (``inverted_residual.forward``), an
    identity Residual around them (``_keeps_layout``), a fused head
    (``pointwise.forward_pooled``), or a stack whose first step can."""
    if isinstance(step, LayerStep) and type(step.layer) is Sequential:
        steps = step.layer.inference_steps()[0]
        return _takes_last(steps[0], shape)
    residual = _projection(step)
    if residual is not None:
        return all(_takes_last(stack.inference_steps()[0][0], shape)
                   for stack in (residual.body, residual.shortcut))
    conv = _step_conv(step)
    return (_winograd(conv, shape) or _tiled(conv, shape) or _ir_by_rows(step, shape)
            or _keeps_layout(step, shape)
            or (isinstance(step, ConvGlobalPool) and step.fused(shape, frozen=True)))


def _gives_last(step: InferenceStep, shape: tuple[int, ...], first: bool, x_last: bool) -> bool:
    """Whether ``step`` can write its output channels-last: a Winograd or tiled (``_tiled``)
    convolution alone or with its ReLU or its activation (applied in place, in any layout; a pool
    works on the NCHW output), a compiled block by rows, an identity Residual whose input comes
    channels-last, a projection Residual whose body and shortcut can, or a stack whose last step
    can."""
    if _keeps_layout(step, shape):
        return x_last
    if isinstance(step, LayerStep) and type(step.layer) is Sequential:
        return _stack_gives_last(step.layer, shape, x_last)  # (compiled not first)
    residual = _projection(step)
    if residual is not None:
        return all(_stack_gives_last(stack, shape, x_last)
                   for stack in (residual.body, residual.shortcut))
    return ((isinstance(step, (ConvReLU, ConvActivation, LayerStep))
             and _writes_last(_step_conv(step), shape))
            or (not first and _ir_by_rows(step, shape)))


def _keeps_layout(step: InferenceStep, shape: tuple[int, ...]) -> bool:
    """Whether ``step`` is a Residual (then ReLU or not) with an identity shortcut whose body can
    run on channels-last input and join the shortcut in that layout: its output is in its input's
    layout, whichever that is."""
    relu = isinstance(step, ResidualReLU)
    residual = step.residual if relu else step.layer if isinstance(step, LayerStep) else None
    if (type(residual) is not Residual or residual.shortcut is not None
            or type(residual.body) is not Sequential):
        return False
    steps = residual.body.inference_steps()[0]
    before_last = shape
    for inner in steps[:-1]:
        before_last = _output_shape(inner, before_last)
    joined = steps[-1]
    joins_last = ((isinstance(joined, LayerStep) and type(joined.layer) is Conv2D
                   and _winograd(joined.layer, before_last))
                  or (not relu and _ir_by_rows(joined, before_last)))
    return joins_last and _takes_last(steps[0], shape)


def _output_shape(step: InferenceStep, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of ``step``'s output for an input of ``shape`` (N, ...)."""
    for layer in (step.layer,) if isinstance(step, LayerStep) else step.layers:
        shape = (shape[0], *layer.output_shape(shape[1:]))
    return shape


def _conv_run(conv: Conv2D, shape: tuple[int, ...], relu: bool, x_last: bool = False,
              out_last: bool = False, pool: bool = False) -> ConvRun:
    """``conv`` (ReLU fused if ``relu``) on inputs of ``shape``, its frozen plan's strategy, as
    ``blocks.conv_forward`` runs it in a session: (x, then) -> output; Winograd's also takes
    ``skip``, a shortcut its output transform adds before the ReLU (``winograd.run_forward``), and
    its input may be channels-last (``x_last``) and its output (``out_last``): Winograd's and the
    tiled kernel's (which also runs the direct strategy's convolutions that read or write maps so:
    the same bits), and its output max-pooled 2x2 in its output transform (``pool``: Winograd's,
    ``ConvReLUPool``'s)."""
    plan = conv.plan(shape, frozen=True)
    weight, bias, g = conv.params["weight"], conv.conv_bias(), plan.geometry
    dtype = weight.dtype
    if plan.strategy is winograd:
        p = _winograd_plan(conv, shape, relu, x_last, out_last, pool)

        def run_winograd(x: np.ndarray, then: Any, skip: np.ndarray | None = None) -> np.ndarray:
            return winograd.run_forward(p, np.ascontiguousarray(x, dtype=dtype), then=then,
                                        skip=skip)[0]

        return run_winograd
    strategy, groups, owner = plan.strategy, conv.groups, repr(conv)
    if strategy is direct and (x_last or out_last):
        strategy = tiled  # (``_tiled`` held: the bias is tied or none)
    extra = ({"layout": frozen_tile_layout(conv, g, x_last, shape[2:]), "x_last": x_last,
              "out_last": out_last} if strategy is tiled else {})
    if strategy is tiled and out_last and _tiled(conv, shape):
        halves = _tiles(extra["layout"], g, relu, True, shape)
        if halves is not None:  # one sample: in two threads' halves

            def run_halves(x: np.ndarray, then: Any) -> np.ndarray:
                out = np.empty((1, g.oh, g.ow, weight.shape[0]), dtype=dtype)
                halves(np.ascontiguousarray(x, dtype=dtype), out.reshape(1, g.oh * g.ow, -1))
                if then is not None:
                    then(slice(0, 1), out)
                return out

            return run_halves

    def run(x: np.ndarray, then: Any) -> np.ndarray:
        return strategy.forward(np.ascontiguousarray(x, dtype=dtype), weight, bias, g,
                                groups=groups, owner=owner, keep=False, relu=relu, then=then,
                                **extra)[0]

    return run


def _tiles(layout: tiled.TileLayout, g: WindowGeometry, relu: bool, channels_last: bool,
           shape: tuple[int, ...]) -> Callable[[np.ndarray, np.ndarray], None] | None:
    """``tiled.run_tiles`` with ``layout`` as ``run(x, out)`` for one sample in two threads'
    halves (``sample_split.tiled``; the whole, its twin, where another thread holds the
    mailbox), or None where the split does not apply (``sample_split.tiled_plan``)."""
    ts = sample_split.tiled_plan(layout, shape, channels_last)
    if ts is None:
        return None

    def run(x: np.ndarray, out: np.ndarray) -> None:
        if not sample_split.tiled(ts, x, layout, g.top, g.left, relu, out):
            tiled.run_tiles(x, layout, g, relu, out, channels_last=channels_last)

    return run


def _tiles_or_whole(layout: tiled.TileLayout, g: WindowGeometry, relu: bool,
                    channels_last: bool, shape: tuple[int, ...]
                    ) -> Callable[[np.ndarray, np.ndarray], None]:
    """``_tiles``, or ``tiled.run_tiles`` whole where the split does not apply."""
    halves = _tiles(layout, g, relu, channels_last, shape)
    if halves is not None:
        return halves
    return lambda x, out: tiled.run_tiles(x, layout, g, relu, out, channels_last=channels_last)


def _inverted_residual(step: InvertedResidual, shape: tuple[int, ...],
                       weights: inverted_residual.BlockWeights, g: WindowGeometry, x_last: bool,
                       out_last: bool) -> Callable[[np.ndarray, np.ndarray | None], np.ndarray]:
    """MobileNetV2's block as ``run(x, skip)``: where its batch is one slice by rows, planned once
    (``inverted_residual.planned_forward``: its tables and slicing decided once, the same bits),
    else ``run_kernels`` (which also takes an input or shortcut of another dtype or layout)."""
    planned = inverted_residual.planned_forward(shape, weights, g, x_last, out_last)
    dtype = weights.depthwise.dtype

    def run(x: np.ndarray, skip: np.ndarray | None) -> np.ndarray:
        if planned is not None and x.dtype == dtype and x.flags.c_contiguous and (
                skip is None or (skip.dtype == dtype and skip.flags.c_contiguous)):
            return planned(x, skip)
        return step.run_kernels(x, weights, g, skip, x_last, out_last)

    return run


def _conv_with_skip(conv: Conv2D, shape: tuple[int, ...], out_shape: tuple[int, ...],
                    relu: bool, x_last: bool = False, out_last: bool = False) -> Run:
    """A stack's last Conv2D with a Residual's shortcut joined in each slice as it is written
    (``inference_blocks.infer_with_skip``): by Winograd's output transform itself (the same bits
    as the join after it, one pass over the output fewer), else right after the slice is written;
    or after the convolution where the shortcut is not in the output's layout."""
    run = _conv_run(conv, shape, relu=False, x_last=x_last, out_last=out_last)
    dtype = conv.params["weight"].dtype
    joined = (_conv_run(conv, shape, relu=relu, x_last=x_last, out_last=out_last)
              if conv.plan(shape, frozen=True).strategy is winograd else None)
    if out_last:  # the shortcut comes in the output's layout (Winograd's only)
        n, k, oh, ow = out_shape
        out_shape = (n, oh, ow, k)

    def conv_with_skip(x: np.ndarray, skip: np.ndarray) -> np.ndarray:
        if joins_in_slices(skip, out_shape, dtype):
            if joined is not None:
                return joined(x, None, skip)
            return run(x, lambda s, y: add_into(y, skip[s], relu))
        return add_skip(run(x, None), skip, relu)

    return conv_with_skip


def _conv_relu_pool(step: ConvReLUPool, shape: tuple[int, ...], out_shape: tuple[int, ...],
                    x_last: bool = False) -> Run:
    """``ConvReLUPool.infer``'s two ways, chosen once (``x_last``: Winograd's input
    channels-last)."""
    conv = step.conv
    plan = conv.plan(shape, frozen=True)
    g = plan.geometry
    pool_g = step.pool.plan((shape[0], conv.out_channels, g.oh, g.ow))
    weight, bias = conv.params["weight"], conv.conv_bias()
    if plan.strategy is direct and pools_2x2(pool_g, g):
        return lambda x: direct.forward_relu_pool2(
            np.ascontiguousarray(x, dtype=weight.dtype), weight, bias, g)
    if plan.strategy is winograd and pools_2x2(pool_g, g) and (bias is None or bias.ndim == 1):
        pooled_run = _conv_run(conv, shape, relu=True, x_last=x_last, pool=True)
        return lambda x: pooled_run(x, None)
    run = _conv_run(conv, shape, relu=True, x_last=x_last)

    def conv_relu_pool(x: np.ndarray) -> np.ndarray:
        pooled = np.empty(out_shape, dtype=weight.dtype)
        run(x, lambda s, y: max_pool2d_values_into(y, pool_g, False, pooled[s]))
        return pooled

    return conv_relu_pool


def _conv_global_pool(step: ConvGlobalPool, x_last: bool) -> Run:
    """A fused head on its frozen plan, as ``ConvGlobalPool.run`` runs it in a session: its
    weight's rows operand made once; ``x_last``: x comes channels-last (N, H, W, C)."""
    conv = step.conv
    weight_t, bias, dtype = step.rows_weight(True), conv.conv_bias(), conv.params["weight"].dtype
    activation = step.activation

    def run(x: np.ndarray) -> np.ndarray:
        return pointwise.forward_pooled(np.ascontiguousarray(x, dtype=dtype), weight_t, bias,
                                        activation, x_last)

    return run


def _residual(residual: Residual, shape: tuple[int, ...], relu: bool, x_last: bool = False,
              out_last: bool = False) -> Run:
    """A Residual (then ReLU if ``relu``): a Sequential body's program joins the shortcut in its
    last step (``Residual.infer``); any other body runs the Residual's own ``infer``. ``x_last``:
    x comes channels-last; the output is in x's layout (an identity shortcut: ``_keeps_layout``
    held) or, for a projection (``_projection``), channels-last if ``out_last``, the shortcut's
    program writing it in that layout for the body to join."""
    if not getattr(residual.body, "infer_takes_skip", False):
        return lambda x: residual.infer(x, relu=relu)
    if residual.shortcut is None:
        out_last = x_last
    body = compile_stack(residual.body, shape, first=False, join=True, relu=relu,
                         x_last=x_last, out_last=out_last)[0]
    if residual.shortcut is not None:
        shortcut = _child(residual.shortcut, shape, x_last, out_last)
        projected = _projection_by_slices(residual, shape, relu, x_last, out_last)
        if projected is not None:
            return lambda x: projected(x, lambda x: body(x, shortcut(x)))
        return lambda x: body(x, shortcut(x))
    by_slices = _two_winograd_by_slices(residual, shape, relu, x_last)
    if by_slices is not None:
        return lambda x: by_slices(x, body)
    return lambda x: body(x, x)


def _two_winograd_by_slices(residual: Residual, shape: tuple[int, ...], relu: bool,
                            x_last: bool) -> Callable[[np.ndarray, Run], np.ndarray] | None:
    """ResNet's basic block (an identity Residual around Conv2D -> ReLU -> Conv2D, both Winograd,
    the output of the input's shape, both convolutions sliced alike) run a batch slice at a time:
    each slice's first convolution writes a slice-sized map that the second reads while it is in
    the core's cache, and the second adds the slice's shortcut as it writes (the body's program
    passes that map through memory whole: at batch 64 on 32x32 maps of 16 channels, 4 MB written
    and read back per block). The same kernels on the same slices in the same order, so the same
    bits as the body's program, which still runs an input it cannot take (another dtype, not
    C-contiguous). None where the block is not of this kind. ``x_last``: the input, the shortcut
    and the output channels-last; the map between the two convolutions is channels-last either
    way (as the program passes it)."""
    steps = residual.body.inference_steps()[0]  # its folds refreshed by the body's program
    if (len(steps) != 2 or not isinstance(steps[0], ConvReLU)
            or not (isinstance(steps[1], LayerStep) and type(steps[1].layer) is Conv2D)):
        return None
    first, second = steps[0].conv, steps[1].layer
    mid_shape = _output_shape(steps[0], shape)
    if (not _winograd(first, shape) or not _winograd(second, mid_shape)
            or _output_shape(steps[1], mid_shape) != shape):
        return None
    dtype = first.params["weight"].dtype
    if second.params["weight"].dtype != dtype:
        return None
    p1 = _winograd_plan(first, shape, relu=True, x_last=x_last, out_last=True)
    p2 = _winograd_plan(second, mid_shape, relu=relu, x_last=True, out_last=x_last)
    if p1.slices != p2.slices:
        return None  # (a block whose middle has other channels) the products' rows would differ
        # in number from the body's program, and OpenBLAS may then round them otherwise
    slices = p1.slices
    _, oh, ow, k = p1.out_shape  # the map between them, channels-last

    def by_slices(x: np.ndarray, body: Run) -> np.ndarray:
        if x.dtype != dtype or not x.flags.c_contiguous:
            return body(x, x)
        out = np.empty(p2.out_shape, dtype=dtype)

        def block(s: slice) -> None:
            mid = np.empty((s.stop - s.start, oh, ow, k), dtype=dtype)
            winograd.slice_forward(x[s], p1, mid, keep=False)
            winograd.slice_forward(mid, p2, out[s], skip=x[s], keep=False)

        _threads.parallel_map(block, slices)
        return out

    return by_slices


def _projection_by_slices(residual: Residual, shape: tuple[int, ...], relu: bool, x_last: bool,
                          out_last: bool) -> Callable[[np.ndarray, Run], np.ndarray] | None:
    """ResNet's downsampling block (a Residual around a strided Conv2D -> ReLU in tiles, then a
    Winograd Conv2D, with a 1x1 Conv2D in tiles as its shortcut) run a batch slice at a time, as
    ``_two_winograd_by_slices`` runs an identity block: each slice's strided convolution and its
    shortcut write slice-sized maps that the Winograd convolution reads and adds while they are in
    the core's cache. Whole, both go through memory: at batch 64 on ResNet-20's first downsampling,
    2 MiB each, and writing 2 MiB that is not in cache costs about 220 us on one thread here. The
    tiles' sums do not depend on the slices, and the Winograd convolution keeps its own, so the
    same bits as the block's program (``whole``, which still runs an input it cannot take: another
    dtype, not C-contiguous). None where the block is not of this kind. ``x_last``: the input
    channels-last; ``out_last``: the output and so the shortcut channels-last."""
    if type(residual.shortcut) is not Sequential:
        return None
    steps = residual.body.inference_steps()[0]  # its folds refreshed by the body's program
    short = residual.shortcut.inference_steps()[0]
    if (len(steps) != 2 or not isinstance(steps[0], ConvReLU)
            or not (isinstance(steps[1], LayerStep) and type(steps[1].layer) is Conv2D)
            or len(short) != 1 or not isinstance(short[0], LayerStep)
            or type(short[0].layer) is not Conv2D):
        return None
    first, second, projection = steps[0].conv, steps[1].layer, short[0].layer
    mid_shape = _output_shape(steps[0], shape)
    out_shape = _output_shape(steps[1], mid_shape)
    if (not _tiled(first, shape) or not _tiled(projection, shape)
            or not _winograd(second, mid_shape) or _output_shape(short[0], shape) != out_shape):
        return None
    dtype = first.params["weight"].dtype
    if any(conv.params["weight"].dtype != dtype for conv in (second, projection)):
        return None
    g1, gs = (conv.plan(shape, frozen=True).geometry for conv in (first, projection))
    layout1 = frozen_tile_layout(first, g1, x_last, shape[2:])
    layout_s = frozen_tile_layout(projection, gs, x_last, shape[2:])
    p2 = _winograd_plan(second, mid_shape, relu=relu, x_last=True, out_last=out_last)
    _, k, oh, ow = mid_shape
    _, o, ho, wo = out_shape
    # (one sample: each convolution in two threads' halves)
    tiles1 = _tiles_or_whole(layout1, g1, True, True, shape)
    tiles_s = _tiles_or_whole(layout_s, gs, False, out_last, shape)

    def by_slices(x: np.ndarray, whole: Run) -> np.ndarray:
        if x.dtype != dtype or not x.flags.c_contiguous:
            return whole(x)
        out = np.empty(p2.out_shape, dtype=dtype)

        def block(s: slice) -> None:
            n = s.stop - s.start
            mid = np.empty((n, oh, ow, k), dtype=dtype)  # channels-last, as p2 reads it
            tiles1(x[s], mid.reshape(n, oh * ow, k))
            skip = np.empty((n, ho, wo, o) if out_last else (n, o, ho, wo), dtype=dtype)
            tiles_s(x[s], skip.reshape((n, ho * wo, o) if out_last else (n, o, ho * wo)))
            winograd.slice_forward(mid, p2, out[s], skip=skip, keep=False)

        _threads.parallel_map(block, p2.slices)
        return out

    return by_slices


def _winograd_plan(conv: Conv2D, shape: tuple[int, ...], relu: bool, x_last: bool,
                   out_last: bool, pool: bool = False) -> winograd.ForwardPlan:
    """``conv``'s Winograd plan for inputs of ``shape`` in a session: its weight transformed once
    (``frozen_transform``), the layouts and the pool as ``winograd.plan_forward`` takes them, a
    slice's forward fused from 2 samples on (``winograd.fuses_inference``), a single sample's
    split between two threads where it can be (``sample_split.py``)."""
    weight = conv.params["weight"]
    return winograd.plan_forward(shape, weight, conv.conv_bias(),
                                 conv.plan(shape, frozen=True).geometry, groups=conv.groups,
                                 relu=relu, transformed=frozen_transform(conv, weight),
                                 x_last=x_last, out_last=out_last, pool=pool,
                                 fuse=winograd.fuses_inference(shape[0]), split=True)


def _child(child: Any, shape: tuple[int, ...], x_last: bool = False, out_last: bool = False
           ) -> Run:
    """A Residual's shortcut: a Sequential's program (its input and output channels-last where
    asked: ``_projection`` allowed it), else its own inference (``infer_child``: a 1x1 Conv2D
    alone, or a user's layer)."""
    if type(child) is Sequential:
        return compile_stack(child, shape, first=False, x_last=x_last, out_last=out_last)[0]
    return lambda x: infer_child(child, x)
