# %% [markdown]
# # 4. Porting with a golden reference
#
# You have a trained landmark model and need it somewhere else: ONNX Runtime, TFLite, a C file, an
# NPU. The port runs, the landmarks look *roughly* right — is it correct? Where exactly does it
# start to differ?
#
# `lmref` answers this with a **golden bundle**: the model's input and the output of *every* op of
# one forward pass, in float64 and float32, named after the weights that produced them
# (`backbone.stages.2.1.transformer.0.attn:separable_self_attention`), stored as plain `.npy`
# files. A port dumps its own intermediate tensors, and `lmref.bundle.compare` walks the network
# op by op in execution order and reports the first one that diverges.
#
# This notebook
# 1. records a golden bundle for the MobileViT-v2 student,
# 2. exports the same weights to ONNX (and checks the tensor ranks a TFLite converter will see),
# 3. runs the graph in onnxruntime and compares it with the bundle op by op,
# 4. breaks the port on purpose and lets the comparison find the break,
# 5. converts the student to **LiteRT** (TFLite) in both unfold/fold forms, reads what each file
#    needs from a runtime, checks the ICME 2024 paper's rank-≤5 claim against an old runtime and
#    compares the LiteRT port with the bundle op by op,
# 6. simulates **float16** — weights, then activations, then one op type at a time — to see which
#    ops lose accuracy first.
#
# Notebook 0 explains the NME used below and its mean-shape baseline.
#
# `LMREF_TUTORIAL_SMALL=1` (the test suite's setting) converts only the rank-≤5 form of the student
# (the rank-6 facts then come from a tiny file with the same unfold/fold) and runs the float16 study
# on fewer op types. Section 5 converts and runs only with the `[litert]` extra installed; without
# it, it reads the same facts from tiny committed files and shows the recorded run.

# %%
import contextlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

try:
    import lmref
except ImportError:                         # run from tutorials/ without `pip install -e .`
    sys.path.insert(0, os.path.abspath(".."))
    import lmref

import matplotlib.pyplot as plt
import numpy as np
import onnx
import torch
from IPython.display import Markdown, display

import lmref.ops
from lmref import bundle, landmarks, metrics, viz, weights
from lmref.data import synthetic, transforms
from lmref.detect import Landmarker, resolve_model
from torch_impl.export import export_onnx, onnx_value_ranks
from torch_impl.models import build

SMALL = os.environ.get("LMREF_TUTORIAL_SMALL", "0") == "1"
plt.rcParams.update(viz.NOTEBOOK_RC)   # figure and text sizes readable on HiDPI screens
torch.set_num_threads(1)        # the torch side only exports: one thread, no contention with other work
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # LiteRT's converter (section 5): no C++ info lines
warnings.filterwarnings("ignore", message="IProgress not found")   # tqdm, imported by the converter
workdir = Path(tempfile.mkdtemp(prefix="lmref_tutorial4_"))
np.set_printoptions(precision=4, suppress=True, linewidth=110)


def say(text):
    """Show Markdown written from computed numbers (so the text cannot disagree with them)."""
    display(Markdown(text))

# %% [markdown]
# ## 1. The model and one input
#
# The shipped student (MobileViT-v2 ×0.5 + AAM head). Its weights file carries a manifest:
# architecture, config, landmark layout and how pixels are normalised; `lmref.weights.load_model`
# checks every key and shape against the architecture. The input is one synthetic test face,
# cropped and normalised as the manifest says (`Landmarker.prepare`).

# %%
WEIGHTS = resolve_model("student")
model = weights.load_model(WEIGHTS)
print(json.dumps({k: model.manifest[k] for k in ("architecture", "layout", "input")}))
sample = synthetic.generate(seed=7, index=3, split="test")
x, faces = Landmarker(model, detector=None).prepare(sample.image, boxes=[transforms.landmark_box(sample.landmarks)])
print("input", x.shape, x.dtype)                           # [1, 3, S, S] float64, normalised pixels

