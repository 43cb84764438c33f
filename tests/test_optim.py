"""Tests for cnn_im2col.optim: SGD / Adam vs hand computations, in-place updates, checkpoints,
schedules."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from bad_input import (
    INT0,
    INT1,
    NOT_BOOL,
    ROW_FIELDS,
    bad_int,
    bad_non_negative_float,
    bad_positive_float,
    bad_unit_interval,
    check_bad_input,
    rows,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_im2col import optim
from cnn_im2col.optim import SGD, Adam, CosineAnnealingLR, StepLR

# ---------------------------------------------------------------------------------------------
# scalar references written out with Python floats, element by element
# ---------------------------------------------------------------------------------------------


def sgd_reference(w, grads, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """PyTorch SGD on a list of floats; grads: list of lists (one per step). Returns the trajectory.
    """
    w = list(w)
    buf = None
    out = []
    for g in grads:
        d = [gi + weight_decay * wi for gi, wi in zip(g, w)]
        if momentum:
            buf = list(d) if buf is None else [momentum * b + di for b, di in zip(buf, d)]
            d = [di + momentum * b for di, b in zip(d, buf)] if nesterov else list(buf)
        w = [wi - lr * di for wi, di in zip(w, d)]
        out.append(list(w))
    return out


def adam_reference(w, grads, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    w = list(w)
    m = [0.0] * len(w)
    v = [0.0] * len(w)
    out = []
    for t, g in enumerate(grads, start=1):
        d = [gi + weight_decay * wi for gi, wi in zip(g, w)]
        m = [beta1 * mi + (1 - beta1) * di for mi, di in zip(m, d)]
        v = [beta2 * vi + (1 - beta2) * di * di for vi, di in zip(v, d)]
        mhat = [mi / (1 - beta1**t) for mi in m]
        vhat = [vi / (1 - beta2**t) for vi in v]
        w = [wi - lr * mh / (math.sqrt(vh) + eps) for wi, mh, vh in zip(w, mhat, vhat)]
        out.append(list(w))
    return out


def run(opt, w0, grads):
    params = {"w": np.array(w0, dtype=np.float64)}
    arr = params["w"]
    out = []
    for g in grads:
        opt.step(params, {"w": np.array(g, dtype=np.float64)})
        assert params["w"] is arr  # never rebound
        out.append(arr.copy())
    return out


GRADS = [[1.0], [2.0], [-1.0]]


# ---------------------------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------------------------

def test_sgd_plain_by_hand():
    traj = run(SGD(lr=0.1), [1.0], GRADS)
    np.testing.assert_allclose(np.ravel(traj), [0.9, 0.7, 0.8], rtol=1e-15)


def test_sgd_momentum_by_hand():
    # v1 = 1, w = 0.9; v2 = 0.9 + 2 = 2.9, w = 0.61; v3 = 2.61 - 1 = 1.61, w = 0.449
    traj = run(SGD(lr=0.1, momentum=0.9), [1.0], GRADS)
    np.testing.assert_allclose(np.ravel(traj), [0.9, 0.61, 0.449], rtol=1e-14)


def test_sgd_nesterov_by_hand():
    # d = g + 0.9 v: 1.9, 2 + 2.61 = 4.61, -1 + 1.449 = 0.449
    traj = run(SGD(lr=0.1, momentum=0.9, nesterov=True), [1.0], GRADS)
    np.testing.assert_allclose(np.ravel(traj), [0.81, 0.349, 0.3041], rtol=1e-14)


def test_sgd_weight_decay_by_hand():
    # d = g + 0.1 w: 1.1 -> 0.89; 2.089 -> 0.6811; -0.93189 -> 0.774289
    traj = run(SGD(lr=0.1, weight_decay=0.1), [1.0], GRADS)
    np.testing.assert_allclose(np.ravel(traj), [0.89, 0.6811, 0.774289], rtol=1e-14)


def test_sgd_weight_decay_is_gradient_of_l2_penalty():
    # weight decay wd == adding (wd/2)||w||^2 to the cost, whose gradient is wd * w
    rng = np.random.default_rng(0)
    w0, g = rng.standard_normal(5), rng.standard_normal(5)
    a = {"w": w0.copy()}
    b = {"w": w0.copy()}
    SGD(lr=0.3, weight_decay=0.05).step(a, {"w": g})
    SGD(lr=0.3).step(b, {"w": g + 0.05 * w0})
    np.testing.assert_array_equal(a["w"], b["w"])


@settings(deadline=None, max_examples=60)
@given(
    lr=st.floats(1e-4, 1.0),
    momentum=st.sampled_from([0.0, 0.5, 0.9, 0.99]),
    nesterov=st.booleans(),
    weight_decay=st.sampled_from([0.0, 1e-4, 0.1]),
    seed=st.integers(0, 2**32 - 1),
)
def test_sgd_matches_reference(lr, momentum, nesterov, weight_decay, seed):
    nesterov = nesterov and momentum > 0
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(4).tolist()
    grads = rng.standard_normal((4, 4)).tolist()
    got = run(SGD(lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay), w0, grads)
    expected = sgd_reference(w0, grads, lr, momentum, nesterov, weight_decay)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Adam
# ---------------------------------------------------------------------------------------------

def test_adam_first_step_by_hand():
    # bias-corrected m_hat = g, v_hat = g^2, so the first step is lr * g / (|g| + eps)
    traj = run(Adam(lr=0.1), [1.0, -2.0], [[1.0, 3.0]])
    np.testing.assert_allclose(traj[0], [1.0 - 0.1 / (1 + 1e-8), -2.0 - 0.1 * 3 / (3 + 1e-8)],
                               rtol=1e-15)


def test_adam_three_steps_by_hand():
    # g = 1, 2, -1; beta1 = 0.9, beta2 = 0.999, eps = 1e-8, lr = 0.1
    m1, v1 = 0.1, 0.001
    w1 = 1.0 - 0.1 * (m1 / 0.1) / (math.sqrt(v1 / 0.001) + 1e-8)
    m2, v2 = 0.9 * m1 + 0.2, 0.999 * v1 + 0.001 * 4
    w2 = w1 - 0.1 * (m2 / (1 - 0.9**2)) / (math.sqrt(v2 / (1 - 0.999**2)) + 1e-8)
    m3, v3 = 0.9 * m2 - 0.1, 0.999 * v2 + 0.001
    w3 = w2 - 0.1 * (m3 / (1 - 0.9**3)) / (math.sqrt(v3 / (1 - 0.999**3)) + 1e-8)
    traj = run(Adam(lr=0.1), [1.0], GRADS)
    np.testing.assert_allclose(np.ravel(traj), [w1, w2, w3], rtol=1e-13)
    assert w2 == pytest.approx(0.9 - 0.1 * (0.29 / 0.19) / math.sqrt(0.004999 / 0.001999),
                               rel=1e-8)  # eps ignored


def test_adam_weight_decay_by_hand():
    # L2 added to the gradient (not AdamW): d1 = 1 + 0.5 * 1 = 1.5, first step = lr * sign
    traj = run(Adam(lr=0.1, weight_decay=0.5), [1.0], [[1.0], [0.0]])
    w1 = 1.0 - 0.1 * 1.5 / (1.5 + 1e-8)
    d2 = 0.0 + 0.5 * w1
    m2, v2 = 0.9 * 0.15 + 0.1 * d2, 0.999 * 0.001 * 2.25 + 0.001 * d2 * d2
    w2 = w1 - 0.1 * (m2 / 0.19) / (math.sqrt(v2 / (1 - 0.999**2)) + 1e-8)
    np.testing.assert_allclose(np.ravel(traj), [w1, w2], rtol=1e-13)


@settings(deadline=None, max_examples=60)
@given(
    lr=st.floats(1e-4, 0.5),
    beta1=st.sampled_from([0.0, 0.5, 0.9]),
    beta2=st.sampled_from([0.0, 0.9, 0.999]),
    eps=st.sampled_from([1e-8, 1e-3]),
    weight_decay=st.sampled_from([0.0, 0.01]),
    seed=st.integers(0, 2**32 - 1),
)
def test_adam_matches_reference(lr, beta1, beta2, eps, weight_decay, seed):
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(3).tolist()
    grads = rng.standard_normal((4, 3)).tolist()
    got = run(Adam(lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay), w0, grads)
    expected = adam_reference(w0, grads, lr, beta1, beta2, eps, weight_decay)
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-13)


def test_adam_minimises_quadratic():
    # f(w) = 0.5 * sum(a * (w - c)^2), badly scaled (a spans 4 orders of magnitude)
    rng = np.random.default_rng(1)
    a = np.logspace(-2, 2, 10)
    c = rng.standard_normal(10)
    params = {"w": np.zeros(10)}
    opt = Adam(lr=0.05)
    f0 = 0.5 * np.sum(a * c**2)
    for _ in range(3000):
        opt.step(params, {"w": a * (params["w"] - c)})
    f = 0.5 * np.sum(a * (params["w"] - c) ** 2)
    assert f < 1e-6 * f0
    np.testing.assert_allclose(params["w"], c, atol=1e-3)


def test_sgd_momentum_minimises_quadratic():
    a = np.array([1.0, 4.0])
    c = np.array([3.0, -1.0])
    params = {"w": np.zeros(2)}
    opt = SGD(lr=0.1, momentum=0.9, nesterov=True)
    for _ in range(500):
        opt.step(params, {"w": a * (params["w"] - c)})
    np.testing.assert_allclose(params["w"], c, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# in-place updates, dtypes, multiple params, strided params
# ---------------------------------------------------------------------------------------------

OPTIMIZERS = [
    lambda: SGD(0.1),
    lambda: SGD(0.1, momentum=0.9, weight_decay=0.01),
    lambda: SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda: Adam(0.01, weight_decay=0.01),
]


@pytest.mark.parametrize("make", OPTIMIZERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_step_in_place_dtype_and_grads_untouched(make, dtype):
    rng = np.random.default_rng(2)
    params = {"0.weight": rng.standard_normal((3, 2, 2, 2)).astype(dtype),
              "0.bias": np.zeros(3, dtype)}
    grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
    ids = {k: id(v) for k, v in params.items()}
    g_copy = {k: v.copy() for k, v in grads.items()}
    before = {k: v.copy() for k, v in params.items()}
    opt = make()
    for _ in range(2):
        opt.step(params, grads)
    for k, p in params.items():
        assert id(p) == ids[k]
        assert p.dtype == dtype
        assert not np.array_equal(p, before[k])
        np.testing.assert_array_equal(grads[k], g_copy[k])
    for k, v in opt.state_dict().items():
        if isinstance(v, np.ndarray):
            assert v.dtype == dtype


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_float32_close_to_float64(make):
    rng = np.random.default_rng(3)
    w = rng.standard_normal(20)
    grads = rng.standard_normal((3, 20))
    p64, p32 = {"w": w.copy()}, {"w": w.astype(np.float32)}
    o64, o32 = make(), make()
    for g in grads:
        o64.step(p64, {"w": g})
        o32.step(p32, {"w": g.astype(np.float32)})
    np.testing.assert_allclose(p32["w"], p64["w"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_strided_and_fortran_params_match_contiguous(make):
    rng = np.random.default_rng(4)
    base = rng.standard_normal((6, 8))
    grads = rng.standard_normal((3, 3, 4))
    strided_storage = base.copy()
    p_strided = {"w": strided_storage[::2, ::2]}
    p_fortran = {"w": np.asfortranarray(base[::2, ::2])}
    p_c = {"w": np.ascontiguousarray(base[::2, ::2])}
    opts = [make(), make(), make()]
    for g in grads:
        for opt, p in zip(opts, (p_strided, p_fortran, p_c)):
            opt.step(p, {"w": g})
    np.testing.assert_array_equal(p_strided["w"], p_c["w"])
    np.testing.assert_array_equal(p_fortran["w"], p_c["w"])
    assert np.shares_memory(p_strided["w"], strided_storage)
    np.testing.assert_array_equal(strided_storage[1::2], base[1::2])  # untouched rows


def test_lr_settable_and_used():
    params = {"w": np.array([1.0])}
    opt = SGD(0.1)
    opt.lr = 0.5
    opt.step(params, {"w": np.array([1.0])})
    assert params["w"][0] == 0.5
    opt.lr = 0.0  # a schedule may anneal to 0: allowed through the setter
    opt.step(params, {"w": np.array([1.0])})
    assert params["w"][0] == 0.5
    with pytest.raises(ValueError,
                       match=r"SGD: lr must be a finite number in \[0.0, inf\], got -0.1"):
        opt.lr = -0.1
    with pytest.raises(ValueError, match=r"SGD: lr must be a finite number.*got nan"):
        opt.lr = float("nan")


def test_params_missing_from_a_step_keep_their_state():
    opt = SGD(0.1, momentum=0.9)
    a, b = {"w": np.ones(2)}, {"v": np.ones(3)}
    opt.step(a, {"w": np.ones(2)})
    opt.step(b, {"v": np.ones(3)})
    opt.step(a, {"w": np.ones(2)})
    np.testing.assert_allclose(a["w"], 1 - 0.1 - 0.1 * 1.9)
    np.testing.assert_allclose(b["v"], 0.9)


# ---------------------------------------------------------------------------------------------
# state_dict / load_state_dict
# ---------------------------------------------------------------------------------------------

def npz_roundtrip(d):
    buf = io.BytesIO()
    np.savez(buf, **d)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("make", OPTIMIZERS)
@pytest.mark.parametrize("through_npz", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_resume_is_bit_identical(make, through_npz, dtype):
    rng = np.random.default_rng(5)
    params = {"0.weight": rng.standard_normal((4, 3)).astype(dtype),
              "0.bias": rng.standard_normal(4).astype(dtype)}
    grads = [
        {k: rng.standard_normal(
            v.shape).astype(dtype) for k, v in params.items()} for _ in range(6)]
    opt = make()
    for g in grads[:3]:
        opt.step(params, g)
    saved = opt.state_dict()
    saved_params = {k: v.copy() for k, v in params.items()}
    for g in grads[3:]:
        opt.step(params, g)

    # fresh optimizer with different hyper-parameters: loading restores them
    resumed = type(opt)(lr=123.0)
    resumed.load_state_dict(npz_roundtrip(saved) if through_npz else saved)
    assert resumed.config() == make().config() | {"lr": opt.config()["lr"]}
    for g in grads[3:]:
        resumed.step(saved_params, g)
    for k, p in params.items():
        np.testing.assert_array_equal(saved_params[k], p)
    a, b = resumed.state_dict(), opt.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert resumed.step_count == 6


def test_state_dict_contents_and_copies():
    opt = Adam(0.01)
    params = {"w": np.ones(3)}
    opt.step(params, {"w": np.ones(3)})
    d = opt.state_dict()
    assert set(d) == {"lr", "step", "beta1", "beta2", "eps", "weight_decay",
                      "exp_avg:w", "exp_avg_sq:w", "step:w"}
    assert d["step"] == 1 and d["step:w"] == 1 and d["lr"] == 0.01
    assert all(isinstance(v, (np.ndarray, float, int)) for v in d.values())
    d["exp_avg:w"][:] = 99  # a copy: the optimizer is unaffected
    assert opt.state_dict()["exp_avg:w"][0] != 99
    sgd = SGD(0.1, momentum=0.9, nesterov=True)
    sgd.step(params, {"w": np.ones(3)})
    d = sgd.state_dict()
    assert set(d) == {"lr", "step", "momentum", "nesterov", "weight_decay", "momentum_buffer:w"}
    assert d["nesterov"] == 1 and type(d["nesterov"]) is int
    # loaded arrays are copied too
    other = SGD(0.1, momentum=0.9)
    other.load_state_dict(d)
    d["momentum_buffer:w"][:] = 99
    assert other.state_dict()["momentum_buffer:w"][0] != 99
    assert other.nesterov is True


def test_load_state_dict_errors_and_atomicity():
    sgd_state = SGD(0.1, momentum=0.9).state_dict()
    adam = Adam(0.5)
    with pytest.raises(ValueError, match=r"Adam.load_state_dict: state_dict does not fit a Adam: "
                                         r"missing keys \['beta1', 'beta2', 'eps'\], "
                                         r"unexpected keys \['momentum', 'nesterov'\]"):
        adam.load_state_dict(sgd_state)
    with pytest.raises(ValueError, match=r"unexpected keys \['bogus:w'\]"):
        SGD(0.1).load_state_dict(sgd_state | {"bogus:w": np.zeros(2)})
    with pytest.raises(TypeError,
                       match=r"SGD.load_state_dict: state_dict must be a dict, got list"):
        SGD(0.1).load_state_dict([])
    with pytest.raises(TypeError,
                       match=r"'momentum_buffer:w' must be a float32/float64 ndarray, "
                             r"got dtype int64"):
        SGD(0.1).load_state_dict(sgd_state | {"momentum_buffer:w": np.zeros(2, dtype=np.int64)})
    with pytest.raises(ValueError,
                       match=r"SGD: momentum must be a finite number in \[0.0, 1.0\), got 1.5"):
        SGD(0.1).load_state_dict(sgd_state | {"momentum": 1.5})
    with pytest.raises(ValueError, match=r"'lr' must be a scalar, got array of shape \(2,\)"):
        SGD(0.1).load_state_dict(sgd_state | {"lr": np.zeros(2)})
    with pytest.raises(ValueError, match=r"parameter 'w' has state \['exp_avg'\]; expected all of"):
        Adam().load_state_dict(Adam().state_dict() | {"exp_avg:w": np.zeros(2)})
    # nothing changed by the failed loads
    assert adam.lr == 0.5 and adam.state == {} and adam.step_count == 0


def test_state_shape_mismatch_at_step():
    opt = SGD(0.1, momentum=0.9)
    opt.step({"w": np.ones(3)}, {"w": np.ones(3)})
    with pytest.raises(ValueError,
                       match=r"SGD.step: state 'momentum_buffer' for 'w' has shape \(3,\) but "
                             r"params\['w'\] has shape \(4,\)"):
        opt.step({"w": np.ones(4)}, {"w": np.ones(4)})


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_config_roundtrip_and_repr(make):
    opt = make()
    config = opt.config()
    assert json.loads(json.dumps(config)) == config
    clone = type(opt).from_config(config)
    assert clone.config() == config
    assert repr(opt).startswith(f"{type(opt).__name__}(lr=")
    with pytest.raises(ValueError, match="from_config: config is for 'Other'"):
        type(opt).from_config(config | {"name": "Other"})


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "make, exc, pattern",
    [
        (lambda: SGD(0.0), ValueError, r"SGD: lr must be a finite number in \(0.0, inf\], got 0.0"),
        (lambda: SGD(-1), ValueError, r"SGD: lr must be a finite number in \(0.0, inf\], got -1.0"),
        (lambda: SGD(float("nan")), ValueError, r"SGD: lr must be .*got nan"),
        (lambda: SGD(float("inf")), ValueError, r"SGD: lr must be .*got inf"),
        (lambda: SGD("0.1"), TypeError, r"SGD: lr must be a real number, got '0.1' \(str\)"),
        (lambda: SGD(0.1, momentum=-0.1), ValueError,
         r"SGD: momentum must be a finite number in \[0.0, 1.0\), got -0.1"),
        (lambda: SGD(0.1, momentum=1.0), ValueError,
         r"SGD: momentum must be a finite number in \[0.0, 1.0\), got 1.0"),
        (lambda: SGD(0.1, nesterov=True), ValueError,
         r"SGD: nesterov=True requires momentum in \(0, 1\), got momentum=0.0"),
        (lambda: SGD(0.1, momentum=0.9, nesterov="yes"), TypeError,
         r"SGD: nesterov must be True or False, got 'yes'"),
        (lambda: SGD(0.1, weight_decay=-1e-4), ValueError,
         r"SGD: weight_decay must be a finite number in \[0.0, inf\], got -0.0001"),
        (lambda: Adam(0.0), ValueError,
         r"Adam: lr must be a finite number in \(0.0, inf\], got 0.0"),
        (lambda: Adam(betas=(1.0, 0.999)), ValueError,
         r"Adam: betas\[0\] must be a finite number in \[0.0, 1.0\), got 1.0"),
        (lambda: Adam(betas=(0.9, -0.1)), ValueError,
         r"Adam: betas\[1\] must be a finite number in \[0.0, 1.0\), got -0.1"),
        (lambda: Adam(betas=0.9), TypeError,
         r"Adam: betas must be a pair \(beta1, beta2\) in \[0, 1\), got 0.9"),
        (lambda: Adam(betas=(0.9,)), TypeError, r"Adam: betas must be a pair .*got \(0.9,\)"),
        (lambda: Adam(eps=0.0), ValueError,
         r"Adam: eps must be a finite number in \(0.0, inf\], got 0.0"),
        (lambda: Adam(weight_decay=-1.0), ValueError,
         r"Adam: weight_decay must be a finite number in \[0.0, inf\], got -1.0"),
    ],
)
def test_constructor_validation(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


@pytest.mark.parametrize(
    "params, grads, exc, pattern",
    [
        ({"w": np.ones(2)}, {"v": np.ones(2)}, ValueError,
         r"SGD.step: params and grads must have the same keys; missing from grads: \['w'\], not in "
         r"params: \['v'\]"),
        ({"w": np.ones(2)}, {"w": np.ones(3)}, ValueError,
         r"SGD.step: grads\['w'\] has shape \(3,\) but params\['w'\] has shape \(2,\)"),
        ([np.ones(2)], [np.ones(2)], TypeError,
         r"SGD.step: params must be a dict \{name: ndarray\}, got list"),
        ({"w": np.ones(2)}, None, TypeError, r"SGD.step: grads must be a dict .*got NoneType"),
        ({"w": np.ones(2, dtype=int)}, {"w": np.ones(2)}, TypeError,
         r"SGD.step: params\['w'\] must be a float32/float64 ndarray, got dtype int64"),
        ({"w": [1.0, 2.0]}, {"w": np.ones(2)}, TypeError,
         r"params\['w'\] must be a float32/float64 ndarray, got list"),
        ({"w": np.ones(2)}, {"w": [1.0, 2.0]}, TypeError,
         r"SGD.step: grads\['w'\] must be a float ndarray, got list"),
        ({"w": np.broadcast_to(np.ones(1), (2,))}, {"w": np.ones(2)}, ValueError,
         r"SGD.step: params\['w'\] is read-only; it must be updated in place"),
    ],
)
def test_step_validation(params, grads, exc, pattern):
    with pytest.raises(exc, match=pattern):
        SGD(0.1).step(params, grads)


# ---------------------------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------------------------

@settings(deadline=None, max_examples=30)
@given(st.floats(1e-4, 1.0), st.integers(1, 7), st.floats(0.05, 1.0))
def test_step_lr_sequence(base_lr, step_size, gamma):
    opt = SGD(base_lr)
    sched = StepLR(opt, step_size, gamma)
    lrs = [opt.lr]
    for _ in range(25):
        lrs.append(sched.step())
        assert sched.lr == opt.lr == lrs[-1]
    expected = [base_lr * gamma ** (e // step_size) for e in range(26)]
    assert lrs == expected


def test_step_lr_by_hand():
    opt = SGD(1.0)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    seen = [opt.lr] + [sched.step() for _ in range(5)]
    assert seen == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert sched.get_lr() == 0.25 and sched.last_epoch == 5


@settings(deadline=None, max_examples=30)
@given(st.floats(1e-4, 1.0), st.integers(1, 12), st.floats(0.0, 1e-4))
def test_cosine_sequence_matches_pytorch_closed_form(base_lr, t_max, eta_min):
    opt = Adam(base_lr)
    sched = CosineAnnealingLR(opt, t_max, eta_min)
    lrs = [opt.lr] + [sched.step() for _ in range(2 * t_max + 3)]
    expected = [
        eta_min + (
            base_lr - eta_min) * (1 + math.cos(math.pi * e / t_max)) / 2 for e in range(len(lrs))]
    assert lrs == expected
    assert lrs[0] == pytest.approx(base_lr, rel=1e-14)
    assert lrs[t_max] == pytest.approx(eta_min, abs=1e-15)


def test_cosine_reaches_zero_without_error():
    opt = SGD(0.1)
    sched = CosineAnnealingLR(opt, t_max=4)
    lrs = [sched.step() for _ in range(4)]
    assert lrs[-1] == 0.0 and opt.lr == 0.0
    assert lrs == sorted(lrs, reverse=True)


def test_cosine_with_warmup():
    opt = SGD(0.3)
    sched = CosineAnnealingLR(opt, t_max=4, eta_min=0.01, warmup=2)
    lrs = [opt.lr] + [sched.step() for _ in range(7)]
    warm = [0.3 * 1 / 3, 0.3 * 2 / 3]
    cos = [0.01 + 0.29 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(6)]
    assert lrs == pytest.approx(warm + cos, rel=1e-15)
    assert lrs[2] == 0.3 and lrs[6] == pytest.approx(0.01, rel=1e-15)


@pytest.mark.parametrize(
    "make",
    [lambda o: StepLR(o, 3, 0.5), lambda o: CosineAnnealingLR(o, 10, 1e-3),
     lambda o: CosineAnnealingLR(o, 5, 0, warmup=3)],
)
@pytest.mark.parametrize("through_npz", [False, True])
def test_schedule_state_dict_resume(make, through_npz):
    opt = SGD(0.2, momentum=0.9)
    sched = make(opt)
    for _ in range(4):
        sched.step()
    state = sched.state_dict()
    assert all(isinstance(v, (int, float)) for v in state.values())
    expected = [sched.step() for _ in range(6)]

    opt2 = SGD(0.7, momentum=0.9)
    sched2 = make(opt2)
    sched2.load_state_dict(npz_roundtrip(state) if through_npz else state)
    assert opt2.lr == sched2.lr == state["base_lr"] * 0 + sched2.get_lr()
    assert sched2.last_epoch == 4 and sched2.base_lr == 0.2
    assert [sched2.step() for _ in range(6)] == expected


def test_schedule_repr_and_config():
    sched = CosineAnnealingLR(SGD(0.1), t_max=5, eta_min=0.001, warmup=1)
    assert sched.config() == {"name": "CosineAnnealingLR", "t_max": 5, "eta_min": 0.001,
                              "warmup": 1}
    assert repr(
        sched) == "CosineAnnealingLR(t_max=5, eta_min=0.001, warmup=1, base_lr=0.1, last_epoch=0)"
    assert StepLR(SGD(0.1), 2).config() == {"name": "StepLR", "step_size": 2, "gamma": 0.1}


@pytest.mark.parametrize(
    "make, exc, pattern",
    [
        (lambda o: StepLR(o, 0), ValueError, r"StepLR: step_size must be an int >= 1, got 0"),
        (lambda o: StepLR(o, 2.0), TypeError,
         r"StepLR: step_size must be an int >= 1, got 2.0 \(float\)"),
        (lambda o: StepLR(o, 2, gamma=0.0), ValueError,
         r"StepLR: gamma must be a finite number in \(0.0, inf\], got 0.0"),
        (lambda o: StepLR(o, 2, gamma=float("nan")), ValueError,
         r"StepLR: gamma must be .*got nan"),
        (lambda o: CosineAnnealingLR(o, 0), ValueError,
         r"CosineAnnealingLR: t_max must be an int >= 1, got 0"),
        (lambda o: CosineAnnealingLR(o, 5, eta_min=-1e-3), ValueError,
         r"CosineAnnealingLR: eta_min must be a finite number in \[0.0, inf\], got -0.001"),
        (lambda o: CosineAnnealingLR(o, 5, warmup=-1), ValueError,
         r"CosineAnnealingLR: warmup must be an int >= 0, got -1"),
        (lambda o: StepLR("sgd", 2), TypeError,
         r"StepLR: optimizer must be an Optimizer \(SGD, Adam\), got str"),
    ],
)
def test_schedule_validation(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make(SGD(0.1))


def test_schedule_load_state_dict_errors():
    sched = StepLR(SGD(0.1), 2)
    with pytest.raises(ValueError, match=r"StepLR.load_state_dict: expected keys "
                                         r"\['base_lr', 'gamma', 'last_epoch', 'step_size'\], "
                                         r"got \['base_lr', 'eta_min', 'last_epoch', 't_max', "
                                         r"'warmup'\]"):
        sched.load_state_dict(CosineAnnealingLR(SGD(0.1), 3).state_dict())
    with pytest.raises(ValueError, match=r"StepLR: last_epoch must be an int >= 0, got -1"):
        sched.load_state_dict(sched.state_dict() | {"last_epoch": -1})
    assert sched.last_epoch == 0


# ------------------------------------------------------------------------------------------
# bad inputs: the battery's rows for optim (machinery: bad_input.py)
# ------------------------------------------------------------------------------------------

def state(**change):
    base = {"lr": 0.1, "step": 0, "momentum": 0.0, "nesterov": 0, "weight_decay": 0.0}
    base.update(change)
    return base


def sgd_step(params, grads):
    return optim.SGD(0.1).step(params, grads)


P3 = {"w": np.zeros(3, np.float32)}
G3 = {"w": np.zeros(3, np.float32)}

BAD_INPUTS = {
    "SGD lr=0": (lambda t: optim.SGD(0), ValueError, r"SGD: lr", r"got 0\.0", r"\(0\.0, inf\]"),
    "SGD lr=-1": (lambda t: optim.SGD(-1), ValueError, r"SGD: lr", r"got -1\.0", r"\(0\.0, inf\]"),
    "SGD lr=nan": (lambda t: optim.SGD(math.nan), ValueError, r"SGD: lr", r"got nan",
                   r"finite number in \(0"),
    "SGD lr=float32 nan": (lambda t: optim.SGD(np.float32("nan")), ValueError, r"SGD: lr",
                           r"got nan",
                           r"finite number in \(0"),
    "SGD lr=inf": (lambda t: optim.SGD(math.inf), ValueError, r"SGD: lr", r"got inf",
                   r"finite number in \(0"),
    "SGD lr='0.1'": (lambda t: optim.SGD("0.1"), TypeError, r"SGD: lr", r"got '0\.1'",
                     r"a real number"),
    "SGD lr=None": (lambda t: optim.SGD(None), TypeError, r"SGD: lr", r"got None",
                    r"a real number"),
    "SGD momentum=1": (lambda t: optim.SGD(0.1, momentum=1.0), ValueError, r"SGD: momentum",
                       r"got 1\.0",
                       r"\[0\.0, 1\.0\)"),
    "SGD momentum=-0.1": (lambda t: optim.SGD(0.1, momentum=-0.1), ValueError, r"SGD: momentum",
                          r"got -0\.1",
                          r"\[0\.0, 1\.0\)"),
    "SGD momentum=nan": (lambda t: optim.SGD(0.1, momentum=math.nan), ValueError, r"SGD: momentum",
                         r"got nan",
                         r"\[0\.0, 1\.0\)"),
    "SGD nesterov without momentum": (lambda t: optim.SGD(0.1, nesterov=True), ValueError,
                                      r"SGD: nesterov=True",
                                      r"got momentum=0\.0", r"requires momentum in \(0, 1\)"),
    "SGD nesterov='yes'": (lambda t: optim.SGD(0.1, momentum=0.9, nesterov="yes"), TypeError,
                           r"SGD: nesterov",
                           r"got 'yes'", r"True or False"),
    "SGD weight_decay=-1": (lambda t: optim.SGD(0.1, weight_decay=-1), ValueError,
                            r"SGD: weight_decay",
                            r"got -1\.0", r"\[0\.0, inf\]"),
    "Adam betas=(1.0, 0.999)": (lambda t: optim.Adam(betas=(1.0, 0.999)), ValueError,
                                r"Adam: betas\[0\]",
                                r"got 1\.0", r"\[0\.0, 1\.0\)"),
    "Adam betas=(0.9, -0.1)": (lambda t: optim.Adam(betas=(0.9, -0.1)), ValueError,
                               r"Adam: betas\[1\]",
                               r"got -0\.1", r"\[0\.0, 1\.0\)"),
    "Adam betas=(0.9,)": (lambda t: optim.Adam(betas=(0.9,)), TypeError, r"Adam: betas",
                          r"got \(0\.9,\)",
                          r"a pair \(beta1, beta2\)"),
    "Adam eps=0": (lambda t: optim.Adam(eps=0), ValueError, r"Adam: eps", r"got 0\.0",
                   r"\(0\.0, inf\]"),
    "Adam lr=nan": (lambda t: optim.Adam(lr=math.nan), ValueError, r"Adam: lr", r"got nan",
                    r"finite number in \(0"),
    "Adam lr=-1e-3": (lambda t: optim.Adam(lr=-1e-3), ValueError, r"Adam: lr", r"got -0\.001",
                      r"\(0\.0, inf\]"),
    "optimizer.lr = -1": (lambda t: setattr(optim.SGD(0.1), "lr", -1), ValueError, r"SGD: lr",
                          r"got -1\.0",
                          r"\[0\.0, inf\]"),
    "optimizer.lr = nan": (lambda t: setattr(optim.Adam(), "lr", math.nan), ValueError, r"Adam: lr",
                           r"got nan",
                           r"finite number"),
    "step: grads of another shape": (lambda t: sgd_step(P3, {"w": np.zeros(4, np.float32)}),
                                     ValueError,
                                     r"SGD\.step: grads\['w'\]", r"has shape \(4,\)",
                                     r"params\['w'\] has shape \(3,\)"),
    "step: grads with other keys": (lambda t: sgd_step(P3, {"v": np.zeros(3, np.float32)}),
                                    ValueError,
                                    r"SGD\.step: params and grads", r"not in params: \['v'\]",
                                    r"the same keys"),
    "step: params a list": (lambda t: sgd_step([1], G3), TypeError, r"SGD\.step: params",
                            r"got list",
                            r"a dict \{name: ndarray\}"),
    "step: integer grads": (lambda t: sgd_step(P3, {"w": np.zeros(3, int)}), TypeError,
                            r"SGD\.step: grads\['w'\]",
                            r"dtype int64", r"a float ndarray"),
    "step: integer params": (lambda t: sgd_step({"w": np.zeros(3, int)}, {"w": np.zeros(3)}),
                             TypeError,
                             r"SGD\.step: params\['w'\]", r"dtype int64",
                             r"float32/float64 ndarray"),
    "step: grads a list": (lambda t: sgd_step(P3, {"w": [0.0, 0.0, 0.0]}), TypeError,
                           r"SGD\.step: grads\['w'\]",
                           r"got list", r"a float ndarray"),
    "load_state_dict: a string": (lambda t: optim.SGD(0.1).load_state_dict("x"), TypeError,
                                  r"SGD\.load_state_dict: state_dict", r"got str", r"a dict"),
    "load_state_dict: missing keys": (lambda t: optim.SGD(0.1).load_state_dict({"lr": 0.1}),
                                      ValueError,
                                      r"SGD\.load_state_dict", r"missing keys \['step'",
                                      r"allowed: \['lr'"),
    "load_state_dict: lr array": (lambda t: optim.SGD(0.1).load_state_dict(state(lr=np.ones(2))),
                                  ValueError,
                                  r"SGD\.load_state_dict: 'lr'", r"array of shape \(2,\)",
                                  r"a scalar"),
    "load_state_dict: object buffer": (
        lambda t: optim.SGD(0.1, momentum=0.9).load_state_dict(
            state(momentum=0.9, **{"momentum_buffer:w": np.array([None])})), TypeError,
        r"SGD\.load_state_dict: 'momentum_buffer:w'", r"dtype object", r"float32/float64 ndarray"),
    "StepLR step_size=0": (lambda t: optim.StepLR(optim.SGD(0.1), 0), ValueError,
                           r"StepLR: step_size", r"got 0",
                           INT1),
    "StepLR gamma=0": (lambda t: optim.StepLR(optim.SGD(0.1), 1, gamma=0), ValueError,
                       r"StepLR: gamma",
                       r"got 0\.0", r"\(0\.0, inf\]"),
    "StepLR optimizer=None": (lambda t: optim.StepLR(None, 1), TypeError, r"StepLR: optimizer",
                              r"got NoneType",
                              r"an Optimizer"),
    "CosineAnnealingLR t_max=0": (lambda t: optim.CosineAnnealingLR(optim.SGD(0.1), 0), ValueError,
                                  r"CosineAnnealingLR: t_max", r"got 0", INT1),
    "CosineAnnealingLR warmup=-1": (lambda t: optim.CosineAnnealingLR(optim.SGD(0.1), 5, warmup=-1),
                                    ValueError,
                                    r"CosineAnnealingLR: warmup", r"got -1", INT0),
    "CosineAnnealingLR eta_min=nan": (
        lambda t: optim.CosineAnnealingLR(optim.SGD(0.1), 5, eta_min=math.nan),
        ValueError, r"CosineAnnealingLR: eta_min", r"got nan", r"finite number"),
}


@pytest.mark.parametrize(ROW_FIELDS, rows(BAD_INPUTS))
def test_bad_input(tmp_path, call, error, who, got, allowed):
    check_bad_input(tmp_path, call, error, who, got, allowed)


# constructor -> (factory, valid keyword arguments, {argument: strategy of values it must refuse});
# test_errors.py draws a random invalid argument for a random constructor of this table and others
CONSTRUCTORS = {
    "SGD": (optim.SGD, {"lr": 0.1, "momentum": 0.5}, {
        "lr": bad_positive_float(), "momentum": bad_unit_interval(),
        "weight_decay": bad_non_negative_float(),
        "nesterov": NOT_BOOL.filter(lambda v: v not in (0, 1))}),
    "Adam": (optim.Adam, {}, {
        "lr": bad_positive_float(), "eps": bad_positive_float(),
        "weight_decay": bad_non_negative_float(),
        "betas": st.one_of(st.tuples(bad_unit_interval(), st.just(0.999)),
                           st.tuples(st.just(0.9), bad_unit_interval()),
                           st.tuples(st.just(0.9)), st.text(max_size=3), st.none(), st.floats())}),
    "StepLR": (lambda **kw: optim.StepLR(optim.SGD(0.1), **kw), {"step_size": 2}, {
        "step_size": bad_int(1), "gamma": bad_positive_float()}),
    "CosineAnnealingLR": (lambda **kw: optim.CosineAnnealingLR(optim.SGD(0.1), **kw), {"t_max": 5},
                          {
        "t_max": bad_int(1), "eta_min": bad_non_negative_float(), "warmup": bad_int(0)}),
}


@settings(max_examples=40, deadline=None)
@given(
    shape=st.sampled_from([(1,), (7,), (3, 5), (70_001,), (4, 3, 3, 2)]),
    dtype=st.sampled_from([np.float32, np.float64]),
    lr=st.floats(1e-4, 1.0),
    beta1=st.floats(0.0, 0.99),
    beta2=st.floats(0.0, 0.9999),
    eps=st.floats(1e-10, 1e-2),
    weight_decay=st.sampled_from([0.0, 1e-4, 0.5]),
    seed=st.integers(0, 2**16),
)
def test_adams_compiled_pass_gives_the_bits_of_its_numpy_passes(
    shape, dtype, lr, beta1, beta2, eps, weight_decay, seed
):
    """Four steps, one of them with a zero gradient: the compiled pass (on the pool's flat slices
    for the 70,001-value parameter) and the whole-array NumPy passes, bit for bit."""
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(shape).astype(dtype)
    fast, slow = (Adam(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
                  for _ in range(2))
    ps = {"w": p0.copy()}
    pn = {"w": p0.copy()}
    state_s, state_n = {}, {}
    for step in range(4):
        g = np.zeros(shape, dtype) if step == 2 else rng.standard_normal(shape).astype(dtype)
        for opt, params, state in ((fast, ps, state_s), (slow, pn, state_n)):
            if "step" not in state:
                state.update(exp_avg=np.zeros_like(p0), exp_avg_sq=np.zeros_like(p0), step=0)
            state["step"] += 1
            args = (params["w"], g, state["exp_avg"], state["exp_avg_sq"], state["step"])
            if opt is fast:
                opt._update_compiled(*args)
            else:
                opt._update_numpy("w", *args)
        np.testing.assert_array_equal(ps["w"], pn["w"])
        np.testing.assert_array_equal(state_s["exp_avg_sq"], state_n["exp_avg_sq"])


def test_adam_takes_the_compiled_pass_for_contiguous_arrays_of_one_dtype(monkeypatch):
    calls = []
    monkeypatch.setattr(optim, "_adam_kernel", lambda *a: calls.append(a[0].dtype))
    opt = Adam()
    opt.step({"w": np.ones((2, 3), np.float32)}, {"w": np.ones((2, 3), np.float32)})
    assert calls == [np.float32]
    opt.step({"v": np.ones(3, np.float32)}, {"v": np.ones(3, np.float64)})  # the NumPy passes
    assert calls == [np.float32]
