"""The ICME 2024 paper's claim on real runtimes, and a LiteRT port of a shipped model against its
golden bundle.

    python -m benchmarks.litert                      # the shipped student; writes benchmarks/results/litert.md/.json
    python -m benchmarks.litert --model my.safetensors --old-python /path/to/python3.9

Needs the [litert] extra (litert-torch to convert, ai-edge-litert to run). Steps:

1. convert the model's torch_impl twin with litert-torch in both MobileViT-v2 unfold/fold forms:
   ``rank5`` (the paper's rewrite) and ``rank6`` (timm's 6-D reshape and transpose);
2. read each file's static facts (largest tensor rank, op versions, the converter's minimum runtime
   version) and the static check against TFLite 2.11 (``lmref.ports.litert.fits_runtime``);
3. record a golden bundle (``--seed`` random pixels) and compare each file, run in ai-edge-litert,
   with it op by op (``lmref.ports.litert.run_litert`` + ``lmref.bundle.compare``, the path of
   ``lmref compare BUNDLE X.tflite``);
4. the old runtime: tflite-runtime 2.11.0 has wheels only for CPython 3.7-3.9, so the script looks for
   such a Python (``--old-python``, else pyenv's and /usr/bin's python3.9/3.8/3.7), makes a venv for
   it in ``$LMREF_CACHE/tflite-runtime-2.11`` with ``tflite-runtime==2.11.0`` and ``numpy<2`` (2.11 was
   built against NumPy 1) and runs each file there (``python -m lmref.ports.litert dump``); the
   rank-5 file's tensors are compared with the bundle like the others, the rank-6 file's refusal is
   recorded as the runtime words it. If no such Python can be had, the report says so.

This is a demonstration, not a test: it takes a few minutes (two conversions) and installs a runtime.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lmref import bundle, weights
from lmref.data.synthetic import default_cache_dir
from lmref.detect import resolve_model
from lmref.ports import litert

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OLD_RUNTIME = "tflite-runtime==2.11.0"
FORMS = ("rank5", "rank6")


def old_pythons(given=None):
    """Candidate interpreters for tflite-runtime 2.11 (CPython 3.7-3.9), best first."""
    if given:
        return [given]
    found = []
    for minor in ("3.9", "3.8", "3.7"):
        found += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{minor}.*/bin/python{minor}")), reverse=True)
        found += [p for p in (f"/usr/bin/python{minor}", f"/usr/local/bin/python{minor}") if os.path.exists(p)]
    return found


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def old_runtime_python(given=None, log=print):
    """A Python with tflite-runtime 2.11.0 importable -> (path, note), or (None, why not)."""
    tried = []
    for py in old_pythons(given):
        ver = _run([py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).stdout.strip()
        env = Path(default_cache_dir()) / f"tflite-runtime-2.11-py{ver}"
        vpy = env / "bin" / "python"
        if not vpy.exists():
            log(f"making {env} with {py} and {OLD_RUNTIME} (numpy<2)")
            made = _run([py, "-m", "venv", str(env)])
            inst = made.returncode == 0 and _run([str(vpy), "-m", "pip", "install", "-q", OLD_RUNTIME, "numpy<2"])
            if made.returncode or inst.returncode:
                tried.append(f"{py}: {(made.stderr or inst.stderr).strip().splitlines()[-1:]}")
                continue
        probe = _run([str(vpy), "-c", "import tflite_runtime, numpy, sys; print('tflite_runtime %s, numpy %s, "
                      "CPython %s' % (tflite_runtime.__version__, numpy.__version__, sys.version.split()[0]))"])
        if probe.returncode == 0:
            return str(vpy), probe.stdout.strip()
        tried.append(f"{vpy}: {probe.stderr.strip().splitlines()[-1:]}")
    return None, ("no CPython 3.7-3.9 found (pyenv, /usr/bin, --old-python)" if not tried else "; ".join(tried))


def run_old(vpy, model, x_path, out):
    """The old runtime on one file, in its own Python: (ok, message)."""
    r = _run([vpy, "-m", "lmref.ports.litert", "dump", str(model), str(x_path), str(out), "--runtime", "tflite_runtime"],
             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    msg = (r.stdout if r.returncode == 0 else r.stderr).strip().replace(str(Path(model).parent) + os.sep, "")
    return r.returncode == 0, msg


def _landmark_px(port, b):
    return float(np.abs(np.asarray(port["landmarks"], np.float64) - b.array("landmarks")).max())


def _report_summary(report):
    return {"ok": report.ok, "compared": len(report.compared), "of": len(report.rows),
            "first_failure": report.first_failure["name"] if report.first_failure else None,
            "max_err": max((r["err"] for r in report.compared), default=None),
            "verdict": bundle.format_report(report).splitlines()[-1]}


def demonstrate(model="student", seed=0, old_python=None, workdir=None, log=print):
    from torch_impl.port import convert_litert
    path = resolve_model(model)
    work = Path(workdir or tempfile.mkdtemp(prefix="lmref-litert-"))
    work.mkdir(parents=True, exist_ok=True)
    manifest = weights.load(path)[1]
    b = bundle.record(path, bundle.random_input(manifest, seed), source={"random_seed": seed})
    bundle.write(b, work / "golden.bundle")
    x_path = work / "input.f32.npy"
    np.save(x_path, b.array("input", "float32"))
    result = {"model": os.path.basename(path), "seed": seed, "forms": {},
              "machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": os.cpu_count(), "load_average_1min_at_start": round(os.getloadavg()[0], 1)}}
    vpy, old_note = old_runtime_python(old_python, log)
    result["old_runtime"] = {"python": vpy, "note": old_note, "package": OLD_RUNTIME}
    for form in FORMS:
        out = work / f"student_{form}.tflite"
        log(f"converting {form} ...")
        facts = convert_litert(path, out, patches=form)
        port, pairs, _, info = litert.run_litert(out, b)
        report = bundle.compare(b, port)
        row = {"facts": facts, "new_runtime": {"runtime": info["runtime"], "paired": len(pairs),
                                               "landmarks_max_px": _landmark_px(port, b), **_report_summary(report)}}
        if vpy:
            ok, msg = run_old(vpy, out, x_path, work / f"old_{form}.npz")
            row["old_runtime"] = {"loaded": ok, "message": msg}
            if ok:
                values, outputs, oinfo = litert.load_dump(work / f"old_{form}.npz")
                oport, opairs = litert.port_tensors(b, litert.read(out), values, outputs)
                oreport = bundle.compare(b, oport)
                row["old_runtime"].update(runtime=oinfo.get("runtime"), paired=len(opairs),
                                          landmarks_max_px=_landmark_px(oport, b), **_report_summary(oreport))
        result["forms"][form] = row
        log(json.dumps({form: {k: v for k, v in row.items() if k != "facts"}}, default=str)[:600])
    return result


def markdown(r, command):
    f5, f6 = r["forms"]["rank5"], r["forms"]["rank6"]
    lines = [f"# LiteRT port of `{r['model']}` and the ICME 2024 rank-5 claim", "",
             f"Command: `{command}` ({r['seconds']} s; Python {r['machine']['python']}, {r['machine']['cpus']} cores, "
             f"load average {r['machine']['load_average_1min_at_start']} at the start); golden bundle from "
             f"random pixels, seed {r['seed']}; compared at `lmref compare`'s default float32 tolerance "
             "(max|port - lmref float64| <= 1e-6 + 1e-4 max|ref| per tensor).", "",
             "| | rank-≤5 unfold/fold (ICME 2024) | rank-6 unfold/fold (timm) |", "| --- | --- | --- |"]

    def both(fn):
        return f"| {fn[0]} | {fn[1](f5)} | {fn[1](f6)} |"
    rows = [
        ("file", lambda f: f"{f['facts']['bytes']:,} bytes, {f['facts']['num_operators']} operators"),
        ("largest tensor rank", lambda f: str(f["facts"]["max_tensor_rank"])),
        ("op versions > 1", lambda f: ", ".join(o for o in f["facts"]["op_codes"] if not o.endswith(" v1"))),
        ("converter's min runtime", lambda f: f["facts"]["min_runtime_version"]),
        ("static check for TFLite 2.11", lambda f: "passes" if f["facts"]["fits_tflite_2.11"] else
         "fails: " + "; ".join(f["facts"]["reasons_not_2.11"][:2])),
        ("conversion (litert-torch)", lambda f: f"{f['facts']['source']['convert_seconds']} s"),
        (f"{f5['new_runtime']['runtime']}: lmref compare", lambda f: f"{f['new_runtime']['verdict']} "
         f"({f['new_runtime']['paired']} intermediate tensors paired + outputs)"),
        ("landmarks vs lmref float64", lambda f: f"{f['new_runtime']['landmarks_max_px']:.1e} px max"),
    ]
    lines += [both(x) for x in rows]
    old = r["old_runtime"]
    if old["python"]:
        def old_cell(f):
            o = f["old_runtime"]
            if not o["loaded"]:
                return "**refused**: " + o["message"].replace("lmref: error: ", "").replace("|", "/")
            return f"runs: {o['verdict']}; landmarks {o['landmarks_max_px']:.1e} px max"
        lines.append(f"| {OLD_RUNTIME} ({old['note']}) | {old_cell(f5)} | {old_cell(f6)} |")
    else:
        lines += ["", f"**Old runtime not run**: {old['note']}."]
    lines += ["", "Which tensors were compared: the graph outputs by signature name, and every bundle op whose "
              "output survives conversion (`lmref.ports.litert.pair_tensors`: the tensor litert-torch named "
              "after the op's module, computed by a fitting op, of the bundle's shape or its NHWC); convs "
              "folded with their BatchNorm and activations fused into kernels leave no tensor of their own. "
              "`python -m lmref.ports.litert facts FILE.tflite` prints the static facts without torch.", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.litert", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="student", help="a shipped model name or a MobileViT-v2 weights file")
    ap.add_argument("--seed", type=int, default=0, help="random pixels of the golden bundle's input")
    ap.add_argument("--old-python", help="a CPython 3.7-3.9 for tflite-runtime 2.11 (default: look for one)")
    ap.add_argument("--workdir", help="keep the .tflite files, bundle and dumps here (default: a temporary directory)")
    ap.add_argument("--out", default=str(RESULTS / "litert"), help="results stem (default benchmarks/results/litert)")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    r = demonstrate(args.model, args.seed, args.old_python, args.workdir)
    r["seconds"] = round(time.perf_counter() - t0, 1)
    command = "python -m benchmarks.litert" + "".join(
        f" {k} {shlex.quote(str(v))}" for k, v in (("--model", args.model), ("--seed", args.seed)) if v not in ("student", 0))
    Path(args.out + ".json").write_text(json.dumps(r, indent=1, default=str) + "\n")
    Path(args.out + ".md").write_text(markdown(r, command))
    print(f"wrote {args.out}.md and .json ({r['seconds']} s)")
    ok = all(f["new_runtime"]["ok"] for f in r["forms"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
