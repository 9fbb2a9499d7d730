"""The fast layer (``lmref.fast``) equals the definitions, op by op and model by model; traces and
golden bundles run the definitions whatever the switch says.

Every comparison runs the same call twice: with the fast layer on and inside ``fast.off()`` (the
plain definitions), over hypothesis-random shapes and both dtypes, at the dtype tolerances of
``conftest.assert_close`` (float64 to rounding, float32 rtol 1e-4 / atol 1e-5; whole models in
float32 rtol 2e-3 / atol 2e-4, stated where used).  Kernels that promise bit-identical results
(bilinear and nearest interpolate, max pool, sigmoid) are checked with ``assert_array_equal``.  The
blocking, batch folding and thread splitting of the kernels are forced on small shapes by shrinking
their thresholds.  No timings are asserted here; ``benchmarks/bench.py`` measures them.
"""
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_close
from hypothesis import example, given
from hypothesis import strategies as st

from lmref import fast, models, ops
from lmref.fast import buffers, threads
from lmref.fast import conv as conv_module
from lmref.models.common import conv_norm_act
from lmref.trace import OPS, trace
from lmref.weights import Model

DTYPES = st.sampled_from([np.float32, np.float64])
SEEDS = st.integers(0, 2**32 - 1)


def both_paths(fn):
    """(fast result, reference result) of fn()."""
    with fast.on():
        y_fast = fn()
    with fast.off():
        y_ref = fn()
    return y_fast, y_ref


def tiny_blocks(mp):
    """Thresholds shrunk so that small test shapes take every branch: im2col in bands of rows and
    groups of images, batch folding, padding into scratch, and two threads on tiny arrays."""
    mp.setattr(conv_module, "CHUNK_BYTES", 256)
    mp.setattr(threads, "PARALLEL_MIN", 1)
    mp.setattr(threads, "THREADS", 2)
    mp.setattr(threads, "BLOCK", 7)
    mp.setattr(conv_module, "PAD_CHUNK_BYTES", 1)           # pad one image at a time
    mp.setattr(conv_module, "GEMM_COLUMNS", 1)              # no minimum GEMM width: bands of rows
    mp.setattr(conv_module, "SMALL_PAD_BYTES", 0)           # pad into the reused scratch buffer


def test_switch_and_environment():
    assert fast.enabled()
    with fast.off():
        assert not fast.enabled()
        with fast.on():
            assert fast.enabled()
        assert not fast.enabled()
    assert fast.enabled()
    code = "import lmref.fast as f; print(f.enabled())"
    for value, expected in (("1", "False"), ("0", "True"), ("", "True")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "LMREF_REFERENCE": value}).stdout.strip()
        assert out == expected, (value, out)


