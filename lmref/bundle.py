"""Golden bundles: every op output of one lmref forward pass, written so that a port (ONNX, TFLite,
C, an NPU) can be checked against it op by op.

    b = record("student.safetensors", x)          # x: [B, C, H, W] float64, normalised model input
    write(b, "student.bundle")                     # a directory, or "student.npz" for one file
    b = load("student.bundle")
    b.array("backbone.stem:silu", "float64")       # any traced op output, input or final output
    report = compare(b, {"backbone.stem:silu": port_value, "landmarks": port_landmarks})
    print(format_report(report)); report.ok, report.first_failure

A bundle holds the model input, the output of every traced op (named by its scope, see
``lmref.trace``), the model's final outputs, and the weights' manifest, each in float64 and float32.
Every tensor comes from the plain op definitions of ``lmref.ops`` and the models' own blocks: a trace
never runs the fast layer (``lmref.fast``), whether it is on or off around it, and the manifest says
so (``"computed_by": "definitions"``). The two dtypes are two runs of the same weights (params
cast to float64 / float32, the float32 input is the float64 input rounded). The format is described
for readers in other languages in docs/golden-bundle.md: a set of ``.npy`` files plus two JSON files,
either in a directory or as the members of an uncompressed zip (``.npz``, readable with
``np.load(path, allow_pickle=False)``).

Comparison: each bundle tensor ``ref`` (float64 by default: the reference) against the port's
tensor ``val`` of the same name (or the name a mapping gives):
    max_abs = max |val - ref|,  scale = max |ref|,  err = max_abs / scale  (scale-relative error)
    max_rel = max |val - ref| / max(|ref|, 1e-3 scale)   (elementwise, floored near zero)
    cosine  = <val, ref> / (|val| |ref|)
    pass  iff  all finite and  max_abs <= atol + rtol * scale
The scale-relative test is used because an elementwise relative test fails on values that cross
zero (every activation map has some), while an absolute test means nothing without the scale.
Ops are checked in execution order; the first failing one is where a port diverges.

Reading is bounded: a ``.npy`` header (shape and dtype) is read and checked before its data, so a
tensor larger than ``MAX_TENSOR_BYTES``, larger than the bytes its file holds (a header claiming
10^10 elements), or larger than what is left of a read's ``max_bytes`` budget (a zip bomb of many
members) is refused before any memory is allocated for it; member paths named in ``index.json`` must
stay inside the bundle. Written files and directories get the permissions the umask gives.

The onnxruntime path (optional: needs ``onnx`` and ``onnxruntime``): ``run_onnx`` feeds the
bundle's input to an ONNX graph, exposes the intermediate values a mapping names (or that
``suggest_onnx_mapping`` finds by module path) as extra graph outputs, and returns them under the
bundle's names, ready for ``compare``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import __version__
from ._files import publish_mode
from .trace import trace

__all__ = ["BundleError", "Entry", "Bundle", "record", "write", "load", "random_input",
           "read_tensors", "read_npy", "read_mapping", "compare", "check_tolerance", "Report", "format_report", "DEFAULT_TOL",
           "expose_onnx_values", "suggest_onnx_mapping", "run_onnx", "FORMAT", "VERSION"]

FORMAT = "lmref-golden-bundle"
VERSION = 1
DTYPES = ("float64", "float32")
COMPUTED_BY = "definitions"   # manifest["computed_by"]: the plain op definitions (lmref.trace never runs lmref.fast)
_SUFFIX = {"float64": "f64", "float32": "f32"}
MAX_TENSOR_BYTES = 1 << 30      # one tensor of a bundle or a port: 1 GiB (a 256x256 student's largest is 8 MiB)
MAX_READ_BYTES = 4 << 30        # all tensors of one read_tensors call, unless max_bytes says otherwise
MAX_JSON_BYTES = 64 << 20       # index.json, manifest.json, a mapping file
_MEMBER = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")   # a member path: relative, plain names

# Default tolerances by the dtype the port computed in (scale-relative, see the module doc).
# float32: measured on the MobileViT-v2 student (docs/golden-bundle.md): lmref's own float32 run and
# onnxruntime stay below ~2e-5 of each tensor's scale over the whole network; 1e-4 leaves a margin
# for other accumulation orders while a real bug (a wrong weight, a swapped axis) gives errors of
# 1e-2 and more. float64: near machine precision, as the parity tests.
DEFAULT_TOL = {"float32": {"rtol": 1e-4, "atol": 1e-6}, "float64": {"rtol": 1e-9, "atol": 1e-12},
               "float16": {"rtol": 1e-2, "atol": 1e-3}}


class BundleError(ValueError):
    """A bundle, tensor file or mapping that cannot be used: says which and why."""


@dataclass
class Entry:
    """One tensor of a bundle.

    id      file-safe identifier: "input", "op0000", "op0001", ..., "output_<key>"
    name    "input"; the op's traced name (``backbone.stem:silu``, ``head.e2p:aam_fusion/e2p``; a
            tuple-valued op's parts get ``[0]``, ``[1]``); or the model output's key (``landmarks``)
    kind    "input" | "op" | "output"
    op      op name (kind "op"), else None
    scope   the scope the op ran in ("" at top level), else None
    parent  name of the op this op was called inside, else None
    shape   list of ints
    input_shapes, attrs   the op's array-argument shapes and other arguments (JSON-safe)
    files   {"float64": member path, "float32": member path}
    """
    id: str
    name: str
    kind: str
    shape: list
    files: dict
    op: str = None
    scope: str = None
    parent: str = None
    input_shapes: list = field(default_factory=list)
    attrs: dict = field(default_factory=dict)

    def to_json(self):
        d = dataclasses.asdict(self)
        if self.kind != "op":
            for k in ("op", "scope", "parent", "input_shapes", "attrs"):
                d.pop(k)
        return d


class Bundle:
    """manifest (dict), entries (list of Entry, in execution order), and the arrays.
    ``array(name_or_id, dtype)`` returns one tensor; arrays are read from disk on first use."""

    def __init__(self, manifest, entries, arrays=None, reader=None, path=None):
        self.manifest = manifest
        self.entries = list(entries)
        self._arrays = dict(arrays or {})            # (id, dtype) -> ndarray
        self._reader = reader                         # member path -> ndarray
        self.path = path
        self._by_name = {}
        for e in self.entries:
            for key in (e.name, e.id):
                if key in self._by_name and self._by_name[key] is not e:
                    raise BundleError(f"bundle: name {key!r} is used by two entries")
                self._by_name[key] = e

    def __len__(self):
        return len(self.entries)

    def __contains__(self, name):
        return name in self._by_name

    def entry(self, name):
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"bundle has no tensor named {name!r}") from None

    def names(self, kind=None):
        return [e.name for e in self.entries if kind is None or e.kind == kind]

    def array(self, name, dtype="float64"):
        e = self.entry(name)
        if dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {DTYPES}, got {dtype!r}")
        key = (e.id, dtype)
        if key not in self._arrays:
            if self._reader is None:
                raise BundleError(f"bundle: no {dtype} array for {e.name!r}")
            self._arrays[key] = self._reader(e.files[dtype], (e.shape, dtype))   # shape checked before reading
        return self._arrays[key]

    @property
    def input(self):
        return self.array("input", "float64")

    def outputs(self, dtype="float64"):
        return {e.name: self.array(e.id, dtype) for e in self.entries if e.kind == "output"}

    def __repr__(self):
        arch = self.manifest.get("model", {}).get("architecture")
        return f"Bundle({arch!r}, {len(self.entries)} tensors{', ' + str(self.path) if self.path else ''})"


# ---------------------------------------------------------------------------------------------
# recording
# ---------------------------------------------------------------------------------------------

def random_input(manifest, seed=0, batch=1):
    """A reproducible input for a model: pixels drawn uniformly from 0..255 (NumPy's PCG64 with
    ``seed``), normalised as the manifest's input spec says -> float64 [batch, C, H, W]."""
    spec = manifest["input"]
    h, w = spec["size"]
    c = spec["channels"]
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(batch, c, h, w)).astype(np.float64)
    mean = np.asarray(spec["mean"], np.float64)[None, :, None, None]
    std = np.asarray(spec["std"], np.float64)[None, :, None, None]
    return (pixels / 255.0 - mean) / std


