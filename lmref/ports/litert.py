"""LiteRT (TFLite) ports against golden bundles: what a ``.tflite`` file needs, and whether it agrees
with lmref op by op.

    facts = read("student.tflite")            # the flatbuffer, read with the standard library alone
    facts.max_rank, facts.op_codes, facts.min_runtime_version
    fits_runtime(facts, "2.11")               # [] if nothing in the file needs a newer runtime
    port, pairs = run_litert("student.tflite", bundle)     # ai-edge-litert (or tflite-runtime)
    report = lmref.bundle.compare(bundle, port)

Static facts (no runtime needed, so they can gate a file for a device that has an old runtime):
the largest tensor rank, each operator code with its version (a kernel registers the versions it
implements: TFLite 2.11 has TRANSPOSE up to version 5, i.e. up to rank 5; version 6, rank 6, came
with 2.12), and the converter's own ``min_runtime_version`` metadata.

Running: the bundle's float32 input is fed to the file in ai-edge-litert (LiteRT's Python package)
or, if that is not installed, tflite-runtime; the interpreter is asked to keep every intermediate
tensor (``experimental_preserve_all_tensors``) and runs TFLite's builtin kernels without the default
delegate, so that each kept tensor is what a kernel wrote. The graph outputs are returned under
their signature names (a torch_impl conversion names them by the model's output keys, which are
the bundle's output names).

Pairing intermediate tensors: a converter fuses (a conv and its BatchNorm become one CONV_2D) and
splits ops (a GroupNorm becomes a dozen), so only some of lmref's op outputs survive as tensors.
litert-torch names each tensor after the torch module that produced it,
``...AAM/torch.nn.modules.container.Sequential_stages/.../BatchNorm2d_bn;2`` (qualified class, ``_``,
attribute name, per level; ``;k`` counts ops within the module; fused ops list several such
locations, the first one is the op's own). A bundle op in scope ``backbone.stages.2.1.conv_kxk.bn``
is looked for among the tensors of the module whose path is the longest tail of that scope
(``stages.2.1.conv_kxk.bn``; ``backbone`` is not a module call here), and of its sub-modules that
lmref has no scope of its own for (the attention's ``qkv_proj``); of those, the ones whose shape is
the bundle's, or the bundle's in NHWC, are candidates, and the candidate closest in value is paired.
Value picks only among tensors of the right module and shape, and the pair is then compared with
the usual tolerance, so a wrong port still fails where it diverges. Ops that leave no such tensor
(a conv fused with its BatchNorm, an activation fused into a kernel) are not compared.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import struct
import sys
from dataclasses import dataclass, field

import numpy as np

from ..bundle import BundleError, _match_shape, _parse_mapping, read_mapping

__all__ = ["Facts", "read", "fits_runtime", "invoke", "pair_tensors", "port_tensors", "run_litert",
           "save_dump", "load_dump", "OP_NAMES"]

# BuiltinOperator codes 0..209 of the TFLite schema, in order (schema.fbs of LiteRT 2.3)
OP_NAMES = """ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE
EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D
LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 RESHAPE
RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM
EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE
MEAN SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT
LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG PADV2 GREATER
GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG
SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND
LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE
RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N
GATHER_ND COS WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE
NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL
PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL COMPLEX_ABS HASHTABLE
HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE
ASSIGN_VARIABLE BROADCAST_ARGS RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU
DYNAMIC_UPDATE_SLICE RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2
UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT STABLEHLO_LOGISTIC STABLEHLO_ADD STABLEHLO_DIVIDE
STABLEHLO_MULTIPLY STABLEHLO_MAXIMUM STABLEHLO_RESHAPE STABLEHLO_CLAMP STABLEHLO_CONCATENATE
STABLEHLO_BROADCAST_IN_DIM STABLEHLO_CONVOLUTION STABLEHLO_SLICE STABLEHLO_CUSTOM_CALL STABLEHLO_REDUCE
STABLEHLO_ABS STABLEHLO_AND STABLEHLO_COSINE STABLEHLO_EXPONENTIAL STABLEHLO_FLOOR STABLEHLO_LOG
STABLEHLO_MINIMUM STABLEHLO_NEGATE STABLEHLO_OR STABLEHLO_POWER STABLEHLO_REMAINDER STABLEHLO_RSQRT
STABLEHLO_SELECT STABLEHLO_SUBTRACT STABLEHLO_TANH STABLEHLO_SCATTER STABLEHLO_COMPARE STABLEHLO_CONVERT
STABLEHLO_DYNAMIC_SLICE STABLEHLO_DYNAMIC_UPDATE_SLICE STABLEHLO_PAD STABLEHLO_IOTA STABLEHLO_DOT_GENERAL
STABLEHLO_REDUCE_WINDOW STABLEHLO_SORT STABLEHLO_WHILE STABLEHLO_GATHER STABLEHLO_TRANSPOSE DILATE
STABLEHLO_RNG_BIT_GENERATOR REDUCE_WINDOW STABLEHLO_COMPOSITE STABLEHLO_SHIFT_LEFT STABLEHLO_CBRT
STABLEHLO_CASE""".split()
TENSOR_TYPES = ("float32 float16 int32 uint8 int64 string bool int16 complex64 int8 float64 complex128 "
                "uint64 resource variant uint32 uint16 int4").split()
RUNTIMES = ("ai_edge_litert", "tflite_runtime")
ACTIVATIONS = ("", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")
# the slot of fused_activation_function in the options table of the ops that have one
_FUSED_SLOT = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 4, "FULLY_CONNECTED": 0, "ADD": 0, "MUL": 0, "SUB": 0,
               "DIV": 0, "CONCATENATION": 1}


# ---------------------------------------------------------------------------------------------
# the flatbuffer: tables are found through vtables, every offset checked against the file size
# ---------------------------------------------------------------------------------------------

class _Buf:
    """Little-endian reads from a flatbuffer; any offset outside the bytes raises ValueError."""

    def __init__(self, data):
        self.data = data

    def num(self, fmt, pos):
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise ValueError(f"offset {pos} outside the file ({len(self.data)} bytes)")
        return struct.unpack_from("<" + fmt, self.data, pos)[0]

    def ref(self, pos):
        """Follow the unsigned offset stored at ``pos``."""
        return pos + self.num("I", pos)

    def field(self, table, slot):
        """Absolute position of field ``slot`` of the table at ``table``, or None if absent."""
        vtable = table - self.num("i", table)
        at = 4 + 2 * slot
        if at + 2 > self.num("H", vtable):
            return None
        off = self.num("H", vtable + at)
        return table + off if off else None

    def scalar(self, table, slot, fmt, default=0):
        pos = self.field(table, slot)
        return default if pos is None else self.num(fmt, pos)

    def vector(self, table, slot, item=4):
        """(start, length) of a vector field; (0, 0) if absent."""
        pos = self.field(table, slot)
        if pos is None:
            return 0, 0
        start = self.ref(pos)
        n = self.num("I", start)
        if start + 4 + n * item > len(self.data):
            raise ValueError(f"vector of {n} items at {start} runs past the end of the file")
        return start + 4, n

    def tables(self, table, slot):
        start, n = self.vector(table, slot)
        return [self.ref(start + 4 * i) for i in range(n)]

    def ints(self, table, slot, fmt="i"):
        start, n = self.vector(table, slot, struct.calcsize(fmt))
        return list(struct.unpack_from(f"<{n}{fmt}", self.data, start)) if n else []

    def string(self, table, slot):
        start, n = self.vector(table, slot, 1)
        return bytes(self.data[start:start + n]).decode("utf-8", "replace") if n else ""


@dataclass
class Tensor:
    index: int
    name: str
    shape: list
    dtype: str
    buffer: int = 0     # index into the model's buffers (0: no data, an activation)


@dataclass
class Operator:
    op: str             # builtin operator name (or "CUSTOM:<code>")
    version: int
    inputs: list        # tensor indices (-1: an omitted optional input)
    outputs: list
    activation: str = ""    # a fused activation ("RELU", "RELU6", ...) applied to the outputs, if any


@dataclass
class Facts:
    """What a .tflite file needs, read from the file alone.

    op_codes        [(name, version)] as the file lists them (one per kernel the file needs)
    subgraphs       [{"name", "tensors": [Tensor], "operators": [Operator] (execution order),
                    "inputs", "outputs": tensor indices}]
    signatures      {key: {"subgraph": i, "inputs": {name: tensor}, "outputs": {name: tensor}}}
    metadata        {name: text} of the small metadata buffers (min_runtime_version, ...)
    """
    path: str
    size: int
    schema_version: int
    op_codes: list
    subgraphs: list
    signatures: dict
    metadata: dict = field(default_factory=dict)

    @property
    def min_runtime_version(self):
        """The converter's own statement of the oldest runtime that can run the file (or None)."""
        return self.metadata.get("min_runtime_version") or None

    @property
    def tensors(self):
        return [t for g in self.subgraphs for t in g["tensors"]]

    @property
    def max_rank(self):
        return max((len(t.shape) for t in self.tensors), default=0)

    def tensors_of_rank(self, rank):
        return [t for t in self.tensors if len(t.shape) == rank]

    def summary(self):
        """A JSON-safe dict: the facts a target cares about (written next to a converted file)."""
        top = self.tensors_of_rank(self.max_rank)
        sig = next(iter(self.signatures.values()), None)
        g = self.subgraphs[sig["subgraph"] if sig else 0] if self.subgraphs else {"tensors": [], "operators": []}
        return {
            "file": os.path.basename(self.path), "bytes": self.size,
            "max_tensor_rank": self.max_rank,
            "tensors_of_max_rank": len(top),
            "example_of_max_rank": {"name": top[0].name, "shape": top[0].shape} if top else None,
            "op_codes": [f"{n} v{v}" for n, v in self.op_codes],
            "min_runtime_version": self.min_runtime_version,
            "num_tensors": len(g["tensors"]), "num_operators": len(g["operators"]),
            "inputs": {n: g["tensors"][i].shape for n, i in (sig or {}).get("inputs", {}).items()},
            "outputs": {n: g["tensors"][i].shape for n, i in (sig or {}).get("outputs", {}).items()},
        }


