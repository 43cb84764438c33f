"""Tests for cnn_im2col.checkpoint: the checkpoint format (a model file plus the optimizer's and
scheduler's state and ``fit``'s position), written and read back, and the files it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bad_input import ROW_FIELDS, XM, YM, Payload, check_bad_input, npz_with, rows, tiny_model
from small_nets import (
    assert_same_params,
    data,
    small_net,
)

from cnn_im2col import losses, optim
from cnn_im2col.model import Sequential
from cnn_im2col.optim import Adam, CosineAnnealingLR

# ------------------------------------------------------------------------------------------
# written by fit, read back
# ------------------------------------------------------------------------------------------


def test_the_last_checkpoint_of_a_run_annealed_to_lr_0_loads_and_resumes(tmp_path):
    """A per-batch cosine schedule ends at lr 0 exactly; that checkpoint must still load (and resume)."""
    x, y = data(16)
    model = small_net(dropout=0.25)
    optimizer = Adam(1e-2)
    scheduler = CosineAnnealingLR(optimizer, t_max=4)
    model.fit(x, y, epochs=2, batch_size=8, optimizer=optimizer, loss=losses.SoftmaxCrossEntropy(), seed=0,
              scheduler=scheduler, scheduler_interval="batch", progress=False, log=None, checkpoint=tmp_path / "c.npz")
    assert optimizer.lr == 0.0
    ckpt = Sequential.load_checkpoint(tmp_path / "c.npz")
    assert ckpt.optimizer.lr == 0.0 and ckpt.scheduler.last_epoch == 4
    assert_same_params(ckpt.model.params, model.params)
    ckpt.model.fit(x, y, epochs=2, batch_size=8, optimizer=ckpt.optimizer, loss=losses.SoftmaxCrossEntropy(),
                   scheduler=ckpt.scheduler, scheduler_interval="batch", resume=ckpt.state, progress=False, log=None)
    assert_same_params(ckpt.model.params, model.params)  # finished: nothing left to do


# ------------------------------------------------------------------------------------------
# bad inputs: the battery's rows for checkpoints (machinery: bad_input.py)
# ------------------------------------------------------------------------------------------

def checkpoint_file(tmp: Path) -> Path:
    m, opt = tiny_model(), optim.SGD(0.1, momentum=0.9)
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



BAD_INPUTS = {
    "load_checkpoint of a model file": (lambda t: (tiny_model().save(t / "m.npz"), Sequential.load_checkpoint(
        t / "m.npz")), ValueError, r"m\.npz", r"a model file, not a checkpoint", r"optimizer or training state"),
    "load_checkpoint with an object optimizer array": (
        lambda t: Sequential.load_checkpoint(checkpoint_with_object_optim_array(t)), ValueError,
        r"ckpt-object\.npz", r"optim:", r"[Oo]bject"),
}


@pytest.mark.parametrize(ROW_FIELDS, rows(BAD_INPUTS))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    check_bad_input(tmp_path, call, error, who, got, allowed)
