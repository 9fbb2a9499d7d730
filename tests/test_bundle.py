"""lmref.bundle: golden bundles (record, write, load), the documented file format, comparison with
first-failure reporting, and the onnxruntime path against torch_impl's ONNX export."""
import json
import os
import zipfile

import numpy as np
import onnx
import pytest
import torch
from _student import export_student, onnx_from_lmref

from lmref import bundle as B
from lmref import trace
from lmref.detect import shipped_models
from lmref.weights import load_model


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    d = tmp_path_factory.mktemp("student")
    export_student(d / "s.safetensors", size=64, onnx_path=d / "s.onnx")
    return d / "s.safetensors", d / "s.onnx"


@pytest.fixture(scope="module")
def golden(student):
    weights_path, _ = student
    m = load_model(weights_path)
    return B.record(weights_path, B.random_input(m.manifest, seed=0), source="test")


def test_record_holds_every_traced_op_in_both_dtypes(student, golden):
    weights_path, _ = student
    model = load_model(weights_path, dtype=np.float64)
    with trace() as t:
        out = model(golden.input)
    names = [r.name for r in t if isinstance(r.output, np.ndarray)]
    assert golden.names("op") == names
    assert golden.names("output") == list(out)
    for r in t:
        np.testing.assert_array_equal(golden.array(r.name, "float64"), r.output)
    for k, v in out.items():
        np.testing.assert_array_equal(golden.array(k), v)
    # the float32 run is a separate run, close to the float64 one but not equal to it
    lm32 = golden.array("landmarks", "float32")
    assert lm32.dtype == np.float32
    np.testing.assert_allclose(lm32, out["landmarks"], rtol=1e-4, atol=1e-3)
    assert golden.manifest["model"]["architecture"] == "aam"
    assert len(golden.manifest["weights"]["sha256"]) == 64
    nested = [e for e in golden.entries if e.parent is not None]
    assert nested and all(e.name.startswith(e.parent + "/") for e in nested)   # aam_fusion/e2p


