"""3D U-Net with a 3D EfficientNet encoder (Chung et al., Radiat Oncol 2021), shaped by nnU-Net plans.

nnU-Net locates the network through its import path in the plans::

    "architecture": {
        "network_class_name": "nnunet_breast.networks.efficientnet.EfficientNetUNet3d",
        "arch_kwargs": {"strides": [[1, 1, 1], [1, 2, 2], ...], "kernel_sizes": [[1, 3, 3], [3, 3, 3], ...],
                        "variant": "b0", "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": true}, "nonlin": "torch.nn.SiLU",
                        "nonlin_kwargs": {"inplace": true}, "deep_supervision": true, ...},
        "_kw_requires_import": ["norm_op", "nonlin"]
    }

Encoder
    The EfficientNet stage table is data (:data:`EFFICIENTNET_B0_STAGES`); B1-B3 come from width/depth
    multipliers with timm's rounding (DNA's ``make_divisible``, :func:`round_repeats`). The 2D classification head
    (1x1 conv to 1280 channels, pooling, classifier) is not used; the encoder ends with the last MBConv stage.

    Resolution levels follow the plans: ``S = len(strides)`` levels, ``D = S - 1`` downsamplings.

    * Level 0 (stride ``strides[0]``, full resolution for nnU-Net plans): a light stem
      ``ConvNormAct3d(input_channels, stem_features, kernel_sizes[0])`` -> the full-resolution skip.
    * EfficientNet's own downsampling points, in network order, are the stem conv and the first blocks of the
      stages whose table stride is 2 (B0: stem, stage2, stage3, stage4, stage6). The plans' strides
      ``strides[1..D]`` are used at the first ``D`` of them; when ``D < 5`` the remaining points get stride 1
      (their stages join the deepest level). When ``D > 5`` the extra points :data:`EXTRA_DOWNSAMPLING_STAGES`
      (stage5, then stage7) become downsampling points too (kept in network order), so ``D <= 7``.
    * The EfficientNet stem conv (32 channels x width, 3x3x3) starts level 1 with stride ``strides[1]``.
    * Depthwise kernels (and the stem conv kernel) adapt to anisotropy: along an axis where the plans'
      ``kernel_sizes[level]`` is 1 the kernel is 1 instead of the table's 3/5.
    * The skip of each level is the output of its last block.

Decoder
    U-Net decoder with a transposed conv, ``decoder_convs`` blocks (plain or depthwise-separable) and a 1x1x1
    segmentation head per level: :class:`~nnunet_breast.networks.effnet_decoder.UNetDecoder3d`.

Speed
    At full resolution every tensor pass costs the same whatever the FLOPs, so the light stem has 8
    channels (``stem_features``) and the EfficientNet stem starts at level 1.
    With ``deep_supervision`` the forward returns ``D`` outputs, highest resolution first, at the scales
    nnU-Net's ``nnUNetTrainer._get_deep_supervision_scales`` expects
    (``1 / cumprod(strides)[:-1]``); otherwise only the full-resolution logits.

Normalisation and mixed precision
    The default is ``InstanceNorm3d(eps=1e-5, affine=True)`` because nnU-Net trains with batch size 2, where
    batch statistics are meaningless. With ``BatchNorm3d`` under nnU-Net DDP training the norms must be
    converted to ``SyncBatchNorm`` (``torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)``, done by the
    trainer). The network runs under ``torch.autocast`` (CUDA fp16/bf16, CPU bf16).
"""
from __future__ import annotations

import math
import pydoc
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
from dynamic_network_architectures.building_blocks.regularization import make_divisible
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from .blocks import ConvNormAct3d, MBConv3d, conv_output_size, plans_lists
from .effnet_decoder import UNetDecoder3d

__all__ = [
    "StageSpec",
    "EFFICIENTNET_B0_STAGES",
    "EFFICIENTNET_STEM_CHANNELS",
    "EFFICIENTNET_VARIANTS",
    "EXTRA_DOWNSAMPLING_STAGES",
    "MAX_DOWNSAMPLINGS",
    "round_repeats",
    "scaled_stages",
    "EfficientNetEncoder3d",
    "UNetDecoder3d",
    "EfficientNetUNet3d",
]


