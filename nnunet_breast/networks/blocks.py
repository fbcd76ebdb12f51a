"""Small 3D building blocks for the EfficientNet U-Net (and other networks of this package).

Conventions (shared by every block here):

* 3D only, tensors are ``(B, C, Z, Y, X)``; kernel sizes and strides are an ``int`` or one value per axis (z first,
  the nnU-Net plans order).
* Padding is ``k // 2`` per axis, so for the odd kernels nnU-Net plans an axis of length ``n`` becomes
  ``ceil(n / s)`` with stride ``s`` (see :func:`conv_output_size`).
* ``norm_op`` / ``nonlin`` are classes (``None`` means "no normalisation" / "no activation");
  ``norm_op_kwargs`` defaults to ``{"eps": 1e-5, "affine": True}`` (nnU-Net's instance-norm defaults, also valid
  for ``BatchNorm3d``), ``nonlin_kwargs`` to ``{}``.
* Convolutions followed by a normalisation have no bias (it would be cancelled by the normalisation).
* Every block has ``compute_conv_feature_map_size(input_size)``: the number of elements (batch size 1) of every
  convolution output it produces for a spatial ``input_size``, the same quantity dynamic-network-architectures'
  blocks report to nnU-Net's planners.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence, Type, Union

import torch
from dynamic_network_architectures.building_blocks.regularization import DropPath
from torch import nn

IntOr3 = Union[int, Sequence[int]]

DEFAULT_NORM_KWARGS = {"eps": 1e-5, "affine": True}

__all__ = [
    "to_3tuple",
    "plans_lists",
    "conv_output_size",
    "make_norm",
    "make_nonlin",
    "ConvNormAct3d",
    "SqueezeExcite3d",
    "MBConv3d",
]


def to_3tuple(value: IntOr3, name: str = "value") -> tuple[int, int, int]:
    """``3`` -> ``(3, 3, 3)``; a length-3 sequence -> tuple of ints; anything else -> ValueError."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return (int(value),) * 3
    values = tuple(int(v) for v in value)
    if len(values) != 3:
        raise ValueError(f"{name} must be an int or have one entry per axis (3), got {value!r}")
    if any(v < 1 for v in values):
        raise ValueError(f"{name} entries must be >= 1, got {value!r}")
    return values  # type: ignore[return-value]


def plans_lists(strides, kernel_sizes) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """The plans' per-stage ``strides`` / ``kernel_sizes`` as lists of 3-tuples, checked to have equal lengths."""
    strides = [to_3tuple(s, "strides entry") for s in strides]
    kernel_sizes = [to_3tuple(k, "kernel_sizes entry") for k in kernel_sizes]
    if len(strides) != len(kernel_sizes):
        raise ValueError(f"strides ({len(strides)} stages) and kernel_sizes ({len(kernel_sizes)} stages) "
                         "must have one entry per resolution stage")
    return strides, kernel_sizes


def conv_output_size(input_size: Sequence[int], stride: IntOr3) -> list[int]:
    """Spatial output size of a convolution with odd kernel, padding ``k // 2`` and ``stride``: ``ceil(n / s)``."""
    return [int(math.ceil(int(n) / s)) for n, s in zip(input_size, to_3tuple(stride, "stride"))]


def make_norm(norm_op: Type[nn.Module] | None, channels: int, norm_op_kwargs: dict | None) -> nn.Module:
    if norm_op is None:
        return nn.Identity()
    kwargs = dict(DEFAULT_NORM_KWARGS if norm_op_kwargs is None else norm_op_kwargs)
    return norm_op(channels, **kwargs)


def make_nonlin(nonlin: Type[nn.Module] | None, nonlin_kwargs: dict | None) -> nn.Module:
    if nonlin is None:
        return nn.Identity()
    return nonlin(**(nonlin_kwargs or {}))


def _elements(channels: int, size: Sequence[int]) -> int:
    return int(channels) * int(math.prod(int(s) for s in size))


