"""The fast path of prediction: the sliding window over the body only, bf16 and channels-last on a CPU.

A planning CT is mostly air around the patient, and nnU-Net's crop-to-nonzero keeps it (air is -1000 HU, not 0),
so the sliding window spends most patches outside the body. :class:`FastPathPredictor` is nnU-Net's predictor that

* skips every patch of nnU-Net's own tiling that does not meet the body's bounding box grown by
  ``volumes.body.BODY_MARGIN_MM`` (the body found on the preprocessed image as on the CT: HU >= -150, largest component;
  :func:`nnunet_breast.volumes.body.body_mask`). A voxel inside the box is covered by exactly the patches that
  cover it on the whole grid, so its logits, and every mask inside the body, are nnU-Net's own; voxels no kept
  patch covers are background;
* runs each patch under bf16 autocast, network and patch in channels-last memory, on CPUs that compute bf16
  natively (nnU-Net autocasts on CUDA only; ``nnUNet_breast_cpu_bf16=0`` forces fp32).

``--no-fast-path`` (``predict``, ``predict-clips``) gives nnU-Net's predictor unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunet_breast.trainers.cpu import cpu_autocast, use_cpu_bf16
from nnunet_breast.volumes.body import body_box

#: logit written where no patch ran: a sigmoid of ~5e-5, background for region heads
BACKGROUND_LOGIT = -10.0


class FastPathPredictor(nnUNetPredictor):
    """nnU-Net's predictor over the body's patches only, in bf16 + channels-last on a bf16-capable CPU."""

    _keep: np.ndarray | None = None           # padded-grid mask of the body box while a case is predicted
    _keep_for: torch.Tensor | None = None     # the case it was found on (every fold predicts the same tensor)

    def predict_sliding_window_return_logits(self, input_image: torch.Tensor):
        if self._keep_for is not input_image:
            self._keep, self._keep_for = self._body_region(input_image), input_image
        if use_cpu_bf16(self.device) and input_image.ndim == 4:
            self.network = self.network.to(memory_format=torch.channels_last_3d)
        logits = super().predict_sliding_window_return_logits(input_image)
        uncovered = torch.isnan(logits[0])
        if uncovered.any():                   # 0 / 0 where no patch ran
            logits[:, uncovered] = BACKGROUND_LOGIT
            if not self.label_manager.has_regions:
                logits[0, uncovered] = -BACKGROUND_LOGIT
        return logits

    def _internal_get_sliding_window_slicers(self, image_size):
        slicers = super()._internal_get_sliding_window_slicers(image_size)
        if self._keep is None or self._keep.shape != tuple(image_size):
            return slicers
        return [s for s in slicers if self._keep[s[1:]].any()] or slicers

    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        if not use_cpu_bf16(self.device):
            return super()._internal_maybe_mirror_and_predict(x)
        if x.ndim == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with cpu_autocast(self.device):
            return super()._internal_maybe_mirror_and_predict(x).float()

    def _body_region(self, data: torch.Tensor) -> np.ndarray | None:
        """The body box (+ margin) as a mask on the grid nnU-Net tiles (the data padded to the patch size), or
        None where HU cannot be read back (not CT-normalised) or no body is found: then every patch runs."""
        if len(self.configuration_manager.patch_size) != data.ndim - 1:
            return None                       # a 2D configuration: nnU-Net's slice-wise tiling, left as it is
        hu = self._hounsfield(data)
        if hu is None:
            return None
        box = body_box(hu, list(self.configuration_manager.spacing)[::-1])
        if box is None:
            return None
        keep = np.zeros((1, *hu.shape), bool)
        keep[(slice(None), *box)] = True
        padded = pad_nd_image(keep, self.configuration_manager.patch_size, "constant", {"constant_values": 0})
        return np.asarray(padded)[0]

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

