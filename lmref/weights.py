"""Weights: safetensors files written and read with NumPy alone, with an lmref manifest.

File layout (the safetensors format, https://github.com/huggingface/safetensors):

    8 bytes      N, unsigned 64-bit little-endian: the header length
    N bytes      UTF-8 JSON header, padded with spaces so that 8 + N is a multiple of 8:
                 {"<tensor name>": {"dtype": "F32", "shape": [64, 3, 3, 3], "data_offsets": [b, e]},
                  ...,
                  "__metadata__": {"lmref": "<manifest as a JSON string>", ...}}
    the buffer   every tensor's bytes, C order, little-endian, tensor i at buffer[b_i:e_i]; the
                 tensors tile the buffer exactly (no gaps, no overlap, nothing after the last one)

The manifest (a JSON object stored as the *string* ``__metadata__["lmref"]``, metadata values being
strings in safetensors) says what the tensors are:

    format_version  1
    architecture    a key of lmref.models.MODULES
    config          the model's Config as a dict
    layout          an lmref.landmarks name, or null
    input           {"size": [H, W], "channels": 1|3, "color": "RGB"|"BGR"|"GRAY",
                     "mean": [...], "std": [...]}: a pixel v in [0, 255] is fed as (v/255 - mean)/std
    training        a dict or a string: how the weights were made
    ...             any further keys are kept as they are

``save`` also stores ``__metadata__["lmref_sha256"]``, a SHA-256 over the parsed header and the
buffer. ``load`` requires it in every file with an lmref manifest and checks it, so a corrupted
file raises instead of loading wrong numbers, and a flipped bit in the key's *name* cannot switch
the check off (the key is then missing, which is an error). A file another safetensors writer
made with an lmref manifest has no checksum: ``load(path, require_checksum=False)`` reads it, and
``save`` writes it back with one. ``read_safetensors`` reads plain files (no manifest) and checks a
checksum when there is one.

Limits a hostile file cannot get past: the header length (``MAX_HEADER``), the manifest's input
size (``MAX_INPUT_SIDE``: a model run allocates activations from it), and a ``Model`` refuses
weights holding NaN or inf (a valid checksum only says the file is the one that was written).

Nothing here unpickles: the header is JSON, the tensors are raw bytes read with ``np.frombuffer``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os

import numpy as np

from . import fast, landmarks, models  # noqa: F401  (fast: the speed layer, on unless LMREF_REFERENCE=1)

__all__ = ["WeightsError", "save", "load", "load_bytes", "read_safetensors", "parse_safetensors",
           "write_safetensors",
           "flatten", "unflatten", "check_params", "check_manifest", "load_model", "Model",
           "FORMAT_VERSION"]

FORMAT_VERSION = 1
MANIFEST_KEY = "lmref"
CHECKSUM_KEY = "lmref_sha256"
MAX_HEADER = 100_000_000            # the safetensors library's own limit on N
MAX_INPUT_SIDE = 1024               # px: manifest input.size limit (the shipped models use 64-96)

# safetensors dtype name -> little-endian NumPy dtype ('<' so big-endian hosts read the same bytes)
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAME_OF = {(dt.kind, dt.itemsize): name for name, dt in DTYPES.items()}
FLOAT_DTYPES = ("F16", "F32", "F64")
REQUIRED = ("format_version", "architecture", "config", "layout", "input", "training")


class WeightsError(ValueError):
    """A weight file or a parameter set that cannot be used: says which file/key and why."""


# ---------------------------------------------------------------------------------------------
# safetensors, format level
# ---------------------------------------------------------------------------------------------

def _dtype_name(a, key):
    name = _NAME_OF.get((a.dtype.kind, a.dtype.itemsize))
    if name is None:
        raise WeightsError(f"tensor {key!r}: dtype {a.dtype} cannot be stored in safetensors")
    return name


def _checksum(entries, metadata, buffer):
    """SHA-256 over the canonical JSON of the header (checksum key left out) and the buffer."""
    meta = {k: v for k, v in metadata.items() if k != CHECKSUM_KEY}
    canon = json.dumps({"tensors": entries, "metadata": meta}, sort_keys=True, separators=(",", ":"))
    h = hashlib.sha256(canon.encode("utf-8"))
    h.update(buffer)
    return h.hexdigest()


def write_safetensors(path, tensors, metadata=None):
    """Write {name: ndarray} (any safetensors dtype) and {str: str} metadata to ``path``.
    The file is written to a temporary name and moved into place, so a failed write never leaves a
    half-written file under ``path``."""
    if not isinstance(tensors, dict):
        raise TypeError(f"tensors: expected a dict of name -> ndarray, got {type(tensors).__name__}")
    metadata = dict(metadata or {})
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata: keys and values must be str, got {k!r}: {type(v).__name__}")
    entries, chunks, offset = {}, [], 0
    for key, a in tensors.items():
        if not isinstance(key, str) or not key or key == "__metadata__":
            raise WeightsError(f"invalid tensor name {key!r}")
        if not isinstance(a, np.ndarray):
            raise TypeError(f"tensor {key!r}: expected a numpy.ndarray, got {type(a).__name__}")
        name = _dtype_name(a, key)
        data = np.ascontiguousarray(a, dtype=DTYPES[name]).tobytes()   # C order, little-endian
        entries[key] = {"dtype": name, "shape": [int(s) for s in a.shape],
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    buffer = b"".join(chunks)
    metadata[CHECKSUM_KEY] = _checksum(entries, metadata, buffer)
    header = json.dumps({**entries, "__metadata__": metadata}, separators=(",", ":"), ensure_ascii=False)
    header = header.encode("utf-8")
    header += b" " * (-(8 + len(header)) % 8)           # the buffer starts 8-byte aligned
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(np.array(len(header), dtype="<u8").tobytes())
            f.write(header)
            f.write(buffer)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise WeightsError(f"duplicate key {k!r} in the header")
        d[k] = v
    return d


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_header(raw, where):
    """Header bytes -> (entries {name: {dtype, shape, data_offsets}}, metadata {str: str})."""
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except WeightsError as e:
        raise WeightsError(f"{where}: {e}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WeightsError(f"{where}: header is not valid UTF-8 JSON ({e}); not a safetensors file") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{where}: header is a JSON {type(header).__name__}, not an object; "
                           "not a safetensors file")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightsError(f"{where}: __metadata__ must map str to str")
    for key, e in header.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise WeightsError(f"{where}: tensor {key!r}: header entry must have exactly "
                               f"dtype, shape, data_offsets, got {e!r:.200}")
        if e["dtype"] not in DTYPES:
            raise WeightsError(f"{where}: tensor {key!r}: unknown or unsupported dtype {e['dtype']!r} "
                               f"(supported: {sorted(DTYPES)})")
        shape, offs = e["shape"], e["data_offsets"]
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            raise WeightsError(f"{where}: tensor {key!r}: shape must be a list of non-negative ints, got {shape!r:.100}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(_is_int(o) for o in offs)
                or not 0 <= offs[0] <= offs[1]):
            raise WeightsError(f"{where}: tensor {key!r}: data_offsets must be [begin, end] with "
                               f"0 <= begin <= end, got {offs!r:.100}")
        nbytes = math.prod(shape) * DTYPES[e["dtype"]].itemsize
        if offs[1] - offs[0] != nbytes:
            raise WeightsError(f"{where}: tensor {key!r}: shape {shape} of {e['dtype']} needs {nbytes} "
                               f"bytes but data_offsets span {offs[1] - offs[0]}")
    return header, metadata


def _check_tiling(entries, buffer_size, where):
    """The tensors must tile the buffer: sorted by offset, each starts where the previous ended."""
    end = 0
    for key, e in sorted(entries.items(), key=lambda kv: tuple(kv[1]["data_offsets"])):
        b, e_ = e["data_offsets"]
        if b != end:
            kind = "overlaps the previous tensor" if b < end else "leaves a gap after the previous tensor"
            raise WeightsError(f"{where}: tensor {key!r} at bytes [{b}, {e_}) {kind} "
                               f"(which ends at {end}); offsets must be contiguous")
        end = e_
    if end > buffer_size:
        raise WeightsError(f"{where}: data offsets end at byte {end} but the buffer has only "
                           f"{buffer_size} bytes: the file is truncated")
    if end < buffer_size:
        raise WeightsError(f"{where}: the buffer has {buffer_size} bytes but the tensors cover "
                           f"only {end}: trailing bytes (corrupted or not written by a safetensors writer)")


def _read_file(path):
    where = os.fspath(path)
    try:
        with open(where, "rb") as f:
            return f.read(), where
    except FileNotFoundError:
        raise WeightsError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise WeightsError(f"{where}: is a directory, not a weight file") from None


def read_safetensors(path):
    """Read any safetensors file -> (tensors {name: ndarray, native byte order}, metadata {str: str}).
    Validates the whole structure and raises WeightsError naming the problem; if the file carries an
    lmref checksum it is verified."""
    return parse_safetensors(*_read_file(path))


def parse_safetensors(raw, where="<bytes>"):
    """``read_safetensors`` on the bytes of a file (``where`` names them in error messages)."""
    raw = bytes(raw)
    if len(raw) < 8:
        raise WeightsError(f"{where}: {len(raw)} bytes is too short for a safetensors file "
                           "(needs an 8-byte header length)")
    n = int.from_bytes(raw[:8], "little")
    if n > MAX_HEADER:
        raise WeightsError(f"{where}: header length {n} is absurd (limit {MAX_HEADER}); "
                           "not a safetensors file")
    if 8 + n > len(raw):
        raise WeightsError(f"{where}: header length {n} goes beyond the end of the file "
                           f"({len(raw)} bytes): the file is truncated")
    entries, metadata = _parse_header(raw[8:8 + n], where)
    buffer = memoryview(raw)[8 + n:]
    _check_tiling(entries, len(buffer), where)
    if CHECKSUM_KEY in metadata and metadata[CHECKSUM_KEY] != _checksum(entries, metadata, buffer):
        raise WeightsError(f"{where}: checksum mismatch: the file is corrupted")
    tensors = {}
    for key, e in entries.items():
        dt = DTYPES[e["dtype"]]
        a = np.frombuffer(buffer, dtype=dt, count=math.prod(e["shape"]), offset=e["data_offsets"][0])
        tensors[key] = a.reshape(e["shape"]).astype(dt.newbyteorder("="), copy=True)  # own, writable, native
    return tensors, metadata


# ---------------------------------------------------------------------------------------------
# lmref weights: tensors + manifest
# ---------------------------------------------------------------------------------------------

def check_manifest(manifest, where="manifest"):
    """Raise WeightsError unless ``manifest`` has the required keys with usable values."""
    if not isinstance(manifest, dict):
        raise WeightsError(f"{where}: expected a JSON object, got {type(manifest).__name__}")
    v = manifest.get("format_version")
    if not _is_int(v):
        raise WeightsError(f"{where}: format_version missing or not an int: {v!r}")
    if v != FORMAT_VERSION:
        raise WeightsError(f"{where}: unknown format_version {v} (this lmref reads {FORMAT_VERSION})")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise WeightsError(f"{where}: missing keys {missing}")
    if not isinstance(manifest["architecture"], str) or not manifest["architecture"]:
        raise WeightsError(f"{where}: architecture must be a non-empty str")
    if not isinstance(manifest["config"], dict):
        raise WeightsError(f"{where}: config must be a dict")
    layout = manifest["layout"]
    if layout is not None:
        try:
            landmarks.get(layout)
        except (KeyError, TypeError) as e:
            raise WeightsError(f"{where}: layout: {e}") from None
    if not isinstance(manifest["training"], (dict, str)):
        raise WeightsError(f"{where}: training must be a dict or a str")
    _check_input(manifest["input"], where)


def _check_input(inp, where):
    if not isinstance(inp, dict):
        raise WeightsError(f"{where}: input must be a dict")
    missing = [k for k in ("size", "channels", "color", "mean", "std") if k not in inp]
    if missing:
        raise WeightsError(f"{where}: input is missing {missing}")
    size, c = inp["size"], inp["channels"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(s) and s > 0 for s in size)):
        raise WeightsError(f"{where}: input.size must be [H, W] positive ints, got {size!r}")
    if max(size) > MAX_INPUT_SIDE:
        raise WeightsError(f"{where}: input.size {list(size)} exceeds the limit of {MAX_INPUT_SIDE} px "
                           "per side (a landmark model's input is a face crop; running this would "
                           "allocate activations of that size)")
    if c not in (1, 3) or not _is_int(c):
        raise WeightsError(f"{where}: input.channels must be 1 or 3, got {c!r}")
    if inp["color"] not in ("RGB", "BGR", "GRAY") or (inp["color"] == "GRAY") != (c == 1):
        raise WeightsError(f"{where}: input.color {inp['color']!r} does not fit {c} channel(s)")
    for k in ("mean", "std"):
        vals = inp[k]
        if (not isinstance(vals, (list, tuple)) or len(vals) != c
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in vals)):
            raise WeightsError(f"{where}: input.{k} must be {c} finite numbers, got {vals!r}")
    if any(s == 0 for s in inp["std"]):
        raise WeightsError(f"{where}: input.std has a zero")


def _check_dtypes(tensors, where):
    """lmref model weights are floating point, all of one dtype."""
    kinds = {}
    for key, a in tensors.items():
        if a.dtype.kind != "f":
            raise WeightsError(f"{where}: tensor {key!r} has dtype {a.dtype}; model weights must be "
                               "floating point")
        kinds.setdefault(a.dtype, key)
    if len(kinds) > 1:
        ex = ", ".join(f"{k!r} is {dt}" for dt, k in kinds.items())
        raise WeightsError(f"{where}: mixed dtypes ({ex}); all weights must share one dtype")


def _float_dtype(dtype):
    if dtype is None:
        return None
    dt = np.dtype(dtype)
    if dt not in (np.float16, np.float32, np.float64):
        raise TypeError(f"dtype: expected float16, float32 or float64, got {dt}")
    return dt


def save(path, tensors, manifest):
    """Write flat {name: float ndarray} (all one dtype) and the manifest (see the module doc)."""
    if not isinstance(tensors, dict):
        raise TypeError(f"tensors: expected a flat dict of name -> ndarray, got {type(tensors).__name__}")
    for k, a in tensors.items():
        if not isinstance(a, np.ndarray):
            raise TypeError(f"tensor {k!r}: expected a numpy.ndarray, got {type(a).__name__}"
                            + (" (nested dict? use flatten())" if isinstance(a, dict) else ""))
    _check_dtypes(tensors, "save")
    check_manifest(manifest, "save: manifest")
    try:
        text = json.dumps(manifest, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"save: manifest is not JSON-serialisable: {e}") from None
    write_safetensors(path, tensors, {MANIFEST_KEY: text})


def _json_default(o):
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def load(path, dtype=None, require_checksum=True):
    """Read an lmref weight file -> (flat {name: ndarray}, manifest dict).
    dtype: None keeps the stored float dtype; np.float32 / np.float64 (/ float16) casts.
    require_checksum: False also reads a file without the lmref checksum (written by another
    safetensors writer); its bytes are then unchecked."""
    return load_bytes(*_read_file(path), dtype=dtype, require_checksum=require_checksum)


def load_bytes(raw, where="<bytes>", dtype=None, require_checksum=True):
    """``load`` on the bytes of a weight file."""
    dt = _float_dtype(dtype)
    tensors, metadata = parse_safetensors(raw, where)
    if MANIFEST_KEY not in metadata:
        raise WeightsError(f"{where}: no lmref manifest (__metadata__[{MANIFEST_KEY!r}] is missing); "
                           "use lmref.weights.read_safetensors for plain safetensors files")
    try:
        manifest = json.loads(metadata[MANIFEST_KEY])
    except ValueError as e:
        raise WeightsError(f"{where}: the manifest is not valid JSON ({e})") from None
    check_manifest(manifest, f"{where}: manifest")
    _check_dtypes(tensors, where)
    if require_checksum and CHECKSUM_KEY not in metadata:
        others = sorted(k for k in metadata if k != MANIFEST_KEY)
        raise WeightsError(f"{where}: no {CHECKSUM_KEY} checksum in the metadata"
                           f"{' (other keys: ' + _show([repr(k) for k in others]) + ')' if others else ''}; "
                           "lmref.weights.save always writes one, so the file is damaged or was edited "
                           "(a file from another safetensors writer: load(path, require_checksum=False), "
                           "then lmref.weights.save adds one)")
    if dt is not None:
        tensors = {k: a.astype(dt, copy=False) for k, a in tensors.items()}
    return tensors, manifest


# ---------------------------------------------------------------------------------------------
# nested <-> flat parameter dicts
# ---------------------------------------------------------------------------------------------

def flatten(nested, prefix=""):
    """{"stem": {"conv": {"weight": w}}} -> {"stem.conv.weight": w}."""
    flat = {}
    for k, v in nested.items():
        if not isinstance(k, str) or not k or "." in k:
            raise WeightsError(f"flatten: key {k!r} under {prefix or 'the root'!r} must be a non-empty "
                               "str without dots")
        name = prefix + k
        if isinstance(v, dict):
            flat.update(flatten(v, name + "."))
        else:
            flat[name] = v
    return flat


def unflatten(flat):
    """{"stages.2.1.conv.weight": w} -> {"stages": {"2": {"1": {"conv": {"weight": w}}}}};
    numeric parts stay strings (p["stages"]["2"]["1"])."""
    nested = {}
    for key, v in flat.items():
        parts = key.split(".") if isinstance(key, str) else [""]
        if not all(parts):
            raise WeightsError(f"unflatten: bad parameter name {key!r}")
        d = nested
        for i, part in enumerate(parts[:-1]):
            d = d.setdefault(part, {})
            if not isinstance(d, dict):
                raise WeightsError(f"unflatten: {'.'.join(parts[:i + 1])!r} is a tensor and also "
                                   f"a prefix of {key!r}")
        if parts[-1] in d:
            raise WeightsError(f"unflatten: {key!r} is a tensor and also a prefix of other names")
        d[parts[-1]] = v
    return nested


def check_params(tensors, expected_shapes):
    """Raise WeightsError unless ``tensors`` (flat or nested) has exactly the keys of
    ``expected_shapes`` ({name: shape}) with those shapes, all floating point of one dtype."""
    flat = flatten(tensors) if any(isinstance(v, dict) for v in tensors.values()) else tensors
    expected = {k: tuple(int(s) for s in shape) for k, shape in expected_shapes.items()}
    missing = sorted(set(expected) - set(flat))
    unexpected = sorted(set(flat) - set(expected))
    wrong = [f"{k}: {tuple(np.shape(flat[k]))} != expected {expected[k]}"
             for k in expected if k in flat and tuple(np.shape(flat[k])) != expected[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_show(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_show(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} with the wrong shape: {_show(wrong)}")
    if problems:
        raise WeightsError("parameters do not fit the model: " + "; ".join(problems))
    for k, a in flat.items():
        if not isinstance(a, np.ndarray):
            raise WeightsError(f"parameter {k!r} is a {type(a).__name__}, not a numpy.ndarray")
    _check_dtypes(flat, "parameters")


def _check_finite(flat, dtype):
    """Raise WeightsError naming the tensors that hold NaN or inf (in ``dtype``, after the cast):
    a model with such weights can only give NaN or inf, whatever its input."""
    bad = [f"{k} ({int(np.count_nonzero(~np.isfinite(a)))} of {a.size})" for k, a in flat.items()
           if not np.all(np.isfinite(a))]
    if bad:
        raise WeightsError(f"{len(bad)} tensor(s) hold NaN or inf values in {np.dtype(dtype)}: {_show(bad)}; "
                           "the weights are damaged, or training diverged")


def _show(items, limit=8):
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


# ---------------------------------------------------------------------------------------------
# a model ready to run
# ---------------------------------------------------------------------------------------------

def _make_config(Config, d, where):
    """Config dataclass from the manifest's dict (a ``Config.from_dict`` is used if there is one).
    JSON lists become tuples unless the field's default is a list; a dict for a field whose default
    is a dataclass becomes that dataclass; unknown keys raise."""
    if hasattr(Config, "from_dict"):
        return Config.from_dict(d)
    if not isinstance(d, dict):
        raise WeightsError(f"{where}: expected a dict for {Config.__name__}, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise WeightsError(f"{where}: unknown keys {unknown} for {Config.__module__}.{Config.__qualname__}")

    def tup(v):
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    kwargs = {}
    for k, v in d.items():
        f = fields[k]
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if dataclasses.is_dataclass(default) and isinstance(v, dict):
            v = _make_config(type(default), v, f"{where}.{k}")
        elif not isinstance(default, list):
            v = tup(v)
        kwargs[k] = v
    try:
        return Config(**kwargs)
    except TypeError as e:                       # e.g. a required field missing
        raise WeightsError(f"{where}: cannot build {Config.__qualname__}: {e}") from None


class Model:
    """Parameters + manifest, callable: ``Model(params, manifest)(x)`` runs
    ``lmref.models.get(arch).forward(params, x, config)``. The parameters are checked against the
    model's ``param_shapes(config)`` and cast to one float dtype when the Model is made.

    A call runs with the fast layer (``lmref.fast``: faster kernels, BatchNorms folded, Lite-HRNet's
    units stacked, all derived from ``params``, which stay as loaded) unless it is turned off
    (``LMREF_REFERENCE=1``, ``lmref.fast.enable(False)``, ``with lmref.fast.off():``); inside
    ``lmref.trace()`` always on the plain definitions."""

    def __init__(self, params, manifest, dtype=None):
        check_manifest(manifest)
        self.manifest = manifest
        self.arch = manifest["architecture"]
        try:
            self.module = models.get(self.arch)
        except KeyError as e:
            raise WeightsError(f"manifest: {e.args[0]}") from None
        self.config = _make_config(self.module.Config, manifest["config"], "manifest config")
        flat = flatten(params) if any(isinstance(v, dict) for v in params.values()) else dict(params)
        check_params(flat, self.module.param_shapes(self.config))
        # the ops compute in float32 or float64; by default keep the stored dtype (float16 -> float32)
        if dtype is not None:
            dt = np.dtype(dtype)
            if dt not in (np.float32, np.float64):
                raise TypeError(f"dtype: a Model runs in float32 or float64, got {dt}")
        else:
            stored = {a.dtype for a in flat.values()}          # one dtype: check_params made sure
            dt = stored.pop() if stored else np.dtype(np.float32)
            dt = np.dtype(np.float64) if dt == np.float64 else np.dtype(np.float32)
        self.dtype = dt
        with np.errstate(over="ignore"):                   # an overflow in the cast is reported next
            cast = {k: a.astype(dt, copy=False) for k, a in flat.items()}
        _check_finite(cast, dt)
        self.params = unflatten(cast)

    @property
    def layout(self):
        """The landmark Layout named in the manifest (None if none)."""
        name = self.manifest["layout"]
        return None if name is None else landmarks.get(name)

    def __call__(self, x):
        """x: float [B, C, H, W], already normalised as manifest["input"] says."""
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
            raise TypeError(f"x: expected a float numpy.ndarray, got "
                            f"{type(x).__name__}{'' if not isinstance(x, np.ndarray) else ' of ' + str(x.dtype)}")
        return self.module.forward(self.params, x.astype(self.dtype, copy=False), self.config)

    def __repr__(self):
        n = sum(a.size for a in flatten(self.params).values())
        return f"Model(arch={self.arch!r}, params={n:,}, dtype={self.dtype}, layout={self.manifest['layout']!r})"


def load_model(path, dtype=np.float32):
    """Read a weight file and build the Model (params cast to ``dtype``)."""
    tensors, manifest = load(path)
    try:
        return Model(tensors, manifest, dtype=dtype)
    except WeightsError as e:
        raise WeightsError(f"{os.fspath(path)}: {e}") from None
