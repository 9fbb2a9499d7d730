"""torch_impl.teachers: a teacher run stopped by its clock, then killed mid-epoch, then resumed from the
committed copy of its state on a "fresh checkout" (the run directory deleted) ends with the same weights,
optimizer state and history as one run straight through.  Tiny ResNet on a few 48 px faces, the same
code path as the real teachers (compact checkpoints: float16 weights, bfloat16 Adam moments)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from test_train import assert_same_run
from torch_impl import teachers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("teacher_cache"))


def tiny(cache, out_dir):
    return {"model": {"layers": [1, 1, 1, 1], "block": "bottleneck", "in_chans": 1, "num_outputs": 136,
                      "stem_width": 8},
            "input_size": 32, "num_train": 22, "num_test": 6, "batch_size": 4, "epochs": 3,
            "checkpoint_every": 2, "warmup_steps": 2, "export": False,
            "data": {"render_size": 48, "cache_dir": cache}, "out_dir": str(out_dir)}


def last(d):
    return torch.load(os.path.join(d, "last.pt"), map_location="cpu", weights_only=True)


def test_compact_checkpoint_rounds_the_live_state(cache, tmp_path):
    teachers.train_teacher("kd_resnet50", overrides={**tiny(cache, tmp_path / "run"), "epochs": 1},
                           kept=str(tmp_path / "kept"), threads=1)
    ck = last(tmp_path / "run")
    floats = {k: v for k, v in ck["model"].items() if v.is_floating_point()}
    assert floats and all(v.dtype == torch.float16 for v in floats.values())
    moments = [s[k] for s in ck["optimizer"]["state"].values() for k in ("exp_avg", "exp_avg_sq")]
    assert moments and all(m.dtype == torch.bfloat16 for m in moments)
    assert any(m.abs().max() > 0 for m in moments)


def test_teacher_stopped_killed_and_resumed_from_committed_state_is_exact(cache, tmp_path):
    full = tiny(cache, tmp_path / "full")
    teachers.train_teacher("kd_resnet50", overrides=full, kept=str(tmp_path / "nothing"), threads=1)

    run, kept = tmp_path / "run", tmp_path / "kept"
    cfg = tiny(cache, run)
    # 1. the clock stops it at its first checkpoint (step 2 of 5 in epoch 0)
    s = teachers.train_teacher("kd_resnet50", hours=1e-9, overrides=cfg, kept=str(kept), threads=1)
    assert s["stopped"] and s["global_step"] == 2
    # 2. a new process continues and is killed mid-way through epoch 1
    code = ("import json, sys; from torch_impl import teachers; "
            "teachers.train_teacher('kd_resnet50', overrides=json.loads(sys.argv[1]), kept=sys.argv[2], threads=1)")
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(cfg), str(kept)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run / "last.pt").exists():
            ck = last(run)
            if ck["epoch"] >= 1 and ck["step_in_epoch"] > 0:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.002)
    proc.wait(60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-epoch"
    # 3. keep the state (what gets committed), lose the run directory (a fresh checkout), resume
    info = teachers.keep("kd_resnet50", src=str(run), dst=str(kept))
    assert info["epoch"] >= 1 and os.path.exists(kept / "progress.json")
    shutil.rmtree(run)
    s = teachers.train_teacher("kd_resnet50", overrides=cfg, kept=str(kept), threads=1)
    assert not s["stopped"]
    a, b = last(tmp_path / "full"), last(run)
    assert_same_run(a, b)                                   # weights, Adam state, history, best
    assert len(a["history"]) == 3


def test_weights_only_keep_resumes_without_optimizer_state(cache, tmp_path, capsys):
    """A state too large to commit is kept without Adam's moments: the resume runs to the end from the
    kept weights and step, and says that it is not bit-exact."""
    run, kept = tmp_path / "run", tmp_path / "kept"
    cfg = tiny(cache, run)
    s = teachers.train_teacher("kd_resnet50", hours=1e-9, overrides=cfg, kept=str(kept), threads=1)
    assert s["stopped"] and s["global_step"] == 2
    teachers.keep("kd_resnet50", src=str(run), dst=str(kept), weights_only=True)
    ck = last(kept)
    assert "optimizer" not in ck and ck["global_step"] == 2 and not (kept / "best.pt").exists()
    shutil.rmtree(run)
    s = teachers.train_teacher("kd_resnet50", overrides=cfg, kept=str(kept), threads=1)
    assert not s["stopped"] and s["global_step"] == 15 and len(s["history"]) == 3
    assert "not bit-exact" in capsys.readouterr().out


def test_student_long_run_config(monkeypatch):
    """The shipped student's long run is icme's student with the long run's epochs and input; with a
    distillation setting it distils from the shipped ICME teacher."""
    from torch_impl import experiments
    base = experiments.icme_runs(experiments.settings(False))["student"][0]
    cfg = teachers.teacher_config("student")
    assert cfg["epochs"] == teachers.STUDENT_LONG_EPOCHS and cfg["input_size"] == teachers.STUDENT_LONG_INPUT
    assert cfg["model"] == base["model"] and cfg["resume"] and cfg["compact_checkpoints"]
    assert ("distill" in cfg) == bool(teachers.STUDENT_LONG_DISTILL)
    monkeypatch.setattr(teachers, "STUDENT_LONG_DISTILL", {"kind": "lkd", "feat_weight": 0.0, "heat_weight": 1e4})
    cfg = teachers.teacher_config("student")
    assert cfg["distill"]["teacher"] == experiments.teacher_file("icme") and cfg["distill"]["heat_weight"] == 1e4


@pytest.mark.parametrize("name, exp, run, epochs", [("stud5", "kd", "stud5", "STUD5_LONG_EPOCHS"),
                                                    ("litehrnet_plus", "litehrnet", "plus10m_bce", "LITEHRNET_LONG_EPOCHS")])
def test_other_shipped_long_runs(name, exp, run, epochs):
    """stud5 and litehrnet_plus: their experiment's run without KD, whole passes over the pool (the
    experiment's epoch_steps cut removed), shipped under their own name as students."""
    from torch_impl import experiments
    base = experiments.EXPERIMENTS[exp](experiments.settings(False))[run][0]
    cfg = teachers.teacher_config(name)
    assert cfg["epochs"] == getattr(teachers, epochs) and cfg["num_train"] == experiments.POOL
    assert "epoch_steps" not in cfg and "distill" not in cfg
    assert {k: v for k, v in cfg.items() if k not in ("epochs", "out_dir", "name", "seed", "checkpoint_every",
                                                       "compact_checkpoints", "resume", "progress")} == \
        {k: v for k, v in base.items() if k not in ("epochs", "epoch_steps", "resume", "progress")}
    assert cfg["name"] == teachers.shipped_name(name) == name and name in teachers.STUDENTS


