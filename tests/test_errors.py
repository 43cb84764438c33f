"""The bad-input battery: every table counted together, and the rows and hypothesis tests of the
modules that other work is restructuring (layers, functional, im2col and the convolution
strategies, shapes, signal, blocks, onnx, cli). Every public entry point, given a bad argument,
raises ``ValueError`` / ``TypeError`` (a missing file: ``FileNotFoundError``) whose message names
who is complaining (the layer, function or argument), the value received and what is allowed.

- ``CASES``: a table ``id -> (callable, exception, who, got, allowed)``; the three regexes must all
  be found in the message (in any order). Each row is one distinct bad input. The rows of the
  other modules are in the ``BAD_INPUTS`` table of their own test file (model, training,
  checkpoint, augment, losses, optim, init, threads, gradcheck, datasets); the machinery they
  share is in ``bad_input.py``. The rows here move next to their modules' tests once those
  modules have their new layout; the battery's count and the constructor draw stay here.
- Hypothesis generators draw a random invalid argument for a random constructor (layers,
  optimizers, schedules, augmentations), random invalid inputs for random layers and random
  conv / pool geometries (kernels larger than the padded input included), and check the exception
  type and that the message names the argument (never a Numba typing error, an IndexError from a
  kernel, or silent garbage).
- The flip side: integer and float16 images are accepted and converted; C-, Fortran-ordered and
  non-contiguous arrays give the same results.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import test_augment
import test_checkpoint
import test_datasets_errors
import test_fit_arguments
import test_gradcheck
import test_init
import test_losses
import test_model
import test_optim
import test_threads
from bad_input import (
    BAD_DTYPE,
    BAD_FLOAT,
    FINITE,
    INT0,
    INT1,
    NEGATIVE_FLOAT,
    NOT_BOOL,
    PAIR0,
    PAIR1,
    REAL,
    ROW_FIELDS,
    X,
    all_of,
    bad_int,
    bad_pair,
    bad_positive_float,
    bad_unit_interval,
    check_bad_input,
    check_invalid_construction,
    invalid_construction,
    rows,
    with_value,
)
from hypothesis import given
from hypothesis import strategies as st

from cnn_im2col import functional as F
from cnn_im2col import im2col as im2col_module
from cnn_im2col import signal as S
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
from cnn_im2col.shapes import MAX_SIZE, conv_output_size

# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def conv(**kw):
    return Conv2D(3, 4, 3, seed=0, **kw)


def after_forward(layer, x=X, training=False):
    layer.forward(x, training=training)
    return layer


# ------------------------------------------------------------------------------------------
# the table: id -> (callable(tmp), exception, who, got, allowed)
# ------------------------------------------------------------------------------------------

C2 = r"Conv2D\(3, 4, 3, seed=0\)"

CASES = {
    # ---- constructors: Conv2D
    "Conv2D in_channels=0": (lambda t: Conv2D(0, 4, 3), ValueError, r"Conv2D: in_channels",
                             r"got 0", INT1),
    "Conv2D in_channels=2.0": (lambda t: Conv2D(2.0, 4, 3), TypeError, r"Conv2D: in_channels",
                               r"got 2\.0", INT1),
    "Conv2D in_channels=True": (lambda t: Conv2D(True, 4, 3), TypeError, r"Conv2D: in_channels",
                                r"got True", INT1),
    "Conv2D in_channels=None": (lambda t: Conv2D(None, 4, 3), TypeError, r"Conv2D: in_channels",
                                r"got None", INT1),
    "Conv2D out_channels=-3": (lambda t: Conv2D(1, -3, 3), ValueError, r"Conv2D: out_channels",
                               r"got -3", INT1),
    "Conv2D kernel_size=0": (lambda t: Conv2D(1, 4, 0), ValueError, r"Conv2D: kernel_size",
                             r"got 0", PAIR1),
    "Conv2D kernel_size=(3,)": (lambda t: Conv2D(1, 4, (3,)), ValueError, r"Conv2D: kernel_size",
                                r"got \(3,\)", PAIR1),
    "Conv2D kernel_size=(3, 3, 3)": (lambda t: Conv2D(1, 4, (3, 3, 3)), ValueError,
                                     r"Conv2D: kernel_size",
                                     r"got \(3, 3, 3\)", PAIR1),
    "Conv2D kernel_size=2.5": (lambda t: Conv2D(1, 4, 2.5), TypeError, r"Conv2D: kernel_size",
                               r"got 2\.5", PAIR1),
    "Conv2D kernel_size='3'": (lambda t: Conv2D(1, 4, "3"), TypeError, r"Conv2D: kernel_size",
                               r"got '3'", PAIR1),
    "Conv2D kernel_size=(True, 3)": (lambda t: Conv2D(1, 4, (True, 3)), TypeError,
                                     r"Conv2D: kernel_size",
                                     r"got \(True, 3\)", PAIR1),
    "Conv2D kernel_size=2**64": (lambda t: Conv2D(1, 4, 2**64), ValueError, r"Conv2D: kernel_size",
                                 str(2**64), rf"at most {MAX_SIZE}"),
    "Conv2D stride=0": (lambda t: Conv2D(1, 4, 3, stride=0), ValueError, r"Conv2D: stride",
                        r"got 0", PAIR1),
    "Conv2D stride=-1": (lambda t: Conv2D(1, 4, 3, stride=-1), ValueError, r"Conv2D: stride",
                         r"got -1", PAIR1),
    "Conv2D stride=(1, 0)": (lambda t: Conv2D(1, 4, 3, stride=(1, 0)), ValueError,
                             r"Conv2D: stride",
                             r"got \(1, 0\)", PAIR1),
    "Conv2D stride=1.0": (lambda t: Conv2D(1, 4, 3, stride=1.0), TypeError, r"Conv2D: stride",
                          r"got 1\.0", PAIR1),
    "Conv2D stride=2**64": (lambda t: Conv2D(1, 4, 3, stride=2**64), ValueError, r"Conv2D: stride",
                            str(2**64), rf"at most {MAX_SIZE}"),
    "Conv2D dilation=0": (lambda t: Conv2D(1, 4, 3, dilation=0), ValueError, r"Conv2D: dilation",
                          r"got 0", PAIR1),
    "Conv2D dilation=(1, -2)": (lambda t: Conv2D(1, 4, 3, dilation=(1, -2)), ValueError,
                                r"Conv2D: dilation",
                                r"got \(1, -2\)", PAIR1),
    "Conv2D groups=0": (lambda t: Conv2D(2, 4, 3, groups=0), ValueError, r"Conv2D: groups",
                        r"got 0", INT1),
    "Conv2D groups=1.5": (lambda t: Conv2D(2, 4, 3, groups=1.5), TypeError, r"Conv2D: groups",
                          r"got 1\.5", INT1),
    "Conv2D groups not dividing in_channels": (lambda t: Conv2D(3, 6, 3, groups=2), ValueError,
                                               r"Conv2D: groups must divide in_channels",
                                               r"groups=2",
                                               r"in_channels=3"),
    "Conv2D groups not dividing out_channels": (lambda t: Conv2D(4, 6, 3, groups=4), ValueError,
                                                r"Conv2D: groups must divide out_channels",
                                                r"groups=4",
                                                r"out_channels=6"),
    "Conv2D algorithm unknown": (lambda t: Conv2D(2, 4, 3, algorithm="fft"), ValueError,
                                 r"Conv2D: algorithm",
                                 r"got 'fft'", r"\('auto', 'im2col', 'winograd'\)"),
    "Conv2D winograd with stride 2": (
        lambda t: Conv2D(2, 4, 3, stride=2, algorithm="winograd"), ValueError,
        r"Conv2D: algorithm='winograd'", r"stride \(2, 2\)",
        r"needs kernel_size 3 or 5, stride 1 and dilation 1"),
    "conv2d_forward winograd with a 7x7 kernel": (
        lambda t: F.conv2d_forward(np.ones((1, 2, 9, 9)), np.ones((2, 2, 7, 7)),
                                   algorithm="winograd"), ValueError,
        r"conv2d: algorithm='winograd'", r"got kernel \(7, 7\)",
        r"needs a 3x3 or 5x5 kernel, stride 1 and dilation 1"),
    "Conv2D dilated kernel larger than input": (lambda t: Conv2D(1, 1, 3, dilation=3, input_size=6),
                                                ValueError,
                                                r"Conv2D",
                                                r"dilation \(3, 3\): its span size \(7, 7\)",
                                                r"larger than the padded input"),
    "conv2d_forward groups not dividing out channels": (
        lambda t: F.conv2d_forward(np.ones((1, 4, 5, 5)), np.ones((3, 2, 3, 3)), groups=2),
        ValueError,
        r"conv2d: groups must divide out_channels", r"groups=2", r"out_channels=3"),
    "conv2d_forward wrong channels for groups": (
        lambda t: F.conv2d_forward(np.ones((1, 3, 5, 5)), np.ones((4, 2, 3, 3)), groups=2),
        ValueError,
        r"conv2d: x must have 4 channels", r"got shape \(1, 3, 5, 5\)", r"\(N, 4, H, W\)"),
    "Conv2D padding=-1": (lambda t: Conv2D(1, 4, 3, padding=-1), ValueError, r"Conv2D: padding",
                          r"got -1", PAIR0),
    "Conv2D padding=(0, -2)": (lambda t: Conv2D(1, 4, 3, padding=(0, -2)), ValueError,
                               r"Conv2D: padding",
                               r"got \(0, -2\)", PAIR0),
    "Conv2D padding=1.5": (lambda t: Conv2D(1, 4, 3, padding=1.5), TypeError, r"Conv2D: padding",
                           r"got 1\.5", PAIR0),
    "Conv2D padding='full'": (lambda t: Conv2D(1, 4, 3, padding="full"), ValueError,
                              r"Conv2D: padding",
                              r"got 'full'", r"one of \('valid', 'same'\)"),
    "Conv2D padding='SAME'": (lambda t: Conv2D(1, 4, 3, padding="SAME"), ValueError,
                              r"Conv2D: padding",
                              r"got 'SAME'", r"one of \('valid', 'same'\)"),
    "Conv2D bias='shared'": (lambda t: Conv2D(1, 4, 3, bias="shared"), ValueError, r"Conv2D: bias",
                             r"got 'shared'", r"one of \('tied', 'untied', None\)"),
    "Conv2D bias=True": (lambda t: Conv2D(1, 4, 3, bias=True), ValueError, r"Conv2D: bias",
                         r"got True",
                         r"one of \('tied', 'untied', None\)"),
    "Conv2D untied bias without input_size": (lambda t: Conv2D(1, 4, 3, bias="untied"), ValueError,
                                              r"Conv2D: bias='untied'", r"got input_size=None",
                                              r"needs input_size=\(H, W\)"),
    "Conv2D untied bias, kernel larger than input_size": (
        lambda t: Conv2D(1, 4, 5, bias="untied", input_size=(3, 3)), ValueError, r"Conv2D\(1, 4, 5",
        r"padded input \(3, 3\)", r"must fit inside"),
    "Conv2D input_size=0": (lambda t: Conv2D(1, 4, 3, input_size=0), ValueError,
                            r"Conv2D: input_size",
                            r"got 0", PAIR1),
    "Conv2D input_size=(28, 28.0)": (lambda t: Conv2D(1, 4, 3, input_size=(28, 28.0)), TypeError,
                                     r"Conv2D: input_size", r"got \(28, 28\.0\)", PAIR1),
    "Conv2D dtype=float16": (lambda t: Conv2D(1, 4, 3, dtype="float16"), TypeError,
                             r"Conv2D: dtype",
                             r"got 'float16'", r"float32 or float64"),
    "Conv2D dtype=int": (lambda t: Conv2D(1, 4, 3, dtype=int), TypeError, r"Conv2D: dtype",
                         r"got <class 'int'>",
                         r"float32 or float64"),
    "Conv2D dtype=None": (lambda t: Conv2D(1, 4, 3, dtype=None), TypeError, r"Conv2D: dtype",
                          r"got None",
                          r"float32 or float64"),
    "Conv2D seed=-1": (lambda t: Conv2D(1, 4, 3, seed=-1), ValueError, r"Conv2D: seed", r"got -1",
                       INT0),
    "Conv2D seed=1.5": (lambda t: Conv2D(1, 4, 3, seed=1.5), TypeError, r"Conv2D: seed",
                        r"got 1\.5", INT0),
    # ---- constructors: Dense
    "Dense in_features=0": (lambda t: Dense(0, 3), ValueError, r"Dense: in_features", r"got 0",
                            INT1),
    "Dense out_features=1.5": (lambda t: Dense(3, 1.5), TypeError, r"Dense: out_features",
                               r"got 1\.5", INT1),
    "Dense bias='yes'": (lambda t: Dense(3, 3, bias="yes"), TypeError, r"Dense: bias", r"got 'yes'",
                         r"True or False"),
    "Dense dtype=complex64": (lambda t: Dense(3, 3, dtype=np.complex64), TypeError, r"Dense: dtype",
                              r"complex64",
                              r"float32 or float64"),
    "Dense seed='0'": (lambda t: Dense(3, 3, seed="0"), TypeError, r"Dense: seed", r"got '0'",
                       INT0),
    # ---- constructors: pooling
    "MaxPool2D kernel_size=0": (lambda t: MaxPool2D(0), ValueError, r"MaxPool2D: kernel_size",
                                r"got 0", PAIR1),
    "MaxPool2D kernel_size=True": (lambda t: MaxPool2D(True), TypeError, r"MaxPool2D: kernel_size",
                                   r"got True",
                                   PAIR1),
    "MaxPool2D kernel_size=2.0": (lambda t: MaxPool2D(2.0), TypeError, r"MaxPool2D: kernel_size",
                                  r"got 2\.0",
                                  PAIR1),
    "MaxPool2D stride=0": (lambda t: MaxPool2D(2, stride=0), ValueError, r"MaxPool2D: stride",
                           r"got 0", PAIR1),
    "MaxPool2D stride=-2": (lambda t: MaxPool2D(2, stride=-2), ValueError, r"MaxPool2D: stride",
                            r"got -2", PAIR1),
    "MaxPool2D stride=2**63": (lambda t: MaxPool2D(2, stride=2**63), ValueError,
                               r"MaxPool2D: stride",
                               str(2**63), rf"at most {MAX_SIZE}"),
    "MaxPool2D padding above half the window": (lambda t: MaxPool2D(3, padding=2), ValueError,
                                                r"MaxPool2D: padding", r"got \(2, 2\)",
                                                r"at most half the window \(1, 1\)"),
    "MaxPool2D padding=-1": (lambda t: MaxPool2D(3, padding=-1), ValueError, r"MaxPool2D: padding",
                             r"got -1",
                             PAIR0),
    "AvgPool2D padding (1, 2) for a 2x2 window": (lambda t: AvgPool2D(2, padding=(1, 2)),
                                                  ValueError,
                                                  r"AvgPool2D: padding", r"got \(1, 2\)",
                                                  r"at most half the window \(1, 1\)"),
    "AvgPool2D trainable_scale without channels": (lambda t: AvgPool2D(2, trainable_scale=True),
                                                   ValueError,
                                                   r"AvgPool2D: trainable_scale=True",
                                                   r"got channels=None",
                                                   r"needs channels="),
    "AvgPool2D trainable_scale='yes'": (lambda t: AvgPool2D(2, trainable_scale="yes"), TypeError,
                                        r"AvgPool2D: trainable_scale", r"got 'yes'",
                                        r"True or False"),
    "AvgPool2D channels=0": (lambda t: AvgPool2D(2, channels=0), ValueError, r"AvgPool2D: channels",
                             r"got 0", INT1),
    "AvgPool2D channels=2.5": (lambda t: AvgPool2D(2, channels=2.5), TypeError,
                               r"AvgPool2D: channels",
                               r"got 2\.5", INT1),
    "AvgPool2D dtype='int32'": (lambda t: AvgPool2D(2, dtype="int32"), TypeError,
                                r"AvgPool2D: dtype",
                                r"got 'int32'", r"float32 or float64"),
    # ---- constructors: Flatten, Dropout, RandomShift, Sequential
    "Flatten order='A'": (lambda t: Flatten("A"), ValueError, r"Flatten: order", r"got 'A'",
                          r"one of \('C', 'F'\)"),
    "Flatten order=None": (lambda t: Flatten(None), ValueError, r"Flatten: order", r"got None",
                           r"one of \('C', 'F'\)"),
    "Dropout p=1": (lambda t: Dropout(1.0), ValueError, r"Dropout: p", r"got 1\.0",
                    r"\[0\.0, 1\.0\)"),
    "Dropout p=-0.1": (lambda t: Dropout(-0.1), ValueError, r"Dropout: p", r"got -0\.1",
                       r"\[0\.0, 1\.0\)"),
    "Dropout p=nan": (lambda t: Dropout(math.nan), ValueError, r"Dropout: p", r"got nan",
                      r"finite number in \[0"),
    "Dropout p=inf": (lambda t: Dropout(math.inf), ValueError, r"Dropout: p", r"got inf",
                      r"finite number in \[0"),
    "Dropout p='0.5'": (lambda t: Dropout("0.5"), TypeError, r"Dropout: p", r"got '0\.5'",
                        r"a real number"),
    "Dropout p=True": (lambda t: Dropout(True), TypeError, r"Dropout: p", r"got True",
                       r"a real number"),
    "Dropout seed=True": (lambda t: Dropout(0.5, seed=True), TypeError, r"Dropout: seed",
                          r"got True", INT0),
    # ---- layer forward
    "Conv2D forward 3-D x": (lambda t: conv().forward(X[0]), ValueError, C2 + r": x",
                             r"3-D array of shape \(3, 6, 6\)",
                             r"must be 4-D"),
    "Conv2D forward 5-D x": (lambda t: conv().forward(X[None]), ValueError, C2 + r": x", r"5-D",
                             r"must be 4-D"),
    "Conv2D forward wrong channel count": (lambda t: conv().forward(X[:, :2]), ValueError,
                                           C2 + r": x",
                                           r"got shape \(2, 2, 6, 6\)", r"must have 3 channels"),
    "Conv2D forward kernel larger than the input": (lambda t: conv().forward(X[:, :, :2, :2]),
                                                    ValueError, C2,
                                                    r"padded input \(2, 2\)", r"must fit inside"),
    "Conv2D forward kernel larger than the padded input": (
        lambda t: Conv2D(3, 4, 5, padding=1, seed=0).forward(X[:, :, :2, :2]), ValueError,
        r"Conv2D\(3, 4, 5, padding=1", r"padded input \(4, 4\)", r"must fit inside"),
    "Conv2D forward NaN": (lambda t: conv().forward(with_value(X, np.nan, (1, 2, 3, 4))),
                           ValueError,
                           C2 + r": x", *FINITE),
    "Conv2D forward +Inf": (lambda t: conv().forward(with_value(X, np.inf)), ValueError,
                            C2 + r": x", *FINITE),
    "Conv2D forward -Inf": (lambda t: conv().forward(with_value(X, -np.inf)), ValueError,
                            C2 + r": x", *FINITE),
    "Conv2D forward object array": (lambda t: conv().forward(X.astype(object)), TypeError,
                                    C2 + r": x",
                                    r"dtype object", REAL),
    "Conv2D forward string array": (lambda t: conv().forward(X.astype(str)), TypeError, C2 + r": x",
                                    r"dtype <U",
                                    REAL),
    "Conv2D forward complex array": (lambda t: conv().forward(X.astype(complex)), TypeError,
                                     C2 + r": x",
                                     r"dtype complex128", REAL),
    "Conv2D forward datetime array": (
        lambda t: conv().forward(np.zeros((1, 3, 6, 6), "datetime64[s]")), TypeError,
        C2 + r": x", r"datetime64", REAL),
    "Conv2D forward empty batch": (lambda t: conv().forward(X[:0]), ValueError, C2 + r": x",
                                   r"got shape \(0, 3, 6, 6\)", r"must not be empty"),
    "Conv2D forward empty plane": (lambda t: conv().forward(X[:, :, :0]), ValueError, C2 + r": x",
                                   r"got shape \(2, 3, 0, 6\)", r"must not be empty"),
    "Conv2D forward ragged list": (lambda t: conv().forward([[1, 2], [3]]), TypeError, C2 + r": x",
                                   r"got list",
                                   r"a numeric array"),
    "Conv2D forward None": (lambda t: conv().forward(None), TypeError, C2 + r": x", r"dtype object",
                            REAL),
    "Conv2D untied forward at another size": (
        lambda t: Conv2D(3, 4, 3, bias="untied", input_size=(6, 6)).forward(X[:, :, :5, :5]),
        ValueError,
        r"Conv2D\(3, 4, 3, bias='untied'", r"got shape \(2, 3, 5, 5\)", r"\(6, 6\) pixels"),
    "MaxPool2D forward window larger than the input": (lambda t: MaxPool2D(7).forward(X),
                                                       ValueError,
                                                       r"MaxPool2D\(7\)", r"padded input \(6, 6\)",
                                                       r"must fit inside"),
    "MaxPool2D forward 2-D x": (lambda t: MaxPool2D(2).forward(X[0, 0]), ValueError,
                                r"MaxPool2D\(2\): x",
                                r"2-D array", r"must be 4-D"),
    "MaxPool2D forward NaN": (lambda t: MaxPool2D(2).forward(with_value(X, np.nan)), ValueError,
                              r"MaxPool2D\(2\): x", *FINITE),
    "MaxPool2D forward empty batch": (lambda t: MaxPool2D(2).forward(X[:0]), ValueError,
                                      r"MaxPool2D\(2\): x",
                                      r"\(0, 3, 6, 6\)", r"must not be empty"),
    "AvgPool2D forward window larger than the padded input": (
        lambda t: AvgPool2D(4, padding=1).forward(X[:, :, :1, :1]), ValueError,
        r"AvgPool2D\(4, padding=1\)",
        r"padded input \(3, 3\)", r"must fit inside"),
    "AvgPool2D forward wrong channel count": (lambda t: AvgPool2D(2, channels=2).forward(X),
                                              ValueError,
                                              r"AvgPool2D\(2, channels=2\): x",
                                              r"got shape \(2, 3, 6, 6\)",
                                              r"must have 2 channels"),
    "AvgPool2D forward complex": (lambda t: AvgPool2D(2).forward(X.astype(np.complex64)), TypeError,
                                  r"AvgPool2D\(2\): x", r"complex64", REAL),
    "Dense forward wrong feature count": (lambda t: Dense(5, 2).forward(np.ones((2, 4))),
                                          ValueError,
                                          r"Dense\(5, 2\): x", r"got \(2, 4\)", r"shape \(N, 5\)"),
    "Dense forward 4-D x": (lambda t: Dense(5, 2).forward(X), ValueError, r"Dense\(5, 2\): x",
                            r"4-D",
                            r"must be 2-D"),
    "Dense forward NaN": (lambda t: Dense(2, 2).forward([[math.nan, 1.0]]), ValueError,
                          r"Dense\(2, 2\): x", *FINITE),
    "Dense forward empty batch": (lambda t: Dense(2, 2).forward(np.ones((0, 2))), ValueError,
                                  r"Dense\(2, 2\): x",
                                  r"\(0, 2\)", r"must not be empty"),
    "ReLU forward object": (lambda t: ReLU().forward(X.astype(object)), TypeError, r"ReLU\(\): x",
                            r"object", REAL),
    "ReLU forward NaN": (lambda t: ReLU().forward([math.nan]), ValueError, r"ReLU\(\): x", *FINITE),
    "Sigmoid forward complex": (lambda t: Sigmoid().forward([1j]), TypeError, r"Sigmoid\(\): x",
                                r"complex", REAL),
    "Tanh forward string": (lambda t: Tanh().forward(["a"]), TypeError, r"Tanh\(\): x", r"<U1",
                            REAL),
    "Softmax forward 1-D": (lambda t: Softmax().forward(np.ones(3)), ValueError, r"Softmax\(\): x",
                            r"got shape \(3,\)", r"\(N, classes, \.\.\.\)"),
    "Flatten forward 1-D": (lambda t: Flatten().forward(np.ones(3)), ValueError, r"Flatten\(\): x",
                            r"got shape \(3,\)", r"at least 2 dimensions"),
    "Dropout forward string": (lambda t: Dropout(0.5).forward(["a"], training=True), TypeError,
                               r"Dropout\(\): x",
                               r"<U1", REAL),
    "Dropout forward Inf": (lambda t: Dropout(0.5).forward([math.inf], training=True), ValueError,
                            r"Dropout\(\): x", *FINITE),
    # ---- layer backward
    "Conv2D backward wrong dout shape": (
        lambda t: after_forward(conv()).backward(np.ones((2, 4, 3, 3))), ValueError,
        C2 + r": dout", r"got \(2, 4, 3, 3\)", r"output's shape \(2, 4, 4, 4\)"),
    "Conv2D backward NaN dout": (
        lambda t: after_forward(conv()).backward(np.full((2, 4, 4, 4), np.nan)),
        ValueError, C2 + r": dout", *FINITE),
    "Conv2D backward object dout": (
        lambda t: after_forward(conv()).backward(np.ones((2, 4, 4, 4), object)),
        TypeError, C2 + r": dout", r"object", REAL),
    "MaxPool2D backward wrong dout shape": (
        lambda t: after_forward(MaxPool2D(2)).backward(np.ones((2, 3, 2, 2))),
        ValueError, r"MaxPool2D\(2\): dout", r"got \(2, 3, 2, 2\)",
        r"output's shape \(2, 3, 3, 3\)"),
    "MaxPool2D backward complex dout": (
        lambda t: after_forward(MaxPool2D(2)).backward(np.ones((2, 3, 3, 3), complex)), TypeError,
        r"MaxPool2D\(2\): dout", r"complex128", REAL),
    "AvgPool2D backward wrong dout shape": (
        lambda t: after_forward(AvgPool2D(2, trainable_scale=True,
                                          channels=3)).backward(np.ones((2, 3, 2, 2))),
        ValueError, r"AvgPool2D\(2, trainable_scale=True, channels=3\): dout",
        r"got \(2, 3, 2, 2\)",
        r"output's shape \(2, 3, 3, 3\)"),
    "Dense backward wrong dout shape": (
        lambda t: after_forward(Dense(4, 3), np.ones((2, 4))).backward(np.ones((2, 4))), ValueError,
        r"Dense\(4, 3\): dout", r"got \(2, 4\)", r"output's shape \(2, 3\)"),
    "Dense backward Inf dout": (
        lambda t: after_forward(Dense(4, 3), np.ones((2, 4))).backward(np.full((2, 3), np.inf)),
        ValueError,
        r"Dense\(4, 3\): dout", *FINITE),
    "Flatten backward wrong dout shape": (
        lambda t: after_forward(Flatten()).backward(np.ones((2, 5))), ValueError,
        r"Flatten\(\): dout", r"got \(2, 5\)", r"shape \(2, 108\)"),
    "Flatten backward string dout": (
        lambda t: after_forward(Flatten()).backward(np.ones((2, 108)).astype(str)),
        TypeError, r"Flatten\(\): dout", r"<U", REAL),
    "ReLU backward wrong dout shape": (lambda t: after_forward(ReLU()).backward(np.ones((2, 3))),
                                       ValueError,
                                       r"ReLU\(\): dout", r"got \(2, 3\)",
                                       r"output's shape \(2, 3, 6, 6\)"),
    "Softmax backward wrong dout shape": (
        lambda t: after_forward(Softmax(), np.ones((2, 3))).backward(np.ones((3, 3))), ValueError,
        r"Softmax\(\): dout", r"got \(3, 3\)", r"output's shape \(2, 3\)"),
    "Dropout (training) backward wrong dout shape": (
        lambda t: after_forward(Dropout(0.5, seed=0), training=True).backward(np.ones((2, 3))),
        ValueError,
        r"Dropout\(seed=0\): dout", r"got \(2, 3\)", r"output's shape \(2, 3, 6, 6\)"),
    "Dropout (training) backward NaN dout": (
        lambda t: after_forward(Dropout(0.5, seed=0),
                                training=True).backward(np.full(X.shape, np.nan)),
        ValueError, r"Dropout\(seed=0\): dout", *FINITE),
    "Dropout (inference) backward wrong dout shape": (
        lambda t: after_forward(Dropout(0.5, seed=0), training=False).backward(np.ones((2, 3))),
        ValueError,
        r"Dropout\(seed=0\): dout", r"got \(2, 3\)", r"output's shape \(2, 3, 6, 6\)"),
    # ---- functional / im2col
    "conv2d_forward backend='torch'": (
        lambda t: F.conv2d_forward(X, np.ones((2, 3, 3, 3)), backend="torch"),
        ValueError, r"conv2d: backend", r"got 'torch'",
        r"one of \('numba', 'numpy'\)"),
    "conv2d_forward bias of the wrong shape": (
        lambda t: F.conv2d_forward(X, np.ones((2, 3, 3, 3)), bias=np.ones(3)), ValueError,
        r"conv2d: bias",
        r"got \(3,\)", r"\(2,\) \(tied\) or \(2, 4, 4\) \(untied"),
    "conv2d_forward 3-D weight": (lambda t: F.conv2d_forward(X, np.ones((3, 3, 3))), ValueError,
                                  r"conv2d: weight",
                                  r"3-D", r"must be 4-D"),
    "conv2d_forward NaN weight": (lambda t: F.conv2d_forward(X, np.full((2, 3, 3, 3), np.nan)),
                                  ValueError,
                                  r"conv2d: weight", *FINITE),
    "max_pool2d_forward padding above half": (lambda t: F.max_pool2d_forward(X, 2, padding=2),
                                              ValueError,
                                              r"max_pool2d: padding", r"got \(2, 2\)",
                                              r"at most half the window"),
    "max_pool2d_forward backend='x'": (lambda t: F.max_pool2d_forward(X, 2, backend="x"),
                                       ValueError,
                                       r"max_pool2d: backend", r"got 'x'",
                                       r"one of \('numba', 'numpy'\)"),
    "avg_pool2d_forward scale of the wrong shape": (
        lambda t: F.avg_pool2d_forward(X, 2, scale=np.ones(2)),
        ValueError, r"avg_pool2d: scale", r"got \(2,\)",
        r"shape \(3,\), one weight per feature map"),
    "avg_pool2d_forward NaN scale": (lambda t: F.avg_pool2d_forward(X, 2, scale=np.full(3, np.nan)),
                                     ValueError,
                                     r"avg_pool2d: scale", *FINITE),
    "im2col stride=-1": (lambda t: im2col_module.im2col(X, 3, stride=-1), ValueError,
                         r"im2col: stride", r"got -1", PAIR1),
    "im2col kernel larger than the input": (lambda t: im2col_module.im2col(X, 7), ValueError,
                                            r"im2col", r"padded input \(6, 6\)",
                                            r"must fit inside"),
    "im2col 3-D x": (lambda t: im2col_module.im2col(X[0], 3), ValueError, r"im2col: x", r"3-D",
                     r"must be 4-D"),
    "im2col pad_value='a'": (
        lambda t: im2col_module.im2col(X, 3, pad_value="a"), TypeError, r"im2col: pad_value",
        r"got 'a'", r"a real number"),
    "col2im cols of the wrong shape": (
        lambda t: im2col_module.col2im(np.ones((5, 27)), (2, 3, 6, 6), 3), ValueError,
        r"col2im: cols", r"got \(5, 27\)", r"must have shape \(32, 27\)"),
    "col2im input_shape of length 3": (
        lambda t: im2col_module.col2im(np.ones((32, 27)), (2, 3, 6), 3), ValueError,
        r"col2im: input_shape", r"got \(2, 3, 6\)", r"\(N, C, H, W\)"),
    "col2im input_shape with a float": (
        lambda t: im2col_module.col2im(np.ones((32, 27)), (2, 3, 6.0, 6), 3), TypeError,
        r"col2im: input_shape", r"6\.0", r"an int >= 1"),
    # ---- signal
    "correlate2d mode='circular'": (lambda t: S.correlate2d(np.ones((3, 3)), np.ones((2, 2)),
                                                            mode="circular"),
                                    ValueError, r"correlate2d: mode", r"got 'circular'",
                                    r"one of \('full', 'valid', 'same'\)"),
    "convolve2d mode=None": (lambda t: S.convolve2d(np.ones((3, 3)), np.ones((2, 2)), mode=None),
                             ValueError,
                             r"convolve2d: mode", r"got None",
                             r"one of \('full', 'valid', 'same'\)"),
    "correlate2d 3-D in1": (lambda t: S.correlate2d(np.ones((3, 3, 3)), np.ones((2, 2))),
                            ValueError,
                            r"correlate2d: in1", r"3-D", r"must be 2-D"),
    "correlate2d 1-D in2": (lambda t: S.correlate2d(np.ones((3, 3)), np.ones(2)), ValueError,
                            r"correlate2d: in2",
                            r"1-D", r"must be 2-D"),
    "correlate2d NaN": (lambda t: S.correlate2d(np.full((3, 3), np.nan), np.ones((2, 2))),
                        ValueError,
                        r"correlate2d: in1", *FINITE),
    "convolve2d Inf kernel": (lambda t: S.convolve2d(np.ones((3, 3)), np.full((2, 2), np.inf)),
                              ValueError,
                              r"convolve2d: in2", *FINITE),
    "correlate2d complex": (lambda t: S.correlate2d(np.ones((3, 3), complex), np.ones((2, 2))),
                            TypeError,
                            r"correlate2d: in1", r"complex128", REAL),
    "correlate2d object": (lambda t: S.correlate2d(np.ones((3, 3)), np.ones((2, 2), object)),
                           TypeError,
                           r"correlate2d: in2", r"object", REAL),
    "convolve2d strings": (lambda t: S.convolve2d([["a"]], np.ones((1, 1))), TypeError,
                           r"convolve2d: in1", r"<U1",
                           REAL),
    "correlate2d empty": (lambda t: S.correlate2d(np.ones((0, 3)), np.ones((2, 2))), ValueError,
                          r"correlate2d: in1", r"\(0, 3\)", r"must not be empty"),
    "convolve2d 'valid' with crossed shapes": (
        lambda t: S.convolve2d(np.ones((3, 5)), np.ones((5, 3)), mode="valid"), ValueError,
        r"convolve2d",
        r"shapes \(3, 5\) and \(5, 3\)", r"at least as large as the other in both dimensions"),
    "correlate2d ragged list": (lambda t: S.correlate2d([[1, 2], [3]], np.ones((1, 1))), TypeError,
                                r"correlate2d: in1", r"got list", r"a numeric array"),
}


@pytest.mark.parametrize(ROW_FIELDS, rows(CASES))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    check_bad_input(tmp_path, call, error, who, got, allowed)


# every table of the battery: this file's and those beside the other modules' tests
TABLES = {
    "test_errors": CASES,
    "test_model": test_model.BAD_INPUTS,
    "test_fit_arguments": test_fit_arguments.BAD_INPUTS,
    "test_checkpoint": test_checkpoint.BAD_INPUTS,
    "test_augment": test_augment.BAD_INPUTS,
    "test_losses": test_losses.BAD_INPUTS,
    "test_optim": test_optim.BAD_INPUTS,
    "test_init": test_init.BAD_INPUTS,
    "test_threads": test_threads.BAD_INPUTS,
    "test_gradcheck": test_gradcheck.BAD_INPUTS,
    "test_datasets_errors": test_datasets_errors.BAD_INPUTS,
}
BATTERY = {case_id: row for table in TABLES.values() for case_id, row in table.items()}


def test_the_battery_is_large_enough():
    """At least 60 distinct bad inputs (one per row), counted across every table; no id is used
    twice."""
    assert len(BATTERY) == sum(len(table) for table in TABLES.values())
    assert len(BATTERY) >= 60
    assert len({id(row) for row in BATTERY.values()}) == len(BATTERY)


# ------------------------------------------------------------------------------------------
# hypothesis: a random invalid argument for a random constructor
# ------------------------------------------------------------------------------------------

LAYER_CONSTRUCTORS = {
    "Conv2D": (Conv2D, {"in_channels": 1, "out_channels": 2, "kernel_size": 3}, {
        "in_channels": bad_int(1), "out_channels": bad_int(1), "kernel_size": bad_pair(1),
        "stride": bad_pair(1), "padding": bad_pair(0), "seed": bad_int(0, none_ok=True),
        "bias": st.one_of(st.text(max_size=6).filter(lambda s: s not in ("tied", "untied")),
                          st.booleans(),
                          st.integers()),
        "dtype": BAD_DTYPE, "input_size": bad_pair(1).filter(lambda v: v is not None)}),
    "Dense": (Dense, {"in_features": 3, "out_features": 2}, {
        "in_features": bad_int(1), "out_features": bad_int(1),
        "bias": NOT_BOOL.filter(lambda v: v not in (0, 1)),
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
    "Flatten": (Flatten, {},
                {"order": st.one_of(st.text(max_size=2).filter(lambda s: s not in ("C", "F")),
                                    st.none(), st.integers())}),
    "Dropout": (Dropout, {}, {"p": bad_unit_interval(), "seed": bad_int(0, none_ok=True)}),
}

# every constructor the battery draws from: the layers' and those beside the other modules' tests
CONSTRUCTORS = {**LAYER_CONSTRUCTORS, **test_optim.CONSTRUCTORS, **test_augment.CONSTRUCTORS}


@given(invalid_construction(CONSTRUCTORS))
def test_random_invalid_constructor_argument(case):
    check_invalid_construction(case)


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
                                 st.just("valid"),
                                 st.just("same") if (sy, sx) == (1, 1) else st.just("valid")))
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
        with pytest.raises(ValueError,
                           match=all_of(re.escape(repr(layer)), r"larger than the padded input",
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
# accepted inputs: integer / float16 images converted; memory order never changes the result
# ------------------------------------------------------------------------------------------


def small_ints(shape, seed=0):
    """Small integers: exact in every dtype below, so every conversion gives the same numbers."""
    return np.random.default_rng(seed).integers(-3, 4, size=shape)


LAYERS_FOR_ORDER = {
    "Conv2D": (lambda: Conv2D(2, 3, (3, 2), stride=(2, 1), padding=1, seed=0), (3, 2, 7, 6)),
    "Conv2D untied": (lambda: Conv2D(2, 3, 3, bias="untied", input_size=(6, 6), seed=0),
                      (3, 2, 6, 6)),
    "MaxPool2D": (lambda: MaxPool2D(3, stride=2, padding=1), (3, 2, 7, 6)),
    "MaxPool2D 2x2": (lambda: MaxPool2D(2), (3, 2, 6, 6)),
    "AvgPool2D": (lambda: AvgPool2D(2, trainable_scale=True, channels=2), (3, 2, 6, 6)),
    "AvgPool2D count_include_pad=False": (lambda: AvgPool2D(3, 2, 1, count_include_pad=False),
                                          (3, 2, 7, 6)),
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
            np.testing.assert_allclose(got, dx, rtol=1e-6, atol=1e-6,
                                       err_msg=f"{label} / dout {dlabel}")
            for key, g in layer.grads.items():
                np.testing.assert_allclose(g, grads[key], rtol=1e-5, atol=1e-5,
                                           err_msg=f"{label} {key}")



def test_signal_accepts_integers_and_any_order():
    a, k = small_ints((5, 6)), small_ints((3, 2), seed=1)
    for mode in ("full", "valid", "same"):
        reference = S.correlate2d(a.astype(np.float64), k.astype(np.float64), mode)
        for av in (a, np.asfortranarray(a), np.repeat(a, 2, axis=1)[:, ::2], a.astype(np.float16)):
            np.testing.assert_array_equal(S.correlate2d(av, k, mode), reference)
