"""The long runs: the distillation teachers, trained long, once, and shipped as pre-trained models, as the
papers use theirs; and the shipped models (the student, stud5, litehrnet_plus), trained the same way (long,
resumable) on the same pool.

    python -m torch_impl.teachers list                        # the teachers, their settings and progress
    python -m torch_impl.teachers train icme_swinv2 [--hours 2.5] [--threads 1]
    python -m torch_impl.teachers keep icme_swinv2            # copy the resume state into teachers/ (commit it)
    python -m torch_impl.teachers curves                      # learning curves -> benchmarks/results/teachers.md/.png
    python -m torch_impl.teachers ship icme_swinv2            # test NME, float16 file in lmref/assets/models
    python -m torch_impl.teachers train student               # the shipped student (lmref/assets/models/student)
    python -m torch_impl.teachers train stud5                 # ... and the other shipped models: stud5, litehrnet_plus
    python -m torch_impl.teachers train student_v3            # the student's run on version-3 faces (issue 16; not shipped)
    python -m torch_impl.teachers train student_v4            # ... and on version-4 faces (300-W's labelling convention)
    python -m torch_impl.teachers train student_ft_v4 [--seed 1]   # the shipped student fine-tuned on version 4 (student_ft_v5, student_ft_v2)

A teacher run takes hours and must survive being stopped at any moment, in a process or a machine that
is gone the next time.  So:

* it is an ordinary ``torch_impl.train`` run (``runs/teachers/<name>/``) with ``checkpoint_every`` set to
  about 15 minutes of steps and ``compact_checkpoints``: at every checkpoint the weights are rounded to
  float16 and Adam's moments to bfloat16, in memory as on disk, killed or not, so a resumed run ends with
  the same weights as an uninterrupted one (``tests/test_teachers.py`` kills one to check);
* ``keep`` copies the newest compact checkpoint (``last.pt``, ``best.pt``) and the history into
  ``teachers/<name>/``, which is committed; ``train`` on a fresh checkout starts from there.  Commit it at
  the end of a working session only (an optimizer state is never committed twice) and ``git rm`` it when
  the teacher is shipped;
* ``--hours`` stops the run cleanly at the first checkpoint after that much wall time (as if killed there).

The teachers share the data and the test split of their experiment (``torch_impl.experiments``): the same
synthetic pool, input size and channels, so the student rows and the teacher row of a table are measured
on the same faces.  Each teacher is then a fixed, frozen, pre-trained model for every student seed.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time

__all__ = ["TEACHERS", "STUDENTS", "LONG_RUNS", "shipped_name",
           "teacher_config", "run_dir", "kept_dir", "train_teacher", "keep", "curves", "ship", "main"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEPT = os.path.join(ROOT, "teachers")                 # committed resume state
RUNS = os.path.join(ROOT, "runs", "teachers")         # the live run directories
ASSETS = os.path.join(ROOT, "lmref", "assets", "models")


# The shipped student's long run: the experiment's student (MobileViT-v2 x0.5 + AAM, inner 51 points,
# the CPU AAM recipe) on the same 20,000-face pool, trained for STUDENT_LONG_EPOCHS instead of the
# experiment's two.  Its input size: benchmarks/results/student_input_size.md; its distillation (none
# unless a setting of benchmarks/results/icme_sweep.md helps): STUDENT_LONG_DISTILL, from the shipped
# ICME teacher.
STUDENT_LONG_EPOCHS = 16
STUDENT_LONG_INPUT = 96
STUDENT_LONG_DISTILL = None                           # e.g. {"kind": "lkd", "feat_weight": 0.0, "heat_weight": 1e4}
# The other shipped models' long runs: their experiment's run (kd's stud5 without KD; litehrnet's Plus 10M with
# the BCE loss, the table's best) trained for these many whole passes over the same pool (the experiments
# give them 2 x 400 batches and 6 passes over 2,000 faces).
# The fine-tunes of the shipped student (issue 16): a few epochs at a fifth of its peak lr.
FINE_TUNE_EPOCHS = 3
FINE_TUNE_LR = 2e-4
STUD5_LONG_EPOCHS = 6
LITEHRNET_LONG_EPOCHS = 6


def _teachers():
    """name -> (experiment, config dict for torch_impl.train, what it stands for).  The config is the
    experiment's teacher (or student) run (``torch_impl.experiments``), checkpointed every ~15 minutes,
    compactly."""
    from .experiments import icme_runs, kd_runs, litehrnet_runs, settings
    s = settings(False)
    long_run = {"compact_checkpoints": True, "resume": True, "progress": False}
    # checkpoint_every: about 15 minutes of steps on one busy core (SwinV2 ~0.65 s, ResNet-50 ~1.3 s,
    # the student ~0.3 s a step)
    return {
        "icme_swinv2": ("icme", {**icme_runs(s)["teacher"][0], **long_run, "checkpoint_every": 700},
                        "the ICME 2024 SwinV2 + AAM teacher (paper: SwinV2-B, ImageNet pre-trained), CPU-sized"),
        "kd_resnet50": ("kd", {**kd_runs(s)["resnet50"][0], **long_run, "checkpoint_every": 700},
                        "the compact-KD report's grayscale ResNet-50 regressor (23,780,424 parameters)"),
        "student": ("icme", _student_long(icme_runs(s)["student"][0], long_run),
                    "the shipped student: MobileViT-v2 x0.5 + AAM (1.1 M parameters), trained long"),
        # issue 16: the same run on version-3 faces (lmref.data.photo), pool and test split; compared with the
        # student on the real-photo check (benchmarks.real_photos), the measure of the renderer's realism
        "student_v3": ("icme", _on_version(_student_long(icme_runs(s)["student"][0], long_run), 3),
                       "the student's long run on version-3 (photographic) synthetic faces"),
        # issue 16: version 4 is version 3's images labelled in 300-W's convention (lmref.data.face3d.LABEL_2D);
        # against student_v3 it measures what the labels alone do
        "student_v4": ("icme", _on_version(_student_long(icme_runs(s)["student"][0], long_run), 4),
                       "the student's long run on version-4 faces (version 3's, labelled in 300-W's convention)"),
        # issue 16: the shipped student fine-tuned on version-4 faces, and the same fine-tune on the version-2
        # pool it was trained on (the control: what more training alone does)
        "student_ft_v4": ("icme", _fine_tune(_on_version(_student_long(icme_runs(s)["student"][0], long_run), 4)),
                          "the shipped student fine-tuned on version-4 faces"),
        "student_ft_v5": ("icme", _fine_tune(_on_version(_student_long(icme_runs(s)["student"][0], long_run), 5)),
                          "the shipped student fine-tuned on version-5 faces (real faces' identity spread)"),
        "student_ft_v2": ("icme", _fine_tune(_student_long(icme_runs(s)["student"][0], long_run)),
                          "the shipped student fine-tuned as student_ft_v4, on its own version-2 pool (control)"),
        # stud5: 893 s for its first epoch of 1,250 steps on one thread beside two other jobs (~0.7 s a step);
        # Lite-HRNet Plus 10M's step time not measured yet (2000 is a guess at ~15 minutes)
        "stud5": ("kd", _long(kd_runs(s)["stud5"][0], long_run, STUD5_LONG_EPOCHS, 1500),
                  "the shipped Stud5 (68 points regressed, 64 px gray), trained long on the pool"),
        "litehrnet_plus": ("litehrnet", _long(litehrnet_runs(s)["plus10m_bce"][0], long_run, LITEHRNET_LONG_EPOCHS, 2000),
                           "the shipped Lite-HRNet Plus 10M (SCAF, MR head, BCE), trained long on the pool"),
    }


def _long(cfg, long_run, epochs, every):
    """An experiment's run as a long run: whole passes over the pool (no ``epoch_steps`` cut), ``epochs`` of
    them, a checkpoint every ``every`` steps."""
    cfg = {k: v for k, v in cfg.items() if k != "epoch_steps"}
    return {**cfg, **long_run, "checkpoint_every": every, "epochs": epochs}


def _student_long(cfg, long_run):
    """The experiment's student config with the long run's epochs, input and distillation."""
    from .experiments import teacher_file
    cfg = {**_long(cfg, long_run, STUDENT_LONG_EPOCHS, 3000), "input_size": STUDENT_LONG_INPUT}
    if STUDENT_LONG_DISTILL:
        cfg["distill"] = {**STUDENT_LONG_DISTILL, "teacher": teacher_file("icme")}
    return cfg


def _fine_tune(cfg):
    """A student run restarted from the shipped student's weights: FINE_TUNE_EPOCHS epochs, the lr cosine from
    FINE_TUNE_LR (a fifth of the long run's peak, which the shipped run ended far below)."""
    return {**cfg, "init": os.path.join(ASSETS, "student.safetensors"), "epochs": FINE_TUNE_EPOCHS,
            "lr_backbone": FINE_TUNE_LR, "lr_head": FINE_TUNE_LR}


def _on_version(cfg, version):
    """A run's config on another version of the synthetic renderer (its pool and its test split)."""
    return {**cfg, "data": {**cfg["data"], "synthetic_version": version}}


TEACHERS = ("icme_swinv2", "kd_resnet50")
# ship puts them in lmref/assets/models/<name>.safetensors (student_v3, student_v4 and the student_ft_* fine-tunes,
# issue 16's measurements of the renderer versions, are not shipped: none did clearly better than the student on
# the real-photo check, README)
STUDENTS = ("student", "stud5", "litehrnet_plus", "student_v3", "student_v4", "student_ft_v4", "student_ft_v5", "student_ft_v2")
LONG_RUNS = TEACHERS + STUDENTS


def shipped_name(name):
    """The file a long run ships as: teacher_<name> for a teacher, <name> for a student."""
    return f"teacher_{name}" if name in TEACHERS else name


def teacher_config(name, seed=0):
    """The torch_impl.train config dict of a teacher (its run directory filled in); ``seed`` another seed's
    run (its own directory)."""
    table = _teachers()
    if name not in table:
        raise SystemExit(f"unknown teacher {name!r}; known: {', '.join(table)}")
    cfg = copy.deepcopy(table[name][1])
    cfg.update(out_dir=run_dir(name, seed), name=shipped_name(name), seed=seed)
    return cfg


def _seeded(name, seed):
    return name if seed == 0 else f"{name}_seed{seed}"


def run_dir(name, seed=0):
    return os.path.join(RUNS, _seeded(name, seed))


def kept_dir(name, seed=0):
    return os.path.join(KEPT, _seeded(name, seed))


def _restore(kept, run):
    """A fresh checkout: start the run directory ``run`` from the committed state in ``kept``."""
    if os.path.exists(os.path.join(run, "last.pt")) or not os.path.exists(os.path.join(kept, "last.pt")):
        return False
    os.makedirs(run, exist_ok=True)
    for fn in ("last.pt", "best.pt"):
        if os.path.exists(os.path.join(kept, fn)):
            shutil.copyfile(os.path.join(kept, fn), os.path.join(run, fn))
    return True


def train_teacher(name, hours=0.0, threads=0, overrides=None, kept=None, seed=0):
    """Train (or resume) teacher ``name``; with ``hours`` stop at the first checkpoint after that long.
    ``overrides``: config keys to change (the tests: a tiny model, other directories); ``kept``: the
    committed state's directory (default teachers/<name>/); ``seed``: another seed's run. -> the trainer's
    summary."""
    from .train import config_from_dict, train
    cfg = teacher_config(name, seed)
    cfg.update(overrides or {})
    kept = kept or kept_dir(name, seed)
    if _restore(kept, cfg["out_dir"]):
        print(f"{name}: resuming from the committed state in {kept}", flush=True)
    cfg.update(num_threads=threads, max_minutes=60.0 * hours)
    os.makedirs(cfg["out_dir"], exist_ok=True)
    with open(os.path.join(cfg["out_dir"], "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    return train(config_from_dict(cfg))


def _load(path):
    import torch
    return torch.load(path, map_location="cpu", weights_only=True)


def keep(name, src=None, dst=None, weights_only=False):
    """Copy the run's compact last.pt / best.pt and its history into the committed directory.
    ``weights_only``: keep last.pt without the optimizer state (and no best.pt) -- a third of the size,
    for a state too large to commit (ResNet-50's is 143 MB); a resume from it restarts Adam's moments
    and so is not bit-exact (the trainer says so)."""
    src, dst = src or run_dir(name), dst or kept_dir(name)
    last = os.path.join(src, "last.pt")
    if not os.path.exists(last):
        raise SystemExit(f"{name}: no checkpoint in {src}")
    os.makedirs(dst, exist_ok=True)
    ck = _load(last)
    if weights_only:
        from .train import save_checkpoint
        save_checkpoint({k: v for k, v in ck.items() if k != "optimizer"}, os.path.join(dst, "last.pt"))
        if os.path.exists(os.path.join(dst, "best.pt")):
            os.remove(os.path.join(dst, "best.pt"))
    else:
        for fn in ("last.pt", "best.pt"):
            if os.path.exists(os.path.join(src, fn)):
                shutil.copyfile(os.path.join(src, fn), os.path.join(dst, fn))
    info = {k: ck[k] for k in ("epoch", "step_in_epoch", "global_step", "best_nme", "best_epoch", "history")}
    with open(os.path.join(dst, "progress.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


def _history(name):
    """The newest history of a long run: the live run's, else the committed one's, else the shipped file's
    (a teacher's manifest keeps its whole training record), else []."""
    path = os.path.join(run_dir(name), "last.pt")
    if os.path.exists(path):
        return _load(path)["history"]
    prog = os.path.join(kept_dir(name), "progress.json")
    if os.path.exists(prog):
        with open(prog) as f:
            return json.load(f)["history"]
    return _shipped_training(name).get("history", [])


def curves(out_dir=os.path.join(ROOT, "benchmarks", "results")):
    """Learning curves of every long run (val NME per epoch) -> teachers.md and teachers.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    table = _teachers()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=150)
    md = ["# Learning curves of the long runs (the teachers, the shipped models)", "", "Val NME (inter-ocular, %) after each epoch of "
          "`python -m torch_impl.teachers train NAME`; the cumulative training time counts epochs incl. validation.", ""]
    for name, (exp, cfg, what) in table.items():
        h = _history(name)
        md += [f"## {name} ({exp}): {what}", ""]
        if not h:
            md += ["not started", ""]
            continue
        ep = [e["epoch"] for e in h]
        nme = [100 * e["val_nme"] for e in h]
        hours = [sum(x["seconds"] for x in h[:i + 1]) / 3600 for i in range(len(h))]
        ax.plot(ep, nme, marker="o", ms=3, label=name)
        md += ["| epoch | val NME (%) | lr factor | hours |", "|---|---|---|---|"]
        md += [f"| {e['epoch']} | {100 * e['val_nme']:.2f} | {e['lr_factor']:.3f} | {t:.2f} |" for e, t in zip(h, hours)]
        md.append("")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val NME (%)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("Long runs: validation NME per epoch")
    fig.tight_layout()
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(os.path.join(out_dir, "teachers.png"))
    plt.close(fig)
    md.append("![learning curves](teachers.png)")
    with open(os.path.join(out_dir, "teachers.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    return os.path.join(out_dir, "teachers.md")


def ship(name, dest_dir=ASSETS, seed=0):
    """Export the finished run's best checkpoint as a float16 lmref file with its test NME and full
    training record in the manifest (``role: teacher`` or ``student``); ``seed``: another seed's run, saved
    as <name>_seed<N>."""
    res_path = os.path.join(run_dir(name, seed), "result.json")
    if not os.path.exists(res_path):
        raise SystemExit(f"{name}: not finished (no {res_path}); train it to the end first")
    with open(res_path) as f:
        res = json.load(f)
    from . import ship as ship_mod
    from lmref import weights
    dest = os.path.join(dest_dir, f"{_seeded(shipped_name(name), seed)}.safetensors")
    shutil.copyfile(res["weights"], dest)
    tensors, manifest = weights.load(dest)
    manifest["training"].update(role="teacher" if name in TEACHERS else "student",
                                experiment=_teachers()[name][0], history=res["history"],
                                train_hours=sum(e["seconds"] for e in res["history"]) / 3600,
                                command=f"python -m torch_impl.teachers train {name}" + (f" --seed {seed}" if seed else ""))
    weights.save(dest, tensors, manifest)
    ship_mod.half(dest)
    return dest


def _shipped_training(name):
    """The training record in the manifest of the file a long run ships as ({} if none is shipped; the
    student's file may come from an earlier recipe: its config is in the same record)."""
    path = os.path.join(ASSETS, f"{shipped_name(name)}.safetensors")
    if not os.path.exists(path):
        return {}
    from lmref import weights
    return weights.load(path)[1]["training"]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m torch_impl.teachers", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the teachers and their progress")
    t = sub.add_parser("train", help="train or resume a teacher")
    t.add_argument("name", choices=LONG_RUNS)
    t.add_argument("--hours", type=float, default=0.0, help="stop at the first checkpoint after this long (0: run to the end)")
    t.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    t.add_argument("--seed", type=int, default=0,
                   help="another seed's run, in runs/teachers/NAME_seedN (default 0: runs/teachers/NAME)")
    k = sub.add_parser("keep", help="copy the resume state into teachers/<name>/ for committing")
    k.add_argument("name", choices=LONG_RUNS)
    k.add_argument("--weights-only", action="store_true",
                   help="without the optimizer state (a third of the size; the resume is then not bit-exact)")
    sub.add_parser("curves", help="learning curves -> benchmarks/results/teachers.md/.png")
    s = sub.add_parser("ship", help="store the finished teacher in lmref/assets/models (float16)")
    s.add_argument("name", choices=LONG_RUNS)
    s.add_argument("--seed", type=int, default=0, help="another seed's run (saved as NAME_seedN)")
    s.add_argument("--dir", default=ASSETS, help="where to put the file (default lmref/assets/models)")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        for name, (exp, cfg, what) in _teachers().items():
            h = _history(name)
            shipped = _shipped_training(name).get("test", {}).get("nme")
            state = [f"{len(h)}/{cfg['epochs']} epochs, val NME {100 * h[-1]['val_nme']:.2f}%"] if h else []
            state += [f"shipped file: test NME {100 * shipped:.2f}%"] if shipped is not None else []
            state = "; ".join(state) or "not started"
            print(f"{name:<14} {exp:<9} {cfg['arch']:<9} input {cfg['input_size']}  {state}  -- {what}")
    elif args.cmd == "train":
        t0 = time.time()
        s = train_teacher(args.name, args.hours, args.threads, seed=args.seed)
        print(f"{args.name}: {'stopped' if s.get('stopped') else 'finished'} at step {s['global_step']} "
              f"after {(time.time() - t0) / 3600:.2f} h")
    elif args.cmd == "keep":
        info = keep(args.name, weights_only=args.weights_only)
        print(f"{args.name}: kept epoch {info['epoch']} step {info['step_in_epoch']} in {kept_dir(args.name)}")
    elif args.cmd == "curves":
        print(curves())
    elif args.cmd == "ship":
        print(ship(args.name, args.dir, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