@dataclass(frozen=True)
class StageSpec:
    """One EfficientNet stage: ``repeats`` MBConv blocks, the first with ``stride``, all with ``kernel``."""

    expand: int
    kernel: int
    stride: int
    out_channels: int
    repeats: int


#: EfficientNet-B0 stages (expand, kernel, stride, out_channels, repeats), Tan & Le 2019, table 1.
EFFICIENTNET_B0_STAGES: tuple[StageSpec, ...] = tuple(
    StageSpec(*row)
    for row in (
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 2),
        (6, 5, 2, 40, 2),
        (6, 3, 2, 80, 3),
        (6, 5, 1, 112, 3),
        (6, 5, 2, 192, 4),
        (6, 3, 1, 320, 1),
    )
)
#: Output channels of the EfficientNet stem conv (3x3x3, stride 2 in the original).
EFFICIENTNET_STEM_CHANNELS = 32
EFFICIENTNET_STEM_KERNEL = 3
#: (width_multiplier, depth_multiplier) per variant.
EFFICIENTNET_VARIANTS: dict[str, tuple[float, float]] = {
    "b0": (1.0, 1.0),
    "b1": (1.0, 1.1),
    "b2": (1.1, 1.2),
    "b3": (1.2, 1.4),
}
#: Stages (1-based) that become downsampling points, in this order, when the plans ask for more
#: downsamplings than the table's own (stem + stages with stride 2).
EXTRA_DOWNSAMPLING_STAGES: tuple[int, ...] = (5, 7)
MAX_DOWNSAMPLINGS = 1 + sum(s.stride > 1 for s in EFFICIENTNET_B0_STAGES) + len(EXTRA_DOWNSAMPLING_STAGES)


def round_repeats(repeats: int, depth_multiplier: float) -> int:
    """timm's depth scaling with ``depth_trunc='ceil'`` for single-block-type stages."""
    return int(math.ceil(depth_multiplier * repeats))


def scaled_stages(width_multiplier: float, depth_multiplier: float,
                  base: Sequence[StageSpec] = EFFICIENTNET_B0_STAGES) -> list[StageSpec]:
    """``base`` with timm's width rounding (``make_divisible(channels * width)``) and depth scaling."""
    if not (width_multiplier > 0 and depth_multiplier > 0):
        raise ValueError(f"width/depth multipliers must be > 0, got {width_multiplier}, {depth_multiplier}")
    return [
        StageSpec(s.expand, s.kernel, s.stride, make_divisible(s.out_channels * width_multiplier),
                  round_repeats(s.repeats, depth_multiplier))
        for s in base
    ]


def _resolve(obj, what: str):
    """Classes pass through; import-path strings (as stored in plans JSON) are resolved with pydoc.locate."""
    if obj is None or not isinstance(obj, str):
        return obj
    located = pydoc.locate(obj)
    if located is None:
        raise ValueError(f"could not import {what} {obj!r}")
    return located


