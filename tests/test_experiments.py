"""torch_impl.experiments: the --quick path of each experiment trains every configuration on tiny
settings and writes its Markdown table and JSON; reruns reuse finished runs."""
import json
import os
import numpy as np
import pytest

from torch_impl import experiments as E


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMREF_CACHE", str(root / "cache"))                # tiny synthetic splits, this module only
        yield root


def _run(dirs, name, seeds, jobs=1):
    out = dirs / "results"
    argv = [name, "--quick", "--seeds", *map(str, seeds), "--jobs", str(jobs), "--work", str(dirs / name),
            "--out", str(out), "--assets", str(dirs / "assets")]
    assert E.main(argv) == 0
    md = (out / f"{name}.md").read_text()
    payload = json.loads((out / f"{name}.json").read_text())
    return md, payload


def test_mean_std_and_format():
    assert E.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert E.mean_std([0.5]) == (0.5, 0.0)
    assert E.fmt([0.01, 0.03]) == "2.00 ± 1.41"


def test_plan_orders_teachers_first_and_wires_them(tmp_path):
    # the KD teacher is trained once (first seed) and shared by every seed's students
    runs = E.plan("kd", [0, 1], True, str(tmp_path))
    ids = [r[0] for r in runs]
    assert len(ids) == 7 and "resnet50-s1" not in ids and ids.index("resnet50-s0") < ids.index("stud5_ckd-s0")
    cfg = dict((r[0], r[1]) for r in runs)["stud5_rbd-s1"]
    assert cfg["seed"] == 1 and cfg["distill"]["teacher"] == str(tmp_path / "resnet50-s0" / "best.pt")
    # the ICME teacher is trained once (first seed) and shared by every seed's KD student
    icme = {r[0]: r for r in E.plan("icme", [3, 4], True, str(tmp_path))}
    assert sorted(icme) == ["student-s3", "student-s4", "student_kd-s3", "student_kd-s4", "teacher-s3"]
    assert icme["student_kd-s4"][2] == "teacher-s3"
    assert icme["student_kd-s4"][1]["distill"]["teacher"] == str(tmp_path / "teacher-s3" / "best.pt")


def test_input_size_reuses_icmes_student_runs_and_plans_without_a_teacher(tmp_path):
    # the 96 px student of the input-size study is icme's student: same config, same run directory
    work = os.path.join(str(tmp_path), "runs", "experiments", E.WORK_OF["input_size"])
    icme = {r[0]: r[1] for r in E.plan("icme", [0, 1], False, work)}
    size = {r[0]: r[1] for r in E.plan("input_size", [0, 1], False, work)}
    assert sorted(size) == ["student-s0", "student-s1", "student_128-s0", "student_128-s1",
                            "student_longer-s0", "student_longer-s1"]
    assert size["student-s1"] == icme["student-s1"]
    assert size["student_128-s1"]["input_size"] == 128 and "distill" not in size["student_128-s1"]
    longer = size["student_longer-s1"]                                 # 96 px for about 128 px's compute
    assert longer["input_size"] == 96 and longer["epochs"] == icme["student-s1"]["epochs"] + 1
    # experiments without a pre-trained teacher plan with the default settings too
    assert len(E.plan("litehrnet", [0], False, str(tmp_path))) == len(E.litehrnet_runs(E.settings(False)))


def test_kd_quick_two_seeds_and_reuse(dirs):
    md, payload = _run(dirs, "kd", [0, 1])
    for label in ("ResNet50Base", "Stud5Base", "Stud5RBD", "Stud5CKD", "Did distillation help?", "mean-shape baseline"):
        assert label in md
    assert set(payload["runs"]) == {"resnet50", "stud5", "stud5_rbd", "stud5_ckd"}
    nmes = [s["test"]["nme"] for s in payload["runs"]["stud5"]]
    assert len(nmes) == 2 and all(np.isfinite(nmes))
    assert len(payload["delta_test_nme_vs_stud5"]["stud5_ckd"]) == 2
    assert f"{payload['mean_shape_nme'] * 100:.2f}%" in md and 0 < payload["mean_shape_nme"] < 1
    assert not (dirs / "assets").exists()                              # quick runs are not assets
    # a second call reuses every finished run: same numbers, no training
    _, again = _run(dirs, "kd", [0, 1])
    assert again["runs"] == payload["runs"]


