"""Our networks as nnU-Net plans entries: the one place that writes their ``architecture`` and builds them back.

A plans configuration's ``architecture`` (class import path, JSON kwargs, kwargs that name classes) fully
describes a network: stock nnU-Net's ``get_network_from_plans`` builds every configuration ``nnunet-breast plan``
writes. Trainers build through :func:`build_effnet` / :func:`build_clip_net`, which read the same entry and apply
only their declared overrides (a narrower CPU variant, an ablation's input variant).
"""
from __future__ import annotations

from typing import Sequence

EFFNET_CLASS = "nnunet_breast.networks.efficientnet.EfficientNetUNet3d"
RES_SE_UNET_CLASS = "nnunet_breast.networks.res_se_unet.ResSEUNet3d"
EFFNET_REQUIRES_IMPORT = ["norm_op", "nonlin"]
RES_SE_UNET_REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]

#: HU window of the fine clip nets' metal channel (not in the paper; see ClipInputLayer): a clip's label edge
METAL_WINDOW = (300.0, 3000.0)
#: the clip paper's inputs per role, plus our metal window for the fine nets; ``passthrough_channels`` of the
#: segmentation net is the stage-2 dataset's channel count minus the CT (1 with the stage-1 map, 0 without)
CLIP_INPUTS = {
    "location": {"binary_threshold_hu": 300.0, "passthrough_channels": 0, "metal_window": None},
    "single_stage": {"binary_threshold_hu": 300.0, "passthrough_channels": 0, "metal_window": list(METAL_WINDOW)},
    "segmentation": {"binary_threshold_hu": None, "passthrough_channels": 1, "metal_window": list(METAL_WINDOW)},
}
#: the paper's Res-SE-U-Net: 6 isotropic stages (96^3 at 2 mm -> 3^3), 11 residual blocks, 5 skips
PAPER_CLIP_STRIDES = [[1, 1, 1]] + [[2, 2, 2]] * 5
PAPER_CLIP_KERNELS = [[3, 3, 3]] * 6


#: features of the EfficientNet U-Net's full-resolution level (light stem, last decoder level, the heads read
#: them): nnU-Net's first-stage width. With 4 (1/4 width) the 20 region heads shared 4 features and the network
#: had not told the left lung from the right after 600 iterations; with 16 it had after 200 (docs/benchmarks.md)
FULL_RES_FEATURES = 32


def full_res_features(width: float) -> int:
    """:data:`FULL_RES_FEATURES` scaled with the network's width, never below 16."""
    return max(16, int(round(FULL_RES_FEATURES * width)))


def effnet_architecture(strides, kernel_sizes, **overrides) -> dict:
    """The plans ``architecture`` entry of the EfficientNet-B0 U-Net for a planned topology."""
    kwargs = {"strides": [list(map(int, s)) for s in strides],
              "kernel_sizes": [list(map(int, k)) for k in kernel_sizes],
              "variant": "b0", "stem_features": FULL_RES_FEATURES, "decoder_convs": 1, "decoder_block": "conv",
              "norm_op": "torch.nn.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
              "nonlin": "torch.nn.SiLU", "nonlin_kwargs": {"inplace": True},
              "drop_path_rate": 0.2, "se_ratio": 0.25}
    kwargs.update(overrides)
    return {"network_class_name": EFFNET_CLASS, "arch_kwargs": kwargs,
            "_kw_requires_import": list(EFFNET_REQUIRES_IMPORT)}


def clip_features(n_stages: int, feature_base: int = 32, feature_cap: int = 320) -> list[int]:
    return [min(feature_base * 2 ** i, feature_cap) for i in range(n_stages)]


def clip_arch_kwargs(strides: Sequence[Sequence[int]], kernel_sizes: Sequence[Sequence[int]],
                     feature_base: int = 32, feature_cap: int = 320, **clip_kwargs) -> dict:
    """JSON ResSEUNet3d kwargs for a planned topology: features ``min(base * 2**i, cap)``, residual blocks
    ``[1, 2, 2, ...]`` (the paper's 11 at 6 stages), one decoder conv per stage; 2D strides give 2D ops.
    ``clip_kwargs`` set the input variant (:data:`CLIP_INPUTS`) and SE placement."""
    n_stages = len(strides)
    dim = len(strides[0])
    if dim not in (2, 3):
        raise ValueError(f"strides must be 2D or 3D per stage, got {strides!r}")
    kwargs = {
        "n_stages": n_stages,
        "features_per_stage": clip_features(n_stages, feature_base, feature_cap),
        "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
        "kernel_sizes": [list(k) for k in kernel_sizes],
        "strides": [list(s) for s in strides],
        "n_blocks_per_stage": [1] + [2] * (n_stages - 1),
        "n_conv_per_stage_decoder": [1] * (n_stages - 1),
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
        "window": [-200.0, 200.0],
        **CLIP_INPUTS["location"],
        "se_ratio": 0.25,
        "se_at": "bottleneck",
    }
    kwargs.update(clip_kwargs)
    return kwargs


