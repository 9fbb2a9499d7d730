"""Threads for the fast kernels' element-wise work.

NumPy's element-wise loops run on one core, but they release the GIL, so a kernel can split a large
array into THREADS parts and run them in a small thread pool. THREADS follows the BLAS's own default
(``OPENBLAS_NUM_THREADS``, then ``OMP_NUM_THREADS``, then the CPUs this process may use);
``LMREF_NUM_THREADS`` overrides it; 1 turns the pool off.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["THREADS", "PARALLEL_MIN", "BLOCK", "parallel", "set_num_threads"]

PARALLEL_MIN = 1 << 17           # arrays with fewer elements than this stay on one thread
BLOCK = 1 << 16                  # element-wise kernels work through large arrays in blocks this long


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
    """Threads the fast kernels may use for element-wise work (the BLAS keeps its own setting)."""
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
