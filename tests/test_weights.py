"""lmref.weights: safetensors via NumPy, the manifest, validation, interop with the safetensors
package and torch, corruption fuzzing, and Model with a fake model module."""
import json
import os

import numpy as np
import pytest
import safetensors.numpy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

import lmref.models
from lmref import weights as W
from lmref.weights import WeightsError

HERE = os.path.dirname(os.path.abspath(__file__))


def manifest(**over):
    m = {
        "format_version": 1,
        "architecture": "fake",
        "config": {"in_channels": 3, "hidden": [5, 4], "num_points": 2, "head": {"bias": True}},
        "layout": "ibug68",
        "input": {"size": [8, 8], "channels": 3, "color": "RGB", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "training": {"note": "random init", "seed": 0},
        "extra_key": ["kept", 1, 2.5, None],
    }
    m.update(over)
    return m


def fake_params(dtype=np.float32, seed=0, cfg=None):
    import _fake_model
    cfg = cfg or _fake_model.Config()
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in _fake_model.param_shapes(cfg).items()}


@pytest.fixture(autouse=True)
def fake_arch(monkeypatch):
    monkeypatch.syspath_prepend(HERE)
    monkeypatch.setitem(lmref.models.MODULES, "fake", "_fake_model")


def bits_equal(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_tensors(got, want):
    assert list(got) == list(want)
    for k in want:
        assert bits_equal(got[k], want[k]), k


def header_of(path):
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    return raw, n, json.loads(raw[8:8 + n])


def write_raw(path, header, buffer, n=None):
    """Write a file with a hand-made header (no checksum) for the validation tests."""
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    n = len(text) if n is None else n
    with open(path, "wb") as f:
        f.write(n.to_bytes(8, "little") + text + buffer)


def lmref_meta(m=None):
    return {"__metadata__": {"lmref": json.dumps(m or manifest())}}


# ---------------------------------------------------------------------------------------------
# round trips and the byte layout
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_round_trip_bit_exact(tmp_path, dtype):
    rng = np.random.default_rng(1)
    t = {
        "a.weight": rng.standard_normal((3, 2, 3, 3)).astype(dtype),
        "a.bias": rng.standard_normal(3).astype(dtype),
        "scalar": np.array(2.5, dtype=dtype),
        "empty": np.zeros((0, 4), dtype=dtype),
        "special": np.array([np.nan, np.inf, -np.inf, -0.0, np.finfo(dtype).tiny], dtype=dtype),
        "transposed": rng.standard_normal((4, 5)).astype(dtype).T,          # not C-contiguous
    }
    W.save(tmp_path / "w.safetensors", t, manifest())
    got, m = W.load(tmp_path / "w.safetensors")
    assert_same_tensors(got, {k: v.copy(order="C") for k, v in t.items()})
    assert m == json.loads(json.dumps(manifest()))
    assert all(a.flags.writeable and a.flags.c_contiguous for a in got.values())


def test_byte_layout(tmp_path):
    t = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "y": np.array([1.5, -2.0], dtype=np.float32)}
    W.save(tmp_path / "w.safetensors", t, manifest())
    raw, n, header = header_of(tmp_path / "w.safetensors")
    assert (8 + n) % 8 == 0                                       # buffer starts 8-byte aligned
    assert raw[8:8 + n].rstrip(b" ").endswith(b"}") and raw[8:9] == b"{"
    assert header["x"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    assert header["y"] == {"dtype": "F32", "shape": [2], "data_offsets": [24, 32]}
    assert json.loads(header["__metadata__"]["lmref"]) == manifest()
    assert raw[8 + n:] == t["x"].astype("<f4").tobytes() + t["y"].astype("<f4").tobytes()
    assert len(raw) == 8 + n + 32


def test_big_endian_input_written_little_endian(tmp_path):
    a = np.array([1.0, -2.5, 3.25], dtype=">f8")
    W.save(tmp_path / "w.safetensors", {"a": a}, manifest())
    raw, n, _ = header_of(tmp_path / "w.safetensors")
    assert raw[8 + n:] == np.array([1.0, -2.5, 3.25], dtype="<f8").tobytes()
    got, _ = W.load(tmp_path / "w.safetensors")
    assert got["a"].dtype == np.float64 and got["a"].dtype.isnative
    np.testing.assert_array_equal(got["a"], a)


def test_load_casts(tmp_path):
    t = fake_params(np.float64)
    W.save(tmp_path / "w.safetensors", t, manifest())
    got, _ = W.load(tmp_path / "w.safetensors", dtype=np.float32)
    assert all(a.dtype == np.float32 for a in got.values())
    np.testing.assert_array_equal(got["stem.weight"], t["stem.weight"].astype(np.float32))
    with pytest.raises(TypeError, match="dtype"):
        W.load(tmp_path / "w.safetensors", dtype=np.int32)


# ---------------------------------------------------------------------------------------------
# interop
# ---------------------------------------------------------------------------------------------

def test_safetensors_package_reads_our_files(tmp_path):
    t = {"a.weight": np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32),
         "b": np.arange(5, dtype=np.float32), "c": np.zeros((0,), np.float32)}
    W.save(tmp_path / "w.safetensors", t, manifest())
    got = safetensors.numpy.load_file(str(tmp_path / "w.safetensors"))
    assert_same_tensors({k: got[k] for k in t}, t)
    with safe_open(str(tmp_path / "w.safetensors"), framework="np") as f:
        assert json.loads(f.metadata()["lmref"]) == manifest()


