"""benchmarks/bench.py helpers: statistics, round-robin timing, the op profiler, the report.

No timings are asserted (the machine is shared); these check the bookkeeping that turns timings into
the committed table.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # the repository root holds benchmarks/
from benchmarks import bench  # noqa: E402

from lmref import ops  # noqa: E402


def test_stats_median_and_quartiles():
    s = bench.stats([0.004, 0.001, 0.002, 0.003, 0.005])
    assert s["median_ms"] == pytest.approx(3.0) and s["q1_ms"] == pytest.approx(2.0)
    assert s["q3_ms"] == pytest.approx(4.0) and s["min_ms"] == pytest.approx(1.0) and s["n"] == 5


def test_time_runners_alternates_and_counts():
    calls = []
    runners = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = bench.time_runners(runners, reps=4)
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4, "c": 4}
    timed = calls[6:]                                   # after two warm-up calls each
    assert timed[:3] == ["a", "b", "c"] and timed[3:6] == ["b", "c", "a"]   # order rotates


def test_op_timer_counts_top_level_op_calls_and_restores_ops():
    x = np.ones((1, 2, 4, 4))
    w = np.ones((3, 2, 1, 1))
    original = ops.conv2d
    with bench.op_timer() as (by_op, by_site):
        ops.relu(ops.conv2d(x, w))
        ops.relu(x)
    assert ops.conv2d is original
    assert by_op["conv2d"][1] == 1 and by_op["relu"][1] == 2
    assert by_site[("conv2d", ((1, 2, 4, 4), (3, 2, 1, 1)))][1] == 1


def test_op_profile_reports_shares():
    x = np.ones((1, 2, 8, 8))
    prof = bench.op_profile(lambda: ops.silu(ops.relu(x)), reps=3)
    assert {r["op"] for r in prof["ops"]} == {"relu", "silu"}
    assert all(r["calls"] == 1 for r in prof["ops"])
    assert 0 < sum(r["share"] for r in prof["ops"]) <= 1.0 + 1e-9


def _row(case, batch, lm, torch_ms, ort, mem=None):
    t = {k: bench.stats([v / 1e3]) for k, v in
         {"lmref-f32": lm, "lmref-f64": 2 * lm, "lmref-ref-f32": 3 * lm, "torch": torch_ms, "onnxruntime": ort}.items()}
    row = {"case": case, "batch": batch, "time": t, "ratio_torch": lm / torch_ms, "ratio_ort": lm / ort,
           "gflops": {k: 1.0 for k in bench.RUNNERS}, "peak_fraction": 0.01}
    if mem:
        row["memory"] = {k: {"peak_growth_mib": v} for k, v in zip(bench.RUNNERS, mem)}
    return row


def test_targets_and_markdown():
    rows = [_row("ICME student 256", 1, 20.0, 25.0, 8.0, mem=(10, 20, 25, 30, 5)),
            _row("Lite-HRNet Plus 10M 96", 1, 12.0, 10.0, 3.0, mem=(5, 6, 7, 4, 1))]
    t = bench.targets(rows)
    assert "lmref/torch = 0.80 (target <= 1.0: met)" in t[0]
    assert "lmref/torch = 1.20 (target <= 1.0: MISSED)" in t[1] and "12.00 ms per image" in t[1]
    assert "1 of 2 cases" in t[2] and "MISSED in: Lite-HRNet Plus 10M 96 b1" in t[2]
    machine = {k: "?" for k in ("cpu", "cores_available", "memory_gib", "os", "python", "numpy", "blas",
                                "blas_runtime", "blas_threads", "torch", "torch_threads", "onnxruntime",
                                "onnxruntime_threads", "lmref_threads", "malloc", "load_average", "date")}
    result = {"command": "python -m benchmarks.bench", "seconds": 1.0, "machine": machine,
              "load_average_end": None, "peak_gflops": {"float32": 100.0, "float64": 50.0}, "rows": rows,
              "profiles": {"x, batch 1": {"wall_ms": 1.0, "ops_ms": 0.9, "outside_ops_ms": 0.1,
                                          "ops": [{"op": "conv2d", "ms": 0.9, "calls": 3, "share": 0.9}]}},
              "targets": t}
    md = bench.markdown(result)
    assert "Regenerate: `python -m benchmarks.bench`" in md and "passes" not in md
    assert "each model's taken in 3 passes spread over the run" in bench.markdown({**result, "passes": 3})
    assert "| ICME student 256 | 1 | 20.00 (20.00–20.00) |" in md and "| 0.80 | 2.50 |" in md
    assert "| Lite-HRNet Plus 10M 96 | 1 | 5.0 | 6.0 | 7.0 | 4.0 | 1.0 |" in md
    assert "| 60.00 (60.00–60.00) | 25.00 (25.00–25.00) |" in md          # reference paths, torch
    assert "| conv2d | 0.90 | 3 | 90% |" in md


def _bench_json(tmp_path, name, ratios):
    rows = [{"case": case, "batch": batch, "ratio_torch": r} for (case, batch), r in ratios.items()]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"rows": rows}))
    return str(path)


def test_bench_compare_judges_a_change_against_the_run_to_run_spread(tmp_path, capsys):
    from benchmarks import bench_compare
    b1 = _bench_json(tmp_path, "b1", {("m", 1): 0.50, ("m", 16): 1.00})
    b2 = _bench_json(tmp_path, "b2", {("m", 1): 0.54, ("m", 16): 1.02})
    a1 = _bench_json(tmp_path, "a1", {("m", 1): 0.53, ("m", 16): 1.20})
    a2 = _bench_json(tmp_path, "a2", {("m", 1): 0.55, ("m", 16): 1.21})
    rows = bench_compare.compare([b1, b2], [a1, a2])
    (_, _, _, _, c1, s1, ok1, _), (_, _, _, _, c16, s16, ok16, _) = rows
    assert c1 == pytest.approx(0.02) and s1 == pytest.approx(0.04) and ok1        # inside the spread
    assert c16 == pytest.approx(0.195) and s16 == pytest.approx(0.02) and not ok16  # far outside it
    out = tmp_path / "cmp.md"
    assert bench_compare.main(["--before", b1, b2, "--after", a1, a2, "--out", str(out)]) == 0
    assert "1 of 2 ratios" in out.read_text() and "**no**" in capsys.readouterr().out
    assert bench_compare.main(["--before", b1, str(tmp_path / "missing.json"), "--after", a1]) == 1
    assert "bench_compare: error:" in capsys.readouterr().err
