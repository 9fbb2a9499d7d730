"""lmref.ops.conv against torch.nn.functional: conv2d, linear, fold_batch_norm."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from hypothesis import example, given
from hypothesis import strategies as st

from lmref.ops import conv2d, conv_transpose2d, fold_batch_norm, linear
from lmref.trace import trace

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)
# torch notes that "same" padding with an even kernel copies the input: a performance remark only
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


def t(a):
    return None if a is None else torch.from_numpy(a)


@st.composite
def conv_cases(draw):
    """Random conv2d arguments: grouped, depthwise (with channel multiplier), dilated, strided, any padding."""
    if draw(st.booleans()):                       # depthwise: groups == Cin, Cout = multiplier * Cin
        G = draw(st.integers(1, 4))
        cin_g, cout_g = 1, draw(st.integers(1, 2))
    else:
        G = draw(st.integers(1, 3))
        cin_g, cout_g = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    kinds = ["int", "pair", "valid"] + (["same"] if stride == (1, 1) else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "int":
        padding = draw(st.integers(0, 3))
        pads = (padding, padding)
    elif kind == "pair":
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
        pads = padding
    else:
        padding = kind
        pads = (0, 0)
    # smallest input the (dilated) kernel fits into after padding ("same" fits any size)
    ekh, ekw = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    hmin = 1 if kind == "same" else max(1, ekh - 2 * pads[0])
    wmin = 1 if kind == "same" else max(1, ekw - 2 * pads[1])
    H, W = draw(st.integers(hmin, hmin + 6)), draw(st.integers(wmin, wmin + 6))
    B = draw(st.integers(1, 2))
    return dict(B=B, C_in=G * cin_g, C_out=G * cout_g, H=H, W=W, k=(kh, kw), stride=stride,
                padding=padding, dilation=dilation, groups=G, bias=draw(st.booleans()),
                # torch accepts both ints and pairs: pass ints when the pair is square
                int_args=draw(st.booleans()))


def _args(c):
    s, d = c["stride"], c["dilation"]
    if c["int_args"]:
        s = s[0] if s[0] == s[1] else s
        d = d[0] if d[0] == d[1] else d
    return s, d


def conv_case(B, C_in, C_out, H, W, k, stride=(1, 1), padding=0, groups=1, bias=True):
    return dict(B=B, C_in=C_in, C_out=C_out, H=H, W=W, k=k, stride=stride, padding=padding, dilation=(1, 1),
                groups=groups, bias=bias, int_args=True)


# Pinned examples: every run tries these besides its fresh random ones. They are the fast path's
# branches the models take on every pass, each with a bias (a random draw reaches some of them only
# now and then: benchmarks/results/property_exploration_unpinned.md).
PINNED_CONV = [
    conv_case(1, 4, 4, 6, 7, (3, 3), padding=1, groups=4),                # depthwise s1: single block, wide grid
    conv_case(1, 4, 4, 7, 6, (3, 3), (2, 2), padding=1, groups=4),        # depthwise s2: single block, exact grid
    conv_case(2, 3, 6, 5, 5, (3, 3), padding=1, groups=3),                # channel multiplier
    conv_case(1, 3, 2, 4, 5, (1, 1)),                                     # 1x1, one image
    conv_case(2, 3, 2, 4, 5, (1, 1)),                                     # 1x1, a batch in one GEMM
    conv_case(1, 2, 2, 5, 6, (2, 4), padding="same"),                     # "same" with an even kernel
]


def pinned(cases, **fixed):
    """Decorator: hypothesis @example(c=case, **fixed) for every case."""
    def add(test):
        for c in cases:
            test = example(c=c, **fixed)(test)
        return test
    return add


@given(c=conv_cases(), dtype=DTYPES, seed=SEEDS)
@pinned(PINNED_CONV, dtype=np.float64, seed=0)
def test_conv2d_matches_torch(c, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c["B"], c["C_in"], c["H"], c["W"])).astype(dtype)
    w = rng.standard_normal((c["C_out"], c["C_in"] // c["groups"]) + c["k"]).astype(dtype)
    b = rng.standard_normal(c["C_out"]).astype(dtype) if c["bias"] else None
    stride, dilation = _args(c)
    kw = dict(stride=stride, padding=c["padding"], dilation=dilation, groups=c["groups"])
    y = conv2d(x, w, b, **kw)
    assert_close(y, F.conv2d(t(x), t(w), t(b), **kw))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_same_padding_even_kernel_and_depthwise(dtype):
    # even kernels under "same": torch puts the odd padding row/column at the bottom/right
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    for w, groups, dil in [(rng.standard_normal((3, 4, 2, 4)), 1, 1),
                           (rng.standard_normal((3, 4, 4, 2)), 1, (2, 3)),
                           (rng.standard_normal((4, 1, 3, 3)), 4, 1)]:   # depthwise 3x3
        w = w.astype(dtype)
        y = conv2d(x, w, padding="same", dilation=dil, groups=groups)
        assert y.shape[2:] == x.shape[2:]
        assert_close(y, F.conv2d(t(x), t(w), padding="same", dilation=dil, groups=groups))


@given(lead=st.lists(st.integers(1, 3), min_size=0, max_size=3), n_in=st.integers(1, 6),
       n_out=st.integers(1, 6), bias=st.booleans(), dtype=DTYPES, seed=SEEDS)
def test_linear_matches_torch(lead, n_in, n_out, bias, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(tuple(lead) + (n_in,)).astype(dtype)
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype) if bias else None
    assert_close(linear(x, w, b), F.linear(t(x), t(w), t(b)))


@given(c=conv_cases(), affine=st.booleans(), eps=st.sampled_from([1e-5, 1e-3]), dtype=DTYPES, seed=SEEDS)
def test_fold_batch_norm_equals_conv_then_bn(c, affine, eps, dtype, seed):
    rng = np.random.default_rng(seed)
    C = c["C_out"]
    x = rng.standard_normal((c["B"], c["C_in"], c["H"], c["W"])).astype(dtype)
    w = rng.standard_normal((C, c["C_in"] // c["groups"]) + c["k"]).astype(dtype)
    b = rng.standard_normal(C).astype(dtype) if c["bias"] else None
    mean = rng.standard_normal(C).astype(dtype)
    var = rng.uniform(0.2, 3.0, C).astype(dtype)
    gamma = rng.standard_normal(C).astype(dtype) if affine else None
    beta = rng.standard_normal(C).astype(dtype) if affine else None
    kw = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])

    wf, bf = fold_batch_norm(w, b, mean, var, gamma, beta, eps=eps)
    assert wf.dtype == dtype and bf.dtype == dtype and wf.shape == w.shape and bf.shape == (C,)
    folded = conv2d(x, wf, bf, **kw)
    reference = F.batch_norm(F.conv2d(t(x), t(w), t(b), **kw), t(mean), t(var), t(gamma), t(beta),
                             training=False, eps=eps)
    assert_close(folded, reference)


def test_fold_batch_norm_linear_weight():
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((5, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    mean, var, g, be = rng.standard_normal(3), rng.uniform(0.5, 2, 3), rng.standard_normal(3), rng.standard_normal(3)
    wf, bf = fold_batch_norm(w, b, mean, var, g, be)
    expected = F.batch_norm(F.linear(t(x), t(w), t(b)), t(mean), t(var), t(g), t(be), training=False)
    assert_close(linear(x, wf, bf), expected)


def test_conv2d_errors():
    x = np.zeros((1, 4, 5, 5), np.float32)
    w = np.zeros((2, 4, 3, 3), np.float32)
    with pytest.raises(TypeError, match="float32 or float64"):
        conv2d(x.astype(np.int64), w.astype(np.int64))
    with pytest.raises(TypeError, match="float32 or float64"):
        conv2d(x.astype(np.float16), w.astype(np.float16))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        conv2d(x.tolist(), w)
    with pytest.raises(TypeError, match="weight: dtype"):
        conv2d(x, w.astype(np.float64))
    with pytest.raises(ValueError, match="x: expected rank 4"):
        conv2d(x[0], w)
    with pytest.raises(ValueError, match="weight: expected rank 4"):
        conv2d(x, w[0])
    with pytest.raises(ValueError, match="input channels"):
        conv2d(x, np.zeros((2, 3, 3, 3), np.float32))             # weight wants 3 channels, x has 4
    with pytest.raises(ValueError, match="groups=3 must divide"):
        conv2d(x, np.zeros((3, 1, 3, 3), np.float32), groups=3)
    with pytest.raises(ValueError, match="groups=2 must divide"):
        conv2d(x, np.zeros((3, 2, 3, 3), np.float32), groups=2)   # Cout=3 not divisible by 2
    with pytest.raises(ValueError, match="input channels"):
        conv2d(x, w, groups=2)                                    # grouped x needs weight [*, 2, ...]
    with pytest.raises(ValueError, match="groups must be a positive int"):
        conv2d(x, w, groups=0)
    with pytest.raises(ValueError, match="bias has 3 entries"):
        conv2d(x, w, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="not supported for strided"):
        conv2d(x, w, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding must be"):
        conv2d(x, w, padding="full")
    with pytest.raises(ValueError, match="padding must be >= 0"):
        conv2d(x, w, padding=-1)
    with pytest.raises(ValueError, match="stride and dilation"):
        conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match="smaller than the"):
        conv2d(x, w, dilation=3)                                  # 7x7 dilated kernel on 5x5


def test_linear_and_fold_errors():
    x, w = np.zeros((2, 4)), np.zeros((3, 4))
    with pytest.raises(ValueError, match="input features"):
        linear(x, np.zeros((3, 5)))
    with pytest.raises(TypeError, match="float32 or float64"):
        linear(x.astype(np.int32), w)
    with pytest.raises(ValueError, match="weight: expected rank 2"):
        linear(x, w[None])
    with pytest.raises(ValueError, match="bias has 2 entries"):
        linear(x, w, np.zeros(2))
    with pytest.raises(ValueError, match="running_var has 2 entries"):
        fold_batch_norm(np.zeros((3, 4, 1, 1)), None, np.zeros(3), np.ones(2), None, None)
    with pytest.raises(TypeError, match="gamma: dtype"):
        fold_batch_norm(np.zeros((3, 4)), None, np.zeros(3), np.ones(3), np.ones(3, np.float32), None)


def test_conv_ops_are_traced():
    x = np.ones((1, 2, 4, 4))
    w = np.ones((3, 2, 3, 3))
    with trace() as tr:
        y = conv2d(x, w, None, stride=2, padding=1)
        linear(y.reshape(1, -1), np.ones((2, 12)))
    assert tr.names() == ["conv2d", "linear"]
    rec = tr["conv2d"]
    assert rec.inputs == [[1, 2, 4, 4], [3, 2, 3, 3]] and rec.attrs == {"stride": 2, "padding": 1}
    np.testing.assert_array_equal(rec.output, y)
    # the centre output sees the full 2x3x3 window of ones
    assert y.shape == (1, 3, 2, 2) and y[0, 0, 1, 1] == 18.0


# ---------------------------------------------------------------------------------------------
# conv_transpose2d

@st.composite
def conv_transpose_cases(draw):
    """Random conv_transpose2d arguments: grouped, strided, dilated, padded, with output padding."""
    G = draw(st.integers(1, 3))
    cin, cout_g = G * draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride, dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3))), (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    out_pad = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    H, W = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    size = [(n - 1) * s - 2 * p + d * (kk - 1) + o + 1 for n, s, p, d, kk, o in zip((H, W), stride, padding, dilation, k, out_pad)]
    if min(size) < 1:
        padding = (0, 0)
    return dict(shape=(draw(st.integers(1, 2)), cin, H, W), wshape=(cin, cout_g) + k, stride=stride, padding=padding,
                output_padding=out_pad, dilation=dilation, groups=G, bias=draw(st.booleans()))


@given(conv_transpose_cases(), DTYPES, SEEDS)
def test_conv_transpose2d_matches_torch(c, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(c["shape"]).astype(dtype)
    w = rng.standard_normal(c["wshape"]).astype(dtype)
    b = rng.standard_normal(c["wshape"][1] * c["groups"]).astype(dtype) if c["bias"] else None
    kw = {k: c[k] for k in ("stride", "padding", "output_padding", "groups", "dilation")}
    y = conv_transpose2d(x, w, b, **kw)
    assert y.flags.c_contiguous
    assert_close(y, F.conv_transpose2d(t(x), t(w), t(b), **kw))


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    """<conv2d(x, W), y> == <x, conv_transpose2d(y, W)>: the definition of the transposed conv."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3))
    y = rng.standard_normal(conv2d(x, w, stride=2, padding=1).shape)
    lhs = np.vdot(conv2d(x, w, stride=2, padding=1), y)
    rhs = np.vdot(x, conv_transpose2d(y, w, stride=2, padding=1, output_padding=(0, 1)))
    assert abs(lhs - rhs) < 1e-9 * abs(lhs)


@pytest.mark.parametrize("kw, err, match", [
    (dict(output_padding=2, stride=2), ValueError, "output_padding"),
    (dict(groups=2), ValueError, "input channels"),
    (dict(stride=0), ValueError, "stride"),
    (dict(padding=5), ValueError, "not positive"),
])
def test_conv_transpose2d_bad_arguments(kw, err, match):
    x, w = np.ones((1, 3, 4, 4)), np.ones((3, 2, 3, 3))
    with pytest.raises(err, match=match):
        conv_transpose2d(x, w, **kw)
