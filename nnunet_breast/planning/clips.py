"""The clip cascade's configurations (Res-SE-U-Net), written into a clip dataset's nnU-Net plans.

Each configuration carries its whole network, input variant included (:data:`CLIP_INPUTS`): stock
``nnUNetTrainer`` builds the location net, the single-stage net and the segmentation net (with or without the
stage-1 map, from the stage-2 dataset's channels) from these plans alone.
"""
from __future__ import annotations

import copy
import json
from typing import Sequence

import numpy as np

from nnunet_breast.errors import UserError
from nnunet_breast.networks.plans import CLIP_INPUTS, clip_architecture
from nnunet_breast.planning.common import TORCH_EXPORT, read_plans, write_plans

CLIP_LOCATION_CONFIG = "3d_clip_location"
CLIP_FULLRES_CONFIG = "3d_clip_fullres"
CLIP_SEGMENTATION_CONFIG = "3d_clip_segmentation"
CLIP_LOCATION_SPACING_MM = 4.0     # stage 1 only has to find the clip region: coarse and cheap
CLIP_LOCATION_FOV_MM = 192.0       # stage-1 patch edge: the paper's field of view (96 voxels at 2 mm)
CLIP_PATCH = 96                    # the paper's 96^3, on the finest axis (fine models)


def clip_configuration(base: dict, spacing_mm: float | Sequence[float], name: str, patch: int = CLIP_PATCH,
                       plans_name: str = "nnUNetPlans", inputs: dict | None = None) -> dict:
    """A Res-SE-U-Net configuration at ``spacing_mm`` (one number: isotropic; three: nnU-Net's axis order),
    built on a stock 3d_fullres configuration.

    The patch is a cube in mm with ``patch`` voxels on the finest axis (the paper's 96^3 at isotropic spacings),
    shrunk to the median image size at that spacing (nnU-Net pads smaller images) and made divisible by nnU-Net's
    own topology rule; the architecture follows the patch. ``inputs``: the network's input variant
    (default: the location net's).
    """
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

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
                   "architecture": clip_architecture(strides, kernels, **(inputs or CLIP_INPUTS["location"])),
                   **TORCH_EXPORT})
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
    scores only DSC 0.64-0.72 (docs/benchmarks.md).
    """
    if not (location_spacing_mm > 0 and location_fov_mm > 0 and patch > 0 and (spacing_mm is None or spacing_mm > 0)):
        raise UserError(f"--location-spacing-mm, --location-fov-mm, --patch and --spacing-mm must be > 0; got "
                        f"{location_spacing_mm}, {location_fov_mm}, {patch}, {spacing_mm}")
    plans_file, plans, base = read_plans(dataset_id, plans_name, "nnUNetv2_plan_and_preprocess -d {id} --no_pp")
    dataset_json = json.loads((plans_file.parent / "dataset.json").read_text())
    channels = list(dataset_json.get("channel_names", {}).values())
    if not channels or channels[0] != "noNorm":
        raise UserError(f"dataset {dataset_id}: the CT channel is {channels[:1]}, not 'noNorm'; the clip networks "
                         "need raw HU (convert it with `nnunet-breast convert clips`)")
    stage = int(dataset_json.get("nnunet_breast", {}).get("stage", 1))
    fine = base["spacing"] if spacing_mm is None else spacing_mm
    location_patch = max(8, int(round(location_fov_mm / location_spacing_mm)))
    if stage == 2:   # CT + stage-1 map, or CT only for the --no-map ablation
        segmentation = dict(CLIP_INPUTS["segmentation"], passthrough_channels=len(channels) - 1)
        wanted = {CLIP_SEGMENTATION_CONFIG: (fine, patch, segmentation)}
    else:
        wanted = {CLIP_LOCATION_CONFIG: (location_spacing_mm, location_patch, CLIP_INPUTS["location"]),
                  CLIP_FULLRES_CONFIG: (fine, patch, CLIP_INPUTS["single_stage"])}
    out = {name: clip_configuration(base, sp, name, n, plans_name, inputs)
           for name, (sp, n, inputs) in wanted.items()}
    if CLIP_LOCATION_CONFIG in out:
        # trilinear in all three axes, as `predict-clips` resamples a new CT for stage 1 (resample_to_spacing),
        # so that stage 1 sees the same kind of 4 mm CT in training and at prediction
        out[CLIP_LOCATION_CONFIG]["resampling_fn_data_kwargs"] = {"is_seg": False, "order": 1, "order_z": 1,
                                                                  "force_separate_z": False}
    plans["configurations"].update(out)
    write_plans(plans_file, plans)
    return out
