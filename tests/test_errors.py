"""The bad-input battery (issue 6, part 1): every public entry point, given a bad argument, raises
``ValueError`` / ``TypeError`` (a missing file: ``FileNotFoundError``) whose message names who is
complaining (the layer, function or argument), the value received and what is allowed.

- ``CASES``: a table ``id -> (callable, exception, who, got, allowed)``; the three regexes must all
  be found in the message (in any order). Each row is one distinct bad input.
- Hypothesis generators draw a random invalid argument for a random constructor, random invalid
  inputs for random layers, random bad labels, and random conv / pool geometries (kernels larger
  than the padded input included), and check the exception type and that the message names the
  argument (never a Numba typing error, an IndexError from a kernel, or silent garbage).
- The flip side: integer and float16 images are accepted and converted; C-, Fortran-ordered and
  non-contiguous arrays give the same results.
"""

from __future__ import annotations

import gzip
import math
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col import datasets, init, losses, optim, threads
from cnn_im2col import functional as F
from cnn_im2col import im2col as im2col_module
from cnn_im2col import signal as S
from cnn_im2col.gradcheck import check_layer
from cnn_im2col.layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from cnn_im2col.augment import RandomShift
from cnn_im2col.model import Sequential
from cnn_im2col.shapes import MAX_SIZE, NonFiniteError, conv_output_size

# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------

RNG = np.random.default_rng(0)
X = RNG.random((2, 3, 6, 6)).astype(np.float32)  # a batch for the (3, *, *) layers
XM = RNG.random((5, 1, 6, 6)).astype(np.float32)  # a batch for the small model
YM = np.array([0, 1, 2, 0, 1])
LOGITS = RNG.standard_normal((3, 4))


def with_value(array, value, index=(0,)):
    """A copy of a float ``array`` with ``value`` at ``index`` (e.g. one NaN among finite numbers)."""
    out = np.array(array, copy=True)
    out[index] = value
    return out


def conv(**kw):
    return Conv2D(3, 4, 3, seed=0, **kw)


def after_forward(layer, x=X, training=False):
    layer.forward(x, training=training)
    return layer


def model():
    """(1, 6, 6) -> 3 classes."""
    return Sequential([Conv2D(1, 2, 3, seed=0), ReLU(), Flatten(), Dense(2 * 4 * 4, 3, seed=1)])


def fit(**change):
    args = {"x": XM, "y": YM, "epochs": 1, "batch_size": 2, "optimizer": optim.SGD(0.1),
            "loss": losses.SoftmaxCrossEntropy(), "progress": False, "log": None}
    args.update(change)
    return model().fit(**args)


def state(**change):
    base = {"lr": 0.1, "step": 0, "momentum": 0.0, "nesterov": 0, "weight_decay": 0.0}
    base.update(change)
    return base


def sgd_step(params, grads):
    return optim.SGD(0.1).step(params, grads)


P3 = {"w": np.zeros(3, np.float32)}
G3 = {"w": np.zeros(3, np.float32)}