# how good the model is on this face, in crop pixels (the unit of every landmark error below) and as NME
INNER = list(landmarks.INNER51_FROM_IBUG68)
gt_crop = transforms.apply_affine(sample.landmarks[INNER], faces[0].matrix)          # [51, 2] crop pixels
pred_crop = model(x)["landmarks"][0]
test = synthetic.load_split("test", n=16 if SMALL else 500, size=64 if SMALL else 128)   # for the mean shape
mean_crop = transforms.apply_affine(
    metrics.mean_shape_prediction(sample.landmarks[None], test.landmarks)[0, INNER], faces[0].matrix)
own_px = np.linalg.norm(pred_crop - gt_crop, axis=-1).mean()
nme_face = metrics.nme(pred_crop[None], gt_crop[None], "inner51")[0]
nme_mean = metrics.nme(mean_crop[None], gt_crop[None], "inner51")[0]
say(f"On this face the student's landmarks are **{own_px:.2f} crop pixels** from the ground truth on average "
    f"(NME {nme_face:.3f}; the mean shape in the same box: NME {nme_mean:.3f}). A port's error should be "
    f"measured against that: it matters when it is a sizeable fraction of it.")

# %% [markdown]
# ## 2. The golden bundle
#
# `bundle.record` runs the model twice under `lmref.trace()` — weights and input in float64, then
# the same in float32 — and keeps every op's output. `bundle.write` stores it as a directory of
# `.npy` files with an `index.json` describing each tensor (a format a C or C++ test harness reads
# without Python: `docs/golden-bundle.md`). The same is available on the command line as
# `lmref bundle`.

# %%
golden = bundle.record(WEIGHTS, x, source="synthetic.generate(seed=7, index=3, split='test'), landmark-box crop")
bundle.write(golden, workdir / "student.bundle")
print(f"golden bundle: {len(golden)} tensors, each in float64 and float32")
print("files:", sorted(p.name for p in (workdir / "student.bundle").iterdir())[:6], "...")
print(f"{golden.manifest['num_ops']} traced ops; first and last few:")
for e in golden.entries[:6] + golden.entries[-8:]:
    print(f"  {e.id:>14s}  {e.kind:6s} {e.name:58s} {e.shape}")

# %% [markdown]
# The float32 run is already a first "port": it is the same computation in lower precision. Its
# error against float64, op by op, is the noise floor any float32 port should reach:

# %%
def rel_err(a, ref):
    """max |a - ref| / max |ref| (scale-relative: activations cross zero, an elementwise relative error would not be meaningful)."""
    return float(np.abs(a.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-300))


ops_entries = [e for e in golden.entries if e.kind == "op" and e.parent is None]   # top-level ops
f32_err = [rel_err(golden.array(e.id, "float32"), golden.array(e.id, "float64")) for e in ops_entries]
print(f"lmref float32 vs float64 over {len(ops_entries)} ops: median {np.median(f32_err):.1e}, max {max(f32_err):.1e}")

# %% [markdown]
# ## 3. Export to ONNX — and the ranks a TFLite converter will see
#
# The ONNX graph comes from the `torch_impl` twin of the model with the same weights.
# MobileViT-v2's unfold/fold is a reshape to **6-D** and a 6-D transpose; TFLite runtimes up to
# 2.11 cannot transpose more than 5 dimensions (notebook 1 has the details). The backbone's
# `rank5_patches` switch replaces it by the rank-≤5 rewrite of the ICME 2024 paper — same numbers,
# different graph. `torch_impl.export.onnx_value_ranks` lists every tensor's rank after ONNX shape
# inference:

# %%
def torch_model_from_weights(path, rank5=False):
    """The torch_impl twin of an lmref weights file, with the same weights."""
    tensors, manifest = weights.load(path)
    cfg = json.loads(json.dumps(manifest["config"]))
    cfg["backbone_config"]["rank5_patches"] = rank5
    net = build(manifest["architecture"], cfg).eval()
    result = net.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=False)
    assert not result.unexpected_keys and all(k.endswith("num_batches_tracked") for k in result.missing_keys)
    return net


