"""The fast path of prediction: the sliding window over the body only, bf16 and channels-last on a CPU.

A planning CT is mostly air around the patient, and nnU-Net's crop-to-nonzero keeps it (air is -1000 HU, not 0),
so the sliding window spends most patches outside the body. :class:`FastPathPredictor` is nnU-Net's predictor that

* crops the preprocessed image to the body's bounding box grown by ``volumes.body.BODY_MARGIN_MM`` (the body
  found on the preprocessed image as on the CT: HU >= -150, largest component;
  :func:`nnunet_breast.volumes.body.body_mask`) and runs nnU-Net's own sliding window on that box, as nnU-Net
  runs it on its crop to nonzero; everything outside the box is background. nnU-Net tiles the box with as few
  patches as cover it, not the whole field of view: a patch as wide as half the field of view would otherwise
  still touch the box on every tile. The patches then sit elsewhere than on the whole grid, so masks can differ
  where the model is unsure; tests/test_learning.py holds them to nnU-Net's accuracy against the reference;
* runs each patch under bf16 autocast, network and patch in channels-last memory, on CPUs that compute bf16
  natively (nnU-Net autocasts on CUDA only; ``nnUNet_breast_cpu_bf16=0`` forces fp32).

``--no-fast-path`` (``predict``, ``predict-clips``) gives nnU-Net's predictor unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunet_breast.trainers.cpu import cpu_autocast, use_cpu_bf16
from nnunet_breast.volumes.body import body_box

#: logit outside the body's box: a sigmoid of ~5e-5, background for region heads
BACKGROUND_LOGIT = -10.0


class FastPathPredictor(nnUNetPredictor):
    """nnU-Net's predictor on the body's box only, in bf16 + channels-last on a bf16-capable CPU."""

    _box: tuple | None = None                 # the body box of the case being predicted
    _box_for: torch.Tensor | None = None      # the case it was found on (every fold predicts the same tensor)

    def predict_sliding_window_return_logits(self, input_image: torch.Tensor):
        if self._box_for is not input_image:
            self._box, self._box_for = self._body_region(input_image), input_image
        if use_cpu_bf16(self.device) and input_image.ndim == 4:
            self.network = self.network.to(memory_format=torch.channels_last_3d)
        if self._box is None:
            return super().predict_sliding_window_return_logits(input_image)
        inside = super().predict_sliding_window_return_logits(input_image[(slice(None), *self._box)])
        logits = torch.full((inside.shape[0], *input_image.shape[1:]), BACKGROUND_LOGIT, dtype=inside.dtype,
                            device=inside.device)
        if not self.label_manager.has_regions:
            logits[0] = -BACKGROUND_LOGIT      # softmax heads: channel 0 is background
        logits[(slice(None), *self._box)] = inside
        return logits

    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        if not use_cpu_bf16(self.device):
            return super()._internal_maybe_mirror_and_predict(x)
        if x.ndim == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with cpu_autocast(self.device):
            return super()._internal_maybe_mirror_and_predict(x).float()

    def _body_region(self, data: torch.Tensor) -> tuple | None:
        """The body box (+ margin) as slices of the image, or None where HU cannot be read back (not
        CT-normalised), no body is found or the box is the whole image: then nnU-Net's predictor runs as it is."""
        if len(self.configuration_manager.patch_size) != data.ndim - 1:
            return None                       # a 2D configuration: nnU-Net's slice-wise tiling, left as it is
        hu = self._hounsfield(data)
        if hu is None:
            return None
        box = body_box(hu, list(self.configuration_manager.spacing)[::-1])
        if box is None:
            return None
        box = widened(box, hu.shape, self.configuration_manager.patch_size)
        return None if all(b.stop - b.start == n for b, n in zip(box, hu.shape)) else box

    def _hounsfield(self, data: torch.Tensor) -> np.ndarray | None:
        """Channel 0 back in HU: CTNormalization inverted, raw HU (our clip models) as is; None otherwise or where
        the normalisation clips above the air threshold (air and tissue would look alike)."""
        scheme = self.configuration_manager.normalization_schemes[0]
        x = data[0].float().numpy()
        if scheme == "NoNormalization":
            return x
        if scheme != "CTNormalization":
            return None
        props = self.plans_manager.foreground_intensity_properties_per_channel["0"]
        if props["percentile_00_5"] > -150:
            return None
        return x * props["std"] + props["mean"]


def widened(box: tuple, shape, patch_size) -> tuple:
    """``box`` grown, about its centre and inside the image, to at least the patch along each axis: nnU-Net would
    pad a smaller crop with zeros (the normalised mean: soft tissue, not air), a context the network never sees on
    the whole image; the image's own air is the context it has there."""
    out = []
    for b, n, p in zip(box, shape, patch_size):
        if b.stop - b.start < p:
            start = max(0, min(n - p, (b.start + b.stop - p) // 2))
            b = slice(start, min(n, start + p))
        out.append(b)
    return tuple(out)

