"""Our configurations written into nnU-Net's own plans, one module per model (plans stay the single source of
truth): ``effnet`` (EfficientNet-B0 U-Net: nnU-Net-planned and the paper's preset), ``clips`` (the cascade)."""
from nnunet_breast.planning.clips import (
                                          CLIP_FULLRES_CONFIG,
                                          CLIP_LOCATION_CONFIG,
                                          CLIP_LOCATION_FOV_MM,
                                          CLIP_LOCATION_SPACING_MM,
                                          CLIP_PATCH,
                                          CLIP_SEGMENTATION_CONFIG,
                                          clip_configuration,
                                          plan_clips,
)
from nnunet_breast.planning.common import preprocessed_folder
from nnunet_breast.planning.effnet import (
                                          CPU_CONFIG,
                                          CPU_PATCH_VOXELS,
                                          CPU_VANILLA_CONFIG,
                                          CPU_WIDTH,
                                          EFFNET_CONFIG,
                                          PAPER_CONFIG,
                                          PAPER_PATCH_XYZ,
                                          PAPER_PLANS,
                                          PAPER_SPACING_XYZ,
                                          PAPER_WINDOW,
                                          plan_cpu,
                                          plan_effnetb0,
                                          plan_paper,
)

__all__ = ["CLIP_FULLRES_CONFIG", "CLIP_LOCATION_CONFIG", "CLIP_LOCATION_FOV_MM", "CLIP_LOCATION_SPACING_MM",
           "CLIP_PATCH", "CLIP_SEGMENTATION_CONFIG", "CPU_CONFIG", "CPU_PATCH_VOXELS", "CPU_VANILLA_CONFIG", "CPU_WIDTH",
           "EFFNET_CONFIG", "PAPER_CONFIG", "PAPER_PATCH_XYZ", "PAPER_PLANS", "PAPER_SPACING_XYZ", "PAPER_WINDOW", "clip_configuration",
           "plan_clips", "plan_cpu", "plan_effnetb0", "plan_paper", "preprocessed_folder"]