def test_every_kernel_replaces_an_op_or_block_and_the_ops_hold_no_speed_code():
    """The door: KERNELS is keyed by the name of an @op or a @replaceable block; lmref/ops imports
    nothing of the fast layer and defines nothing named *fast*."""
    import pathlib
    ops_names = set(OPS)
    for key in fast.KERNELS:
        assert key in ops_names or key.startswith("lmref.models."), key
    assert {"conv2d", "linear", "batch_norm", "group_norm", "instance_norm", "sigmoid", "silu", "max_pool2d",
            "adaptive_avg_pool2d", "interpolate", "separable_self_attention"} <= set(fast.KERNELS)
    for path in pathlib.Path(ops.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "fast" not in "".join(line.split("#")[0] for line in text.splitlines() if line.lstrip().startswith(("def ", "from ", "import "))), path


def test_traces_run_the_definitions_and_the_switch_routes_calls(monkeypatch):
    """Outside a trace (fast on) conv2d goes to its kernel; inside a trace, and with the layer off, to
    the definition."""
    calls = []
    kernel = fast.KERNELS["conv2d"]
    monkeypatch.setitem(fast.KERNELS, "conv2d", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    x, w = np.ones((1, 2, 4, 4)), np.ones((3, 2, 3, 3))
    ops.conv2d(x, w)
    assert calls == [1]
    with trace():
        ops.conv2d(x, w)
    with fast.off():
        ops.conv2d(x, w)
    assert calls == [1]


# ---------------------------------------------------------------------------------------------
# conv2d

@st.composite
def conv_cases(draw):
    """Arguments aimed at the fast path's branches: 1x1 (strided, grouped), depthwise, general."""
    kind = draw(st.sampled_from(["pointwise", "depthwise", "general", "grouped"]))
    G = 1
    if kind == "pointwise":
        G = draw(st.sampled_from([1, 1, 2]))
        cin, cout, k = G * draw(st.integers(1, 5)), G * draw(st.integers(1, 5)), (1, 1)
        padding, dilation = 0, (1, 1)
    else:
        if kind == "depthwise":
            cin = cout = G = draw(st.integers(1, 6))
        elif kind == "grouped":
            G = draw(st.integers(2, 3))
            cin, cout = G * draw(st.integers(1, 3)), G * draw(st.sampled_from([1, 2]))
        else:
            cin, cout = draw(st.integers(1, 5)), draw(st.integers(1, 6))
        k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    ext = [d * (kk - 1) + 1 for d, kk in zip(dilation, k)]
    pads = padding if isinstance(padding, tuple) else (padding, padding)
    H = draw(st.integers(max(1, ext[0] - 2 * pads[0]), 12))
    W = draw(st.integers(max(1, ext[1] - 2 * pads[1]), 12))
    return dict(shape=(draw(st.integers(1, 4)), cin, H, W), wshape=(cout, cin // G) + k, stride=stride,
                padding=padding, dilation=dilation, groups=G, bias=draw(st.booleans()))


def _conv_inputs(c, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(c["shape"]).astype(dtype)
    w = rng.standard_normal(c["wshape"]).astype(dtype)
    b = rng.standard_normal(c["wshape"][0]).astype(dtype) if c["bias"] else None
    return x, w, b


def _conv(x, w, b, c):
    return ops.conv2d(x, w, b, stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])


@given(conv_cases(), DTYPES, SEEDS)
def test_conv2d_fast_equals_reference(c, dtype, seed):
    x, w, b = _conv_inputs(c, dtype, seed)
    y_fast, y_ref = both_paths(lambda: _conv(x, w, b, c))
    assert_close(y_fast, y_ref)


@given(conv_cases(), DTYPES, SEEDS, st.booleans())
def test_conv2d_fast_blocks_and_threads_equal_reference(c, dtype, seed, narrow):
    x, w, b = _conv_inputs(c, dtype, seed)
    with pytest.MonkeyPatch.context() as mp:
        tiny_blocks(mp)
        mp.setattr(conv_module, "NARROW_FROM_K", 1 if narrow else 10**9)   # exact or wide tap grid
        y_fast, y_ref = both_paths(lambda: _conv(x, w, b, c))
    assert_close(y_fast, y_ref)


@pytest.mark.parametrize("fold_below", [0, 10**6])
def test_conv2d_batch_folding_both_ways(monkeypatch, fold_below):
    """Small maps of a batch folded into one GEMM (or not): same numbers as the reference."""
    monkeypatch.setattr(conv_module, "FOLD_BATCH_BELOW", fold_below)
    monkeypatch.setattr(conv_module, "GEMM_COLUMNS", fold_below)
    rng = np.random.default_rng(1)
    for wshape, kw in [((6, 4, 1, 1), {}), ((6, 4, 3, 3), dict(padding=1)), ((6, 2, 3, 3), dict(groups=2, stride=2))]:
        x = rng.standard_normal((5, 4, 7, 6))
        w, b = rng.standard_normal(wshape), rng.standard_normal(6)
        y_fast, y_ref = both_paths(lambda: ops.conv2d(x, w, b, **kw))
        assert_close(y_fast, y_ref)


def test_conv2d_fast_inputs_are_not_modified_and_results_do_not_share_scratch():
    """The fast path reuses buffers between calls: an earlier result must not change afterwards."""
    rng = np.random.default_rng(2)
    x1, x2 = rng.standard_normal((2, 3, 9, 9)), rng.standard_normal((2, 3, 9, 9))
    x1_copy = x1.copy()
    for w, kw in [(rng.standard_normal((4, 3, 3, 3)), dict(padding=1)),
                  (rng.standard_normal((3, 1, 3, 3)), dict(padding=1, groups=3)),
                  (rng.standard_normal((4, 3, 1, 1)), {})]:
        y1 = ops.conv2d(x1, w, **kw)
        y1_copy = y1.copy()
        ops.conv2d(x2, w, **kw)
        np.testing.assert_array_equal(y1, y1_copy)
        np.testing.assert_array_equal(x1, x1_copy)
        assert not np.shares_memory(y1, ops.conv2d(x2, w, **kw))


def test_conv2d_fast_accepts_non_contiguous_input():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 10, 10)).transpose(0, 1, 3, 2)[:, :, ::2]   # strided view
    for w, kw in [(rng.standard_normal((5, 4, 3, 3)), dict(padding=1)),
                  (rng.standard_normal((4, 1, 3, 3)), dict(groups=4, stride=2)),
                  (rng.standard_normal((5, 4, 1, 1)), dict(stride=2))]:
        y_fast, y_ref = both_paths(lambda: ops.conv2d(x, w, **kw))
        assert_close(y_fast, y_ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,C,H,W,k,stride,pad,dil", [(1, 12, 24, 24, 3, 1, 1, 1), (1, 24, 24, 24, 3, 2, 1, 1),
                                                    (2, 5, 7, 6, 3, 2, 1, 1), (1, 3, 6, 9, 2, 1, 0, 2),
                                                    (3, 4, 5, 5, 5, 3, 2, 1), (1, 96, 3, 3, 3, 1, 1, 1)])
