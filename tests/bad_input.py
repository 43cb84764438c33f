"""The bad-input battery's shared machinery: every public entry point, given a bad argument,
raises ``ValueError`` / ``TypeError`` (a missing file: ``FileNotFoundError``) whose message names
who is complaining (the layer, function or argument), the value received and what is allowed.

Each test module keeps the rows of its own module in a table ``BAD_INPUTS``
(``id -> (callable(tmp_path), exception, who, got, allowed)``; the three regexes must all be found
in the message, in any order; each row is one distinct bad input) and runs it with::

    @pytest.mark.parametrize(ROW_FIELDS, rows(BAD_INPUTS))
    def test_bad_input(tmp_path, call, error, who, got, allowed):
        check_bad_input(tmp_path, call, error, who, got, allowed)

``tests/test_errors.py`` counts the rows of every table. This module holds what several tables
share: the message fragments, the small inputs, the small model and its training call, the file
factories (each takes the test's ``tmp_path`` and returns the path of a bad file) and the
hypothesis strategies of invalid values. It is a helper, not a test module: pytest imports it
from ``tests/`` (on ``sys.path``: ``pythonpath`` in pyproject.toml).
"""

from __future__ import annotations

import math
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st

from cnn_im2col import losses, optim
from cnn_im2col.layers import Conv2D, Dense, Flatten, ReLU
from cnn_im2col.model import Sequential
from cnn_im2col.shapes import MAX_SIZE, NonFiniteError

# ------------------------------------------------------------------------------------------
# message fragments
# ------------------------------------------------------------------------------------------

FINITE = (r"NaN or Inf", r"finite")
INT1 = r"an int >= 1"
INT0 = r"an int >= 0"
PAIR1 = r"an int >= 1 or a pair of them"
PAIR0 = r"an int >= 0 or a pair of them"
REAL = r"real numeric array \(bool, int or float\)"

# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------

RNG = np.random.default_rng(0)
X = RNG.random((2, 3, 6, 6)).astype(np.float32)  # a batch for the (3, *, *) layers
XM = RNG.random((5, 1, 6, 6)).astype(np.float32)  # a batch for the small model
YM = np.array([0, 1, 2, 0, 1])
LOGITS = RNG.standard_normal((3, 4))


def with_value(array, value, index=(0,)):
    """A copy of a float ``array`` with ``value`` at ``index`` (e.g. one NaN among finite
    numbers)."""
    out = np.array(array, copy=True)
    out[index] = value
    return out


def tiny_model():
    """(1, 6, 6) -> 3 classes."""
    return Sequential([Conv2D(1, 2, 3, seed=0), ReLU(), Flatten(), Dense(2 * 4 * 4, 3, seed=1)])


def fit_tiny(**change):
    """``tiny_model().fit`` on ``XM, YM`` for one epoch, with the arguments in ``change``
    replaced."""
    args = {"x": XM, "y": YM, "epochs": 1, "batch_size": 2, "optimizer": optim.SGD(0.1),
            "loss": losses.SoftmaxCrossEntropy(), "progress": False, "log": None}
    args.update(change)
    return tiny_model().fit(**args)


# ------------------------------------------------------------------------------------------
# file factories: each takes the test's tmp_path and returns the path of a bad file
# ------------------------------------------------------------------------------------------


class Payload:
    """A pickle that would create ``marker`` if it were ever unpickled with the standard
    unpickler."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def npz_with(tmp: Path, name: str, **arrays) -> Path:
    path = tmp / name
    with open(path, "wb") as handle:  # np.savez(path) would append ".npz" to other names
        np.savez(handle, **arrays)
    return path


def good_model_arrays(tmp: Path) -> dict:
    tiny_model().save(tmp / "good.npz")
    with np.load(tmp / "good.npz") as npz:
        return {key: npz[key] for key in npz.files}


def model_file_with(tmp: Path, name: str, **changes) -> Path:
    arrays = good_model_arrays(tmp)
    arrays.update(changes)
    return npz_with(tmp, name, **arrays)


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


# ------------------------------------------------------------------------------------------
# the runner
# ------------------------------------------------------------------------------------------

ROW_FIELDS = ("call", "error", "who", "got", "allowed")


def rows(table):
    """The rows of a ``BAD_INPUTS`` table as pytest parameters, each with its id."""
    return [pytest.param(*row, id=case_id) for case_id, row in table.items()]


def all_of(*patterns: str) -> str:
    """A regex that matches when every pattern occurs somewhere (in any order)."""
    return "(?s)" + "".join(f"(?=.*?(?:{p}))" for p in patterns)


def check_bad_input(tmp_path, call, error, who, got, allowed):
    """``call(tmp_path)`` raises ``error`` whose message matches ``who``, ``got`` and
    ``allowed``."""
    with pytest.raises(error, match=all_of(who, got, allowed)) as info:
        call(tmp_path)
    # never a subclass surprise (numpy's AxisError is a ValueError too); NaN/Inf refusals are the
    # package's own NonFiniteError, a ValueError that training uses to recognise a divergence
    allowed_types = {error, NonFiniteError} if error is ValueError else {error}
    assert type(info.value) in allowed_types or error is FileNotFoundError
    assert not (tmp_path / "pwned").exists()  # no payload was ever unpickled


# ------------------------------------------------------------------------------------------
# hypothesis: invalid values, and a random invalid argument for a random constructor
# ------------------------------------------------------------------------------------------

NOT_NUMBERS = st.one_of(st.text(max_size=3), st.none(), st.just([1]), st.just({}),
                        st.complex_numbers(
    allow_nan=False, allow_infinity=False).filter(lambda z: z.imag != 0))
BAD_FLOAT = st.one_of(st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.booleans(),
                      NOT_NUMBERS)


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


BAD_DTYPE = st.sampled_from(["float16", "int32", "complex64", "bool", "foo", None, int, np.uint8,
                             object])
NOT_BOOL = st.one_of(st.text(max_size=3), st.none(), st.floats(), st.integers(min_value=2),
                     st.just([True]))


@st.composite
def invalid_construction(draw, constructors):
    """``constructors``: owner -> (factory, valid keyword arguments, {argument: strategy of
    values it must refuse})."""
    owner = draw(st.sampled_from(sorted(constructors)))
    factory, valid, invalid = constructors[owner]
    argument = draw(st.sampled_from(sorted(invalid)))
    value = draw(invalid[argument])
    return owner, factory, {**valid, argument: value}, argument, value


def check_invalid_construction(case):
    """The constructor refuses the value, and its message starts with the owner and names the
    argument."""
    owner, factory, kwargs, argument, value = case
    with pytest.raises((TypeError, ValueError)) as info:
        factory(**kwargs)
    message = str(info.value)
    assert message.startswith(owner), message
    assert re.search(rf"\b{argument}\b", message), (argument, value, message)


# ------------------------------------------------------------------------------------------
# hypothesis: random bad labels (for the losses and for fit / evaluate)
# ------------------------------------------------------------------------------------------


@st.composite
def bad_labels(draw):
    """``(n, k, labels, pattern)``: ``n`` labels for ``k`` classes with one fault, and the regex
    the message must contain."""
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
        labels[index] = (math.nan if kind == "nan"
                         else labels[index] + draw(st.sampled_from([0.5, 0.25, -0.001])))
        pattern = rf"whole numbers.* at index {index}"
    else:
        labels = (np.concatenate([labels, labels[:draw(st.integers(1, n))]])
                  if draw(st.booleans()) else labels[:-1])
        pattern = rf"has {len(labels)} labels"
    return n, k, labels, pattern
