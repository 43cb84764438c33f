"""Stateless forward/backward pairs, as ``torch.nn.functional``: one import for all of them.

Each ``*_forward`` validates its arguments, computes the output and returns ``(out, cache)``;
the matching ``*_backward(dout, cache)`` returns the gradients. Layers (``layers/``) hold the
state; these functions hold the mathematics. They live by concern: convolution in ``conv/``
(one module per strategy), pooling in ``pooling.py``, batch normalisation in
``normalization.py``, activations in ``activations.py``; ``gemm`` in ``arrays.py``.
"""

from __future__ import annotations

from .activations import (
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    softmax,
    softmax_backward,
    tanh,
    tanh_backward,
)
from .arrays import gemm
from .conv import ALGORITHMS, conv2d_backward, conv2d_forward, conv2d_output_shape
from .normalization import batch_norm2d_backward, batch_norm2d_forward
from .pooling import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    global_avg_pool2d_backward,
    global_avg_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)

__all__ = [
    "ALGORITHMS",
    "avg_pool2d_backward",
    "avg_pool2d_forward",
    "batch_norm2d_backward",
    "batch_norm2d_forward",
    "conv2d_backward",
    "conv2d_forward",
    "conv2d_output_shape",
    "gemm",
    "global_avg_pool2d_backward",
    "global_avg_pool2d_forward",
    "max_pool2d_backward",
    "max_pool2d_forward",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "softmax_backward",
    "tanh",
    "tanh_backward",
]