def test_depthwise_single_block_equals_blocked_path_and_reference(B, C, H, W, k, stride, pad, dil, dtype):
    """Small depthwise convs take _depthwise_single (all taps in one buffer); the same call with
    blocks forced small goes through _depthwise (bands of rows: BLAS may round differently on the
    shorter products). Both equal the reference."""
    rng = np.random.default_rng(B * 1000 + C)
    x = rng.standard_normal((B, C, H, W)).astype(dtype)[:, ::-1]           # a non-contiguous view too
    w, b = rng.standard_normal((C, 1, k, k)).astype(dtype), rng.standard_normal(C).astype(dtype)
    for bias in (b, None):
        conv = lambda: ops.conv2d(x, w, bias, stride=stride, padding=pad, dilation=dil, groups=C)
        y_single, y_ref = both_paths(conv)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(conv_module, "CHUNK_BYTES", 64)                        # no single block fits
            y_blocked = conv()
        assert_close(y_single, y_blocked)
        assert_close(y_single, y_ref)
        assert y_single.flags.c_contiguous and y_single.dtype == dtype


def test_kept_padded_planes_never_leak_between_calls():
    """conv2d keeps a zero-bordered padding buffer per input shape and padding (``buffers.zeroed``):
    calls with new data, with transposed sizes of the same padded area, and with the same shape but
    another padding all equal the reference."""
    rng = np.random.default_rng(11)
    w = rng.standard_normal((6, 1, 3, 3))
    for shape, pad in [((1, 6, 8, 10), 1), ((1, 6, 8, 10), 1), ((1, 6, 10, 8), 1), ((1, 6, 8, 10), 2),
                       ((1, 6, 8, 10), 1)]:
        x = rng.standard_normal(shape) + 5                                    # nonzero everywhere
        y_fast, y_ref = both_paths(lambda: ops.conv2d(x, w, padding=pad, groups=6))
        assert_close(y_fast, y_ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,C,H,m,stride", [(1, 24, 24, 3, 2), (2, 5, 7, 2, 1), (1, 8, 6, 4, 2)])
def test_channel_multiplier_single_block_equals_reference(B, C, H, m, stride, dtype):
    """groups == Cin with m filters per channel (Lite-HRNet Plus's level-0 SCAF steps) takes
    _depthwise_single too; output channel c*m + u is filter u of channel c, as in torch."""
    rng = np.random.default_rng(C * m)
    x = rng.standard_normal((B, C, H, H)).astype(dtype)
    w, b = rng.standard_normal((C * m, 1, 3, 3)).astype(dtype), rng.standard_normal(C * m).astype(dtype)
    for bias in (b, None):
        y_fast, y_ref = both_paths(lambda: ops.conv2d(x, w, bias, stride=stride, padding=1, groups=C))
        assert y_fast.shape == y_ref.shape == (B, C * m, (H - 1) // stride + 1, (H - 1) // stride + 1)
        assert_close(y_fast, y_ref)
        assert y_fast.flags.c_contiguous and y_fast.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 12, 1, 1), (1, 24, 6, 5), (1, 7, 24, 24)])
def test_pointwise_single_image_equals_reference(shape, dtype):
    """1x1 convs of one image (groups 1, stride 1, no padding) take _pointwise_single."""
    rng = np.random.default_rng(shape[1])
    x = rng.standard_normal(shape).astype(dtype)
    w, b = rng.standard_normal((5, shape[1], 1, 1)).astype(dtype), rng.standard_normal(5).astype(dtype)
    for xi in (x, x[:, ::-1], x.transpose(0, 1, 3, 2)):                      # contiguous or not
        for bias in (b, None):
            y_fast, y_ref = both_paths(lambda: ops.conv2d(xi, w, bias))
            assert y_fast.shape == y_ref.shape and y_fast.dtype == dtype
            assert_close(y_fast, y_ref)
    y1 = ops.conv2d(x, w, b)
    y1_copy = y1.copy()
    ops.conv2d(x * 2, w, b)
    np.testing.assert_array_equal(y1, y1_copy)                              # results are not reused buffers


