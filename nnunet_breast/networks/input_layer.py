"""Parameter-free input layer: the clip networks compute their own input channels from raw HU.

The clip paper (two-stage Location Net / Segmentation Net, both Res-SE-U-Nets) feeds its networks

* Location Net:      CT windowed to HU [-200, 200]  +  binary image (HU >= 300 -> 1, else 0)
* Segmentation Net:  CT windowed to HU [-200, 200]  +  the Location Net's output map

nnU-Net is configured with ``noNorm`` channel normalisation so that the CT channel reaches the network as raw
Hounsfield units.  :class:`ClipInputLayer` is the first module of :class:`~nnunet_breast.networks.res_se_unet.
ResSEUNet3d` and turns that raw HU channel into the paper's features *inside* the network.  Doing it here (instead of
in preprocessing) keeps one raw CT on disk for every ablation, and the binary threshold is applied to exact HU values.

Input channels:  ``0`` = raw HU; ``1 .. passthrough_channels`` = extra inputs (e.g. the stage-1 probability map),
passed through unchanged.

Output channels, in order:

1. window  = ``(clamp(HU, lo, hi) - lo) / (hi - lo) * 2 - 1``, in ``[-1, 1]`` (``-200 -> -1, 0 -> 0, 200 -> 1``)
2. binary  = ``float(HU >= binary_threshold_hu)`` (omitted when ``binary_threshold_hu is None``)
3. metal   = ``(clamp(HU, lo, hi) - lo) / (hi - lo)``, in ``[0, 1]``, for ``metal_window = (lo, hi)`` (omitted when
   ``None``, as in the paper). Not in the paper: its window saturates at 200 HU and its binary image says only
   ">= 300", while the edge of a titanium clip's label lies in between tissue and metal, near 1100-1300 HU on a
   planning CT (partial volume of a 2 mm clip). This channel shows the fine nets that range.
4. the passthrough channels

All arithmetic runs in float32, also under ``torch.autocast``: a bfloat16 HU value cannot represent 299 (it rounds
to 300), so the input is cast to float32 before thresholding.  The binary channel is a comparison and therefore
carries no gradient (and no NaN); the layer has no parameters and is deterministic.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["ClipInputLayer"]


class ClipInputLayer(nn.Module):
    """Raw HU (+ passthrough channels) -> [window, (binary), (metal), passthrough...]; 2D and 3D tensors.

    Args:
        window: ``(lo, hi)`` HU window; values are clamped to it and mapped linearly onto ``[-1, 1]``.
        binary_threshold_hu: HU threshold of the binary channel (``HU >= threshold`` -> 1); ``None`` drops the
            channel (ablation "location net without binary image").
        passthrough_channels: number of input channels after the HU channel that are appended unchanged
            (1 for the segmentation net's probability map, 0 for the "CT only" ablation).
        metal_window: ``(lo, hi)`` HU window of the metal channel, mapped onto ``[0, 1]``; ``None`` (the paper's
            inputs) drops the channel.
    """

    def __init__(self, window: Sequence[float] = (-200.0, 200.0), binary_threshold_hu: float | None = 300.0,
                 passthrough_channels: int = 0, metal_window: Sequence[float] | None = None):
        super().__init__()
        lo, hi = _window(window, "window")
        if isinstance(passthrough_channels, bool) or int(passthrough_channels) != passthrough_channels \
                or passthrough_channels < 0:
            raise ValueError(f"passthrough_channels must be a non-negative integer, got {passthrough_channels!r}")
        self.window = (lo, hi)
        self.binary_threshold_hu = None if binary_threshold_hu is None else float(binary_threshold_hu)
        self.passthrough_channels = int(passthrough_channels)
        self.metal_window = None if metal_window is None else _window(metal_window, "metal_window")

    @property
    def in_channels(self) -> int:
        """Channels the layer expects: 1 (raw HU) + passthrough channels."""
        return 1 + self.passthrough_channels

    @property
    def out_channels(self) -> int:
        """Channels the layer produces: window (+ binary) + passthrough channels."""
        return 1 + (self.binary_threshold_hu is not None) + (self.metal_window is not None) + self.passthrough_channels

    @property
    def channel_names(self) -> list[str]:
        names = ["window"]
        if self.binary_threshold_hu is not None:
            names.append("binary")
        if self.metal_window is not None:
            names.append("metal")
        names += [f"passthrough_{i}" for i in range(self.passthrough_channels)]
        return names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 3:
            raise ValueError(f"expected a (B, C, *spatial) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"ClipInputLayer expects {self.in_channels} input channel(s) (raw HU + "
                             f"{self.passthrough_channels} passthrough), got {x.shape[1]} (shape {tuple(x.shape)})")
        # float32 throughout: elementwise ops are not autocast-listed, so they stay float32 under autocast too
        x = x.float()
        hu = x[:, :1]
        lo, hi = self.window
        feats = [(hu.clamp(lo, hi) - lo) / (hi - lo) * 2.0 - 1.0]
        if self.binary_threshold_hu is not None:
            feats.append((hu.detach() >= self.binary_threshold_hu).to(torch.float32))
        if self.metal_window is not None:
            m_lo, m_hi = self.metal_window
            feats.append((hu.clamp(m_lo, m_hi) - m_lo) / (m_hi - m_lo))
        if self.passthrough_channels:
            feats.append(x[:, 1:])
        return torch.cat(feats, dim=1)

    def extra_repr(self) -> str:
        return (f"window={self.window}, binary_threshold_hu={self.binary_threshold_hu}, "
                f"metal_window={self.metal_window}, passthrough_channels={self.passthrough_channels}")


def _window(window: Sequence[float], name: str) -> tuple[float, float]:
    if len(window) != 2:
        raise ValueError(f"{name} must be (lo, hi), got {window!r}")
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"{name} must satisfy lo < hi, got {window!r}")
    return lo, hi
