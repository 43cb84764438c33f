"""model_files: a model's architecture and arrays in one .npz; formats built on it add entries."""

import numpy as np
import pytest

from cnn_im2col import model_files
from cnn_im2col.layers import BatchNorm2D, Conv2D
from cnn_im2col.model import Sequential


def test_the_file_holds_the_architecture_params_and_buffers_and_skips_reserved_entries(tmp_path):
    model = Sequential([Conv2D(1, 2, 3, seed=0), BatchNorm2D(2)], class_names=["a", "b"])
    arrays = model_files.model_arrays(model)
    assert set(arrays) == {"__model__", "param:0.weight", "param:0.bias", "param:1.weight",
                           "param:1.bias", "buffer:1.running_mean", "buffer:1.running_var",
                           "buffer:1.num_batches_tracked"}
    arrays["optim:0.weight.momentum"] = np.zeros(3)  # what a checkpoint adds: skipped
    path = tmp_path / "m.npz"
    model_files.write_arrays(path, arrays)
    with model_files.open_npz(str(path)) as npz:
        back = model_files.read_model(
            npz, str(path), lambda header, source: Sequential.from_config(header, source=source))
    assert back.class_names == ("a", "b")
    for key, value in model.params.items():
        np.testing.assert_array_equal(back.params[key], value)
    arrays["junk"] = np.zeros(1)
    model_files.write_arrays(path, arrays)
    with model_files.open_npz(str(path)) as npz, pytest.raises(
            ValueError, match=r"unknown entries \['junk'\]"):
        model_files.read_model(npz, str(path), lambda h, s: Sequential.from_config(h, source=s))