class EfficientNetEncoder3d(nn.Module):
    """3D EfficientNet encoder with one ``nn.Sequential`` per resolution level (see the module docstring).

    ``forward`` returns the skips of all levels, highest resolution first (the last one is the bottleneck).
    Attributes: ``levels``, ``output_channels`` (per level), ``strides`` / ``kernel_sizes`` (per level, as
    planned), ``block_stride`` / ``block_level`` (per EfficientNet module name, for introspection).
    """

    def __init__(
        self,
        input_channels: int,
        strides,
        kernel_sizes,
        width_multiplier: float = 1.0,
        depth_multiplier: float = 1.0,
        stem_features: int = 8,
        norm_op=nn.InstanceNorm3d,
        norm_op_kwargs: dict | None = None,
        nonlin=nn.SiLU,
        nonlin_kwargs: dict | None = None,
        drop_path_rate: float = 0.2,
        se_ratio: float = 0.25,
        stages: Sequence[StageSpec] = EFFICIENTNET_B0_STAGES,
    ):
        super().__init__()
        self.strides, self.kernel_sizes = plans_lists(strides, kernel_sizes)
        n_down = len(self.strides) - 1
        main_points = [0] + [i for i, s in enumerate(stages, start=1) if s.stride > 1]
        max_down = len(main_points) + len(EXTRA_DOWNSAMPLING_STAGES)
        if n_down < 1:
            raise ValueError("EfficientNetUNet3d needs at least 2 resolution stages (len(strides) >= 2), "
                             f"got {len(self.strides)}")
        if n_down > max_down:
            raise ValueError(
                f"EfficientNetUNet3d supports at most {max_down} downsamplings ({max_down + 1} resolution stages: "
                f"stem + stages {main_points[1:]} + extra stages {list(EXTRA_DOWNSAMPLING_STAGES)}), but the plans "
                f"have {len(self.strides)} stages ({n_down} downsamplings); reduce the number of pooling operations "
                "in the plans"
            )
        if n_down <= len(main_points):
            active = main_points[:n_down]
        else:
            active = sorted(main_points + list(EXTRA_DOWNSAMPLING_STAGES[: n_down - len(main_points)]))
        self.downsampling_points = active  # 0 = EfficientNet stem conv, k = first block of stage k

        common = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        stages = scaled_stages(width_multiplier, depth_multiplier, stages)
        self.stage_specs = stages
        self.block_stride: dict[str, tuple[int, int, int]] = {}
        self.block_level: dict[str, int] = {}

        levels: list[OrderedDict] = [OrderedDict()]
        levels[0]["stem"] = ConvNormAct3d(input_channels, stem_features, self.kernel_sizes[0], self.strides[0],
                                          **common)

        def adapt(kernel: int, level: int) -> tuple[int, int, int]:
            return tuple(1 if k_plan == 1 else kernel for k_plan in self.kernel_sizes[level])

        def enter(point: int) -> tuple[int, int, int]:
            """Start a new level at a downsampling point; returns the stride of the point."""
            if point in active:
                levels.append(OrderedDict())
                return self.strides[len(levels) - 1]
            return (1, 1, 1)

        stride = enter(0)
        stem_channels = make_divisible(EFFICIENTNET_STEM_CHANNELS * width_multiplier)
        levels[-1]["conv_stem"] = ConvNormAct3d(stem_features, stem_channels,
                                                adapt(EFFICIENTNET_STEM_KERNEL, len(levels) - 1), stride, **common)
        self.block_stride["conv_stem"], self.block_level["conv_stem"] = stride, len(levels) - 1

        total_blocks = sum(s.repeats for s in stages)
        block_idx = 0
        in_ch = stem_channels
        for stage_no, spec in enumerate(stages, start=1):
            for rep in range(spec.repeats):
                stride = enter(stage_no) if rep == 0 else (1, 1, 1)
                level = len(levels) - 1
                name = f"stage{stage_no}_block{rep}"
                levels[-1][name] = MBConv3d(
                    in_ch, spec.out_channels, spec.expand, adapt(spec.kernel, level), stride, se_ratio=se_ratio,
                    drop_path=drop_path_rate * block_idx / total_blocks, **common,
                )
                self.block_stride[name], self.block_level[name] = stride, level
                in_ch = spec.out_channels
                block_idx += 1

        assert len(levels) == len(self.strides)
        self.levels = nn.ModuleList(nn.Sequential(lv) for lv in levels)
        self.output_channels = [
            lv[-1].out_channels for lv in self.levels  # every block of ours exposes out_channels
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for level in self.levels:
            x = level(x)
            skips.append(x)
        return skips

    def level_sizes(self, input_size: Sequence[int]) -> list[list[int]]:
        """Spatial size of each level's output for a spatial ``input_size``."""
        sizes = []
        size = list(input_size)
        for s in self.strides:
            size = conv_output_size(size, s)
            sizes.append(size)
        return sizes

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        total = 0
        size = list(input_size)
        for level in self.levels:
            for block in level:
                total += block.compute_conv_feature_map_size(size)
                size = block.output_size(size)
        return total


class EfficientNetUNet3d(nn.Module):
    """3D U-Net with an EfficientNet-B0..B3 encoder, configured from nnU-Net plans (see module docstring).

    Args:
        input_channels, num_classes: set by nnU-Net.
        strides, kernel_sizes: the plans' per-stage lists (z first); ``len(strides) - 1`` downsamplings, 1..7.
        variant: ``"b0"`` .. ``"b3"`` (width/depth multipliers from :data:`EFFICIENTNET_VARIANTS`).
        width_multiplier, depth_multiplier: override the variant's multipliers when not None.
        stem_features: channels of the full-resolution light stem (level-0 skip).
        decoder_convs: decoder blocks per level.
        decoder_block: ``"conv"`` (plain U-Net convolutions, default) or ``"separable"`` (1x1x1 + depthwise).
        norm_op, nonlin: classes or import-path strings; kwargs default to instance-norm ``eps=1e-5, affine``
            and ``{}``.
        drop_path_rate: stochastic depth grows linearly over the N MBConv blocks, block i (0-based) gets
            ``drop_path_rate * i / N`` (timm's schedule); only residual blocks use it.
        se_ratio: squeeze-excite ratio relative to the block input channels (0 disables SE).
        deep_supervision: return the list of ``len(strides) - 1`` outputs, highest resolution first.

    Default norm is InstanceNorm3d (nnU-Net's batch size 2); with ``BatchNorm3d`` under DDP convert to
    ``SyncBatchNorm``. Works under ``torch.autocast`` (see the module docstring).
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        strides,
        kernel_sizes,
        variant: str = "b0",
        width_multiplier: float | None = None,
        depth_multiplier: float | None = None,
        stem_features: int = 8,
        decoder_convs: int = 1,
        norm_op=nn.InstanceNorm3d,
        norm_op_kwargs: dict | None = None,
        nonlin=nn.SiLU,
        nonlin_kwargs: dict | None = None,
        drop_path_rate: float = 0.2,
        se_ratio: float = 0.25,
        deep_supervision: bool = False,
        decoder_block: str = "conv",
    ):
        super().__init__()
        key = str(variant).lower()
        if key not in EFFICIENTNET_VARIANTS:
            raise ValueError(f"unknown EfficientNet variant {variant!r}; choose one of {sorted(EFFICIENTNET_VARIANTS)}")
        width, depth = EFFICIENTNET_VARIANTS[key]
        self.variant = key
        self.width_multiplier = float(width if width_multiplier is None else width_multiplier)
        self.depth_multiplier = float(depth if depth_multiplier is None else depth_multiplier)
        norm_op = _resolve(norm_op, "norm_op")
        nonlin = _resolve(nonlin, "nonlin")
        self.num_classes = int(num_classes)
        common = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)

        self.encoder = EfficientNetEncoder3d(
            input_channels, strides, kernel_sizes, self.width_multiplier, self.depth_multiplier, stem_features,
            drop_path_rate=drop_path_rate, se_ratio=se_ratio, **common,
        )
        self.decoder = UNetDecoder3d(
            self.encoder.output_channels, self.encoder.strides, self.encoder.kernel_sizes, num_classes,
            decoder_convs, deep_supervision=deep_supervision, decoder_block=decoder_block, **common,
        )

    def forward(self, x: torch.Tensor):
        return self.decoder(self.encoder(x))

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        """Number of elements (batch size 1) of all convolution / transposed-convolution outputs for a spatial
        ``input_size`` (z, y, x) -- the quantity dynamic-network-architectures' networks report for nnU-Net's
        VRAM estimate. Norm/activation outputs, the SE gating product and concatenations are not counted, so it
        is a proxy for (not the exact) activation memory; it is exact for the convolutions and monotone
        (non-decreasing) in every axis of ``input_size``. Seg heads count only where they run (all with deep
        supervision, else the last)."""
        if len(input_size) != 3:
            raise ValueError("give the spatial patch size (z, y, x) only, without batch/channel dimensions")
        return int(self.encoder.compute_conv_feature_map_size(input_size)
                   + self.decoder.compute_conv_feature_map_size(self.encoder.level_sizes(input_size)))

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net calls ``network.apply(network.initialize)``: He init (``InitWeights_He(1e-2)``) of all
        (transposed) convs, biases 0, and zero-init of the last norm's affine weight in every residual MBConv, so
        that residual branches start as identity (as timm's ``zero_init_last``)."""
        InitWeights_He(1e-2)(module)
        if isinstance(module, MBConv3d) and module.has_residual:
            norm = module.project.norm
            if getattr(norm, "weight", None) is not None:
                nn.init.zeros_(norm.weight)