def test_remembered_checks_still_reject_bad_arguments(monkeypatch):
    """conv2d, linear, adaptive_avg_pool2d and interpolate skip their checks for a signature that
    passed before; arguments that differ in type, dtype or value are still checked and rejected."""
    x = np.ones((1, 4, 6, 6), np.float32)
    w, b = np.ones((4, 1, 3, 3), np.float32), np.ones(4, np.float32)
    for _ in range(2):                                                       # the second call is remembered
        ops.conv2d(x, w, b, stride=1, padding=1, groups=4)
        ops.linear(x[:, :, 0, 0], np.ones((3, 4), np.float32), np.ones(3, np.float32))
        ops.adaptive_avg_pool2d(x, 1)
        ops.adaptive_avg_pool2d(x, (2, 3))
        ops.interpolate(x, size=(12, 12), mode="nearest")
        ops.interpolate(x, size=(12, 12), mode="bilinear", align_corners=True)
    bad = [
        (TypeError, lambda: ops.conv2d(x, w, b, stride=True, padding=1, groups=4)),
        (TypeError, lambda: ops.conv2d(x, w, b, stride=1.0, padding=1, groups=4)),
        (ValueError, lambda: ops.conv2d(x, w, b, stride=1, padding=1, groups=True)),
        (TypeError, lambda: ops.conv2d(x, w, b.astype(np.float64), stride=1, padding=1, groups=4)),
        (TypeError, lambda: ops.conv2d(x.tolist(), w, b, stride=1, padding=1, groups=4)),
        (ValueError, lambda: ops.conv2d(x, w, b[:3], stride=1, padding=1, groups=4)),
        (TypeError, lambda: ops.linear(x[:, :, 0, 0], np.ones((3, 4), np.float32), np.ones(3, np.float64))),
        (ValueError, lambda: ops.linear(x[:, :, 0, 0], np.ones((3, 5), np.float32), np.ones(3, np.float32))),
        (TypeError, lambda: ops.adaptive_avg_pool2d(x, True)),
        (TypeError, lambda: ops.adaptive_avg_pool2d(x, (2.0, 3))),
        (ValueError, lambda: ops.adaptive_avg_pool2d(x, (0, 3))),
        (TypeError, lambda: ops.adaptive_avg_pool2d(x.astype(np.int64), 1)),
        (ValueError, lambda: ops.interpolate(x, size=(12, 12), mode="nearest", align_corners=True)),
        (ValueError, lambda: ops.interpolate(x, size=(12, 12), mode="area")),
        (TypeError, lambda: ops.interpolate(x, size=(12.0, 12), mode="nearest")),
    ]
    for exc, call in bad:
        with pytest.raises(exc):
            call()
    monkeypatch.setattr(buffers, "PASSED_MAX", 2)                            # the memo is emptied when full
    for size in (1, 2, 3, 1):
        ops.adaptive_avg_pool2d(x, size)
    assert len(buffers._PASSED) <= 2


# ---------------------------------------------------------------------------------------------
# element-wise and normalisation ops

shapes4 = st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 7), st.integers(1, 7))


def _maybe_view(a, view):
    """a itself or a non-contiguous view with the same values arrangement rules."""
    return np.swapaxes(np.swapaxes(a, 2, 3).copy(), 2, 3) if view else a


@given(shapes4, DTYPES, SEEDS, st.booleans(), st.booleans())
def test_silu_fast_equals_reference(shape, dtype, seed, view, split):
    x = _maybe_view((np.random.default_rng(seed).standard_normal(shape) * 8).astype(dtype), view)
    with pytest.MonkeyPatch.context() as mp:
        if split:
            mp.setattr(threads, "PARALLEL_MIN", 1)
            mp.setattr(threads, "THREADS", 3)
            mp.setattr(threads, "BLOCK", 5)
        y_fast, y_ref = both_paths(lambda: ops.silu(x))
    assert_close(y_fast, y_ref)


def test_silu_fast_extremes_without_warnings():
    import warnings
    for dtype in (np.float32, np.float64):
        x = np.array([-1e4, -800.0, -100.0, -88.5, -1.0, -0.0, 0.0, 1e-30, 1.0, 100.0, 1e4, np.inf], dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y_fast, y_ref = both_paths(lambda: ops.silu(x))
        assert_close(y_fast, y_ref)
        with np.errstate(invalid="ignore"):                             # -inf * 0 in both
            y_fast, y_ref = both_paths(lambda: ops.silu(np.array([-np.inf, np.nan], dtype)))
        assert np.isnan(y_fast).all() and np.isnan(y_ref).all()


@given(shapes4, DTYPES, SEEDS, st.booleans(), st.booleans(), st.booleans())
def test_batch_norm_fast_equals_reference(shape, dtype, seed, affine, view, split):
    rng = np.random.default_rng(seed)
    x = _maybe_view(rng.standard_normal(shape).astype(dtype), view)
    C = shape[1]
    mean, var = rng.standard_normal(C).astype(dtype), rng.uniform(0.1, 3, C).astype(dtype)
    w = rng.standard_normal(C).astype(dtype) if affine else None
    b = rng.standard_normal(C).astype(dtype) if affine else None
    with pytest.MonkeyPatch.context() as mp:
        if split:
            mp.setattr(threads, "PARALLEL_MIN", 1)
            mp.setattr(threads, "THREADS", 2)
        y_fast, y_ref = both_paths(lambda: ops.batch_norm(x, mean, var, w, b, eps=1e-3))
    assert_close(y_fast, y_ref)


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.tuples(st.integers(1, 5), st.integers(1, 5)),
       DTYPES, SEEDS, st.booleans())
def test_group_and_instance_norm_fast_equal_reference(B, G, cpg, hw, dtype, seed, affine):
    rng = np.random.default_rng(seed)
    C = G * cpg
    x = (rng.standard_normal((B, C) + hw) * 3 + 1).astype(dtype)
    w = rng.standard_normal(C).astype(dtype) if affine else None
    b = rng.standard_normal(C).astype(dtype) if affine else None
    y_fast, y_ref = both_paths(lambda: ops.group_norm(x, G, w, b, eps=1e-5))
    assert_close(y_fast, y_ref)
    if hw[0] * hw[1] > 1:
        y_fast, y_ref = both_paths(lambda: ops.instance_norm(x, w, b))
        assert_close(y_fast, y_ref)


