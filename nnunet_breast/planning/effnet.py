"""The EfficientNet-B0 U-Net's configurations, written into nnU-Net's own plans files.

Runs after stock fingerprinting/planning (``nnUNetv2_plan_and_preprocess``):

* ``3d_fullres_effnetb0`` in ``nnUNetPlans.json``: nnU-Net's 3d_fullres spacing and data, with a patch size
  and batch size planned for the EfficientNet-B0 U-Net by nnU-Net's own planning loop. Only the memory
  estimate is ours (:class:`EffNetB0Planner`), so the loop shrinks the patch against *this* network's
  feature maps, not PlainConvUNet's. ``inherits_from`` is a shallow update in nnU-Net, so the
  configuration carries its whole ``architecture``.
* ``3d_effnetb0_paper`` in its own plans file ``nnUNetPlans_effnetb0paper.json``: the paper's recipe,
  1 x 1 x 3 mm, patch 128 x 128 x 64 (x, y, z), HU window [-160, 240] mapped to [0, 1] as in the paper (0 = -160 HU, so nnU-Net's zero padding in
  the loader, the spatial transform, the sliding window and the convolutions reads as fat-like tissue at the
  window's floor, not as mid-window soft tissue). The window must
  live in a plans file of its own because nnU-Net's CTNormalization reads its clip bounds and mean/std
  from the plans-wide ``foreground_intensity_properties_per_channel``.
* ``3d_cpu_effnetb0`` in ``nnUNetPlans.json`` (``plan --cpu``): a coarser spacing, planned from the data, at
  which the median image fits a small patch, and a 1/4-width network without stochastic depth (short
  schedules), so that a 2-core CPU trains hundreds of iterations in minutes (the demo, the tests, CPU-only
  sites). Its own ``data_identifier``: preprocess it with ``nnUNetv2_preprocess -c 3d_cpu_effnetb0``.
* ``3d_cpu`` alongside it: vanilla nnU-Net (PlainConvUNet as nnU-Net's own planner builds it) on the same
  data, spacing, patch and batch, so that a CPU compares the two networks at equal iterations and data.
"""
from __future__ import annotations

import copy

import numpy as np

from nnunet_breast.errors import UserError
from nnunet_breast.networks.plans import effnet_architecture, full_res_features
from nnunet_breast.planning.common import TORCH_EXPORT, read_plans, write_plans

PAPER_PLANS = "nnUNetPlans_effnetb0paper"
PAPER_CONFIG = "3d_effnetb0_paper"
EFFNET_CONFIG = "3d_fullres_effnetb0"
CPU_CONFIG = "3d_cpu_effnetb0"
#: vanilla nnU-Net on the CPU configuration's data (the baseline at equal data, patch and batch)
CPU_VANILLA_CONFIG = "3d_cpu"
#: voxels per CPU patch (batch 2): the median image is resampled until it fits, finer axes coarsened first
CPU_PATCH_VOXELS = 64 * 64 * 16
#: the CPU configuration's network: B0 at this width (stem scaled alike)
CPU_WIDTH = 0.25
PAPER_SPACING_XYZ = (1.0, 1.0, 3.0)
PAPER_PATCH_XYZ = (128, 128, 64)
PAPER_WINDOW = (-160.0, 240.0)


def _planner_class():
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    class EffNetB0Planner(ExperimentPlanner):
        """nnU-Net's planner with the memory estimate of the EfficientNet-B0 U-Net."""

        @staticmethod
        def static_estimate_VRAM_usage(patch_size, input_channels, output_channels, arch_class_name, arch_kwargs,
                                       arch_kwargs_req_import):
            from nnunet_breast.networks.efficientnet import EfficientNetUNet3d

            net = EfficientNetUNet3d(input_channels, output_channels, strides=arch_kwargs["strides"],
                                     kernel_sizes=arch_kwargs["kernel_sizes"])
            return net.compute_conv_feature_map_size(patch_size)

    return EffNetB0Planner


def plan_effnetb0(dataset_id: int, gpu_memory_gb: float = 8.0, plans_name: str = "nnUNetPlans") -> dict:
    """Add ``3d_fullres_effnetb0`` to an existing plans file; returns the new configuration."""
    if not gpu_memory_gb > 0:
        raise UserError(f"--gpu-memory-gb must be > 0, got {gpu_memory_gb}")
    plans_file, plans, base = read_plans(dataset_id, plans_name)
    planner = _planner_class()(dataset_id, gpu_memory_target_in_gb=gpu_memory_gb, plans_name=plans_name)
    median = np.array(base["median_image_size_in_voxels"], float)
    n_cases = planner.dataset_json["numTraining"]
    planned = planner.get_plans_for_configuration(base["spacing"], median, base["data_identifier"],
                                                  float(np.prod(median) * n_cases), {})
    strides = planned["architecture"]["arch_kwargs"]["strides"]
    kernels = planned["architecture"]["arch_kwargs"]["kernel_sizes"]
    config = {"inherits_from": "3d_fullres", "patch_size": [int(p) for p in planned["patch_size"]],
              "batch_size": int(planned["batch_size"]), "architecture": effnet_architecture(strides, kernels),
              **TORCH_EXPORT}
    plans["configurations"][EFFNET_CONFIG] = config
    write_plans(plans_file, plans)
    return config


