"""Speed without changing the definitions: the fast-path switch of the ops and load-time BatchNorm folding.

Two mechanisms, both checked against the plain reference in ``tests/test_fast_paths.py``:

* **op fast paths** (``lmref.ops._fast``): conv2d, batch/group/instance norm, silu, sigmoid,
  interpolate, adaptive_avg_pool2d and separable_self_attention compute the same numbers by a faster
  route (to rounding; sigmoid and interpolate bit for bit, adaptive_avg_pool2d too except for small
  outputs, summed by one product with a 0/1 matrix). They are on unless the environment has
  ``LMREF_REFERENCE=1``; :func:`reference_paths` turns them off for a block.

* **malloc tuning** (:func:`tune_malloc`, opt-in, process-wide): glibc returns freed memory at the
  top of the heap to the OS and serves blocks above 32 MiB with a fresh ``mmap`` each time, so the
  next inference page-faults the same megabytes in again (about 3,000 faults and 9 ms of a 45 ms
  MobileViT-v2 student on our 2-core VM; a 64 MiB batch-16 activation costs 16,000 faults).
  ``tune_malloc`` keeps that memory for reuse.

* **BatchNorm folding** (this module): an inference BatchNorm after a convolution is an affine map per
  output channel, so ``BN(conv(x, W) + b) = conv(x, W * s) + (b - mean) * s + beta`` with
  ``s = gamma / sqrt(var + eps)`` (``lmref.ops.fold_batch_norm``). :func:`fold_batch_norms` rewrites
  every ``conv_norm_act`` block of a parameter tree (a dict holding ``conv`` with ``weight`` and
  ``bn`` with the running statistics) into a conv with a bias and no ``bn``; ``conv_norm_act`` then
  skips the BatchNorm. A model module with ``SEQUENTIAL_BN_FOLDING = True`` (Lite-HRNet) also gets the
  conv + BatchNorm pairs of its ``nn.Sequential`` blocks folded (entries ``k`` and ``k + 1`` of a dict
  with numeric keys): the conv entry gets the folded weight and a bias, the BatchNorm entry becomes
  an empty dict, which the model skips. ``lmref.weights.Model`` folds at load time (``fold_bn=None``, the default,
  when the fast paths are on; it keeps the unfolded parameters too) and runs on the folded ones
  whenever the fast paths are on and no ``lmref.trace()`` is recording, so a trace always shows every
  BatchNorm with its own output; ``fold_bn=True`` / ``False`` forces either way. A model module may
  also regroup its folded parameters for a batched route (``fast_params``: Lite-HRNet Plus stacks the
  attention layers of the SCAF units that share a target, ``scaf_fusion_stacked``).
"""
from __future__ import annotations

import importlib

from .ops import _fast
from .ops._fast import clear_scratch, reference_paths, scratch  # noqa: F401  (re-exported)
from .ops.conv import fold_batch_norm

__all__ = ["reference_paths", "fast_paths_enabled", "fold_batch_norms", "bn_eps", "folded_params",
           "use_folded", "clear_scratch", "tune_malloc"]

_BN_KEYS = ("running_mean", "running_var")
_trace = importlib.import_module("lmref.trace")     # the module (``lmref.trace`` the attribute is the function)


def fast_paths_enabled():
    """True when the ops take their fast paths (``LMREF_REFERENCE`` unset or 0)."""
    return _fast.ENABLED


def _is_conv_bn(p):
    """A ``conv_norm_act`` parameter block: {"conv": {"weight", ["bias"]}, "bn": {running stats, ...}}."""
    conv, bn = p.get("conv"), p.get("bn")
    return (isinstance(conv, dict) and isinstance(bn, dict) and "weight" in conv
            and set(conv) <= {"weight", "bias"} and all(k in bn for k in _BN_KEYS)
            and set(bn) <= {"weight", "bias", "running_mean", "running_var"})


def _is_bn(p):
    """BatchNorm parameters: the running statistics, optionally the affine weight and bias."""
    return isinstance(p, dict) and all(k in p for k in _BN_KEYS) and set(p) <= {"weight", "bias", *_BN_KEYS}


def _is_sequential_conv(p):
    """A bare conv layer of an ``nn.Sequential``: {"weight" [Cout, Cin/G, kh, kw], ["bias"]}."""
    return (isinstance(p, dict) and "weight" in p and set(p) <= {"weight", "bias"}
            and getattr(p["weight"], "ndim", 0) == 4)


