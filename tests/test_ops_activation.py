"""lmref.ops.activation against torch: element-wise activations, softmax, log_softmax, and erf."""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from hypothesis import given
from hypothesis import strategies as st

from lmref.ops import (clamp, gelu, hardsigmoid, hardswish, leaky_relu, log_softmax, prelu, relu, relu6, sigmoid,
                       silu, softmax, tanh)
from lmref.ops.activation import erf
from lmref.trace import trace

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)
SHAPES = st.lists(st.integers(1, 5), min_size=0, max_size=4)
SCALES = st.sampled_from([0.5, 3.0, 10.0, 60.0])      # 60: deep into the saturated tails

ELEMENTWISE = {
    "relu": (relu, F.relu),
    "relu6": (relu6, F.relu6),
    "sigmoid": (sigmoid, torch.sigmoid),
    "tanh": (tanh, torch.tanh),
    "silu": (silu, F.silu),
    "gelu": (gelu, F.gelu),
    "gelu_tanh": (lambda x: gelu(x, approximate="tanh"), lambda x: F.gelu(x, approximate="tanh")),
    "hardsigmoid": (hardsigmoid, F.hardsigmoid),
    "hardswish": (hardswish, F.hardswish),
}


def _x(rng, shape, scale, dtype):
    x = np.asarray(rng.standard_normal(shape) * scale)   # shape () too: a 0-d array, not a float
    if x.size >= 4:                          # the kinks of relu6 / hard* exactly
        x.flat[:4] = [-3.0, 0.0, 3.0, 6.0]
    return x.astype(dtype)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@given(shape=SHAPES, scale=SCALES, dtype=DTYPES, seed=SEEDS)
def test_elementwise_matches_torch(name, shape, scale, dtype, seed):
    ours, theirs = ELEMENTWISE[name]
    x = _x(np.random.default_rng(seed), tuple(shape), scale, dtype)
    y = ours(x)
    assert isinstance(y, np.ndarray)
    assert_close(y, theirs(torch.from_numpy(x)))


@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), data=st.data(), scale=SCALES,
       dtype=DTYPES, seed=SEEDS)
def test_softmax_and_log_softmax_match_torch(shape, data, scale, dtype, seed):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = _x(np.random.default_rng(seed), tuple(shape), scale, dtype) + dtype(data.draw(st.sampled_from([0.0, 500.0])))
    xt = torch.from_numpy(x)
    y = softmax(x, dim)
    assert_close(y, F.softmax(xt, dim))
    assert_close(log_softmax(x, dim), F.log_softmax(xt, dim))
    np.testing.assert_allclose(y.sum(axis=dim), 1.0, rtol=1e-5 if dtype == np.float32 else 1e-14)


def test_saturating_inputs_do_not_overflow():
    x = np.array([-1e4, -800.0, -100.0, -1.0, 0.0, 1.0, 100.0, 800.0, 1e4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # an overflow in exp would raise RuntimeWarning here
        for dtype in (np.float32, np.float64):
            xd = x.astype(dtype)
            for fn, ref in [(sigmoid, torch.sigmoid), (silu, F.silu), (gelu, F.gelu)]:
                y = fn(xd)
                assert np.all(np.isfinite(y))
                assert_close(y, ref(torch.from_numpy(xd)))
            assert_close(softmax(xd, 0), F.softmax(torch.from_numpy(xd), 0))
            assert_close(log_softmax(xd, -1), F.log_softmax(torch.from_numpy(xd), -1))
    assert 0.0 < sigmoid(np.array([-740.0]))[0] < 1e-320   # e^-740 is a subnormal, not 0 or nan


def test_erf_to_float64_precision():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(20000) * 2, rng.uniform(-7, 7, 20000),
                        [0.0, -0.0, 1e-300, -1e-20, 5.9, 6.0, 30.0, np.inf, -np.inf]])
    y = erf(x.reshape(1, -1, 1)).ravel()
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, torch.special.erf(torch.from_numpy(x)).numpy(), rtol=4e-16, atol=1e-300)
    assert erf(np.float64(0.5)) == math.erf(0.5) and erf(np.array(1.0)).shape == ()
    np.testing.assert_array_equal(erf(-x), -erf(x))                     # odd
    assert erf(np.array([np.inf, -np.inf])).tolist() == [1.0, -1.0]


