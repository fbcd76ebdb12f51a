"""The fast path of prediction: the sliding window over the body only, bf16 and channels-last on a CPU.

A planning CT is mostly air around the patient, and nnU-Net's crop-to-nonzero keeps it (air is -1000 HU, not 0),
so the sliding window spends most patches outside the body. :class:`FastPathPredictor` is nnU-Net's predictor
that runs patches for the body's bounding box grown by ``volumes.body.BODY_MARGIN_MM`` only
(:func:`nnunet_breast.volumes.body.body_box`: HU >= -150, largest component), everything outside it background,
in one of two tilings (:data:`TILINGS`):

* ``box`` (the default): the box tiled afresh with as few patches as cover it. In memory
  (``predict_single_npy_array``, what ``predict`` uses) the CT is cropped to the box before nnU-Net sees it, so
  nnU-Net's resampling, sliding window and export all run on the box, and the result is pasted back into
  background; the box is widened to at least one patch with the CT's own air (nnU-Net would pad a smaller crop
  with zeros: soft tissue after CT normalisation, a context the model never saw). On nnU-Net's file route
  (``predict_from_files``: the clip models) the preprocessed image is cropped the same way. The masks then
  depend on the body, not on the scanner's field of view (the box is found on a grid that starts at the body);
  nnU-Net's whole-grid tiles are anchored at the image's corner, so its own masks move with the field of view
  (``benchmarks/fast_path_tilings.py``), and the box's masks differ from them where the model is unsure.
* ``grid``: nnU-Net's own tiles of the whole image, minus those that miss the box: nnU-Net's logits inside the
  box (the same patches, Gaussian weights and preprocessing of the whole CT; after the export's resampling,
  inside the body), background outside the CT's body box, for those who must reproduce ``nnUNetv2_predict``. It
  saves only where the patch is small against the field of view (a 256-voxel-wide patch meets the box on every
  tile of a 512-pixel CT).

On a CPU each patch runs with network and patch in channels-last memory (instance norms as their channels-last
equivalent, :func:`~nnunet_breast.trainers.cpu.channels_last`: 2.2x for the EfficientNet-B0 U-Net in fp32 too,
docs/benchmarks.md), under bf16 autocast where the CPU computes bf16 natively (nnU-Net autocasts on CUDA only;
``nnUNet_breast_cpu_bf16=0`` forces fp32). ``--fast-path off`` (``--no-fast-path``) gives nnU-Net's predictor
unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunet_breast.trainers.cpu import channels_last, cpu_autocast
from nnunet_breast.volumes.body import body_box
from nnunet_breast.volumes.components import pasted

#: logit outside the body's box: a sigmoid of ~5e-5, background for region heads
BACKGROUND_LOGIT = -10.0
#: how the fast path tiles the body's box (module docstring); "off": nnU-Net's predictor unchanged
TILINGS = ("box", "grid")


class FastPathPredictor(nnUNetPredictor):
    """nnU-Net's predictor on the body's box only; on a CPU in channels-last, in bf16 where the CPU has it."""

    tiling = "box"                            # one of TILINGS
    _box: tuple | None = None                 # the body box of the case being predicted
    _box_for: torch.Tensor | None = None      # the case it was found on (every fold predicts the same tensor)
    _cropped = False                          # predicting a CT already cropped to its body box

    def predict_in_body_box(self, input_image: np.ndarray, image_properties: dict,
                            save_or_return_probabilities: bool = False) -> tuple[tuple, np.ndarray, np.ndarray | None]:
        """(box, label map, probabilities or None) of nnU-Net's in-memory prediction of the CT cropped to the
        body's box: the arrays cover ``box`` (slices of ``input_image``'s grid; the whole grid where no box
        applies) and everything outside it is background. The ``grid`` tiling predicts the whole CT and keeps its
        body box: the export's interpolation would carry the box's edge, found on the coarser network grid, up to
        a network voxel further into the air."""
        spacing, whole = image_properties["spacing"], tuple(slice(0, n) for n in input_image.shape[1:])
        crop = (self._raw_body_region(input_image, spacing) if self.tiling == "box" else None) or whole
        self._cropped = self.tiling == "box"     # the crop is the box: no second search in the sliding window
        try:
            out = super().predict_single_npy_array(np.ascontiguousarray(input_image[(slice(None), *crop)]),
                                                   image_properties, None, None, save_or_return_probabilities)
        finally:
            self._cropped = False
        seg, probabilities = out if save_or_return_probabilities else (out, None)
        keep = (self._raw_body_box(input_image, spacing) if self.tiling == "grid" else None) or crop
        if keep is not crop:                     # the grid tiling predicted the whole CT: keep its body box
            seg = seg[keep]
            probabilities = None if probabilities is None else probabilities[(slice(None), *keep)]
        return keep, seg, probabilities

    def predict_single_npy_array(self, input_image: np.ndarray, image_properties: dict,
                                 segmentation_previous_stage: np.ndarray | None = None,
                                 output_file_truncated: str | None = None, save_or_return_probabilities: bool = False):
        """nnU-Net's call, answered by :meth:`predict_in_body_box` on the whole grid (label 0 outside the box,
        probability 1 for background's channel of softmax heads, 0 for every region of region heads)."""
        if segmentation_previous_stage is not None or output_file_truncated is not None:
            return super().predict_single_npy_array(input_image, image_properties, segmentation_previous_stage,
                                                    output_file_truncated, save_or_return_probabilities)
        box, seg, probabilities = self.predict_in_body_box(input_image, image_properties,
                                                           save_or_return_probabilities)
        seg = pasted(seg, box, input_image.shape[1:])
        if probabilities is None:
            return seg
        background = np.zeros((len(probabilities), 1, 1, 1), probabilities.dtype)
        background[0] = 0 if self.label_manager.has_regions else 1
        return seg, pasted(probabilities, box, input_image.shape[1:], background)

    def predict_sliding_window_return_logits(self, input_image: torch.Tensor):
        if self._box_for is not input_image:
            self._box_for = input_image
            self._box = None if self._cropped else self._body_region(input_image)
        if self.device.type == "cpu" and input_image.ndim == 4:
            self.network = channels_last(self.network)
        if self._box is None:
            return super().predict_sliding_window_return_logits(input_image)
        if self.tiling == "grid":              # nnU-Net's tiles that meet the box: _internal_get_sliding_window_slicers
            inside = super().predict_sliding_window_return_logits(input_image)[(slice(None), *self._box)]
        else:
            inside = super().predict_sliding_window_return_logits(input_image[(slice(None), *self._box)])
        logits = torch.full((inside.shape[0], *input_image.shape[1:]), BACKGROUND_LOGIT, dtype=inside.dtype,
                            device=inside.device)
        if not self.label_manager.has_regions:
            logits[0] = -BACKGROUND_LOGIT      # softmax heads: channel 0 is background
        logits[(slice(None), *self._box)] = inside
        return logits

    def _internal_get_sliding_window_slicers(self, image_size):
        """nnU-Net's tiles; on the ``grid`` tiling those that meet the body's box only. A tile that misses the
        box adds nothing to any voxel inside it, so the box's logits stay nnU-Net's; voxels that no kept tile
        covers are outside the box and become background. (nnU-Net pads an image smaller than the patch to one
        patch: along such an axis its single tile meets any box, so the padding's shift does not matter.)"""
        slicers = super()._internal_get_sliding_window_slicers(image_size)
        if self.tiling != "grid" or self._box is None or self._cropped:
            return slicers
        return [s for s in slicers if all(t.start < b.stop and b.start < t.stop
                                          for t, b in zip(s[-len(self._box):], self._box))]

    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cpu":
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
        if self.tiling == "box":               # a crop narrower than a patch would be padded with zeros
            box = widened(box, hu.shape, self.configuration_manager.patch_size)
        return _unless_whole(box, hu.shape)

    def _raw_body_box(self, image: np.ndarray, spacing: list) -> tuple | None:
        """The body box (+ margin) as slices of the CT as nnU-Net receives it (channel 0 in HU; ``spacing`` in
        the array's axis order); None as in :meth:`_body_region`."""
        scheme = self.configuration_manager.normalization_schemes[0]
        if len(self.configuration_manager.patch_size) != image.ndim - 1 or \
                scheme not in ("CTNormalization", "NoNormalization"):
            return None
        box = body_box(np.asarray(image[0], np.float32), list(spacing)[::-1])
        return None if box is None else _unless_whole(box, image.shape[1:])

    def _raw_body_region(self, image: np.ndarray, spacing: list) -> tuple | None:
        """:meth:`_raw_body_box` widened to at least one patch once resampled (the ``box`` tiling's crop)."""
        patch = self.configuration_manager.patch_size
        box = self._raw_body_box(image, spacing)
        if box is None:
            return None
        need = [0] * len(patch)
        for axis, (p, target) in enumerate(zip(patch, self.configuration_manager.spacing)):
            raw_axis = self.plans_manager.transpose_forward[axis]   # nnU-Net's preprocessing transposes first
            need[raw_axis] = voxels_for_patch(p, spacing[raw_axis], target)
        return _unless_whole(widened(box, image.shape[1:], need), image.shape[1:])

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


def _unless_whole(box: tuple, shape) -> tuple | None:
    return None if all(b.stop - b.start == n for b, n in zip(box, shape)) else box


def voxels_for_patch(patch: int, spacing: float, target_spacing: float) -> int:
    """The fewest voxels at ``spacing`` that nnU-Net's resampling to ``target_spacing`` turns into at least
    ``patch`` voxels (its new shape is ``round(n * spacing / target_spacing)``); one more would add a tile."""
    n = max(1, int(np.floor((patch - 0.5) * target_spacing / spacing)))
    while int(round(n * spacing / target_spacing)) < patch:
        n += 1
    return n
