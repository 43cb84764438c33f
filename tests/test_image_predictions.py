"""image_predictions: image files decoded to the model's input and classified."""

import numpy as np
import pytest
from datasets_helpers import save_image

from cnn_im2col.image_predictions import predict_images
from cnn_im2col.layers import Dense, Flatten
from cnn_im2col.model import Sequential


def gray_model():
    """(1, 4, 4) images -> 2 classes: 'dark' when the mean pixel is low, 'light' when high."""
    dense = Dense(16, 2, seed=0)
    dense.params["weight"][...] = np.stack([-np.ones(16), np.ones(16)]) * 2
    dense.params["bias"][...] = [16.0, -16.0]
    return Sequential([Flatten(), dense], input_shape=(1, 4, 4), class_names=["dark", "light"])


def test_each_file_gets_its_top_classes_in_order(tmp_path):
    dark = save_image(tmp_path / "dark.png", np.full((4, 4), 10, np.uint8))
    light = save_image(tmp_path / "light.bmp", np.full((4, 4, 3), 250, np.uint8))  # RGB -> gray
    results = predict_images(gray_model(), [dark, light], top=2)
    assert [r.top[0][0] for r in results] == ["dark", "light"]
    assert [name for name, _ in results[0].top] == ["dark", "light"]
    assert sum(p for _, p in results[1].top) == pytest.approx(1.0)
    assert results[0].as_dict()["path"] == str(dark)


def test_another_size_needs_resize_and_a_model_without_an_input_shape_is_refused(tmp_path):
    big = save_image(tmp_path / "big.png", np.full((8, 6), 250, np.uint8))
    with pytest.raises(ValueError, match=r"big.png: image is 8x6 .* the model takes 4x4; give "
                                         r"--resize"):
        predict_images(gray_model(), [big])
    assert predict_images(gray_model(), [big], resize=True)[0].top[0][0] == "light"
    unknown = Sequential([Flatten(), Dense(16, 2, seed=0)])
    with pytest.raises(ValueError, match=r"its input shape is unknown"):
        predict_images(unknown, [big])
    with pytest.raises(ValueError, match=r"no image files given"):
        predict_images(gray_model(), [])