def _version(text):
    """'2.11' / '2.5.0' -> (2, 11, 0) / (2, 5, 0) for ordering; ValueError if not dotted integers."""
    parts = [int(p) for p in str(text).strip().split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def _op_name(buf, oc):
    # builtin_code (int32, slot 3) replaced deprecated_builtin_code (int8, slot 0) at code 127; a
    # reader takes the larger of the two, as TFLite's GetBuiltinCode does
    code = max(buf.scalar(oc, 3, "i"), buf.scalar(oc, 0, "b"))
    if code == 32:                                                   # CUSTOM
        return "CUSTOM:" + buf.string(oc, 1)
    return OP_NAMES[code] if 0 <= code < len(OP_NAMES) else f"BUILTIN_{code}"


def _activation(buf, op, name):
    """The fused activation of an operator ("" for none): builtin_options (slot 4) is a table whose
    layout depends on the op; only the ops of _FUSED_SLOT are read."""
    pos = buf.field(op, 4)
    if name not in _FUSED_SLOT or pos is None:
        return ""
    act = buf.scalar(buf.ref(pos), _FUSED_SLOT[name], "b")
    return ACTIVATIONS[act] if 0 <= act < len(ACTIVATIONS) else f"ACT{act}"


def _buffer_bytes(buf, table):
    """Bytes of a Buffer table: inline data, or (large models) ``size`` bytes at file ``offset``."""
    start, n = buf.vector(table, 0, 1)
    if n:
        return bytes(buf.data[start:start + n])
    offset, size = buf.scalar(table, 1, "Q"), buf.scalar(table, 2, "Q")
    if offset > 1 and offset + size <= len(buf.data):
        return bytes(buf.data[offset:offset + size])
    return b""


def _parse(data, path):
    buf = _Buf(data)
    if len(data) < 8 or bytes(data[4:8]) != b"TFL3":
        raise ValueError("no TFL3 file identifier")
    model = buf.ref(0)
    codes = [(_op_name(buf, oc), buf.scalar(oc, 2, "i", 1)) for oc in buf.tables(model, 1)]
    subgraphs = []
    for g in buf.tables(model, 2):
        tensors = []
        for i, t in enumerate(buf.tables(g, 0)):
            kind = buf.scalar(t, 1, "b")
            tensors.append(Tensor(i, buf.string(t, 3), buf.ints(t, 0),
                                  TENSOR_TYPES[kind] if 0 <= kind < len(TENSOR_TYPES) else f"type{kind}",
                                  buf.scalar(t, 2, "I")))
        ops = []
        for o in buf.tables(g, 3):
            k = buf.scalar(o, 0, "I")
            if k >= len(codes):
                raise ValueError(f"operator uses opcode {k}, the file lists {len(codes)}")
            ops.append(Operator(*codes[k], buf.ints(o, 1), buf.ints(o, 2), _activation(buf, o, codes[k][0])))
        inputs, outputs = buf.ints(g, 1), buf.ints(g, 2)
        for where, idx in [(o.op, o.inputs + o.outputs) for o in ops] + [("the graph", inputs + outputs)]:
            if any(not -1 <= t < len(tensors) for t in idx):
                raise ValueError(f"{where} refers to a tensor index outside the {len(tensors)} tensors")
        subgraphs.append({"name": buf.string(g, 4), "tensors": tensors, "operators": ops,
                          "inputs": inputs, "outputs": outputs})
    buffers = buf.tables(model, 4)
    metadata = {}
    for m in buf.tables(model, 6):
        b = buf.scalar(m, 1, "I")
        raw = _buffer_bytes(buf, buffers[b]) if b < len(buffers) else b""
        if len(raw) <= 256:                                          # small text facts only
            metadata[buf.string(m, 0)] = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    signatures = {}
    for s in buf.tables(model, 7):
        def tmap(slot):
            return {buf.string(tm, 0): buf.scalar(tm, 1, "I") for tm in buf.tables(s, slot)}
        sig = {"subgraph": buf.scalar(s, 4, "I"), "inputs": tmap(0), "outputs": tmap(1)}
        if sig["subgraph"] >= len(subgraphs) or any(
                t >= len(subgraphs[sig["subgraph"]]["tensors"]) for t in [*sig["inputs"].values(), *sig["outputs"].values()]):
            raise ValueError("a signature refers to a subgraph or tensor the file does not have")
        signatures[buf.string(s, 2)] = sig
    return Facts(os.fspath(path), len(data), buf.scalar(model, 0, "I"), codes, subgraphs, signatures, metadata)


def read(path):
    """A .tflite file -> Facts. Raises BundleError naming the file if it is missing or not a
    readable TFLite flatbuffer (truncated, foreign or corrupted bytes)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BundleError(f"{path}: is a directory, not a .tflite file") from None
    try:
        return _parse(memoryview(data), path)
    except (ValueError, struct.error, IndexError, RecursionError) as e:
        raise BundleError(f"{path}: not a readable .tflite file ({e})") from None


# TFLite releases before 2.12 register TRANSPOSE up to version 5 (rank <= 5) and keep most kernels
# at rank <= 5; the ICME 2024 paper's unfold/fold rewrite exists for them.
_RANK6_RUNTIME = (2, 12, 0)


def fits_runtime(facts, runtime="2.11"):
    """Why the file cannot run on TFLite ``runtime`` (e.g. "2.11"), as a list of reasons; [] if it can.

    Checks: the converter's min_runtime_version <= runtime (a file without it fails: nothing says
    what it needs); and for runtimes before 2.12, no tensor of rank > 5 and no TRANSPOSE version 6."""
    target = _version(runtime)
    reasons = []
    mrv = facts.min_runtime_version
    try:
        needed = None if mrv is None else _version(mrv)
    except ValueError:
        reasons.append(f"the file's min_runtime_version {mrv!r} is not a version number")
        needed = ()
    if mrv is None:
        reasons.append("the file has no min_runtime_version metadata: nothing says which runtime it needs")
    elif needed and needed > target:
        reasons.append(f"the converter's min_runtime_version is {mrv} (> {runtime})")
    if target < _RANK6_RUNTIME:
        for name, version in facts.op_codes:
            if name == "TRANSPOSE" and version >= 6:
                reasons.append(f"TRANSPOSE version {version} (6-D transpose; TFLite < 2.12 has up to version 5)")
        if facts.max_rank > 5:
            big = facts.tensors_of_rank(facts.max_rank)
            reasons.append(f"{len(big)} tensor(s) of rank {facts.max_rank} > 5, e.g. {big[0].name} {big[0].shape}")
    return reasons


# ---------------------------------------------------------------------------------------------
# running a file
# ---------------------------------------------------------------------------------------------

def _interpreter(runtime=None):
    """(module name, Interpreter class, OpResolverType or None) of the first importable runtime."""
    names = RUNTIMES if runtime is None else (runtime,)
    for name in names:
        if name not in RUNTIMES:
            raise BundleError(f"runtime: expected one of {RUNTIMES}, got {name!r}")
        try:
            mod = importlib.import_module(name + ".interpreter")
        except ImportError:
            continue
        return name, mod.Interpreter, getattr(mod, "OpResolverType", None)
    raise BundleError("running a .tflite file needs ai-edge-litert (pip install ai-edge-litert, or "
                      "pip install 'lmref[litert]' for the converter too) or tflite-runtime")


def _runtime_version(name):
    try:
        from importlib.metadata import version
        return version(name.replace("_", "-"))
    except Exception:                     # metadata missing (a source tree): not worth failing for
        return "unknown"


def invoke(path, x, runtime=None, facts=None):
    """Run a .tflite file on ``x`` -> (values {tensor index: array}, outputs {name: array}, info).

    Every tensor the interpreter kept is returned (``experimental_preserve_all_tensors``, builtin
    kernels, no default delegate); outputs are named by the first signature (else by tensor name).
    info: {"runtime": "ai_edge_litert 2.3.0"}. A runtime that refuses the file (an op version it does
    not have, ...) raises BundleError with the runtime's own message."""
    path = os.fspath(path)
    facts = facts or read(path)
    name, Interpreter, Resolver = _interpreter(runtime)
    kwargs = {"experimental_preserve_all_tensors": True}
    if Resolver is not None:
        kwargs["experimental_op_resolver_type"] = Resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")           # "preserve_all_tensors is for debugging"
            it = Interpreter(model_path=path, **kwargs)
            it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        msg = " ".join(str(e).split())
        raise BundleError(f"{name} {_runtime_version(name)} cannot load {path}: {msg}") from None
    inputs = it.get_input_details()
    if len(inputs) != 1:
        raise BundleError(f"{path}: {len(inputs)} inputs; expected one image input")
    want = inputs[0]["dtype"]
    x = np.ascontiguousarray(x, want)
    if list(inputs[0]["shape"]) != list(x.shape):
        raise BundleError(f"{path}: input {inputs[0]['name']!r} has shape {list(inputs[0]['shape'])}, "
                          f"the bundle's input is {list(x.shape)}")
    it.set_tensor(inputs[0]["index"], x)
    it.invoke()
    values = {}
    for d in it.get_tensor_details():
        try:
            a = it.get_tensor(d["index"])
        except ValueError:                            # a tensor without data (an omitted input)
            continue
        if isinstance(a, np.ndarray) and a.dtype.kind in "fiub":
            values[d["index"]] = a.copy()
    sig = next(iter(facts.signatures.values()), None)
    if sig is not None:
        outputs = {n: values[i] for n, i in sig["outputs"].items() if i in values}
    else:
        tensors = facts.subgraphs[0]["tensors"]
        outputs = {tensors[i].name: values[i] for i in facts.subgraphs[0]["outputs"] if i in values}
    return values, outputs, {"runtime": f"{name} {_runtime_version(name)}"}