def _json_safe(v):
    if isinstance(v, (str, bool, int, float)) or v is None:
        return v if not (isinstance(v, float) and not np.isfinite(v)) else repr(v)
    if isinstance(v, np.generic):
        return _json_safe(v.item())
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    return repr(v)


def _output_dict(out):
    """A model's output -> {name: ndarray}: a dict keeps its keys; one array is "output"; a tuple or
    list gives "output0", "output1", ... (the names torch_impl.export.export_onnx gives)."""
    if isinstance(out, dict):
        return {k: v for k, v in out.items() if isinstance(v, np.ndarray)}
    if isinstance(out, np.ndarray):
        return {"output": out}
    if isinstance(out, (tuple, list)):
        return {f"output{i}": v for i, v in enumerate(out) if isinstance(v, np.ndarray)}
    raise BundleError(f"model output of type {type(out).__name__} cannot be stored")


def _run(model, x):
    """One traced forward -> (list of (name, op, scope, parent, input_shapes, attrs, array), outputs)."""
    with trace() as t:
        out = model(x)
    rows = []
    for r in t:
        parts = list(r.output) if isinstance(r.output, (tuple, list)) else [r.output]
        head = r.name.rsplit("/", 1)
        parent = head[0] if len(head) == 2 else None
        local = head[-1]
        scope = local.split(":", 1)[0] if ":" in local else (parent + "/" if parent else "")
        for i, a in enumerate(parts):
            if not isinstance(a, np.ndarray):
                continue
            name = r.name if len(parts) == 1 else f"{r.name}[{i}]"
            rows.append((name, r.op, scope, parent, r.inputs, _json_safe(r.attrs), a))
    return rows, _output_dict(out)


def _first_non_finite(run, dtype):
    """Raise BundleError naming the first traced op (execution order) whose output holds NaN or inf:
    a golden reference of non-finite values would hide an overflow instead of showing where it is."""
    rows, outputs = run
    named = [(r[0], r[1], r[6]) for r in rows] + [(k, None, a) for k, a in outputs.items()]
    for name, opname, a in named:
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise BundleError(f"the {dtype} run gives NaN or inf first at {name}"
                              f"{' (' + opname + ')' if opname else ''}: this input overflows the model "
                              f"in {dtype}; no bundle written")


def _safe_id(key):
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)


