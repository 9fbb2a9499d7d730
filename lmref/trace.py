"""Record every op call made inside a ``with trace():`` block.

Each op in ``lmref.ops`` is wrapped by :func:`op`. Outside a trace the wrapper costs a global and a
dict lookup and a function call; inside, it records

    name    the scoped name: the ``scope()`` stack joined by dots, then ``:`` and the op name,
            e.g. ``backbone.stages.2.1.transformer.0.attn:separable_self_attention``; a second
            call of the same op in the same scope gets ``#1``, ``#2`` ...; ops called *inside*
            another op are recorded too, under ``<parent name>/<op>``
    op      the op's function name
    inputs  shapes of the array arguments, in call order
    attrs   the non-array arguments (stride, padding, eps ...)
    output  a copy of the op's output array

Models open scopes named like their state-dict keys (``with scope("stem"): ...``), so a record's
name says which weights produced it.

A trace always runs the plain definitions. The wrapper is also the one door of the fast layer:
outside a trace, while ``lmref.fast`` is on, a call goes to the faster kernel registered under the
op's name (``use_kernels``); model blocks marked ``@replaceable`` pass the same door.

    >>> with trace() as t:
    ...     y = model(x)
    >>> for r in t: print(r.name, r.op, r.inputs, r.output.shape)
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field

import numpy as np

OPS: dict = {}      # op name -> traced function, filled by @op
_active = None      # the Trace being recorded, or None
_kernels: dict = {}  # name -> faster kernel while lmref.fast is on (see use_kernels), else empty
_scope: list = []   # name stack while tracing


@dataclass
class Record:
    name: str
    op: str
    inputs: list
    attrs: dict
    output: object


@dataclass
class Trace:
    records: list = field(default_factory=list)
    _counts: dict = field(default_factory=dict)

    def __iter__(self):
        return iter(self.records)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, name):
        for r in self.records:
            if r.name == name:
                return r
        raise KeyError(f"no traced op named {name!r}")

    def names(self):
        return [r.name for r in self.records]

    def outputs(self):
        """{name: output array} for every record whose output is an array."""
        return {r.name: r.output for r in self.records if isinstance(r.output, np.ndarray)}

    def table(self):
        """One line per op: name, op, input shapes -> output shape."""
        lines = []
        for r in self.records:
            out = getattr(r.output, "shape", type(r.output).__name__)
            lines.append(f"{r.name:<70s} {r.op:<26s} {r.inputs} -> {list(out) if isinstance(out, tuple) else out}")
        return "\n".join(lines)

    def _unique(self, base):
        k = self._counts.get(base, 0)
        self._counts[base] = k + 1
        return base if k == 0 else f"{base}#{k}"


def _copy(out):
    if isinstance(out, np.ndarray):
        return out.copy()
    if isinstance(out, (tuple, list)):
        return type(out)(_copy(o) for o in out)
    return out


def _name(opname):
    prefix = ""
    for part in _scope:
        prefix += part if (not prefix or prefix.endswith("/")) else "." + part
    if not prefix:
        return opname
    return prefix + opname if prefix.endswith("/") else f"{prefix}:{opname}"


def op(fn):
    """Register ``fn`` as an lmref op and make it traceable; outside a trace, the call goes to the fast
    layer's kernel for the op while one is registered and the layer is on (``use_kernels``)."""
    opname = fn.__name__

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        if _active is None:
            return _kernels.get(opname, fn)(*args, **kwargs)
        return _record(_active, fn, args, kwargs)

    traced.__wrapped_op__ = fn
    traced.__kernel_key__ = opname
    OPS[opname] = traced
    return traced


def _record(t, fn, args, kwargs):
    """Run the op ``fn`` inside the trace ``t`` and append its Record; the ops it calls are named under it."""
    opname = fn.__name__
    name = t._unique(_name(opname))
    inputs = [list(a.shape) for a in args if isinstance(a, np.ndarray)]
    inputs += [list(v.shape) for v in kwargs.values() if isinstance(v, np.ndarray)]
    attrs = {k: v for k, v in kwargs.items() if not isinstance(v, np.ndarray)}
    saved = list(_scope)
    _scope[:] = [name + "/"]            # ops called inside this op are named under it
    try:
        out = fn(*args, **kwargs)
    finally:
        _scope[:] = saved
    t.records.append(Record(name, opname, inputs, attrs, _copy(out)))
    return out


def replaceable(fn):
    """Mark a model block (not an op: nothing is recorded) that ``lmref.fast`` may run on the same
    parameters by a faster route, e.g. a conv with its BatchNorm folded in. Inside a trace, or with
    the fast layer off, the block itself runs."""
    key = f"{fn.__module__}.{fn.__qualname__}"

    @functools.wraps(fn)
    def block(*args, **kwargs):
        if _active is None:
            return _kernels.get(key, fn)(*args, **kwargs)
        return fn(*args, **kwargs)

    block.__kernel_key__ = key
    return block


def use_kernels(kernels):
    """Route calls outside traces to ``kernels[name]`` where one is given ({}: the definitions only).
    ``lmref.fast.enable`` is the switch that calls this."""
    global _kernels
    _kernels = kernels


class _NoScope:
    """What ``scope`` returns when nothing is being traced: a context manager that does nothing,
    without the cost of entering a generator (models open about a thousand scopes per pass)."""
    __slots__ = ()

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NO_SCOPE = _NoScope()


def scope(name):
    """Name the ops called inside (no-op when not tracing)."""
    if _active is None:
        return _NO_SCOPE
    return _named_scope(name)


@contextlib.contextmanager
def _named_scope(name):
    _scope.append(str(name))
    try:
        yield
    finally:
        _scope.pop()


@contextlib.contextmanager
def trace():
    """Record every op call inside the block; yields the :class:`Trace`."""
    global _active
    if _active is not None:
        raise RuntimeError("lmref.trace() blocks cannot be nested")
    t = Trace()
    _active, saved = t, list(_scope)
    _scope.clear()
    try:
        yield t
    finally:
        _active = None
        _scope[:] = saved