def save_dump(path, values, outputs, info):
    """Write an invoke() result as one .npz (for a runtime in another Python: tflite-runtime 2.11
    has wheels only for Python <= 3.9): tensors as t<index>, outputs as out:<name>."""
    arrays = {f"t{i}": a for i, a in values.items()}
    arrays.update({f"out:{n}": a for n, a in outputs.items()})
    arrays["info"] = np.array(json.dumps(info))
    np.savez(path, **arrays)


def load_dump(path):
    """The (values, outputs, info) that save_dump wrote."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as z:
            values = {int(k[1:]): z[k] for k in z.files if k.startswith("t") and k[1:].isdigit()}
            outputs = {k[4:]: z[k] for k in z.files if k.startswith("out:")}
            info = json.loads(str(z["info"])) if "info" in z.files else {}
    except (OSError, ValueError, KeyError) as e:
        raise BundleError(f"{path}: not a LiteRT tensor dump ({e})") from None
    return values, outputs, info


# ---------------------------------------------------------------------------------------------
# pairing tensors with bundle ops
# ---------------------------------------------------------------------------------------------

def _module_path(tensor_name):
    """litert-torch tensor name -> the producing module's attribute path, e.g.
    'pkg.AAM/torch.nn.modules.container.Sequential_stages/torch.nn.modules.container.Sequential_2;3'
    -> ('stages', '2'); None if the first location is not a module path (inputs, constants, ...)."""
    first = tensor_name.split(";", 1)[0]
    segments = first.split("/")
    if not all("." in s for s in segments):
        return None
    path = []
    for s in segments[1:]:                               # segments[0] is the root module: no attribute
        cls_attr = s.rsplit(".", 1)[1]
        if "_" not in cls_attr:
            return None
        path.append(cls_attr.split("_", 1)[1])
    return tuple(path)


def _layouts(shape, ref_shape):
    """Ways to read an array of ``shape`` as ``ref_shape``: None (same, up to size-1 axes) and/or
    (0, 3, 1, 2) for an NHWC tensor of an NCHW bundle tensor."""
    out = []
    if [s for s in shape if s != 1] == [s for s in ref_shape if s != 1]:
        out.append(None)
    if len(shape) == 4 and len(ref_shape) == 4 and [shape[0], shape[3], shape[1], shape[2]] == list(ref_shape):
        out.append((0, 3, 1, 2))
    return out


def _arranged(a, axes, ref_shape):
    return _match_shape(a if axes is None else a.transpose(axes), ref_shape)


def _scale_err(a, ref):
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    d = float(np.max(np.abs(a.astype(np.float64) - ref))) if ref.size else 0.0
    return d / scale if scale > 0 else d


# lmref op -> the TFLite ops (or fused activations) that can compute its output last; a tensor
# made by reshapes and transposes counts as the tensor they start from. Ops not listed are not paired.
_COMPUTED_BY = {
    "conv2d": {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "ADD"},
    "linear": {"FULLY_CONNECTED", "BATCH_MATMUL", "ADD"}, "matmul": {"BATCH_MATMUL", "FULLY_CONNECTED"},
    "batch_norm": {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD"},    # folded into the conv
    "group_norm": {"ADD", "MUL"}, "layer_norm": {"ADD", "MUL"}, "instance_norm": {"ADD", "MUL"},
    "relu": {"RELU", "MAXIMUM"}, "relu6": {"RELU6", "MINIMUM"}, "silu": {"MUL"}, "sigmoid": {"LOGISTIC"},
    "tanh": {"TANH"}, "gelu": {"GELU", "MUL"}, "hardswish": {"HARD_SWISH", "MUL"},
    "hardsigmoid": {"MUL", "MINIMUM", "RELU6"}, "softmax": {"SOFTMAX", "DIV"}, "log_softmax": {"LOG_SOFTMAX", "SUB"},
    "interpolate": {"RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"}, "max_pool2d": {"MAX_POOL_2D"},
    "avg_pool2d": {"AVERAGE_POOL_2D"}, "adaptive_avg_pool2d": {"AVERAGE_POOL_2D", "MEAN"},
    "separable_self_attention": {"CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "ADD"},
    "e2p": {"CONV_2D", "ADD"}, "aam_fusion": {"MUL"}, "soft_argmax": {"CONCATENATION", "PACK"},
}
_LAYOUT = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS"}
# data-movement ops: their output is the tensor a layout op writes
_MOVED_BY = {op: _LAYOUT | {"CONCATENATION", "PACK", "SLICE", "STRIDED_SLICE", "GATHER", "DEPTH_TO_SPACE",
                            "SPACE_TO_DEPTH"}
             for op in ("unfold_patches", "fold_patches", "channel_shuffle", "pixel_shuffle", "pixel_unshuffle")}


def _source(t, producer):
    """(kind, tensor) of the op that computed tensor t: back through plain reshapes and transposes;
    kind is the op name, or its fused activation if it has one."""
    op = producer[t]
    while op.op in _LAYOUT and not op.activation and op.inputs and op.inputs[0] in producer:
        t = op.inputs[0]
        op = producer[t]
    return op.activation or op.op, t


def pair_tensors(bundle, facts, values, reference="float64"):
    """{bundle op name: (tensor index, transpose axes or None)} for the bundle's top-level ops whose
    output survives in the converted graph (see the module doc for the rule); each tensor (and the
    computation it comes from) is paired at most once, in execution order."""
    sig = next(iter(facts.signatures.values()), None)
    g = facts.subgraphs[sig["subgraph"] if sig else 0]
    producer = {t: o for o in g["operators"] for t in o.outputs if t >= 0}
    produced = [t for o in g["operators"] for t in o.outputs if t >= 0]          # execution order
    paths = {t: _module_path(g["tensors"][t].name) for t in produced}
    known = {p[:k] for p in paths.values() if p for k in range(1, len(p) + 1)}

    def resolve(scope):
        comps = tuple(scope.split("."))
        return next((comps[k:] for k in range(len(comps)) if comps[k:] in known), None)

    ops = [e for e in bundle.entries if e.kind == "op" and e.parent is None and e.scope]
    module = {e.name: resolve(e.scope) for e in ops}
    claimed = {m for m in module.values() if m}
    pairs, used = {}, set()
    for e in ops:
        m = module[e.name]
        if m is None or e.op not in _COMPUTED_BY and e.op not in _MOVED_BY:
            continue
        inner = [c for c in claimed if len(c) > len(m) and c[:len(m)] == m]          # sub-scopes lmref has
        ref = bundle.array(e.id, reference)
        best = None
        for t in produced:
            p = paths[t]
            if not p or p[:len(m)] != m or any(p[:len(c)] == c for c in inner) or t not in values:
                continue
            if e.op in _MOVED_BY:
                kind, key = (producer[t].activation or producer[t].op), t
                fits = kind in _MOVED_BY[e.op]
            else:
                kind, key = _source(t, producer)
                fits = kind in _COMPUTED_BY[e.op]
            if not fits or key in used:
                continue
            for axes in _layouts(values[t].shape, ref.shape):
                err = _scale_err(_arranged(values[t], axes, ref.shape), ref)
                if best is None or err <= best[0]:
                    best = (err, t, axes, key)
        if best is not None:
            pairs[e.name] = best[1:3]
            used.add(best[3])
    return pairs


def port_tensors(bundle, facts, values, outputs, mapping=None, auto_map=True, reference="float64"):
    """A run's tensors under the bundle's names -> ({bundle name: array}, {bundle name: pair info}).

    outputs are kept under their own names; ``mapping`` ({bundle name: tensor name or (name, axes)},
    or a mapping file) pairs tensors by hand, ``auto_map`` adds :func:`pair_tensors`'s pairs."""
    if isinstance(mapping, (str, os.PathLike)):
        mapping = read_mapping(mapping)
    elif mapping:
        mapping = _parse_mapping({k: v if isinstance(v, str) else {"name": v[0], "transpose": v[1] and list(v[1])}
                                  for k, v in mapping.items()})
    sig = next(iter(facts.signatures.values()), None)
    tensors = facts.subgraphs[sig["subgraph"] if sig else 0]["tensors"]
    by_name = {}
    for t in tensors:
        by_name.setdefault(t.name, t.index)
    pairs = {}
    for bname, (tname, axes) in (mapping or {}).items():
        if tname not in by_name:
            raise BundleError(f"mapping: the .tflite file has no tensor named {tname!r}")
        pairs[bname] = (by_name[tname], tuple(axes) if axes else None, "map")
    if auto_map:
        for bname, (t, axes) in pair_tensors(bundle, facts, values, reference).items():
            pairs.setdefault(bname, (t, axes, "auto"))
    out = dict(outputs)
    info = {}
    for bname, (t, axes, how) in pairs.items():
        if bname not in bundle:
            raise BundleError(f"mapping names a tensor the bundle does not have: {bname!r}")
        if t not in values:
            raise BundleError(f"{tensors[t].name!r}: the runtime kept no value for this tensor")
        a = values[t] if axes is None else values[t].transpose(axes)
        out[bname] = a
        info[bname] = {"tensor": tensors[t].name, "index": t, "transpose": list(axes) if axes else None,
                       "how": how}
    return out, info