class Payload:
    """A pickle that would create ``marker`` if it were ever unpickled with the standard unpickler."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# file factories: each takes the test's tmp_path and returns the path of a bad file


def npz_with(tmp: Path, name: str, **arrays) -> Path:
    path = tmp / name
    with open(path, "wb") as handle:  # np.savez(path) would append ".npz" to other names
        np.savez(handle, **arrays)
    return path


def good_model_arrays(tmp: Path) -> dict:
    model().save(tmp / "good.npz")
    with np.load(tmp / "good.npz") as npz:
        return {key: npz[key] for key in npz.files}


def model_file_with(tmp: Path, name: str, **changes) -> Path:
    arrays = good_model_arrays(tmp)
    arrays.update(changes)
    return npz_with(tmp, name, **arrays)


def checkpoint_file(tmp: Path) -> Path:
    m, opt = model(), optim.SGD(0.1, momentum=0.9)
    m.fit(XM, YM, epochs=1, batch_size=5, optimizer=opt, loss=losses.SoftmaxCrossEntropy(),
          progress=False, log=None, checkpoint=tmp / "ckpt.npz")
    return tmp / "ckpt.npz"


def checkpoint_with_object_optim_array(tmp: Path) -> Path:
    path = checkpoint_file(tmp)
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    key = next(k for k in arrays if k.startswith("optim:"))
    arrays[key] = np.array([Payload(tmp / "pwned")] * arrays[key].size, dtype=object)
    return npz_with(tmp, "ckpt-object.npz", **arrays)


def zip_with(directory: Path, name: str, **members: bytes) -> Path:
    """A zip file holding ``members`` as they are (e.g. pickles where .npy files belong)."""
    directory.mkdir(exist_ok=True)
    with zipfile.ZipFile(directory / name, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return directory / name


def pickle_file(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.write_bytes(pickle.dumps(Payload(tmp / "pwned")))
    return path


def idx_dir(tmp: Path, **replace) -> Path:
    """A tiny MNIST-format directory; ``replace`` maps a file name to raw bytes written instead."""
    d = tmp / "idx"
    d.mkdir(exist_ok=True)
    arrays = (np.zeros((3, 28, 28), np.uint8), np.array([1, 2, 3], np.uint8),
              np.zeros((2, 28, 28), np.uint8), np.array([4, 5], np.uint8))
    for name, array in zip(datasets.IDX_NAMES, arrays):
        datasets.write_idx(d / name, array)
    for name, data in replace.items():
        (d / datasets.IDX_NAMES[0]).unlink()
        (d / name).write_bytes(data)
    return d


def truncated_gz(tmp: Path) -> Path:
    path = tmp / "train-images-idx3-ubyte.gz"
    datasets.write_idx(path, np.arange(2000, dtype=np.uint8).reshape(2, 1000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def idx_header_disagrees(tmp: Path) -> Path:
    path = tmp / "train-labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 1]) + (10).to_bytes(4, "big") + bytes(7))  # 10 declared, 7 given
    return path


def mnist_cache(tmp: Path, **changes) -> Path:
    """A directory whose mnist.npz is a well-formed tiny MNIST cache, with ``changes`` applied."""
    d = tmp / "cache"
    d.mkdir(exist_ok=True)
    arrays = {"x_train": np.zeros((3, 28, 28), np.uint8), "y_train": np.array([1, 2, 3], np.uint8),
              "x_test": np.zeros((2, 28, 28), np.uint8), "y_test": np.array([4, 5], np.uint8)}
    arrays.update(changes)
    npz_with(d, "mnist.npz", **arrays)
    return d


def mnist_cache_pickle(tmp: Path, zipped: bool) -> Path:
    d = tmp / "cache"
    d.mkdir(exist_ok=True)
    data = pickle.dumps(Payload(tmp / "pwned"))
    (d / "mnist.npz").write_bytes(gzip.compress(data) if zipped else data)
    return d


def load_mnist(directory):
    return datasets.load_mnist(directory, progress=False, log=lambda message: None)


# ------------------------------------------------------------------------------------------
# the table: id -> (callable(tmp), exception, who, got, allowed)
# ------------------------------------------------------------------------------------------

C2 = r"Conv2D\(3, 4, 3, seed=0\)"
FINITE = (r"NaN or Inf", r"finite")
INT1 = r"an int >= 1"
INT0 = r"an int >= 0"
PAIR1 = r"an int >= 1 or a pair of them"
PAIR0 = r"an int >= 0 or a pair of them"
REAL = r"real numeric array \(bool, int or float\)"

CASES = {
    # ---- constructors: Conv2D
    "Conv2D in_channels=0": (lambda t: Conv2D(0, 4, 3), ValueError, r"Conv2D: in_channels", r"got 0", INT1),
    "Conv2D in_channels=2.0": (lambda t: Conv2D(2.0, 4, 3), TypeError, r"Conv2D: in_channels", r"got 2\.0", INT1),
    "Conv2D in_channels=True": (lambda t: Conv2D(True, 4, 3), TypeError, r"Conv2D: in_channels", r"got True", INT1),
    "Conv2D in_channels=None": (lambda t: Conv2D(None, 4, 3), TypeError, r"Conv2D: in_channels", r"got None", INT1),
    "Conv2D out_channels=-3": (lambda t: Conv2D(1, -3, 3), ValueError, r"Conv2D: out_channels", r"got -3", INT1),
    "Conv2D kernel_size=0": (lambda t: Conv2D(1, 4, 0), ValueError, r"Conv2D: kernel_size", r"got 0", PAIR1),
    "Conv2D kernel_size=(3,)": (lambda t: Conv2D(1, 4, (3,)), ValueError, r"Conv2D: kernel_size", r"got \(3,\)", PAIR1),
    "Conv2D kernel_size=(3, 3, 3)": (lambda t: Conv2D(1, 4, (3, 3, 3)), ValueError, r"Conv2D: kernel_size",
                                     r"got \(3, 3, 3\)", PAIR1),
    "Conv2D kernel_size=2.5": (lambda t: Conv2D(1, 4, 2.5), TypeError, r"Conv2D: kernel_size", r"got 2\.5", PAIR1),
    "Conv2D kernel_size='3'": (lambda t: Conv2D(1, 4, "3"), TypeError, r"Conv2D: kernel_size", r"got '3'", PAIR1),
    "Conv2D kernel_size=(True, 3)": (lambda t: Conv2D(1, 4, (True, 3)), TypeError, r"Conv2D: kernel_size",
                                     r"got \(True, 3\)", PAIR1),
    "Conv2D kernel_size=2**64": (lambda t: Conv2D(1, 4, 2**64), ValueError, r"Conv2D: kernel_size",
                                 str(2**64), rf"at most {MAX_SIZE}"),
    "Conv2D stride=0": (lambda t: Conv2D(1, 4, 3, stride=0), ValueError, r"Conv2D: stride", r"got 0", PAIR1),
    "Conv2D stride=-1": (lambda t: Conv2D(1, 4, 3, stride=-1), ValueError, r"Conv2D: stride", r"got -1", PAIR1),
    "Conv2D stride=(1, 0)": (lambda t: Conv2D(1, 4, 3, stride=(1, 0)), ValueError, r"Conv2D: stride",
                             r"got \(1, 0\)", PAIR1),
    "Conv2D stride=1.0": (lambda t: Conv2D(1, 4, 3, stride=1.0), TypeError, r"Conv2D: stride", r"got 1\.0", PAIR1),
    "Conv2D stride=2**64": (lambda t: Conv2D(1, 4, 3, stride=2**64), ValueError, r"Conv2D: stride",
                            str(2**64), rf"at most {MAX_SIZE}"),
    "Conv2D dilation=0": (lambda t: Conv2D(1, 4, 3, dilation=0), ValueError, r"Conv2D: dilation", r"got 0", PAIR1),
    "Conv2D dilation=(1, -2)": (lambda t: Conv2D(1, 4, 3, dilation=(1, -2)), ValueError, r"Conv2D: dilation",
                                r"got \(1, -2\)", PAIR1),
    "Conv2D groups=0": (lambda t: Conv2D(2, 4, 3, groups=0), ValueError, r"Conv2D: groups", r"got 0", INT1),
    "Conv2D groups=1.5": (lambda t: Conv2D(2, 4, 3, groups=1.5), TypeError, r"Conv2D: groups", r"got 1\.5", INT1),
    "Conv2D groups not dividing in_channels": (lambda t: Conv2D(3, 6, 3, groups=2), ValueError,
                                               r"Conv2D: groups must divide in_channels", r"groups=2",
                                               r"in_channels=3"),
    "Conv2D groups not dividing out_channels": (lambda t: Conv2D(4, 6, 3, groups=4), ValueError,
                                                r"Conv2D: groups must divide out_channels", r"groups=4",
                                                r"out_channels=6"),
    "Conv2D algorithm unknown": (lambda t: Conv2D(2, 4, 3, algorithm="fft"), ValueError, r"Conv2D: algorithm",
                                 r"got 'fft'", r"\('auto', 'im2col', 'winograd'\)"),
    "Conv2D winograd with stride 2": (lambda t: Conv2D(2, 4, 3, stride=2, algorithm="winograd"), ValueError,
                                      r"Conv2D: algorithm='winograd'", r"stride \(2, 2\)",
                                      r"needs kernel_size 3 or 5, stride 1, dilation 1 and groups 1"),
    "conv2d_forward winograd with a 7x7 kernel": (
        lambda t: F.conv2d_forward(np.ones((1, 2, 9, 9)), np.ones((2, 2, 7, 7)), algorithm="winograd"), ValueError,
        r"conv2d: algorithm='winograd'", r"got kernel \(7, 7\)", r"needs a 3x3 or 5x5 kernel, stride 1, dilation 1"),
    "Conv2D dilated kernel larger than input": (lambda t: Conv2D(1, 1, 3, dilation=3, input_size=6), ValueError,
                                                r"Conv2D", r"dilation \(3, 3\): its span size \(7, 7\)", r"larger than the padded input"),
    "conv2d_forward groups not dividing out channels": (
        lambda t: F.conv2d_forward(np.ones((1, 4, 5, 5)), np.ones((3, 2, 3, 3)), groups=2), ValueError,
        r"conv2d: groups must divide out_channels", r"groups=2", r"out_channels=3"),
    "conv2d_forward wrong channels for groups": (
        lambda t: F.conv2d_forward(np.ones((1, 3, 5, 5)), np.ones((4, 2, 3, 3)), groups=2), ValueError,
        r"conv2d: x must have 4 channels", r"got shape \(1, 3, 5, 5\)", r"\(N, 4, H, W\)"),
    "Conv2D padding=-1": (lambda t: Conv2D(1, 4, 3, padding=-1), ValueError, r"Conv2D: padding", r"got -1", PAIR0),
    "Conv2D padding=(0, -2)": (lambda t: Conv2D(1, 4, 3, padding=(0, -2)), ValueError, r"Conv2D: padding",
                               r"got \(0, -2\)", PAIR0),
    "Conv2D padding=1.5": (lambda t: Conv2D(1, 4, 3, padding=1.5), TypeError, r"Conv2D: padding", r"got 1\.5", PAIR0),
    "Conv2D padding='full'": (lambda t: Conv2D(1, 4, 3, padding="full"), ValueError, r"Conv2D: padding",
                              r"got 'full'", r"one of \('valid', 'same'\)"),
    "Conv2D padding='SAME'": (lambda t: Conv2D(1, 4, 3, padding="SAME"), ValueError, r"Conv2D: padding",
                              r"got 'SAME'", r"one of \('valid', 'same'\)"),
    "Conv2D padding='same' stride=2": (lambda t: Conv2D(1, 4, 3, padding="same", stride=2), ValueError,
                                       r"Conv2D: padding='same'", r"got stride \(2, 2\)", r"needs stride 1"),
    "Conv2D bias='shared'": (lambda t: Conv2D(1, 4, 3, bias="shared"), ValueError, r"Conv2D: bias",
                             r"got 'shared'", r"one of \('tied', 'untied', None\)"),
    "Conv2D bias=True": (lambda t: Conv2D(1, 4, 3, bias=True), ValueError, r"Conv2D: bias", r"got True",
                         r"one of \('tied', 'untied', None\)"),
    "Conv2D untied bias without input_size": (lambda t: Conv2D(1, 4, 3, bias="untied"), ValueError,
                                              r"Conv2D: bias='untied'", r"got input_size=None",
                                              r"needs input_size=\(H, W\)"),
    "Conv2D untied bias, kernel larger than input_size": (
        lambda t: Conv2D(1, 4, 5, bias="untied", input_size=(3, 3)), ValueError, r"Conv2D\(1, 4, 5",
        r"padded input \(3, 3\)", r"must fit inside"),
    "Conv2D input_size=0": (lambda t: Conv2D(1, 4, 3, input_size=0), ValueError, r"Conv2D: input_size",
                            r"got 0", PAIR1),
    "Conv2D input_size=(28, 28.0)": (lambda t: Conv2D(1, 4, 3, input_size=(28, 28.0)), TypeError,
                                     r"Conv2D: input_size", r"got \(28, 28\.0\)", PAIR1),
    "Conv2D dtype=float16": (lambda t: Conv2D(1, 4, 3, dtype="float16"), TypeError, r"Conv2D: dtype",
                             r"got 'float16'", r"float32 or float64"),
    "Conv2D dtype=int": (lambda t: Conv2D(1, 4, 3, dtype=int), TypeError, r"Conv2D: dtype", r"got <class 'int'>",
                         r"float32 or float64"),
    "Conv2D dtype=None": (lambda t: Conv2D(1, 4, 3, dtype=None), TypeError, r"Conv2D: dtype", r"got None",
                          r"float32 or float64"),
    "Conv2D seed=-1": (lambda t: Conv2D(1, 4, 3, seed=-1), ValueError, r"Conv2D: seed", r"got -1", INT0),
    "Conv2D seed=1.5": (lambda t: Conv2D(1, 4, 3, seed=1.5), TypeError, r"Conv2D: seed", r"got 1\.5", INT0),
    # ---- constructors: Dense
    "Dense in_features=0": (lambda t: Dense(0, 3), ValueError, r"Dense: in_features", r"got 0", INT1),
    "Dense out_features=1.5": (lambda t: Dense(3, 1.5), TypeError, r"Dense: out_features", r"got 1\.5", INT1),
    "Dense bias='yes'": (lambda t: Dense(3, 3, bias="yes"), TypeError, r"Dense: bias", r"got 'yes'",
                         r"True or False"),
    "Dense dtype=complex64": (lambda t: Dense(3, 3, dtype=np.complex64), TypeError, r"Dense: dtype", r"complex64",
                              r"float32 or float64"),
    "Dense seed='0'": (lambda t: Dense(3, 3, seed="0"), TypeError, r"Dense: seed", r"got '0'", INT0),
    # ---- constructors: pooling
    "MaxPool2D kernel_size=0": (lambda t: MaxPool2D(0), ValueError, r"MaxPool2D: kernel_size", r"got 0", PAIR1),
    "MaxPool2D kernel_size=True": (lambda t: MaxPool2D(True), TypeError, r"MaxPool2D: kernel_size", r"got True",
                                   PAIR1),
    "MaxPool2D kernel_size=2.0": (lambda t: MaxPool2D(2.0), TypeError, r"MaxPool2D: kernel_size", r"got 2\.0",
                                  PAIR1),
    "MaxPool2D stride=0": (lambda t: MaxPool2D(2, stride=0), ValueError, r"MaxPool2D: stride", r"got 0", PAIR1),
    "MaxPool2D stride=-2": (lambda t: MaxPool2D(2, stride=-2), ValueError, r"MaxPool2D: stride", r"got -2", PAIR1),
    "MaxPool2D stride=2**63": (lambda t: MaxPool2D(2, stride=2**63), ValueError, r"MaxPool2D: stride",
                               str(2**63), rf"at most {MAX_SIZE}"),
    "MaxPool2D padding above half the window": (lambda t: MaxPool2D(3, padding=2), ValueError,
                                                r"MaxPool2D: padding", r"got \(2, 2\)",
                                                r"at most half the window \(1, 1\)"),
    "MaxPool2D padding=-1": (lambda t: MaxPool2D(3, padding=-1), ValueError, r"MaxPool2D: padding", r"got -1",
                             PAIR0),
    "AvgPool2D padding (1, 2) for a 2x2 window": (lambda t: AvgPool2D(2, padding=(1, 2)), ValueError,
                                                  r"AvgPool2D: padding", r"got \(1, 2\)",
                                                  r"at most half the window \(1, 1\)"),
    "AvgPool2D trainable_scale without channels": (lambda t: AvgPool2D(2, trainable_scale=True), ValueError,
                                                   r"AvgPool2D: trainable_scale=True", r"got channels=None",
                                                   r"needs channels="),
    "AvgPool2D trainable_scale='yes'": (lambda t: AvgPool2D(2, trainable_scale="yes"), TypeError,
                                        r"AvgPool2D: trainable_scale", r"got 'yes'", r"True or False"),
    "AvgPool2D channels=0": (lambda t: AvgPool2D(2, channels=0), ValueError, r"AvgPool2D: channels", r"got 0", INT1),
    "AvgPool2D channels=2.5": (lambda t: AvgPool2D(2, channels=2.5), TypeError, r"AvgPool2D: channels",
                               r"got 2\.5", INT1),
    "AvgPool2D dtype='int32'": (lambda t: AvgPool2D(2, dtype="int32"), TypeError, r"AvgPool2D: dtype",
                                r"got 'int32'", r"float32 or float64"),
    # ---- constructors: Flatten, Dropout, RandomShift, Sequential
    "Flatten order='A'": (lambda t: Flatten("A"), ValueError, r"Flatten: order", r"got 'A'", r"one of \('C', 'F'\)"),
    "Flatten order=None": (lambda t: Flatten(None), ValueError, r"Flatten: order", r"got None",
                           r"one of \('C', 'F'\)"),
    "Dropout p=1": (lambda t: Dropout(1.0), ValueError, r"Dropout: p", r"got 1\.0", r"\[0\.0, 1\.0\)"),
    "Dropout p=-0.1": (lambda t: Dropout(-0.1), ValueError, r"Dropout: p", r"got -0\.1", r"\[0\.0, 1\.0\)"),
    "Dropout p=nan": (lambda t: Dropout(math.nan), ValueError, r"Dropout: p", r"got nan", r"finite number in \[0"),
    "Dropout p=inf": (lambda t: Dropout(math.inf), ValueError, r"Dropout: p", r"got inf", r"finite number in \[0"),
    "Dropout p='0.5'": (lambda t: Dropout("0.5"), TypeError, r"Dropout: p", r"got '0\.5'", r"a real number"),
    "Dropout p=True": (lambda t: Dropout(True), TypeError, r"Dropout: p", r"got True", r"a real number"),
    "Dropout seed=True": (lambda t: Dropout(0.5, seed=True), TypeError, r"Dropout: seed", r"got True", INT0),
    "RandomShift max_shift=-1": (lambda t: RandomShift(-1), ValueError, r"RandomShift: max_shift", r"got -1", INT0),
    "RandomShift fill='x'": (lambda t: RandomShift(1, fill="x"), TypeError, r"RandomShift: fill", r"got 'x'",
                             r"a number"),
    "Sequential([])": (lambda t: Sequential([]), ValueError, r"Sequential: layers", r"empty", r"must not be empty"),
    "Sequential('abc')": (lambda t: Sequential("abc"), TypeError, r"Sequential: layers", r"got str",
                          r"a list of layers"),
    "Sequential([Conv2D]) (a class)": (lambda t: Sequential([Conv2D]), TypeError, r"Sequential: layer 0",
                                       r"the class Conv2D", r"layer protocol"),
    "Sequential([3])": (lambda t: Sequential([3]), TypeError, r"Sequential: layer 0", r"got 3", r"layer protocol"),
    # ---- layer forward
    "Conv2D forward 3-D x": (lambda t: conv().forward(X[0]), ValueError, C2 + r": x", r"3-D array of shape \(3, 6, 6\)",
                             r"must be 4-D"),
    "Conv2D forward 5-D x": (lambda t: conv().forward(X[None]), ValueError, C2 + r": x", r"5-D", r"must be 4-D"),
    "Conv2D forward wrong channel count": (lambda t: conv().forward(X[:, :2]), ValueError, C2 + r": x",
                                           r"got shape \(2, 2, 6, 6\)", r"must have 3 channels"),
    "Conv2D forward kernel larger than the input": (lambda t: conv().forward(X[:, :, :2, :2]), ValueError, C2,
                                                    r"padded input \(2, 2\)", r"must fit inside"),
    "Conv2D forward kernel larger than the padded input": (
        lambda t: Conv2D(3, 4, 5, padding=1, seed=0).forward(X[:, :, :2, :2]), ValueError,
        r"Conv2D\(3, 4, 5, padding=1", r"padded input \(4, 4\)", r"must fit inside"),
    "Conv2D forward NaN": (lambda t: conv().forward(with_value(X, np.nan, (1, 2, 3, 4))), ValueError,
                           C2 + r": x", *FINITE),
    "Conv2D forward +Inf": (lambda t: conv().forward(with_value(X, np.inf)), ValueError, C2 + r": x", *FINITE),
    "Conv2D forward -Inf": (lambda t: conv().forward(with_value(X, -np.inf)), ValueError, C2 + r": x", *FINITE),
    "Conv2D forward object array": (lambda t: conv().forward(X.astype(object)), TypeError, C2 + r": x",
                                    r"dtype object", REAL),
    "Conv2D forward string array": (lambda t: conv().forward(X.astype(str)), TypeError, C2 + r": x", r"dtype <U",
                                    REAL),
    "Conv2D forward complex array": (lambda t: conv().forward(X.astype(complex)), TypeError, C2 + r": x",
                                     r"dtype complex128", REAL),
    "Conv2D forward datetime array": (lambda t: conv().forward(np.zeros((1, 3, 6, 6), "datetime64[s]")), TypeError,
                                      C2 + r": x", r"datetime64", REAL),
    "Conv2D forward empty batch": (lambda t: conv().forward(X[:0]), ValueError, C2 + r": x",
                                   r"got shape \(0, 3, 6, 6\)", r"must not be empty"),
    "Conv2D forward empty plane": (lambda t: conv().forward(X[:, :, :0]), ValueError, C2 + r": x",
                                   r"got shape \(2, 3, 0, 6\)", r"must not be empty"),
    "Conv2D forward ragged list": (lambda t: conv().forward([[1, 2], [3]]), TypeError, C2 + r": x", r"got list",
                                   r"a numeric array"),
    "Conv2D forward None": (lambda t: conv().forward(None), TypeError, C2 + r": x", r"dtype object", REAL),
    "Conv2D untied forward at another size": (
        lambda t: Conv2D(3, 4, 3, bias="untied", input_size=(6, 6)).forward(X[:, :, :5, :5]), ValueError,
        r"Conv2D\(3, 4, 3, bias='untied'", r"got shape \(2, 3, 5, 5\)", r"\(6, 6\) pixels"),
    "MaxPool2D forward window larger than the input": (lambda t: MaxPool2D(7).forward(X), ValueError,
                                                       r"MaxPool2D\(7\)", r"padded input \(6, 6\)",
                                                       r"must fit inside"),
    "MaxPool2D forward 2-D x": (lambda t: MaxPool2D(2).forward(X[0, 0]), ValueError, r"MaxPool2D\(2\): x",
                                r"2-D array", r"must be 4-D"),
    "MaxPool2D forward NaN": (lambda t: MaxPool2D(2).forward(with_value(X, np.nan)), ValueError,
                              r"MaxPool2D\(2\): x", *FINITE),
    "MaxPool2D forward empty batch": (lambda t: MaxPool2D(2).forward(X[:0]), ValueError, r"MaxPool2D\(2\): x",
                                      r"\(0, 3, 6, 6\)", r"must not be empty"),
    "AvgPool2D forward window larger than the padded input": (
        lambda t: AvgPool2D(4, padding=1).forward(X[:, :, :1, :1]), ValueError, r"AvgPool2D\(4, padding=1\)",
        r"padded input \(3, 3\)", r"must fit inside"),
    "AvgPool2D forward wrong channel count": (lambda t: AvgPool2D(2, channels=2).forward(X), ValueError,
                                              r"AvgPool2D\(2, channels=2\): x", r"got shape \(2, 3, 6, 6\)",
                                              r"must have 2 channels"),
    "AvgPool2D forward complex": (lambda t: AvgPool2D(2).forward(X.astype(np.complex64)), TypeError,
                                  r"AvgPool2D\(2\): x", r"complex64", REAL),
    "Dense forward wrong feature count": (lambda t: Dense(5, 2).forward(np.ones((2, 4))), ValueError,
                                          r"Dense\(5, 2\): x", r"got \(2, 4\)", r"shape \(N, 5\)"),
    "Dense forward 4-D x": (lambda t: Dense(5, 2).forward(X), ValueError, r"Dense\(5, 2\): x", r"4-D",
                            r"must be 2-D"),
    "Dense forward NaN": (lambda t: Dense(2, 2).forward([[math.nan, 1.0]]), ValueError, r"Dense\(2, 2\): x", *FINITE),
    "Dense forward empty batch": (lambda t: Dense(2, 2).forward(np.ones((0, 2))), ValueError, r"Dense\(2, 2\): x",
                                  r"\(0, 2\)", r"must not be empty"),
    "ReLU forward object": (lambda t: ReLU().forward(X.astype(object)), TypeError, r"ReLU\(\): x", r"object", REAL),
    "ReLU forward NaN": (lambda t: ReLU().forward([math.nan]), ValueError, r"ReLU\(\): x", *FINITE),
    "Sigmoid forward complex": (lambda t: Sigmoid().forward([1j]), TypeError, r"Sigmoid\(\): x", r"complex", REAL),
    "Tanh forward string": (lambda t: Tanh().forward(["a"]), TypeError, r"Tanh\(\): x", r"<U1", REAL),
    "Softmax forward 1-D": (lambda t: Softmax().forward(np.ones(3)), ValueError, r"Softmax\(\): x",
                            r"got shape \(3,\)", r"\(N, classes, \.\.\.\)"),
    "Flatten forward 1-D": (lambda t: Flatten().forward(np.ones(3)), ValueError, r"Flatten\(\): x",
                            r"got shape \(3,\)", r"at least 2 dimensions"),
    "Dropout forward string": (lambda t: Dropout(0.5).forward(["a"], training=True), TypeError, r"Dropout\(\): x",
                               r"<U1", REAL),
    "Dropout forward Inf": (lambda t: Dropout(0.5).forward([math.inf], training=True), ValueError,
                            r"Dropout\(\): x", *FINITE),
    # ---- layer backward
    "Conv2D backward wrong dout shape": (lambda t: after_forward(conv()).backward(np.ones((2, 4, 3, 3))), ValueError,
                                         C2 + r": dout", r"got \(2, 4, 3, 3\)", r"output's shape \(2, 4, 4, 4\)"),
    "Conv2D backward NaN dout": (lambda t: after_forward(conv()).backward(np.full((2, 4, 4, 4), np.nan)),
                                 ValueError, C2 + r": dout", *FINITE),
    "Conv2D backward object dout": (lambda t: after_forward(conv()).backward(np.ones((2, 4, 4, 4), object)),
                                    TypeError, C2 + r": dout", r"object", REAL),
    "MaxPool2D backward wrong dout shape": (lambda t: after_forward(MaxPool2D(2)).backward(np.ones((2, 3, 2, 2))),
                                            ValueError, r"MaxPool2D\(2\): dout", r"got \(2, 3, 2, 2\)",
                                            r"output's shape \(2, 3, 3, 3\)"),
    "MaxPool2D backward complex dout": (
        lambda t: after_forward(MaxPool2D(2)).backward(np.ones((2, 3, 3, 3), complex)), TypeError,
        r"MaxPool2D\(2\): dout", r"complex128", REAL),
    "AvgPool2D backward wrong dout shape": (
        lambda t: after_forward(AvgPool2D(2, trainable_scale=True, channels=3)).backward(np.ones((2, 3, 2, 2))),
        ValueError, r"AvgPool2D\(2, trainable_scale=True, channels=3\): dout", r"got \(2, 3, 2, 2\)",
        r"output's shape \(2, 3, 3, 3\)"),
    "Dense backward wrong dout shape": (
        lambda t: after_forward(Dense(4, 3), np.ones((2, 4))).backward(np.ones((2, 4))), ValueError,
        r"Dense\(4, 3\): dout", r"got \(2, 4\)", r"output's shape \(2, 3\)"),
    "Dense backward Inf dout": (
        lambda t: after_forward(Dense(4, 3), np.ones((2, 4))).backward(np.full((2, 3), np.inf)), ValueError,
        r"Dense\(4, 3\): dout", *FINITE),
    "Flatten backward wrong dout shape": (lambda t: after_forward(Flatten()).backward(np.ones((2, 5))), ValueError,
                                          r"Flatten\(\): dout", r"got \(2, 5\)", r"shape \(2, 108\)"),
    "Flatten backward string dout": (lambda t: after_forward(Flatten()).backward(np.ones((2, 108)).astype(str)),
                                     TypeError, r"Flatten\(\): dout", r"<U", REAL),
    "ReLU backward wrong dout shape": (lambda t: after_forward(ReLU()).backward(np.ones((2, 3))), ValueError,
                                       r"ReLU\(\): dout", r"got \(2, 3\)", r"output's shape \(2, 3, 6, 6\)"),
    "Softmax backward wrong dout shape": (
        lambda t: after_forward(Softmax(), np.ones((2, 3))).backward(np.ones((3, 3))), ValueError,
        r"Softmax\(\): dout", r"got \(3, 3\)", r"output's shape \(2, 3\)"),
    "Dropout (training) backward wrong dout shape": (
        lambda t: after_forward(Dropout(0.5, seed=0), training=True).backward(np.ones((2, 3))), ValueError,
        r"Dropout\(seed=0\): dout", r"got \(2, 3\)", r"output's shape \(2, 3, 6, 6\)"),
    "Dropout (training) backward NaN dout": (
        lambda t: after_forward(Dropout(0.5, seed=0), training=True).backward(np.full(X.shape, np.nan)),
        ValueError, r"Dropout\(seed=0\): dout", *FINITE),
    "Dropout (inference) backward wrong dout shape": (
        lambda t: after_forward(Dropout(0.5, seed=0), training=False).backward(np.ones((2, 3))), ValueError,
        r"Dropout\(seed=0\): dout", r"got \(2, 3\)", r"output's shape \(2, 3, 6, 6\)"),
    # ---- functional / im2col
    "conv2d_forward backend='torch'": (lambda t: F.conv2d_forward(X, np.ones((2, 3, 3, 3)), backend="torch"),
                                       ValueError, r"conv2d: backend", r"got 'torch'",
                                       r"one of \('numba', 'numpy'\)"),
    "conv2d_forward bias of the wrong shape": (
        lambda t: F.conv2d_forward(X, np.ones((2, 3, 3, 3)), bias=np.ones(3)), ValueError, r"conv2d: bias",
        r"got \(3,\)", r"\(2,\) \(tied\) or \(2, 4, 4\) \(untied"),
    "conv2d_forward 3-D weight": (lambda t: F.conv2d_forward(X, np.ones((3, 3, 3))), ValueError, r"conv2d: weight",
                                  r"3-D", r"must be 4-D"),
    "conv2d_forward NaN weight": (lambda t: F.conv2d_forward(X, np.full((2, 3, 3, 3), np.nan)), ValueError,
                                  r"conv2d: weight", *FINITE),
    "conv2d_forward padding='same' stride=2": (
        lambda t: F.conv2d_forward(X, np.ones((2, 3, 3, 3)), stride=2, padding="same"), ValueError,
        r"conv2d: padding='same'", r"got stride \(2, 2\)", r"needs stride 1"),
    "max_pool2d_forward padding above half": (lambda t: F.max_pool2d_forward(X, 2, padding=2), ValueError,
                                              r"max_pool2d: padding", r"got \(2, 2\)", r"at most half the window"),
    "max_pool2d_forward backend='x'": (lambda t: F.max_pool2d_forward(X, 2, backend="x"), ValueError,
                                       r"max_pool2d: backend", r"got 'x'", r"one of \('numba', 'numpy'\)"),
    "avg_pool2d_forward scale of the wrong shape": (lambda t: F.avg_pool2d_forward(X, 2, scale=np.ones(2)),
                                                    ValueError, r"avg_pool2d: scale", r"got \(2,\)",
                                                    r"shape \(3,\), one weight per feature map"),
    "avg_pool2d_forward NaN scale": (lambda t: F.avg_pool2d_forward(X, 2, scale=np.full(3, np.nan)), ValueError,
                                     r"avg_pool2d: scale", *FINITE),
    "im2col stride=-1": (lambda t: im2col_module.im2col(X, 3, stride=-1), ValueError, r"im2col: stride", r"got -1", PAIR1),
    "im2col kernel larger than the input": (lambda t: im2col_module.im2col(X, 7), ValueError, r"im2col", r"padded input \(6, 6\)",
                                            r"must fit inside"),
    "im2col 3-D x": (lambda t: im2col_module.im2col(X[0], 3), ValueError, r"im2col: x", r"3-D", r"must be 4-D"),
    "im2col pad_value='a'": (
        lambda t: im2col_module.im2col(X, 3, pad_value="a"), TypeError, r"im2col: pad_value", r"got 'a'", r"a real number"),
    "col2im cols of the wrong shape": (lambda t: im2col_module.col2im(np.ones((5, 27)), (2, 3, 6, 6), 3), ValueError,
                                       r"col2im: cols", r"got \(5, 27\)", r"must have shape \(32, 27\)"),
    "col2im input_shape of length 3": (lambda t: im2col_module.col2im(np.ones((32, 27)), (2, 3, 6), 3), ValueError,
                                       r"col2im: input_shape", r"got \(2, 3, 6\)", r"\(N, C, H, W\)"),
    "col2im input_shape with a float": (lambda t: im2col_module.col2im(np.ones((32, 27)), (2, 3, 6.0, 6), 3), TypeError,
                                        r"col2im: input_shape", r"6\.0", r"an int >= 1"),
    # ---- losses
    "SoftmaxCrossEntropy 1-D logits": (lambda t: losses.SoftmaxCrossEntropy().forward(np.zeros(3), [0]), ValueError,
                                       r"SoftmaxCrossEntropy: logits", r"1-D array", r"must be 2-D"),
    "SoftmaxCrossEntropy label == K": (lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [0, 1, 4]),
                                       ValueError, r"SoftmaxCrossEntropy: target", r"got 4 at index 2",
                                       r"\[0, 4\) for 4 classes"),
    "SoftmaxCrossEntropy negative label": (lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [0, -1, 2]),
                                           ValueError, r"SoftmaxCrossEntropy: target", r"got -1 at index 1",
                                           r"\[0, 4\)"),
    "SoftmaxCrossEntropy label 1.5": (lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [0, 1.5, 2]),
                                      ValueError, r"SoftmaxCrossEntropy: target", r"got 1\.5 at index 1",
                                      r"whole numbers in \[0, 4\)"),
    "SoftmaxCrossEntropy NaN label": (lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [0, math.nan, 2]),
                                      ValueError, r"SoftmaxCrossEntropy: target", r"got nan at index 1",
                                      r"whole numbers"),
    "SoftmaxCrossEntropy too few labels": (lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [0, 1]),
                                           ValueError, r"SoftmaxCrossEntropy: target", r"has 2 labels",
                                           r"batch size 3; they must match"),
    "SoftmaxCrossEntropy bool labels": (lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [True, False, True]),
                                        TypeError, r"SoftmaxCrossEntropy: target", r"dtype bool",
                                        r"integers in \[0, 4\)"),
    "SoftmaxCrossEntropy string labels": (lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, ["a", "b", "c"]),
                                          TypeError, r"SoftmaxCrossEntropy: target", r"dtype <U1",
                                          r"real numeric array"),
    "SoftmaxCrossEntropy object labels": (lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [0, 1, None]),
                                          TypeError, r"SoftmaxCrossEntropy: target", r"dtype object",
                                          r"real numeric array"),
    "SoftmaxCrossEntropy NaN logits": (
        lambda t: losses.SoftmaxCrossEntropy().forward(with_value(LOGITS, np.nan), [0, 1, 2]), ValueError,
        r"SoftmaxCrossEntropy: logits", *FINITE),
    "SoftmaxCrossEntropy complex logits": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS.astype(complex), [0, 1, 2]), TypeError,
        r"SoftmaxCrossEntropy: logits", r"complex128", REAL),
    "SoftmaxCrossEntropy rows not summing to 1": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, np.full((3, 4), 0.5)), ValueError,
        r"SoftmaxCrossEntropy: target rows", r"row 0 summing to 2\.0", r"summing to 1"),
    "SoftmaxCrossEntropy negative probabilities": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, [[1.5, -0.5, 0, 0]] * 3), ValueError,
        r"SoftmaxCrossEntropy: target rows", r"got -0\.5 at index \(0, 1\)", r"non-negative"),
    "SoftmaxCrossEntropy rows of the wrong shape": (
        lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, np.full((3, 5), 0.2)), ValueError,
        r"SoftmaxCrossEntropy: target rows", r"got shape \(3, 5\)", r"shape of logits \(3, 4\)"),
    "SoftmaxCrossEntropy 3-D target": (lambda t: losses.SoftmaxCrossEntropy().forward(LOGITS, np.zeros((3, 4, 1))),
                                       ValueError, r"SoftmaxCrossEntropy: target", r"3-D array",
                                       r"labels of shape \(3,\) or probability rows"),
    "SoftmaxCrossEntropy empty batch": (
        lambda t: losses.SoftmaxCrossEntropy().forward(np.zeros((0, 4)), np.zeros(0, int)), ValueError,
        r"SoftmaxCrossEntropy: logits", r"\(0, 4\)", r"must not be empty"),
    "MeanSquaredError target of the wrong shape": (
        lambda t: losses.MeanSquaredError().forward(LOGITS, np.zeros((3, 5))), ValueError,
        r"MeanSquaredError: target", r"got shape \(3, 5\)", r"shape of pred \(3, 4\)"),
    "MeanSquaredError object pred": (lambda t: losses.MeanSquaredError().forward(LOGITS.astype(object), LOGITS),
                                     TypeError, r"MeanSquaredError: pred", r"object", REAL),
    "MeanSquaredError label out of range": (lambda t: losses.MeanSquaredError().forward(LOGITS, [0, 1, 9]),
                                            ValueError, r"MeanSquaredError: target", r"got 9 at index 2",
                                            r"\[0, 4\)"),
    "MeanSquaredError Inf target": (lambda t: losses.MeanSquaredError().forward(LOGITS, np.full((3, 4), np.inf)),
                                    ValueError, r"MeanSquaredError: target", *FINITE),
    # ---- optimizers and schedules
    "SGD lr=0": (lambda t: optim.SGD(0), ValueError, r"SGD: lr", r"got 0\.0", r"\(0\.0, inf\]"),
    "SGD lr=-1": (lambda t: optim.SGD(-1), ValueError, r"SGD: lr", r"got -1\.0", r"\(0\.0, inf\]"),
    "SGD lr=nan": (lambda t: optim.SGD(math.nan), ValueError, r"SGD: lr", r"got nan", r"finite number in \(0"),
    "SGD lr=float32 nan": (lambda t: optim.SGD(np.float32("nan")), ValueError, r"SGD: lr", r"got nan",
                           r"finite number in \(0"),
    "SGD lr=inf": (lambda t: optim.SGD(math.inf), ValueError, r"SGD: lr", r"got inf", r"finite number in \(0"),
    "SGD lr='0.1'": (lambda t: optim.SGD("0.1"), TypeError, r"SGD: lr", r"got '0\.1'", r"a real number"),
    "SGD lr=None": (lambda t: optim.SGD(None), TypeError, r"SGD: lr", r"got None", r"a real number"),
    "SGD momentum=1": (lambda t: optim.SGD(0.1, momentum=1.0), ValueError, r"SGD: momentum", r"got 1\.0",
                       r"\[0\.0, 1\.0\)"),
    "SGD momentum=-0.1": (lambda t: optim.SGD(0.1, momentum=-0.1), ValueError, r"SGD: momentum", r"got -0\.1",
                          r"\[0\.0, 1\.0\)"),
    "SGD momentum=nan": (lambda t: optim.SGD(0.1, momentum=math.nan), ValueError, r"SGD: momentum", r"got nan",
                         r"\[0\.0, 1\.0\)"),
    "SGD nesterov without momentum": (lambda t: optim.SGD(0.1, nesterov=True), ValueError, r"SGD: nesterov=True",
                                      r"got momentum=0\.0", r"requires momentum in \(0, 1\)"),
    "SGD nesterov='yes'": (lambda t: optim.SGD(0.1, momentum=0.9, nesterov="yes"), TypeError, r"SGD: nesterov",
                           r"got 'yes'", r"True or False"),
    "SGD weight_decay=-1": (lambda t: optim.SGD(0.1, weight_decay=-1), ValueError, r"SGD: weight_decay",
                            r"got -1\.0", r"\[0\.0, inf\]"),
    "Adam betas=(1.0, 0.999)": (lambda t: optim.Adam(betas=(1.0, 0.999)), ValueError, r"Adam: betas\[0\]",
                                r"got 1\.0", r"\[0\.0, 1\.0\)"),
    "Adam betas=(0.9, -0.1)": (lambda t: optim.Adam(betas=(0.9, -0.1)), ValueError, r"Adam: betas\[1\]",
                               r"got -0\.1", r"\[0\.0, 1\.0\)"),
    "Adam betas=(0.9,)": (lambda t: optim.Adam(betas=(0.9,)), TypeError, r"Adam: betas", r"got \(0\.9,\)",
                          r"a pair \(beta1, beta2\)"),
    "Adam eps=0": (lambda t: optim.Adam(eps=0), ValueError, r"Adam: eps", r"got 0\.0", r"\(0\.0, inf\]"),
    "Adam lr=nan": (lambda t: optim.Adam(lr=math.nan), ValueError, r"Adam: lr", r"got nan", r"finite number in \(0"),
    "Adam lr=-1e-3": (lambda t: optim.Adam(lr=-1e-3), ValueError, r"Adam: lr", r"got -0\.001", r"\(0\.0, inf\]"),
    "optimizer.lr = -1": (lambda t: setattr(optim.SGD(0.1), "lr", -1), ValueError, r"SGD: lr", r"got -1\.0",
                          r"\[0\.0, inf\]"),
    "optimizer.lr = nan": (lambda t: setattr(optim.Adam(), "lr", math.nan), ValueError, r"Adam: lr", r"got nan",
                           r"finite number"),
    "step: grads of another shape": (lambda t: sgd_step(P3, {"w": np.zeros(4, np.float32)}), ValueError,
                                     r"SGD\.step: grads\['w'\]", r"has shape \(4,\)",
                                     r"params\['w'\] has shape \(3,\)"),
    "step: grads with other keys": (lambda t: sgd_step(P3, {"v": np.zeros(3, np.float32)}), ValueError,
                                    r"SGD\.step: params and grads", r"not in params: \['v'\]", r"the same keys"),
    "step: params a list": (lambda t: sgd_step([1], G3), TypeError, r"SGD\.step: params", r"got list",
                            r"a dict \{name: ndarray\}"),
    "step: integer grads": (lambda t: sgd_step(P3, {"w": np.zeros(3, int)}), TypeError, r"SGD\.step: grads\['w'\]",
                            r"dtype int64", r"a float ndarray"),
    "step: integer params": (lambda t: sgd_step({"w": np.zeros(3, int)}, {"w": np.zeros(3)}), TypeError,
                             r"SGD\.step: params\['w'\]", r"dtype int64", r"float32/float64 ndarray"),
    "step: grads a list": (lambda t: sgd_step(P3, {"w": [0.0, 0.0, 0.0]}), TypeError, r"SGD\.step: grads\['w'\]",
                           r"got list", r"a float ndarray"),
    "load_state_dict: a string": (lambda t: optim.SGD(0.1).load_state_dict("x"), TypeError,
                                  r"SGD\.load_state_dict: state_dict", r"got str", r"a dict"),
    "load_state_dict: missing keys": (lambda t: optim.SGD(0.1).load_state_dict({"lr": 0.1}), ValueError,
                                      r"SGD\.load_state_dict", r"missing keys \['step'", r"allowed: \['lr'"),
    "load_state_dict: lr array": (lambda t: optim.SGD(0.1).load_state_dict(state(lr=np.ones(2))), ValueError,
                                  r"SGD\.load_state_dict: 'lr'", r"array of shape \(2,\)", r"a scalar"),
    "load_state_dict: object buffer": (
        lambda t: optim.SGD(0.1, momentum=0.9).load_state_dict(
            state(momentum=0.9, **{"momentum_buffer:w": np.array([None])})), TypeError,
        r"SGD\.load_state_dict: 'momentum_buffer:w'", r"dtype object", r"float32/float64 ndarray"),
    "StepLR step_size=0": (lambda t: optim.StepLR(optim.SGD(0.1), 0), ValueError, r"StepLR: step_size", r"got 0",
                           INT1),
    "StepLR gamma=0": (lambda t: optim.StepLR(optim.SGD(0.1), 1, gamma=0), ValueError, r"StepLR: gamma",
                       r"got 0\.0", r"\(0\.0, inf\]"),
    "StepLR optimizer=None": (lambda t: optim.StepLR(None, 1), TypeError, r"StepLR: optimizer", r"got NoneType",
                              r"an Optimizer"),
    "CosineAnnealingLR t_max=0": (lambda t: optim.CosineAnnealingLR(optim.SGD(0.1), 0), ValueError,
                                  r"CosineAnnealingLR: t_max", r"got 0", INT1),
    "CosineAnnealingLR warmup=-1": (lambda t: optim.CosineAnnealingLR(optim.SGD(0.1), 5, warmup=-1), ValueError,
                                    r"CosineAnnealingLR: warmup", r"got -1", INT0),
    "CosineAnnealingLR eta_min=nan": (lambda t: optim.CosineAnnealingLR(optim.SGD(0.1), 5, eta_min=math.nan),
                                      ValueError, r"CosineAnnealingLR: eta_min", r"got nan", r"finite number"),
    # ---- Sequential.fit
    "fit epochs=0": (lambda t: fit(epochs=0), ValueError, r"Sequential\.fit: epochs", r"got 0", INT1),
    "fit epochs=-1": (lambda t: fit(epochs=-1), ValueError, r"Sequential\.fit: epochs", r"got -1", INT1),
    "fit epochs=1.5": (lambda t: fit(epochs=1.5), TypeError, r"Sequential\.fit: epochs", r"got 1\.5", INT1),
    "fit batch_size=0": (lambda t: fit(batch_size=0), ValueError, r"Sequential\.fit: batch_size", r"got 0", INT1),
    "fit batch_size=True": (lambda t: fit(batch_size=True), TypeError, r"Sequential\.fit: batch_size", r"got True",
                            INT1),
    "fit x and y of different lengths": (lambda t: fit(y=YM[:4]), ValueError, r"Sequential\.fit: x", r"y has 4 rows",
                                         r"x has 5 samples .* must match"),
    "fit label == number of classes": (lambda t: fit(y=np.array([0, 1, 3, 0, 1])), ValueError,
                                       r"Sequential\.fit: y labels", r"got 3 at index 2",
                                       r"\[0, 3\) for the network's 3 outputs"),
    "fit negative label": (lambda t: fit(y=np.array([0, 1, -1, 0, 1])), ValueError, r"Sequential\.fit: y labels",
                           r"got -1 at index 2", r"\[0, 3\)"),
    "fit non-integer labels": (lambda t: fit(y=np.array([0, 1, 1.5, 0, 1])), TypeError,
                               r"Sequential\.fit: y labels", r"dtype float64", r"must be integers"),
    "fit string labels": (lambda t: fit(y=np.array(list("abcde"))), TypeError, r"Sequential\.fit: y", r"dtype <U1",
                          r"integer class labels"),
    "fit bool labels": (lambda t: fit(y=np.ones(5, bool)), TypeError, r"Sequential\.fit: y", r"dtype bool",
                        r"integer class labels"),
    "fit y=None": (lambda t: fit(y=None), TypeError, r"Sequential\.fit: y", r"dtype object", r"integer class labels"),
    "fit scalar y": (lambda t: fit(y=3), ValueError, r"Sequential\.fit: x", r"y has a scalar", r"must match"),
    "fit labels of shape (N, 1)": (lambda t: fit(y=YM[:, None]), ValueError, r"Sequential\.fit: y targets",
                                   r"got \(5, 1\)", r"shape \(N, \*\(3,\)\)"),
    "fit x with NaN": (lambda t: fit(x=with_value(XM, np.nan, (3, 0, 2, 2))), ValueError, r"Sequential\.fit: x",
                       *FINITE),
    "fit x with Inf": (lambda t: fit(x=with_value(XM, np.inf)), ValueError, r"Sequential\.fit: x", *FINITE),
    "fit empty batch": (lambda t: fit(x=XM[:0], y=YM[:0]), ValueError, r"Sequential\.fit: x",
                        r"got shape \(0, 1, 6, 6\)", r"must not be empty"),
    "fit object x": (lambda t: fit(x=XM.astype(object)), TypeError, r"Sequential\.fit: x", r"dtype object", REAL),
    "fit complex x": (lambda t: fit(x=XM.astype(complex)), TypeError, r"Sequential\.fit: x", r"complex128", REAL),
    "fit wrong channel count": (lambda t: fit(x=np.repeat(XM, 2, axis=1)), ValueError,
                                r"Sequential: layer 0 Conv2D\(1, 2, 3", r"input of shape \(2, 6, 6\)",
                                r"input must be \(1, H, W\)"),
    "fit 3-D x": (lambda t: fit(x=XM[:, 0]), ValueError, r"Sequential: layer 0 Conv2D", r"shape \(6, 6\)",
                  r"input must be \(1, H, W\)"),
    "fit images smaller than the kernel": (lambda t: fit(x=XM[:, :, :2, :2]), ValueError,
                                           r"Sequential: layer 0 Conv2D", r"padded input \(2, 2\)",
                                           r"must fit inside"),
    "fit scheduler_interval='step'": (lambda t: fit(scheduler_interval="step"), ValueError,
                                      r"Sequential\.fit: scheduler_interval", r"got 'step'",
                                      r"one of \('epoch', 'batch'\)"),
    "fit optimizer=None": (lambda t: fit(optimizer=None), TypeError, r"Sequential\.fit: optimizer",
                           r"got NoneType", r"step\(params, grads\) and lr"),
    "fit loss=None": (lambda t: fit(loss=None), TypeError, r"Sequential\.fit: loss", r"got None",
                      r"forward\(pred, target\) and backward\(\)"),
    "fit validation images of another size": (lambda t: fit(validation_data=(XM[:, :, :5], YM)), ValueError,
                                              r"Sequential\.fit: validation x", r"got \(1, 5, 6\)",
                                              r"per-sample shape \(1, 6, 6\)"),
    "fit validation label out of range": (lambda t: fit(validation_data=(XM, YM + 5)), ValueError,
                                          r"Sequential\.fit: validation y labels", r"got 5 at index 0", r"\[0, 3\)"),
    "fit validation_data not a pair": (lambda t: fit(validation_data=XM), TypeError,
                                       r"Sequential\.fit: validation_data", r"got ndarray", r"a pair"),
    "fit seed=-1": (lambda t: fit(seed=-1), ValueError, r"Sequential\.fit: seed", r"got -1", INT0),
    "fit shuffle='yes'": (lambda t: fit(shuffle="yes"), TypeError, r"Sequential\.fit: shuffle", r"got 'yes'",
                          r"True or False"),
    "fit augment=3": (lambda t: fit(augment=3), TypeError, r"Sequential\.fit: augment", r"got 3", r"a callable"),
    "fit callbacks=[3]": (lambda t: fit(callbacks=[3]), TypeError, r"Sequential\.fit: callbacks", r"got 3",
                          r"callables"),
    "fit should_stop=3": (lambda t: fit(should_stop=3), TypeError, r"Sequential\.fit: should_stop", r"got 3",
                          r"a callable"),
    "fit scheduler=3": (lambda t: fit(scheduler=3), TypeError, r"Sequential\.fit: scheduler", r"got int",
                        r"must have step\(\)"),
    "fit resume='x'": (lambda t: fit(resume="x"), TypeError, r"Sequential\.fit: resume", r"got str", r"a dict"),
    "fit resume={}": (lambda t: fit(resume={}), ValueError, r"Sequential\.fit: resume", r"KeyError\('epoch'\)",
                      r"valid checkpoint state"),
    "fit optimizer=SGD (the class)": (
        lambda t: fit(optimizer=optim.SGD), TypeError, r"Sequential\.fit: optimizer", r"SGD", r"instan"),
    "fit loss=SoftmaxCrossEntropy (the class)": (
        lambda t: fit(loss=losses.SoftmaxCrossEntropy), TypeError, r"Sequential\.fit: loss",
        r"SoftmaxCrossEntropy", r"instan"),
    # ---- Sequential.evaluate / predict / check_shapes
    "evaluate y of another length": (lambda t: model().evaluate(XM, YM[:3]), ValueError,
                                     r"Sequential\.evaluate: x", r"y has 3 rows", r"must match"),
    "evaluate batch_size=0": (lambda t: model().evaluate(XM, YM, batch_size=0), ValueError,
                              r"Sequential\.evaluate: batch_size", r"got 0", INT1),
    "evaluate label out of range": (lambda t: model().evaluate(XM, YM + 3), ValueError,
                                    r"Sequential\.evaluate: y labels", r"got 3 at index 0", r"\[0, 3\)"),
    "evaluate NaN x": (lambda t: model().evaluate(with_value(XM, np.nan), YM), ValueError,
                       r"Sequential\.evaluate: x", *FINITE),
    "evaluate loss='mse'": (lambda t: model().evaluate(XM, YM, loss="mse"), TypeError,
                            r"Sequential\.evaluate: loss", r"got 'mse'", r"forward\(pred, target\)"),
    "evaluate loss=MeanSquaredError (the class)": (
        lambda t: model().evaluate(XM, YM, loss=losses.MeanSquaredError), TypeError,
        r"Sequential\.evaluate: loss", r"MeanSquaredError", r"instan"),
    "predict images smaller than the kernel": (lambda t: model().predict(XM[:, :, :2, :2]), ValueError,
                                               r"Sequential: layer 0 Conv2D", r"padded input \(2, 2\)",
                                               r"must fit inside"),
    "predict string x": (lambda t: model().predict(XM.astype(str)), TypeError, r"Sequential\.predict: x", r"<U",
                         REAL),
    "predict batch_size=-1": (lambda t: model().predict(XM, batch_size=-1), ValueError,
                              r"Sequential\.predict: batch_size", r"got -1", INT1),
    "predict empty batch": (lambda t: model().predict(XM[:0]), ValueError, r"Sequential\.predict: x",
                            r"\(0, 1, 6, 6\)", r"must not be empty"),
    "predict 1-D x": (lambda t: model().predict(np.ones(5)), ValueError, r"Sequential\.predict: x",
                      r"got shape \(5,\)", r"at least 2 dimensions"),
    "predict wrong channel count": (lambda t: model().predict(np.ones((2, 3, 6, 6))), ValueError,
                                    r"Sequential: layer 0 Conv2D", r"shape \(3, 6, 6\)", r"\(1, H, W\)"),
    "check_shapes with a float size": (lambda t: model().check_shapes((1, 6.0, 6)), TypeError,
                                       r"Sequential: input_shape", r"got \(1, 6\.0, 6\)", r"a tuple of ints >= 1"),
    # ---- Sequential.load / load_checkpoint
    "load a missing file": (lambda t: Sequential.load(t / "absent.npz"), FileNotFoundError, r"absent\.npz",
                            r"no such", r"model file"),
    "load a directory": (lambda t: Sequential.load(t), FileNotFoundError, r"/\S+: no such", r"no such",
                         r"model file"),
    "load a text file": (lambda t: (t / "m.npz").write_text("hello") and Sequential.load(t / "m.npz"), ValueError,
                         r"m\.npz", r"not a cnn-im2col model file", r"\.npz"),
    "load a raw pickle": (lambda t: Sequential.load(pickle_file(t, "m.npz")), ValueError, r"m\.npz",
                          r"pickled", r"not a cnn-im2col model file"),
    "load an npz with an object __model__": (
        lambda t: Sequential.load(npz_with(t, "m.npz", __model__=np.array([Payload(t / "pwned")], dtype=object))),
        ValueError, r"m\.npz", r"Object arrays", r"'__model__'"),
    "load an npz without __model__": (lambda t: Sequential.load(npz_with(t, "m.npz", a=np.zeros(2))), ValueError,
                                      r"m\.npz", r"no '__model__' entry", r"cnn-im2col model file"),
    "load a parameter of the wrong shape": (
        lambda t: Sequential.load(model_file_with(t, "m.npz", **{"param:0.weight": np.zeros((2, 1, 2, 2))})),
        ValueError, r"m\.npz: parameter '0\.weight'", r"shape \(2, 1, 2, 2\)", r"needs \(2, 1, 3, 3\)"),
    "load an integer parameter": (
        lambda t: Sequential.load(model_file_with(t, "m.npz", **{"param:0.bias": np.zeros(2, np.int64)})),
        ValueError, r"m\.npz: parameter '0\.bias'", r"dtype int64", r"must be float"),
    "load a NaN parameter": (
        lambda t: Sequential.load(model_file_with(t, "m.npz", **{"param:0.bias": np.full(2, np.nan, np.float32)})),
        ValueError, r"m\.npz: parameter '0\.bias'", r"NaN or Inf", r"contains"),
    "load a missing parameter": (
        lambda t: Sequential.load(model_file_with(t, "m.npz", **{"param:0.bias": np.zeros(2, np.float32),
                                                                 "param:9.x": np.zeros(1)})),
        ValueError, r"m\.npz", r"unexpected parameters \['9\.x'\]", r"do not match the architecture"),
    "load an object parameter": (
        lambda t: Sequential.load(model_file_with(
            t, "m.npz", **{"param:0.bias": np.array([Payload(t / "pwned")] * 2, dtype=object)})),
        ValueError, r"m\.npz", r"0\.bias", r"[Oo]bject"),
    "load a .npy file": (
        lambda t: (np.save(t / "m.npy", np.zeros(3)), Sequential.load(t / "m.npy")), ValueError, r"m\.npy",
        r"\.npy|single array", r"\.npz"),
    "load an npz whose __model__ is not a .npy": (
        lambda t: Sequential.load(zip_with(t, "m.npz", __model__=pickle.dumps(Payload(t / "pwned")))),
        ValueError, r"m\.npz", r"__model__", r"not"),
    "load(3)": (
        lambda t: Sequential.load(3), TypeError, r"Sequential\.load: path", r"got 3", r"str or os\.PathLike"),
    "load_checkpoint of a model file": (lambda t: (model().save(t / "m.npz"), Sequential.load_checkpoint(
        t / "m.npz")), ValueError, r"m\.npz", r"a model file, not a checkpoint", r"optimizer or training state"),
    "load_checkpoint with an object optimizer array": (
        lambda t: Sequential.load_checkpoint(checkpoint_with_object_optim_array(t)), ValueError,
        r"ckpt-object\.npz", r"optim:", r"[Oo]bject"),
    "fit checkpoint=3": (
        lambda t: fit(checkpoint=3), TypeError, r"Sequential\.fit: checkpoint", r"got 3",
        r"str or os\.PathLike"),
    # ---- signal
    "correlate2d mode='circular'": (lambda t: S.correlate2d(np.ones((3, 3)), np.ones((2, 2)), mode="circular"),
                                    ValueError, r"correlate2d: mode", r"got 'circular'",
                                    r"one of \('full', 'valid', 'same'\)"),
    "convolve2d mode=None": (lambda t: S.convolve2d(np.ones((3, 3)), np.ones((2, 2)), mode=None), ValueError,
                             r"convolve2d: mode", r"got None", r"one of \('full', 'valid', 'same'\)"),
    "correlate2d 3-D in1": (lambda t: S.correlate2d(np.ones((3, 3, 3)), np.ones((2, 2))), ValueError,
                            r"correlate2d: in1", r"3-D", r"must be 2-D"),
    "correlate2d 1-D in2": (lambda t: S.correlate2d(np.ones((3, 3)), np.ones(2)), ValueError, r"correlate2d: in2",
                            r"1-D", r"must be 2-D"),
    "correlate2d NaN": (lambda t: S.correlate2d(np.full((3, 3), np.nan), np.ones((2, 2))), ValueError,
                        r"correlate2d: in1", *FINITE),
    "convolve2d Inf kernel": (lambda t: S.convolve2d(np.ones((3, 3)), np.full((2, 2), np.inf)), ValueError,
                              r"convolve2d: in2", *FINITE),
    "correlate2d complex": (lambda t: S.correlate2d(np.ones((3, 3), complex), np.ones((2, 2))), TypeError,
                            r"correlate2d: in1", r"complex128", REAL),
    "correlate2d object": (lambda t: S.correlate2d(np.ones((3, 3)), np.ones((2, 2), object)), TypeError,
                           r"correlate2d: in2", r"object", REAL),
    "convolve2d strings": (lambda t: S.convolve2d([["a"]], np.ones((1, 1))), TypeError, r"convolve2d: in1", r"<U1",
                           REAL),
    "correlate2d empty": (lambda t: S.correlate2d(np.ones((0, 3)), np.ones((2, 2))), ValueError,
                          r"correlate2d: in1", r"\(0, 3\)", r"must not be empty"),
    "convolve2d 'valid' with crossed shapes": (
        lambda t: S.convolve2d(np.ones((3, 5)), np.ones((5, 3)), mode="valid"), ValueError, r"convolve2d",
        r"shapes \(3, 5\) and \(5, 3\)", r"at least as large as the other in both dimensions"),
    "correlate2d ragged list": (lambda t: S.correlate2d([[1, 2], [3]], np.ones((1, 1))), TypeError,
                                r"correlate2d: in1", r"got list", r"a numeric array"),
    # ---- datasets
    "read_idx a missing file": (lambda t: datasets.read_idx(t / "nope-idx1-ubyte"), FileNotFoundError,
                                r"nope-idx1-ubyte", r"No such file", r"."),
    "read_idx(3)": (lambda t: datasets.read_idx(3), TypeError, r"read_idx: path", r"got 3",
                    r"str or os\.PathLike"),
    "read_idx a truncated .gz": (lambda t: datasets.read_idx(truncated_gz(t)), ValueError,
                                 r"read_idx: .*train-images-idx3-ubyte\.gz", r"truncated", r"gzip"),
    "read_idx header disagrees with the length": (lambda t: datasets.read_idx(idx_header_disagrees(t)), ValueError,
                                                  r"read_idx: .*train-labels-idx1-ubyte",
                                                  r"the file has 7 payload bytes", r"declares shape \(10,\)"),
    "write_idx an object array": (lambda t: datasets.write_idx(t / "w", np.array([None])), TypeError,
                                  r"write_idx: array", r"got object", r"uint8, int8, int16, int32"),
    "write_idx a 0-d array": (lambda t: datasets.write_idx(t / "w", np.array(3, np.uint8)), ValueError,
                              r"write_idx: array", r"got shape \(\)", r"1 to 255 dimensions"),
    "write_idx(None, ...)": (lambda t: datasets.write_idx(None, np.zeros(2, np.uint8)), TypeError,
                             r"write_idx: path", r"got None", r"str or os\.PathLike"),
    "load_idx_dataset of a missing directory": (lambda t: datasets.load_idx_dataset(t / "absent"), FileNotFoundError,
                                                r"load_idx_dataset: directory", r"absent", r"does not exist"),
    "load_idx_dataset(None)": (lambda t: datasets.load_idx_dataset(None), TypeError, r"load_idx_dataset: directory",
                               r"got None", r"str or os\.PathLike"),
    "load_idx_dataset without the train images": (
        lambda t: datasets.load_idx_dataset(idx_dir(t, other=b"")), FileNotFoundError,
        r"load_idx_dataset", r"lacks train-images-idx3-ubyte", r"must hold all of"),
    "load_idx_dataset with a truncated .gz": (
        lambda t: datasets.load_idx_dataset(idx_dir(t, **{"train-images-idx3-ubyte.gz": truncated_gz(
            t).read_bytes()})), ValueError, r"read_idx: .*train-images-idx3-ubyte\.gz", r"truncated", r"gzip"),
    "load_mnist(data_dir=3)": (lambda t: datasets.load_mnist(3), TypeError, r"load_mnist: data_dir", r"got 3",
                               r"a path \(str or os\.PathLike\) or None"),
    "load_mnist of a file": (lambda t: (t / "f").write_text("x") and load_mnist(t / "f"), ValueError,
                             r"load_mnist: .*/f", r"it is a file", r"must be a directory"),
    "load_mnist with a pickled cache": (lambda t: load_mnist(mnist_cache_pickle(t, zipped=False)), ValueError,
                                        r"load_mnist: .*mnist\.npz", r"pickled", r"not a valid MNIST cache"),
    "load_mnist with a gzipped pickled cache": (lambda t: load_mnist(mnist_cache_pickle(t, zipped=True)),
                                                ValueError, r"load_mnist: .*mnist\.npz", r"pickled",
                                                r"not a valid MNIST cache"),
    "load_mnist with object arrays in the cache": (
        lambda t: load_mnist(mnist_cache(t, x_train=np.array([Payload(t / "pwned")], dtype=object))), ValueError,
        r"load_mnist: .*mnist\.npz", r"Object arrays", r"not a valid MNIST cache"),
    "load_mnist with a cache of non-.npy zip members": (
        lambda t: load_mnist(zip_with(t / "cache", "mnist.npz", **{k: pickle.dumps(Payload(t / "pwned")) for k in (
            "x_train.npy", "y_train", "x_test", "y_test")}).parent), ValueError, r"load_mnist: .*mnist\.npz",
        r"\['x_train', 'y_train', 'x_test', 'y_test'\] are not \.npy arrays", r"not a valid MNIST cache"),
    "load_mnist with float images in the cache": (
        lambda t: load_mnist(mnist_cache(t, x_train=np.zeros((3, 28, 28), np.float32))), ValueError,
        r"load_mnist: .*mnist\.npz\[x_train\]", r"got float32", r"uint8 of shape \(N, H, W\)"),
    "load_mnist with labels out of 0..9 in the cache": (
        lambda t: load_mnist(mnist_cache(t, y_test=np.array([4, 200], np.uint8))), ValueError,
        r"load_mnist: .*mnist\.npz\[y_test\]", r"got \[4, 200\]", r"in 0\.\.9"),
    "load_mnist with 20x20 images in the cache": (
        lambda t: load_mnist(mnist_cache(t, x_test=np.zeros((2, 20, 20), np.uint8))), ValueError,
        r"load_mnist: .*mnist\.npz\[x_test\]", r"\(2, 20, 20\)", r"must be 28x28"),
    "iterate_minibatches batch_size=0": (
        lambda t: list(datasets.iterate_minibatches(np.zeros((3, 1)), np.zeros(3), 0)), ValueError,
        r"iterate_minibatches: batch_size", r"got 0", INT1),
    "iterate_minibatches x and y of different lengths": (
        lambda t: list(datasets.iterate_minibatches(np.zeros((3, 1)), np.zeros(2), 2)), ValueError,
        r"iterate_minibatches: x and y", r"shapes \(3, 1\) and \(2,\)", r"the same length"),
    "iterate_minibatches shuffle='no'": (
        lambda t: list(datasets.iterate_minibatches(np.zeros((3, 1)), np.zeros(3), 2, shuffle="no")), TypeError,
        r"iterate_minibatches: shuffle", r"got 'no'", r"True or False"),
    # ---- init, threads, gradcheck
    "make_rng(-1)": (lambda t: init.make_rng(-1), ValueError, r"make_rng: seed", r"got -1", INT0),
    "make_rng(1.5)": (lambda t: init.make_rng(1.5), TypeError, r"make_rng: seed", r"got 1\.5",
                      r"None, an int >= 0 or a numpy\.random\.Generator"),
    "make_rng(RandomState)": (lambda t: init.make_rng(np.random.RandomState(0)), TypeError, r"make_rng: seed",
                              r"RandomState", r"numpy\.random\.Generator"),
    "he_normal shape (0, 3)": (lambda t: init.he_normal((0, 3), None, 0), ValueError, r"he_normal: shape",
                               r"got \(0, 3\)", r"an int >= 1 or a non-empty tuple"),
    "he_normal fan_in=0": (lambda t: init.he_normal((2, 3), 0, 0), ValueError, r"he_normal: fan_in", r"got 0", INT1),
    "he_normal rng=None": (lambda t: init.he_normal((2, 3), None, None), TypeError, r"he_normal: rng", r"got None",
                           r"a numpy\.random\.Generator or an int seed"),
    "glorot_uniform dtype=int": (lambda t: init.glorot_uniform((2, 3), None, None, 0, dtype=int), TypeError,
                                 r"glorot_uniform: dtype", r"int", r"float32 or float64"),
    "set_num_threads(0)": (lambda t: threads.set_num_threads(0), ValueError, r"set_num_threads: n", r"got 0", INT1),
    "set_num_threads(1.5)": (lambda t: threads.set_num_threads(1.5), TypeError, r"set_num_threads: n", r"got 1\.5",
                             INT1),
    "check_layer with float32 x": (lambda t: check_layer(ReLU(), np.ones((2, 2), np.float32)), TypeError,
                                   r"check_layer\(ReLU\): x", r"float32", r"float64"),
}


def _rows():
    for case_id, row in CASES.items():
        yield pytest.param(*row, id=case_id)


def all_of(*patterns: str) -> str:
    """A regex that matches when every pattern occurs somewhere (in any order)."""
    return "(?s)" + "".join(f"(?=.*?(?:{p}))" for p in patterns)


@pytest.mark.parametrize(("call", "error", "who", "got", "allowed"), list(_rows()))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    with pytest.raises(error, match=all_of(who, got, allowed)) as info:
        call(tmp_path)
    # never a subclass surprise (numpy's AxisError is a ValueError too); NaN/Inf refusals are the
    # package's own NonFiniteError, a ValueError that training uses to recognise a divergence
    allowed_types = {error, NonFiniteError} if error is ValueError else {error}
    assert type(info.value) in allowed_types or error is FileNotFoundError
    assert not (tmp_path / "pwned").exists()  # no payload was ever unpickled


def test_the_battery_is_large_enough():
    """Issue 6: at least 60 distinct bad inputs (one per row)."""
    assert len(CASES) >= 60
    assert len({id(row) for row in CASES.values()}) == len(CASES)


# ------------------------------------------------------------------------------------------
# hypothesis: a random invalid argument for a random constructor
# ------------------------------------------------------------------------------------------

NOT_NUMBERS = st.one_of(st.text(max_size=3), st.none(), st.just([1]), st.just({}), st.complex_numbers(
    allow_nan=False, allow_infinity=False).filter(lambda z: z.imag != 0))
BAD_FLOAT = st.one_of(st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.booleans(), NOT_NUMBERS)


def bad_int(minimum: int, none_ok: bool = False):
    """Values ``check_int(..., minimum)`` must refuse."""
    kinds = [st.integers(max_value=minimum - 1), st.floats(allow_nan=True), st.booleans(),
             st.text(max_size=3), st.just([minimum])]
    if not none_ok:
        kinds.append(st.none())
    return st.one_of(*kinds)


def bad_pair(minimum: int):
    """Values ``pair(..., minimum)`` must refuse."""
    return st.one_of(
        st.integers(max_value=minimum - 1), st.integers(min_value=MAX_SIZE + 1, max_value=2**70),
        st.floats(), st.booleans(), st.none(), st.text(min_size=1, max_size=3).filter(
            lambda s: s not in ("valid", "same")),
        st.tuples(st.integers(min_value=minimum, max_value=5)),  # length 1
        st.tuples(*[st.integers(min_value=minimum, max_value=5)] * 3),  # length 3
        st.tuples(st.integers(min_value=minimum, max_value=5), st.integers(max_value=minimum - 1)),
        st.tuples(st.integers(min_value=minimum, max_value=5), st.floats()),
    )


NEGATIVE_FLOAT = st.floats(max_value=-math.ulp(0.0))  # below 0 (max_value=0 would allow -0.0)


def bad_unit_interval():
    """Values refused for a number in [0, 1) (dropout p, momentum, betas)."""
    return st.one_of(st.floats(min_value=1.0), NEGATIVE_FLOAT, BAD_FLOAT)


def bad_positive_float():
    return st.one_of(st.floats(max_value=0.0), BAD_FLOAT)


def bad_non_negative_float():
    return st.one_of(NEGATIVE_FLOAT, BAD_FLOAT)


BAD_DTYPE = st.sampled_from(["float16", "int32", "complex64", "bool", "foo", None, int, np.uint8, object])
NOT_BOOL = st.one_of(st.text(max_size=3), st.none(), st.floats(), st.integers(min_value=2), st.just([True]))

# constructor -> (valid keyword arguments, {argument: strategy of values it must refuse})
CONSTRUCTORS = {
    "Conv2D": (Conv2D, {"in_channels": 1, "out_channels": 2, "kernel_size": 3}, {
        "in_channels": bad_int(1), "out_channels": bad_int(1), "kernel_size": bad_pair(1),
        "stride": bad_pair(1), "padding": bad_pair(0), "seed": bad_int(0, none_ok=True),
        "bias": st.one_of(st.text(max_size=6).filter(lambda s: s not in ("tied", "untied")), st.booleans(),
                          st.integers()),
        "dtype": BAD_DTYPE, "input_size": bad_pair(1).filter(lambda v: v is not None)}),
    "Dense": (Dense, {"in_features": 3, "out_features": 2}, {
        "in_features": bad_int(1), "out_features": bad_int(1), "bias": NOT_BOOL.filter(lambda v: v not in (0, 1)),
        "dtype": BAD_DTYPE, "seed": bad_int(0, none_ok=True)}),
    "MaxPool2D": (MaxPool2D, {"kernel_size": 3}, {
        "kernel_size": bad_pair(1), "stride": bad_pair(1).filter(lambda v: v is not None),
        "padding": st.one_of(bad_pair(0), st.integers(min_value=2, max_value=10**6))}),
    "AvgPool2D": (AvgPool2D, {"kernel_size": 3}, {
        "kernel_size": bad_pair(1), "stride": bad_pair(1).filter(lambda v: v is not None),
        "padding": st.one_of(bad_pair(0), st.integers(min_value=2, max_value=10**6)),
        "trainable_scale": NOT_BOOL.filter(lambda v: v is not None and v not in (0, 1)),
        "channels": bad_int(1, none_ok=True), "dtype": BAD_DTYPE,
        "count_include_pad": NOT_BOOL.filter(lambda v: v not in (0, 1))}),
    "BatchNorm2D": (BatchNorm2D, {"num_features": 3}, {
        "num_features": bad_int(1), "eps": bad_positive_float(), "dtype": BAD_DTYPE,
        "momentum": st.one_of(st.floats(min_value=1.0, exclude_min=True), NEGATIVE_FLOAT,
                              BAD_FLOAT.filter(lambda v: v is not None)),
        "affine": NOT_BOOL.filter(lambda v: v not in (0, 1)),
        "track_running_stats": NOT_BOOL.filter(lambda v: v not in (0, 1))}),
    "Flatten": (Flatten, {}, {"order": st.one_of(st.text(max_size=2).filter(lambda s: s not in ("C", "F")),
                                                 st.none(), st.integers())}),
    "Dropout": (Dropout, {}, {"p": bad_unit_interval(), "seed": bad_int(0, none_ok=True)}),
    "SGD": (optim.SGD, {"lr": 0.1, "momentum": 0.5}, {
        "lr": bad_positive_float(), "momentum": bad_unit_interval(), "weight_decay": bad_non_negative_float(),
        "nesterov": NOT_BOOL.filter(lambda v: v not in (0, 1))}),
    "Adam": (optim.Adam, {}, {
        "lr": bad_positive_float(), "eps": bad_positive_float(), "weight_decay": bad_non_negative_float(),
        "betas": st.one_of(st.tuples(bad_unit_interval(), st.just(0.999)), st.tuples(st.just(0.9), bad_unit_interval()),
                           st.tuples(st.just(0.9)), st.text(max_size=3), st.none(), st.floats())}),
    "StepLR": (lambda **kw: optim.StepLR(optim.SGD(0.1), **kw), {"step_size": 2}, {
        "step_size": bad_int(1), "gamma": bad_positive_float()}),
    "CosineAnnealingLR": (lambda **kw: optim.CosineAnnealingLR(optim.SGD(0.1), **kw), {"t_max": 5}, {
        "t_max": bad_int(1), "eta_min": bad_non_negative_float(), "warmup": bad_int(0)}),
    "RandomShift": (RandomShift, {}, {"max_shift": bad_int(0), "fill": st.one_of(st.booleans(), NOT_NUMBERS)}),
}


@st.composite
def invalid_construction(draw):
    owner = draw(st.sampled_from(sorted(CONSTRUCTORS)))
    factory, valid, invalid = CONSTRUCTORS[owner]
    argument = draw(st.sampled_from(sorted(invalid)))
    value = draw(invalid[argument])
    return owner, factory, {**valid, argument: value}, argument, value


@given(invalid_construction())
def test_random_invalid_constructor_argument(case):
    owner, factory, kwargs, argument, value = case
    with pytest.raises((TypeError, ValueError)) as info:
        factory(**kwargs)
    message = str(info.value)
    assert message.startswith(owner), message
    assert re.search(rf"\b{argument}\b", message), (argument, value, message)


# ------------------------------------------------------------------------------------------
# hypothesis: random conv / pool geometries, kernels larger than the padded input included
# ------------------------------------------------------------------------------------------


@st.composite
def window_layer_and_input(draw):
    kind = draw(st.sampled_from(["Conv2D", "MaxPool2D", "AvgPool2D"]))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sy, sx = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    c = draw(st.integers(1, 3))
    if kind == "Conv2D":
        padding = draw(st.one_of(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                                 st.just("valid"), st.just("same") if (sy, sx) == (1, 1) else st.just("valid")))
        layer = Conv2D(c, 2, (kh, kw), stride=(sy, sx), padding=padding, seed=0)
        if padding == "same":
            pads = (kh - 1, kw - 1)
        elif padding == "valid":
            pads = (0, 0)
        else:
            pads = (2 * padding[0], 2 * padding[1])
    else:
        padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
        cls = MaxPool2D if kind == "MaxPool2D" else AvgPool2D
        layer = cls((kh, kw), stride=(sy, sx), padding=padding)
        pads = (2 * padding[0], 2 * padding[1])
    shape = (draw(st.integers(1, 2)), c, draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    return layer, shape, (kh, kw), (sy, sx), pads


@given(window_layer_and_input())
def test_random_window_geometry_fits_or_raises_naming_the_layer(case):
    layer, shape, (kh, kw), (sy, sx), (py, px) = case
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    fits = kh <= shape[2] + py and kw <= shape[3] + px
    if not fits:
        with pytest.raises(ValueError, match=all_of(re.escape(repr(layer)), r"larger than the padded input",
                                                    r"must fit inside")):
            layer.forward(x)
        with pytest.raises(ValueError, match=re.escape(repr(layer))):
            layer.output_shape(shape[1:])
        return
    out = layer.forward(x)
    oh = conv_output_size(shape[2] + py, kh, sy, 0)
    ow = conv_output_size(shape[3] + px, kw, sx, 0)
    assert out.shape[2:] == (oh, ow) and out.shape[0] == shape[0]
    assert tuple(layer.output_shape(shape[1:])) == out.shape[1:]
    assert np.isfinite(out).all()
    dx = layer.backward(np.ones_like(out))
    assert dx.shape == x.shape and np.isfinite(dx).all()


# ------------------------------------------------------------------------------------------
# hypothesis: random bad inputs for random layers
# ------------------------------------------------------------------------------------------

LAYER_INPUTS = {  # a fresh layer and the shape of a good input for it
    "Conv2D": (lambda: Conv2D(2, 3, 3, padding=1, seed=0), (2, 2, 5, 5)),
    "MaxPool2D": (lambda: MaxPool2D(2), (2, 2, 4, 4)),
    "AvgPool2D": (lambda: AvgPool2D(2, trainable_scale=True, channels=2), (2, 2, 4, 4)),
    "Dense": (lambda: Dense(4, 3, seed=0), (2, 4)),
    "ReLU": (ReLU, (2, 3)),
    "Sigmoid": (Sigmoid, (2, 3)),
    "Tanh": (Tanh, (2, 3)),
    "Softmax": (Softmax, (2, 3)),
    "Flatten": (Flatten, (2, 2, 3, 3)),
    "Dropout": (lambda: Dropout(0.3, seed=0), (2, 3)),
}


@st.composite
def corrupted_input(draw):
    name = draw(st.sampled_from(sorted(LAYER_INPUTS)))
    factory, shape = LAYER_INPUTS[name]
    x = np.random.default_rng(draw(st.integers(0, 2**16))).random(shape)
    kinds = ["nan", "inf", "-inf", "object", "complex", "string", "empty"]
    if name in ("Conv2D", "MaxPool2D", "AvgPool2D", "Dense"):
        kinds += ["ndim+1", "ndim-1"]
    if name in ("Conv2D", "AvgPool2D", "Dense"):
        kinds.append("features")
    kind = draw(st.sampled_from(kinds))
    if kind in ("nan", "inf", "-inf"):
        index = tuple(draw(st.integers(0, s - 1)) for s in shape)
        x[index] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[kind]
        error, pattern = ValueError, r"NaN or Inf"
    elif kind == "object":
        x, error, pattern = x.astype(object), TypeError, r"dtype object"
    elif kind == "complex":
        x, error, pattern = x.astype(np.complex64), TypeError, r"dtype complex64"
    elif kind == "string":
        x, error, pattern = x.astype(str), TypeError, r"dtype <U"
    elif kind == "empty":
        x, error, pattern = x[:0], ValueError, r"must not be empty"
    elif kind == "ndim+1":
        x, error, pattern = x[None], ValueError, rf"{len(shape) + 1}-D"
    elif kind == "ndim-1":
        x, error, pattern = x[0], ValueError, rf"{len(shape) - 1}-D"
    else:  # one channel / feature too many
        x = np.concatenate([x, x[:, :1]], axis=1)
        error, pattern = ValueError, r"\(2, [35][,)]"
    training = draw(st.booleans())
    return factory(), x, training, error, pattern


@given(corrupted_input())
def test_random_bad_forward_input_names_the_layer(case):
    layer, x, training, error, pattern = case
    with pytest.raises(error, match=all_of(re.escape(repr(layer)) + r": x", pattern)):
        layer.forward(x, training=training)


# ------------------------------------------------------------------------------------------
# hypothesis: random bad labels for the losses and for fit / evaluate
# ------------------------------------------------------------------------------------------


@st.composite
def bad_labels(draw):
    n, k = draw(st.integers(1, 6)), draw(st.integers(2, 5))
    labels = np.array(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)), dtype=np.int64)
    kind = draw(st.sampled_from(["too large", "negative", "fraction", "nan", "length"]))
    index = draw(st.integers(0, n - 1))
    if kind == "too large":
        labels[index] = draw(st.integers(k, 2**40))
        pattern = rf"got {labels[index]} at index {index}"
    elif kind == "negative":
        labels[index] = draw(st.integers(-(2**40), -1))
        pattern = rf"got {labels[index]} at index {index}"
    elif kind in ("fraction", "nan"):
        labels = labels.astype(np.float64)
        labels[index] = math.nan if kind == "nan" else labels[index] + draw(st.sampled_from([0.5, 0.25, -0.001]))
        pattern = rf"whole numbers.* at index {index}"
    else:
        labels = np.concatenate([labels, labels[:draw(st.integers(1, n))]]) if draw(st.booleans()) else labels[:-1]
        pattern = rf"has {len(labels)} labels"
    return n, k, labels, pattern


@given(bad_labels(), st.sampled_from([losses.SoftmaxCrossEntropy, losses.MeanSquaredError]))
def test_random_bad_labels_for_the_losses(case, loss_class):
    n, k, labels, pattern = case
    logits = np.random.default_rng(0).standard_normal((n, k))
    with pytest.raises(ValueError, match=all_of(loss_class.__name__ + r": target", pattern)):
        loss_class().forward(logits, labels)


@given(bad_labels())
def test_random_bad_labels_for_fit_and_evaluate(case):
    n, k, labels, _ = case
    net = Sequential([Flatten(), Dense(4, k, seed=0)])
    x = np.random.default_rng(1).random((n, 1, 2, 2)).astype(np.float32)
    for call, owner in ((lambda: net.fit(x, labels, epochs=1, batch_size=2, optimizer=optim.SGD(0.1),
                                         loss=losses.SoftmaxCrossEntropy(), progress=False, log=None),
                         "Sequential.fit"),
                        (lambda: net.evaluate(x, labels), "Sequential.evaluate")):
        with pytest.raises((TypeError, ValueError), match=re.escape(owner) + r": (x|y)"):
            call()


# ------------------------------------------------------------------------------------------
# accepted inputs: integer / float16 images converted; memory order never changes the result
# ------------------------------------------------------------------------------------------


def small_ints(shape, seed=0):
    """Small integers: exact in every dtype below, so every conversion gives the same numbers."""
    return np.random.default_rng(seed).integers(-3, 4, size=shape)


LAYERS_FOR_ORDER = {
    "Conv2D": (lambda: Conv2D(2, 3, (3, 2), stride=(2, 1), padding=1, seed=0), (3, 2, 7, 6)),
    "Conv2D untied": (lambda: Conv2D(2, 3, 3, bias="untied", input_size=(6, 6), seed=0), (3, 2, 6, 6)),
    "MaxPool2D": (lambda: MaxPool2D(3, stride=2, padding=1), (3, 2, 7, 6)),
    "MaxPool2D 2x2": (lambda: MaxPool2D(2), (3, 2, 6, 6)),
    "AvgPool2D": (lambda: AvgPool2D(2, trainable_scale=True, channels=2), (3, 2, 6, 6)),
    "AvgPool2D count_include_pad=False": (lambda: AvgPool2D(3, 2, 1, count_include_pad=False), (3, 2, 7, 6)),
    "BatchNorm2D": (lambda: BatchNorm2D(2), (3, 2, 4, 5)),
    "GlobalAvgPool2D": (GlobalAvgPool2D, (3, 2, 4, 5)),
    "Dense": (lambda: Dense(6, 4, seed=0), (3, 6)),
    "Flatten F": (lambda: Flatten("F"), (3, 2, 4, 5)),
    "ReLU": (ReLU, (3, 2, 4, 5)),
    "Sigmoid": (Sigmoid, (3, 5)),
    "Softmax": (Softmax, (3, 5)),
}


def variants(a):
    """The same numbers as C, Fortran-ordered, non-contiguous, integer and float16 arrays."""
    doubled = np.repeat(a, 2, axis=-1)
    return {
        "C": np.ascontiguousarray(a, np.float32),
        "F": np.asfortranarray(a.astype(np.float32)),
        "strided": doubled.astype(np.float32)[..., ::2],
        "reversed view": np.ascontiguousarray(a[::-1].astype(np.float32))[::-1],
        "int64": a.astype(np.int64),
        "int8": a.astype(np.int8),
        "float16": a.astype(np.float16),
        "float64 F": np.asfortranarray(a.astype(np.float64)),
    }


@pytest.mark.parametrize("name", sorted(LAYERS_FOR_ORDER))
def test_integer_float16_and_any_memory_order_give_the_same_results(name):
    factory, shape = LAYERS_FOR_ORDER[name]
    a = small_ints(shape)
    reference = factory()
    y = reference.forward(variants(a)["C"])
    dout = small_ints(y.shape, seed=1)
    dx = reference.backward(dout.astype(np.float32))
    grads = {k: v.copy() for k, v in reference.grads.items()}
    for label, xv in variants(a).items():
        layer = factory()
        out = layer.forward(xv)
        if label in ("int64", "int8", "float16"):
            assert out.dtype == np.float32, label  # converted, to float32
        np.testing.assert_allclose(out, y, rtol=1e-6, atol=1e-6, err_msg=label)
        for dlabel, dv in variants(dout).items():
            if dlabel not in ("C", label):
                continue
            got = layer.backward(dv)
            np.testing.assert_allclose(got, dx, rtol=1e-6, atol=1e-6, err_msg=f"{label} / dout {dlabel}")
            for key, g in layer.grads.items():
                np.testing.assert_allclose(g, grads[key], rtol=1e-5, atol=1e-5, err_msg=f"{label} {key}")


def test_sequential_accepts_uint8_and_fortran_images_and_gives_the_same_answers():
    # binary uint8 images (0/1): integers beyond [0, 1] are raw pixels, refused by test_training
    a = np.random.default_rng(0).integers(0, 2, size=(6, 1, 6, 6)).astype(np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    reference = model().predict(a.astype(np.float32))
    for xv in (a, np.asfortranarray(a), a.astype(np.float16), np.repeat(a, 2, axis=-1)[..., ::2],
               a.astype(np.int32)):
        np.testing.assert_allclose(model().predict(xv), reference, rtol=1e-6, atol=1e-7)
        assert model().evaluate(xv, y)["loss"] == pytest.approx(model().evaluate(a.astype(np.float32), y)["loss"],
                                                                rel=1e-6)
    settings = {"epochs": 2, "batch_size": 4, "loss": losses.SoftmaxCrossEntropy(), "seed": 0,
                "progress": False, "log": None}
    net = model()
    net.fit(a, y.astype(np.uint8), optimizer=optim.Adam(1e-3), **settings)  # uint8 images and labels
    assert all(np.isfinite(p).all() for p in net.params.values())
    trained = []
    xf = (a / 255).astype(np.float32)
    for xv in (xf, np.asfortranarray(xf), np.repeat(xf, 2, axis=-1)[..., ::2], xf.astype(np.float64)):
        net = model()
        net.fit(xv, y, optimizer=optim.Adam(1e-2), **settings)
        trained.append(net.params)
    for params in trained[1:]:
        for key in params:
            np.testing.assert_allclose(params[key], trained[0][key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_signal_accepts_integers_and_any_order():
    a, k = small_ints((5, 6)), small_ints((3, 2), seed=1)
    for mode in ("full", "valid", "same"):
        reference = S.correlate2d(a.astype(np.float64), k.astype(np.float64), mode)
        for av in (a, np.asfortranarray(a), np.repeat(a, 2, axis=1)[:, ::2], a.astype(np.float16)):
            np.testing.assert_array_equal(S.correlate2d(av, k, mode), reference)