for rank5 in (False, True):
    path = workdir / f"student{'_rank5' if rank5 else ''}.onnx"
    export_onnx(torch_model_from_weights(WEIGHTS, rank5), path, x.shape)
    ranks = onnx_value_ranks(path)
    high = [n for n, r in ranks.items() if r > 5]
    print(f"rank5_patches={rank5!s:5s}: {path.name:20s} max tensor rank {max(ranks.values())}, "
          f"{len(high)} tensors of rank > 5  {high[:2]}")
ONNX = workdir / "student.onnx"

# %% [markdown]
# ## 4. onnxruntime against the bundle, op by op
#
# `bundle.run_onnx` feeds the bundle's input to the graph and asks onnxruntime for intermediate
# values too. Which ONNX value corresponds to which lmref op? torch's exporter names nodes by
# module path (`/stages/stages.2/stages.2.1/conv_kxk/conv/Conv`) and `lmref` names ops by the same
# state-dict path, so `bundle.suggest_onnx_mapping` pairs them where the two graphs must agree (a
# conv and its BatchNorm folded into one ONNX Conv are paired at the BatchNorm's output). Ops it
# cannot pair safely (attention internals, residual adds written as plain NumPy) are left out; the
# model outputs are always compared.

# %%
port, mapping = bundle.run_onnx(ONNX, golden)
report = bundle.compare(golden, port)
lines = bundle.format_report(report).splitlines()
print("\n".join(lines[:8] + ["   ..."] + lines[-12:]))

# %%
def plot_errors(ax, report, label, **kw):
    """Scale-relative error of each compared op (execution order) of a compare() report."""
    idx = {e.name: i for i, e in enumerate(golden.entries)}
    rows = [r for r in report.compared if r["kind"] == "op"]
    ax.semilogy([idx[r["name"]] for r in rows], [max(r["err"], 1e-17) for r in rows], ".", label=label, **kw)


fig, ax = plt.subplots(figsize=(10.5, 3.4), layout="constrained")
ax.semilogy([golden.entries.index(e) for e in ops_entries], np.maximum(f32_err, 1e-17), "-",
            color="gray", lw=0.8, label="lmref float32 (all ops)")
plot_errors(ax, report, "onnxruntime float32 (paired ops)", color="C0", ms=7)
ax.axhline(report.rtol, color="C3", ls="--", lw=1, label=f"tolerance rtol={report.rtol:g}")
ax.set_xlabel("op index in execution order")
ax.set_ylabel("max|err| / max|ref|")
ax.set_title("float32 ports against the float64 golden bundle")
viz.legend_outside(ax)
plt.show()
ort_err = np.array([r["err"] for r in report.compared if r["kind"] == "op"])
say(f"onnxruntime's {len(ort_err)} paired ops sit at **{np.percentile(ort_err, 5):.0e} to "
    f"{np.percentile(ort_err, 95):.0e}** relative error (5th to 95th percentile), lmref's own float32 run at "
    f"{np.percentile(f32_err, 5):.0e} to {np.percentile(f32_err, 95):.0e}, all the way through: "
    + ("the port is right." if report.ok else "something is off."))

# %% [markdown]
# ### A broken port
#
# Now the kind of bug a port really has: one weight tensor of one layer deep in the network is
# slightly wrong (a bad conversion, a quantisation step gone wrong, a layout mix-up that only
# touches one layer). Scale the weight of the depthwise conv of `stages.3.0` by 1.01 in the ONNX
# file and compare again:

# %%
broken = onnx.load(ONNX)
inits = {i.name: i for i in broken.graph.initializer}
node = next(n for n in broken.graph.node if n.op_type == "Conv" and "stages.3.0/conv2_kxk" in n.name)
w_init = inits[node.input[1]]
w_arr = onnx.numpy_helper.to_array(w_init) * np.float32(1.01)
w_init.CopyFrom(onnx.numpy_helper.from_array(w_arr, w_init.name))
onnx.save(broken, workdir / "broken.onnx")
print("changed:", node.name, "weight", w_arr.shape)

