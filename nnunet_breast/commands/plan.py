"""Add the EfficientNet-B0 U-Net configurations to nnU-Net's plans (after stock planning).

  nnUNetv2_plan_and_preprocess -d 501                 # stock fingerprint, plans, 3d_fullres data
  nnunet-breast plan -d 501 [--gpu-memory-gb 8]       # adds 3d_fullres_effnetb0 + the paper preset
  nnUNetv2_train 501 3d_fullres_effnetb0 0 -tr nnUNetTrainerEffNetB0            # reuses 3d_fullres data
  nnUNetv2_preprocess -d 501 -plans_name nnUNetPlans_effnetb0paper -c 3d_effnetb0_paper
  nnUNetv2_train 501 3d_effnetb0_paper 0 -p nnUNetPlans_effnetb0paper -tr nnUNetTrainerEffNetB0Paper
"""
from __future__ import annotations

from nnunet_breast.cli import UserError

HELP = "add 3d_fullres_effnetb0 and the paper preset 3d_effnetb0_paper to nnU-Net's plans"


def add_arguments(p):
    p.add_argument("-d", "--dataset-id", required=True, type=int)
    p.add_argument("--gpu-memory-gb", type=float, default=8.0, help="GPU memory target for the patch size (8)")
    p.add_argument("-pl", "--plans-name", default="nnUNetPlans", help="plans file to extend (nnUNetPlans)")
    p.add_argument("--no-paper", action="store_true", help="do not write the paper preset plans")


def run(args) -> int:
    from nnunet_breast import planning

    try:
        config = planning.plan_effnetb0(args.dataset_id, args.gpu_memory_gb, args.plans_name)
        print(f"{planning.EFFNET_CONFIG}: patch {config['patch_size']}, batch {config['batch_size']}, "
              f"{len(config['architecture']['arch_kwargs']['strides'])} stages")
        if not args.no_paper:
            paper = planning.plan_paper(args.dataset_id, args.plans_name)
            print(f"{planning.PAPER_PLANS}/{planning.PAPER_CONFIG}: spacing {paper['spacing']}, "
                  f"patch {paper['patch_size']}, HU window {list(planning.PAPER_WINDOW)} -> [-1, 1]")
    except ValueError as e:
        raise UserError(str(e)) from None
    return 0