def test_random_input_is_reproducible_and_normalised():
    man = {"input": {"size": [4, 5], "channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.25, 1.0]}}
    a, b = B.random_input(man, 3), B.random_input(man, 3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1, 3, 4, 5) and a.dtype == np.float64
    pixels = (a * np.array([0.5, 0.25, 1.0])[None, :, None, None] + 0.5) * 255
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-9)   # whole pixel values
    assert not np.array_equal(a, B.random_input(man, 4))


@pytest.mark.parametrize("suffix", ["", ".npz"])
def test_write_load_roundtrip(golden, tmp_path, suffix):
    path = tmp_path / f"g{suffix}"
    B.write(golden, path)
    back = B.load(path)
    assert [e.to_json() for e in back.entries] == [e.to_json() for e in golden.entries]
    assert back.manifest == json.loads(json.dumps(golden.manifest))
    for e in golden.entries:
        for dt in ("float64", "float32"):
            a = back.array(e.id, dt)
            assert a.dtype == np.dtype(dt)
            np.testing.assert_array_equal(a, golden.array(e.id, dt))
    with pytest.raises(B.BundleError, match="already exists"):
        B.write(golden, path)


def _parse_npy_like_c(data):
    """The reader docs/golden-bundle.md describes, byte by byte (no np.load)."""
    assert data[:6] == b"\x93NUMPY" and data[6] == 1
    hlen = data[8] | (data[9] << 8)
    assert (10 + hlen) % 64 == 0
    header = data[10:10 + hlen].decode("ascii")
    assert header.endswith("\n")
    descr = header.split("'descr': '")[1][:3]
    shape = tuple(int(s) for s in header.split("'shape': (")[1].split(")")[0].split(",") if s.strip())
    assert "'fortran_order': False" in header
    return np.frombuffer(data[10 + hlen:], dtype=descr).reshape(shape)


def test_npz_is_plain_uncompressed_zip_readable_with_numpy_alone(golden, tmp_path):
    path = tmp_path / "g.npz"
    B.write(golden, path)
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        names = [i.filename for i in infos]
        assert names[:3] == ["manifest.json", "index.json", "index.tsv"]
        raw = z.read("tensors/op0003.f32.npy")
    np.testing.assert_array_equal(_parse_npy_like_c(raw), golden.array("op0003", "float32"))
    with np.load(path, allow_pickle=False) as z:
        index = json.loads(z["index.json"])
        e = index["entries"][5]
        np.testing.assert_array_equal(z[e["files"]["float64"][:-4]], golden.array(e["id"], "float64"))
        tsv = z["index.tsv"].decode().splitlines()
    assert tsv[0].split("\t") == ["id", "kind", "name", "shape", "float64", "float32"]
    row = tsv[1 + 5].split("\t")
    assert row[0] == e["id"] and row[2] == e["name"] and row[3] == ",".join(map(str, e["shape"]))


def test_failed_write_leaves_nothing(golden, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = B._npy_bytes

    def failing(a):
        calls["n"] += 1
        if calls["n"] == 7:
            raise OSError("disk full")
        return real(a)

    monkeypatch.setattr(B, "_npy_bytes", failing)
    for name in ("d", "f.npz"):
        calls["n"] = 0
        with pytest.raises(OSError, match="disk full"):
            B.write(golden, tmp_path / name)
    assert os.listdir(tmp_path) == []


def test_load_rejects_what_is_not_a_bundle(golden, tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip at all")
    with pytest.raises(B.BundleError, match="not a bundle"):
        B.load(tmp_path / "x.npz")
    with pytest.raises(B.BundleError, match="no such file"):
        B.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(B.BundleError, match="index.json"):
        B.load(tmp_path / "plain.npz")
    B.write(golden, tmp_path / "g.npz")
    data = (tmp_path / "g.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])      # truncated: central directory gone
    with pytest.raises(B.BundleError):
        B.load(tmp_path / "cut.npz")


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------

def _own_float32(golden):
    return {e.name: golden.array(e.id, "float32") for e in golden.entries}


def test_lmref_float32_run_passes_against_float64(golden):
    report = B.compare(golden, _own_float32(golden))
    assert report.ok and len(report.compared) == len(golden)
    assert max(r["err"] for r in report.compared) < 1e-4 / 2     # half the default tolerance
    assert B.format_report(report).splitlines()[-1].startswith("PASS")


def test_perturbed_tensors_name_the_first_diverging_op(golden):
    other = _own_float32(golden)
    ops = golden.names("op")
    k = len(ops) // 2
    for name in ops[k:]:                      # a port that goes wrong at op k and stays wrong
        other[name] = other[name] * np.float32(1.01) + np.float32(0.01)
    report = B.compare(golden, other)
    assert not report.ok
    assert report.first_failure["name"] == ops[k]
    assert all(r["status"] == "ok" for r in report.rows if r["name"] in ops[:k])
    last = B.format_report(report).splitlines()[-1]
    assert last.startswith("FAIL") and ops[k] in last


def test_compare_finds_tensors_by_name_id_and_mapping(golden):
    ops = golden.names("op")
    e0, e1, e2 = golden.entry(ops[0]), golden.entry(ops[1]), golden.entry(ops[2])
    a2 = golden.array(e2.id)
    nhwc = a2.transpose(0, 2, 3, 1)
    other = {e0.id: golden.array(e0.id), "port/x": golden.array(e1.id)[0], "port/nhwc": nhwc}
    report = B.compare(golden, other, mapping={e1.name: "port/x", e2.name: ("port/nhwc", [0, 3, 1, 2])})
    assert report.ok and [r["name"] for r in report.compared] == [e0.name, e1.name, e2.name]
    assert report.compared[1]["other"] == "port/x"          # [C, H, W] reshaped to [1, C, H, W]
    # without the transpose the NHWC tensor does not fit: a failure, not a silent skip
    report = B.compare(golden, other, mapping={e1.name: "port/x", e2.name: "port/nhwc"})
    assert report.first_failure["name"] == e2.name and "shape" in report.first_failure["note"]


def test_compare_failure_modes(golden, tmp_path):
    name = golden.names("op")[3]
    bad = golden.array(name).copy()
    bad.flat[0] = np.nan
    r = B.compare(golden, {name: bad})
    assert not r.ok and "NaN" in r.first_failure["note"]
    r = B.compare(golden, {"something else": np.zeros(3)})
    assert not r.ok and not r.compared
    assert "no tensor of the port matched" in B.format_report(r)
    r = B.compare(golden, {}, mapping={name: "absent"})
    assert not r.ok and "does not have" in r.first_failure["note"]
    with pytest.raises(B.BundleError, match="does not have"):
        B.compare(golden, {}, mapping={"not.in:bundle": "x"})
    (tmp_path / "m.json").write_text("[1, 2]")
    with pytest.raises(B.BundleError, match="JSON object"):
        B.read_mapping(tmp_path / "m.json")


def test_tolerance_follows_the_port_dtype(golden):
    f64 = {e.name: golden.array(e.id, "float64") for e in golden.entries}
    r = B.compare(golden, f64)
    assert r.ok and r.rtol == 1e-9
    assert max(row["max_abs"] for row in r.compared) == 0.0
    r32 = B.compare(golden, _own_float32(golden), reference="float32")
    assert r32.ok and r32.rtol == 1e-4 and max(row["max_abs"] for row in r32.compared) == 0.0


def _off_by(golden, name, delta, dtype):
    """The port's tensor for ``name``: the bundle's float64 value with ``delta`` added to its
    largest-magnitude element, in ``dtype`` (every other element exact or float32-rounded)."""
    ref = golden.array(name, "float64")
    val = ref.copy()
    k = np.argmax(np.abs(ref))
    val.flat[k] += delta
    return val.astype(dtype)


@pytest.mark.parametrize("port_dtype", ["float64", "float32"])
def test_compare_passes_just_inside_and_fails_just_outside_the_default_tolerance(golden, port_dtype):
    """The verdict follows the tolerance the report states, max|diff| <= atol + rtol * max|ref|, at
    the default tolerance of the port's dtype: 10% inside passes, 10% outside fails (a verdict
    taken at another tolerance than the one reported fails one of the two)."""
    name = golden.names("op")[5]
    scale = float(np.abs(golden.array(name, "float64")).max())
    tol = B.DEFAULT_TOL[port_dtype]
    threshold = tol["atol"] + tol["rtol"] * scale
    for factor, ok in ((0.9, True), (1.1, False)):
        report = B.compare(golden, {name: _off_by(golden, name, factor * threshold, port_dtype)})
        row = report.compared[0]
        assert (report.rtol, report.atol) == (tol["rtol"], tol["atol"])
        assert report.ok is ok and row["status"] == ("ok" if ok else "FAIL"), (factor, row)
        assert row["max_abs"] == pytest.approx(factor * threshold, rel=1e-3)


def test_compare_scale_is_the_largest_magnitude_even_when_negative(golden):
    """scale = max |ref|, so a tensor whose largest magnitude is negative gets the same tolerance as
    its mirror image: 10% inside passes."""
    name = next(n for n in golden.names("op")
                if -golden.array(n, "float64").min() > 2 * max(golden.array(n, "float64").max(), 0))
    scale = float(np.abs(golden.array(name, "float64")).max())
    threshold = B.DEFAULT_TOL["float64"]["atol"] + B.DEFAULT_TOL["float64"]["rtol"] * scale
    report = B.compare(golden, {name: _off_by(golden, name, 0.9 * threshold, "float64")})
    assert report.ok and report.compared[0]["err"] == pytest.approx(0.9 * threshold / scale, rel=1e-3)


def test_compare_at_the_exact_threshold(golden):
    """max|diff| equal to the tolerance passes (<=), one float below it fails; with rtol the same
    holds at atol + rtol * scale computed as compare computes it."""
    name = golden.names("op")[5]
    val = _off_by(golden, name, 1e-3, "float64")
    max_abs = B.compare(golden, {name: val}, rtol=0, atol=1.0).compared[0]["max_abs"]
    assert B.compare(golden, {name: val}, rtol=0, atol=max_abs).ok
    assert not B.compare(golden, {name: val}, rtol=0, atol=np.nextafter(max_abs, 0)).ok
    scale = float(np.abs(golden.array(name, "float64")).max())
    rtol = max_abs / scale
    while rtol * scale >= max_abs:                       # step below, then to the smallest rtol whose
        rtol = np.nextafter(rtol, 0)                     # threshold rtol * scale reaches max_abs
    below, rtol = rtol, np.nextafter(rtol, 1)
    assert B.compare(golden, {name: val}, rtol=rtol, atol=0.0).ok
    assert not B.compare(golden, {name: val}, rtol=below, atol=0.0).ok


def test_read_tensors_from_npz_dir_and_bundle(golden, tmp_path):
    names = golden.names("op")[:3]
    np.savez(tmp_path / "port.npz", **{n: golden.array(n, "float32") for n in names})
    got = B.read_tensors(tmp_path / "port.npz")
    assert list(got) == names                                      # ':' and '/' survive in npz keys
    (tmp_path / "dir").mkdir()
    for n in names:
        np.save(tmp_path / "dir" / f"{golden.entry(n).id}.npy", golden.array(n))
    r = B.compare(golden, B.read_tensors(tmp_path / "dir"))
    assert r.ok and [x["name"] for x in r.compared] == names
    B.write(golden, tmp_path / "b")
    assert B.compare(golden, B.read_tensors(tmp_path / "b")).ok


# ---------------------------------------------------------------------------------------------
# onnxruntime
# ---------------------------------------------------------------------------------------------

def test_onnx_export_matches_bundle_outputs_and_intermediates(student, golden):
    _, onnx_path = student
    port, pairs = B.run_onnx(onnx_path, golden)
    report = B.compare(golden, port)
    assert report.ok, B.format_report(report)
    compared = {r["name"] for r in report.compared}
    assert set(golden.names("output")) <= compared
    # intermediate values of every backbone stage were exposed and compared
    for stage in range(5):
        assert any(n.startswith(f"backbone.stages.{stage}.") for n in pairs), stage
    assert pairs["backbone.stem:silu"].startswith("/stem/")
    # a folded BatchNorm: the Conv output is paired with the batch norm, never with the bare conv
    assert "backbone.stem.conv:conv2d" not in pairs and "backbone.stem.bn:batch_norm" in pairs


def _perturb_conv(onnx_path, node_name, out_path, factor=1.05):
    m = onnx.load(onnx_path)
    node = next(n for n in m.graph.node if n.name == node_name)
    init = next(i for i in m.graph.initializer if i.name == node.input[1])
    w = onnx.numpy_helper.to_array(init) * factor
    init.CopyFrom(onnx.numpy_helper.from_array(w.astype(np.float32), init.name))
    onnx.save(m, out_path)


def test_perturbed_onnx_fails_at_the_perturbed_block(student, golden, tmp_path):
    _, onnx_path = student
    _perturb_conv(onnx_path, "/stages/stages.2/stages.2.0/conv2_kxk/conv/Conv", tmp_path / "bad.onnx")
    port, _ = B.run_onnx(tmp_path / "bad.onnx", golden)
    report = B.compare(golden, port)
    assert not report.ok
    assert report.first_failure["name"] == "backbone.stages.2.0.conv2_kxk.bn:batch_norm"
    before = report.rows[: report.rows.index(report.first_failure)]
    assert all(r["status"] in ("ok", "missing") for r in before)


def test_expose_onnx_values(student, tmp_path):
    _, onnx_path = student
    m = B.expose_onnx_values(onnx_path, ["/stem/act/Mul_output_0"], tmp_path / "x.onnx")
    assert m.graph.output[-1].name == "/stem/act/Mul_output_0"
    assert onnx.load(tmp_path / "x.onnx").graph.output[-1].name == "/stem/act/Mul_output_0"
    with pytest.raises(B.BundleError, match="no value named"):
        B.expose_onnx_values(onnx_path, ["nope"])
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(B.BundleError, match="not a readable ONNX model"):
        B.run_onnx(tmp_path / "junk.onnx", B.Bundle({}, []))


def test_shipped_or_random_student_bundle_matches_its_onnx_export(tmp_path):
    """The shipped student (or, until one is shipped, a random-weight student at 256x256) against its
    own ONNX export in onnxruntime: outputs and every exposed intermediate within tolerance."""
    shipped = shipped_models()
    path = shipped.get("student")
    if path is None:
        path = tmp_path / "student.safetensors"
        export_student(path, size=256)
    onnx_from_lmref(path, tmp_path / "student.onnx")
    m = load_model(path)
    golden = B.record(path, B.random_input(m.manifest, seed=1))
    port, pairs = B.run_onnx(tmp_path / "student.onnx", golden)
    report = B.compare(golden, port)
    assert report.ok, B.format_report(report)
    assert len(report.compared) >= 60