port_b, _ = bundle.run_onnx(workdir / "broken.onnx", golden)
report_b = bundle.compare(golden, port_b)
print(bundle.format_report(report_b).splitlines()[-1])
shift = np.linalg.norm(port_b["landmarks"] - golden.array("landmarks"), axis=-1)
print(f"landmarks moved by {shift.mean():.3f} px on average, {shift.max():.3f} px at most")

fig, ax = plt.subplots(figsize=(10.5, 3.4), layout="constrained")
plot_errors(ax, report, "correct port", color="C0")
plot_errors(ax, report_b, "broken port", color="C3")
first = golden.names().index(report_b.first_failure["name"])
ax.axvline(first, color="C3", lw=0.8, ls=":", label="first failure")
ax.axhline(report.rtol, color="k", ls="--", lw=0.8, label="tolerance")
ax.set_xlabel("op index in execution order")
ax.set_ylabel("max|err| / max|ref|")
viz.legend_outside(ax)
plt.show()
rows_b = [r for r in report_b.compared if r["kind"] == "op"]
k_first = next(i for i, r in enumerate(rows_b) if r["name"] == report_b.first_failure["name"])
after = [r for r in rows_b[k_first:]]
say(f"All {k_first} compared ops before it pass; the first failure is **`{report_b.first_failure['name']}`**, "
    f"the BatchNorm output of the block we touched (the exporter folded that BatchNorm into the Conv, so that "
    f"is where the two graphs meet), and {sum(r['status'] == 'FAIL' for r in after)} of the {len(after)} compared ops "
    f"from there on fail. The final landmarks alone moved by {shift.mean():.3f} px on average, "
    f"{shift.mean() / own_px:.1%} of the model's own error on this face: they would only have said \"a bit off\".")

# %% [markdown]
# ## 5. LiteRT (TFLite): the paper's rank-≤5 claim on real runtimes
#
# LiteRT is the current name of TFLite, the runtime the ICME 2024 paper targets. Its converter for
# PyTorch, `litert-torch` (the optional extra: `pip install 'lmref[litert]'`), turns the same torch
# twin into a `.tflite` file; `python -m torch_impl.port litert student OUT.tflite --patches rank5`
# does what the next cell does. The file says what it needs from a runtime without running it:
# `lmref.ports.litert.read` parses the flatbuffer with the standard library — the largest tensor
# rank, each op with its version (a runtime registers the op versions it implements: TRANSPOSE
# version 6 is the 6-D transpose, new in TFLite 2.12), and the converter's own
# `min_runtime_version`. `fits_runtime(facts, "2.11")` is the static gate for TFLite ≤ 2.11 targets.

# %%
import importlib.util

from lmref.ports import litert
from torch_impl.port import convert_litert

HAVE_LITERT = all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_litert"))   # the [litert] extra
REPO = Path(lmref.__file__).parents[1]
TINY = REPO / "tests" / "data" / "litert"     # torch_impl.port.TinyPatches: a conv, the unfold/fold, in both forms
lite = {form: TINY / f"patches_{form}.tflite" for form in ("rank5", "rank6")}
for form in (() if not HAVE_LITERT else ("rank5",) if SMALL else ("rank5", "rank6")):
    lite[form] = workdir / f"student_{form}.tflite"
    convert_litert(WEIGHTS, lite[form], patches=form)

lite_facts = {}
for form, path in lite.items():
    facts = lite_facts[form] = litert.read(path)
    reasons = litert.fits_runtime(facts, "2.11")
    print(f"{form}: {path.name}, largest tensor rank {facts.max_rank}, min runtime {facts.min_runtime_version}")
    print("   ops:", ", ".join(f"{n} v{v}" for n, v in facts.op_codes))
    print("   TFLite 2.11:", "passes" if not reasons else "fails:\n     - " + "\n     - ".join(reasons))
