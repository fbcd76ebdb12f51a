"""Our configurations, written into nnU-Net's own plans files (plans stay the single source of truth).

Runs after stock fingerprinting/planning (``nnUNetv2_plan_and_preprocess``):

* ``3d_fullres_effnetb0`` in ``nnUNetPlans.json``: nnU-Net's 3d_fullres spacing and data, with a patch size
  and batch size planned for the EfficientNet-B0 U-Net by nnU-Net's own planning loop. Only the memory
  estimate is ours (:class:`EffNetB0Planner`), so the loop shrinks the patch against *this* network's
  feature maps, not PlainConvUNet's. ``inherits_from`` is a shallow update in nnU-Net, so the
  configuration carries its whole ``architecture``.
* ``3d_effnetb0_paper`` in its own plans file ``nnUNetPlans_effnetb0paper.json``: the paper's recipe,
  1 x 1 x 3 mm, patch 128 x 128 x 64 (x, y, z), HU window [-160, 240] mapped to [-1, 1]. The window must
  live in a plans file of its own because nnU-Net's CTNormalization reads its clip bounds and mean/std
  from the plans-wide ``foreground_intensity_properties_per_channel``.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_breast.files import atomic_write_text

EFFNET_CLASS = "nnunet_breast.networks.efficientnet.EfficientNetUNet3d"
PAPER_PLANS = "nnUNetPlans_effnetb0paper"
PAPER_CONFIG = "3d_effnetb0_paper"
EFFNET_CONFIG = "3d_fullres_effnetb0"
PAPER_SPACING_XYZ = (1.0, 1.0, 3.0)
PAPER_PATCH_XYZ = (128, 128, 64)
PAPER_WINDOW = (-160.0, 240.0)


def effnet_architecture(strides, kernel_sizes, **overrides) -> dict:
    """The plans ``architecture`` entry of our network: import path + plain JSON kwargs."""
    kwargs = {"strides": [list(map(int, s)) for s in strides],
              "kernel_sizes": [list(map(int, k)) for k in kernel_sizes],
              "variant": "b0", "stem_features": 8, "decoder_convs": 1, "decoder_block": "conv",
              "norm_op": "torch.nn.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
              "nonlin": "torch.nn.SiLU", "nonlin_kwargs": {"inplace": True},
              "drop_path_rate": 0.2, "se_ratio": 0.25}
    kwargs.update(overrides)
    return {"network_class_name": EFFNET_CLASS, "arch_kwargs": kwargs, "_kw_requires_import": ["norm_op", "nonlin"]}


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


def preprocessed_folder(dataset_id: int) -> Path:
    from nnunet_breast.env import dataset_dir

    return dataset_dir("nnUNet_preprocessed", dataset_id)


def plan_effnetb0(dataset_id: int, gpu_memory_gb: float = 8.0, plans_name: str = "nnUNetPlans") -> dict:
    """Add ``3d_fullres_effnetb0`` to an existing plans file; returns the new configuration."""
    folder = preprocessed_folder(dataset_id)
    plans_file = folder / f"{plans_name}.json"
    if not plans_file.is_file():
        raise ValueError(f"{plans_file} not found: run `nnUNetv2_plan_and_preprocess -d {dataset_id}` "
                         f"(or nnUNetv2_plan_experiment) first")
    plans = json.loads(plans_file.read_text())
    base = plans["configurations"].get("3d_fullres")
    if base is None:
        raise ValueError(f"{plans_file} has no 3d_fullres configuration to build on")
    planner = _planner_class()(dataset_id, gpu_memory_target_in_gb=gpu_memory_gb, plans_name=plans_name)
    median = np.array(base["median_image_size_in_voxels"], float)
    n_cases = planner.dataset_json["numTraining"]
    planned = planner.get_plans_for_configuration(base["spacing"], median, base["data_identifier"],
                                                  float(np.prod(median) * n_cases), {})
    strides = planned["architecture"]["arch_kwargs"]["strides"]
    kernels = planned["architecture"]["arch_kwargs"]["kernel_sizes"]
    config = {"inherits_from": "3d_fullres", "patch_size": [int(p) for p in planned["patch_size"]],
              "batch_size": int(planned["batch_size"]), "architecture": effnet_architecture(strides, kernels)}
    plans["configurations"][EFFNET_CONFIG] = config
    _atomic_json(plans_file, plans)
    return config


def plan_paper(dataset_id: int, source_plans: str = "nnUNetPlans") -> dict:
    """Write ``nnUNetPlans_effnetb0paper.json`` with the paper's spacing, patch and fixed HU window."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    folder = preprocessed_folder(dataset_id)
    source = folder / f"{source_plans}.json"
    if not source.is_file():
        raise ValueError(f"{source} not found: run `nnUNetv2_plan_and_preprocess -d {dataset_id}` first")
    plans = json.loads(source.read_text())
    base = plans["configurations"]["3d_fullres"]
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
                   "architecture": effnet_architecture(strides, kernels)})
    paper = copy.deepcopy(plans)
    paper["plans_name"] = PAPER_PLANS
    paper["configurations"] = {PAPER_CONFIG: config}
    for props in paper["foreground_intensity_properties_per_channel"].values():
        # CTNormalization: clip to [percentile_00_5, percentile_99_5], then (x - mean) / std -> [-1, 1]
        props.update({"percentile_00_5": lo, "percentile_99_5": hi, "mean": (lo + hi) / 2, "std": (hi - lo) / 2})
    _atomic_json(folder / f"{PAPER_PLANS}.json", paper)
    return config


def _atomic_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=4))