def test_we_read_safetensors_package_files(tmp_path):
    t = {"z.weight": np.random.default_rng(3).standard_normal((2, 3, 3)),
         "a.bias": np.random.default_rng(4).standard_normal(7)}
    safetensors.numpy.save_file(t, str(tmp_path / "s.safetensors"), metadata={"lmref": json.dumps(manifest())})
    with pytest.raises(WeightsError, match="no lmref_sha256 checksum"):    # unchecked bytes: opt in
        W.load(tmp_path / "s.safetensors")
    got, m = W.load(tmp_path / "s.safetensors", require_checksum=False)
    assert set(got) == set(t)
    for k in t:
        assert bits_equal(got[k], t[k])
    assert m == manifest()
    # a plain safetensors file (ints, no manifest): read_safetensors reads it, load refuses it
    safetensors.numpy.save_file({"idx": np.arange(4, dtype=np.int64)}, str(tmp_path / "p.safetensors"))
    plain, meta = W.read_safetensors(tmp_path / "p.safetensors")
    assert bits_equal(plain["idx"], np.arange(4, dtype=np.int64)) and "lmref" not in meta
    with pytest.raises(WeightsError, match="no lmref manifest"):
        W.load(tmp_path / "p.safetensors")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_state_dict_round_trip(tmp_path, dtype):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)).to(dtype)
    net.train()(torch.randn(2, 3, 8, 8, dtype=dtype))            # non-trivial running stats
    sd = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    W.save(tmp_path / "t.safetensors", sd, manifest())
    got, _ = W.load(tmp_path / "t.safetensors")
    assert_same_tensors(got, sd)
    # and back into torch, strict: same keys, shapes, bits
    net2 = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5)).to(dtype)
    net2.load_state_dict({k: torch.from_numpy(v) for k, v in got.items()}, strict=True)
    for k, v in net.state_dict().items():
        assert torch.equal(v, net2.state_dict()[k]) or k.endswith("num_batches_tracked")


# ---------------------------------------------------------------------------------------------
# validation: every problem is a WeightsError naming it
# ---------------------------------------------------------------------------------------------

