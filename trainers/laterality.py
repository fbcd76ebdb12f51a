"""No mirroring across the patient's left-right axis when a dataset has structures with a side.

nnU-Net mirrors along every spatial axis in training and at prediction. A mirrored left breast looks like a
right breast but is still labelled ``CTVp_breast_L``: the network is taught that the two sides are the same
structure (nnU-Net's maintainers advise against mirroring lateral labels; TotalSegmentator trains without it).
The left-right array axis is read from the data, never assumed: each preprocessed case's SimpleITK direction
(nnU-Net keeps it in the case's properties) says which image axis runs along the patient's x (right -> left),
and nnU-Net's ``transpose_forward`` says where that axis went. The other axes stay mirrored. Rotations are
limited to +-30 degrees as well: nnU-Net rotates anisotropic patches in-plane by up to 180 degrees, and a
180-degree turn puts the left breast where the right one lies, as a mirror does.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_breast.structures.catalog import BY_NAME

#: the largest rotation (radians) for datasets with lateral structures: nnU-Net's own range for 3D patches
MAX_ROTATION = np.deg2rad(30.0)
#: an image axis whose direction has at least this |x| component counts as left-right (cos 72 deg: oblique
#: axes that mix in the patient's side are excluded as well)
LEFT_RIGHT_COSINE = 0.3


def lateral_structures(dataset_json: dict) -> list[str]:
    """The dataset's structures (labels) that have a side in the catalog."""
    return [name for name in dataset_json.get("labels", {})
            if name in BY_NAME and BY_NAME[name].side in ("L", "R")]


def left_right_axes(directions: Sequence[Sequence[float]], transpose_forward: Sequence[int]) -> set[int]:
    """Axes of nnU-Net's preprocessed arrays that run along the patient's left-right axis in any case.

    ``directions``: SimpleITK direction matrices (9 numbers, row-major; column j = image axis j in LPS).
    SimpleITK axis j is numpy axis ``2 - j``; nnU-Net's preprocessed axis k is numpy axis
    ``transpose_forward[k]``.
    """
    axes = set()
    for d in directions:
        x_components = np.abs(np.asarray(d, float).reshape(3, 3)[0])
        for j in np.flatnonzero(x_components >= LEFT_RIGHT_COSINE):
            axes.add(list(transpose_forward).index(2 - int(j)))
    return axes


def case_directions(preprocessed_folder: Path) -> list[tuple[float, ...]]:
    """The SimpleITK direction of every preprocessed case (nnU-Net's ``<case>.pkl`` properties)."""
    out = []
    for pkl in sorted(Path(preprocessed_folder).glob("*.pkl")):
        with open(pkl, "rb") as f:
            props = pickle.load(f)
        direction = props.get("sitk_stuff", {}).get("direction")
        if direction is None:
            raise ValueError(f"{pkl}: no SimpleITK direction in nnU-Net's case properties (read with "
                             "SimpleITKIO?); cannot tell the patient's left-right axis")
        out.append(tuple(float(v) for v in direction))
    if not out:
        raise ValueError(f"no preprocessed cases in {preprocessed_folder}; cannot tell the left-right axis")
    return out


class NoLeftRightMirroring:
    """Trainer mixin (before nnU-Net's trainer in the bases): mirror_axes without the patient's left-right axis,
    in training augmentation and test-time mirroring, when the dataset has lateral structures."""

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if mirror_axes is None or not lateral_structures(self.dataset_json):
            return rotation, dummy_2d, initial_patch, mirror_axes
        lr = left_right_axes(case_directions(self.preprocessed_dataset_folder), self.plans_manager.transpose_forward)
        kept = tuple(a for a in mirror_axes if a not in lr) or None
        self.print_to_log_file(f"lateral structures: no mirroring along axes {sorted(lr)} (patient left-right); "
                               f"mirror axes {kept}; rotation within +-30 degrees")
        self.inference_allowed_mirroring_axes = kept
        rotation = tuple(float(np.clip(r, -MAX_ROTATION, MAX_ROTATION)) for r in rotation)
        return rotation, dummy_2d, initial_patch, kept