def run_litert(model, bundle, mapping=None, auto_map=True, runtime=None):
    """Run a .tflite file on the bundle's float32 input -> ({bundle name: array}, pairs, facts, info),
    ready for ``lmref.bundle.compare``: the signature outputs under their names, and the paired
    intermediate tensors (``pairs``: {bundle name: {"tensor", "index", "transpose", "how"}})."""
    facts = read(model)
    values, outputs, info = invoke(model, bundle.array("input", "float32"), runtime, facts)
    out, pairs = port_tensors(bundle, facts, values, outputs, mapping, auto_map)
    return out, pairs, facts, info


def describe(facts, pairs=None, info=None, bundle=None):
    """One or two lines for a person: the file's static facts and what was paired."""
    ops = ", ".join(f"{n} v{v}" for n, v in facts.op_codes if v > 1)
    line = (f"{os.path.basename(facts.path)}: max tensor rank {facts.max_rank}, min runtime {facts.min_runtime_version}, "
            f"{len(facts.op_codes)} op codes (versions > 1: {ops or 'none'})")
    if pairs is not None:
        n_ops = sum(e.kind == "op" and e.parent is None for e in bundle.entries) if bundle is not None else None
        line += (f"\n{(info or {}).get('runtime', 'LiteRT')}: {len(pairs)} intermediate tensors paired with "
                 f"bundle ops{f' (of {n_ops} top-level ops)' if n_ops else ''}, outputs by signature name")
    return line


