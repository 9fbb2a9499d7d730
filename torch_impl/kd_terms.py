"""Why does a distillation loss help or not?  Measure each of its terms in a finished L_KD run.

For the student of an ``lkd`` run (``torch_impl.experiments icme``'s ``student_kd-sN``) this takes the
batches that run trained on first (epoch 0, its augmentation) and reports, at the run's initial weights
and at its end (``last.pt``, with the train-only adapter):

* each term's value: the task loss (STAR + AWing), L_KD's feature term MSE(A(F_S), F_T) and its
  heatmap term MSE(H_S, H_T), unweighted and as weighted in the run;
* the gradient each weighted term sends into the student's parameters (L2 norm over all of them), and
  the cosine between each KD gradient and the task's: a KD term whose gradient is a small fraction of
  the task's, or orthogonal to it, cannot change what the student learns;
* with ``--base`` (the paired run without KD), how far each student's heatmaps are from the teacher's
  (did L_KD bring them closer?).

    python -m torch_impl.kd_terms runs/experiments/icme/student_kd-s0 --base runs/experiments/icme/student-s0
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

from .train import build_trainee, config_from_dict, make_datasets, model_layout, task_loss, teacher_outputs, \
    train_batches

__all__ = ["load_run", "term_stats", "heatmap_gap", "measure", "report", "main"]


def load_run(run_dir, state="end"):
    """(cfg, trainee, teacher) of a run: ``state`` "init" its initial weights (torch_impl.train's
    own ``build_trainee``); "end" loads ``last.pt``."""
    with open(os.path.join(run_dir, "config.json")) as f:
        cfg = config_from_dict(json.load(f))
    trainee, teacher = build_trainee(cfg)
    if state == "end":
        ckpt = torch.load(os.path.join(run_dir, "last.pt"), map_location="cpu", weights_only=True)
        trainee.load_state_dict({**{f"model.{k}": v.float() for k, v in ckpt["model"].items()},
                                 **{k: v.float() for k, v in ckpt["extra"].items()}})
    return cfg, trainee, teacher


def _grad(loss, params):
    g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(x if x is not None else torch.zeros_like(p)).reshape(-1) for x, p in zip(g, params)])


def term_stats(cfg, trainee, teacher, batches):
    """{term: {"value", "weighted", "grad_norm", "cos_task"}} averaged over ``batches`` (train mode,
    as in training; the gradients are taken w.r.t. the student's own parameters only)."""
    assert cfg.distill.kind == "lkd", "term_stats measures L_KD runs"
    trainee.train()
    params = [p for p in trainee.model.parameters() if p.requires_grad]
    w = {"task": 1.0, "feat": cfg.distill.feat_weight, "heat": cfg.distill.heat_weight}
    rows = {k: {"value": [], "grad_norm": [], "cos_task": []} for k in w}
    for batch in batches:
        out = trainee.model(batch["image"])
        t_out = teacher_outputs(teacher, batch, "lkd")
        task, _ = task_loss(out, batch, cfg, trainee.aam_loss)
        feat, heat = trainee.kd.terms(out["features"], t_out["features"], out["fusion_heatmaps"],
                                      t_out["fusion_heatmaps"])
        terms = {"task": task, "feat": feat, "heat": heat}
        grads = {k: _grad(w[k] * v, params) for k, v in terms.items()}
        for k, v in terms.items():
            rows[k]["value"].append(float(v.detach()))
            rows[k]["grad_norm"].append(float(grads[k].norm()))
            rows[k]["cos_task"].append(float(torch.nn.functional.cosine_similarity(grads[k], grads["task"], dim=0)))
    return {k: {"weight": w[k], "value": float(np.mean(r["value"])), "weighted": w[k] * float(np.mean(r["value"])),
                "grad_norm": float(np.mean(r["grad_norm"])), "cos_task": float(np.mean(r["cos_task"]))}
            for k, r in rows.items()}


@torch.no_grad()
def heatmap_gap(model, teacher, batches):
    """Mean MSE between the student's and the teacher's fused heatmaps (eval mode) over ``batches``."""
    model.eval()
    return float(np.mean([float(torch.nn.functional.mse_loss(model(b["image"])["fusion_heatmaps"],
                                                             teacher(b["image"])["fusion_heatmaps"]))
                          for b in batches]))


def measure(kd_dir, base_dir=None, n_batches=8):
    """The numbers ``report`` prints, as a dict (see the module docstring)."""
    cfg, _, _ = load_run(kd_dir, "init")
    train_ds, _, _ = make_datasets(cfg)
    layout = model_layout(cfg)
    n_batches = min(n_batches, len(train_ds) // cfg.batch_size)        # (a tiny split has fewer)
    batches = [b for _, b in train_batches(train_ds, cfg, 0, 0, n_batches, 0, 1, "cpu", layout)]
    out = {"run": kd_dir, "batches": n_batches, "batch_size": cfg.batch_size,
           "distill": {"feat_weight": cfg.distill.feat_weight, "heat_weight": cfg.distill.heat_weight}}
    for state in ("init", "end"):
        cfg, trainee, teacher = load_run(kd_dir, state)
        out[state] = term_stats(cfg, trainee, teacher, batches)
    out["heatmap_gap"] = {"with_kd": heatmap_gap(trainee.model, teacher, batches)}
    if base_dir:
        _, base, _ = load_run(base_dir, "end")
        out["heatmap_gap"]["without_kd"] = heatmap_gap(base.model, teacher, batches)
        out["base_run"] = base_dir
    return out


def report(res):
    lines = [f"L_KD's terms in `{res['run']}` ({res['batches']} training batches of {res['batch_size']}, "
             f"epoch 0's augmentation; feat weight {res['distill']['feat_weight']}, heat weight "
             f"{res['distill']['heat_weight']})", "",
             "| weights | term | value | weighted | gradient norm | share of the task's gradient | cosine with the task's gradient |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for state in ("init", "end"):
        task = res[state]["task"]["grad_norm"]
        for k, r in res[state].items():
            lines.append(f"| {state} | {k} | {r['value']:.4g} | {r['weighted']:.4g} | {r['grad_norm']:.4g} | "
                         f"{r['grad_norm'] / task:.3g} | {r['cos_task']:+.3f} |")
    g = res["heatmap_gap"]
    lines += ["", f"Heatmap MSE to the teacher's fused heatmaps (eval mode, same batches): with L_KD {g['with_kd']:.4g}"
              + (f", without KD {g['without_kd']:.4g}" if "without_kd" in g else "")]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m torch_impl.kd_terms", description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="an L_KD run directory (config.json, last.pt)")
    ap.add_argument("--base", help="the paired run without KD (its heatmaps' distance to the teacher's)")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args(argv)
    res = measure(args.run, args.base, args.batches)
    print(report(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