class ConvNormAct3d(nn.Module):
    """``Conv3d -> norm -> nonlin``. ``nonlin=None`` gives ``Conv3d -> norm`` (e.g. an MBConv projection)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOr3 = 3,
        stride: IntOr3 = 1,
        groups: int = 1,
        norm_op: Type[nn.Module] | None = nn.InstanceNorm3d,
        norm_op_kwargs: dict | None = None,
        nonlin: Type[nn.Module] | None = nn.SiLU,
        nonlin_kwargs: dict | None = None,
        bias: bool | None = None,
    ):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = to_3tuple(kernel_size, "kernel_size")
        self.stride = to_3tuple(stride, "stride")
        if bias is None:
            bias = norm_op is None
        self.conv = nn.Conv3d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=tuple(k // 2 for k in self.kernel_size),
            groups=groups,
            bias=bias,
        )
        self.norm = make_norm(norm_op, self.out_channels, norm_op_kwargs)
        self.act = make_nonlin(nonlin, nonlin_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))

    def output_size(self, input_size: Sequence[int]) -> list[int]:
        return conv_output_size(input_size, self.stride)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        return _elements(self.out_channels, self.output_size(input_size))


class SqueezeExcite3d(nn.Module):
    """Squeeze-and-excitation on ``channels`` (the MBConv's expanded width).

    ``squeeze_channels = max(1, int(block_in_channels * se_ratio))`` -- like EfficientNet, the bottleneck is
    sized from the *block input* width, not the expanded width. Global average pool -> 1x1x1 conv (bias) -> SiLU
    -> 1x1x1 conv (bias) -> sigmoid gate multiplied onto the input.
    Not DNA's ``regularization.SqueezeExcite``: its forward pools over dims (2, 3) only, not globally for 3D tensors.
    """

    def __init__(self, channels: int, block_in_channels: int, se_ratio: float = 0.25):
        super().__init__()
        self.channels = int(channels)
        self.squeeze_channels = max(1, int(block_in_channels * se_ratio))
        self.fc1 = nn.Conv3d(self.channels, self.squeeze_channels, kernel_size=1, bias=True)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv3d(self.squeeze_channels, self.channels, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3, 4), keepdim=True)
        s = self.fc2(self.act(self.fc1(s)))
        return x * self.gate(s)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        return self.squeeze_channels + self.channels  # two 1x1x1 convs on the pooled vector


class MBConv3d(nn.Module):
    """3D mobile inverted bottleneck (EfficientNet's MBConv).

    ``[expand 1x1x1 conv -> norm -> act]`` (omitted when ``expand_ratio == 1``) -> depthwise conv (groups = channels,
    per-axis kernel and stride, padding ``k // 2``) -> norm -> act -> squeeze-excite (if ``se_ratio > 0``) ->
    project 1x1x1 conv -> norm (no activation). When the stride is 1 on every axis and ``in == out`` the block is
    residual: ``x + drop_path(branch(x))`` with dynamic-network-architectures' (timm's) per-sample ``DropPath``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: float = 6,
        kernel_size: IntOr3 = 3,
        stride: IntOr3 = 1,
        se_ratio: float = 0.25,
        drop_path: float = 0.0,
        norm_op: Type[nn.Module] | None = nn.InstanceNorm3d,
        norm_op_kwargs: dict | None = None,
        nonlin: Type[nn.Module] | None = nn.SiLU,
        nonlin_kwargs: dict | None = None,
    ):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.expand_ratio = expand_ratio
        self.kernel_size = to_3tuple(kernel_size, "kernel_size")
        self.stride = to_3tuple(stride, "stride")
        self.mid_channels = int(round(self.in_channels * expand_ratio))
        norm = dict(norm_op=norm_op, norm_op_kwargs=norm_op_kwargs)
        act = dict(nonlin=nonlin, nonlin_kwargs=nonlin_kwargs)

        if expand_ratio != 1:
            self.expand = ConvNormAct3d(self.in_channels, self.mid_channels, 1, **norm, **act)
        else:
            if self.mid_channels != self.in_channels:
                raise ValueError("expand_ratio 1 requires mid_channels == in_channels")
            self.expand = nn.Identity()
        self.depthwise = ConvNormAct3d(
            self.mid_channels, self.mid_channels, self.kernel_size, self.stride, groups=self.mid_channels, **norm, **act
        )
        self.se = SqueezeExcite3d(self.mid_channels, self.in_channels, se_ratio) if se_ratio > 0 else nn.Identity()
        self.project = ConvNormAct3d(self.mid_channels, self.out_channels, 1, **norm, nonlin=None)
        self.has_residual = all(s == 1 for s in self.stride) and self.in_channels == self.out_channels
        self.drop_path_rate = float(drop_path)  # only applied when the block is residual
        if self.has_residual and not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {drop_path}")
        self.drop_path = DropPath(self.drop_path_rate) if self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.depthwise(self.expand(x))))
        if self.has_residual:
            y = x + self.drop_path(y)
        return y

    def output_size(self, input_size: Sequence[int]) -> list[int]:
        return conv_output_size(input_size, self.stride)

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> int:
        out = self.output_size(input_size)
        total = 0
        if isinstance(self.expand, ConvNormAct3d):
            total += self.expand.compute_conv_feature_map_size(input_size)
        total += self.depthwise.compute_conv_feature_map_size(input_size)
        if isinstance(self.se, SqueezeExcite3d):
            total += self.se.compute_conv_feature_map_size(out)
        total += self.project.compute_conv_feature_map_size(out)
        return total