def test_activation_errors():
    x = np.zeros((2, 3))
    for bad in (x.astype(np.int64), x.astype(np.float16), x.astype(bool)):
        for fn in (relu, relu6, sigmoid, tanh, silu, gelu, hardsigmoid, hardswish):
            with pytest.raises(TypeError, match="float32 or float64"):
                fn(bad)
        with pytest.raises(TypeError, match="float32 or float64"):
            softmax(bad, 0)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        relu([1.0, -1.0])
    with pytest.raises(ValueError, match="approximate must be"):
        gelu(x, approximate="erf")
    with pytest.raises(ValueError, match="dim 2 out of range"):
        softmax(x, 2)
    with pytest.raises(ValueError, match="dim -3 out of range"):
        log_softmax(x, -3)
    with pytest.raises(TypeError, match="dim must be an int"):
        softmax(x, None)
    with pytest.raises(ValueError, match="rank >= 1"):
        softmax(np.ones(()), 0)


def test_activations_are_traced():
    x = np.linspace(-4, 4, 6).reshape(2, 3)
    with trace() as tr:
        silu(x)
        y = softmax(x, dim=-1)
    # silu's sigmoid is internal: one record per op call
    assert tr.names() == ["silu", "softmax"]
    assert tr["softmax"].attrs == {"dim": -1} and tr["softmax"].inputs == [[2, 3]]
    np.testing.assert_array_equal(tr["softmax"].output, y)


@given(SHAPES, SCALES, DTYPES, SEEDS, st.booleans())
def test_silu_inplace_matches_torch_and_overwrites_its_input(shape, scale, dtype, seed, reference):
    """silu(x, inplace=True) returns x itself holding F.silu(x) (the definition, and the fast layer's
    kernel), as torch's inplace=True; a view that is not C-contiguous or a read-only array is refused."""
    from lmref import fast
    x = _x(np.random.default_rng(seed), shape, scale, dtype)
    with fast.off() if reference else fast.on():
        expected = silu(x)
        y = x.copy()
        out = silu(y, inplace=True)
    assert out is y
    np.testing.assert_array_equal(out, expected)
    assert_close(out, F.silu(torch.from_numpy(x.copy()), inplace=True).numpy())


def test_silu_inplace_refuses_views_it_cannot_overwrite():
    x = np.ones((4, 6), np.float32)
    with pytest.raises(ValueError, match="C-contiguous"):
        silu(x[:, ::2], inplace=True)
    x.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        silu(x, inplace=True)


# ---------------------------------------------------------------------------------------------
# leaky_relu, prelu, clamp

@given(shape=SHAPES, scale=SCALES, dtype=DTYPES, seed=SEEDS, slope=st.sampled_from([0.01, 0.2, -0.5, 1.5]))
def test_leaky_relu_matches_torch(shape, scale, dtype, seed, slope):
    x = _x(np.random.default_rng(seed), tuple(shape), scale, dtype)
    y = leaky_relu(x, slope)
    assert isinstance(y, np.ndarray)
    assert_close(y, F.leaky_relu(torch.from_numpy(x), slope))


@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=4), per_channel=st.booleans(), scale=SCALES,
       dtype=DTYPES, seed=SEEDS)
def test_prelu_matches_torch(shape, per_channel, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    x = _x(rng, tuple(shape), scale, dtype)
    n = shape[1] if per_channel and len(shape) >= 2 else 1
    w = rng.standard_normal(n).astype(dtype)
    y = prelu(x, w)
    assert isinstance(y, np.ndarray)
    assert_close(y, F.prelu(torch.from_numpy(x), torch.from_numpy(w)))


def test_prelu_rejects_a_wrong_number_of_slopes():
    with pytest.raises(ValueError, match="slopes"):
        prelu(np.ones((1, 3, 2, 2)), np.ones(2))


@given(shape=SHAPES, scale=SCALES, dtype=DTYPES, seed=SEEDS,
       lo=st.one_of(st.none(), st.floats(-3, 3)), hi=st.one_of(st.none(), st.floats(-3, 3)))
def test_clamp_matches_torch(shape, scale, dtype, seed, lo, hi):
    x = _x(np.random.default_rng(seed), tuple(shape), scale, dtype)
    if x.size:
        x.flat[-1] = np.nan                                  # NaN stays NaN
    if lo is None and hi is None:
        with pytest.raises(ValueError, match="at least one"):
            clamp(x)
        return
    y = clamp(x, lo, hi)                                     # lo > hi: every value is hi, as in torch
    assert isinstance(y, np.ndarray)
    assert_close(y, torch.clamp(torch.from_numpy(x), lo, hi))
