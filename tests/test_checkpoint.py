"""Tests for cnn_im2col.checkpoint: the checkpoint format (a model file plus the optimizer's and
scheduler's state and ``fit``'s position), written and read back, and the files it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bad_input import ROW_FIELDS, XM, YM, Payload, check_bad_input, npz_with, rows, tiny_model
from small_nets import (
    assert_same_buffers,
    assert_same_params,
    bn_net,
    data,
    fit,
    small_net,
)

from cnn_im2col import losses, optim
from cnn_im2col.model import Sequential
from cnn_im2col.optim import SGD, Adam, CosineAnnealingLR, StepLR

# ------------------------------------------------------------------------------------------
# written by fit, read back
# ------------------------------------------------------------------------------------------


def test_the_last_checkpoint_of_a_run_annealed_to_lr_0_loads_and_resumes(tmp_path):
    """A per-batch cosine schedule ends at lr 0 exactly; that checkpoint must still load (and
    resume)."""
    x, y = data(16)
    model = small_net(dropout=0.25)
    optimizer = Adam(1e-2)
    scheduler = CosineAnnealingLR(optimizer, t_max=4)
    model.fit(x, y, epochs=2, batch_size=8, optimizer=optimizer, loss=losses.SoftmaxCrossEntropy(),
              seed=0,
              scheduler=scheduler, scheduler_interval="batch", progress=False, log=None,
              checkpoint=tmp_path / "c.npz")
    assert optimizer.lr == 0.0
    ckpt = Sequential.load_checkpoint(tmp_path / "c.npz")
    assert ckpt.optimizer.lr == 0.0 and ckpt.scheduler.last_epoch == 4
    assert_same_params(ckpt.model.params, model.params)
    ckpt.model.fit(x, y, epochs=2, batch_size=8, optimizer=ckpt.optimizer,
                   loss=losses.SoftmaxCrossEntropy(),
                   scheduler=ckpt.scheduler, scheduler_interval="batch", resume=ckpt.state,
                   progress=False, log=None)
    assert_same_params(ckpt.model.params, model.params)  # finished: nothing left to do


# ------------------------------------------------------------------------------------------
# the format: written, read back, refused when broken
# ------------------------------------------------------------------------------------------


def trained(optimizer_kind):
    """A BatchNorm network (params and buffers) after one epoch, its optimizer and scheduler."""
    model = bn_net(seed=4)
    if optimizer_kind == "sgd":
        optimizer = SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
        scheduler = StepLR(optimizer, 1, gamma=0.5)
    elif optimizer_kind == "adam":
        optimizer = Adam(5e-3, weight_decay=1e-4)
        scheduler = CosineAnnealingLR(optimizer, t_max=6, warmup=1)
    else:  # plain SGD, no scheduler
        optimizer, scheduler = SGD(0.1), None
    x, y = data(16)
    fit(model, x, y, epochs=1, optimizer=optimizer, scheduler=scheduler)
    return model, optimizer, scheduler


def assert_same_state_dict(a, b):
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, np.ndarray):
            assert isinstance(b[key], np.ndarray) and b[key].dtype == value.dtype, key
            np.testing.assert_array_equal(b[key], value, err_msg=key)
        else:
            assert b[key] == value, key


STATE = {"epoch": 1, "batch": 0, "seed": 3, "note": "any JSON", "sums": [1.5, 2, 3]}


@pytest.mark.parametrize("optimizer_kind", ["sgd", "adam", "no scheduler"])
def test_a_checkpoint_reads_back_everything_it_was_given(tmp_path, optimizer_kind):
    model, optimizer, scheduler = trained(optimizer_kind)
    path = tmp_path / "c.npz"
    model.save_checkpoint(path, optimizer, scheduler, state=STATE, extra={"args": {"lr": 0.1}})
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # written atomically: no temporary
    ckpt = Sequential.load_checkpoint(path)
    assert repr(ckpt.model) == repr(model)
    assert_same_params(ckpt.model, model)
    assert_same_buffers(ckpt.model, model)
    assert type(ckpt.optimizer) is type(optimizer)
    assert ckpt.optimizer.config() == optimizer.config()
    assert_same_state_dict(optimizer.state_dict(), ckpt.optimizer.state_dict())
    if scheduler is None:
        assert ckpt.scheduler is None
    else:
        assert type(ckpt.scheduler) is type(scheduler)
        assert ckpt.scheduler.config() == scheduler.config()
        assert ckpt.scheduler.state_dict() == scheduler.state_dict()
    assert ckpt.state == STATE and ckpt.extra == {"args": {"lr": 0.1}}


@pytest.mark.parametrize("optimizer_kind", ["sgd", "adam"])
def test_the_optimizer_read_back_takes_the_same_next_step(tmp_path, optimizer_kind):
    """Momentum buffers, Adam's moments and step counts travel: the next update is identical."""
    model, optimizer, scheduler = trained(optimizer_kind)
    model.save_checkpoint(tmp_path / "c.npz", optimizer, scheduler)
    ckpt = Sequential.load_checkpoint(tmp_path / "c.npz")
    rng = np.random.default_rng(5)
    for _ in range(2):
        grads = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in model.params.items()}
        optimizer.step(model.params, grads)
        ckpt.optimizer.step(ckpt.model.params, {k: g.copy() for k, g in grads.items()})
        if scheduler is not None:
            scheduler.step()
            ckpt.scheduler.step()
        assert ckpt.optimizer.lr == optimizer.lr
    assert_same_params(ckpt.model, model)


