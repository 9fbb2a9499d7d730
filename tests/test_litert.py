"""LiteRT (TFLite) ports.

Always run (no extra needed): the static facts and the TFLite 2.11 gate (lmref.ports.litert,
standard library only) on the committed tiny unfold/fold files, the reader on hostile bytes, the
error without a runtime.

Slow, and they need the [litert] extra (``pip install -e ".[dev,litert]"`` in a fresh venv; CI does
not install it, see README "LiteRT"): the reader against LiteRT's own schema code, conversion with
litert-torch, a random student compared op by op in ai-edge-litert (and a broken one failing where
it was broken), the shipped student in both forms. Without the extra they fail, saying so.

The committed files ``tests/data/litert/patches_rank{5,6}.tflite`` (6 KB and 3 KB) are
``torch_impl.port.TinyPatches`` converted by ``python -m torch_impl.port tiny tests/data/litert``.
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmref import bundle
from lmref.bundle import BundleError
from lmref.ports import litert

DATA = Path(__file__).resolve().parent / "data" / "litert"
RANK5, RANK6 = DATA / "patches_rank5.tflite", DATA / "patches_rank6.tflite"
REPO = Path(__file__).resolve().parents[1]


def _need_litert():
    missing = [m for m in ("litert_torch", "ai_edge_litert") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(f"needs the [litert] extra ({', '.join(missing)} not installed): "
                    "pip install -e '.[dev,litert]' in a fresh venv", pytrace=False)


# ---------------------------------------------------------------------------------------------
# static facts and the gate: no runtime, no converter
# ---------------------------------------------------------------------------------------------

def test_static_facts_of_both_forms():
    f5, f6 = litert.read(RANK5), litert.read(RANK6)
    assert (f5.max_rank, f6.max_rank) == (5, 6)
    assert ("TRANSPOSE", 4) in f5.op_codes and ("SLICE", 5) in f5.op_codes
    assert ("TRANSPOSE", 6) in f6.op_codes
    assert (f5.min_runtime_version, f6.min_runtime_version) == ("2.5.0", "2.12.0")
    assert [t.shape for t in f6.tensors_of_rank(6)] == [[1, 2, 2, 2, 2, 2]] * 4
    sig = f5.signatures["serving_default"]
    assert list(sig["inputs"]) == ["args_0"] and list(sig["outputs"]) == ["output_0"]


def test_gate_passes_rank5_and_names_transpose_v6_for_rank6():
    assert litert.fits_runtime(litert.read(RANK5), "2.11") == []
    reasons = litert.fits_runtime(litert.read(RANK6), "2.11")
    assert len(reasons) == 3
    assert "min_runtime_version is 2.12.0" in reasons[0]
    assert reasons[1].startswith("TRANSPOSE version 6")
    assert "rank 6 > 5" in reasons[2]
    # the same file is fine for a runtime that has the 6-D transpose; an older target fails the rank-5 file
    assert litert.fits_runtime(litert.read(RANK6), "2.12") == []
    assert litert.fits_runtime(litert.read(RANK5), "2.4") == ["the converter's min_runtime_version is 2.5.0 (> 2.4)"]


def test_gate_without_min_runtime_metadata_fails(tmp_path):
    data = RANK5.read_bytes()
    assert data.count(b"min_runtime_version") == 1
    p = tmp_path / "nometa.tflite"
    p.write_bytes(data.replace(b"min_runtime_version", b"xin_runtime_version"))
    facts = litert.read(p)
    assert facts.min_runtime_version is None and "xin_runtime_version" in facts.metadata
    assert litert.fits_runtime(facts, "2.11") == [
        "the file has no min_runtime_version metadata: nothing says which runtime it needs"]


def test_gate_with_a_garbled_min_runtime_version(tmp_path):
    data = RANK5.read_bytes()
    assert data.count(b"2.5.0\0") == 1
    p = tmp_path / "garbled.tflite"
    p.write_bytes(data.replace(b"2.5.0\0", b"2/5.0\0"))
    assert litert.fits_runtime(litert.read(p), "2.11") == ["the file's min_runtime_version '2/5.0' is not a version number"]


def test_committed_facts_files_match_the_files():
    from torch_impl.port import facts_path, facts_record
    for p in (RANK5, RANK6):
        committed = json.loads(Path(facts_path(p)).read_text())
        fresh = facts_record(p)
        assert {k: v for k, v in committed.items() if k != "source"} == fresh


def test_facts_command_exit_status():
    run = [sys.executable, "-m", "lmref.ports.litert", "facts"]
    ok = subprocess.run(run + [str(RANK5)], capture_output=True, text=True, cwd=REPO)
    bad = subprocess.run(run + [str(RANK6)], capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0 and json.loads(ok.stdout)["fits_tflite_2.11"] is True
    assert bad.returncode == 1 and "TRANSPOSE version 6" in bad.stdout
    missing = subprocess.run(run + ["nope.tflite"], capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 2 and missing.stderr.startswith("lmref: error: nope.tflite: no such file")


def test_module_path_of_litert_torch_names():
    name = ("pkg.AAM/torch.nn.modules.container.Sequential_stages/torch.nn.modules.container.Sequential_2/"
            "pkg.MobileViTv2Block_1/pkg.ConvNormAct_conv_kxk/torch.nn.modules.batchnorm.BatchNorm2d_bn;;"
            "pkg.AAM/other.Conv2d_conv;2")
    assert litert._module_path(name) == ("stages", "2", "1", "conv_kxk", "bn")
    assert litert._module_path("pkg.AAM;4") == ()
    assert litert._module_path("serving_default_args_0") is None
    assert litert._module_path("arith.constant/x") is None


def test_lmref_side_imports_no_torch_and_no_runtime():
    code = ("import sys, lmref.ports.litert as l; l.read(sys.argv[1]); "
            "assert not {'torch', 'ai_edge_litert', 'tflite_runtime', 'litert_torch'} & set(sys.modules)")
    subprocess.run([sys.executable, "-c", code, str(RANK6)], check=True, cwd=REPO)


def test_running_without_a_runtime_says_what_to_install(monkeypatch):
    def no_module(name, *a, **k):
        raise ImportError(f"No module named {name!r}")
    monkeypatch.setattr(litert.importlib, "import_module", no_module)
    with pytest.raises(BundleError, match=r"needs ai-edge-litert \(pip install ai-edge-litert"):
        litert.invoke(RANK5, np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(BundleError, match="runtime: expected one of"):
        litert._interpreter("onnxruntime")


# ---------------------------------------------------------------------------------------------
# the reader: against LiteRT's generated schema code, and on hostile bytes
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("path", [RANK5, RANK6], ids=["rank5", "rank6"])
def test_reader_agrees_with_litert_schema_code(path):
    _need_litert()
    from ai_edge_litert import schema_py_generated as schema
    buf = path.read_bytes()
    m = schema.Model.GetRootAsModel(buf, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    assert names == dict(enumerate(litert.OP_NAMES))                  # our table of op names
    facts = litert.read(path)
    codes = [(names[max(m.OperatorCodes(i).BuiltinCode(), m.OperatorCodes(i).DeprecatedBuiltinCode())],
              m.OperatorCodes(i).Version()) for i in range(m.OperatorCodesLength())]
    assert facts.op_codes == codes
    g = m.Subgraphs(0)
    tensors = [(g.Tensors(i).Name().decode(), g.Tensors(i).ShapeAsNumpy().tolist() if g.Tensors(i).ShapeLength() else [],
                g.Tensors(i).Buffer()) for i in range(g.TensorsLength())]
    assert [(t.name, t.shape, t.buffer) for t in facts.subgraphs[0]["tensors"]] == tensors
    ops = [(g.Operators(i).InputsAsNumpy().tolist(), g.Operators(i).OutputsAsNumpy().tolist())
           for i in range(g.OperatorsLength())]
    assert [(o.inputs, o.outputs) for o in facts.subgraphs[0]["operators"]] == ops


def test_reader_refuses_foreign_and_empty_files(tmp_path):
    for name, data in [("empty.tflite", b""), ("text.tflite", b"hello, not a model" * 3),
                       ("zeros.tflite", bytes(64)), ("onnx.tflite", b"\x08\x07\x12\x04onnx" + bytes(40))]:
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(BundleError, match="not a readable .tflite file"):
            litert.read(p)
    with pytest.raises(BundleError, match="is a directory"):
        litert.read(tmp_path)


@given(cut=st.integers(0, RANK5.stat().st_size - 1))
def test_reader_on_truncated_files(cut, tmp_path_factory):
    p = tmp_path_factory.mktemp("cut") / "cut.tflite"
    p.write_bytes(RANK5.read_bytes()[:cut])
    try:
        facts = litert.read(p)
    except BundleError as e:
        assert "not a readable .tflite file" in str(e)
    else:                               # a cut inside trailing data can leave the tables whole
        assert facts.max_rank == 5


@given(flips=st.lists(st.tuples(st.integers(0, RANK6.stat().st_size - 1), st.integers(1, 255)), min_size=1, max_size=8))
def test_reader_on_corrupted_bytes(flips, tmp_path_factory):
    data = bytearray(RANK6.read_bytes())
    for pos, x in flips:
        data[pos] ^= x
    p = tmp_path_factory.mktemp("flip") / "flip.tflite"
    p.write_bytes(bytes(data))
    try:
        facts = litert.read(p)
    except BundleError as e:
        assert "not a readable .tflite file" in str(e)
    else:
        litert.fits_runtime(facts, "2.11")              # whatever it read, the gate can judge it
        facts.summary()


# ---------------------------------------------------------------------------------------------
# conversion (litert-torch) and comparison (ai-edge-litert): slow, need the [litert] extra
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_fresh_tiny_conversion_has_the_committed_facts(tmp_path):
    _need_litert()
    from torch_impl.port import facts_path, write_tiny
    fresh = write_tiny(tmp_path)
    for form in ("rank5", "rank6"):
        committed = json.loads(Path(facts_path(DATA / f"patches_{form}.tflite")).read_text())
        for key in ("max_tensor_rank", "op_codes", "min_runtime_version", "fits_tflite_2.11", "reasons_not_2.11",
                    "inputs", "outputs"):
            assert fresh[form][key] == committed[key], (form, key)


@pytest.mark.slow
def test_tiny_files_run_and_agree_with_torch():
    _need_litert()
    import torch

    from torch_impl.port import TinyPatches
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    for form, path in (("rank5", RANK5), ("rank6", RANK6)):
        torch.manual_seed(0)                                    # the weights write_tiny converted
        want = TinyPatches(form == "rank5")(torch.from_numpy(x)).detach().numpy()
        _, outputs, info = litert.invoke(path, x)
        assert info["runtime"].startswith("ai_edge_litert")
        np.testing.assert_allclose(outputs["output_0"], want, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    """A random-weight student (64x64, rank-5 patches, randomised norms), its golden bundle and its
    LiteRT conversion."""
    _need_litert()
    from tests._student import export_student
    from torch_impl.port import convert_litert
    d = tmp_path_factory.mktemp("litert_student")
    export_student(d / "s.safetensors", size=64, seed=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    facts = convert_litert(d / "s.safetensors", d / "s.tflite")
    b = bundle.record(str(d / "s.safetensors"), bundle.random_input(_manifest(d / "s.safetensors"), seed=1))
    return d, facts, b


def _manifest(path):
    from lmref import weights
    return weights.load(path)[1]


@pytest.mark.slow
def test_converted_student_facts(tiny_student):
    d, facts, _ = tiny_student
    assert facts["max_tensor_rank"] == 5 and facts["fits_tflite_2.11"] and facts["source"]["patches"] == "rank5"
    assert json.loads((d / "s.facts.json").read_text()) == facts
    assert set(facts["outputs"]) == {"fusion_heatmaps", "heatmaps", "pointmaps", "edgemaps", "coords", "landmarks",
                                     "features"}


@pytest.mark.slow
def test_student_port_agrees_op_by_op(tiny_student):
    d, _, b = tiny_student
    port, pairs, facts, info = litert.run_litert(d / "s.tflite", b)
    report = bundle.compare(b, port)
    assert report.ok, bundle.format_report(report)
    compared = {r["name"] for r in report.compared}
    ops = [e for e in b.entries if e.kind == "op" and e.parent is None]
    # what survives conversion: every BatchNorm (at its folded conv), activation, norm, attention
    # block and unfold/fold; a conv followed by its BatchNorm does not (fused)
    for e in ops:
        if e.op in ("batch_norm", "silu", "group_norm", "separable_self_attention", "unfold_patches", "fold_patches"):
            assert e.name in compared, e.name
    fused = [e for e, nxt in zip(ops, ops[1:]) if e.op == "conv2d" and nxt.op == "batch_norm"]
    assert fused and not any(e.name in compared for e in fused)
    assert set(b.names("output")) <= compared
    assert 100 <= len(pairs) < len(ops)
    assert all(p["how"] == "auto" for p in pairs.values())


def _filter_span(path, facts, tensor_index):
    """(start, count) of the float32 data of a constant tensor inside the .tflite bytes."""
    data = Path(path).read_bytes()
    buf = litert._Buf(memoryview(data))
    buffers = buf.tables(buf.ref(0), 4)
    start, n = buf.vector(buffers[facts.subgraphs[0]["tensors"][tensor_index].buffer], 0, 1)
    return start, n // 4


@pytest.mark.slow
def test_broken_port_fails_at_the_layer_that_was_changed(tiny_student, tmp_path):
    """One conv's weights x1.01 inside the .tflite: everything before passes, the first failure is
    that block's BatchNorm (folded into the conv), as for the ONNX port in tutorial 04."""
    d, _, b = tiny_student
    facts = litert.read(d / "s.tflite")
    port, pairs, _, _ = litert.run_litert(d / "s.tflite", b)
    target = "backbone.stages.3.0.conv2_kxk.bn:batch_norm"
    producer = {t: o for o in facts.subgraphs[0]["operators"] for t in o.outputs}
    op = producer[litert._source(pairs[target]["index"], producer)[1]]
    assert op.op == "DEPTHWISE_CONV_2D"
    start, n = _filter_span(d / "s.tflite", facts, op.inputs[1])
    data = bytearray((d / "s.tflite").read_bytes())
    w = np.frombuffer(bytes(data[start:start + 4 * n]), "<f4") * np.float32(1.01)
    data[start:start + 4 * n] = w.astype("<f4").tobytes()
    (tmp_path / "broken.tflite").write_bytes(bytes(data))
    port_b, _, _, _ = litert.run_litert(tmp_path / "broken.tflite", b)
    report = bundle.compare(b, port_b)
    assert not report.ok and report.first_failure["name"] == target
    ok_before = [r for r in report.compared if b.names().index(r["name"]) < b.names().index(target)]
    assert ok_before and all(r["status"] == "ok" for r in ok_before)