def clip_architecture(strides, kernel_sizes, **clip_kwargs) -> dict:
    """The plans ``architecture`` entry of the Res-SE-U-Net (see :func:`clip_arch_kwargs`)."""
    return {"network_class_name": RES_SE_UNET_CLASS,
            "arch_kwargs": clip_arch_kwargs(strides, kernel_sizes, **clip_kwargs),
            "_kw_requires_import": list(RES_SE_UNET_REQUIRES_IMPORT)}


def build_effnet(configuration_manager, num_input_channels: int, num_output_channels: int,
                 deep_supervision: bool, **overrides):
    """The configuration's EfficientNet-B0 U-Net (+ ``overrides``); on a stock configuration (e.g. 3d_fullres),
    ours on that configuration's strides and kernel sizes."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = configuration_manager.configuration["architecture"]
    if arch["network_class_name"] != EFFNET_CLASS:
        arch = effnet_architecture(arch["arch_kwargs"]["strides"], arch["arch_kwargs"]["kernel_sizes"])
    return get_network_from_plans(EFFNET_CLASS, dict(arch["arch_kwargs"], **overrides), arch["_kw_requires_import"],
                                  num_input_channels, num_output_channels, allow_init=True,
                                  deep_supervision=deep_supervision)


class ClipChannelMismatchError(ValueError):
    """The dataset's channel count does not fit the network's input variant."""


def build_clip_net(configuration_manager, num_input_channels: int, num_output_channels: int, deep_supervision: bool,
                   inputs: dict, feature_base: int | None = None, feature_cap: int | None = None,
                   owner: str = "clip trainer"):
    """The configuration's Res-SE-U-Net with the input variant ``inputs`` (keys of :data:`CLIP_INPUTS`' entries)
    and, where given, other widths; on a stock configuration, ours on its strides and kernel sizes."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    passthrough = int(inputs["passthrough_channels"])
    binary = inputs["binary_threshold_hu"]
    if int(num_input_channels) != 1 + passthrough:
        variant = f"binary HU>={binary:g} channel" if binary is not None else "no binary"
        raise ClipChannelMismatchError(
            f"{owner}: the dataset has {num_input_channels} input channel(s) but this network takes {1 + passthrough} "
            f"(raw HU 'noNorm' CT + {passthrough} passthrough channel(s); {variant}). Use a CT-only (1-channel) "
            "dataset for the location net and the *NoMap ablation, and a CT + stage-1 probability map (2-channel) "
            "dataset for the segmentation net with map.")
    clip = {"binary_threshold_hu": None if binary is None else float(binary),
            "passthrough_channels": passthrough,
            "metal_window": None if inputs["metal_window"] is None else [float(v) for v in inputs["metal_window"]]}
    arch = configuration_manager.configuration["architecture"]
    if arch["network_class_name"] == RES_SE_UNET_CLASS:
        kwargs = dict(arch["arch_kwargs"], **clip)
        required = list(arch.get("_kw_requires_import", RES_SE_UNET_REQUIRES_IMPORT))
        if feature_base is not None or feature_cap is not None:
            kwargs["features_per_stage"] = clip_features(kwargs["n_stages"], feature_base or 32, feature_cap or 320)
    else:
        a = arch["arch_kwargs"]
        kwargs = clip_arch_kwargs(a["strides"], a["kernel_sizes"], feature_base or 32, feature_cap or 320, **clip)
        required = list(RES_SE_UNET_REQUIRES_IMPORT)
    return get_network_from_plans(RES_SE_UNET_CLASS, kwargs, required, num_input_channels, num_output_channels,
                                  allow_init=True, deep_supervision=deep_supervision)
