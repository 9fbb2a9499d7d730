"""The fast layer's caches: scratch buffers, kept zero-padded planes, read-only index tables, values
derived once from a model's parameters, argument checks that passed, and glibc's malloc tuning.

Scratch buffers (:func:`scratch`) are per thread and per name, grow to the largest request up to
:data:`CACHE_LIMIT` bytes and are reused by later calls, so large im2col matrices are not allocated
(and page-faulted) again on every call. A kernel never returns a view of a scratch buffer.
"""
from __future__ import annotations

import functools
import math
import threading
import weakref

import numpy as np

__all__ = ["CACHE_LIMIT", "scratch", "zeroed", "clear_scratch", "table", "derived", "remembered",
           "tune_malloc"]

CACHE_LIMIT = 64 << 20           # a scratch buffer larger than this is allocated per call, not kept
ZEROED_MAX = 256                 # zeroed() keeps at most this many buffers per thread
_local = threading.local()


def scratch(name, shape, dtype):
    """An array of ``shape`` and ``dtype`` with undefined contents, backed by a buffer kept per thread
    under ``name`` and reused by the next request with that name (so two buffers in use at the same
    time need two names). Requests above CACHE_LIMIT bytes get a fresh array that is not kept."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > CACHE_LIMIT:
        return np.empty(shape, dtype)
    try:
        buffers = _local.buffers
    except AttributeError:
        buffers = _local.buffers = {}
    buf = buffers.get(name)
    if buf is None or buf.nbytes < nbytes:
        buf = buffers[name] = np.empty(max(nbytes, 64), np.uint8)
    return np.ndarray(shape, dtype, buffer=buf)


def zeroed(key, shape, dtype):
    """A zero-filled array of ``shape`` and ``dtype`` kept per thread under the hashable ``key`` and
    returned again (not re-zeroed) by the next request with that key: for callers that write the
    same region on every call and rely on the rest staying zero (conv2d's padded planes: the
    interior is overwritten, the border never is). Emptied when it reaches ZEROED_MAX keys."""
    try:
        cache = _local.zeroed
    except AttributeError:
        cache = _local.zeroed = {}
    buf = cache.get(key)
    if buf is None:
        if len(cache) >= ZEROED_MAX:
            cache.clear()
        buf = cache[key] = np.zeros(shape, dtype)
    return buf


def clear_scratch():
    """Free this thread's scratch and zeroed buffers (they are re-created on demand)."""
    _local.buffers = {}
    _local.zeroed = {}


@functools.lru_cache(maxsize=512)
def table(fn, *args):
    """fn(*args) (an op's index / weight table) computed once per argument tuple and kept read-only:
    the kernels' tables are the definitions', just not rebuilt on every call."""
    out = fn(*args)
    for a in (out if isinstance(out, tuple) else (out,)):
        a.flags.writeable = False
    return out


_DERIVED = {}            # (id(array), tag) -> (weak reference to the array, value)


def derived(array, tag, make):
    """``make()`` computed once per parameter ``array`` (by identity) and ``tag``, e.g. a conv weight
    with its BatchNorm folded in: kept while the array lives. Parameters must not be changed in
    place afterwards (lmref.weights.Model never does)."""
    key = (id(array), tag)
    hit = _DERIVED.get(key)
    if hit is not None and hit[0]() is array:
        return hit[1]
    value = make()
    _DERIVED[key] = (weakref.ref(array, lambda _, k=key: _DERIVED.pop(k, None)), value)
    return value


_PASSED = {}            # (check function, signature) -> result, for argument checks that passed
PASSED_MAX = 8192       # the memo is emptied when it reaches this many entries


def remembered(check, key, *args):
    """``check(*args)`` -- an op's argument checks, which raise on bad arguments and otherwise return
    what the op needs (not None) -- run once per ``key``: a hashable signature holding everything
    the checks depend on (shapes, dtypes, int arguments). Models call their ops hundreds of times per
    pass with a few signatures, and on small maps the checks cost as much as the arithmetic. A call
    whose signature has passed before skips them; ``key=None`` (arguments of other types) checks
    every time."""
    if key is None:
        return check(*args)
    k = (check, key)
    result = _PASSED.get(k)
    if result is None:
        result = check(*args)
        if len(_PASSED) >= PASSED_MAX:
            _PASSED.clear()
        _PASSED[k] = result
    return result


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
