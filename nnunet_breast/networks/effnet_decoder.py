"""U-Net decoder of the EfficientNet U-Net (:class:`nnunet_breast.networks.efficientnet.EfficientNetUNet3d`).

For level ``D-1 .. 0``: transposed conv (kernel = stride = ``strides[level + 1]``) from the deeper features to the
skip's channel count, concatenation with the skip, ``decoder_convs`` blocks to the skip's channel count, and a
1x1x1 segmentation head per level. Blocks are plain U-Net convolutions (``decoder_block="conv"``, default) or
depthwise-separable like the encoder's (``"separable"``: 1x1x1 conv + norm + act, then a depthwise conv + norm +
act), which cuts the FLOPs from about 23 to 11 GFLOP per 64x128x128 patch but was no faster on CPU, where the
full-resolution levels are memory-bound.

With ``deep_supervision`` the forward returns ``D`` outputs, highest resolution first, at the scales nnU-Net's
``nnUNetTrainer._get_deep_supervision_scales`` expects (``1 / cumprod(strides)[:-1]``); otherwise only the
full-resolution logits.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvNormAct3d, plans_lists

__all__ = ["UNetDecoder3d"]


class UNetDecoder3d(nn.Module):
    """U-Net decoder over the skips of an encoder with ``encoder_channels`` / ``strides`` / ``kernel_sizes`` per
    level. ``deep_supervision`` is a plain attribute (nnU-Net's ``set_deep_supervision_enabled`` toggles it).

    Not DNA's ``UNetDecoder``: it lacks ``decoder_block="separable"`` and crop/pad for sizes not divisible by strides.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        strides,
        kernel_sizes,
        num_classes: int,
        decoder_convs: int = 1,
        norm_op=nn.InstanceNorm3d,
        norm_op_kwargs: dict | None = None,
        nonlin=nn.SiLU,
        nonlin_kwargs: dict | None = None,
        deep_supervision: bool = False,
        decoder_block: str = "conv",
    ):
        super().__init__()
        if decoder_convs < 1:
            raise ValueError(f"decoder_convs must be >= 1, got {decoder_convs}")
        if decoder_block not in ("separable", "conv"):
            raise ValueError(f"decoder_block must be 'separable' or 'conv', got {decoder_block!r}")
        self.strides, self.kernel_sizes = plans_lists(strides, kernel_sizes)
        self.encoder_channels = [int(c) for c in encoder_channels]
        self.num_classes = int(num_classes)
        self.deep_supervision = bool(deep_supervision)
        common = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)
        n_down = len(self.encoder_channels) - 1
        self.levels = list(range(n_down - 1, -1, -1))  # decoder stage i works at encoder level self.levels[i]
        self.upsample = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.seg_layers = nn.ModuleList()
        deeper = self.encoder_channels[-1]
        for level in self.levels:
            ch = self.encoder_channels[level]
            up_stride = self.strides[level + 1]
            self.upsample.append(nn.ConvTranspose3d(deeper, ch, up_stride, stride=up_stride, bias=True))
            k = self.kernel_sizes[level]
            convs = []
            for j in range(decoder_convs):
                cin = 2 * ch if j == 0 else ch
                if decoder_block == "separable":
                    convs += [ConvNormAct3d(cin, ch, 1, **common), ConvNormAct3d(ch, ch, k, groups=ch, **common)]
                else:
                    convs.append(ConvNormAct3d(cin, ch, k, **common))
            self.stages.append(nn.Sequential(*convs))
            self.seg_layers.append(nn.Conv3d(ch, self.num_classes, 1, bias=True))
            deeper = ch

    @staticmethod
    def _match(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Crop/zero-pad the upsampled tensor to the skip's size (only differs for sizes not divisible by the
        strides, e.g. odd inputs outside nnU-Net's patch-based inference)."""
        if x.shape[2:] == ref.shape[2:]:
            return x
        pad = []
        for have, want in zip(reversed(x.shape[2:]), reversed(ref.shape[2:])):
            pad += [0, want - have]
        return F.pad(x, pad)

    def forward(self, skips: Sequence[torch.Tensor]):
        x = skips[-1]
        outputs = []
        last = len(self.stages) - 1
        for i, level in enumerate(self.levels):
            skip = skips[level]
            x = self._match(self.upsample[i](x), skip)
            x = self.stages[i](torch.cat((x, skip), dim=1))
            if self.deep_supervision or i == last:
                outputs.append(self.seg_layers[i](x))
        outputs = outputs[::-1]  # highest resolution first
        return outputs if self.deep_supervision else outputs[0]

    def compute_conv_feature_map_size(self, skip_sizes: Sequence[Sequence[int]]) -> int:
        """``skip_sizes``: spatial size of every encoder level (as from ``EfficientNetEncoder3d.level_sizes``)."""
        total = 0
        last = len(self.stages) - 1
        for i, level in enumerate(self.levels):
            deeper = skip_sizes[level + 1]
            up_size = [n * s for n, s in zip(deeper, self.strides[level + 1])]
            total += self.encoder_channels[level] * math.prod(up_size)
            size = skip_sizes[level]
            for conv in self.stages[i]:
                total += conv.compute_conv_feature_map_size(size)
            if self.deep_supervision or i == last:
                total += self.num_classes * math.prod(size)
        return int(total)
