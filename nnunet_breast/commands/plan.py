"""Add this package's configurations to nnU-Net's plans (after stock planning).

Breast model (default, --model breast):

  nnUNetv2_plan_and_preprocess -d 501                 # stock fingerprint, plans, 3d_fullres data
  nnunet-breast plan -d 501 [--gpu-memory-gb 8]       # adds 3d_fullres_effnetb0 + the paper preset
  nnUNetv2_train 501 3d_fullres_effnetb0 0 -tr nnUNetTrainerEffNetB0            # reuses 3d_fullres data
  nnUNetv2_preprocess -d 501 -plans_name nnUNetPlans_effnetb0paper -c 3d_effnetb0_paper
  nnUNetv2_train 501 3d_effnetb0_paper 0 -p nnUNetPlans_effnetb0paper -tr nnUNetTrainerEffNetB0Paper
  nnunet-breast plan -d 501 --cpu                     # also 3d_cpu_effnetb0: coarse spacing, small patch (CPU)
  nnUNetv2_preprocess -d 501 -c 3d_cpu_effnetb0
  nnUNetv2_train 501 3d_cpu_effnetb0 0 -tr nnUNetTrainerEffNetB0 -device cpu
  nnUNetv2_train 501 3d_cpu 0 -tr nnUNetTrainerNoLRMirroring -device cpu   # vanilla nnU-Net, same data/patch

Clip model (--model clips; Res-SE-U-Net, raw-HU 'noNorm' datasets):
  nnUNetv2_plan_and_preprocess -d 502 --no_pp
  nnunet-breast plan -d 502 --model clips    # 3d_clip_location (4 mm) + 3d_clip_fullres (CT spacing, single stage)
  nnunet-breast plan -d 503 --model clips    # stage-2 dataset from `cascade prepare`: 3d_clip_segmentation
"""
from __future__ import annotations

HELP = "add our configurations to nnU-Net's plans (breast: EfficientNet-B0 U-Net; clips: Res-SE-U-Net cascade)"


def add_arguments(p):
    p.add_argument("-d", "--dataset-id", required=True, type=int)
    p.add_argument("--model", choices=("breast", "clips"), default="breast")
    p.add_argument("--gpu-memory-gb", type=float, default=8.0, help="GPU memory target for the patch size (8)")
    p.add_argument("-pl", "--plans-name", default="nnUNetPlans", help="plans file to extend (nnUNetPlans)")
    p.add_argument("--no-paper", action="store_true", help="do not write the paper preset plans")
    p.add_argument("--cpu", action="store_true",
                   help="also add 3d_cpu_effnetb0 (and vanilla 3d_cpu on its data): a coarser spacing at which the median "
                        "image fits a CPU-sized patch")
    p.add_argument("--cpu-patch-voxels", type=int, default=None,
                   help="voxels of the CPU configuration's patch (default 65536 = 16 x 64 x 64)")
    p.add_argument("--cpu-width", type=float, default=None, help="B0 width multiplier of the CPU network (0.25)")
    p.add_argument("--location-spacing-mm", type=float, default=4.0, help="clips: stage-1 spacing (4)")
    p.add_argument("--spacing-mm", type=float, default=None,
                   help="clips: isotropic stage-2 / single-stage spacing (default: nnU-Net's 3d_fullres spacing; "
                        "2 is the paper's)")
    p.add_argument("--patch", type=int, default=96,
                   help="clips: fine models' patch edge in voxels on the finest axis (96)")
    p.add_argument("--location-fov-mm", type=float, default=192.0,
                   help="clips: stage-1 patch edge in mm (192: the paper's 96 voxels at 2 mm; 48 voxels at 4 mm)")


def run(args) -> int:
    from nnunet_breast import planning

    if args.model == "clips":
        configs = planning.plan_clips(args.dataset_id, args.plans_name, args.location_spacing_mm,
                                      args.spacing_mm, args.patch, args.location_fov_mm)
        for name, c in configs.items():
            print(f"{name}: spacing {c['spacing']}, patch {c['patch_size']}, "
                  f"{c['architecture']['arch_kwargs']['n_stages']} stages; preprocess with "
                  f"nnUNetv2_preprocess -d {args.dataset_id} -c {name}")
        return 0
    config = planning.plan_effnetb0(args.dataset_id, args.gpu_memory_gb, args.plans_name)
    print(f"{planning.EFFNET_CONFIG}: patch {config['patch_size']}, batch {config['batch_size']}, "
          f"{len(config['architecture']['arch_kwargs']['strides'])} stages")
    if args.cpu:
        cpu = planning.plan_cpu(args.dataset_id, args.cpu_patch_voxels or planning.CPU_PATCH_VOXELS,
                                args.cpu_width or planning.CPU_WIDTH, args.plans_name)
        spacing = ", ".join(f"{v:.2f}" for v in cpu["spacing"])
        print(f"{planning.CPU_CONFIG}: spacing [{spacing}], patch {cpu['patch_size']}, batch {cpu['batch_size']}, "
              f"width {cpu['architecture']['arch_kwargs']['width_multiplier']}; preprocess with "
              f"nnUNetv2_preprocess -d {args.dataset_id} -c {planning.CPU_CONFIG}")
        print(f"{planning.CPU_VANILLA_CONFIG}: vanilla nnU-Net (PlainConvUNet) on {planning.CPU_CONFIG}'s data, "
              "spacing, patch and batch")
    if not args.no_paper:
        paper = planning.plan_paper(args.dataset_id, args.plans_name)
        print(f"{planning.PAPER_PLANS}/{planning.PAPER_CONFIG}: spacing {paper['spacing']}, "
              f"patch {paper['patch_size']}, HU window {list(planning.PAPER_WINDOW)} -> [0, 1]")
    return 0
