"""The package's public API: everything in ``__all__`` imports."""


import cnn_im2col


def test_public_names_import():
    for name in cnn_im2col.__all__:
        assert getattr(cnn_im2col, name) is not None, name


def test_quickstart_api_example_runs():
    """The README's Python example, at a tiny size."""
    import numpy as np

    from cnn_im2col import (
        SGD,
        Conv2D,
        Dense,
        Flatten,
        MaxPool2D,
        ReLU,
        Sequential,
        SoftmaxCrossEntropy,
    )

    rng = np.random.default_rng(0)
    x, y = rng.random((32, 1, 12, 12), dtype=np.float32), rng.integers(0, 3, 32)
    model = Sequential([Conv2D(1, 4, 3, seed=0), ReLU(), MaxPool2D(2), Flatten(),
                        Dense(4 * 5 * 5, 3, seed=1)])
    history = model.fit(x, y, epochs=2, batch_size=8, optimizer=SGD(0.1, momentum=0.9),
                        loss=SoftmaxCrossEntropy(), seed=0, progress=False)
    assert len(history["loss"]) == 2
    assert set(model.evaluate(x, y)) >= {"loss", "accuracy"}




def test_the_onnx_functions_come_with_the_package_and_the_onnx_package_only_on_use():
    import subprocess
    import sys

    code = ("import sys, cnn_im2col; assert callable(cnn_im2col.onnx.export) and "
            "callable(cnn_im2col.onnx.load); print('onnx' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
