"""Mutation testing: does the default test suite catch a small deliberate bug?

    python -m benchmarks.mutation                     # every mutant below, report in benchmarks/results/
    python -m benchmarks.mutation --only conv.dw1-bias-sign,bundle.tol-x10 --out /tmp/m.md
    python -m benchmarks.mutation --list              # the mutants, their modules and their tests
    python -m benchmarks.mutation --confirm-survivors # survivors re-run against the whole default suite

Each mutant is one textual change (``old`` -> ``new``, ``old`` must occur exactly once) in one source
file: a sign, an eps, an index, a dropped term -- the bugs a port or a refactoring makes. They are
applied one at a time to a copy of the repository at HEAD (``git archive``, under a temporary
directory: the shared working tree is never mutated), and the tests that exercise the mutated module
run against the copy (``-x``: the first failure kills the mutant). A mutant the module's tests miss
is a *survivor*; ``--confirm-survivors`` re-runs each survivor against the whole default suite, so
the score is that of the default suite, not of a hand-picked subset.

The list is fixed and written by hand, one to a dozen per module, chosen for what the code computes
(every op's defining arithmetic, the constants shared by both halves, the model wiring, the weight
file's integrity checks, the bundle comparison, the metrics), not by which tests exist; equivalent
mutants (changes that cannot alter a result, such as a cache size) are left out, since no test can
kill them. ``scope`` says whether a mutant counts towards the score (modules lmref/ops, lmref/fast,
lmref/models, lmref/weights.py, lmref/bundle.py, lmref/metrics.py) or demonstrates one of issue 21's findings in
another file (``finding``).

Hypothesis examples are drawn from a fixed seed (``LMREF_HYPOTHESIS_SEED``, default below) so that a
run is reproducible; the example database is a fresh empty directory per mutant (a stored failing
example from one mutant must not kill the next).  Mutation tools (mutmut, cosmic-ray) were weighed:
they generate every operator and constant swap of every line (thousands here, messages and cache
sizes included) and run each against the tests that cover it; on this 2-core machine that is many
hours, and most of the mutants would be equivalent or cosmetic. A fixed list keeps the run under an
hour and every mutant meaningful.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
SEED = 20240521            # hypothesis seed of the mutation runs (LMREF_HYPOTHESIS_SEED)
TIMEOUT = 900              # seconds per test run; a mutant that hangs the tests counts as killed (timeout)
SCORED = ("lmref/ops/", "lmref/fast/", "lmref/models/", "lmref/weights.py", "lmref/bundle.py", "lmref/metrics.py")


@dataclass
class Mutant:
    id: str
    file: str
    old: str
    new: str
    why: str
    tests: list = field(default_factory=list)      # pytest arguments; default: TESTS[file]
    setup: str = ""                                 # python code run in the copy after mutating (rarely)
    finding: bool = False                           # demonstrates a finding of issue 21 (not scored)

    @property
    def scope(self):
        return "score" if self.file.startswith(SCORED) and not self.finding else "finding"


FAST = "tests/test_fast_layer.py"

# module -> the default suite's tests that exercise it (a mutant may name others)
TESTS = {
    "lmref/ops/conv.py": ["tests/test_ops_conv.py", FAST],
    "lmref/ops/norm.py": ["tests/test_ops_norm.py", FAST, "-k", "norm"],
    "lmref/ops/activation.py": ["tests/test_ops_activation.py", FAST, "-k", "not litehrnet and not whole_model"],
    "lmref/ops/pooling.py": ["tests/test_ops_pooling.py", FAST, "-k", "pool"],
    "lmref/ops/resize.py": ["tests/test_ops_resize.py", FAST, "-k", "bilinear or nearest or interpolate or resize "
                            "or size or scale or index or traced or bad or unchanged or bilinear"],
    "lmref/ops/heatmap.py": ["tests/test_ops_heatmap.py", "tests/test_constants.py"],
    "lmref/ops/attention.py": ["tests/test_ops_attention.py", FAST, "-k", "attention or matmul"],
    "lmref/ops/patches.py": ["tests/test_ops_patches.py"],
    "lmref/ops/shuffle.py": ["tests/test_ops_shuffle.py"],
    "lmref/ops/_check.py": ["tests/test_ops_conv.py", "tests/test_ops_norm.py", "tests/test_ops_pooling.py",
                            "tests/test_ops_resize.py", "tests/test_ops_activation.py"],
    "lmref/fast/threads.py": [FAST],
    "lmref/fast/conv.py": [FAST, "-k", "conv or pointwise or depthwise or channel_multiplier or padded or remembered"],
    "lmref/fast/norm.py": [FAST, "-k", "norm"],
    "lmref/fast/activation.py": [FAST, "-k", "silu or sigmoid"],
    "lmref/fast/pooling.py": [FAST, "-k", "pool"],
    "lmref/fast/resize.py": [FAST, "-k", "bilinear or nearest"],
    "lmref/fast/attention.py": [FAST, "-k", "attention"],
    "lmref/models/mobilevitv2.py": ["tests/test_constants.py", "tests/test_mobilevitv2.py"],
    "lmref/models/aam_head.py": ["tests/test_constants.py", "tests/test_aam_head.py"],
    "lmref/models/swinv2.py": ["tests/test_constants.py", "tests/test_swinv2.py"],
    "lmref/models/litehrnet.py": ["tests/test_constants.py", "tests/test_litehrnet.py"],
    "lmref/models/stud5.py": ["tests/test_constants.py", "tests/test_stud5.py"],
    "lmref/models/resnet.py": ["tests/test_constants.py", "tests/test_resnet.py"],
    "lmref/models/common.py": ["tests/test_stud5.py", "tests/test_mobilevitv2.py"],
    "lmref/weights.py": ["tests/test_weights.py"],
    "lmref/bundle.py": ["tests/test_bundle.py"],
    "lmref/metrics.py": ["tests/test_metrics.py"],
    "lmref/landmarks.py": ["tests/test_constants.py", "tests/test_landmarks.py"],
}


def M(id, file, old, new, why, tests=(), setup="", finding=False):
    return Mutant(id, file, old, new, why, list(tests), setup, finding)


CONV, NORM, ACT, POOL, RESIZE = ("lmref/ops/conv.py", "lmref/ops/norm.py", "lmref/ops/activation.py",
                                 "lmref/ops/pooling.py", "lmref/ops/resize.py")
FCONV, FNORM, FACT, FPOOL, FRESIZE, FATT = ("lmref/fast/conv.py", "lmref/fast/norm.py", "lmref/fast/activation.py",
                                            "lmref/fast/pooling.py", "lmref/fast/resize.py", "lmref/fast/attention.py")
HEAT, ATT, PATCH, SHUF = "lmref/ops/heatmap.py", "lmref/ops/attention.py", "lmref/ops/patches.py", "lmref/ops/shuffle.py"
MVIT, AAM, SWIN, LHR = ("lmref/models/mobilevitv2.py", "lmref/models/aam_head.py", "lmref/models/swinv2.py",
                        "lmref/models/litehrnet.py")
STUD5, RESNET, COMMON = "lmref/models/stud5.py", "lmref/models/resnet.py", "lmref/models/common.py"
WEIGHTS, BUNDLE, METRICS, LAYOUTS = "lmref/weights.py", "lmref/bundle.py", "lmref/metrics.py", "lmref/landmarks.py"

MUTANTS = [
    # ------------------------------------------------------------------------------ lmref/ops/conv.py
    M("conv.ref-bias-sign", CONV, "        out += bias[:, None, None]\n    return out",
      "        out -= bias[:, None, None]\n    return out", "reference path subtracts the bias"),
    M("conv.dw1-bias-sign", FCONV, "return y[..., :Wo] + bias[:, None, None] if bias",
      "return y[..., :Wo] - bias[:, None, None] if bias",
      "finding 2: depthwise single-block path (wide grid, stride 1) subtracts the bias"),
    M("conv.dw-exact-bias-sign", FCONV, "    if bias is not None:\n        y += bias[:, None, None]\n    return y\n",
      "    if bias is not None:\n        y -= bias[:, None, None]\n    return y\n",
      "depthwise single-block path on the exact grid subtracts the bias"),
    M("conv.dw-blocked-bias-sign", FCONV, "            y += bias[:, None]\n        if Wq != Wo:",
      "            y -= bias[:, None]\n        if Wq != Wo:", "blocked depthwise path subtracts the bias"),
    M("conv.pointwise1-bias-sign", FCONV, "        y += bias[:, None]\n    return y.reshape(1, O, H, W)",
      "        y -= bias[:, None]\n    return y.reshape(1, O, H, W)", "single-image 1x1 path subtracts the bias"),
    M("conv.same-odd-pad-top", CONV, "return tuple((t // 2, t - t // 2) for t in total)",
      "return tuple((t - t // 2, t // 2) for t in total)", "'same' puts the odd padding row on top"),
    M("conv.im2col-dilation", CONV, "top, left = i * dh, j * dw", "top, left = i * dh, j * dh",
      "reference im2col dilates columns by the row dilation"),
    M("conv.out-width-stride", CONV, "(Wp - ekw) // stride[1] + 1", "(Wp - ekw) // stride[0] + 1",
      "output width from the vertical stride"),
    M("conv.dilated-extent", CONV, "dilation[1] * (kw - 1) + 1   # dilated", "dilation[1] * (kw - 1)   # dilated",
      "dilated kernel width one short"),
    M("conv.fold-bn-mean-sign", CONV, "b = (bias - running_mean) * s + beta", "b = (bias + running_mean) * s + beta",
      "fold_batch_norm adds the running mean"),
    M("conv.fold-bn-no-eps", CONV, "s = gamma / np.sqrt(running_var + dt(eps))", "s = gamma / np.sqrt(running_var)",
      "fold_batch_norm drops eps"),
    M("conv.linear-bias-sign", CONV, "        y = y + bias\n    return y", "        y = y - bias\n    return y",
      "linear subtracts the bias"),
    # ------------------------------------------------------------------------------ lmref/ops/norm.py
    M("norm.eps-outside-sqrt", NORM, "return d / np.sqrt(var + x.dtype.type(eps))",
      "return d / (np.sqrt(var) + x.dtype.type(eps))", "eps added after the square root (group/instance/layer)"),
    M("norm.unbiased-var", NORM, "var = (d * d).mean(axis=axes, keepdims=True)",
      "var = (d * d).sum(axis=axes, keepdims=True) / max(1, d.size // mean.size - 1)",
      "unbiased variance (divide by n - 1)"),
    M("norm.bn-ref-no-eps", NORM, "np.sqrt(_per_channel(running_var, x.ndim) + x.dtype.type(eps))",
      "np.sqrt(_per_channel(running_var, x.ndim))", "reference batch_norm drops eps"),
    M("norm.bn-fast-eps-x10", FNORM, "s = 1 / np.sqrt(running_var + dt(eps))", "s = 1 / np.sqrt(running_var + dt(eps) * 10)",
      "fast batch_norm with 10x eps"),
    M("norm.gn-fast-eps-x10", FNORM, "rstd = 1 / np.sqrt(var + dt(eps))", "rstd = 1 / np.sqrt(var + dt(eps) * 10)",
      "fast group/instance norm with 10x eps"),
    M("norm.gn-fast-group-order", FNORM, "scale = np.repeat(rstd, C // num_groups, axis=1)",
      "scale = np.tile(rstd, (1, C // num_groups))", "group statistics assigned to the wrong channels"),
    M("norm.in-fast-one-group", FNORM, "return _group_norm(x, x.shape[1], weight, bias, eps)",
      "return _group_norm(x, 1, weight, bias, eps)", "instance norm takes one group over all channels"),
    M("norm.ln-bias-sign", NORM, "        y = y + bias\n    return y", "        y = y - bias\n    return y",
      "layer_norm subtracts its bias"),
    M("norm.affine-bias-sign", NORM, "y = y + _per_channel(bias, y.ndim)", "y = y - _per_channel(bias, y.ndim)",
      "per-channel affine subtracts the bias (reference group/instance/batch norm)"),
    # ------------------------------------------------------------------------------ lmref/ops/activation.py
    M("act.sigmoid-negative", ACT, "return np.where(x >= 0, 1 / (1 + e), e / (1 + e))",
      "return np.where(x >= 0, 1 / (1 + e), 1 / (1 + e))", "reference sigmoid wrong for x < 0"),
    M("act.sigmoid-fast-denominator", FACT, "    d = e + 1\n", "    d = e + 2\n", "fast sigmoid's denominator"),
    M("act.silu-fast-denominator", FACT, "                t += 1\n", "                t += 2\n", "fast silu's denominator"),
    M("act.gelu-erf-scale", ACT, "erf(x64 * (1 / math.sqrt(2)))", "erf(x64 * (1 / math.sqrt(3)))", "gelu's 1/sqrt(2)"),
    M("act.gelu-tanh-coefficient", ACT, "x.dtype.type(0.044715)", "x.dtype.type(0.04715)", "tanh-gelu's 0.044715"),
    M("act.hardsigmoid-divisor", ACT, "return np.asarray(np.clip(x + 3, 0, 6) / 6)", "return np.asarray(np.clip(x + 3, 0, 6) / 5)",
      "hardsigmoid divides by 5"),
    M("act.relu6-cap", ACT, "x.dtype.type(6)))", "x.dtype.type(5)))", "relu6 caps at 5"),
    M("act.softmax-axis", ACT, "return e / e.sum(axis=dim, keepdims=True)", "return e / e.sum(axis=0, keepdims=True)",
      "softmax normalises along axis 0"),
    M("act.log-softmax-sum-axis", ACT, "np.log(np.exp(z).sum(axis=dim, keepdims=True))",
      "np.log(np.exp(z).sum(axis=0, keepdims=True))", "log_softmax sums along axis 0"),
    M("act.relu-leaky", ACT, "np.maximum(x, x.dtype.type(0))", "np.maximum(x, x.dtype.type(0.01) * x)",
      "relu leaks 1% of negatives"),
    # ------------------------------------------------------------------------------ lmref/ops/pooling.py
    M("pool.ceil-last-window", POOL, "if ceil_mode and (out - 1) * stride >= size + pad:",
      "if ceil_mode and (out - 1) * stride > size + pad:", "ceil mode keeps a window starting in the right padding"),
    M("pool.avg-divisor-past-pad", POOL, "end = np.minimum(start + k, size + p)", "end = start + k",
      "avg divisor counts the part of a ceil-mode window beyond the padding"),
    M("pool.avg-exclude-pad-start", POOL, "return np.minimum(end, size) - np.maximum(start, 0)",
      "return np.minimum(end, size) - start", "count_include_pad=False counts left padding"),
    M("pool.adaptive-end-floor", POOL, "((i + 1) * size + n_out - 1) // n_out", "((i + 1) * size) // n_out",
      "adaptive bins end at floor instead of ceil"),
    M("pool.max-ref-pad-zero", POOL, "xp = _pad_for_windows(x, k, s, p, d, out, -np.inf)          #",
      "xp = _pad_for_windows(x, k, s, p, d, out, 0.0)          #", "reference max pool pads with 0"),
    M("pool.max-fast-pad-zero", FPOOL, "_pad_for_windows(x, k, s, p, d, out, -np.inf)\n    taps",
      "_pad_for_windows(x, k, s, p, d, out, 0.0)\n    taps", "fast max pool pads with 0"),
    M("pool.kron-one-divisor", FPOOL, "return (x.reshape(B, C, H * W) @ k / count).reshape(B, C, oh, ow)",
      "return (x.reshape(B, C, H * W) @ k / count[0]).reshape(B, C, oh, ow)", "small-output pool: one divisor for all bins"),
    M("pool.matrices-identity-check", FPOOL, "    if ow == W:", "    if ow <= W:",
      "pool fast path skips the column product when shrinking"),
    M("pool.avg-divisor-kernel-axis", POOL, "div_w = _avg_divisor(W, out[1], k[1], s[1], p[1], count_include_pad)",
      "div_w = _avg_divisor(W, out[1], k[0], s[1], p[1], count_include_pad)", "avg divisor of columns from the kernel height"),
    # ------------------------------------------------------------------------------ lmref/ops/resize.py
    M("resize.nearest-float32-only", RESIZE,
      "return None if out_h + out_w <= NEAREST_SMALL_OUTPUT else np.dtype(dtype).type", "return None",
      "finding 1: float64 nearest takes the float32 index rule at every size (the old bug)"),
    M("resize.nearest-no-double-special", RESIZE, "    if opmath is None and n_out == 2 * n_in:\n        return dst >> 1\n",
      "", "nearest_idx without its n_out == 2 n_in special case"),
    M("resize.bilinear-align-scale", RESIZE, "r = dt(n_in - 1) / dt(n_out - 1) if n_out > 1 else dt(0)",
      "r = dt(n_in) / dt(n_out) if n_out > 1 else dt(0)", "align_corners=True with the size ratio"),
    M("resize.bilinear-half-pixel", RESIZE, "return r * (dst + dt(0.5)) - dt(0.5)",
      "return r * dst", "align_corners=False without the half-pixel shift"),
    M("resize.bilinear-float32-scale", RESIZE, "r = dt(1.0 / scale) if scale is not None else dt(n_in) / dt(n_out)",
      "r = dt(1.0 / scale) if scale is not None else dt(np.float32(n_in) / np.float32(n_out))",
      "bug class of finding 1: bilinear scale in float32 for float64 input"),
    M("resize.output-size-ceil", RESIZE, "int(math.floor(float(n) * float(f)))", "int(math.ceil(float(n) * float(f)))",
      "output size rounds up"),
    M("resize.scale-factor-dropped", RESIZE, "if scale_factor is not None and not recompute_scale_factor:",
      "if False:", "the given scale factor never reaches the index rule"),
    M("resize.bilinear-fast-tap", FRESIZE, "r += l1w * xc[..., w1]", "r += l1w * xc[..., w0]",
      "fast bilinear reads the left tap twice"),
    M("resize.nearest-fast-axes", FRESIZE, "return x.take(cols, axis=3).take(rows, axis=2)",
      "return x.take(rows, axis=3).take(cols, axis=2)", "fast nearest swaps the axes' tables"),
    # ------------------------------------------------------------------------------ lmref/ops/heatmap.py
    M("heatmap.grid-divides-by-n", HEAT, "np.arange(n, dtype=dtype) / dt(n - 1) * dt(2) - dt(1)",
      "np.arange(n, dtype=dtype) / dt(n) * dt(2) - dt(1)", "soft-argmax grid divides by w instead of w - 1"),
    M("heatmap.star-clamp", HEAT, "np.maximum(heatmaps.sum(axis=(2, 3)), dt(1e-6))",
      "np.maximum(heatmaps.sum(axis=(2, 3)), dt(1e-3))", "STAR's 1e-6 clamp"),
    M("heatmap.x-from-rows", HEAT, "x = (xx * heatmaps).sum(axis=(2, 3)) / total",
      "x = (yy * heatmaps).sum(axis=(2, 3)) / total", "x decoded on the row grid"),
    M("heatmap.e2p-no-bias", HEAT, "return out if bias is None else out + bias[:, None, None]", "return out",
      "E2P ignores its bias"),
    M("heatmap.fusion-sum", HEAT, "mask = edges_to_points * point_maps", "mask = edges_to_points + point_maps",
      "AAM mask adds instead of multiplying"),
    M("heatmap.subpixel-border", HEAT, "inside = (x > 1) & (x < w - 1)", "inside = (x > 0) & (x < w - 1)",
      "quarter-pixel refinement at column 1 too"),
    M("heatmap.to-pixels-half", HEAT, "return ((coords + dt(1)) * size - dt(1)) / dt(2)",
      "return ((coords + dt(1)) * size) / dt(2)", "normalized_to_pixels without the half-pixel shift"),
    M("heatmap.softmax-beta", HEAT, "logits = dt(beta) * heatmaps.reshape(B, N, h * w)",
      "logits = heatmaps.reshape(B, N, h * w)", "softmax soft-argmax ignores beta"),
    # ------------------------------------------------------------------------------ lmref/ops/attention.py
    M("attn.ref-softmax-axis", ATT, "context_scores = e / e.sum(axis=-1, keepdims=True)",
      "context_scores = e / e.sum(axis=-2, keepdims=True)", "reference: context scores normalised over P"),
    M("attn.ref-no-relu", ATT, "out = np.maximum(value, 0) * context_vector", "out = value * context_vector",
      "reference: ReLU on the values dropped"),
    M("attn.fast-max-normalised", FATT, "e /= e.sum(axis=-1, keepdims=True)", "e /= e.max(axis=-1, keepdims=True)",
      "fast: scores divided by their max instead of their sum"),
    M("attn.split-order", ATT, "query, key, value = qkv[:, :1], qkv[:, 1:1 + d], qkv[:, 1 + d:]",
      "query, key, value = qkv[:, :1], qkv[:, 1 + d:], qkv[:, 1:1 + d]", "reference: key and value swapped"),
    M("attn.conv1x1-no-bias", ATT, "return y if bias is None else y + bias[:, None, None]", "return y",
      "the 1x1 projections ignore their biases"),
    # ------------------------------------------------------------------------------ lmref/ops/patches.py, shuffle.py
    M("patches.unfold-order", PATCH, "x = x.transpose(0, 1, 3, 5, 2, 4)                      # -> [B, C, ph, pw, nh, nw]",
      "x = x.transpose(0, 1, 5, 3, 2, 4)                      # -> [B, C, ph, pw, nh, nw]", "in-patch index column-major"),
    M("patches.fold-order", PATCH, "x = x.transpose(0, 1, 4, 2, 5, 3)", "x = x.transpose(0, 1, 5, 2, 4, 3)",
      "fold swaps the patch-grid axes"),
    M("patches.rank5-permute", PATCH, "t_j = _rank5(t_j.transpose(0, 1, 3, 2, 4))         # -> [B, C, ph, nh, nw]",
      "t_j = _rank5(t_j.transpose(0, 1, 2, 3, 4))         # -> [B, C, ph, nh, nw]", "rank-5 unfold without its permute"),
    M("shuffle.channel-no-transpose", SHUF, "x = x.transpose(0, 2, 1, 3, 4)", "x = x.transpose(0, 1, 2, 3, 4)",
      "channel_shuffle leaves the channels in order"),
    M("shuffle.pixel-shuffle-order", SHUF, "x = x.transpose(0, 1, 4, 2, 5, 3)               # -> [B, C, H, r(i), W, r(j)]",
      "x = x.transpose(0, 1, 4, 3, 5, 2)               # -> [B, C, H, r(i), W, r(j)]", "pixel_shuffle swaps i and j"),
    M("shuffle.pixel-unshuffle-order", SHUF, "x = x.transpose(0, 1, 3, 5, 2, 4)               # -> [B, C, r(i)",
      "x = x.transpose(0, 1, 5, 3, 2, 4)               # -> [B, C, r(i)", "pixel_unshuffle swaps i and j"),
    # ------------------------------------------------------------------------------ lmref/ops/_check.py, lmref/fast/threads.py
    M("check.float16-accepted", "lmref/ops/_check.py", "if x.dtype.type not in FLOATS:",
      "if x.dtype.type not in FLOATS + (np.float16,):", "ops accept float16 input"),
    M("check.pair-second", "lmref/ops/_check.py", "return int(v[0]), int(v[1])", "return int(v[0]), int(v[0])",
      "a pair argument's second value ignored"),
    M("fast.parallel-bounds", "lmref/fast/threads.py", "bounds = [n * i // parts for i in range(parts + 1)]",
      "bounds = [n * i // parts for i in range(parts)] + [n - 1]", "thread split leaves the last item out"),
    # ------------------------------------------------------------------------------ lmref/models/mobilevitv2.py
    M("mvit.bn-eps", MVIT, "BN_EPS = 1e-5", "BN_EPS = 1e-3", "finding 3: BatchNorm eps shared with torch_impl"),
    M("mvit.gn-eps", MVIT, "GN_EPS = 1e-5", "GN_EPS = 1e-3", "finding 3: GroupNorm eps shared with torch_impl"),
    M("mvit.mv2-no-residual", MVIT, "        h = x + h\n    return h", "        h = h\n    return h",
      "inverted residual without its shortcut"),
    M("mvit.attn-no-residual", MVIT, "    x = x + h\n    with scope(\"norm2\"):", "    x = h\n    with scope(\"norm2\"):",
      "transformer block without the attention shortcut"),
    M("mvit.final-norm-dropped", MVIT, "        x = group_norm1(x, p[\"norm\"])", "        x = x",
      "the norm after the last transformer block dropped"),
    M("mvit.resize-align", MVIT, "mode=\"bilinear\", align_corners=True)", "mode=\"bilinear\", align_corners=False)",
      "the odd-size resize without align_corners"),
    M("mvit.make-divisible-floor", MVIT, "int(v + divisor / 2) // divisor * divisor", "int(v) // divisor * divisor",
      "make_divisible rounds down"),
    M("mvit.conv-kxk-no-act", MVIT, "groups=C, act_name=\"silu\", eps=BN_EPS)", "groups=C, act_name=None, eps=BN_EPS)",
      "local representation without SiLU"),
    M("mvit.ffn-relu", MVIT, "h = ops.silu(h, inplace=True)", "h = ops.relu(h)", "FFN activation ReLU instead of SiLU"),
    # ------------------------------------------------------------------------------ lmref/models/aam_head.py
    M("aam.no-instance-norm", AAM, "heatmaps = ops.relu(ops.instance_norm(heatmaps))", "heatmaps = ops.relu(heatmaps)",
      "heatmap activation without InstanceNorm"),
    M("aam.in-eps", AAM, "heatmaps = ops.relu(ops.instance_norm(heatmaps))",
      "heatmaps = ops.relu(ops.instance_norm(heatmaps, eps=1e-3))", "finding 3 class: InstanceNorm eps"),
    M("aam.pointmaps-no-sigmoid", AAM, "pointmaps = ops.sigmoid(conv1x1(u, p[\"out_pointmaps\"]))",
      "pointmaps = conv1x1(u, p[\"out_pointmaps\"])", "point maps without sigmoid"),
    M("aam.landmarks-w-h-swapped", AAM, "ops.normalized_to_pixels(out[\"coords\"], W, H)",
      "ops.normalized_to_pixels(out[\"coords\"], H, W)", "pixel landmarks with width and height swapped"),
    M("aam.heatmap-size-floor", AAM, "size = math.ceil(height / s), math.ceil(width / s)",
      "size = height // s, width // s", "heatmap grid rounds down"),
    M("aam.softmax-beta-dropped", AAM, "beta = cfg.softmax_beta if cfg.soft_argmax == \"softmax\" else 1.0",
      "beta = 1.0", "the softmax decoder's beta never used"),
    # ------------------------------------------------------------------------------ lmref/models/swinv2.py
    M("swin.cpb-scale", SWIN, "return 16 * ops.sigmoid(bias)", "return 8 * ops.sigmoid(bias)", "CPB 16 sigmoid"),
    M("swin.logit-scale-no-exp", SWIN, "attn = attn * np.exp(np.minimum(", "attn = attn * (np.minimum(",
      "logit scale used without exp"),
    M("swin.k-bias", SWIN, "[p[\"q_bias\"], np.zeros_like(p[\"q_bias\"]), p[\"v_bias\"]]",
      "[p[\"q_bias\"], p[\"q_bias\"], p[\"v_bias\"]]", "k gets the q bias"),
    M("swin.no-unshift", SWIN, "        x = np.roll(x, shift, axis=(1, 2))", "        x = x",
      "shifted windows never shifted back"),
    M("swin.pre-norm", SWIN, "x = shortcut + layer_norm(x, p[\"norm1\"], eps)",
      "x = layer_norm(shortcut + x, p[\"norm1\"], eps)", "residual norm after the sum (v1 style)"),
    M("swin.merge-order", SWIN, ".transpose(0, 1, 3, 4, 2, 5)  # [B, H/2, W/2, dx, dy, C]",
      ".transpose(0, 1, 3, 2, 4, 5)  # [B, H/2, W/2, dx, dy, C]", "patch merging concatenates in the wrong order"),
    M("swin.coords-scale", SWIN, "[None] * 8   #", "[None] * 4   #", "CPB coordinates scaled to 4 instead of 8"),
    M("swin.mask-regions", SWIN, "np.where(i < L - M, 0, np.where(i < L - s, 1, 2))", "np.where(i < L - M, 0, 1)",
      "shift mask with two regions instead of three"),
    M("swin.ln-eps", SWIN, "eps: float = 1e-5                     # LayerNorm epsilon",
      "eps: float = 1e-6                     # LayerNorm epsilon", "finding 3 class: LayerNorm eps"),
    # ------------------------------------------------------------------------------ lmref/models/litehrnet.py
    M("lhr.no-double-count", LHR, "            y = y + y ", "            y = y ", "upstream fusion's double count dropped"),
    M("lhr.no-alias", LHR, "xs = [y] + list(xs[1:])", "xs = list(xs)", "upstream fusion's in-place alias dropped"),
    M("lhr.scaf-add", LHR, "return m * a[:, :, None, None]", "return m + a[:, :, None, None]",
      "SCAF adds the channel weights instead of multiplying"),
    M("lhr.scaf-up-align", LHR, "align = True if cfg.scaf_up == \"bilinear\" else None",
      "align = False if cfg.scaf_up == \"bilinear\" else None", "SCAF bilinear upsampling without align_corners"),
    M("lhr.crw-relu", LHR, "w = conv_bn(w, p[\"conv2\"], act=\"sigmoid\", eps=eps)",
      "w = conv_bn(w, p[\"conv2\"], act=\"relu\", eps=eps)", "cross-resolution weights without sigmoid"),
    M("lhr.stem-concat-order", LHR, "np.concatenate([x1, x2], axis=1), 2)", "np.concatenate([x2, x1], axis=1), 2)",
      "stem halves concatenated the other way round"),
    M("lhr.bn-eps", LHR, "bn_eps: float = 1e-5", "bn_eps: float = 1e-3", "finding 3 class: Lite-HRNet BatchNorm eps"),
    # ------------------------------------------------------------------------------ stud5, resnet, common
    M("stud5.avg-pool", STUD5, "x = ops.max_pool2d(x, 2)", "x = ops.avg_pool2d(x, 2)", "Stud5 pools by average"),
    M("stud5.no-relu", STUD5, "act_name=\"relu\", eps=cfg.eps)", "act_name=None, eps=cfg.eps)", "Stud5 without ReLU"),
    M("stud5.bn-eps", STUD5, "eps: float = 1e-5                            # BatchNorm epsilon",
      "eps: float = 1e-3                            # BatchNorm epsilon", "finding 3 class: Stud5 BatchNorm eps"),
    M("resnet.no-shortcut", RESNET, "return ops.relu(x + shortcut)", "return ops.relu(x)", "residual blocks without shortcut"),
    M("resnet.stride-layer1", RESNET, "stride = 2 if (i > 0 and j == 0) else 1\n                x = block(",
      "stride = 2 if j == 0 else 1\n                x = block(",
      "layer1 strided too"),
    M("resnet.maxpool-pad", RESNET, "x = ops.max_pool2d(x, 3, 2, 1)", "x = ops.max_pool2d(x, 3, 2, 0)",
      "stem max pool without padding"),
    M("resnet.bn-eps", RESNET, "eps: float = 1e-5               # BatchNorm epsilon",
      "eps: float = 1e-3               # BatchNorm epsilon", "finding 3 class: ResNet BatchNorm eps"),
    M("common.bn-eps-ignored", COMMON, "bn[\"weight\"], bn[\"bias\"], eps=eps)", "bn[\"weight\"], bn[\"bias\"], eps=1e-3)",
      "conv_norm_act ignores the eps it is given"),
    M("common.no-activation", COMMON, "return act(x, act_name, inplace=True)", "return x",
      "conv_norm_act never activates"),
    # ------------------------------------------------------------------------------ lmref/weights.py
    M("weights.checksum-unchecked", WEIGHTS, "if CHECKSUM_KEY in metadata and metadata[CHECKSUM_KEY] != _checksum(",
      "if False and metadata[CHECKSUM_KEY] != _checksum(", "the SHA-256 is never compared"),
    M("weights.gap-allowed", WEIGHTS, "        if b != end:", "        if b < end:", "gaps between tensors accepted"),
    M("weights.trailing-bytes", WEIGHTS, "    if end < buffer_size:", "    if False:", "bytes after the last tensor accepted"),
    M("weights.shape-unchecked", WEIGHTS, "for k in expected if k in flat and tuple(np.shape(flat[k])) != expected[k]]",
      "for k in expected if k in flat and False]", "tensor shapes never compared with the architecture's"),
    M("weights.f16-as-f32", WEIGHTS, "\"F16\": np.dtype(\"<f2\")", "\"F16\": np.dtype(\"<f4\")", "F16 read as float32"),
    M("weights.flatten-separator", WEIGHTS, "flat.update(flatten(v, name + \".\"))", "flat.update(flatten(v, name + \"/\"))",
      "flatten joins keys with '/'"),
    M("weights.header-unpadded", WEIGHTS, "header += b\" \" * (-(8 + len(header)) % 8)",
      "header += b\" \" * ((8 + len(header)) % 8)", "tensor buffer not 8-byte aligned"),
    # ------------------------------------------------------------------------------ lmref/bundle.py
    M("bundle.tol-x10", BUNDLE, "ok = max_abs <= atol + rtol * scale", "ok = max_abs <= atol + 10 * rtol * scale",
      "finding 4: compare passes at 10x the tolerance it reports"),
    M("bundle.scale-signed", BUNDLE, "scale = float(np.max(np.abs(r)))", "scale = float(np.max(r))",
      "scale from the signed maximum"),
    M("bundle.port-always-f32", BUNDLE, "port = \"float64\" if dts == {np.dtype(np.float64)} else",
      "port = \"float32\" if dts == {np.dtype(np.float64)} else", "a float64 port gets float32 tolerances"),
    M("bundle.f32-rtol-x10", BUNDLE, "\"float32\": {\"rtol\": 1e-4, \"atol\": 1e-6}", "\"float32\": {\"rtol\": 1e-3, \"atol\": 1e-6}",
      "default float32 tolerance 10x looser"),
    M("bundle.size1-reshape-any", BUNDLE, "if [s for s in val.shape if s != 1] == [s for s in shape if s != 1]:",
      "if val.size == int(np.prod(shape)):", "any same-size tensor reshaped to fit (NHWC read as NCHW)"),
    # ------------------------------------------------------------------------------ lmref/metrics.py
    M("metrics.nme-batch-norm", METRICS, "return err.mean(axis=1) / d  ", "return err.mean(axis=1) / d.mean()  ",
      "every image normalised by the batch's mean distance"),
    M("metrics.norm-l1", METRICS, "d = np.linalg.norm(_mean_point(gt, a) - _mean_point(gt, b), axis=-1)",
      "d = np.abs(_mean_point(gt, a) - _mean_point(gt, b)).sum(axis=-1)", "inter-ocular distance in L1"),
    M("metrics.ced-left", METRICS, "np.searchsorted(np.sort(nmes), xs, side=\"right\")",
      "np.searchsorted(np.sort(nmes), xs, side=\"left\")", "an NME equal to a sample counts as a failure"),
    M("metrics.fr-second-last", METRICS, "fr = 1.0 - ys[-1]", "fr = 1.0 - ys[-2]", "FR read one sample early"),
    M("metrics.cartwright-beta", METRICS, "beta = (b * b + 3 * a * b) / (6 * a)", "beta = (b * b + 3 * a * b) / (6 * b)",
      "Simpson's last-interval correction"),
    M("metrics.auc-divisor", METRICS, "auc = simpson(ys, xs) / thr", "auc = simpson(ys, xs) / xs[-1]",
      "AUC divided by the last sample (0.0501 at thr 0.05)"),
    M("metrics.bbox-diagonal-swapped", METRICS, "d = np.sqrt(w * h) if norm == \"bbox\" else np.sqrt(w * w + h * h)",
      "d = np.sqrt(w * w + h * h) if norm == \"bbox\" else np.sqrt(w * h)", "bbox and diagonal normalisers swapped"),
    # ------------------------------------------------------------------------------ issue 21's findings elsewhere
    M("landmarks.e2p-bias-zero", LAYOUTS, "b = (M.sum(axis=1) < 0.5).astype(np.float64)",
      "b = 0 * (M.sum(axis=1) < 0.5).astype(np.float64)",
      "finding 3: E2P bias zeroed in landmarks.edge_matrix"),
    M("train.model-sees-zeros", "torch_impl/train.py", "        out = self.model(x)\n        loss, parts = task_loss(",
      "        out = self.model(x * 0)\n        loss, parts = task_loss(",
      "finding 5: the trained model only ever sees zeros", tests=["tests/test_train.py", "-k", "regression_loss"]),
    M("train.no-optimizer-step", "torch_impl/train.py", "            opt.step()\n", "            pass\n",
      "finding 6: no optimizer step", tests=["tests/test_train.py", "-k", "lkd"]),
    M("cli.eval-preds-zero", "lmref/evaluate.py", "preds.append(faces[0].landmarks)", "preds.append(faces[0].landmarks * 0)",
      "finding 7: eval's predictions multiplied by 0", tests=["tests/test_cli.py", "-k", "eval"]),
    M("ship.stud5-lmref-bug-restated", STUD5, "x = ops.max_pool2d(x, 2)", "x = ops.max_pool2d(x, 2) * 1.02",
      "finding 8: an lmref-only Stud5 bug whose NME `ship half` would have written into the manifest",
      tests=["tests/test_shipped.py"],
      setup="from benchmarks.mutation import restate_shipped_nme; restate_shipped_nme('stud5')", finding=True),
]


# Issue 21's findings: each mutant, the test that now answers it, and (where one exists) a test of the
# suite as it was that let the mutant through. ``--findings`` runs each alone under its mutant.
T_RESIZE, T_CONV, T_BUNDLE, T_CLI = "tests/test_ops_resize.py", "tests/test_ops_conv.py", "tests/test_bundle.py", "tests/test_cli.py"
FINDINGS = [
    (1, "resize.nearest-float32-only", [f"{T_RESIZE}::test_nearest_index_rule_every_size_pair_up_to_256"],
     [f"{T_RESIZE}::test_nearest_index_rule_exhaustive_small_sizes"]),
    (2, "conv.dw1-bias-sign", [f"{FAST}::test_depthwise_single_block_equals_blocked_path_and_reference"], []),
    (3, "mvit.bn-eps", ["tests/test_constants.py"], ["tests/test_mobilevitv2.py", "-k", "parity or timm"]),
    (3, "mvit.gn-eps", ["tests/test_constants.py"], ["tests/test_mobilevitv2.py", "-k", "parity or timm"]),
    (3, "landmarks.e2p-bias-zero", ["tests/test_constants.py"], ["tests/test_aam_head.py", "-k", "parity"]),
    (4, "bundle.tol-x10", [f"{T_BUNDLE}::test_compare_passes_just_inside_and_fails_just_outside_the_default_tolerance",
                           f"{T_CLI}::test_compare_verdict_at_the_reported_tolerance"],
     [T_BUNDLE, "-k", "compare and not tolerance and not threshold and not onnx"]),
    (5, "train.model-sees-zeros", ["tests/test_train.py::test_regression_loss_falls_and_export"], []),
    (6, "train.no-optimizer-step", ["tests/test_train.py::test_aam_task_and_lkd_distillation"], []),
    (7, "cli.eval-preds-zero", [f"{T_CLI}::test_eval_nme_is_the_hand_computed_error"],
     [f"{T_CLI}::test_eval_on_300w_layout_dir"]),
    (8, "ship.stud5-lmref-bug-restated", ["tests/test_shipped.py::test_shipped_nme_confirmed_by_torch_impl[stud5]"],
     ["tests/test_shipped.py::test_shipped_model_reaches_its_manifest_nme[stud5]"]),
]


# =============================================================================================== running

def make_copy(dest):
    """The repository at HEAD (tracked files only) extracted into ``dest``."""
    os.makedirs(dest, exist_ok=True)
    archive = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", "HEAD"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    return dest


def tests_of(m):
    return m.tests or TESTS[m.file]


def run_tests(copy, args, seed=SEED, timeout=TIMEOUT, extra_env=None):
    """pytest ``args`` in the copy -> (outcome "passed" | "failed" | "timeout", seconds, last lines).
    The copy comes first on sys.path, so ``import lmref`` is the copy's, not the editable install's."""
    env = {**os.environ, "PYTHONPATH": copy, "LMREF_HYPOTHESIS_SEED": str(seed), "PYTHONDONTWRITEBYTECODE": "1",
           **(extra_env or {})}
    with tempfile.TemporaryDirectory(prefix="hypothesis-db-") as db:
        env["HYPOTHESIS_STORAGE_DIRECTORY"] = db
        t0 = time.time()
        try:
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args],
                               cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.time() - t0, ""
    lines = (r.stdout + r.stderr).strip().splitlines()
    tail = "\n".join([ln for ln in lines if ln.startswith("FAILED")][:1] + lines[-1:])
    return ("passed" if r.returncode == 0 else "failed"), time.time() - t0, tail


def apply(copy, m):
    """Write mutant ``m`` into the copy; returns the original text (to restore)."""
    path = os.path.join(copy, m.file)
    with open(path, encoding="utf-8") as f:
        original = f.read()
    n = original.count(m.old)
    if n != 1:
        raise SystemExit(f"mutant {m.id}: its text occurs {n} times in {m.file} (expected once); update the list")
    with open(path, "w", encoding="utf-8") as f:
        f.write(original.replace(m.old, m.new))
    return original


def restore(copy, m, original):
    with open(os.path.join(copy, m.file), "w", encoding="utf-8") as f:
        f.write(original)


@contextlib.contextmanager
def mutated(copy, m):
    """The copy with mutant ``m`` applied (and its setup run) inside the block, exactly restored after:
    the source file's text, and the shipped models' bytes when a setup may have rewritten them."""
    original = apply(copy, m)
    backup = _backup_assets(copy) if m.setup else None
    try:
        if m.setup:
            subprocess.run([sys.executable, "-c", m.setup], cwd=copy, check=True,
                           env={**os.environ, "PYTHONPATH": copy})
        yield
    finally:
        restore(copy, m, original)
        if backup:
            _restore_assets(copy, backup)


def restate_shipped_nme(name):
    """Finding 8's scenario, in a mutated copy: measure shipped model ``name`` with (the copy's) lmref
    and write that NME into its manifest as the measurement of this machine's render of its test split
    (what ``python -m torch_impl.ship half`` did for Stud5: the stated number is lmref's own)."""
    from lmref import weights
    from lmref.detect import shipped_models
    from torch_impl import ship
    path = shipped_models()[name]
    model, cfg, test = ship._test_set(path)
    nme, _, _ = ship._measure(model, cfg, test)
    tensors, manifest = weights.load(path)
    training = manifest["training"]
    where = ship.verdict(training, nme, ship.split_record(test))["where"]    # the entry this render is checked against
    entry = training["test"] if where == "training.test" else training["test_remeasured"][int(where.split("[")[1].rstrip("]"))]
    entry["nme"] = float(nme.mean())
    weights.save(path, tensors, manifest)


def run(mutants, out_md, seed, confirm):
    with tempfile.TemporaryDirectory(prefix="lmref-mutation-") as tmp:
        copy = make_copy(os.path.join(tmp, "repo"))
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        files = sorted({a for m in mutants for a in tests_of(m) if a.startswith("tests/")})
        outcome, secs, tail = run_tests(copy, files, seed)            # every selection passes unmutated:
        print(f"baseline ({len(files)} test files, whole): {outcome} ({secs:.0f} s)", flush=True)
        if outcome != "passed":                                        # (one run of all their files)
            raise SystemExit(f"the unmutated tests fail:\n{tail}")
        baseline = secs
        rows = []
        for m in mutants:
            with mutated(copy, m):
                outcome, secs, tail = run_tests(copy, tests_of(m), seed)
                if outcome == "passed" and confirm:
                    outcome, more, tail = run_tests(copy, ["tests"], seed)
                    secs += more
                    outcome = {"passed": "survived (whole suite)", "failed": "killed (whole suite)"}.get(outcome, outcome)
            result = {"passed": "survived", "failed": "killed", "timeout": "killed (timeout)"}.get(outcome, outcome)
            rows.append({**asdict(m), "scope": m.scope, "result": result, "seconds": round(secs, 1),
                         "tests": tests_of(m), "tail": tail})
            print(f"{m.id:34s} {result:24s} {secs:6.0f} s", flush=True)
    write_report(rows, out_md, seed, head, baseline)
    return rows


def run_findings(out_md, seed):
    """Each finding's mutant applied alone; its answering test(s) must fail, the earlier test is shown."""
    by_id = {m.id: m for m in MUTANTS}
    rows = []
    with tempfile.TemporaryDirectory(prefix="lmref-findings-") as tmp:
        copy = make_copy(os.path.join(tmp, "repo"))
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        for number, mid, answer, before in FINDINGS:
            m = by_id[mid]
            for args in (answer, before):                           # unmutated, both pass
                if args and run_tests(copy, args, seed)[0] != "passed":
                    raise SystemExit(f"finding {number}: unmutated {' '.join(args)} does not pass")
            with mutated(copy, m):
                now = run_tests(copy, answer, seed)
                then = run_tests(copy, before, seed) if before else None
            rows.append({"finding": number, "id": mid, "why": m.why, "answer": answer, "answer_result": now[0],
                         "answer_tail": now[2], "before": before, "before_result": then and then[0]})
            print(f"finding {number} {mid:32s} answering test {now[0]:7s}"
                  f"{'' if then is None else ', earlier test ' + then[0]}", flush=True)
    lines = ["# Issue 21's findings under their mutants", "",
             f"`python -m benchmarks.mutation --findings` at commit {head} (hypothesis seed {seed}): each "
             "mutant applied alone to a copy of the repository, then the test that answers the finding run "
             "alone (it must fail), and a test of the suite as it was that let the mutant through (it passes).",
             "", "| finding | mutant | answering test under the mutant | earlier test under the mutant |",
             "| --- | --- | --- | --- |"]
    for r in rows:
        ans = ", ".join(f"`{a.split('/')[-1]}`" for a in r["answer"] if not a.startswith("-"))
        bef = " ".join(r["before"]).replace("tests/", "") if r["before"] else ""
        failed = [ln for ln in r["answer_tail"].splitlines() if ln.startswith("FAILED")]
        how = f" (`{failed[0][7:160].replace('|', '/')}`)" if failed else ""
        lines.append(f"| {r['finding']} | `{r['id']}`: {r['why']} | {ans}: **{r['answer_result']}**{how} | "
                     + (f"`{bef}`: {r['before_result']}" if bef else "(the same test, strengthened)") + " |")
    with open(out_md, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out_md}")
    return rows


def _backup_assets(copy):
    d = os.path.join(copy, "lmref", "assets", "models")
    return {f: open(os.path.join(d, f), "rb").read() for f in os.listdir(d)}


def _restore_assets(copy, backup):
    d = os.path.join(copy, "lmref", "assets", "models")
    for f, data in backup.items():
        with open(os.path.join(d, f), "wb") as fh:
            fh.write(data)


def score(rows):
    scored = [r for r in rows if r["scope"] == "score"]
    killed = [r for r in scored if r["result"].startswith("killed")]
    return len(killed), len(scored)


def write_report(rows, out_md, seed, head, baseline):
    k, n = score(rows)
    by_module = {}
    for r in rows:
        if r["scope"] == "score":
            t = by_module.setdefault(r["file"], [0, 0])
            t[0] += r["result"].startswith("killed")
            t[1] += 1
    total = sum(r["seconds"] for r in rows)
    lines = [
        "# Mutation testing",
        "",
        f"`python -m benchmarks.mutation` at commit {head}, hypothesis seed {seed}: {len(rows)} mutants, one "
        f"at a time on a copy of the repository, {total / 60:.0f} min of test runs after a {baseline / 60:.0f} min "
        "baseline (the unmutated tests pass) on this 2-core machine. List and method: "
        "`benchmarks/mutation.py`; issue 21's findings under their mutants: `mutation_findings.md`.",
        "",
        f"**Score: {k} of {n} mutants killed ({100 * k / max(n, 1):.1f}%)** in lmref/ops, lmref/fast, lmref/models, "
        "lmref/weights.py, lmref/bundle.py and lmref/metrics.py.",
        "",
        "| module | killed / mutants |",
        "| --- | --- |",
        *[f"| `{f}` | {a} / {b} |" for f, (a, b) in sorted(by_module.items())],
        "",
        "## Survivors",
        "",
    ]
    first = ("The first run of this list (commit 6850298) killed 128 of 130: `mvit.make-divisible-floor` "
             "(a width rounding that differs from timm only at widths no preset uses, and both halves share "
             "it) and `bundle.scale-signed` (no test had a reference whose largest magnitude is negative) "
             "survived; tests/test_constants.py::test_mobilevitv2_width_rounding_is_timms and "
             "tests/test_bundle.py::test_compare_scale_is_the_largest_magnitude_even_when_negative now kill them.")
    survivors = [r for r in rows if not r["result"].startswith("killed")]
    lines += [f"* `{r['id']}` ({r['file']}): {r['why']}" for r in survivors] or ["None in this run."]
    lines += ["", first]
    lines += ["", "## Every mutant", "", "| mutant | scope | what it breaks | tests run | result | s |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        tests = " ".join(t.replace("tests/", "") for t in r["tests"])
        lines.append(f"| `{r['id']}` | {r['scope']} | {r['why']} | `{tests}` | {r['result']} | {r['seconds']:.0f} |")
    os.makedirs(os.path.dirname(out_md), exist_ok=True)
    with open(out_md, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.splitext(out_md)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"commit": head, "seed": seed, "killed": k, "scored": n, "rows": rows}, f, indent=1)
    print(f"score {k}/{n}; wrote {out_md}")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.mutation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated mutant ids (default: all)")
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("--seed", type=int, default=SEED, help="hypothesis seed of the test runs")
    ap.add_argument("--findings", action="store_true",
                    help="issue 21's findings: each mutant against the test that answers it (and the earlier one)")
    ap.add_argument("--confirm-survivors", action="store_true",
                    help="re-run each survivor against the whole default suite")
    ap.add_argument("--tests", help="pytest arguments to run instead of each mutant's own tests (quoted)")
    ap.add_argument("--out", default=os.path.join(RESULTS, "mutation.md"), help="report (and .json beside it)")
    args = ap.parse_args(argv)
    if args.findings:
        out = args.out if args.out != os.path.join(RESULTS, "mutation.md") else os.path.join(RESULTS, "mutation_findings.md")
        run_findings(out, args.seed)
        return 0
    mutants = [m for m in MUTANTS if m.scope == "score"]            # the findings' mutants: --findings or --only
    if args.only:
        ids = args.only.split(",")
        unknown = set(ids) - {m.id for m in MUTANTS}
        if unknown:
            raise SystemExit(f"unknown mutants: {sorted(unknown)}")
        mutants = [m for m in MUTANTS if m.id in ids]
    if args.tests:
        mutants = [Mutant(**{**asdict(m), "tests": args.tests.split()}) for m in mutants]
    if args.list:
        for m in mutants:
            print(f"{m.id:34s} {m.scope:8s} {m.file:30s} {' '.join(tests_of(m))}")
        return 0
    run(mutants, args.out, args.seed, args.confirm_survivors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
