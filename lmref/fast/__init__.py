"""lmref.fast: speed as a layer of its own above the definitions in ``lmref.ops`` and ``lmref.models``.

    import lmref.fast                  # registers the kernels; the layer is on (LMREF_REFERENCE=1: off)
    lmref.fast.enabled()               # True / False
    lmref.fast.enable(False)           # off: every op and model block runs its plain definition
    with lmref.fast.off(): ...         # off for a block of code (``on()``: on for a block)

``lmref.weights`` imports this module, so a loaded model, ``lmref detect``, ``lmref eval`` and the
benchmark run with the fast layer on unless it is turned off. ``lmref.trace()`` -- and so every golden
bundle and every ``lmref info`` profile -- always runs the definitions, whatever the switch says.

How it plugs in: every op call passes ``lmref.trace``'s ``@op`` wrapper (and every model block marked
``@replaceable`` an equivalent one); outside a trace, while the layer is on, the wrapper calls the
kernel registered here under the op's name instead (``registry.replaces``). A kernel takes the same
arguments and returns the same numbers (to rounding; tests/test_fast_layer.py checks each against its
definition, op by op and model by model, in float64 and float32). What is here:

    conv, norm, activation,       one module per op family: the same sums arranged for BLAS, fewer
    pooling, resize, attention    passes over memory, tables built once, threads for large arrays
    folding                       BatchNorm folded into the conv before it (common.conv_norm_act,
                                  Lite-HRNet's conv_bn and layer specs)
    litehrnet                     Lite-HRNet's stacked spatial-weighting and SCAF units
    buffers                       scratch buffers, kept padded planes, cached tables and derived
                                  parameters, remembered argument checks, glibc malloc tuning
    threads                       the thread pool for element-wise work (LMREF_NUM_THREADS)
"""
from __future__ import annotations

import contextlib
import os

from ..trace import use_kernels
from . import activation, attention, conv, folding, litehrnet, norm, pooling, resize  # noqa: F401  (they register)
from .buffers import clear_scratch, tune_malloc  # noqa: F401
from .registry import KERNELS
from .threads import set_num_threads  # noqa: F401

__all__ = ["enabled", "enable", "using", "on", "off", "KERNELS", "clear_scratch", "tune_malloc", "set_num_threads"]

_on = False


def enabled():
    """True while op calls outside traces go to the fast kernels."""
    return _on


def enable(flag=True):
    """Turn the fast layer on (or off with ``flag=False``) for the whole process, all threads."""
    global _on
    _on = bool(flag)
    use_kernels(KERNELS if _on else {})


@contextlib.contextmanager
def using(flag):
    """Run the block with the fast layer on (True) or off (False), then restore the switch."""
    saved = _on
    enable(flag)
    try:
        yield
    finally:
        enable(saved)


def off():
    """``with lmref.fast.off():`` the block runs on the plain definitions."""
    return using(False)


def on():
    """``with lmref.fast.on():`` the block runs with the fast layer."""
    return using(True)


enable(os.environ.get("LMREF_REFERENCE", "").strip().lower() in ("", "0", "false", "no"))