def test_kd_sweep_reuses_the_experiment_runs_and_pairs_by_seed(dirs):
    """--sweep after the experiment: the base and default-KD runs of the same seeds are reused (not
    retrained), each variant is the KD run with its distill keys changed, and its row is paired by seed."""
    _, base = _run(dirs, "kd", [0, 1])                                 # (reused from the test above if run)
    plan = {r[0]: r for r in E.sweep_plan("kd", [0, 1], True, str(dirs / "kd"))}
    assert plan["stud5_rbd_l3-s1"][1]["distill"]["rbd_lambda"] == 3.0
    assert plan["stud5_rbd_l3-s1"][2] == "resnet50-s0"                 # the one shared teacher
    assert "stud5_ckd-s0" in plan and "stud5_ckd_own-s0" in plan        # CKD's variants and their source
    only = {r[0] for r in E.sweep_plan("kd", [0], True, str(dirs / "kd"), only=["stud5_rbd_l3"])}
    assert only == {"resnet50-s0", "stud5-s0", "stud5_rbd-s0", "stud5_rbd_l3-s0"}   # only what it compares
    out = dirs / "results"
    argv = ["kd", "--sweep", "--quick", "--seeds", "0", "1", "--jobs", "1", "--work", str(dirs / "kd"),
            "--out", str(out)]
    assert E.main(argv) == 0
    md = (out / "kd_sweep.md").read_text()
    payload = json.loads((out / "kd_sweep.json").read_text())
    assert payload["runs"]["stud5"] == base["runs"]["stud5"]           # reused, same numbers
    assert payload["runs"]["stud5_rbd"] == base["runs"]["stud5_rbd"]
    for vid in E.SWEEPS["kd"][2]:
        d = payload["delta_test_nme_vs_base"][vid]
        nme = [r["test"]["nme"] for r in payload["runs"][vid]]
        assert np.allclose(d, np.subtract(nme, [r["test"]["nme"] for r in base["runs"]["stud5"]]))
        assert E.SWEEPS["kd"][2][vid]["label"] in md
    assert "RBD lambda 0.1" in md and "lower with KD" in md
    own = plan["stud5_ckd_own-s1"][1]                                  # a variant of the CKD run
    assert own["distill"]["kind"] == "ckd" and own["distill"]["ckd_phase_schedules"]
    p1long = E.sweep_plan("kd", [0], False, str(dirs / "kd_full"))      # default settings: its own epochs
    p1long = {r[0]: r[1] for r in p1long}["stud5_ckd_p1long-s0"]
    assert (p1long["epochs"], p1long["epoch_steps"], p1long["distill"]["ckd_phase1_epochs"]) == (4, 200, 3)
    assert "`stud5_ckd`, the experiment's setting" in md


def test_icme_quick(dirs):
    md, payload = _run(dirs, "icme", [0])
    assert "MobileViT-v2-0.5 with L_KD" in md and "SwinV2 teacher" in md and "Deviation from the paper" in md
    assert payload["params_macs"]["student"][0] == 1141863                # the paper's 1.1419 M
    assert len(payload["kd_delta_test_nme"]) == 1


def test_icme_sweep_one_variant_and_the_kd_terms(dirs):
    """--sweep --variants runs only the named variant (its distill weights changed), reuses icme's runs,
    and the report measures the default L_KD run's terms: the weighted heatmap term's gradient scales
    with its weight (the variant's 10,000 against the default's 1)."""
    _run(dirs, "icme", [0])                                            # (reused from the test above if run)
    out = dirs / "results"
    argv = ["icme", "--sweep", "--variants", "student_kd_heat1e4", "--quick", "--seeds", "0", "--jobs", "1",
            "--work", str(dirs / "icme"), "--out", str(out)]
    assert E.main(argv) == 0
    md = (out / "icme_sweep.md").read_text()
    payload = json.loads((out / "icme_sweep.json").read_text())
    assert set(payload["runs"]) == {"student", "student_kd", "student_kd_heat1e4"}
    assert "heatmap term only, weight 10,000" in md and "The size of each L_KD term" in md
    terms = payload["kd_terms"]
    assert terms["end"]["task"]["grad_norm"] > 0 and terms["end"]["heat"]["weight"] == 1.0
    from torch_impl import kd_terms
    cfg, trainee, teacher = kd_terms.load_run(str(dirs / "icme" / "student_kd-s0"), "end")
    train_ds, _, _ = kd_terms.make_datasets(cfg)
    batches = [b for _, b in kd_terms.train_batches(train_ds, cfg, 0, 0, 1, 0, 1, "cpu", kd_terms.model_layout(cfg))]
    one = kd_terms.term_stats(cfg, trainee, teacher, batches)
    cfg.distill.heat_weight = 10.0
    ten = kd_terms.term_stats(cfg, trainee, teacher, batches)
    assert ten["heat"]["grad_norm"] == pytest.approx(10 * one["heat"]["grad_norm"], rel=1e-4)
    assert ten["task"]["grad_norm"] == pytest.approx(one["task"]["grad_norm"], rel=1e-6)
    with pytest.raises(SystemExit, match="unknown"):
        E.sweep_plan("icme", [0], True, str(dirs / "icme"), only=["no_such_variant"])