@pytest.mark.parametrize("name, version", [("student_v3", 3), ("student_v4", 4)])
def test_student_on_other_versions_long_run_config(name, version):
    """student_v3 / student_v4 are the student's long run, key for key, on version-3 / version-4 faces: only
    the renderer's version (pool and test split) and the run's own name and directory differ."""
    a, b = teachers.teacher_config("student"), teachers.teacher_config(name)
    assert b["data"].pop("synthetic_version") == version and "synthetic_version" not in a["data"]
    assert {k: v for k, v in a.items() if k not in ("out_dir", "name")} == \
        {k: v for k, v in b.items() if k not in ("out_dir", "name")}
    assert b["name"] == name and b["out_dir"] != a["out_dir"]


@pytest.mark.parametrize("name, version", [("student_ft_v4", 4), ("student_ft_v5", 5), ("student_ft_v2", None)])
def test_student_fine_tune_configs(name, version):
    """student_ft_v4 / _v5 / _v2 start from the shipped student's file and run the student's long run, with
    the fine-tune's epochs and lr, on version-4 / version-5 faces / on the student's own version-2 pool; another seed
    is another run directory (and another kept directory), same config otherwise."""
    a, b = teachers.teacher_config("student"), teachers.teacher_config(name)
    assert b["init"] == os.path.join(teachers.ASSETS, "student.safetensors") and "init" not in a
    assert b["data"].pop("synthetic_version", None) == version
    assert b["epochs"] == teachers.FINE_TUNE_EPOCHS and b["lr_backbone"] == b["lr_head"] == teachers.FINE_TUNE_LR
    same = lambda c: {k: v for k, v in c.items() if k not in ("out_dir", "name", "init", "epochs", "lr_backbone", "lr_head")}  # noqa: E731
    assert same(a) == same(b)
    c = teachers.teacher_config(name, seed=2)
    assert c["seed"] == 2 and c["out_dir"] == teachers.run_dir(name) + "_seed2" != b["out_dir"]
    assert teachers.kept_dir(name, 2) == teachers.kept_dir(name) + "_seed2"
    assert {k: v for k, v in c.items() if k not in ("seed", "out_dir")} == \
        {k: v for k, v in teachers.teacher_config(name).items() if k not in ("seed", "out_dir")}
