"""lmref against torch_impl (eager) and onnxruntime: latency, throughput, peak memory, per-op profile.

    python -m benchmarks.bench            # full run, writes benchmarks/results/bench.md and bench.json
    python -m benchmarks.bench --quick    # batch 1 only, few repetitions: a smoke run

What is measured, for every model below at batch 1 and 16, in one process:

* **time** of one forward pass for five runners: ``lmref`` float32 and float64 (``load_model``: fast
  paths and BatchNorm folding on, as a user gets them), ``lmref`` float32 on its plain reference
  definitions (``lmref.fast`` off: what the fast layer buys), ``torch`` eager float32
  (``torch.no_grad``) and ``onnxruntime`` float32 on the graph ``torch_impl.export.export_onnx``
  writes. All of them share
  the same random weights (torch_impl initialisation, ``randomize_norms_``). The repetitions
  alternate between the runners (round robin, the order rotated every round), so a change of machine
  load hits all of them alike, and every model's rounds are taken in three passes over the model list
  (``--passes``), so that a burst of host noise hits a part of a model's rounds rather than all of
  them (a whole run takes about 5 minutes; on our VM, bursts of tens of seconds made every runner of
  one model 30-60% slower when its rounds ran back to back); the table gives the median and the
  interquartile range, and the ratios lmref/torch and lmref/onnxruntime of the medians.
* **throughput**: 2 x MACs / time in GFLOP/s (MACs from ``lmref.info.profile``), against the
  machine's float32 / float64 matmul peak measured here (numpy, square GEMMs).
* **peak memory**: in a fresh subprocess per (model, batch, runner), the weights loaded and the input
  made, the growth of the resident set (``VmHWM`` after ``clear_refs``) during the first forward pass.
* **per-op profile** of lmref float32: time per op type (and the slowest call sites), wrapping the
  ``lmref.ops`` functions the models call.

Threads: every runner gets the BLAS's own default thread count (OpenBLAS reads
``OPENBLAS_NUM_THREADS``, else uses every core), reported in the machine description; ``--threads N``
sets it for all of them. Idle worker threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``
for torch's OpenMP pool, ``session.intra_op.allow_spinning=0`` for onnxruntime): with the runners
alternating in one process, a spinning pool left behind by one runner takes a core from the next
(on our 2-core machine every runner got 1.5-2x slower that way); ``--spin`` keeps the spinning. ``--malloc default`` leaves glibc's malloc alone (by default the run calls
``lmref.fast.tune_malloc()``, which affects torch and onnxruntime in the same process too).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime
import functools
import importlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SPIN = False     # --spin: leave torch's OpenMP and onnxruntime's thread pools spin-waiting when idle
RUNNERS = ("lmref-f32", "lmref-f64", "lmref-ref-f32", "torch", "onnxruntime")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str            # row label
    arch: str            # lmref.models.MODULES key
    config: dict         # the model's Config fields
    input: tuple         # (C, H, W)
    source: str = ""     # where the config comes from


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
MODELS = [   # (row label, training config in configs/, input side or None for the config's input_size)
    ("ICME student 256", "icme_student.toml", 256),
    ("ICME student 128", "icme_student.toml", 128),
    ("Lite-HRNet Plus 10M 96", "litehrnet_plus_10m.toml", None),
    ("Lite-HRNet Plus 30M 96", "litehrnet_plus_30m.toml", None),
    ("Stud5 128", "stud5.toml", None),
]


def _channels(config):
    """Input channels a model config asks for (also inside a backbone_config); 3 by default."""
    for d in (config, config.get("backbone_config") or {}):
        for key in ("in_chans", "in_channels"):
            if key in d:
                return int(d[key])
    return 3


def cases():
    """The models of the issue, configured as the project trains them (``configs/*.toml``: the ICME
    student is MobileViT-v2 x0.5 with the rank-5 unfold + AAM head for 51 points; Lite-HRNet Plus
    10M / 30M with 68 heatmaps; Stud5 grayscale at 128 px)."""
    import tomllib
    out = []
    for label, filename, side in MODELS:
        with open(os.path.join(CONFIGS, filename), "rb") as f:
            toml = tomllib.load(f)
        side = side or int(toml["input_size"])
        config = toml.get("model", {})
        out.append(Case(label, toml["arch"], config, (_channels(config), side, side), f"configs/{filename}"))
    return out


# ---------------------------------------------------------------------------------------------
# the machine

def _blas_library():
    """ctypes handle and symbol prefix/suffix of the OpenBLAS numpy loaded, or (None, None, None)."""
    try:
        paths = sorted({line.split()[-1] for line in open("/proc/self/maps")
                        if "openblas" in line.lower() and line.split()[-1].startswith("/")})
    except OSError:
        return None, None, None
    for path in paths:
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_", "64_"), ("", "64_"), ("", "")):
            if hasattr(lib, f"{prefix}openblas_get_num_threads{suffix}"):
                return lib, prefix, suffix
    return None, None, None


def blas_threads(set_to=None):
    """OpenBLAS's thread count (after setting it to ``set_to`` if given), or None if unknown."""
    lib, pre, suf = _blas_library()
    if lib is None:
        return None
    if set_to is not None:
        getattr(lib, f"{pre}openblas_set_num_threads{suf}")(int(set_to))
    return int(getattr(lib, f"{pre}openblas_get_num_threads{suf}")())


def _cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib():
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        return None


def machine(threads, malloc):
    import onnxruntime
    import torch

    from lmref.fast import threads as fast_threads
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    lib, pre, suf = _blas_library()
    core = None
    if lib is not None and hasattr(lib, f"{pre}openblas_get_config{suf}"):
        f = getattr(lib, f"{pre}openblas_get_config{suf}")
        f.restype = ctypes.c_char_p
        core = f().decode()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {
        "cpu": _cpu_model(), "cores_available": cores, "memory_gib": _mem_total_gib(),
        "os": platform.platform(), "python": platform.python_version(),
        "numpy": np.__version__, "blas": f"{blas.get('name')} {blas.get('version')}",
        "blas_runtime": core, "blas_threads": blas_threads(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__, "onnxruntime_threads": threads,
        "lmref_threads": fast_threads.THREADS, "malloc": malloc, "load_average": _loadavg(),
        "idle_threads": "spin (runtime defaults)" if SPIN else
                        "sleep (OMP_WAIT_POLICY=" + os.environ.get("OMP_WAIT_POLICY", "") + ", onnxruntime allow_spinning=0)",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def matmul_peak(dtype, n=1024, seconds=1.0):
    """Best GFLOP/s of numpy's n x n @ n x n over about ``seconds`` (2 n^3 flops per product)."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    b = a.T.copy()
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


# ---------------------------------------------------------------------------------------------
# models and runners

def build(case, workdir, batches):
    """torch model (random weights), lmref weight file, ONNX file per batch size."""
    import torch

    from torch_impl.export import export, export_onnx, randomize_norms_
    from torch_impl.models import build as build_torch
    torch.manual_seed(0)
    model = randomize_norms_(build_torch(case.arch, case.config)).eval()
    stem = case.name.replace(" ", "_")
    weights = os.path.join(workdir, stem + ".safetensors")
    c, h, w = case.input
    color = "RGB" if c == 3 else "GRAY"
    export(model, weights, case.arch, case.config,
           input={"size": [h, w], "channels": c, "color": color, "mean": [0.0] * c, "std": [1.0] * c},
           training="random initialisation (benchmark)")
    onnx = {}
    for b in batches:
        onnx[b] = os.path.join(workdir, f"{stem}_b{b}.onnx")
        export_onnx(model, onnx[b], (b,) + tuple(case.input))
    torch_state = os.path.join(workdir, stem + ".pt")
    torch.save(model.state_dict(), torch_state)
    return model, weights, onnx, torch_state


def make_runner(kind, case, files, x, threads):
    """A no-argument callable running one forward pass of ``kind`` on input x."""
    model, weights, onnx, _ = files
    if kind.startswith("lmref"):
        from lmref import fast
        from lmref.weights import load_model
        dtype = np.float64 if kind == "lmref-f64" else np.float32
        m = load_model(weights, dtype=dtype)
        xi = x.astype(dtype)
        if kind == "lmref-ref-f32":
            def run_reference():
                with fast.off():                         # the plain definitions (lmref.fast off)
                    return m(xi)
            return run_reference
        return lambda: m(xi)
    if kind == "torch":
        import torch
        xt = torch.from_numpy(x)

        def run():
            with torch.no_grad():
                return model(xt)
        return run
    if kind == "onnxruntime":
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        if not SPIN:                             # see the module docstring: idle threads sleep
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(onnx[x.shape[0]], opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda: sess.run(None, {name: x})
    raise ValueError(kind)


def _primary(out):
    """The main output array of a forward pass (heatmaps / coordinates / regression) as numpy."""
    if isinstance(out, dict):
        out = out.get("coords", next(iter(out.values())))
    if isinstance(out, (list, tuple)):
        out = out[0]
    return out.detach().numpy() if hasattr(out, "detach") else np.asarray(out)


def time_runners(runners, reps, min_seconds=0.0, max_rounds=100):
    """Round-robin timing: at least ``reps`` rounds, and more (up to ``max_rounds``) until the runners
    have run ``min_seconds`` each on average; each runner once per round, the order rotated each round."""
    names = list(runners)
    for f in runners.values():                  # warm up: first calls allocate, JIT, fill caches
        f()
        f()
    times = {k: [] for k in names}
    r = 0
    while r < reps or (sum(map(sum, times.values())) < min_seconds * len(names) and r < max_rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            t0 = time.perf_counter()
            runners[k]()
            times[k].append(time.perf_counter() - t0)
        r += 1
    return times


def stats(ts):
    ts = np.asarray(ts) * 1e3
    q1, med, q3 = np.percentile(ts, [25, 50, 75])
    return {"median_ms": float(med), "q1_ms": float(q1), "q3_ms": float(q3), "min_ms": float(ts.min()),
            "max_ms": float(ts.max()), "n": int(ts.size)}


def macs(case, weights):
    from lmref.info import profile
    from lmref.weights import load_model
    m = load_model(weights, dtype=np.float32)
    x = np.zeros((1,) + tuple(case.input), np.float32)
    _, totals = profile(lambda p, xx: m.module.forward(p, xx, m.config), m.params, x)
    return totals["macs"]


# ---------------------------------------------------------------------------------------------
# per-op profile

@contextlib.contextmanager
def op_timer():
    """Time every call of the ``lmref.ops`` functions (as the models call them: ``ops.name(...)``).
    Yields {op: [seconds, calls]} and {(op, input shapes): [seconds, calls]}; ops called inside
    other ops are not counted separately (their time is the caller's)."""
    ops = importlib.import_module("lmref.ops")
    trace_mod = importlib.import_module("lmref.trace")
    by_op, by_site, depth = {}, {}, [0]
    saved = {name: getattr(ops, name) for name in trace_mod.OPS if hasattr(ops, name)}

    def wrap(name, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                depth[0] -= 1
                if depth[0] == 0:
                    shapes = tuple(tuple(a.shape) for a in args if isinstance(a, np.ndarray))
                    for table, key in ((by_op, name), (by_site, (name, shapes))):
                        entry = table.setdefault(key, [0.0, 0])
                        entry[0] += dt
                        entry[1] += 1
        return timed

    for name, fn in saved.items():
        setattr(ops, name, wrap(name, fn))
    try:
        yield by_op, by_site
    finally:
        for name, fn in saved.items():
            setattr(ops, name, fn)


def op_profile(run, reps):
    """Per-op table of ``reps`` calls of ``run``: ms per forward pass and share of the wall time."""
    run()
    with op_timer() as (by_op, by_site):
        t0 = time.perf_counter()
        for _ in range(reps):
            run()
        wall = (time.perf_counter() - t0) / reps
    ops_total = sum(v[0] for v in by_op.values()) / reps
    rows = sorted(({"op": k, "ms": v[0] / reps * 1e3, "calls": v[1] // reps, "share": v[0] / reps / wall}
                   for k, v in by_op.items()), key=lambda r: -r["ms"])
    sites = sorted(({"op": k[0], "inputs": [list(s) for s in k[1]], "ms": v[0] / reps * 1e3, "calls": v[1] // reps}
                    for k, v in by_site.items()), key=lambda r: -r["ms"])[:10]
    return {"wall_ms": wall * 1e3, "ops_ms": ops_total * 1e3, "outside_ops_ms": (wall - ops_total) * 1e3,
            "ops": rows, "slowest_calls": sites}


# ---------------------------------------------------------------------------------------------
# peak memory, one fresh process per measurement

def _status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_child(spec):
    """Run in a subprocess: load one runner, reset the peak RSS, one forward pass, report growth."""
    case = Case(**{**spec["case"], "input": tuple(spec["case"]["input"])})
    global SPIN
    SPIN = spec["spin"]
    if spec["malloc"] == "tuned":
        from lmref.fast import tune_malloc
        tune_malloc()
    kind, b = spec["runner"], spec["batch"]
    x = np.random.default_rng(0).standard_normal((b,) + case.input).astype(np.float32)
    if kind == "torch":
        import torch

        from torch_impl.models import build as build_torch
        torch.set_num_threads(spec["threads"])
        model = build_torch(case.arch, case.config).eval()
        model.load_state_dict(torch.load(spec["torch_state"], weights_only=True))
        files = (model, None, None, None)
    else:
        files = (None, spec["weights"], {b: spec["onnx"]}, None)
    run = make_runner(kind, case, files, x, spec["threads"])
    with open("/proc/self/clear_refs", "w") as f:        # VmHWM := VmRSS
        f.write("5")
    before = _status_kib("VmRSS")
    run()
    peak = _status_kib("VmHWM")
    print(json.dumps({"rss_before_mib": before / 1024, "peak_growth_mib": (peak - before) / 1024}))


def peak_memory(case, files, batch, runner, threads, malloc):
    _, weights, onnx, torch_state = files
    spec = {"case": dataclasses.asdict(case), "runner": runner, "batch": batch, "threads": threads,
            "malloc": malloc, "spin": SPIN, "weights": weights, "onnx": onnx[batch], "torch_state": torch_state}
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench", "--memory-child", json.dumps(spec)],
                         capture_output=True, text=True, env=env, cwd=root)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# report

def fmt_time(s):
    return f"{s['median_ms']:.2f} ({s['q1_ms']:.2f}–{s['q3_ms']:.2f})"


def markdown(result):
    m = result["machine"]
    lines = ["# lmref benchmark", "",
             f"Regenerate: `{result['command']}` (from the repository root; "
             f"{result['seconds']:.0f} s for this run).", "",
             "## Machine", "",
             f"* CPU: {m['cpu']}, {m['cores_available']} cores available, {m['memory_gib']} GiB RAM; {m['os']}",
             f"* Python {m['python']}, NumPy {m['numpy']} with {m['blas']} ({m['blas_runtime']}), "
             f"torch {m['torch']}, onnxruntime {m['onnxruntime']}",
             f"* threads: BLAS {m['blas_threads']}, torch {m['torch_threads']}, onnxruntime "
             f"{m['onnxruntime_threads']}, lmref element-wise {m['lmref_threads']}; idle threads: "
             f"{m.get('idle_threads', '?')}; malloc: {m['malloc']}",
             f"* load average at the start / end: {m['load_average']} / {result['load_average_end']} "
             "(other jobs shared this machine)",
             f"* measured matmul peak (numpy, 1024x1024 GEMM): float32 {result['peak_gflops']['float32']:.1f} "
             f"GFLOP/s, float64 {result['peak_gflops']['float64']:.1f} GFLOP/s",
             f"* run on {m['date']}" + (f"; {result['note']}" if result.get("note") else ""), "",
             "## Models", "",
             "Random weights (torch_impl's initialisation, BatchNorm statistics randomised), the same for all "
             "four runners.", "",
             "| model | config | input | MMACs per image | max abs(lmref f32 - torch) |", "|---|---|---|---:|---:|"]
    seen = set()
    for r in result["rows"]:
        if r["case"] in seen:
            continue
        seen.add(r["case"])
        lines.append(f"| {r['case']} | {r.get('config', '')} | {'x'.join(map(str, r.get('input', [])))} | "
                     f"{r.get('macs_per_image', 0) / 1e6:.1f} | {r.get('max_abs_diff_lmref_torch', float('nan')):.1e} |")
    lines += ["",
             "## Latency per forward pass", "",
             "Median (interquartile range) in ms over alternating repetitions"
             + (f", each model's taken in {result['passes']} passes spread over the run" if result.get("passes", 1) > 1 else "")
             + "; lmref = with the fast layer (lmref.fast: kernels, folded BatchNorm, stacked units; the default); ratios are of the medians.", "",
             "| model | batch | lmref f32 | lmref f64 | lmref f32 reference paths | torch eager | onnxruntime "
             "| lmref/torch | lmref/ORT | lmref f32 GFLOP/s (% peak) | reps |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        t = r["time"]
        lines.append(f"| {r['case']} | {r['batch']} | {fmt_time(t['lmref-f32'])} | {fmt_time(t['lmref-f64'])} | "
                     f"{fmt_time(t['lmref-ref-f32'])} | {fmt_time(t['torch'])} | {fmt_time(t['onnxruntime'])} | {r['ratio_torch']:.2f} | "
                     f"{r['ratio_ort']:.2f} | {r['gflops']['lmref-f32']:.1f} ({r['peak_fraction']:.0%}) | "
                     f"{t['lmref-f32']['n']} |")
    lines += ["", "Per image at batch 16 = the batch-16 time / 16. GFLOP/s = 2 x MACs (lmref.info) x batch / "
              "median time.", "", "## Peak memory", "",
              "Growth of the resident set (MiB) during the first forward pass, in a fresh process per cell, "
              "weights already loaded.", "",
              "| model | batch | lmref f32 | lmref f64 | lmref f32 reference paths | torch eager | onnxruntime |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        mem = r.get("memory")
        if not mem:
            continue
        cells = [f"{mem[k]['peak_growth_mib']:.1f}" if "peak_growth_mib" in mem[k] else mem[k].get("error", "?")
                 for k in RUNNERS]
        lines.append(f"| {r['case']} | {r['batch']} | " + " | ".join(cells) + " |")
    lines += ["", "## Where lmref's time goes (float32)", ""]
    for name, prof in result["profiles"].items():
        lines.append(f"**{name}**: {prof['wall_ms']:.2f} ms per pass, {prof['ops_ms']:.2f} ms inside ops, "
                     f"{prof['outside_ops_ms']:.2f} ms in model code between ops (profiled with a timer around "
                     "every op call, which adds a little to both).")
        lines += ["", "| op | ms | calls | share |", "|---|---:|---:|---:|"]
        for row in prof["ops"][:8]:
            lines.append(f"| {row['op']} | {row['ms']:.2f} | {row['calls']} | {row['share']:.0%} |")
        lines.append("")
    if result.get("targets"):
        lines += ["## Targets of issue 9", ""]
        for t in result["targets"]:
            lines.append(f"* {t}")
        lines.append("")
    return "\n".join(lines)


def targets(rows):
    """The issue's targets, stated with this run's numbers."""
    out = []
    find = {(r["case"], r["batch"]): r for r in rows}
    s = find.get(("ICME student 256", 1))
    if s:
        out.append(f"ICME student 256x256, batch 1: lmref/torch = {s['ratio_torch']:.2f} (target <= 1.0: "
                   f"{'met' if s['ratio_torch'] <= 1 else 'MISSED'}); lmref/onnxruntime = {s['ratio_ort']:.2f}")
    h = find.get(("Lite-HRNet Plus 10M 96", 1))
    if h:
        ms = h["time"]["lmref-f32"]["median_ms"]
        out.append(f"Lite-HRNet Plus 10M 96x96, batch 1: lmref/torch = {h['ratio_torch']:.2f} (target <= 1.0: "
                   f"{'met' if h['ratio_torch'] <= 1 else 'MISSED'}); {ms:.2f} ms per image (paper: 10.51 ms; "
                   f"{'met' if ms < 10.51 else 'MISSED'})")
    mem_rows = [r for r in rows if r.get("memory") and all("peak_growth_mib" in r["memory"][k] for k in ("lmref-f32", "torch"))]
    if mem_rows:
        below = [r for r in mem_rows if r["memory"]["lmref-f32"]["peak_growth_mib"] < r["memory"]["torch"]["peak_growth_mib"]]
        out.append(f"peak memory of an lmref float32 inference below torch's: {len(below)} of {len(mem_rows)} "
                   "cases" + ("" if len(below) == len(mem_rows) else " (MISSED in: " + ", ".join(
                       f"{r['case']} b{r['batch']}" for r in mem_rows if r not in below) + ")"))
    return out


# ---------------------------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="batch 1 only, 3 repetitions, no per-op profile of batch 16")
    p.add_argument("--cases", nargs="*", help="only the models whose name contains one of these words")
    p.add_argument("--batches", nargs="*", type=int, help="batch sizes (default 1 16; --quick: 1)")
    p.add_argument("--reps", type=int, help="repetitions per runner (default 15; --quick: 3)")
    p.add_argument("--passes", type=int, default=3,
                   help="timing passes over all models, each taking 1/passes of every model's rounds (default 3)")
    p.add_argument("--threads", type=int, help="threads for every runner (default: the BLAS default)")
    p.add_argument("--malloc", choices=["tuned", "default"], default="tuned")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--spin", action="store_true", help="keep torch's and onnxruntime's idle threads spinning")
    p.add_argument("--note", default="", help="a remark on how the run was made, printed with the machine")
    p.add_argument("--out", default=RESULTS, help="directory for bench.md and bench.json")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        return memory_child(json.loads(args.memory_child))

    t_start = time.perf_counter()
    global SPIN
    SPIN = args.spin
    if not SPIN:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")      # read when torch loads libgomp
    import torch

    from lmref.fast import tune_malloc
    from lmref.fast import threads as fast_threads
    if args.malloc == "tuned" and not tune_malloc():
        args.malloc = "default (tune_malloc unavailable)"
    threads = args.threads or blas_threads() or fast_threads.THREADS
    if args.threads:
        blas_threads(set_to=args.threads)
    fast_threads.set_num_threads(threads)
    torch.set_num_threads(threads)
    batches = args.batches or ([1] if args.quick else [1, 16])
    reps = args.reps or (3 if args.quick else 15)
    selected = [c for c in cases() if not args.cases or any(w.lower() in c.name.lower() for w in args.cases)]
    command = shlex.join(["python", "-m", "benchmarks.bench", *(argv if argv is not None else sys.argv[1:])])

    if args.passes < 1:
        p.error(f"--passes: expected a positive int, got {args.passes}")
    passes = 1 if args.quick else args.passes
    result = {"command": command.strip(), "note": args.note, "passes": passes,
              "machine": machine(threads, args.malloc),
              "peak_gflops": {"float32": matmul_peak(np.float32), "float64": matmul_peak(np.float64)},
              "rows": [], "profiles": {}}
    print(json.dumps(result["machine"]), flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        jobs = []                                   # (case, batch, files, MACs, input, runners)
        for case in selected:
            files = build(case, workdir, batches)
            n_macs = macs(case, files[1])
            for b in batches:
                x = np.random.default_rng(0).standard_normal((b,) + tuple(case.input)).astype(np.float32)
                jobs.append((case, b, files, n_macs, x, {k: make_runner(k, case, files, x, threads) for k in RUNNERS}))
        times = [{k: [] for k in RUNNERS} for _ in jobs]
        for p in range(passes):                     # each case's rounds spread over the whole run
            for job, acc in zip(jobs, times):
                t = time_runners(job[5], -(-reps // passes), min_seconds=0 if args.quick else 1.0 / passes)
                for k in RUNNERS:
                    acc[k] += t[k]
            print(f"timing pass {p + 1}/{passes} done", flush=True)
        for (case, b, files, n_macs, x, runners), acc in zip(jobs, times):
            diff = float(np.max(np.abs(_primary(runners["lmref-f32"]()) - _primary(runners["torch"]()))))
            t = {k: stats(v) for k, v in acc.items()}
            gflops = {k: 2 * n_macs * b / (t[k]["median_ms"] / 1e3) / 1e9 for k in RUNNERS}
            row = {"case": case.name, "arch": case.arch, "config": case.source, "input": list(case.input),
                   "batch": b, "macs_per_image": n_macs, "time": t, "gflops": gflops,
                   "peak_fraction": gflops["lmref-f32"] / result["peak_gflops"]["float32"],
                   "ratio_torch": t["lmref-f32"]["median_ms"] / t["torch"]["median_ms"],
                   "ratio_ort": t["lmref-f32"]["median_ms"] / t["onnxruntime"]["median_ms"],
                   "max_abs_diff_lmref_torch": diff}
            if b == 1 or not args.quick:
                result["profiles"][f"{case.name}, batch {b}"] = op_profile(runners["lmref-f32"], max(3, reps // 3))
            if not args.no_memory:
                row["memory"] = {k: peak_memory(case, files, b, k, threads, args.malloc) for k in RUNNERS}
            result["rows"].append(row)
            print(f"{case.name} b{b}: " + ", ".join(f"{k} {t[k]['median_ms']:.2f} ms" for k in RUNNERS)
                  + f"; lmref/torch {row['ratio_torch']:.2f}, lmref/ORT {row['ratio_ort']:.2f}", flush=True)
        del jobs
    result["targets"] = targets(result["rows"])
    result["load_average_end"] = _loadavg()
    result["seconds"] = time.perf_counter() - t_start
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(markdown(result) + "\n")
    print("\n".join(result["targets"]))
    print(f"wrote {os.path.join(args.out, 'bench.md')} and bench.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
