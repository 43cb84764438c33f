"""``InferenceSession``: a trained network frozen for serving, planned once and run many times, as
an onnxruntime ``InferenceSession`` is made once from a model file.

``Sequential.predict`` serves a network that may still change: before every call it compares each
Conv2D -> BatchNorm2D pair it folded with the pair's current parameters and running statistics (a
copy of their bytes, six arrays a pair), so that a parameter changed in place, by an optimizer or
by hand, is never served stale. At batch 1 that check is 4-26% of the latency (measured
2026-12-04, AMD EPYC, alternated in one process: vgg-bn 0.74 -> 0.70 ms, ResNet-20 2.06 -> 1.83,
MobileNetV2 x0.5, 52 pairs, 3.30 -> 2.43). A session is made from a private copy of the network
(its config and state dict, as a model file would rebuild it), which nothing else can change: its
pairs are folded once, at its first run, its shapes checked once for its input shape, and each
``run`` only checks the input and runs the program compiled for its batch size (``program.py``:
each step bound once to its plan, weights and batch slices). Training the original network
afterwards does not change the session: make a new one to serve the new parameters.

    session = InferenceSession(model)          # input shape: the model's, or input_shape=(C, H, W)
    outputs = session.run(images)              # = model.predict(images)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .containers import leaves
from .layers import LAYERS
from .model import Sequential
from .planning import folds_frozen
from .program import compile_stack
from .shapes import as_float_array, check_int, finite_scans_skipped, refuse_raw_integers
from .threads import engine_blas

__all__ = ["InferenceSession"]

# programs kept, one per batch size (``run``'s last batch is usually smaller than the others)
_PROGRAMS_KEPT = 4


def _private_copy(model: Sequential) -> Sequential:
    """A new network with ``model``'s structure, parameters and buffers (nothing shared), rebuilt
    from its config and state dict; TypeError if a layer cannot be rebuilt that way."""
    owner = "InferenceSession"
    layers = [layer for _, layer in leaves(model)]
    custom = {type(layer).__name__: type(layer) for layer in layers
              if LAYERS.get(type(layer).__name__) is not type(layer)}
    try:
        copy = type(model).from_config(model.config(), custom_layers=custom, source=owner)
    except TypeError as exc:
        raise TypeError(f"{owner}: the network cannot be copied from its config: {exc} (a "
                        f"session serves networks that can be saved)") from None
    rebuilt = [layer for _, layer in leaves(copy)]
    if [type(layer) for layer in rebuilt] != [type(layer) for layer in layers]:
        names = sorted({type(layer).__name__ for layer in layers})
        raise TypeError(f"{owner}: the network's config does not rebuild the same classes (two "
                        f"classes of one name among {names}?)")
    copy.load_state_dict(model.state_dict())
    return copy


class InferenceSession:
    """A frozen copy of ``model`` (a ``Sequential``) for inference on inputs of one per-sample
    shape: ``input_shape`` (e.g. (3, 32, 32)), by default the model's own (``model.input_shape``).

    ``run(x)`` gives ``model.predict(x)``'s outputs (equal to rounding: the same steps and folds)
    without ``predict``'s per-call checks for changed parameters. Made once: the shapes of every
    layer are checked for ``input_shape`` when the session is made, its Conv2D -> BatchNorm2D
    pairs folded and its Winograd weights transformed at its first run; since those transforms
    are made once, its 3x3 convolutions take Winograd at any batch size, where ``predict`` keeps
    im2col below 512 output pixels a map (``conv.choose``'s ``frozen``; ~1e-5 of the outputs'
    scale apart). One ``run`` at a time (as ``predict``).
    """

    def __init__(self, model: Sequential, input_shape: Iterable[int] | None = None) -> None:
        owner = "InferenceSession"
        if not isinstance(model, Sequential):
            raise TypeError(f"{owner}: model must be a Sequential, got {type(model).__name__}")
        input_shape = model.input_shape_or(input_shape, owner)
        try:
            shape = tuple(int(s) for s in input_shape)
        except (TypeError, ValueError):
            raise TypeError(f"{owner}: input_shape must be a sequence of ints, got "
                            f"{input_shape!r}") from None
        if not shape or min(shape) < 1:
            raise ValueError(f"{owner}: input_shape must be positive sizes, got {input_shape!r}")
        self._net = _private_copy(model)
        self.output_shape: tuple[int, ...] = self._net.check_shapes(shape)[-1]
        self.input_shape: tuple[int, ...] = shape
        self._programs: dict[int, Callable[[np.ndarray], np.ndarray]] = {}  # batch size -> program

    def __repr__(self) -> str:
        return (f"InferenceSession(input_shape={self.input_shape}, output_shape="
                f"{self.output_shape}, {len(self._net)} layers)")

    def run(self, x: Any, batch_size: int = 256) -> np.ndarray:
        """The network's outputs (N, *output_shape) for ``x`` (N, *input_shape), in inference
        mode, ``batch_size`` samples at a time. ``x``: floats (integers only as 0/1), finite;
        ValueError naming the shape expected otherwise."""
        owner = "InferenceSession.run"
        batch_size = check_int(batch_size, "batch_size", owner, minimum=1)
        refuse_raw_integers(x, owner)
        x = as_float_array(x, "x", owner)
        if x.shape[1:] != self.input_shape:
            expected = ", ".join(str(s) for s in self.input_shape)
            raise ValueError(f"{owner}: x must have shape (N, {expected}) (the session's input "
                             f"shape), got {x.shape}")
        with engine_blas(), folds_frozen(), finite_scans_skipped():
            if x.shape[0] <= batch_size:  # one batch: no generator, no concatenation
                return self._net._batch_output(x, owner, self._run_batch)
            parts = list(self._net._outputs(x, batch_size, owner, infer=self._run_batch))
        return np.concatenate(parts)

    def _run_batch(self, x: np.ndarray) -> np.ndarray:
        """The program for ``x``'s batch size (``program.compile_stack``, compiled at its first
        use) on ``x``; ``_outputs`` runs a small batch's maps in the calling thread
        (``threads.batch_maps``)."""
        n = x.shape[0]
        program = self._programs.get(n)
        if program is None:
            if len(self._programs) >= _PROGRAMS_KEPT:
                del self._programs[next(iter(self._programs))]  # the oldest batch size
            program = self._programs[n] = compile_stack(self._net, x.shape)[0]
        return program(x)
