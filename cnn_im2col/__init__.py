"""cnn-im2col: a convolutional neural network engine in NumPy, convolutions lowered to GEMM via
im2col.

The public API, re-exported here::

    from cnn_im2col import Sequential, Conv2D, MaxPool2D, Flatten, Dense, ReLU, SGD
    from cnn_im2col import SoftmaxCrossEntropy, predict_images

Submodules: ``layers``, ``containers`` (Residual, Concat, Gate), ``functional`` (stateless
forward/backward), ``im2col``, ``signal`` (scipy-compatible correlate2d / convolve2d), ``losses``,
``optim``, ``init``, ``model``, ``session`` (a network frozen for serving), ``training`` (the loop
behind ``fit``, callbacks), ``checkpoint``, ``augment``, ``distributed`` (data parallelism over
MPI), ``datasets``, ``architectures`` (the named networks of the command), ``reference`` (the slow
scipy oracles), ``gradcheck``, ``threads``, ``allocator`` (the C heap's thresholds).
"""

# First: importing it sizes the pool and limits NumPy's BLAS before anything computes; and the C
# heap keeps the pages of the engine's large arrays from step to step (allocator.py, which it
# imports).
from .threads import get_num_threads, set_num_threads

# isort: split
from . import onnx  # the ONNX functions; the onnx package itself is imported on first use
from ._version import __version__
from .augment import RandomShift
from .callbacks import Callback, EarlyStopping, ReduceLROnPlateau
from .containers import Concat, Gate, Residual
from .datasets import iterate_minibatches, load_idx_dataset, load_mnist, read_idx, write_idx
from .exceptions import TrainingDiverged, TrainingInterrupted
from .image_predictions import predict_images
from .init import manual_seed
from .layers import (
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
    HardSwish,
    Identity,
    LeakyReLU,
    MaxPool2D,
    Normalization,
    ReLU,
    ReLU6,
    Sigmoid,
    Softmax,
    Tanh,
    ZeroPad2D,
)
from .losses import MeanSquaredError, SoftmaxCrossEntropy
from .model import Sequential
from .optim import SGD, Adam, CosineAnnealingLR, StepLR
from .reports import plot_history
from .session import InferenceSession
from .shapes import NonFiniteError

__all__ = [
    "SGD",
    "AdaptiveAvgPool2D",
    "AdaptiveMaxPool2D",
    "Adam",
    "AvgPool2D",
    "Callback",
    "BatchNorm2D",
    "Concat",
    "ConstantPad2D",
    "Conv2D",
    "CosineAnnealingLR",
    "Dense",
    "Dropout",
    "EarlyStopping",
    "Flatten",
    "Gate",
    "GlobalAvgPool2D",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyReLU",
    "MaxPool2D",
    "MeanSquaredError",
    "Normalization",
    "NonFiniteError",
    "RandomShift",
    "ReduceLROnPlateau",
    "ReLU",
    "ReLU6",
    "Residual",
    "InferenceSession",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "SoftmaxCrossEntropy",
    "StepLR",
    "Tanh",
    "TrainingDiverged",
    "TrainingInterrupted",
    "ZeroPad2D",
    "__version__",
    "get_num_threads",
    "iterate_minibatches",
    "load_idx_dataset",
    "load_mnist",
    "manual_seed",
    "onnx",
    "plot_history",
    "predict_images",
    "read_idx",
    "set_num_threads",
    "write_idx",
]