@given(st.integers(1, 2), st.integers(1, 4), st.integers(1, 6), st.integers(1, 6), st.integers(1, 13),
       st.integers(1, 13), st.booleans(), DTYPES, SEEDS, st.booleans())
def test_bilinear_fast_is_bit_identical(B, C, H, W, oh, ow, align, dtype, seed, split):
    x = np.random.default_rng(seed).standard_normal((B, C, H, W)).astype(dtype)
    with pytest.MonkeyPatch.context() as mp:
        if split:
            mp.setattr(threads, "PARALLEL_MIN", 1)
            mp.setattr(threads, "THREADS", 2)
            mp.setattr(threads, "BLOCK", 1)                   # one channel per block
        y_fast, y_ref = both_paths(lambda: ops.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=align))
    assert y_fast.dtype == y_ref.dtype == dtype
    np.testing.assert_array_equal(y_fast, y_ref)


@given(st.integers(1, 2), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(1, 12),
       st.integers(1, 12), DTYPES, SEEDS)
def test_nearest_fast_is_bit_identical(B, C, H, W, oh, ow, dtype, seed):
    x = np.random.default_rng(seed).standard_normal((B, C, H, W)).astype(dtype)
    for kw in (dict(size=(oh, ow)), dict(scale_factor=(oh / H, ow / W))):
        y_fast, y_ref = both_paths(lambda: ops.interpolate(x, mode="nearest", **kw))
        np.testing.assert_array_equal(y_fast, y_ref)


@given(st.integers(1, 2), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(1, 9),
       st.integers(1, 9), DTYPES, SEEDS)
@example(B=1, C=1, H=4, W=4, oh=1, ow=4, dtype=np.float32, seed=0)   # an identity skipped: 1 ulp (seed 2640029787)
def test_adaptive_avg_pool_fast_equals_reference(B, C, H, W, oh, ow, dtype, seed):
    """Small outputs (all of these) sum every bin in one product with a 0/1 matrix: to rounding;
    a strided input takes the separable products: bit for bit, unless an axis keeps its size (the
    fast layer then skips the product with the identity, so BLAS sums a strided operand instead of
    the definition's contiguous one: to rounding)."""
    x = np.random.default_rng(seed).standard_normal((B, C, H, W)).astype(dtype)
    y_fast, y_ref = both_paths(lambda: ops.adaptive_avg_pool2d(x, (oh, ow)))
    assert y_fast.dtype == dtype and y_fast.shape == y_ref.shape
    assert_close(y_fast, y_ref)
    assert_close(y_fast, both_paths(lambda: ops.adaptive_avg_pool2d(x.transpose(0, 1, 3, 2), (ow, oh)))[1].transpose(0, 1, 3, 2))
    xt = x.transpose(0, 1, 3, 2)                           # not C-contiguous: the separable route
    skips = ow == W or oh == H                                 # xt is [B, C, W, H] pooled to (ow, oh)
    same = np.testing.assert_array_equal if not (xt.flags.c_contiguous or skips) else assert_close
    same(*both_paths(lambda: ops.adaptive_avg_pool2d(xt, (ow, oh))))   # (H or W == 1: still contiguous)
    again = y_fast.copy()
    y_fast[...] = 0                                        # results never alias the cached matrices
    np.testing.assert_array_equal(ops.adaptive_avg_pool2d(x, (oh, ow)), again)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 12, 24, 24), (3, 5, 1, 7), (2, 96, 3, 3)])