def record(model, x, source=None, weights_path=None):
    """Run ``model`` on ``x`` in float64 and float32 under ``lmref.trace`` -> Bundle (in memory).

    model: a path to an lmref weights file, or a ``lmref.weights.Model`` (its params are cast).
    x: [B, C, H, W] real array, already normalised as the model's manifest["input"] says.
    source: free text (or a dict) saying where x came from; stored in the manifest."""
    from . import weights
    if isinstance(model, (str, os.PathLike)):
        weights_path = os.fspath(model)
        tensors, wmanifest = weights.load(weights_path)
        params = tensors
    elif isinstance(model, weights.Model):
        wmanifest, params = model.manifest, model.params
    else:
        raise TypeError(f"model: expected a weights path or an lmref.weights.Model, got {type(model).__name__}")
    x = np.asarray(x)
    if x.ndim != 4 or x.dtype.kind not in "fiu":
        raise BundleError(f"input: expected a real [B, C, H, W] array, got {x.dtype} {list(x.shape)}")
    x64 = x.astype(np.float64)
    if not np.all(np.isfinite(x64)):
        raise BundleError("input: contains NaN or inf")
    big = float(np.max(np.abs(x64))) if x64.size else 0.0
    if big > float(np.finfo(np.float32).max):
        raise BundleError(f"input: values up to {big:.3g} do not fit float32 (max "
                          f"{np.finfo(np.float32).max:.3g}); the bundle's float32 run needs them")
    runs = {}
    for dt in DTYPES:
        m = weights.Model(params, wmanifest, dtype=np.dtype(dt))
        with np.errstate(all="ignore"):               # an overflow is reported by _first_non_finite
            runs[dt] = _run(m, x64.astype(dt))
        _first_non_finite(runs[dt], dt)
    (rows64, out64), (rows32, out32) = runs["float64"], runs["float32"]
    names64 = [r[0] for r in rows64]
    if names64 != [r[0] for r in rows32] or list(out64) != list(out32):
        raise BundleError("the float64 and float32 runs traced different ops; cannot pair them")

    entries, arrays = [], {}

    def add(entry, a64, a32):
        entries.append(entry)
        arrays[(entry.id, "float64")] = np.ascontiguousarray(a64, np.float64)
        arrays[(entry.id, "float32")] = np.ascontiguousarray(a32, np.float32)

    def files(i):
        return {dt: f"tensors/{i}.{_SUFFIX[dt]}.npy" for dt in DTYPES}

    add(Entry("input", "input", "input", list(x64.shape), {dt: f"input.{_SUFFIX[dt]}.npy" for dt in DTYPES}),
        x64, x64.astype(np.float32))
    for k, (r64, r32) in enumerate(zip(rows64, rows32)):
        name, opname, scope, parent, inputs, attrs, a64 = r64
        if a64.shape != r32[6].shape:
            raise BundleError(f"{name}: float64 shape {a64.shape} != float32 shape {r32[6].shape}")
        eid = f"op{k:04d}"
        add(Entry(eid, name, "op", list(a64.shape), files(eid), op=opname, scope=scope, parent=parent,
                  input_shapes=inputs, attrs=attrs), a64, r32[6])
    taken = set(names64) | {"input"}
    for key, a64 in out64.items():
        if key in taken:
            raise BundleError(f"model output {key!r} has the same name as a traced op")
        eid = "output_" + _safe_id(key)
        add(Entry(eid, key, "output", list(a64.shape), files(eid)), a64, out32[key])

    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "lmref_version": __version__,
        "numpy_version": np.__version__,
        "model": wmanifest,
        "weights": _weights_info(weights_path),
        "input_source": source,
        "dtypes": list(DTYPES),
        "num_ops": len(rows64),
        "computed_by": COMPUTED_BY,
    }
    return Bundle(manifest, entries, arrays)


def _weights_info(path):
    if path is None:
        return None
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {"file": os.path.basename(path), "sha256": digest}


# ---------------------------------------------------------------------------------------------
# writing and reading
# ---------------------------------------------------------------------------------------------

def _npy_bytes(a):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _index(bundle):
    return {"format": FORMAT, "version": VERSION, "dtypes": list(DTYPES),
            "entries": [e.to_json() for e in bundle.entries]}


def _index_json(bundle):
    """index.json text: one entry per line, so it reads (and greps) like a table."""
    idx = _index(bundle)
    head = json.dumps({k: v for k, v in idx.items() if k != "entries"}, allow_nan=False)[:-1]
    lines = [json.dumps(e, allow_nan=False) for e in idx["entries"]]
    return head + ', "entries": [\n' + ",\n".join(lines) + "\n]}\n"


def _index_tsv(bundle):
    """index.tsv: the same entries for readers without a JSON parser, one tab-separated line each:
    id, kind, name, shape (comma-separated, empty for a scalar), float64 file, float32 file."""
    lines = ["id\tkind\tname\tshape\tfloat64\tfloat32"]
    for e in bundle.entries:
        lines.append("\t".join([e.id, e.kind, e.name, ",".join(str(s) for s in e.shape),
                                e.files["float64"], e.files["float32"]]))
    return "\n".join(lines) + "\n"


def _members(bundle):
    """(member path, bytes) of the whole bundle, the text files first."""
    yield "manifest.json", (json.dumps(bundle.manifest, indent=1, allow_nan=False) + "\n").encode("utf-8")
    yield "index.json", _index_json(bundle).encode("utf-8")
    yield "index.tsv", _index_tsv(bundle).encode("utf-8")
    for e in bundle.entries:
        for dt in DTYPES:
            a = bundle.array(e.id, dt)
            yield e.files[dt], _npy_bytes(a.astype(a.dtype.newbyteorder("<")))


