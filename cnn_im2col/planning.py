"""Which steps a stack runs: the fused blocks of ``blocks.py`` chosen over its layers, and at
inference the Conv2D -> BatchNorm2D pairs folded into one convolution.

:func:`plan` walks a stack's layers left to right and greedily makes each fused block it can
(exact classes only), a ``LayerStep`` of any other layer: the steps ``Sequential.forward`` and
``backward`` run.

At inference without a backward to follow (``predict``, ``evaluate``), :func:`inference_plan`
first folds each Conv2D -> BatchNorm2D pair (running statistics) into one convolution, as
onnxruntime and PyTorch's ``fuse_conv_bn_eval`` do: weight * s and (bias - mean) * s + beta, with
s = gamma / sqrt(var + eps), so a following ReLU (and MaxPool2D) fuses into its epilogue too; and
it leaves out each Dropout, the identity at inference (as an exported ONNX graph has none). Each
:class:`Fold` is refreshed before each use (the pair's parameters may have been trained since),
except inside :func:`folds_frozen` (a session's private network), where it is made once.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from .blocks import (
    FROZEN,
    BatchNormReLU,
    ConvReLU,
    ConvReLUPool,
    LayerStep,
    ReLUPool,
    ResidualReLU,
)
from .containers import Residual
from .inference_blocks import (
    ConvActivation,
    ConvGlobalPool,
    DenseActivation,
    GlobalPoolDense,
    InferenceStep,
    InvertedResidual,
)
from .layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    ReLU6,
)
from .threads import LocalFlag


def foldable(conv: Any, norm: Any) -> bool:
    """Whether ``conv -> norm`` folds into one convolution at inference: exact classes, running
    statistics in use, and a tied bias or none (a folded convolution always has a tied bias)."""
    return (type(conv) is Conv2D and type(norm) is BatchNorm2D and norm.track_running_stats
            and conv.bias_mode != "untied" and norm.num_features == conv.out_channels)


def folds_frozen() -> contextlib.AbstractContextManager:
    """Inside, a fold already made is used as it is, not compared with its sources again: for a
    network nothing else can change (``session.InferenceSession``'s private copy). The steps keep
    what they make from its weights too (``blocks.FROZEN``, the flag this sets for the thread)."""
    return LocalFlag(FROZEN, "on", True)


class Fold:
    """A Conv2D -> BatchNorm2D pair and the convolution that stands for both at inference."""

    def __init__(self, conv: Conv2D, norm: BatchNorm2D, folded: Conv2D) -> None:
        self.conv, self.norm, self.folded = conv, norm, folded
        self._folded_from: list[bytes] | None = None  # the bytes of the arrays last folded

    def _sources(self) -> list[np.ndarray]:
        """Every array the fold is computed from, and eps."""
        arrays = [*self.conv.params.values(), *self.norm.params.values(),
                  self.norm.buffers["running_mean"], self.norm.buffers["running_var"]]
        return [*arrays, np.array(self.norm.eps)]

    def refresh(self) -> None:
        """Write the pair's current parameters and running statistics into ``folded`` (in place,
        so its plans stay): weight * s and (bias - mean) * s + beta, s = gamma / sqrt(var + eps),
        computed in float64. Skipped when none of them changed since the last fold (they are
        compared with copies of their bytes: a parameter changed in place, by an optimizer or by
        hand, refolds; comparing bytes costs a tenth of ``np.array_equal`` on small arrays).
        Inside ``folds_frozen``, only a fold never made is made."""
        if self._folded_from is not None and getattr(FROZEN, "on", False):
            return
        sources = [a.tobytes() for a in self._sources()]
        if sources == self._folded_from:
            return
        running = self.norm.buffers
        if (running["running_var"] < 0).any():  # as BatchNorm2D itself refuses it
            raise ValueError(f"{self.norm!r}: var must be >= 0, got min "
                             f"{running['running_var'].min()}")
        scale = 1.0 / np.sqrt(running["running_var"].astype(np.float64) + self.norm.eps)
        shift = -running["running_mean"].astype(np.float64) * scale
        if "weight" in self.norm.params:
            gamma = self.norm.params["weight"].astype(np.float64)
            scale, shift = scale * gamma, shift * gamma + self.norm.params["bias"]
        bias = self.conv.params.get("bias")
        if bias is not None:
            shift = shift + bias.astype(np.float64) * scale
        weight = self.folded.params["weight"]
        np.multiply(self.conv.params["weight"], scale[:, None, None, None], out=weight,
                    casting="unsafe")
        self.folded.params["bias"][...] = shift
        self._folded_from = sources


def inference_plan(layers: list[Any]) -> tuple[list[InferenceStep], list[Fold]]:
    """The steps of a stack for inference with no backward to follow, and the folds whose
    ``refresh`` must run before each use (the parameters may have been trained since)."""
    folds: list[Fold] = []
    inference_layers: list[Any] = []
    i = 0
    while i < len(layers):
        if type(layers[i]) is Dropout and (inference_layers or i + 1 < len(layers)):
            i += 1  # the identity at inference (kept only where it is the whole stack)
            continue
        if i + 1 < len(layers) and foldable(layers[i], layers[i + 1]):
            conv = layers[i]
            config = {**conv.config(), "bias": "tied", "seed": 0}
            folds.append(Fold(conv, layers[i + 1], Conv2D.from_config(config)))
            inference_layers.append(folds[-1].folded)
            i += 2
        else:
            inference_layers.append(layers[i])
            i += 1
    return plan(inference_layers, inference=True), folds


def _inverted_residual_length(layers: list[Any], i: int) -> int:
    """How many layers from ``layers[i]`` make MobileNetV2's block (exact classes): 5 with the
    expansion (Conv2D 1x1, ReLU6, Conv2D depthwise, ReLU6, Conv2D 1x1), 3 without; else 0."""
    for count in (5, 3):
        block = layers[i : i + count]
        if [type(layer) for layer in block] != [Conv2D, ReLU6] * (count // 2) + [Conv2D]:
            continue
        convs = block[::2]
        middle = convs[-2]
        if (middle.groups == middle.in_channels == middle.out_channels > 1
                and all(c.groups == 1 and tuple(c.kernel_size) == (1, 1)
                        for c in convs if c is not middle)):
            return count
    return 0


def _pools_globally(layers: list[Any], i: int) -> int:
    """How many layers from the Conv2D ``layers[i]`` make ``ConvGlobalPool`` (exact classes): 3
    with an activation it fuses, 2 without; 0 if the convolution is not 1x1 (stride 1, dilation 1,
    groups 1) or no GlobalAvgPool2D follows. (A padded one runs the layers one by one:
    ``ConvGlobalPool.fused``.)"""
    conv = layers[i]
    if not (tuple(conv.kernel_size) == (1, 1) and tuple(conv.stride) == (1, 1)
            and tuple(conv.dilation) == (1, 1) and conv.groups == 1):
        return 0
    after = [type(layer) for layer in layers[i + 1 : i + 3]]
    if after[:1] == [GlobalAvgPool2D]:
        return 2
    if len(after) == 2 and after[0] in ConvGlobalPool.FUSED and after[1] is GlobalAvgPool2D:
        return 3
    return 0


def plan(layers: list[Any], inference: bool = False) -> list[InferenceStep]:
    """The steps of a stack, left to right, greedily fusing the blocks listed in ``blocks.py``'s
    docstring (exact classes only); ``ConvActivation``, ``DenseActivation``, ``ConvGlobalPool``,
    ``GlobalPoolDense`` and ``InvertedResidual`` only for ``inference`` (no backward)."""
    steps: list[InferenceStep] = []
    i = 0
    while i < len(layers):
        block = _inverted_residual_length(layers, i) if inference else 0
        if block:
            steps.append(InvertedResidual(tuple(layers[i : i + block]), i))
            i += block
            continue
        here = type(layers[i])
        after = type(layers[i + 1]) if i + 1 < len(layers) else None
        third = type(layers[i + 2]) if i + 2 < len(layers) else None
        if third is MaxPool2D and layers[i + 2].dilation != (1, 1):
            third = None  # a dilated pool runs on its own (the fused slices use adjacent windows)
        if here is Conv2D and after is ReLU and third is MaxPool2D:
            steps.append(ConvReLUPool(*layers[i : i + 3], i))
        elif inference and here is Conv2D and (head := _pools_globally(layers, i)):
            steps.append(ConvGlobalPool(layers[i : i + head], i))
        elif here is Conv2D and after is ReLU:
            steps.append(ConvReLU(*layers[i : i + 2], i))
        elif here is ReLU and after is MaxPool2D:
            steps.append(ReLUPool(*layers[i : i + 2], i))
        elif here is BatchNorm2D and after is ReLU:
            steps.append(BatchNormReLU(*layers[i : i + 2], i))
        elif here is Residual and after is ReLU:
            steps.append(ResidualReLU(*layers[i : i + 2], i))
        elif inference and here is Conv2D and after in ConvActivation.FUSED:
            steps.append(ConvActivation(*layers[i : i + 2], i))
        elif inference and here is GlobalAvgPool2D and after is Dense:
            steps.append(GlobalPoolDense(layers[i : i + 2], i))
        elif inference and here is GlobalAvgPool2D and after is Flatten and third is Dense:
            steps.append(GlobalPoolDense(layers[i : i + 3], i))
        elif inference and here is Dense and after in DenseActivation.FUSED:
            steps.append(DenseActivation(*layers[i : i + 2], i))
        else:
            steps.append(LayerStep(layers[i], i))
        i = steps[-1].last + 1
    return steps