def test_global_avg_pool_fast_equals_reference(shape, dtype):
    """The global pool's one product with a column of ones (contiguous input) and the separable path (a view)."""
    x = np.random.default_rng(3).standard_normal(shape).astype(dtype) + 1
    for a in (x, x.transpose(0, 1, 3, 2)):
        y_fast, y_ref = both_paths(lambda: ops.adaptive_avg_pool2d(a, 1))
        assert y_fast.dtype == dtype and y_fast.shape == (shape[0], shape[1], 1, 1)
        assert_close(y_fast, y_ref)
        assert_close(y_fast[:, :, 0, 0], a.astype(np.float64).mean(axis=(2, 3)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adaptive_avg_pool_unchanged_axis_is_bit_identical(dtype):
    """An axis whose size does not change skips its product with the identity (finite inputs:
    the same numbers) on the separable route (outputs too large for one product, or a strided view),
    e.g. Lite-HRNet's channel mean, a pool of a transposed view to (1, W)."""
    x = np.random.default_rng(4).standard_normal((2, 12, 48, 48)).astype(dtype)
    t = x.transpose(0, 2, 1, 3)                                             # [B, H, C, W] view
    for a, size in ((x, (48, 3)), (x, (5, 48)), (x, (48, 48)), (t, (1, 48)), (t, (4, 48))):
        y_fast, y_ref = both_paths(lambda: ops.adaptive_avg_pool2d(a, size))
        assert y_fast.dtype == dtype
        np.testing.assert_array_equal(y_fast, y_ref)


@given(shapes4, st.integers(1, 3), st.integers(1, 3), st.integers(0, 1), st.booleans(), DTYPES, SEEDS, st.booleans())
def test_max_pool_fast_is_bit_identical(shape, k, s, p, ceil, dtype, seed, split):
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    x.flat[-1] = np.nan
    p = min(p, k // 2)
    if min(shape[2:]) + 2 * p < k:
        return
    with pytest.MonkeyPatch.context() as mp:
        if split:
            mp.setattr(threads, "PARALLEL_MIN", 1)
            mp.setattr(threads, "THREADS", 2)
        y_fast, y_ref = both_paths(lambda: ops.max_pool2d(x, k, s, p, ceil_mode=ceil))
    np.testing.assert_array_equal(y_fast, y_ref)


@given(shapes4, DTYPES, SEEDS)
def test_sigmoid_fast_is_bit_identical(shape, dtype, seed):
    x = (np.random.default_rng(seed).standard_normal(shape) * 30).astype(dtype)
    x.flat[0] = np.nan
    y_fast, y_ref = both_paths(lambda: ops.sigmoid(x))
    np.testing.assert_array_equal(y_fast, y_ref)


@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 5), st.integers(1, 9), DTYPES, SEEDS, st.booleans())
def test_separable_self_attention_fast_equals_reference(B, d, P, N, dtype, seed, bias):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, d, P, N)).astype(dtype)
    w_qkv = (rng.standard_normal((1 + 2 * d, d, 1, 1)) * 2).astype(dtype)
    w_out = rng.standard_normal((d, d, 1, 1)).astype(dtype)
    b_qkv = rng.standard_normal(1 + 2 * d).astype(dtype) if bias else None
    b_out = rng.standard_normal(d).astype(dtype) if bias else None
    y_fast, y_ref = both_paths(lambda: ops.separable_self_attention(x, w_qkv, b_qkv, w_out, b_out))
    assert_close(y_fast, y_ref)


# ---------------------------------------------------------------------------------------------
# threads and buffers

def test_parallel_covers_the_range_once_and_reraises(monkeypatch):
    monkeypatch.setattr(threads, "PARALLEL_MIN", 1)
    monkeypatch.setattr(threads, "THREADS", 3)
    hits = np.zeros(10, int)

    def mark(lo, hi):
        hits[lo:hi] += 1

    threads.parallel(10, mark, size=10)
    np.testing.assert_array_equal(hits, 1)

    def boom(lo, hi):
        if lo > 0:
            raise ValueError("worker failed")

    with pytest.raises(ValueError, match="worker failed"):
        threads.parallel(10, boom, size=10)
    with pytest.raises(ValueError, match="positive int"):
        threads.set_num_threads(0)


def test_scratch_is_reused_and_large_requests_are_not_kept(monkeypatch):
    a = buffers.scratch("test.a", (4, 5), np.float64)
    b = buffers.scratch("test.a", (3, 2), np.float32)
    assert a.shape == (4, 5) and b.shape == (3, 2) and b.dtype == np.float32
    assert np.shares_memory(a, b)                          # same buffer, reused
    assert not np.shares_memory(a, buffers.scratch("test.b", (4, 5), np.float64))
    monkeypatch.setattr(buffers, "CACHE_LIMIT", 64)
    big1, big2 = buffers.scratch("test.c", (100,), np.float64), buffers.scratch("test.c", (100,), np.float64)
    assert not np.shares_memory(big1, big2)


def test_derived_values_follow_the_array_they_come_from():
    """``buffers.derived``: computed once per array (by identity) and tag, forgotten with the array."""
    import gc
    made = []
    a = np.ones(3)
    f = lambda: made.append(1) or a.sum()
    assert buffers.derived(a, "t", f) == 3 and buffers.derived(a, "t", f) == 3 and made == [1]
    buffers.derived(a, "other tag", f)
    assert made == [1, 1]
    n = len(buffers._DERIVED)
    del a
    gc.collect()
    assert len(buffers._DERIVED) == n - 2


def test_tune_malloc_on_glibc():
    ok = fast.tune_malloc()
    assert ok is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


# ---------------------------------------------------------------------------------------------
# BatchNorm folding (lmref.fast.folding)

