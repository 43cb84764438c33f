"""Tests for cnn_im2col.training beyond those of Sequential.fit in test_model.py / test_robustness.py:
the Callback hooks, and where the public names live."""

import numpy as np
import pytest

import cnn_im2col
from cnn_im2col import model as model_module
from cnn_im2col import training
from cnn_im2col.layers import Dense, ReLU
from cnn_im2col.losses import SoftmaxCrossEntropy
from cnn_im2col.model import Sequential
from cnn_im2col.optim import SGD


class Recorder(training.Callback):
    def __init__(self):
        self.events = []

    def on_epoch_begin(self, trainer, epoch, first_batch):
        self.events.append(("begin", epoch, first_batch))

    def on_batch_end(self, trainer, epoch, batch, spent):
        self.events.append(("batch", epoch, batch, trainer.position.sums[2]))

    def on_batches_end(self, trainer, epoch):
        self.events.append(("batches end", epoch))

    def on_epoch_end(self, trainer, epoch, logs):
        self.events.append(("end", epoch, logs["epoch"], len(trainer.history["loss"])))
        return epoch == 1  # stop after the second epoch


def small():
    rng = np.random.default_rng(0)
    x, y = rng.random((10, 6)), rng.integers(0, 3, 10)
    return Sequential([Dense(6, 8, dtype=np.float64, seed=0), ReLU(), Dense(8, 3, dtype=np.float64, seed=1)]), x, y


def test_callback_instances_get_every_hook_in_order_and_can_stop():
    model, x, y = small()
    rec = Recorder()
    seen = []
    history = model.fit(x, y, epochs=5, batch_size=4, optimizer=SGD(0.1), loss=SoftmaxCrossEntropy(), seed=0,
                        progress=False, log=None, callbacks=[rec, lambda m, logs: seen.append(logs["epoch"])])
    assert history["epoch"] == [1, 2] and seen == [1, 2]
    assert rec.events == [
        ("begin", 0, 0), ("batch", 0, 0, 4), ("batch", 0, 1, 8), ("batch", 0, 2, 10), ("batches end", 0),
        ("end", 0, 1, 1),
        ("begin", 1, 0), ("batch", 1, 0, 4), ("batch", 1, 1, 8), ("batch", 1, 2, 10), ("batches end", 1),
        ("end", 1, 2, 2),
    ]


def test_a_callback_that_is_neither_callable_nor_a_callback_is_refused():
    model, x, y = small()
    with pytest.raises(TypeError, match=r"callbacks must be callables cb\(model, logs\) or training\.Callback "
                                        r"instances, got 'no'"):
        model.fit(x, y, epochs=1, batch_size=4, optimizer=SGD(0.1), loss=SoftmaxCrossEntropy(), callbacks=["no"])


def test_the_model_module_does_not_re_export_the_loops_names():
    assert training.TrainingDiverged is cnn_im2col.TrainingDiverged
    assert training.TrainingInterrupted is cnn_im2col.TrainingInterrupted
    for name in ("TrainingDiverged", "TrainingInterrupted", "RandomShift", "Checkpoint"):
        assert not hasattr(model_module, name), name


def test_imports_run_one_way_the_model_inherits_the_loop_which_never_imports_the_model():
    import ast
    from pathlib import Path

    def module_level_imports(module):
        tree = ast.parse(Path(module.__file__).read_text())
        return {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}

    def every_import(module):  # inside functions too: a lazy import is still a circle
        tree = ast.parse(Path(module.__file__).read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                found.add(node.module or "")
                found.update(alias.name for alias in node.names if not node.module)
        return found

    assert "training" in module_level_imports(model_module)
    assert not every_import(training) & {"model", "cli", "onnx"}
    assert not every_import(model_module) & {"distributed", "cli", "onnx", "checkpoint"}
    assert issubclass(Sequential, training.Trainer)
    assert Sequential.fit is training.Trainer.fit  # an ordinary method, not one patched in
