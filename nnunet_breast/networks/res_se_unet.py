"""Res-SE-U-Net of the two-stage clip model (Location Net / Segmentation Net), as an nnU-Net v2 architecture.

Paper (clip segmentation for post-lumpectomy breast RT): both stages are a "Res-SE-U-Net": a U-Net whose
down-sampling path is built from ResNet residual blocks (11 Res-blocks in total), with 5 skip connections and one
squeeze-and-excitation (SE) block.  Location Net input: CT windowed to [-200, 200] HU + binary image HU >= 300;
Segmentation Net input: the same CT window + the Location Net's output map.

Mapping onto dynamic-network-architectures (the building blocks of nnU-Net's own ``ResidualEncoderUNet``):

    raw HU (+ passthrough)  ->  ClipInputLayer  (window [-1, 1], binary, passthrough; no parameters)
                            ->  ResidualEncoder (DNA: conv stem + BasicBlockD stages, strided-conv down-sampling)
                            ->  SE block(s)     (see ``se_at``)
                            ->  UNetDecoder     (DNA: transposed conv + concat skip + conv blocks, deep supervision)

The constructor takes the same kwargs as nnU-Net's ResEnc plans (``n_stages``, ``features_per_stage``, ``conv_op``,
``kernel_sizes``, ``strides``, ``n_blocks_per_stage``, ``n_conv_per_stage_decoder``, ``conv_bias``, ``norm_op`` ...),
so the ``arch_kwargs`` of a ResEnc configuration can be reused by swapping ``network_class_name`` to
``nnunet_breast.networks.res_se_unet.ResSEUNet3d`` and adding the input-layer kwargs
(``window``, ``binary_threshold_hu``, ``passthrough_channels``, ``se_ratio``, ``se_at``).

Paper-sized default (``networks.plans.clip_arch_kwargs`` on ``PAPER_CLIP_STRIDES``): 6 stages,
``n_blocks_per_stage = [1, 2, 2, 2, 2, 2]`` = 11 residual blocks, 5 down-samplings -> 5 skip connections, one SE block.

SE placement (``se_at``): the paper has exactly one SE block but the text does not say where it sits.  The default
``"bottleneck"`` puts it on the bottleneck (deepest encoder stage) output, where channel re-weighting is cheapest and
acts on the most semantic features, and which feeds the whole decoder.  ``"all"`` puts one SE block after every
encoder stage (n_stages blocks; each re-weighted map is both the skip and the next stage's input); ``"none"`` drops
SE (plain ResEnc U-Net with the clip input layer, for ablations).

Ablations (paper Table "four combinations"):

* Location Net with / without binary channel: ``binary_threshold_hu=300.0`` / ``None``
* Segmentation Net with / without probability map: ``passthrough_channels=1`` / ``0``

``input_channels`` (what nnU-Net passes: the number of dataset channels) must equal ``1 + passthrough_channels``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from dynamic_network_architectures.architectures.abstract_arch import AbstractDynamicNetworkArchitectures
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim
from dynamic_network_architectures.building_blocks.residual import BasicBlockD, BottleneckD
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from nnunet_breast.networks.input_layer import ClipInputLayer

__all__ = ["ResSEUNet3d", "SqueezeExcitation", "SE_PLACEMENTS"]

SE_PLACEMENTS = ("bottleneck", "all", "none")

_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al., SENet) for N-d feature maps.

    Global average pool over *all* spatial axes -> 1x1 conv (C -> r) -> ReLU -> 1x1 conv (r -> C) -> sigmoid ->
    channel-wise rescaling of the input, ``r = max(1, round(C * se_ratio))``.  (DNA's ``SqueezeExcite`` pools only
    over axes (2, 3), i.e. not globally for 3D inputs, hence this small module.)
    """

    def __init__(self, channels: int, conv_op: type[nn.Module] = nn.Conv3d, se_ratio: float = 0.25):
        super().__init__()
        if not 0 < se_ratio:
            raise ValueError(f"se_ratio must be > 0, got {se_ratio}")
        self.channels = int(channels)
        self.reduced_channels = max(1, int(round(channels * se_ratio)))
        self.fc1 = conv_op(self.channels, self.reduced_channels, kernel_size=1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = conv_op(self.reduced_channels, self.channels, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)
        s = self.gate(self.fc2(self.act(self.fc1(s))))
        return x * s

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        # the rescaled output map (the pooled vectors are negligible)
        return np.prod([self.channels, *input_size], dtype=np.int64)


def _init_last_norm_before_add_to_0(module: nn.Module) -> None:
    """DNA's ``init_last_bn_before_add_to_0``, tolerant of norm ops without affine parameters (or no norm)."""
    if isinstance(module, BasicBlockD):
        norm = module.conv2.norm
    elif isinstance(module, BottleneckD):
        norm = module.conv3.norm
    else:
        return
    if getattr(norm, "weight", None) is not None:
        nn.init.constant_(norm.weight, 0)
    if getattr(norm, "bias", None) is not None:
        nn.init.constant_(norm.bias, 0)


class ResSEUNet3d(AbstractDynamicNetworkArchitectures):
    """Clip input layer -> DNA ResidualEncoder -> SE -> DNA UNetDecoder.  See the module docstring.

    Args (nnU-Net ResEnc plan kwargs): ``input_channels`` (dataset channels, = 1 + ``passthrough_channels``),
    ``num_classes``, ``n_stages``, ``features_per_stage``, ``strides``, ``kernel_sizes``, ``n_blocks_per_stage``,
    ``n_conv_per_stage_decoder``, ``conv_bias``, ``norm_op``/``norm_op_kwargs`` (default InstanceNorm3d,
    ``{"eps": 1e-5, "affine": True}``), ``dropout_op``/``dropout_op_kwargs``, ``nonlin``/``nonlin_kwargs`` (default
    LeakyReLU, ``{"inplace": True}``), ``deep_supervision``, ``conv_op`` (default ``nn.Conv3d``; ``nn.Conv2d`` works
    too, pass a 2D ``norm_op`` then).

    Args (clip): ``window``, ``binary_threshold_hu``, ``metal_window``, ``passthrough_channels`` (see
    :class:`ClipInputLayer`),
    ``se_ratio`` (SE reduction: hidden width = round(C * se_ratio)), ``se_at`` in ``("bottleneck", "all", "none")``.
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        n_stages: int,
        features_per_stage: int | Sequence[int],
        strides: int | Sequence[int] | Sequence[Sequence[int]],
        kernel_sizes: int | Sequence[int] | Sequence[Sequence[int]],
        n_blocks_per_stage: int | Sequence[int],
        n_conv_per_stage_decoder: int | Sequence[int],
        conv_bias: bool = True,
        norm_op: type[nn.Module] | None = nn.InstanceNorm3d,
        norm_op_kwargs: dict | None = None,
        dropout_op: type[nn.Module] | None = None,
        dropout_op_kwargs: dict | None = None,
        nonlin: type[nn.Module] | None = nn.LeakyReLU,
        nonlin_kwargs: dict | None = None,
        deep_supervision: bool = False,
        window: Sequence[float] = (-200.0, 200.0),
        binary_threshold_hu: float | None = 300.0,
        passthrough_channels: int = 0,
        se_ratio: float = 0.25,
        se_at: str | None = "bottleneck",
        conv_op: type[nn.Module] = nn.Conv3d,
        metal_window: Sequence[float] | None = None,
    ):
        super().__init__()
        # weight-transfer keys (AbstractDynamicNetworkArchitectures convention, same layout as ResidualEncoderUNet)
        self.key_to_encoder = "encoder.stages"
        self.key_to_stem = "encoder.stem"
        self.keys_to_in_proj = ("encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0")

        if int(input_channels) != 1 + int(passthrough_channels):
            raise ValueError(
                f"ResSEUNet3d: input_channels={input_channels} does not match the input layer, which expects "
                f"1 raw-HU channel + passthrough_channels={passthrough_channels} (= {1 + int(passthrough_channels)}). "
                "For the location net use a CT-only dataset (1 channel, passthrough_channels=0); for the "
                "segmentation net with the stage-1 probability map use 2 channels and passthrough_channels=1.")
        se_at = "none" if se_at is None else str(se_at).lower()
        if se_at not in SE_PLACEMENTS:
            raise ValueError(f"se_at must be one of {SE_PLACEMENTS}, got {se_at!r}")
        if conv_op not in (nn.Conv2d, nn.Conv3d):
            raise ValueError(f"conv_op must be nn.Conv3d (or nn.Conv2d), got {conv_op!r}")

        if isinstance(n_blocks_per_stage, int):
            n_blocks_per_stage = [n_blocks_per_stage] * n_stages
        if isinstance(n_conv_per_stage_decoder, int):
            n_conv_per_stage_decoder = [n_conv_per_stage_decoder] * (n_stages - 1)
        if isinstance(features_per_stage, int):
            features_per_stage = [features_per_stage] * n_stages
        if len(n_blocks_per_stage) != n_stages:
            raise ValueError(f"n_blocks_per_stage needs {n_stages} entries, got {list(n_blocks_per_stage)}")
        if len(n_conv_per_stage_decoder) != n_stages - 1:
            raise ValueError(f"n_conv_per_stage_decoder needs {n_stages - 1} entries, "
                             f"got {list(n_conv_per_stage_decoder)}")
        if len(features_per_stage) != n_stages:
            raise ValueError(f"features_per_stage needs {n_stages} entries, got {list(features_per_stage)}")

        if norm_op_kwargs is None:
            norm_op_kwargs = {"eps": 1e-5, "affine": True} if norm_op in _INSTANCE_NORMS else {}
        if nonlin_kwargs is None:
            nonlin_kwargs = {"inplace": True} if nonlin is nn.LeakyReLU else {}

        self.input_channels = int(input_channels)
        self.num_classes = int(num_classes)
        self.n_stages = int(n_stages)
        self.se_at = se_at
        self.se_ratio = float(se_ratio)

        self.input_layer = ClipInputLayer(window=window, binary_threshold_hu=binary_threshold_hu,
                                          passthrough_channels=passthrough_channels, metal_window=metal_window)
        self.encoder = ResidualEncoder(
            self.input_layer.out_channels, n_stages, list(features_per_stage), conv_op, kernel_sizes, strides,
            list(n_blocks_per_stage), conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin,
            nonlin_kwargs, block=BasicBlockD, return_skips=True, disable_default_stem=False)

        if se_at == "bottleneck":
            self.se_stages = [n_stages - 1]
        elif se_at == "all":
            self.se_stages = list(range(n_stages))
        else:
            self.se_stages = []
        self.se_blocks = nn.ModuleList(
            SqueezeExcitation(features_per_stage[s], conv_op, se_ratio) if s in self.se_stages else nn.Identity()
            for s in range(n_stages))

        self.decoder = UNetDecoder(self.encoder, num_classes, list(n_conv_per_stage_decoder), deep_supervision)

    # ------------------------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Input layer + residual encoder + SE; returns the skips (bottleneck last), as DNA encoders do."""
        x = self.input_layer(x)
        if self.encoder.stem is not None:
            x = self.encoder.stem(x)
        skips = []
        for stage, se in zip(self.encoder.stages, self.se_blocks):
            x = se(stage(x))
            skips.append(x)
        return skips

    def forward(self, x: torch.Tensor):
        return self.decoder(self.encode(x))

    @property
    def n_residual_blocks(self) -> int:
        return sum(len(stage.blocks) for stage in self.encoder.stages)

    @property
    def n_skip_connections(self) -> int:
        return self.n_stages - 1

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        """Feature-map voxel count for nnU-Net's VRAM estimate: encoder + decoder (as DNA) + input layer + SE maps."""
        assert len(input_size) == convert_conv_op_to_dim(self.encoder.conv_op), (
            "just give the image size without color/feature channels or batch channel. "
            "Do not give input_size=(b, c, x, y(, z)). Give input_size=(x, y(, z))!")
        output = np.int64(np.prod([self.input_layer.out_channels, *input_size], dtype=np.int64))
        output += self.encoder.compute_conv_feature_map_size(input_size)
        output += self.decoder.compute_conv_feature_map_size(input_size)
        size = list(input_size)
        for s, se in enumerate(self.se_blocks):
            size = [i // j for i, j in zip(size, self.encoder.strides[s])]
            if isinstance(se, SqueezeExcitation):
                output += se.compute_conv_feature_map_size(size)
        return output

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """Same init as DNA's ResidualEncoderUNet: He (neg. slope 1e-2) + zero last norm of every residual block."""
        InitWeights_He(1e-2)(module)
        _init_last_norm_before_add_to_0(module)
