"""Distil a student from a trained teacher: ``torch_impl.train`` with a ``[distill]`` section required.

    python -m torch_impl.distill_train configs/icme_student_kd.toml distill.teacher=runs/icme_teacher/best.pt
    python -m torch_impl.distill_train configs/stud5.toml distill.kind=ckd distill.teacher=runs/resnet50/resnet50.safetensors

kinds: "lkd" (ICME 2024 L_KD on backbone features + fused AAM heatmaps), "rbd" (response-based),
"ckd" (two-phase convolutional KD).  The teacher is an lmref weights file or a checkpoint of
torch_impl.train; see :class:`torch_impl.train.Trainee` for the losses.
"""
import sys

from .train import main as _train_main


def main(argv=None):
    return _train_main(argv, require_distill=True)


if __name__ == "__main__":
    sys.exit(main())