@pytest.mark.slow
def test_swapped_xy_port_fails_at_the_outputs(tiny_student):
    """The onnx2tf failure mode: landmarks with x and y swapped (heatmaps right) fail by name."""
    d, _, b = tiny_student
    port, _, _, _ = litert.run_litert(d / "s.tflite", b)
    port["landmarks"] = port["landmarks"][..., ::-1]
    report = bundle.compare(b, port)
    assert [r["name"] for r in report.failures] == ["landmarks"]


@pytest.mark.slow
def test_compare_command_on_a_tflite_file(tiny_student, tmp_path):
    d, _, b = tiny_student
    bundle.write(b, tmp_path / "s.bundle")
    r = subprocess.run([sys.executable, "-m", "lmref.cli", "compare", str(tmp_path / "s.bundle"), str(d / "s.tflite"),
                        "--json", str(tmp_path / "r.json")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "max tensor rank 5, min runtime 2.5.0" in r.stdout and "intermediate tensors paired" in r.stdout
    assert r.stdout.rstrip().splitlines()[-1].startswith("PASS")
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is True


@pytest.mark.slow
def test_dump_from_another_process_pairs_as_in_process(tiny_student, tmp_path):
    """The path of a runtime in another Python (tflite-runtime 2.11 on CPython <= 3.9): dump every
    tensor to an .npz in a subprocess, pair and compare here -- the same pairs and values."""
    d, _, b = tiny_student
    np.save(tmp_path / "x.npy", b.array("input", "float32"))
    r = subprocess.run([sys.executable, "-m", "lmref.ports.litert", "dump", str(d / "s.tflite"), str(tmp_path / "x.npy"),
                        str(tmp_path / "dump.npz")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stdout.startswith("ai_edge_litert"), r.stderr
    values, outputs, info = litert.load_dump(tmp_path / "dump.npz")
    port_a, pairs_a = litert.port_tensors(b, litert.read(d / "s.tflite"), values, outputs)
    port_b, pairs_b, _, _ = litert.run_litert(d / "s.tflite", b)
    assert pairs_a == pairs_b and set(port_a) == set(port_b)
    for k in port_a:
        np.testing.assert_array_equal(port_a[k], port_b[k])
    with pytest.raises(BundleError, match="not a LiteRT tensor dump"):
        litert.load_dump(d / "s.tflite")


@pytest.mark.slow
def test_mapping_by_hand_and_its_errors(tiny_student):
    d, _, b = tiny_student
    facts = litert.read(d / "s.tflite")
    port, pairs, _, _ = litert.run_litert(d / "s.tflite", b)
    name = "backbone.stem.bn:batch_norm"
    tensor = pairs[name]["tensor"]
    out, info = litert.port_tensors(b, facts, *litert.invoke(d / "s.tflite", b.array("input", "float32"))[:2],
                                    mapping={name: (tensor, (0, 3, 1, 2))}, auto_map=False)
    assert info == {name: {"tensor": tensor, "index": pairs[name]["index"], "transpose": [0, 3, 1, 2], "how": "map"}}
    assert bundle.compare(b, out).ok
    with pytest.raises(BundleError, match="no tensor named"):
        litert.port_tensors(b, facts, {}, {}, mapping={name: "nope"})


# ---------------------------------------------------------------------------------------------
# the shipped student, both forms (the "must show"; ~1 min per conversion on 2 busy cores)
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("form", ["rank5", "rank6"])
def test_shipped_student_both_forms(form, tmp_path):
    _need_litert()
    from lmref.detect import resolve_model
    from torch_impl.port import convert_litert
    facts = convert_litert("student", tmp_path / "s.tflite", patches=form)
    path = resolve_model("student")
    b = bundle.record(path, bundle.random_input(_manifest(path), seed=0))
    port, pairs, _, _ = litert.run_litert(tmp_path / "s.tflite", b)
    report = bundle.compare(b, port)
    assert report.ok, bundle.format_report(report)
    px = np.abs(port["landmarks"] - b.array("landmarks")).max()
    assert px < 1e-3
    if form == "rank5":
        assert facts["max_tensor_rank"] == 5 and facts["fits_tflite_2.11"]
    else:
        assert facts["max_tensor_rank"] == 6 and not facts["fits_tflite_2.11"]
        assert any(r.startswith("TRANSPOSE version 6") for r in facts["reasons_not_2.11"])