def good_entry(offsets=(0, 8), shape=(2,), dtype="F32"):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize("header,buffer,match", [
    ({"a": good_entry((0, 8))}, b"\0" * 4, "truncated"),                           # offsets beyond buffer
    ({"a": good_entry((0, 8))}, b"\0" * 12, "trailing bytes"),                      # buffer too long
    ({"a": good_entry((0, 8), dtype="Q8")}, b"\0" * 8, "unsupported dtype 'Q8'"),
    ({"a": good_entry((0, 8), dtype="BF16")}, b"\0" * 8, "unsupported dtype 'BF16'"),
    ({"a": good_entry((0, 8)), "b": good_entry((4, 12))}, b"\0" * 12, "overlaps"),
    ({"a": good_entry((0, 8)), "b": good_entry((12, 20))}, b"\0" * 20, "gap"),
    ({"a": good_entry((4, 12))}, b"\0" * 12, "gap"),                                # first not at 0
    ({"a": good_entry((0, 8), shape=(3,))}, b"\0" * 8, "needs 12 bytes"),
    ({"a": good_entry((8, 0))}, b"\0" * 8, "data_offsets"),
    ({"a": good_entry((0, 8), shape=(2.0,))}, b"\0" * 8, "shape"),
    ({"a": good_entry((0, 8), shape=(-2,))}, b"\0" * 8, "shape"),
    ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, "exactly"),
    ({"a": [1, 2]}, b"", "exactly"),
])
def test_structure_errors(tmp_path, header, buffer, match):
    write_raw(tmp_path / "bad", {**header, **lmref_meta()}, buffer)
    with pytest.raises(WeightsError, match=match):
        W.load(tmp_path / "bad")


def test_file_level_errors(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        W.load(tmp_path / "missing.safetensors")
    with pytest.raises(WeightsError, match="directory"):
        W.load(tmp_path)
    (tmp_path / "short").write_bytes(b"\x10\0\0")
    with pytest.raises(WeightsError, match="too short"):
        W.load(tmp_path / "short")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(WeightsError, match="too short"):
        W.load(tmp_path / "empty")
    write_raw(tmp_path / "long_n", {"a": good_entry(), **lmref_meta()}, b"\0" * 8, n=10_000)
    with pytest.raises(WeightsError, match="beyond the end of the file.*truncated"):
        W.load(tmp_path / "long_n")
    (tmp_path / "absurd").write_bytes((2 ** 62).to_bytes(8, "little") + b"{}" * 8)
    with pytest.raises(WeightsError, match="absurd"):
        W.load(tmp_path / "absurd")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(WeightsError, match="absurd|truncated"):
        W.load(tmp_path / "png")
    (tmp_path / "notjson").write_bytes((8).to_bytes(8, "little") + b"{'a': 1}")
    with pytest.raises(WeightsError, match="not valid UTF-8 JSON"):
        W.load(tmp_path / "notjson")
    (tmp_path / "notutf8").write_bytes((8).to_bytes(8, "little") + b'{"\xff":1} ')
    with pytest.raises(WeightsError, match="not valid UTF-8 JSON"):
        W.load(tmp_path / "notutf8")
    (tmp_path / "list").write_bytes((8).to_bytes(8, "little") + b"[1, 2]  ")
    with pytest.raises(WeightsError, match="JSON list, not an object"):
        W.load(tmp_path / "list")
    text = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    (tmp_path / "dup2").write_bytes(len(text).to_bytes(8, "little") + text + b"\0" * 4)
    with pytest.raises(WeightsError, match="duplicate key 'a'"):
        W.load(tmp_path / "dup2")
    write_raw(tmp_path / "meta", {"a": good_entry(), "__metadata__": {"lmref": 3}}, b"\0" * 8)
    with pytest.raises(WeightsError, match="str to str"):
        W.load(tmp_path / "meta")


@pytest.mark.parametrize("meta,match", [
    ({}, "no lmref manifest"),
    ({"other": "x"}, "no lmref manifest"),
    ({"lmref": "{not json"}, "manifest is not valid JSON"),
    ({"lmref": "[1]"}, "expected a JSON object"),
    ({"lmref": json.dumps(manifest(format_version=2))}, "unknown format_version 2"),
    ({"lmref": json.dumps(manifest(format_version="1"))}, "format_version missing or not an int"),
    ({"lmref": json.dumps({k: v for k, v in manifest().items() if k != "training"})}, r"missing keys \['training'\]"),
    ({"lmref": json.dumps({"format_version": 1})}, "missing keys"),
    ({"lmref": json.dumps(manifest(layout="ibug69"))}, "unknown landmark layout"),
    ({"lmref": json.dumps(manifest(config=[1]))}, "config must be a dict"),
    ({"lmref": json.dumps(manifest(input={"size": [8, 8]}))}, "input is missing"),
    ({"lmref": json.dumps(manifest(input={**manifest()["input"], "channels": 1}))}, "does not fit 1 channel"),
    ({"lmref": json.dumps(manifest(input={**manifest()["input"], "std": [1, 0, 1]}))}, "std has a zero"),
    ({"lmref": json.dumps(manifest(input={**manifest()["input"], "mean": [0.5]}))}, "input.mean must be 3"),
])
def test_manifest_errors(tmp_path, meta, match):
    write_raw(tmp_path / "bad", {"a": good_entry(), "__metadata__": meta}, b"\0" * 8)
    with pytest.raises(WeightsError, match=match):
        W.load(tmp_path / "bad")


def test_dtype_errors(tmp_path):
    write_raw(tmp_path / "int", {"a": good_entry(dtype="I32"), **lmref_meta()}, b"\0" * 8)
    with pytest.raises(WeightsError, match="'a' has dtype int32.*floating point"):
        W.load(tmp_path / "int")
    write_raw(tmp_path / "mixed", {"a": good_entry((0, 8)), "b": good_entry((8, 24), dtype="F64"), **lmref_meta()},
              b"\0" * 24)
    with pytest.raises(WeightsError, match="mixed dtypes"):
        W.load(tmp_path / "mixed")
    with pytest.raises(WeightsError, match="mixed dtypes"):
        W.save(tmp_path / "x", {"a": np.zeros(2, np.float32), "b": np.zeros(2)}, manifest())
    with pytest.raises(WeightsError, match="floating point"):
        W.save(tmp_path / "x", {"a": np.zeros(2, np.int64)}, manifest())
    with pytest.raises(TypeError, match="nested dict"):
        W.save(tmp_path / "x", {"a": {"b": np.zeros(2)}}, manifest())
    with pytest.raises(WeightsError, match="missing keys"):
        W.save(tmp_path / "x", {"a": np.zeros(2)}, {"format_version": 1})
    assert not os.path.exists(tmp_path / "x")


def test_checksum_catches_data_corruption(tmp_path):
    W.save(tmp_path / "w", fake_params(), manifest())
    raw = bytearray(open(tmp_path / "w", "rb").read())
    raw[-3] ^= 0x40                                              # inside the last tensor's bytes
    (tmp_path / "w2").write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="checksum mismatch"):
        W.load(tmp_path / "w2")