def plan_paper(dataset_id: int, source_plans: str = "nnUNetPlans") -> dict:
    """Write ``nnUNetPlans_effnetb0paper.json`` with the paper's spacing, patch and fixed HU window."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    source, plans, base = read_plans(dataset_id, source_plans)
    fwd = plans["transpose_forward"]
    spacing = [PAPER_SPACING_XYZ[::-1][i] for i in fwd]          # zyx, then nnU-Net's axis order
    patch = [PAPER_PATCH_XYZ[::-1][i] for i in fwd]
    _, strides, kernels, patch_out, _ = get_pool_and_conv_props(spacing, patch, 4, 999999)
    if list(patch_out) != patch:
        raise AssertionError(f"paper patch {patch} is not divisible as nnU-Net needs: {patch_out}")
    median_mm = np.array(base["median_image_size_in_voxels"]) * np.array(base["spacing"])
    lo, hi = PAPER_WINDOW
    config = copy.deepcopy(base)
    config.update({"data_identifier": f"{PAPER_PLANS}_{PAPER_CONFIG}", "spacing": spacing, "patch_size": patch,
                   "batch_size": 2, "normalization_schemes": ["CTNormalization"] * len(base["normalization_schemes"]),
                   "median_image_size_in_voxels": [float(round(v)) for v in median_mm / np.array(spacing)],
                   "architecture": effnet_architecture(strides, kernels), **TORCH_EXPORT})
    paper = copy.deepcopy(plans)
    paper["plans_name"] = PAPER_PLANS
    paper["configurations"] = {PAPER_CONFIG: config}
    for props in paper["foreground_intensity_properties_per_channel"].values():
        # CTNormalization: clip to [percentile_00_5, percentile_99_5], then (x - mean) / std -> [0, 1]
        props.update({"percentile_00_5": lo, "percentile_99_5": hi, "mean": lo, "std": hi - lo})
    write_plans(source.parent / f"{PAPER_PLANS}.json", paper)
    return config


def cpu_spacing(spacing, median_shape, voxel_budget: int) -> np.ndarray:
    """nnU-Net's 3d_lowres rule on a voxel budget: grow the spacing by 3 % steps, the finer axes first until
    they are within 2x of the coarsest, until the median image (in mm, fixed) has at most ``voxel_budget`` voxels."""
    spacing = np.array(spacing, float)
    extent = spacing * np.array(median_shape, float)
    new = spacing.copy()
    while np.prod(extent / new) > voxel_budget:
        fine = new.max() / new > 2
        new[fine if fine.any() else slice(None)] *= 1.03
    return new


def plan_cpu(dataset_id: int, voxel_budget: int = CPU_PATCH_VOXELS, width: float = CPU_WIDTH,
             plans_name: str = "nnUNetPlans") -> dict:
    """Add ``3d_cpu_effnetb0`` (see the module docstring) to an existing plans file; returns it."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    if voxel_budget < 4096:
        raise UserError(f"--cpu-patch-voxels must be >= 4096 (16^3), got {voxel_budget}")
    if not 0 < width <= 2:
        raise UserError(f"--cpu-width must be in (0, 2], got {width}")
    plans_file, plans, base = read_plans(dataset_id, plans_name)
    median = np.array(base["median_image_size_in_voxels"], float)
    spacing = cpu_spacing(base["spacing"], median, voxel_budget)
    shape = median * np.array(base["spacing"]) / spacing
    # the patch is the median image, padded to what the planned strides divide (nnU-Net's rule)
    _, strides, kernels, patch, _ = get_pool_and_conv_props(list(spacing), [int(round(v)) for v in shape], 4, 999999)
    config = copy.deepcopy(base)
    config.update({"data_identifier": f"{plans_name}_{CPU_CONFIG}", "spacing": [float(v) for v in spacing],
                   "patch_size": [int(p) for p in patch], "batch_size": 2,
                   "median_image_size_in_voxels": [float(round(v)) for v in shape],
                   "architecture": effnet_architecture(strides, kernels, width_multiplier=width,
                                                       stem_features=full_res_features(width), drop_path_rate=0.0),
                   **TORCH_EXPORT})
    plans["configurations"][CPU_CONFIG] = config
    plans["configurations"][CPU_VANILLA_CONFIG] = _vanilla_like(dataset_id, plans_name, config)
    write_plans(plans_file, plans)
    return config


def _vanilla_like(dataset_id: int, plans_name: str, config: dict) -> dict:
    """PlainConvUNet as nnU-Net's planner builds it for ``config``'s spacing and median image, on its data."""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    planner = ExperimentPlanner(dataset_id, plans_name=plans_name)
    median = np.array(config["median_image_size_in_voxels"], float)
    planned = planner.get_plans_for_configuration(config["spacing"], median, config["data_identifier"],
                                                  float(np.prod(median) * planner.dataset_json["numTraining"]), {})
    if [int(v) for v in planned["patch_size"]] != config["patch_size"]:
        raise AssertionError(f"nnU-Net planned patch {planned['patch_size']} for {CPU_VANILLA_CONFIG}, "
                             f"not {CPU_CONFIG}'s {config['patch_size']}")
    return {"inherits_from": CPU_CONFIG, "architecture": planned["architecture"]}
