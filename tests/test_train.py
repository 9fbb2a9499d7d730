"""torch_impl.train: config loading, determinism, resuming after a kill, 2-process DDP on CPU (gloo),
the three tasks, the three distillation kinds and the export at the end.

Everything runs on tiny models (Stud5 with 4..8 channels, MobileViT-v2 x0.25) at 32x32 on a few
synthetic faces rendered at 48 px into a per-session cache.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from lmref import metrics, weights
from torch_impl import train as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_STUD5 = {"channels": [4, 8, 8, 8, 8]}
TINY_AAM = {"backbone": "mobilevitv2", "backbone_config": {"width_multiplier": 0.25}, "layout": "inner51"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("synthetic_cache"))


def tiny(cache, out_dir, **kw):
    """A TrainConfig for a tiny Stud5 on 20 train / 2 val / 6 test synthetic faces at 32x32."""
    d = dict(arch="stud5", model=TINY_STUD5, input_size=32, num_train=22, num_test=6,
             data={"render_size": 48, "cache_dir": cache}, batch_size=4, epochs=2, out_dir=str(out_dir),
             progress=False, num_threads=1)
    d.update(kw)
    return T.TrainConfig(**d)


def final_state(out_dir):
    return torch.load(os.path.join(out_dir, "last.pt"), map_location="cpu", weights_only=True)


def assert_same_run(a, b):
    """Two last.pt checkpoints hold bit-identical weights, optimizer state and history."""
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for k in pa:
            assert torch.equal(torch.as_tensor(pa[k]), torch.as_tensor(pb[k])), k
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    assert a["global_step"] == b["global_step"] and a["best_nme"] == b["best_nme"]


# ------------------------------------------------------------------------------------- config

def test_config_toml_yaml_and_overrides(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('arch = "stud5"\nepochs = 3\n[model]\nchannels = [4, 8]\n[distill]\nkind = "rbd"\n'
                    'teacher = "t.safetensors"\n')
    cfg = T.load_config(str(toml), ["epochs=5", "distill.rbd_lambda=0.5", "lr_head=3e-3", 'name="x"'])
    assert (cfg.arch, cfg.epochs, cfg.model, cfg.task) == ("stud5", 5, {"channels": [4, 8]}, "regression")
    assert cfg.distill.kind == "rbd" and cfg.distill.rbd_lambda == 0.5 and cfg.lr_head == 3e-3
    assert cfg.name == "x"
    yaml = tmp_path / "c.yaml"
    yaml.write_text("arch: litehrnet\nheatmap_loss: bce\nmodel:\n  num_points: 68\n")
    cfg = T.load_config(str(yaml), ["model.fusion=scaf"])
    assert (cfg.task, cfg.heatmap_loss, cfg.model) == ("heatmap", "bce", {"num_points": 68, "fusion": "scaf"})
    # the ICME 2024 recipe is the default
    d = T.TrainConfig()
    assert (d.optimizer, d.lr_backbone, d.lr_head, d.batch_size) == ("adamw", 2e-4, 1e-3, 16)
    assert abs(d.val_ratio - 1 / 11) < 1e-12


@pytest.mark.parametrize("bad, match", [
    (["epochs"], "key=value"),
    (["nonsense=1"], "unknown config keys"),
    (["task=classify"], "task"),
    (["distill.kind=lkd", "distill.teacher=t.pt", "arch=stud5"], "needs task 'aam'"),
    (["distill.kind=rbd"], "distill.teacher"),
    (["heatmap_loss=l1", "arch=litehrnet"], "heatmap_loss"),
])
def test_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        T.load_config(None, bad)


def test_config_file_type_error(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{}")
    with pytest.raises(ValueError, match="toml"):
        T.load_config(str(p))


def test_determinism_helpers():
    a, b = T.epoch_order(0, 3, 50), T.epoch_order(0, 3, 50)
    assert np.array_equal(a, b) and sorted(a) == list(range(50))
    assert not np.array_equal(a, T.epoch_order(0, 4, 50)) and not np.array_equal(a, T.epoch_order(1, 3, 50))
    assert T.sample_seed(0, 1, 2) == T.sample_seed(0, 1, 2) != T.sample_seed(0, 2, 1)
    assert T.step_seed(0, 5, 0) != T.step_seed(0, 5, 1)
    cfg = T.TrainConfig(arch="stud5", epochs=4, lr_schedule="multistep", lr_milestones=(2, 3), warmup_steps=2)
    f = [T.lr_factor(cfg, s, 10) for s in (0, 1, 5, 19, 20, 30, 39)]
    assert f == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.1, 0.01, 0.01])
    cos = T.TrainConfig(arch="stud5", epochs=2, lr_schedule="cosine")
    assert T.lr_factor(cos, 0, 10) == pytest.approx(1.0) and T.lr_factor(cos, 20, 10) == pytest.approx(0.01)
    # CKD with ckd_phase_schedules: phase 2 (epochs 2-3 here) runs the cosine afresh over its own steps
    ckd = dict(arch="stud5", epochs=4, lr_schedule="cosine", distill={"kind": "ckd", "teacher": "t", "ckd_phase1_epochs": 2})
    one, own = T.config_from_dict(ckd), T.config_from_dict({**ckd, "distill": {**ckd["distill"], "ckd_phase_schedules": True}})
    assert T.lr_factor(one, 20, 10) == pytest.approx(0.505) and T.lr_factor(own, 20, 10) == pytest.approx(1.0)
    assert T.lr_factor(own, 10, 10) == T.lr_factor(own, 30, 10) == pytest.approx(0.505)
    assert [T.lr_factor(own, k, 10) for k in (0, 5)] == [T.lr_factor(cos, k, 10) for k in (0, 5)]


def test_param_groups_split_head_and_backbone():
    from torch_impl.models import build
    cfg = T.TrainConfig(arch="stud5", model=TINY_STUD5)
    model = build("stud5", TINY_STUD5)
    groups = {g["name"]: g for g in T.param_groups(model, cfg)}
    assert {id(p) for p in groups["head"]["params"]} == {id(p) for p in model.fc.parameters()}
    assert groups["backbone"]["lr"] == 2e-4 and groups["head"]["lr"] == 1e-3
    n = sum(p.numel() for g in groups.values() for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------- training and export

def mean_shape_anchor(cfg):
    """What a model that never looks at the images can reach on the training split: the coordinate
    MSE (the regression loss) and the mean NME of predicting the mean training shape for every face.
    -> (loss, nme, landmarks [M, N, 2] input pixels)"""
    train_ds = T.make_datasets(cfg)[0]
    pts = np.stack([train_ds.sample(i, None)["landmarks"] for i in range(len(train_ds))]).astype(np.float64)
    size = np.array([cfg.input_size, cfg.input_size])
    target = (2 * pts + 1) / size - 1                                 # STAR's [-1, 1] labels (train.normalize_points)
    loss = float(((target - target.mean(0)) ** 2).mean())            # the mean shape minimises this MSE
    guess = np.broadcast_to(pts.mean(0), pts.shape)
    return loss, float(metrics.nme(guess, pts, T.model_layout(cfg)).mean()), pts


def test_regression_loss_falls_and_export(cache, tmp_path):
    """The model learns from the images: its last epoch's training loss is below the loss of the
    mean shape (the best a model blind to the images can do, since the mean minimises the MSE), and
    on the training faces its NME is below the mean shape's."""
    cfg = tiny(cache, tmp_path / "run", epochs=40, augment=False, lr_backbone=1e-2, lr_head=1e-2)
    s = T.train(cfg)
    losses = [h["train_loss"] for h in s["history"]]
    assert losses[-1] < 0.5 * losses[0], losses
    anchor_loss, anchor_nme, pts = mean_shape_anchor(cfg)
    assert losses[-1] < 0.7 * anchor_loss, (losses, anchor_loss)          # measured: 0.37 of it
    from torch_impl.models import build
    last = build("stud5", TINY_STUD5).eval()
    last.load_state_dict(final_state(tmp_path / "run")["model"])
    ev = T.evaluate(last, T.make_datasets(cfg)[0], cfg, "cpu", T.model_layout(cfg))
    np.testing.assert_allclose(ev["gt"], pts)                         # the same faces, un-augmented
    assert ev["nme"].mean() < 0.8 * anchor_nme, (ev["nme"].mean(), anchor_nme)  # measured: 0.60 of it
    # the best checkpoint is the lowest-val-NME epoch, and it is what was exported
    best = min(s["history"], key=lambda h: h["val_nme"])
    assert s["best_epoch"] == best["epoch"] and s["best_val_nme"] == best["val_nme"]
    tensors, man = weights.load(s["weights"])
    assert man["architecture"] == "stud5" and man["layout"] == "ibug68"
    assert man["input"]["channels"] == 1 and man["input"]["size"] == [32, 32]
    assert man["training"]["config"]["epochs"] == 40
    assert man["training"]["test"]["nme"] == pytest.approx(s["test"]["nme"])
    split = man["training"]["test_split"]                             # which render the NME was measured on
    assert split["split"] == "test" and split["n"] == 6 and len(split["sha256"]) == 64 and split["numpy"]
    ck = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    for k, v in tensors.items():
        np.testing.assert_array_equal(v, ck["model"][k].numpy())
    # lmref runs the exported weights to the torch model's predictions
    from lmref.weights import load_model
    from torch_impl.models import build
    model = build("stud5", TINY_STUD5).eval()
    model.load_state_dict(ck["model"])
    x = torch.randn(2, 1, 32, 32)
    np.testing.assert_allclose(load_model(s["weights"])(x.numpy()), model(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    with open(tmp_path / "run" / "result.json") as f:
        assert json.load(f)["test"]["count"] == 6


def test_same_seed_same_weights_other_seed_differs(cache, tmp_path):
    a = T.train(tiny(cache, tmp_path / "a", epochs=1, export=False))
    b = T.train(tiny(cache, tmp_path / "b", epochs=1, export=False))
    c = T.train(tiny(cache, tmp_path / "c", epochs=1, export=False, seed=1))
    assert_same_run(final_state(tmp_path / "a"), final_state(tmp_path / "b"))
    assert a["test"] == b["test"] and a["test"] != c["test"]


def test_dataloader_workers_give_the_same_run(cache, tmp_path):
    T.train(tiny(cache, tmp_path / "w0", epochs=1, export=False))
    T.train(tiny(cache, tmp_path / "w2", epochs=1, export=False, num_workers=2))
    assert_same_run(final_state(tmp_path / "w0"), final_state(tmp_path / "w2"))


def test_resume_after_stop_is_bit_identical(cache, tmp_path):
    """Stop mid-epoch (max_steps: no checkpoint beyond the last step checkpoint), resume, compare."""
    full = tiny(cache, tmp_path / "full", epochs=3, checkpoint_every=2, export=False)
    T.train(full)
    cut = tiny(cache, tmp_path / "cut", epochs=3, checkpoint_every=2, export=False, max_steps=7)
    s = T.train(cut)
    assert s["stopped"] and s["global_step"] == 7 and s["epoch"] == 1 and s["step_in_epoch"] == 2
    mid = final_state(tmp_path / "cut")
    assert (mid["epoch"], mid["step_in_epoch"], mid["global_step"]) == (1, 1, 6)   # steps 6, 7 -> 6 saved
    T.train(tiny(cache, tmp_path / "cut", epochs=3, checkpoint_every=2, export=False, resume=True))
    assert_same_run(final_state(tmp_path / "full"), final_state(tmp_path / "cut"))


def test_epoch_steps_limits_each_epoch_to_its_first_batches(cache, tmp_path):
    """epoch_steps=2: each epoch trains on the first 2 batches of its shuffle (global steps 2 per epoch,
    the cosine schedule spread over them), and its first steps are the full run's first steps."""
    short = T.train(tiny(cache, tmp_path / "short", epochs=2, epoch_steps=2, export=False,
                         lr_schedule="cosine"))
    assert short["global_step"] == 4 and [h["epoch"] for h in short["history"]] == [1, 2]
    assert short["history"][-1]["lr_factor"] == pytest.approx(T.lr_factor(
        tiny(cache, tmp_path, epochs=2, lr_schedule="cosine"), 3, 2))
    T.train(tiny(cache, tmp_path / "two", epochs=1, epoch_steps=2, export=False))   # constant lr: the same
    T.train(tiny(cache, tmp_path / "cut", epochs=1, export=False, max_steps=2, checkpoint_every=1))  # 2 steps
    a, b = final_state(tmp_path / "two")["model"], final_state(tmp_path / "cut")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="epoch_steps"):
        tiny(cache, tmp_path / "bad", epoch_steps=-1)


def test_resume_after_kill_is_bit_identical(cache, tmp_path):
    """A training process killed with SIGKILL mid-epoch, then resumed, ends where an uninterrupted
    run ends."""
    kw = dict(epochs=4, checkpoint_every=1, export=False, augment=True)
    T.train(tiny(cache, tmp_path / "full", **kw))
    out = tmp_path / "killed"
    cfg = T.config_to_dict(tiny(cache, out, **kw))
    cfg_path = tmp_path / "killed.json"
    cfg_path.write_text(json.dumps(cfg))
    code = ("import json, sys; from torch_impl import train as T; "
            "T.train(T.config_from_dict(json.load(open(sys.argv[1]))))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(cfg_path)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT})
    last, seen = out / "last.pt", None
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if last.exists():
            try:
                seen = torch.load(last, weights_only=True)
            except Exception:              # pragma: no cover - never half-written (os.replace)
                raise
            if seen["epoch"] >= 1 and 0 < seen["step_in_epoch"]:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.002)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-epoch"
    mid = final_state(out)
    assert mid["epoch"] < 4
    T.train(T.TrainConfig(**{**cfg, "resume": True, "distill": cfg["distill"]}))
    assert_same_run(final_state(tmp_path / "full"), final_state(out))


# ------------------------------------------------------------------------------------ DDP (gloo)

def _ddp_worker(rank, world, port, cfg_dict, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    s = T.train(T.config_from_dict(cfg_dict))
    torch.save({k: v.clone() for k, v in s["model"].state_dict().items()}, os.path.join(out, f"rank{rank}.pt"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes_end_identical(cache, tmp_path):
    import torch.multiprocessing as mp
    T.train(tiny(cache, tmp_path / "warm", epochs=1, export=False, max_steps=1))   # data cached first
    cfg = T.config_to_dict(tiny(cache, tmp_path / "ddp", epochs=2, export=False))
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k                          # parameters and BN statistics
    last = final_state(tmp_path / "ddp")
    assert last["global_step"] == 2 * (20 // 4) and len(last["history"]) == 2
    for k in r0:
        assert torch.equal(r0[k], last["model"][k]), k


# --------------------------------------------------------------------------- tasks and distillation

def test_aam_task_and_lkd_distillation(cache, tmp_path):
    teacher_cfg = tiny(cache, tmp_path / "teacher", arch="aam", epochs=1, augment=False, input_size=32,
                       model={"backbone": "swinv2", "layout": "inner51",
                              "backbone_config": {"img_size": [32, 32], "embed_dim": 16, "depths": [1, 1],
                                                  "num_heads": [1, 2], "window_size": [4, 4]}})
    t = T.train(teacher_cfg)
    assert np.isfinite(t["test"]["nme"]) and t["history"][0]["train_loss"] > 0
    tp = T.load_teacher(tmp_path / "teacher" / "best.pt")
    tw = T.load_teacher(t["weights"])
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(tp(x)["landmarks"], tw(x)["landmarks"], rtol=1e-5, atol=1e-5)
    assert not any(p.requires_grad for p in tw.parameters()) and not tw.training
    student_cfg = tiny(cache, tmp_path / "student", arch="aam", model=TINY_AAM, epochs=2, augment=False,
                       distill={"kind": "lkd", "teacher": t["weights"], "feat_weight": 1.0, "heat_weight": 1.0})
    s = T.train(student_cfg)
    assert np.isfinite(s["test"]["nme"])
    last = final_state(tmp_path / "student")
    assert "kd.adapter.weight" in last["extra"]                       # student 128 ch -> teacher 32 ch
    # training steps moved the student and its adapter, and the distillation term fell
    first, trained, teacher = lkd_trainees(student_cfg, last)
    params = dict(trained.named_parameters())
    moved = [k for k, v in first.named_parameters() if not torch.equal(v, params[k])]
    assert "kd.adapter.weight" in moved and len(moved) >= 0.9 * len(params), (len(moved), len(params))
    batch = T.load_batch(T.make_datasets(student_cfg)[0], list(range(8)), None, student_cfg, "cpu",
                         T.model_layout(student_cfg))
    teacher_out = T.teacher_outputs(teacher, batch, "lkd")
    with torch.no_grad():                          # training mode, as the terms were minimised (batch statistics)
        before = first.train()(batch, teacher_out)[1]
        after = trained.train()(batch, teacher_out)[1]
    assert after["kd_feat"] < 0.95 * before["kd_feat"] and after["kd_heat"] < before["kd_heat"], (before, after)
    man = weights.load(s["weights"])[1]
    assert man["layout"] == "inner51" and not any("adapter" in k for k in weights.load(s["weights"])[0])


def lkd_trainees(cfg, last):
    """The L_KD trainee (student + adapter) as training started -- rebuilt from the run's seed in the
    trainer's order: student, teacher, adapter -- and as it ended (``last``: its last.pt), and the
    teacher. -> (first, trained, teacher)"""
    from torch_impl.models import build

    def trainee():
        torch.manual_seed(cfg.seed)
        model = build(cfg.arch, cfg.model)
        teacher = T.load_teacher(cfg.distill.teacher)
        return T.Trainee(model, cfg, teacher), teacher

    (first, teacher), (trained, _) = trainee(), trainee()
    trained.load_state_dict({**{f"model.{k}": v for k, v in last["model"].items()}, **last["extra"]})
    return first, trained, teacher


def test_heatmap_task_bce(cache, tmp_path):
    model = {"num_points": 68, "num_modules": [1, 1, 1], "num_blocks": [1, 1, 1], "stem_channels": 8,
             "stem_out_channels": 8, "num_channels": [[8, 16], [8, 16, 32], [8, 16, 32, 64]],
             "fusion": "scaf", "head": "mr", "iterative_head": False}
    s = T.train(tiny(cache, tmp_path / "hr", arch="litehrnet", model=model, heatmap_loss="bce",
                     heatmap_sigma=1.0, epochs=2, lr_backbone=2e-3, lr_head=2e-3))
    assert s["history"][1]["train_loss"] < s["history"][0]["train_loss"]
    assert weights.load(s["weights"])[1]["architecture"] == "litehrnet"


def test_rbd_and_ckd_distillation(cache, tmp_path):
    teacher = T.train(tiny(cache, tmp_path / "t", arch="resnet", epochs=1,
                           model={"layers": [1, 1, 1, 1], "block": "basic", "stem_width": 4}))
    rbd = T.train(tiny(cache, tmp_path / "rbd", epochs=1,
                       distill={"kind": "rbd", "teacher": teacher["weights"], "rbd_lambda": 0.5}))
    assert np.isfinite(rbd["test"]["nme"])
    out = tmp_path / "ckd"
    init_cfg = tiny(cache, out, epochs=3, distill={"kind": "ckd", "teacher": teacher["weights"],
                                                   "ckd_phase1_epochs": 2})
    ckd = T.train(init_cfg)
    assert [h["phase"] for h in ckd["history"]] == [1, 1, 2]
    assert ckd["best_epoch"] == 3                                    # phase 1 epochs are never "best"
    last = final_state(out)
    assert "regressor.conv.weight" in last["extra"]
    # phase 1 trains the convs, not the FC; phase 2 the FC, not the convs (checked on a fresh run)
    T.train(tiny(cache, tmp_path / "p1", epochs=2, export=False,
                 distill={"kind": "ckd", "teacher": teacher["weights"], "ckd_phase1_epochs": 2}))
    p1 = final_state(tmp_path / "p1")                                # the same run up to the phase switch
    torch.manual_seed(0)
    from torch_impl.models import build
    init = build("stud5", TINY_STUD5).state_dict()
    assert torch.equal(p1["model"]["fc.weight"], init["fc.weight"])
    assert not torch.equal(p1["model"]["blocks.0.conv.weight"], init["blocks.0.conv.weight"])
    assert torch.equal(last["model"]["blocks.0.conv.weight"], p1["model"]["blocks.0.conv.weight"])
    assert torch.equal(last["model"]["blocks.0.bn.running_mean"], p1["model"]["blocks.0.bn.running_mean"])
    assert not torch.equal(last["model"]["fc.weight"], p1["model"]["fc.weight"])


def test_init_starts_from_the_file_and_needs_the_same_model(cache, tmp_path):
    """init: the run starts from a file's weights (a trainer checkpoint or an lmref .safetensors), not the
    seed's; a file of another model is refused; the fine-tune then moves the weights."""
    a = T.train(tiny(cache, tmp_path / "a", epochs=1))
    for path in (a["weights"], str(tmp_path / "a" / "best.pt")):
        cfg = tiny(cache, tmp_path / "b", epochs=1, seed=5, init=path)
        trainee, _ = T.build_trainee(cfg)
        start = T.load_teacher(path).state_dict()
        for k, v in trainee.model.state_dict().items():
            assert torch.equal(v.float(), start[k].float()), k
    s = T.train(tiny(cache, tmp_path / "c", epochs=1, seed=5, init=a["weights"]))
    moved = final_state(tmp_path / "c")["model"]
    assert any(not torch.equal(moved[k].float(), start[k].float()) for k in start if start[k].is_floating_point())
    assert s["history"][0]["val_nme"] != a["history"][0]["val_nme"]
    with pytest.raises(RuntimeError, match="size mismatch|Missing key"):
        T.build_trainee(tiny(cache, tmp_path / "d", model={"channels": [4, 8, 8, 8, 16]}, init=a["weights"]))