versions = {form: dict(f.op_codes) for form, f in lite_facts.items()}
say(f"The rank-6 form needs TRANSPOSE version {versions['rank6']['TRANSPOSE']} and a "
    f"{lite_facts['rank6'].min_runtime_version} runtime; the rewrite keeps every tensor at rank "
    f"{lite_facts['rank5'].max_rank} or less (its TRANSPOSE is version {versions['rank5']['TRANSPOSE']}, its SLICE "
    f"version {versions['rank5'].get('SLICE', '-')}) and the converter says {lite_facts['rank5'].min_runtime_version} "
    f"is enough.")

# %% [markdown]
# Is that true on an old runtime? `tflite-runtime` 2.11.0 has wheels only for
# CPython 3.7–3.9, so `python -m benchmarks.litert` runs it in a Python of its own and records what
# happened (`benchmarks/results/litert.json`):

# %%
recorded = json.loads((REPO / "benchmarks" / "results" / "litert.json").read_text())
print(f"{recorded['old_runtime']['package']} in {recorded['old_runtime']['note']}")
for form, row in recorded["forms"].items():
    old = row.get("old_runtime")
    if old is None:
        print(f"  {form}: not run ({recorded['old_runtime']['note']})")
    elif not old["loaded"]:
        print(f"  {form}: refused -- {old['message'].replace('lmref: error: ', '')}")
    else:
        print(f"  {form}: ran, {old['verdict']}; landmarks within {old['landmarks_max_px']:.1e} px of lmref float64")

# %% [markdown]
# ### The LiteRT port against the golden bundle, op by op
#
# `lmref.ports.litert.run_litert` runs the file in `ai-edge-litert` on the bundle's input, keeps every
# intermediate tensor (`experimental_preserve_all_tensors`), and pairs them with bundle ops: the
# converter names each tensor after the torch module that made it, so an op in scope
# `backbone.stages.2.1.conv_kxk.bn` is looked for among that module's tensors, of the right kind of op
# (a BatchNorm folded into a CONV_2D, a SiLU ending in MUL, ...), of the bundle's shape or its NHWC
# layout, and the closest in value is compared. The same runs from the shell as
# `lmref compare student.bundle student_rank5.tflite`.

# %%
if HAVE_LITERT:
    port_l, pairs_l, facts_l, info_l = litert.run_litert(lite["rank5"], golden)
    report_l = bundle.compare(golden, port_l)
    print(litert.describe(facts_l, pairs_l, info_l, golden))
    lines = bundle.format_report(report_l).splitlines()
    print("\n".join(lines[:6] + ["   ..."] + lines[-4:]))
    top = [e for e in golden.entries if e.kind == "op" and e.parent is None]
    missing = sorted({e.op for e in top if e.name not in pairs_l})
    print(f"not compared: {sum(e.name not in pairs_l for e in top)} of {len(top)} top-level ops, kinds {missing}")
    paired, worst_l = sum(e.name in pairs_l for e in top), max(r["err"] for r in report_l.compared)

    fig, ax = plt.subplots(figsize=(10.5, 3.4), layout="constrained")
    plot_errors(ax, report, "onnxruntime", color="C0", ms=7)
    plot_errors(ax, report_l, f"LiteRT ({info_l['runtime']})", color="C2", ms=4)
    ax.axhline(report_l.rtol, color="C3", ls="--", lw=1, label=f"tolerance rtol={report_l.rtol:g}")
    ax.set_xlabel("op index in execution order")
    ax.set_ylabel("max|err| / max|ref|")
    viz.legend_outside(ax)
    plt.show()
else:                                     # no [litert] extra here: the recorded run of benchmarks/litert.py
    for form, row in recorded["forms"].items():
        new = row["new_runtime"]
        print(f"{form}: {new['runtime']}: {new['paired']} intermediate tensors paired; {new['verdict']}; "
              f"landmarks within {new['landmarks_max_px']:.1e} px")
    paired, worst_l = recorded["forms"]["rank5"]["new_runtime"]["paired"], recorded["forms"]["rank5"]["new_runtime"]["max_err"]
