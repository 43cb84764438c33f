"""The fixture of the command's tests: a tiny synthetic IDX data set (240 training and 60 test
images of 28x28 digits), written once per test module."""

import pytest
from conftest import synthetic_digits

from cnn_im2col.datasets import write_idx


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("idx")
    x, y = synthetic_digits(240, 0)
    xt, yt = synthetic_digits(60, 1)
    write_idx(d / "train-images-idx3-ubyte", x)
    write_idx(d / "train-labels-idx1-ubyte", y)
    write_idx(d / "t10k-images-idx3-ubyte.gz", xt)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", yt)
    return d