def test_a_checkpoint_is_a_model_file_of_plain_arrays(tmp_path):
    model, optimizer, scheduler = trained("sgd")
    path = tmp_path / "c.npz"
    model.save_checkpoint(path, optimizer, scheduler, state=STATE)
    with np.load(path, allow_pickle=False) as npz:  # every entry readable without pickle
        entries = {key: npz[key] for key in npz.files}
    assert all(value.dtype != object for value in entries.values())
    optim_keys = {key[len("optim:"):] for key in entries if key.startswith("optim:")}
    assert optim_keys == {k for k, v in optimizer.state_dict().items() if isinstance(v, np.ndarray)}
    training = json.loads(entries["__training__"].tobytes())
    assert training["optimizer"] == optimizer.config() and training["state"] == STATE
    assert training["scheduler"]["config"] == scheduler.config()
    loaded = Sequential.load(path)  # the model part alone
    assert_same_params(loaded, model)
    assert_same_buffers(loaded, model)


def rewrite_training(path, edit):
    """``path``'s arrays with ``edit(training)`` applied to the ``__training__`` JSON."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    training = json.loads(arrays["__training__"].tobytes())
    edit(training)
    arrays["__training__"] = np.frombuffer(json.dumps(training).encode(), dtype=np.uint8)
    return arrays


@pytest.mark.parametrize(("edit", "match"), [
    (lambda t: t["optimizer"].update({"name": "RMSprop"}),
     r"training state is broken: unknown optimizer 'RMSprop'"),
    (lambda t: t["scheduler"]["config"].update({"name": "OneCycleLR"}),
     r"training state is broken: unknown scheduler 'OneCycleLR'"),
    (lambda t: t.pop("optimizer_scalars"), r"training state is broken"),
    (lambda t: t["optimizer"].update({"lr": -1.0}), r"training state is broken: .*lr"),
])
def test_a_broken_training_state_is_refused_naming_the_file(tmp_path, edit, match):
    model, optimizer, scheduler = trained("sgd")
    model.save_checkpoint(tmp_path / "good.npz", optimizer, scheduler, state=STATE)
    bad = npz_with(tmp_path, "bad.npz", **rewrite_training(tmp_path / "good.npz", edit))
    with pytest.raises(ValueError, match=match) as info:
        Sequential.load_checkpoint(bad)
    assert str(bad) in str(info.value)


def test_training_state_that_is_not_json_is_refused_and_a_misshapen_optimizer_array_at_the_step(
        tmp_path):
    model, optimizer, scheduler = trained("sgd")
    model.save_checkpoint(tmp_path / "good.npz", optimizer, scheduler)
    with np.load(tmp_path / "good.npz", allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    not_json = npz_with(tmp_path, "not-json.npz", **{
        **arrays, "__training__": np.frombuffer(b"{not json", dtype=np.uint8)})
    with pytest.raises(ValueError, match=r"not-json\.npz: '__training__' is not valid JSON"):
        Sequential.load_checkpoint(not_json)
    key = "optim:momentum_buffer:0.weight"
    wrong_shape = npz_with(tmp_path, "shape.npz", **{**arrays, key: np.zeros(3, np.float32)})
    ckpt = Sequential.load_checkpoint(
        wrong_shape)  # read; the optimizer meets the params at its step
    grads = {k: np.zeros_like(v) for k, v in ckpt.model.params.items()}
    with pytest.raises(ValueError,
                       match=r"state 'momentum_buffer' for '0\.weight' has shape \(3,\)"):
        ckpt.optimizer.step(ckpt.model.params, grads)


def test_load_checkpoint_of_a_missing_file_and_save_checkpoint_without_an_optimizer(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.npz: no such model file"):
        Sequential.load_checkpoint(tmp_path / "absent.npz")
    with pytest.raises(TypeError,
                       match=r"save_checkpoint: optimizer must have state_dict\(\) and config\(\)"):
        tiny_model().save_checkpoint(tmp_path / "c.npz", object())
    assert not (tmp_path / "c.npz").exists()  # nothing written


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
    "load_checkpoint of a model file": (lambda t: (tiny_model().save(t / "m.npz"),
                                                   Sequential.load_checkpoint(
        t / "m.npz")), ValueError, r"m\.npz", r"a model file, not a checkpoint",
                                        r"optimizer or training state"),
    "load_checkpoint with an object optimizer array": (
        lambda t: Sequential.load_checkpoint(checkpoint_with_object_optim_array(t)), ValueError,
        r"ckpt-object\.npz", r"optim:", r"[Oo]bject"),
}


@pytest.mark.parametrize(ROW_FIELDS, rows(BAD_INPUTS))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    check_bad_input(tmp_path, call, error, who, got, allowed)
