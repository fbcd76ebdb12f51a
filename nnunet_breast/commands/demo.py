"""The whole loop on synthetic patients: TPS export -> nnU-Net training -> contours back as RTSTRUCT.

  nnunet-breast demo [--out nnunet_breast_demo] [-device cpu|cuda] [--cascade]

Generates small synthetic cohorts (DICOM CT + RTSTRUCT), converts them, plans with stock nnU-Net + our plans,
trains the breast model (EfficientNet-B0 U-Net) and the clip model on a short schedule (fold 0), evaluates
(metrics.csv, tables, box plots), and predicts on new synthetic patients: NIfTI masks, RTSTRUCT, clips.json,
tumour-bed proposal, PNG previews. About 10 minutes on 2 CPU cores; uses the GPU when there is one.
--out is the demo's own folder and is rebuilt on every run (nnU-Net folders included, yours untouched).
"""
from __future__ import annotations

from pathlib import Path

from nnunet_breast.errors import UserError

HELP = "run the whole pipeline on synthetic patients (about 10 min on 2 CPU cores)"


def add_arguments(p):
    p.add_argument("--out", type=Path, default=Path("nnunet_breast_demo"), help="demo folder (rebuilt)")
    p.add_argument("-device", "--device", choices=("cuda", "cpu"), help="default: cuda when available")
    p.add_argument("--cascade", action="store_true",
                   help="train the two-stage clip cascade (5 stage-1 folds + stage 2) instead of the single stage")
    p.add_argument("--n-train", type=int, default=20, help="synthetic training patients of the breast model (20)")
    p.add_argument("--n-train-clips", type=int, default=5, help="synthetic training patients of the clip model (5)")
    p.add_argument("--n-new", type=int, default=2, help="new synthetic patients to predict (2)")
    p.add_argument("--quick", action="store_true",
                   help="tiny networks, 2 epochs x 2 iterations: checks the wiring in a few minutes (tests)")


def run(args) -> int:
    from nnunet_breast.demo import Demo, check_outputs
    from nnunet_breast.inference.predictor import default_device

    if args.n_train_clips < 5 and args.cascade:
        raise UserError("--cascade needs --n-train-clips >= 5 (five folds)")
    if args.n_train < 2 or args.n_train_clips < 2 or args.n_new < 1:
        raise UserError("--n-train and --n-train-clips must be >= 2 and --n-new >= 1")
    out = args.out.resolve()
    if out.exists() and any(out.iterdir()) and not (out / "logs").is_dir():
        raise UserError(f"{out} exists and is not a demo folder; choose another --out")
    trainers = {"breast_trainer": "nnUNetTrainerEffNetB0QuickCPU", "clip_suffix": "QuickCPU"} if args.quick else {}
    demo = Demo(out, args.device or default_device(), args.n_train, args.n_new, args.cascade,
                n_train_clips=args.n_train_clips, **trainers)
    demo.run()
    counts = check_outputs(out)
    print(f"read back: {counts['rtstruct']} RTSTRUCT(s), {counts['masks']} masks, {counts['png']} PNG(s)")
    return 0
