"""lmref: a NumPy-only facial-landmark inference engine, checked op by op against torch_impl.

    import lmref
    lmref.ops.conv2d(...)            # every op, plain NumPy
    with lmref.trace() as t: ...     # record every op call with its scoped name
"""
from . import ops  # noqa: F401
from .trace import trace, scope  # noqa: F401

__version__ = "0.1.0"