def _conv_bn_params(rng, cin, cout, k, bias, dtype, groups=1):
    p = {"conv": {"weight": rng.standard_normal((cout, cin // groups, k, k)).astype(dtype)},
         "bn": {"weight": rng.uniform(0.5, 2, cout).astype(dtype), "bias": rng.standard_normal(cout).astype(dtype),
                "running_mean": rng.standard_normal(cout).astype(dtype),
                "running_var": rng.uniform(0.2, 2, cout).astype(dtype)}}
    if bias:
        p["conv"]["bias"] = rng.standard_normal(cout).astype(dtype)
    return p


def _count_ops(monkeypatch, name):
    """Count the calls of op ``name`` outside traces while the fast layer is on (its kernel, wrapped)."""
    calls = []
    inner = fast.KERNELS.get(name) or OPS[name].__wrapped_op__
    monkeypatch.setitem(fast.KERNELS, name, lambda *a, **k: calls.append(1) or inner(*a, **k))
    return calls


@given(DTYPES, SEEDS, st.booleans(), st.sampled_from([1, 3]), st.sampled_from([1e-5, 1e-3]))
def test_folded_conv_norm_act_equals_the_definition(dtype, seed, bias, k, eps):
    rng = np.random.default_rng(seed)
    a, b = _conv_bn_params(rng, 4, 6, k, bias, dtype), _conv_bn_params(rng, 6, 6, 3, False, dtype, 6)
    snapshot = {n: v.copy() for n, v in {**a["conv"], **a["bn"]}.items()}
    x = rng.standard_normal((2, 4, 6, 5)).astype(dtype)
    run = lambda: conv_norm_act(conv_norm_act(x, a, act_name="silu", eps=eps), b, groups=6, act_name="relu", eps=eps)
    y_fast, y_ref = both_paths(run)
    assert_close(y_fast, y_ref)
    for n, v in {**a["conv"], **a["bn"]}.items():                           # the parameters are untouched
        np.testing.assert_array_equal(v, snapshot[n])


def test_folded_blocks_run_no_batch_norm(monkeypatch):
    rng = np.random.default_rng(3)
    p = _conv_bn_params(rng, 3, 4, 3, True, np.float64)
    x = rng.standard_normal((1, 3, 5, 5))
    calls = _count_ops(monkeypatch, "batch_norm")                            # calls while the layer is on
    conv_norm_act(x, p)
    assert calls == []
    monkeypatch.setitem(fast.KERNELS, "lmref.models.common.conv_norm_act", lambda *a, **k: 1 / 0)
    with fast.off():                                                          # no kernel is used
        conv_norm_act(x, p)
    with trace() as t:                                                        # a trace shows the BatchNorm
        conv_norm_act(x, p)
    assert [r.op for r in t] == ["conv2d", "batch_norm"]


@given(DTYPES, SEEDS, st.sampled_from([1e-5, 1e-3]))
def test_folded_layer_spec_equals_the_definition(dtype, seed, eps):
    """Lite-HRNet's ``sequential`` with its conv (entry k) + BatchNorm (entry k + 1) pairs folded."""
    from lmref.models.litehrnet import sequential
    rng = np.random.default_rng(seed)
    bn = lambda c: _conv_bn_params(rng, c, c, 1, False, dtype)["bn"]
    spec = [("conv", 4, 4, 3, 2, 4), ("bn", 4), ("conv", 4, 6, 1, 1, 1), ("bn", 6), ("relu",)]
    p = {"0": {"weight": rng.standard_normal((4, 1, 3, 3)).astype(dtype)}, "1": bn(4),
         "2": {"weight": rng.standard_normal((6, 4, 1, 1)).astype(dtype)}, "3": bn(6)}
    folded_spec, folded_p = fast.folding.folded_spec(p, spec, eps)
    assert [item[0] for item in folded_spec] == ["conv", "conv", "relu"]
    assert set(folded_p["0"]) == {"weight", "bias"} and set(p["1"]) == {"weight", "bias", "running_mean", "running_var"}
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    y_fast, y_ref = both_paths(lambda: sequential(x, p, spec, eps=eps))
    assert_close(y_fast, y_ref)


# ---------------------------------------------------------------------------------------------
# whole models, and Lite-HRNet's stacked units (lmref.fast.litehrnet)

def _random_params(shapes, rng, dtype):
    """Weights of a plausible scale for param_shapes: convs/linears ~ N(0, 1/fan_in), BatchNorm
    statistics and affines away from the identity so that folding has something to do."""
    p = {}
    for k, shape in shapes.items():
        leaf = k.rsplit(".", 1)[-1]
        if leaf == "running_var":
            a = rng.uniform(0.5, 1.5, shape)
        elif leaf == "running_mean":
            a = rng.standard_normal(shape) * 0.1
        elif leaf == "weight" and len(shape) == 1:
            a = rng.uniform(0.7, 1.3, shape)
        elif leaf == "weight":
            a = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        else:
            a = rng.standard_normal(shape) * 0.1
        p[k] = a.astype(dtype)
    return p


def _manifest(arch, cfg, channels):
    import dataclasses
    import json
    return {"format_version": 1, "architecture": arch, "config": json.loads(json.dumps(dataclasses.asdict(cfg))),
            "layout": getattr(cfg, "layout", None) if arch == "aam" else None, "training": "random (test)",
            "input": {"size": [64, 64], "channels": channels, "color": "RGB" if channels == 3 else "GRAY",
                      "mean": [0.0] * channels, "std": [1.0] * channels}}


MODELS = {   # arch -> (config kwargs, input shape); small inputs keep this fast
    "aam": ({"backbone": "mobilevitv2", "layout": "inner51"}, (2, 3, 64, 64)),
    "stud5": ({}, (2, 1, 64, 64)),
    "litehrnet": ({"stem_channels": 16, "stem_out_channels": 16, "num_modules": (1, 1, 1), "num_points": 5,
                   "num_channels": ((24, 48), (24, 48, 96), (24, 48, 96, 192)), "fusion": "scaf", "head": "mr",
                   "iterative_head": False}, (2, 3, 64, 64)),
}
F32_MODEL_TOL = dict(rtol=2e-3, atol=2e-4)    # float32: folded weights and BLAS sums round differently through ~20 layers


def _model(arch, dtype, **overrides):
    kwargs, shape = MODELS[arch]
    module = models.get(arch)
    cfg = module.Config(**{**kwargs, **overrides})
    rng = np.random.default_rng(0)
    model = Model(_random_params(module.param_shapes(cfg), rng, dtype), _manifest(arch, cfg, shape[1]), dtype=dtype)
    return model, rng.standard_normal(shape).astype(dtype)


def _outputs(out):
    return out if isinstance(out, dict) else {"y": out}


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_whole_model_fast_equals_the_definitions(arch, dtype, monkeypatch):
    """A whole model with the fast layer (kernels, folded BatchNorms, stacked units) equals the plain
    definitions; the folded route really runs (no batch_norm call at all)."""
    model, x = _model(arch, dtype)
    calls = _count_ops(monkeypatch, "batch_norm")
    out_fast = _outputs(model(x))
    assert calls == []
    with fast.off():
        out_ref = _outputs(model(x))
    assert set(out_fast) == set(out_ref)
    for k in out_ref:
        assert_close(out_fast[k], out_ref[k], **({} if dtype == np.float64 else F32_MODEL_TOL))


LITEHRNET_VARIANTS = {
    "scaf pairwise dwconv": {},
    "scaf pairwise avgpool bilinear": {"scaf_down": "avgpool", "scaf_up": "bilinear"},
    "scaf cascade": {"scaf_route": "cascade"},
    "pw fusion": {"fusion": "pw", "head": "simple", "iterative_head": True},
}


@pytest.mark.parametrize("variant", sorted(LITEHRNET_VARIANTS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_litehrnet_stacked_units_equal_unit_by_unit(variant, dtype, monkeypatch):
    """The stacked spatial weighting and the batched SCAF units (pairwise route) equal the
    layer-by-layer definitions, which a trace runs (two linears per SCAF unit); the stacked route
    makes far fewer linear calls."""
    module = models.get("litehrnet")
    model, _ = _model("litehrnet", dtype, num_modules=(1, 2, 1), **LITEHRNET_VARIANTS[variant])
    model_x = np.random.default_rng(7).standard_normal((2, 3, 40, 48)).astype(dtype)
    linears = _count_ops(monkeypatch, "linear")
    y = model(model_x)
    with trace() as t:
        y_traced = model(model_x)                                            # the definitions, unit by unit
    units = sum(k.endswith("fc1.weight") for k in module.param_shapes(model.config))
    assert sum(r.op == "linear" for r in t) == 2 * units
    if variant.startswith("scaf pairwise"):
        assert len(linears) < 2 * units
    with fast.off():
        y_ref = model(model_x)
    tol = {} if dtype == np.float64 else F32_MODEL_TOL
    assert_close(y, y_ref, **tol)
    np.testing.assert_array_equal(y_traced, y_ref)


def test_block_diagonal():
    from lmref.fast.litehrnet import block_diagonal
    a, b = np.arange(6.0).reshape(2, 3), np.ones((1, 2))
    np.testing.assert_array_equal(block_diagonal([a, b]), [[0, 1, 2, 0, 0], [3, 4, 5, 0, 0], [0, 0, 0, 1, 1]])


def test_trace_shows_every_batch_norm_with_the_fast_layer_on():
    model, x = _model("stud5", np.float64)
    with trace() as t:
        y_traced = model(x[:1])
    assert sum(r.op == "batch_norm" for r in t) == 5                        # every BN is in the trace
    assert_close(model(x[:1]), y_traced)                                     # folded run, same numbers


@pytest.mark.parametrize("arch", ["stud5", "litehrnet"])
def test_bundle_is_identical_with_the_fast_layer_on_or_off(arch):
    """A golden bundle is the definitions' answer: recorded with the fast layer on or off, every
    tensor is bit for bit the same, and the manifest says which code computed it."""
    from lmref import bundle
    model, x = _model(arch, np.float64)
    with fast.on():
        on = bundle.record(model, x[:1])
    with fast.off():
        off = bundle.record(model, x[:1])
    assert on.manifest["computed_by"] == off.manifest["computed_by"] == bundle.COMPUTED_BY
    assert on.names() == off.names() and len(on.names()) > 20
    for name in on.names():
        for dt in ("float64", "float32"):
            np.testing.assert_array_equal(on.array(name, dt), off.array(name, dt))