top_level = [e for e in golden.entries if e.kind == "op" and e.parent is None]
say(f"{paired} of the {len(top_level)} top-level ops (**{paired / len(top_level):.0%}**) keep a tensor of their own "
    f"in the LiteRT graph{'' if HAVE_LITERT else ' (recorded run)'}. The worst compared tensor is at "
    f"{worst_l:.1e} relative error, "
    + f"{worst_l / max(f32_err):.1f} times lmref's own worst float32 error ({max(f32_err):.1e}): "
    + ("the same float32 level, like onnxruntime." if worst_l <= 3 * max(f32_err) else "above lmref's float32 level."))

# %% [markdown]
# The convs whose BatchNorm was folded into them do not keep a tensor; nor do the head's instance norm and ReLU
# (they became one MUL with a fused RELU, which is the `heatmaps` output), its sigmoids and the
# AAM product (computed in the head's own code, not in the sub-modules whose names lmref's scopes
# carry) and the soft-argmax (the `coords` output).
#
# A converter can also be wrong in a way that looks right: the route through ONNX and `onnx2tf` was
# found (issue 20, measured in a separate environment) to give matching heatmaps and landmarks with
# x and y swapped, 57 px off. Swapping them here, the comparison names the output that is wrong:

# %%
if HAVE_LITERT:
    swapped = dict(port_l, landmarks=port_l["landmarks"][..., ::-1])
    print(bundle.format_report(bundle.compare(golden, swapped)).splitlines()[-1])

# %% [markdown]
# ## 6. Simulating float16: which ops lose accuracy first?
#
# Many NPUs and mobile GPUs store weights and activations in **float16**: 11 significant bits,
# a relative rounding step of $2^{-11} \approx 4.9 \times 10^{-4}$, largest value 65504. We can
# simulate that with lmref without any fp16 hardware: round every array argument of an op (the
# activations *and* the weights) to float16 before the op, compute in float32 (what most fp16
# hardware does inside a multiply-accumulate), and round the op's output to float16.
#
# Every `lmref` model calls its ops as `lmref.ops.<name>`, so replacing those attributes for the
# length of a `with` block is enough:

# %%
def to_half(a):
    """Round a float32 array to the nearest float16 value (kept as float32)."""
    return a.astype(np.float16).astype(a.dtype) if isinstance(a, np.ndarray) else a


@contextlib.contextmanager
def half_precision(op_names):
    """Inside the block, the named lmref.ops round their array inputs and their output to float16."""
    saved = {name: getattr(lmref.ops, name) for name in op_names}

    def rounded(fn):
        def op(*args, **kwargs):
            args = [to_half(a) for a in args]
            kwargs = {k: to_half(v) for k, v in kwargs.items()}
            out = fn(*args, **kwargs)
            return tuple(to_half(o) for o in out) if isinstance(out, tuple) else to_half(out)
        return op

    try:
        for name, fn in saved.items():
            setattr(lmref.ops, name, rounded(fn))
        yield
    finally:
        for name, fn in saved.items():
            setattr(lmref.ops, name, fn)


def run_traced(params, op_names=(), dtype=np.float32):
    """One forward pass with ``op_names`` in simulated float16 -> ({op name: output}, outputs).
    A traced output is what the op computed before the final rounding, so round it here."""
    m = weights.Model(params, model.manifest, dtype=dtype)
    with half_precision(op_names), lmref.trace() as t:
        out = m(x.astype(dtype))
    halves = set(op_names)
    values = {r.name: (to_half(r.output) if r.op in halves and "/" not in r.name else r.output)
              for r in t if isinstance(r.output, np.ndarray)}
    return values, out


used_ops = sorted({e.op for e in ops_entries})
print("op types in this model:", used_ops)

params16 = weights.unflatten({k: to_half(v.astype(np.float32))
                              for k, v in weights.flatten(model.params).items()})