# ---------------------------------------------------------------------------------------------------------------------
# clip cascade configurations (Res-SE-U-Net)
# ---------------------------------------------------------------------------------------------------------------------
CLIP_LOCATION_CONFIG = "3d_clip_location"
CLIP_FULLRES_CONFIG = "3d_clip_fullres"
CLIP_SEGMENTATION_CONFIG = "3d_clip_segmentation"
CLIP_LOCATION_SPACING_MM = 4.0     # stage 1 only has to find the clip region: coarse and cheap
CLIP_LOCATION_FOV_MM = 192.0       # stage-1 patch edge: the paper's field of view (96 voxels at 2 mm)
CLIP_PATCH = 96                    # the paper's 96^3, on the finest axis (fine models)


def clip_configuration(base: dict, spacing_mm: float | Sequence[float], name: str, patch: int = CLIP_PATCH,
                       plans_name: str = "nnUNetPlans") -> dict:
    """A Res-SE-U-Net configuration at ``spacing_mm`` (one number: isotropic; three: nnU-Net's axis order),
    built on a stock 3d_fullres configuration.

    The patch is a cube in mm with ``patch`` voxels on the finest axis (the paper's 96^3 at isotropic spacings),
    shrunk to the median image size at that spacing (nnU-Net pads smaller images) and made divisible by nnU-Net's
    own topology rule; the architecture follows the patch.
    """
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    from nnunet_breast.trainers.clips import clip_arch_kwargs

    spacing = [float(v) for v in np.broadcast_to(np.asarray(spacing_mm, float), (3,))]
    median_mm = np.array(base["median_image_size_in_voxels"]) * np.array(base["spacing"])
    median = np.maximum(np.round(median_mm / np.array(spacing)), 1)
    cube = [max(1, round(patch * min(spacing) / sp)) for sp in spacing]
    patch0 = [int(min(c, m)) for c, m in zip(cube, median)]
    _, strides, kernels, patch_out, _ = get_pool_and_conv_props(spacing, patch0, 4, 999999)
    strides, kernels = strides[:6], kernels[:6]     # the paper's depth at most: 6 stages, 5 skips
    config = copy.deepcopy(base)
    config.update({"data_identifier": f"{plans_name}_{name}", "spacing": spacing,
                   "patch_size": [int(p) for p in patch_out], "batch_size": 2,
                   "median_image_size_in_voxels": [float(v) for v in median],
                   "architecture": {"network_class_name": "nnunet_breast.networks.res_se_unet.ResSEUNet3d",
                                    "arch_kwargs": clip_arch_kwargs(strides, kernels),
                                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}})
    config.pop("inherits_from", None)
    return config


def plan_clips(dataset_id: int, plans_name: str = "nnUNetPlans", location_spacing_mm: float = CLIP_LOCATION_SPACING_MM,
               spacing_mm: float | None = None, patch: int = CLIP_PATCH,
               location_fov_mm: float = CLIP_LOCATION_FOV_MM) -> dict[str, dict]:
    """Add the clip configurations to a clip dataset's plans.

    A whole-CT clip dataset (stage 1) gets ``3d_clip_location`` (coarse, isotropic, a patch of ``location_fov_mm``:
    48^3 at 4 mm, the 192 mm the paper's 96^3 cover at 2 mm; 96^3 at 4 mm would cost 8x per iteration for context
    a clip region does not need) and ``3d_clip_fullres`` (the single-stage baseline at the fine spacing); a stage-2
    dataset written by ``cascade prepare`` (its dataset.json says ``"stage": 2``) gets ``3d_clip_segmentation`` at
    the fine spacing. The fine spacing is
    nnU-Net's own 3d_fullres spacing (the planning CT's) unless ``spacing_mm`` names an isotropic one: the paper's
    2 mm makes a 2 mm clip one voxel thick, and a perfect 2 mm mask pasted back onto a 1 x 1 x 3 mm planning CT
    scores only DSC 0.64-0.72 (README, clip section).
    """
    folder = preprocessed_folder(dataset_id)
    plans_file = folder / f"{plans_name}.json"
    if not plans_file.is_file():
        raise ValueError(f"{plans_file} not found: run `nnUNetv2_plan_and_preprocess -d {dataset_id} --no_pp` first")
    plans = json.loads(plans_file.read_text())
    base = plans["configurations"].get("3d_fullres")
    if base is None:
        raise ValueError(f"{plans_file} has no 3d_fullres configuration to build on")
    dataset_json = json.loads((folder / "dataset.json").read_text())
    channels = list(dataset_json.get("channel_names", {}).values())
    if not channels or channels[0] != "noNorm":
        raise ValueError(f"dataset {dataset_id}: the CT channel is {channels[:1]}, not 'noNorm'; the clip networks "
                         "need raw HU (convert it with `nnunet-breast convert clips`)")
    stage = int(dataset_json.get("nnunet_breast", {}).get("stage", 1))
    fine = base["spacing"] if spacing_mm is None else spacing_mm
    location_patch = max(8, int(round(location_fov_mm / location_spacing_mm)))
    if stage == 2:
        wanted = {CLIP_SEGMENTATION_CONFIG: (fine, patch)}
    else:
        wanted = {CLIP_LOCATION_CONFIG: (location_spacing_mm, location_patch), CLIP_FULLRES_CONFIG: (fine, patch)}
    out = {name: clip_configuration(base, sp, name, n, plans_name) for name, (sp, n) in wanted.items()}
    if CLIP_LOCATION_CONFIG in out:
        # trilinear in all three axes, as `predict-clips` resamples a new CT for stage 1 (resample_to_spacing),
        # so that stage 1 sees the same kind of 4 mm CT in training and at prediction
        out[CLIP_LOCATION_CONFIG]["resampling_fn_data_kwargs"] = {"is_seg": False, "order": 1, "order_z": 1,
                                                                  "force_separate_z": False}
    plans["configurations"].update(out)
    _atomic_json(plans_file, plans)
    return out
