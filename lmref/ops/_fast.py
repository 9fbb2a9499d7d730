"""The switch between the ops' plain reference paths and their fast paths, and reusable scratch buffers.

Every op in ``lmref.ops`` is first written as its plain definition (the *reference path*). A few ops
also have a *fast path*: a private function next to the op computing the same numbers with fewer
passes over memory (conv2d: im2col into a reused buffer and one matrix product per block, depthwise
taps as stacked matrix-vector products; norms with per-channel factors combined first; silu and
sigmoid with fewer temporaries; interpolate and adaptive_avg_pool2d with their index and weight
tables cached; separable_self_attention with its reduction as a matrix-vector product). The op picks the fast path by itself when :data:`ENABLED` is true and
the case is one the fast path covers; ``tests/test_fast_paths.py`` checks fast == reference.

    LMREF_REFERENCE=1 python ...           # environment: reference paths everywhere (debugging)
    lmref.ops._fast.ENABLED = False        # the same at run time
    with lmref.fast.reference_paths(): ... # the same for a block

Threads (:func:`parallel`): NumPy's element-wise loops run on one core, but they release the GIL,
so a fast path can split a large array into THREADS parts and run them in a small thread pool.
THREADS follows the BLAS's own default (``OPENBLAS_NUM_THREADS``, then ``OMP_NUM_THREADS``, then the
CPUs this process may use), ``LMREF_NUM_THREADS`` overrides it; 1 turns the pool off.

Scratch buffers (:func:`scratch`) are per thread and per name, grow to the largest request up to
:data:`CACHE_LIMIT` bytes and are reused by later calls, so large im2col matrices are not allocated
(and page-faulted) again on every call. A fast path never returns a view of a scratch buffer.
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["ENABLED", "enabled", "reference_paths", "scratch", "zeroed", "CACHE_LIMIT", "CHUNK_BYTES",
           "THREADS", "parallel", "set_num_threads"]


def _env_reference():
    return os.environ.get("LMREF_REFERENCE", "").strip().lower() not in ("", "0", "false", "no")


ENABLED = not _env_reference()   # fast paths on unless LMREF_REFERENCE=1
CACHE_LIMIT = 64 << 20           # a scratch buffer larger than this is allocated per call, not kept
CHUNK_BYTES = 1 << 20            # fast paths size their im2col blocks to about this many bytes (~ L2)

PARALLEL_MIN = 1 << 17           # arrays with fewer elements than this stay on one thread
BLOCK = 1 << 16                  # element-wise fast paths work through large arrays in blocks this long


def _default_threads():
    for var in ("LMREF_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(var, "").strip()
        if v.isdigit() and int(v) > 0:
            return int(v)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                       # not Linux
        return os.cpu_count() or 1


THREADS = _default_threads()
_local = threading.local()
_pool = None
_pool_size = 0


def set_num_threads(n):
    """Threads the fast paths may use for element-wise work (the BLAS keeps its own setting)."""
    global THREADS
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive int, got {n!r}")
    THREADS = n


def parallel(n, fn, size):
    """Call ``fn(lo, hi)`` on consecutive parts of range(n) that together cover it, each part in its
    own thread, and return when all are done. ``size`` is the number of array elements the whole
    job touches: below PARALLEL_MIN, or with THREADS == 1, it is one plain call ``fn(0, n)``.
    The parts must write disjoint outputs; NumPy releases the GIL inside its loops and BLAS calls."""
    global _pool, _pool_size
    parts = min(THREADS, n)
    if parts <= 1 or size < PARALLEL_MIN or getattr(_local, "in_worker", False):
        fn(0, n)
        return
    if _pool is None or _pool_size < parts - 1:
        _pool, _pool_size = ThreadPoolExecutor(parts - 1, thread_name_prefix="lmref",
                                               initializer=_mark_worker), parts - 1
    bounds = [n * i // parts for i in range(parts + 1)]
    futures = [_pool.submit(fn, bounds[i], bounds[i + 1]) for i in range(1, parts)]
    try:
        fn(bounds[0], bounds[1])                 # the calling thread takes the first part
    finally:
        for f in futures:
            f.result()                           # re-raises a worker's exception


def _mark_worker():
    _local.in_worker = True


def enabled():
    """True when the ops should take their fast paths."""
    return ENABLED


@contextlib.contextmanager
def reference_paths(reference=True):
    """Run the block with the plain reference paths (``reference=False``: with the fast paths).
    Sets the module-wide switch, so it affects other threads too."""
    global ENABLED
    saved, ENABLED = ENABLED, not reference
    try:
        yield
    finally:
        ENABLED = saved


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


ZEROED_MAX = 256                 # zeroed() keeps at most this many buffers per thread


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