def fold_batch_norms(params, eps, sequential=False):
    """A new nested parameter dict with every conv_norm_act block's BatchNorm folded into its conv
    (the input is not modified; untouched arrays are shared). Returns (params, folded names), the
    names being the dotted paths of the folded blocks. ``eps`` is the BatchNorm epsilon the model
    uses (it is not stored in the weights).

    sequential=True: also fold the pairs of an ``nn.Sequential`` (a dict with numeric keys) whose
    entry ``k`` is a bare conv and entry ``k + 1`` a BatchNorm: entry ``k`` becomes {"weight": W',
    "bias": b'} and entry ``k + 1`` an empty dict (named ``path.k`` in the folded names). Only for
    models whose code skips an empty BatchNorm entry (``SEQUENTIAL_BN_FOLDING = True``)."""
    folded = []

    def walk(p, path):
        if not isinstance(p, dict):
            return p
        if _is_conv_bn(p):
            bn = p["bn"]
            w, b = fold_batch_norm(p["conv"]["weight"], p["conv"].get("bias"), bn["running_mean"],
                                   bn["running_var"], bn.get("weight"), bn.get("bias"), eps=eps)
            folded.append(path)
            rest = {k: walk(v, f"{path}.{k}" if path else k) for k, v in p.items() if k not in ("conv", "bn")}
            return {"conv": {"weight": w, "bias": b}, **rest}
        out = {k: walk(v, f"{path}.{k}" if path else k) for k, v in p.items()}
        if sequential and p and all(k.isdigit() for k in p):
            for k in sorted(p, key=int):
                conv, bn = p[k], p.get(str(int(k) + 1))
                if _is_sequential_conv(conv) and _is_bn(bn):
                    out[k] = dict(zip(("weight", "bias"), fold_batch_norm(
                        conv["weight"], conv.get("bias"), bn["running_mean"], bn["running_var"],
                        bn.get("weight"), bn.get("bias"), eps=eps)))
                    out[str(int(k) + 1)] = {}
                    folded.append(f"{path}.{k}" if path else k)
        return out

    return walk(params, ""), folded


def bn_eps(module, cfg):
    """The BatchNorm epsilon a model module uses with ``cfg``: the module's ``BN_EPS``, else the
    config's ``bn_eps`` or ``eps``; for the AAM wrapper, its backbone's. None if the model says nothing
    (then nothing is folded)."""
    if hasattr(module, "backbone_module") and hasattr(module, "backbone_config"):
        return bn_eps(module.backbone_module(cfg), module.backbone_config(cfg))
    if isinstance(getattr(module, "BN_EPS", None), float):
        return module.BN_EPS
    for name in ("bn_eps", "eps"):
        v = getattr(cfg, name, None)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def folded_params(model):
    """``model.params`` with the BatchNorms folded, then regrouped by the model module's
    ``fast_params(params, cfg)`` if it has one (computed once, kept on the model)."""
    cached = getattr(model, "_folded_params", None)
    if cached is None:
        eps = bn_eps(model.module, model.config)
        sequential = getattr(model.module, "SEQUENTIAL_BN_FOLDING", False)
        cached = model.params if eps is None else fold_batch_norms(model.params, eps, sequential)[0]
        prepare = getattr(model.module, "fast_params", None)
        if prepare is not None:                         # model-specific regrouping (Lite-HRNet's SCAF)
            cached = prepare(cached, model.config)
        model._folded_params = cached
    return cached


def use_folded(fold_bn):
    """Whether a Model call should run on folded parameters: ``fold_bn`` True/False forces it; None
    (auto) folds when the fast paths are on and no trace is recording."""
    if fold_bn is None:
        return _fast.ENABLED and _trace._active is None
    return bool(fold_bn)


def tune_malloc(trim_threshold=1 << 30):
    """Make glibc keep freed memory for reuse instead of returning it to the OS after every large
    free: ``mallopt(M_TRIM_THRESHOLD)`` (the heap is trimmed only past ``trim_threshold`` free bytes)
    and ``mallopt(M_MMAP_MAX, 0)`` (large blocks come from the heap too instead of a fresh ``mmap``
    per allocation, whose pages are faulted in again every time: a 64 MiB activation of a batch-16
    pass costs 16,000 page faults otherwise). The environment variables ``MALLOC_TRIM_THRESHOLD_`` /
    ``MALLOC_MMAP_MAX_`` do the same. Affects the whole process (torch and onnxruntime allocate
    through the same malloc); the resident size then stays at its high-water mark. Returns True if
    glibc accepted both settings, False where there is no glibc ``mallopt`` (macOS, Windows, musl)."""
    import ctypes
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4                  # <malloc.h>
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))