# ---------------------------------------------------------------------------------------------
# corruption fuzzing: a damaged file loads exactly the original or raises WeightsError
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def valid_file(tmp_path):
    t = fake_params()
    W.save(tmp_path / "ok.safetensors", t, manifest())
    raw = open(tmp_path / "ok.safetensors", "rb").read()
    n = int.from_bytes(raw[:8], "little")
    text_end = 8 + len(raw[8:8 + n].rstrip(b" "))               # padding spaces are [text_end, 8+n)
    return tmp_path, t, raw, text_end, 8 + n


def load_bytes(folder, data):
    """W.load on these bytes, without a file write per case (that dominates the run time);
    load(path) is load_bytes(file contents), and the file paths are tested above."""
    return W.load_bytes(bytes(data), "fuzz")


def test_every_truncation_raises(valid_file):
    folder, _, raw, _, _ = valid_file
    for length in range(len(raw)):
        with pytest.raises(WeightsError):
            load_bytes(folder, raw[:length])
    for length in (0, 7, 8, 20, len(raw) // 2, len(raw) - 1):      # and through a real file
        (folder / "cut").write_bytes(raw[:length])
        with pytest.raises(WeightsError):
            W.load(folder / "cut")


def test_every_single_byte_flip(valid_file):
    """Exhaustive over positions: every flip either raises WeightsError or loads exactly the
    original. Flips in the length prefix, the tensor table or the tensor bytes always raise (the
    checksum covers the parsed header and the buffer); a padding space turned into other JSON
    whitespace loads. (Renaming the checksum key raises: an lmref file must carry it.)"""
    folder, t, raw, pad0, pad1 = valid_file
    table_end = raw.index(b'"__metadata__"')                 # tensor entries come before it
    loaded = set()
    for pos in range(len(raw)):
        for mask in (0x01, 0x29, 0x2A, 0x80):
            bad = bytearray(raw)
            bad[pos] ^= mask
            try:
                got, m = load_bytes(folder, bad)
            except WeightsError:
                assert not (pad0 <= pos < pad1 and bad[pos] in b" \t\n\r"), pos
                continue
            assert_same_tensors(got, t)
            assert m == manifest()
            loaded.add(pos)
            assert 8 <= pos and not (pos < table_end or pos >= pad1), f"byte {pos} ^ {mask:#x} loaded"
    # ' '^0x29 = '\t' and ' '^0x2A = '\n' load; ' '^0x01 = '!' and ' '^0x80 = 0xA0 do not
    assert pad1 > pad0 and set(range(pad0, pad1)) <= loaded


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_corruption(valid_file, data):
    folder, t, raw, pad0, pad1 = valid_file
    bad = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        bad[pos] ^= data.draw(st.integers(1, 255))
    if data.draw(st.booleans()):
        bad = bad[:data.draw(st.integers(0, len(bad)))]
    try:
        got, m = load_bytes(folder, bad)
    except WeightsError:
        return
    # it loaded: then it is the original, and no tensor byte or table byte changed
    assert len(bad) == len(raw) and bad[pad1:] == raw[pad1:]
    assert_same_tensors(got, t)
    assert m == manifest()


# ---------------------------------------------------------------------------------------------
# flatten / unflatten / check_params
# ---------------------------------------------------------------------------------------------

def test_flatten_unflatten():
    flat = {"stages.2.1.conv.weight": 1, "stages.2.1.bn.bias": 2, "stages.10.x": 3, "head": 4}
    nested = W.unflatten(flat)
    assert nested == {"stages": {"2": {"1": {"conv": {"weight": 1}, "bn": {"bias": 2}}}, "10": {"x": 3}}, "head": 4}
    assert W.flatten(nested) == flat
    with pytest.raises(WeightsError, match="prefix"):
        W.unflatten({"a.b": 1, "a": 2})
    with pytest.raises(WeightsError, match="prefix"):
        W.unflatten({"a": 2, "a.b": 1})
    with pytest.raises(WeightsError, match="bad parameter name"):
        W.unflatten({"a..b": 1})
    with pytest.raises(WeightsError, match="without dots"):
        W.flatten({"a.b": {"c": 1}})
    with pytest.raises(WeightsError, match="non-empty str"):
        W.flatten({2: 1})


def test_check_params():
    shapes = {"a.weight": (2, 3), "a.bias": (2,), "b": (4,)}
    ok = {"a.weight": np.zeros((2, 3), np.float32), "a.bias": np.zeros(2, np.float32), "b": np.zeros(4, np.float32)}
    W.check_params(ok, shapes)
    W.check_params(W.unflatten(ok), shapes)                      # nested is accepted too
    with pytest.raises(WeightsError, match=r"1 missing: b"):
        W.check_params({k: v for k, v in ok.items() if k != "b"}, shapes)
    with pytest.raises(WeightsError, match=r"1 unexpected: c\.d"):
        W.check_params({**ok, "c.d": np.zeros(1, np.float32)}, shapes)
    with pytest.raises(WeightsError, match=r"a\.weight: \(3, 2\) != expected \(2, 3\)"):
        W.check_params({**ok, "a.weight": np.zeros((3, 2), np.float32)}, shapes)
    with pytest.raises(WeightsError, match="missing: b.*unexpected: c"):
        W.check_params({"a.weight": ok["a.weight"], "a.bias": ok["a.bias"], "c": ok["b"]}, shapes)
    with pytest.raises(WeightsError, match="floating point"):
        W.check_params({**ok, "b": np.zeros(4, np.int64)}, shapes)
    with pytest.raises(WeightsError, match="mixed dtypes"):
        W.check_params({**ok, "b": np.zeros(4, np.float64)}, shapes)


# ---------------------------------------------------------------------------------------------
# Model / load_model with the fake architecture
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_load_model_runs_forward(tmp_path, dtype):
    import _fake_model
    p = fake_params(np.float64, seed=5)
    W.save(tmp_path / "m.safetensors", p, manifest())
    model = W.load_model(tmp_path / "m.safetensors", dtype=dtype)
    assert model.arch == "fake" and model.dtype == dtype
    assert model.config == _fake_model.Config(in_channels=3, hidden=(5, 4), num_points=2,
                                              head=_fake_model.Head(bias=True))
    assert model.params["blocks"]["0"]["weight"].dtype == dtype
    assert model.layout.name == "ibug68" and model.manifest["extra_key"] == ["kept", 1, 2.5, None]
    x = np.random.default_rng(6).standard_normal((2, 3, 4, 4))
    # independent computation from the flat dict
    z = np.maximum(x.mean(axis=(2, 3)) @ p["stem.weight"].T + p["stem.bias"], 0)
    want = ((z @ p["blocks.0.weight"].T) @ p["head.weight"].T + p["head.bias"]).reshape(2, 2, 2)
    y = model(x)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, want, rtol=1e-12 if dtype == np.float64 else 1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="float"):
        model(x.astype(np.uint8))
    assert "fake" in repr(model)


