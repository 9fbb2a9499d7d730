"""The fast layer's kernels, by the name of the op or model block each replaces.

``lmref.trace`` routes every call of an ``@op`` (and of a ``@replaceable`` model block) outside a
trace to ``KERNELS[name]`` while the fast layer is on (``lmref.fast.enable``); a kernel takes the same
arguments as what it replaces and returns the same numbers (to rounding, tests/test_fast_layer.py).
"""
KERNELS = {}


def replaces(target):
    """Register the decorated function as the faster kernel of ``target`` (an op or a block)."""
    def register(kernel):
        KERNELS[target.__kernel_key__] = kernel
        kernel.definition = target.__wrapped__          # the plain definition, for the cases a kernel leaves
        return kernel
    return register