runs = {
    "float32": run_traced(model.params),
    "fp16 weights": run_traced(params16),
    "fp16 weights + activations": run_traced(model.params, used_ops),
}
ref_landmarks = golden.array("landmarks")
for label, (values, out) in runs.items():
    px = np.linalg.norm(out["landmarks"] - ref_landmarks, axis=-1)   # [B, N] pixel error
    print(f"{label:28s} landmark error vs float64: mean {px.mean():.4f} px, max {px.max():.4f} px")

# %%
fig, ax = plt.subplots(figsize=(10.5, 3.8), layout="constrained")
xs = [golden.entries.index(e) for e in ops_entries]
for (label, (values, _)), color in zip(runs.items(), ("gray", "C1", "C3")):
    errs = [rel_err(values[e.name], golden.array(e.id)) for e in ops_entries]
    ax.semilogy(xs, np.maximum(errs, 1e-17), "-", lw=1, color=color, label=label)
ax.axhline(2.0 ** -11, color="k", ls=":", lw=0.8)
ax.text(xs[len(xs) // 2], 2.0 ** -11 * 0.7, "float16 rounding step $2^{-11}$", fontsize=8, va="top")
stage_starts = {}
for i, e in zip(xs, ops_entries):
    parts = e.name.split(":")[0].split(".")                            # backbone.stages.2.1.... / head....
    key = parts[0] if parts[0] != "backbone" else ("stem" if parts[1] == "stem" else f"stages.{parts[2]}")
    stage_starts.setdefault(key, i)
for key, i in stage_starts.items():
    ax.axvline(i, color="k", lw=0.3)
    ax.text(i, 3e-2, key, rotation=90, fontsize=8, va="top")
ax.set_ylim(1e-9, 5e-2)
ax.set_xlabel("op index in execution order")
ax.set_ylabel("max|err| / max|ref|")
viz.legend_outside(ax)
ax.set_title("simulated float16 against the float64 golden bundle")
plt.show()

# %% [markdown]
# Where does the error jump? In the all-float16 run, the ops whose output error grows most over the
# error of the op before them (execution order) — the places that lose accuracy first:

# %%
values16, _ = runs["fp16 weights + activations"]
errs16 = np.array([rel_err(values16[e.name], golden.array(e.id)) for e in ops_entries])
jump = errs16[1:] / np.maximum(errs16[:-1], 1e-12)                    # growth over the previous op
print(f"{'op':66s} {'error in':>9s} {'error out':>9s}  growth")
jumps = np.argsort(jump)[::-1][:8]
for i in jumps:
    e = ops_entries[i + 1]
    print(f"{e.name:66s} {errs16[i]:9.2e} {errs16[i + 1]:9.2e}  x{jump[i]:.1f}")
errs_w = np.array([rel_err(runs["fp16 weights"][0][e.name], golden.array(e.id)) for e in ops_entries])
step = 2.0 ** -11
first_q, last_q = np.median(errs16[:len(errs16) // 4]), np.median(errs16[-len(errs16) // 4:])
kinds = [ops_entries[i + 1].op for i in jumps]
say(f"Rounding the weights alone puts the tensors at a median relative error of **{np.median(errs_w) / step:.1f} "
    f"times** the float16 step; rounding the activations as well raises that to "
    f"**{np.median(errs16) / step:.1f} times**. The error "
    + (f"does not snowball: the median over the first quarter of the ops is {first_q:.1e}, over the last quarter "
       f"{last_q:.1e} ({last_q / first_q:.1f}×), as the normalisations re-scale every block."
       if last_q < 10 * first_q else f"grows from {first_q:.1e} (first quarter of the ops) to {last_q:.1e} (last quarter).")
    + f" The largest jumps are at these op types: {', '.join(f'`{k}` ({kinds.count(k)})' for k in dict.fromkeys(kinds))}.")

# %% [markdown]
# Which op types matter for what reaches the landmarks? Put **one op type at a time**
# into float16 (everything else float32) and measure the output — for a data-movement op such as
# `fold_patches` that only means rounding what passes through it:

# %%
sensitivity = {}
for name in (used_ops[:4] if SMALL else used_ops):
    values, out = run_traced(model.params, [name])
    px = np.linalg.norm(out["landmarks"] - ref_landmarks, axis=-1)
    sensitivity[name] = (px.mean(), rel_err(values["head.e2p:aam_fusion"], golden.array("head.e2p:aam_fusion")))

order = sorted(sensitivity, key=lambda k: sensitivity[k][0], reverse=True)
fig, ax = plt.subplots(figsize=(8.5, 3.8), layout="constrained")
ax.barh(order[::-1], [sensitivity[k][0] for k in order[::-1]], color="C3")
ax.set_xscale("log")
viz.log_ticks(ax, "x")                  # labels at 1, 2, 5 x 10^k only: matplotlib's own ones overlapped
ax.set_xlabel("mean landmark error vs float64 (crop pixels)")
ax.set_title("only this op type in float16")
ax.grid(axis="x", which="both", alpha=0.3)
plt.show()
print(f"{'op':24s} {'landmarks (px)':>14s} {'fused heatmap err':>18s}  calls")
counts = {k: sum(e.op == k for e in ops_entries) for k in sensitivity}
for k in order:
    print(f"{k:24s} {sensitivity[k][0]:14.5f} {sensitivity[k][1]:18.2e}  {counts[k]}")

# %%
rank = {k: i + 1 for i, k in enumerate(order)}


def ordinal(n):
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


px16 = np.linalg.norm(runs["fp16 weights + activations"][1]["landmarks"] - ref_landmarks, axis=-1).mean()
say(f"Ranked by how far they move the landmarks on their own: "
    + ", ".join(f"{rank[k]}. `{k}` ({counts[k]} call{'s' if counts[k] > 1 else ''})" for k in order[:3])
    + (f"; attention (`separable_self_attention`) is {ordinal(rank['separable_self_attention'])} of {len(order)}"
       if "separable_self_attention" in rank else "")
    + ". " + (f"`soft_argmax` ranks {ordinal(rank['soft_argmax'])} with a single "
              f"call: it writes the landmarks themselves, so rounding its output to float16 rounds the coordinates "
              f"directly. " if "soft_argmax" in rank and rank["soft_argmax"] <= 3 else "")
    + f"With every op in float16 the landmarks move by {px16:.4f} crop pixels on average, "
    f"{px16 / own_px:.2%} of the model's own error on this face ({own_px:.2f} px).")

# %%
import shutil

shutil.rmtree(workdir)          # the bundle and the ONNX files

# %% [markdown]
# ## Summary
#
# * The **golden bundle** turns "the landmarks look a bit off" into "the first wrong tensor is
#   this BatchNorm" (section 4). A float32 port should stay near lmref's own float32 noise; a real
#   bug is orders of magnitude above it.
# * The rank-≤5 unfold/fold gives a LiteRT file that an old (2.11) runtime loads and that matches
#   the bundle op by op, as the ICME 2024 paper claims; the 6-D form is refused.
# * Under **float16** (storage rounded, arithmetic in float32, as most fp16 hardware does) this
#   student loses little: the landmarks move by a tiny fraction of its own error (numbers above).
#   The op-type ranking says which ops to keep in float32 first if a float16 port is not accurate
#   enough. The same experiment with arithmetic in float16 too (long sums in a 10-bit mantissa)
#   would be the next one to run.
#
# ### Try this
#
# * Break the port differently: swap two output channels of one conv's weight in the ONNX file,
#   or add 0.01 to one conv's bias. Which op does `bundle.compare` name, and how far do the
#   landmarks move?
# * Put only the *weights* of one op type in float16 (`params16` restricted to keys of that type)
#   and compare with the ranking above.
# * Run the float16 study on the Lite-HRNet Plus model (`resolve_model("litehrnet_plus")`): does
#   its ranking differ?
#
# **Next:** notebook 5 evaluates a model on your own images in 300W format, and trains one on them.