# ---------------------------------------------------------------------------------------------
# command line: a runtime in another Python (tflite-runtime 2.11 needs Python <= 3.9) dumps its tensors
# ---------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lmref.ports.litert",
                                 description="Static facts of a .tflite file, or run it and dump every tensor.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("facts", help="print the static facts (JSON) and the check against --runtime")
    f.add_argument("model")
    f.add_argument("--runtime-version", default="2.11", help="TFLite version to check against (default 2.11)")
    d = sub.add_parser("dump", help="run the file on X.npy and write every tensor to OUT.npz")
    d.add_argument("model")
    d.add_argument("input", help="X.npy: the model input (a bundle's input.f32.npy)")
    d.add_argument("out", help="OUT.npz")
    d.add_argument("--runtime", choices=RUNTIMES)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "facts":
            facts = read(args.model)
            reasons = fits_runtime(facts, args.runtime_version)
            print(json.dumps({**facts.summary(), f"fits_tflite_{args.runtime_version}": not reasons,
                              "reasons": reasons}, indent=1))
            return 1 if reasons else 0
        x = np.load(args.input, allow_pickle=False)
        values, outputs, info = invoke(args.model, x, args.runtime)
        save_dump(args.out, values, outputs, info)
        print(f"{info['runtime']}: ran {args.model}, {len(values)} tensors -> {args.out}")
        return 0
    except (BundleError, OSError, ValueError) as e:
        print(f"lmref: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