def test_input_size_quick_report(dirs):
    """The input-size study end to end on tiny settings: three runs, two paired comparisons, the plot."""
    out = dirs / "results"
    argv = ["input_size", "--quick", "--seeds", "0", "--jobs", "1", "--work", str(dirs / "icme"), "--out", str(out)]
    assert E.main(argv) == 0
    md = (out / "student_input_size.md").read_text()
    payload = json.loads((out / "student_input_size.json").read_text())
    assert set(payload["runs"]) == {"student", "student_128", "student_longer"}
    assert set(payload["delta_test_nme_128_minus"]) == {"student", "student_longer"}
    assert "about the same compute" in md and (out / "student_input_size.png").stat().st_size > 0


def test_litehrnet_quick_subsets(dirs):
    md, payload = _run(dirs, "litehrnet", [0])
    assert "Lite-HRNet Plus 10M (BCE loss)" in md and "Fusion ablation" in md
    sub = payload["subsets"]["plus10m_bce"][0]
    assert set(sub) == {"All", "pose", "expression", "illumination", "make-up", "occlusion", "blur"}
    assert np.isfinite(sub["All"])
    assert payload["cost"]["fusion_pw"]["mflops"] > payload["cost"]["plus10m_mse"]["mflops"]


def test_runtime_keys_do_not_change_a_run(tmp_path):
    """A finished run is reused whatever its thread count was (an experiment restarted with --jobs 2
    runs one thread per process); a change of what it computes is a new run."""
    cfg = {"out_dir": str(tmp_path), "epochs": 3, "num_threads": 0, "progress": False}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "result.json").write_text(json.dumps({"test": {"nme": 0.1}}))
    assert E._result({**cfg, "num_threads": 1})["test"]["nme"] == 0.1
    assert E._result({**cfg, "epochs": 4}) is None
    E._prepare({**cfg, "num_threads": 1})                               # same run: nothing deleted
    assert (tmp_path / "result.json").exists()
    E._prepare({**cfg, "epochs": 4})                                    # another run: started afresh
    assert not (tmp_path / "result.json").exists()


def test_default_plan_reads_the_pretrained_teacher(tmp_path):
    """Default settings: the teacher is not trained by the experiment but read from its file, and every
    seed's distilling students point at that file."""
    runs = {r[0]: r for r in E.plan("kd", [0, 1], False, str(tmp_path), teacher_path="t.safetensors")}
    assert runs["resnet50-s0"][1]["pretrained"] == os.path.abspath("t.safetensors")
    assert runs["stud5_rbd-s1"][1]["distill"]["teacher"] == os.path.abspath("t.safetensors")
    assert "pretrained" not in runs["stud5-s1"][1]
    icme = {r[0]: r for r in E.plan("icme", [0], False, str(tmp_path))}
    assert icme["teacher-s0"][1]["pretrained"] == E.teacher_file("icme")


def test_pretrained_teacher_is_measured_like_the_trained_run(dirs):
    """measure_pretrained on the exported weights of the quick kd teacher gives that run's own test NME."""
    _run(dirs, "kd", [0, 1])                                            # reused if already trained
    run = dirs / "kd" / "resnet50-s0"
    cfg = json.loads((run / "config.json").read_text())
    trained = json.loads((run / "result.json").read_text())
    res = E.measure_pretrained({**cfg, "pretrained": trained["weights"], "out_dir": str(dirs / "pre")})
    assert res["test"]["count"] == trained["test"]["count"]
    assert abs(res["test"]["nme"] - trained["test"]["nme"]) < 1e-6
    with pytest.raises(SystemExit, match="input_size"):
        E.measure_pretrained({**cfg, "input_size": cfg["input_size"] * 2, "pretrained": trained["weights"]})