def write(bundle, path):
    """Write ``bundle`` to ``path``: a single uncompressed zip if the name ends in ``.npz``, else a
    directory. Written under a temporary name and moved into place, so a failure leaves nothing at
    ``path``; an existing ``path`` is an error (never merged or overwritten)."""
    path = os.fspath(path)
    if os.path.exists(path):
        raise BundleError(f"{path}: already exists; remove it or choose another name")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise BundleError(f"{path}: parent directory {parent} does not exist")
    if path.endswith(".npz"):
        fd, tmp = tempfile.mkstemp(prefix=".lmref-bundle-", suffix=".npz.tmp", dir=parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
                for member, data in _members(bundle):
                    z.writestr(member, data)
            publish_mode(tmp)                               # mkstemp made it 0600
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    else:
        tmp = tempfile.mkdtemp(prefix=".lmref-bundle-", dir=parent)
        try:
            for member, data in _members(bundle):
                target = os.path.join(tmp, *member.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as f:
                    f.write(data)
            publish_mode(tmp)                               # mkdtemp made it 0700
            os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    bundle.path = path
    return path


class _Budget:
    """Bytes a read may still allocate for tensors (``max_bytes``), shared by its members."""

    def __init__(self, max_bytes):
        self.left = MAX_READ_BYTES if max_bytes is None else int(max_bytes)

    def take(self, nbytes, where):
        if nbytes > self.left:
            raise BundleError(f"{where}: {nbytes:,} more bytes would exceed this read's limit (max_bytes "
                              f"{self.left:,} left); a zip bomb, or pass a larger max_bytes")
        self.left -= nbytes


def _npy_header(f, size, where):
    """Read a .npy header from the file object f (``size`` bytes in all) -> (shape, fortran, dtype,
    nbytes), checked: a numeric dtype, and a data part the file really holds. Nothing of the data is
    read, so a header claiming 10^10 elements costs nothing. The file's content is never echoed."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"format version {version}")
        shape, fortran, dtype = reader(f)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        msg = str(e) if "version" in str(e) else "no valid .npy header"
        raise BundleError(f"{where}: not a .npy array ({msg})") from None
    if dtype.kind not in "fiub" or dtype.hasobject or dtype.fields is not None:
        raise BundleError(f"{where}: dtype {dtype} is not a plain numeric dtype")
    nbytes = int(np.prod(shape, dtype=object) or 0) * dtype.itemsize if shape else dtype.itemsize
    if nbytes > size - f.tell():
        raise BundleError(f"{where}: the header says {dtype} {list(shape)} ({nbytes:,} bytes) but the file "
                          f"holds {max(size - f.tell(), 0):,} bytes of data: truncated or forged")
    if nbytes > MAX_TENSOR_BYTES:
        raise BundleError(f"{where}: {dtype} {list(shape)} is {nbytes:,} bytes, more than the "
                          f"{MAX_TENSOR_BYTES:,} a tensor may have (MAX_TENSOR_BYTES)")
    return tuple(shape), fortran, dtype, nbytes


def _read_npy(f, size, where, budget=None, expect=None):
    """One array from the .npy in file object f of ``size`` bytes. expect: (shape, dtype) the array
    must have (checked from the header, before reading the data); budget: a _Budget to charge."""
    shape, fortran, dtype, nbytes = _npy_header(f, size, where)
    if expect is not None and (list(shape) != list(expect[0]) or dtype != np.dtype(expect[1])):
        raise BundleError(f"{where}: holds {dtype} {list(shape)}, index.json says {expect[1]} {list(expect[0])}")
    if budget is not None:
        budget.take(nbytes, where)
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise BundleError(f"{where}: truncated: {len(data):,} of {nbytes:,} data bytes")
    a = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return a.astype(dtype.newbyteorder("="), copy=True)                  # own, writable, native order


def read_npy(path, max_bytes=MAX_TENSOR_BYTES):
    """One .npy file -> ndarray, its header checked before the data is read (a numeric dtype, data
    the file really holds, at most ``max_bytes``); never unpickles, never echoes the file's bytes."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return _read_npy(f, os.fstat(f.fileno()).st_size, path, _Budget(max_bytes))
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BundleError(f"{path}: is a directory, not a .npy file") from None


def _plain_member(member):
    return isinstance(member, str) and bool(_MEMBER.fullmatch(member)) and ".." not in member.split("/")


def _member_path(root, member, strict=True):
    """The file of a directory's member, which must stay inside the directory: (strict, for paths
    read from index.json) a relative path of plain names, no '..', no absolute path; and, symlinks
    resolved, a file under root."""
    if strict and not _plain_member(member):
        raise BundleError(f"{root}: member path {str(member)[:100]!r} is not a plain relative path inside the bundle")
    target = os.path.join(root, *member.split("/"))
    real, base = os.path.realpath(target), os.path.realpath(root)
    if os.path.commonpath([real, base]) != base:
        raise BundleError(f"{root}: member {member!r} leads outside the bundle (a symlink to {real!r})")
    return target


class _Opener:
    """Members of a bundle directory or zip: ``bytes(member, limit)`` for the JSON files,
    ``array(member, expect)`` for a .npy member, both with their sizes checked before reading.
    strict: member names come from an index and must be plain relative paths (``_member_path``)."""

    def __init__(self, path, strict=True):
        self.path, self.strict = path, strict
        self.zip = None
        if not os.path.isdir(path):
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError):
                raise BundleError(f"{path}: not a bundle directory or .npz (zip) file") from None

    @contextlib.contextmanager
    def open(self, member):
        """-> (file object, size in bytes) of a member."""
        if self.zip is None:
            target = _member_path(self.path, member, self.strict)
            try:
                with open(target, "rb") as f:
                    yield f, os.fstat(f.fileno()).st_size
            except (FileNotFoundError, IsADirectoryError):
                raise BundleError(f"{self.path}: missing {member}") from None
            return
        if self.strict and not _plain_member(member):
            raise BundleError(f"{self.path}: member path {str(member)[:100]!r} is not a plain relative path")
        try:
            info = self.zip.getinfo(member)
        except KeyError:
            raise BundleError(f"{self.path}: missing member {member}") from None
        try:
            with self.zip.open(info) as f:
                yield f, info.file_size
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as e:
            raise BundleError(f"{self.path}: member {member} is corrupted ({e})") from None

    def bytes(self, member, limit=MAX_JSON_BYTES):
        with self.open(member) as (f, size):
            if size > limit:
                raise BundleError(f"{self.path}: {member} is {size:,} bytes (limit {limit:,})")
            return f.read(size)

    def array(self, member, expect=None, budget=None):
        with self.open(member) as (f, size):
            return _read_npy(f, size, f"{self.path}:{member}", budget, expect)


def _json_member(opener, member, path):
    try:
        return json.loads(opener.bytes(member).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BundleError(f"{path}: {member} is not valid JSON ({e})") from None


def load(path):
    """Read a bundle (directory or .npz) written by :func:`write`. Arrays are read on first use."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BundleError(f"{path}: no such file or directory")
    opener = _Opener(path)
    index = _json_member(opener, "index.json", path)
    manifest = _json_member(opener, "manifest.json", path)
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise BundleError(f"{path}: index.json is not a {FORMAT} index")
    if index.get("version") != VERSION:
        raise BundleError(f"{path}: bundle version {index.get('version')!r}, this lmref reads {VERSION}")
    fields = {f.name for f in dataclasses.fields(Entry)}
    entries = []
    for i, d in enumerate(index.get("entries", [])):
        if not isinstance(d, dict) or not {"id", "name", "kind", "shape", "files"} <= set(d) or set(d) - fields:
            raise BundleError(f"{path}: index.json entry {i} is malformed: {str(d)[:200]}")
        files = d["files"]
        if (not isinstance(files, dict) or set(files) != set(DTYPES)
                or not all(_plain_member(m) for m in files.values())):
            raise BundleError(f"{path}: index.json entry {i} ({str(d.get('name'))[:80]!r}): files must map "
                              f"{' and '.join(DTYPES)} to plain relative member paths inside the bundle, "
                              f"got {str(files)[:200]}")
        if not isinstance(d["shape"], list) or not all(isinstance(n, int) and n >= 0 for n in d["shape"]):
            raise BundleError(f"{path}: index.json entry {i}: shape must be a list of non-negative ints")
        entries.append(Entry(**d))
    return Bundle(manifest, entries, reader=opener.array, path=path)


# ---------------------------------------------------------------------------------------------
# another runtime's tensors
# ---------------------------------------------------------------------------------------------

def read_tensors(path, max_bytes=None):
    """A port's tensors -> {name: ndarray}. ``path`` is
    * a bundle (directory with index.json, or .npz with index.json): its float32 tensors by name
      (use ``load`` and ``Bundle.array`` for the float64 ones);
    * an .npz of named arrays (``np.savez(path, **{name: array})``; names may contain ':' and '/');
    * a directory of .npy files: the name of each is its path relative to the directory without
      ``.npy`` (so ``op0012.npy`` matches the bundle entry with id op0012); files that are symlinks
      to outside the directory are refused.
    max_bytes: the most all tensors together may take (default MAX_READ_BYTES); every header is
    checked against it before any tensor is read (``lmref compare`` passes about the bundle's size)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BundleError(f"{path}: no such file or directory")
    budget = _Budget(max_bytes)
    if os.path.exists(os.path.join(path, "index.json")) or _zip_has(path, "index.json"):
        b = load(path)
        out = {}
        for e in b.entries:
            budget.take(4 * int(np.prod(e.shape, dtype=object)), f"{path}: {e.name}")
            out[e.name] = b.array(e.id, "float32")
        return out
    opener = _Opener(path, strict=False)
    if opener.zip is None:
        members = []
        for root, _, files in os.walk(path):
            for fn in sorted(files):
                if fn.endswith(".npy"):
                    members.append(os.path.relpath(os.path.join(root, fn), path).replace(os.sep, "/"))
        if not members:
            raise BundleError(f"{path}: no .npy files in the directory")
        names = {m: m[:-4] for m in members}
    else:
        names = {m: m[:-4] for m in opener.zip.namelist() if m.endswith(".npy")}   # np.savez's layout
        if not names:
            raise BundleError(f"{path}: no .npy members in the .npz file")
    _charge_headers(opener, names, budget, path)
    return {name: opener.array(member) for member, name in names.items()}


def _zip_has(path, member):
    if os.path.isdir(path) or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return member in z.namelist()


def _charge_headers(opener, names, budget, path):
    """Read every member's header first and charge its size, so that a file whose tensors together
    exceed the budget is refused before any of them is read."""
    total = _Budget(budget.left)
    for member in names:
        with opener.open(member) as (f, size):
            total.take(_npy_header(f, size, f"{path}:{member}")[3], f"{path}:{member}")


def read_mapping(path):
    """A mapping file: a JSON object {bundle name: other name} or {bundle name: {"name": other name,
    "transpose": [axes]}} (the port's tensor is transposed by ``axes`` to the bundle's layout, e.g.
    [0, 3, 1, 2] for an NHWC port). -> {bundle name: (other name, axes or None)}"""
    try:
        with open(os.fspath(path), "rb") as f:
            text = f.read(MAX_JSON_BYTES + 1)
        if len(text) > MAX_JSON_BYTES:
            raise BundleError(f"{path}: a mapping file of more than {MAX_JSON_BYTES:,} bytes")
        raw = json.loads(text.decode("utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: no such mapping file") from None
    except IsADirectoryError:
        raise BundleError(f"{path}: is a directory, not a mapping file") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BundleError(f"{path}: not a JSON mapping file ({e})") from None
    return _parse_mapping(raw, path)


def _parse_mapping(raw, where="mapping"):
    if not isinstance(raw, dict):
        raise BundleError(f"{where}: expected a JSON object {{bundle name: other name}}")
    out = {}
    for k, v in raw.items():
        if isinstance(v, str):
            out[k] = (v, None)
        elif isinstance(v, dict) and isinstance(v.get("name"), str) and set(v) <= {"name", "transpose"}:
            axes = v.get("transpose")
            if axes is not None and not (isinstance(axes, list) and all(isinstance(a, int) for a in axes)):
                raise BundleError(f"{where}: {k!r}: transpose must be a list of ints")
            out[k] = (v["name"], axes)
        else:
            raise BundleError(f"{where}: {k!r}: expected a name or {{\"name\": ..., \"transpose\": [...]}}")
    return out


# ---------------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------------

@dataclass
class Report:
    """rows: one dict per bundle entry (execution order) with id, name, kind, other (the port's
    name or None), status ("ok", "FAIL", "missing"), max_abs, max_rel, cosine, err (max_abs/scale),
    f32_err (lmref's own float32 error, for context), note. ok: every compared entry passed and at
    least one was compared. first_failure: the first failing row, or None."""
    rows: list
    rtol: float
    atol: float
    reference: str

    @property
    def compared(self):
        return [r for r in self.rows if r["status"] != "missing"]

    @property
    def failures(self):
        return [r for r in self.rows if r["status"] == "FAIL"]

    @property
    def first_failure(self):
        f = self.failures
        return f[0] if f else None

    @property
    def ok(self):
        return bool(self.compared) and not self.failures


def _stats(val, ref):
    """val, ref: same shape -> (max_abs, max_rel, cosine, scale), all floats (float64 maths)."""
    v, r = val.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    if v.size == 0:
        return 0.0, 0.0, 1.0, 0.0
    d = np.abs(v - r)
    scale = float(np.max(np.abs(r)))
    max_abs = float(np.max(d))
    floor = max(1e-3 * scale, np.finfo(np.float64).tiny)
    max_rel = float(np.max(d / np.maximum(np.abs(r), floor)))
    nv, nr = np.linalg.norm(v), np.linalg.norm(r)
    cosine = float(v @ r / (nv * nr)) if nv > 0 and nr > 0 else (1.0 if nv == nr else 0.0)
    return max_abs, max_rel, cosine, scale


def _match_shape(val, shape):
    """The port's array in the bundle's shape, if it only differs by size-1 axes; else None."""
    if list(val.shape) == list(shape):
        return val
    if [s for s in val.shape if s != 1] == [s for s in shape if s != 1]:
        return val.reshape(shape)
    return None


def check_tolerance(value, name):
    """A tolerance as a float: finite and >= 0 (inf would pass any port, NaN none, a negative one
    none either), else BundleError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise BundleError(f"{name}: expected a number, got {value!r}") from None
    if not (np.isfinite(v) and v >= 0):
        raise BundleError(f"{name}: must be a finite number >= 0, got {value!r}")
    return v


def compare(bundle, other, mapping=None, reference="float64", rtol=None, atol=None, only=None):
    """Compare a port's tensors with the bundle, entry by entry in execution order.

    other: {name: ndarray} (see ``read_tensors``); an entry is found under the mapped name if
           ``mapping`` names it, else under its bundle name, else under its id (``op0012``).
    mapping: {bundle name: other name | (other name, transpose axes)} or a path to a mapping file.
    reference: which of the bundle's runs is the truth, "float64" (default) or "float32".
    rtol, atol: see the module doc; default DEFAULT_TOL by the dtype of the port's tensors
           (float32 unless all of them are float64).
    only: None, or a collection of kinds ("input", "op", "output") to compare.
    -> Report"""
    if isinstance(mapping, (str, os.PathLike)):
        mapping = read_mapping(mapping)
    mapping = {k: (v, None) if isinstance(v, str) else tuple(v) for k, v in (mapping or {}).items()}
    unknown = [k for k in mapping if k not in bundle]
    if unknown:
        raise BundleError(f"mapping names tensors the bundle does not have: {unknown[:5]}")
    kinds = {dt.kind for dt in (np.asarray(a).dtype for a in other.values())}
    if kinds - {"f", "i", "u", "b"}:
        raise BundleError("other: tensors must be numeric arrays")
    dts = {np.asarray(a).dtype for a in other.values() if np.asarray(a).dtype.kind == "f"}
    port = "float64" if dts == {np.dtype(np.float64)} else ("float16" if dts == {np.dtype(np.float16)} else "float32")
    tol = DEFAULT_TOL[port]
    rtol = tol["rtol"] if rtol is None else check_tolerance(rtol, "rtol")
    atol = tol["atol"] if atol is None else check_tolerance(atol, "atol")
    rows = []
    for e in bundle.entries:
        if only is not None and e.kind not in only:
            continue
        row = {"id": e.id, "name": e.name, "kind": e.kind, "op": e.op, "other": None, "status": "missing",
               "max_abs": None, "max_rel": None, "cosine": None, "err": None, "f32_err": None, "note": ""}
        rows.append(row)
        if e.name in mapping:
            other_name, axes = mapping[e.name]
        else:
            other_name = e.name if e.name in other else (e.id if e.id in other else None)
            axes = None
        if other_name is None:
            continue
        if other_name not in other:
            row.update(status="FAIL", other=other_name, note=f"mapped to {other_name!r}, which the port does not have")
            continue
        row["other"] = other_name
        val = np.asarray(other[other_name])
        ref = bundle.array(e.id, reference)
        if axes is not None:
            try:
                val = val.transpose(axes)
            except ValueError as ex:
                row.update(status="FAIL", note=f"transpose {axes}: {ex}")
                continue
        matched = _match_shape(val, ref.shape)
        if matched is None:
            row.update(status="FAIL", note=f"shape {list(val.shape)} != bundle {list(ref.shape)}")
            continue
        val = matched.astype(np.float64)
        if not np.all(np.isfinite(val)):
            row.update(status="FAIL", note="NaN or inf in the port's tensor")
            continue
        max_abs, max_rel, cosine, scale = _stats(val, ref)
        f32_err = None
        if reference == "float64":                   # how far lmref's own float32 run is, for context
            f_abs, _, _, f_scale = _stats(bundle.array(e.id, "float32"), ref)
            f32_err = f_abs / f_scale if f_scale > 0 else 0.0
        ok = max_abs <= atol + rtol * scale
        row.update(status="ok" if ok else "FAIL", max_abs=max_abs, max_rel=max_rel, cosine=cosine,
                   err=max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf")),
                   f32_err=f32_err,
                   note="" if ok else f"max |diff| {max_abs:.3g} > atol + rtol*scale = {atol + rtol * scale:.3g}")
    return Report(rows, rtol, atol, reference)


def _g(v):
    return "-" if v is None else f"{v:.3g}"


def format_report(report, verbose=False):
    """A table of the compared entries (all entries with ``verbose``) and a verdict line."""
    rows = report.rows if verbose else report.compared
    w = max([len("name")] + [len(r["name"]) for r in rows])
    lines = [f"{'#':>4}  {'name':<{w}}  {'status':<7} {'max_abs':>9} {'err':>9} {'max_rel':>9} "
             f"{'cosine':>12} {'lmref f32':>9}"]
    for i, r in enumerate(report.rows):
        if r not in rows:
            continue
        cos = "-" if r["cosine"] is None else f"{r['cosine']:.9f}"
        line = (f"{i:>4}  {r['name']:<{w}}  {r['status']:<7} {_g(r['max_abs']):>9} {_g(r['err']):>9} "
                f"{_g(r['max_rel']):>9} {cos:>12} {_g(r['f32_err']):>9}")
        if r["note"]:
            line += f"  {r['note']}"
        lines.append(line)
    n, nf = len(report.compared), len(report.failures)
    lines.append(f"compared {n} of {len(report.rows)} tensors against the bundle's {report.reference} run, "
                 f"tolerance max|diff| <= {report.atol:g} + {report.rtol:g} * max|ref|")
    if n == 0:
        lines.append("FAIL: no tensor of the port matched a bundle name (use a mapping file)")
    elif nf:
        f = report.first_failure
        lines.append(f"FAIL: {nf} tensor(s) out of tolerance; first diverging op: {f['name']} "
                     f"(entry {f['id']}{', op ' + f['op'] if f['op'] else ''}): {f['note']}")
    else:
        lines.append(f"PASS: all {n} compared tensors within tolerance")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# onnxruntime
# ---------------------------------------------------------------------------------------------

def _need_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise BundleError(f"comparing with an ONNX model needs the onnx and onnxruntime packages "
                          f"(pip install onnx onnxruntime): {e}") from None
    return onnx, onnxruntime


def _load_onnx(model):
    onnx, _ = _need_onnx()
    if isinstance(model, (str, os.PathLike)):
        try:
            return onnx.load(os.fspath(model))
        except FileNotFoundError:
            raise BundleError(f"{model}: no such file") from None
        except Exception as e:             # onnx raises DecodeError and friends for non-ONNX bytes
            raise BundleError(f"{model}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    return model


def expose_onnx_values(model, names, path=None):
    """Return (and write to ``path`` if given) a copy of an ONNX model in which the graph values
    ``names`` (node output names, e.g. "/stem/act/Mul_output_0") are also graph outputs, so that a
    runtime returns them. Types and shapes come from ONNX shape inference where it gives them."""
    onnx, _ = _need_onnx()
    m = onnx.ModelProto()
    m.CopyFrom(_load_onnx(model))
    try:
        inferred = onnx.shape_inference.infer_shapes(m)
    except Exception:                     # shape inference is best effort here
        inferred = m
    infos = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    produced = {o for n in m.graph.node for o in n.output if o} | {i.name for i in m.graph.input}
    existing = {o.name for o in m.graph.output}
    for name in names:
        if name in existing:
            continue
        if name not in produced:
            raise BundleError(f"ONNX graph has no value named {name!r}")
        if name in infos:
            m.graph.output.append(infos[name])
        else:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
        existing.add(name)
    if path is not None:
        onnx.save(m, os.fspath(path))
    return m


_ACT_TYPES = {"relu": [["Relu"]], "sigmoid": [["Sigmoid"]], "silu": [["Sigmoid", "Mul"]],
              "tanh": [["Tanh"]], "relu6": [["Clip"]], "hardswish": [["HardSwish"]],
              "hardsigmoid": [["HardSigmoid"]]}
# lmref op -> ONNX node-type sequences it may become (BatchNorm may be folded into the conv before it)
_ONNX_FORMS = {"conv2d": [["Conv"]], "batch_norm": [["BatchNormalization"], []],
               "linear": [["Gemm"], ["MatMul", "Add"]], "max_pool2d": [["MaxPool"]],
               "avg_pool2d": [["AveragePool"]], **_ACT_TYPES}
_IGNORED_ONNX = {"Constant", "Identity"}


def _onnx_module_path(node_name):
    """'/stages/stages.2/stages.2.1/conv_kxk/conv/Conv' -> ('stages', '2', '1', 'conv_kxk', 'conv')
    (torch's exporter names a node by its module path, repeating a container's name in front of an
    index: stages / stages.2 / stages.2.1)."""
    parts = [p for p in node_name.split("/")[:-1] if p]
    comps, prev = [], ""
    for p in parts:
        rel = p[len(prev) + 1:] if prev and p.startswith(prev + ".") else p
        comps.extend(rel.split("."))
        prev = p
    return tuple(comps)


def _fits(lm_ops, onnx_types):
    """Can the lmref op sequence have become exactly this ONNX node-type sequence?"""
    if not lm_ops:
        return not onnx_types
    forms = _ONNX_FORMS.get(lm_ops[0])
    if forms is None:
        return False
    return any(onnx_types[:len(f)] == f and _fits(lm_ops[1:], onnx_types[len(f):]) for f in forms)


def suggest_onnx_mapping(bundle, model):
    """Pair bundle ops with values of an ONNX graph exported by torch from the same model:
    {bundle name: ONNX value name}.

    A traced scope (``backbone.stages.1.0.conv1_1x1``) is paired with the torch module whose path
    ends with it (``stages.1.0.conv1_1x1``, node names ``/stages/stages.1/stages.1.0/conv1_1x1/...``)
    when the module's ONNX nodes are exactly what the scope's lmref ops become (conv -> Conv,
    batch norm -> BatchNormalization or folded into the conv, silu -> Sigmoid, Mul, ...); then the
    scope's last op output is the module's last node output. Scopes with other ops (attention,
    norms that export as several nodes, plain NumPy between ops such as residual adds) are left
    out rather than guessed: a pairing made here is one the two graphs must agree on."""
    m = _load_onnx(model)
    modules = {}                                   # module path -> [(op_type, output name)]
    for n in m.graph.node:
        if n.op_type in _IGNORED_ONNX or not n.output:
            continue
        path = _onnx_module_path(n.name)
        for k in range(1, len(path) + 1):
            modules.setdefault(path[:k], []).append((n.op_type, n.output[0]))
    scopes = {}                                    # lmref scope -> [entries] (top-level ops under it)
    for e in bundle.entries:
        if e.kind != "op" or e.parent is not None or not e.scope:
            continue
        comps = tuple(e.scope.split("."))
        for k in range(1, len(comps) + 1):
            scopes.setdefault(comps[:k], []).append(e)
    top = [e for e in bundle.entries if e.kind == "op" and e.parent is None]
    following = {a.name: b for a, b in zip(top, top[1:])}
    bn_inputs = {i for n in m.graph.node if n.op_type == "BatchNormalization" for i in n.input[:1]}
    mapping, used = {}, set()
    for comps, ents in scopes.items():
        target = next((comps[k:] for k in range(len(comps)) if comps[k:] in modules), None)
        if target is None:
            continue
        nodes = modules[target]
        if not _fits([e.op for e in ents], [t for t, _ in nodes]):
            continue
        last, value = ents[-1], nodes[-1][1]
        nxt = following.get(last.name)
        if last.op == "conv2d" and nxt is not None and nxt.op == "batch_norm" and value not in bn_inputs:
            last = nxt            # the exporter folded the next BatchNorm into this Conv
        if last.name not in mapping and value not in used:
            mapping[last.name] = value
            used.add(value)
    return mapping


def run_onnx(model, bundle, mapping=None, auto_map=True):
    """Run an ONNX model in onnxruntime on the bundle's input -> ({bundle name: array}, mapping used).

    The graph's outputs are returned under their own names (a torch_impl export names them by the
    model's output keys, which are the bundle's output names). Intermediate values are exposed as
    extra outputs for the pairs in ``mapping`` ({bundle name: ONNX value name}, or a path to a
    mapping file) and, with ``auto_map``, for those ``suggest_onnx_mapping`` finds. The input is the
    bundle's float32 input for a float graph, the float64 one for a double graph."""
    onnx, ort = _need_onnx()
    m = _load_onnx(model)
    if isinstance(mapping, (str, os.PathLike)):
        mapping = read_mapping(mapping)
    pairs = {k: (v if isinstance(v, str) else v[0]) for k, v in (mapping or {}).items()}
    if auto_map:
        for k, v in suggest_onnx_mapping(bundle, m).items():
            pairs.setdefault(k, v)
    outputs = [o.name for o in m.graph.output]
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise BundleError(f"ONNX model has {len(inputs)} inputs; expected one image input")
    elem = inputs[0].type.tensor_type.elem_type
    dtype = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.DOUBLE: "float64"}.get(elem)
    if dtype is None:
        raise BundleError(f"ONNX input {inputs[0].name!r} has element type "
                          f"{onnx.TensorProto.DataType.Name(elem)}; expected float or double")
    exposed = expose_onnx_values(m, [v for v in pairs.values() if v not in outputs])
    try:
        sess = ort.InferenceSession(exposed.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise BundleError(f"onnxruntime cannot load the model: {e}") from None
    x = bundle.array("input", dtype)
    names = [o.name for o in exposed.graph.output]
    try:
        values = sess.run(names, {inputs[0].name: x})
    except Exception as e:
        raise BundleError(f"onnxruntime failed on the bundle's input {list(x.shape)}: {e}") from None
    got = dict(zip(names, values))
    out = {name: got[name] for name in outputs}           # same names as the bundle's outputs
    for bname, vname in pairs.items():
        out[bname] = got[vname]
    return out, pairs