def test_model_rejects_bad_params_and_manifest(tmp_path):
    p = fake_params()
    W.save(tmp_path / "shape.safetensors", {**p, "head.bias": np.zeros(5, np.float32)}, manifest())
    with pytest.raises(WeightsError, match=r"shape.safetensors.*head\.bias: \(5,\) != expected \(4,\)"):
        W.load_model(tmp_path / "shape.safetensors")
    W.save(tmp_path / "extra.safetensors", {**p, "tail.weight": np.zeros(1, np.float32)}, manifest())
    with pytest.raises(WeightsError, match=r"unexpected: tail\.weight"):
        W.load_model(tmp_path / "extra.safetensors")
    W.save(tmp_path / "arch.safetensors", p, manifest(architecture="nonesuch"))
    with pytest.raises(WeightsError, match="unknown architecture 'nonesuch'"):
        W.load_model(tmp_path / "arch.safetensors")
    W.save(tmp_path / "cfg.safetensors", p, manifest(config={"in_channels": 3, "depth": 2}))
    with pytest.raises(WeightsError, match=r"manifest config: unknown keys \['depth'\]"):
        W.load_model(tmp_path / "cfg.safetensors")
    # the config decides the shapes: a different in_channels no longer fits
    W.save(tmp_path / "c1.safetensors", p, manifest(config={"in_channels": 1, "hidden": [5, 4], "num_points": 2}))
    with pytest.raises(WeightsError, match=r"stem\.weight: \(5, 3\) != expected \(5, 1\)"):
        W.load_model(tmp_path / "c1.safetensors")


def test_model_nested_config_changes_shapes(tmp_path):
    import _fake_model
    cfg = _fake_model.Config(head=_fake_model.Head(bias=False))
    p = fake_params(cfg=cfg)
    W.save(tmp_path / "nb.safetensors", p, manifest(config={"head": {"bias": False}}))
    model = W.load_model(tmp_path / "nb.safetensors")
    assert model.config == cfg and "bias" not in model.params["head"]
    W.save(tmp_path / "nb2.safetensors", p, manifest(config={"head": {"bias": False, "scale": 2}}))
    with pytest.raises(WeightsError, match=r"config\.head: unknown keys \['scale'\] for _fake_model\.Head"):
        W.load_model(tmp_path / "nb2.safetensors")


def test_model_from_nested_params():
    p = fake_params(np.float64)
    m = W.Model(W.unflatten(p), manifest())
    assert m.dtype == np.float64 and set(W.flatten(m.params)) == set(p)
    assert W.Model(fake_params(np.float16), manifest()).dtype == np.float32
    with pytest.raises(TypeError, match="float32 or float64"):
        W.Model(p, manifest(), dtype=np.float16)
