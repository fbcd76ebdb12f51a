"""Predicted masks -> one RTSTRUCT a treatment-planning system (TPS) files with the source CT.

The structure set references the CT exactly as the TPS expects: same FrameOfReferenceUID, patient and
study identity, one ContourImageSequence item per contour pointing at the CT slice it lies on, and the CT
series in RTReferencedSeriesSequence. It gets its own new SOP instance and series, ApprovalStatus
UNAPPROVED and ROIGenerationAlgorithm AUTOMATIC, so nobody mistakes it for a physician's approved contours.

Catalog structures keep their TG-263 name, colour and RTROIInterpretedType. A structure predicted empty is
still written, as an ROI without contours: the planner then sees it was predicted (and found nothing)
rather than forgotten. *Proposals* are free-named CTV drafts (e.g. a tumour bed from clips) written
SEMIAUTOMATIC with a ROIDescription starting with ``PROPOSAL`` and a fixed orange, so they stand out as
something to review and edit.

Only axial, head-first grids with identity direction are supported (like the writer's contour placement);
anything else is refused rather than written with contours in the wrong place.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Mapping

import numpy as np
from pydicom.dataset import Dataset

from nnunet_breast import __version__
from nnunet_breast.dicom.common import copy_patient_study, uid
from nnunet_breast.dicom.ct import SliceRef
from nnunet_breast.dicom.ct_reader import CTVolume
from nnunet_breast.dicom.rtstruct import RoiSpec, write_rtstruct
from nnunet_breast.errors import UserError
from nnunet_breast.structures import catalog

PROPOSAL_PREFIX = "PROPOSAL"
PROPOSAL_DESCRIPTION = f"{PROPOSAL_PREFIX}: automatic draft by nnunet_breast, review and edit before use"
PROPOSAL_COLOR = (255, 140, 0)        # orange: distinct from every catalog colour
EMPTY_DESCRIPTION = "AUTOMATIC: predicted empty (no contours)"
MAX_ROI_NAME = 64                     # ROIName is LO


def _identity_direction(ct: CTVolume) -> None:
    d = np.asarray(ct.image.GetDirection(), float).reshape(3, 3)
    if not np.allclose(d, np.eye(3), atol=1e-4):
        raise UserError(f"CT direction {np.round(d, 4).tolist()} is not identity: only axial head-first CTs "
                        f"with identity direction are supported for RTSTRUCT export (contours would be misplaced)")


def _check_mask(name: str, mask, shape: tuple[int, int, int]) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"mask {name!r} has shape {m.shape}, but the CT array is {shape} [z, y, x]; "
                         f"resample the prediction onto the CT grid first")
    if m.dtype != bool and not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"mask {name!r} has dtype {m.dtype}; pass a bool (or integer 0/1) mask, "
                         f"not probabilities")
    return m.astype(bool, copy=False)


def _rois(masks: Mapping[str, np.ndarray], proposals: Mapping[str, np.ndarray],
          shape: tuple[int, int, int]) -> list[RoiSpec]:
    unknown = [n for n in masks if n not in catalog.BY_NAME]
    if unknown:
        raise ValueError(f"not catalog structure names: {unknown}; use canonical names such as "
                         f"{list(catalog.BY_NAME)[:3]} (or pass free-named ROIs as proposals)")
    clash = [n for n in proposals if n in masks]
    if clash:
        raise ValueError(f"ROI names given both as masks and as proposals: {clash}")
    bad = [n for n in proposals if not n.strip() or len(n) > MAX_ROI_NAME or "\\" in n]
    if bad:
        raise ValueError(f"proposal names must be 1-{MAX_ROI_NAME} characters without backslash (DICOM LO): {bad}")
    rois = []
    for name, mask in masks.items():
        s = catalog.BY_NAME[name]
        m = _check_mask(name, mask, shape)
        rois.append(RoiSpec(s.name, m, s.kind, s.color, "AUTOMATIC", "" if m.any() else EMPTY_DESCRIPTION))
    for name, mask in proposals.items():
        rois.append(RoiSpec(name, _check_mask(name, mask, shape), "CTV", PROPOSAL_COLOR, "SEMIAUTOMATIC",
                            PROPOSAL_DESCRIPTION))
    return rois


def export_rtstruct(masks: Mapping[str, np.ndarray], ct: CTVolume, out_file: Path, *,
                    proposals: Mapping[str, np.ndarray] | None = None,
                    label: str = "NNUNET_AUTO", description: str = "nnunet_breast automatic contours") -> Path:
    """Write ``masks`` (catalog name -> bool [z, y, x] on ``ct``'s grid) and ``proposals`` as one RTSTRUCT.

    ROIs come in the given order, masks first. ``label`` becomes StructureSetLabel (at most 16 characters
    are kept). The file appears at ``out_file`` only when complete (temporary sibling, then rename); an
    existing ``out_file`` is replaced. Raises ValueError for unknown names, wrong shapes or a non-identity CT.
    """
    out_file = Path(out_file)
    _identity_direction(ct)
    nx, ny, nz = ct.image.GetSize()
    if len(ct.slice_sop_uids) != nz:
        raise ValueError(f"CT has {nz} slices but {len(ct.slice_sop_uids)} slice SOPInstanceUIDs")
    if any(out_file.resolve() == Path(f).resolve() for f in ct.files):
        raise ValueError(f"{out_file} is one of the source CT slice files; choose another output name")
    rois = _rois(masks, proposals or {}, (nz, ny, nx))

    header = ct.header
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        if not str(header.get(kw, "") or ""):
            raise ValueError(f"source CT header lacks {kw}; the TPS could not attach the structure set to it")
    study = Dataset()
    copy_patient_study(header, study)
    refs = [SliceRef(sop, ct.image.TransformIndexToPhysicalPoint((0, 0, k))[2])
            for k, sop in enumerate(ct.slice_sop_uids)]
    series_uid = uid()
    while series_uid == str(header.SeriesInstanceUID):    # a fresh UID never collides; be explicit anyway
        series_uid = uid()
    extra = {"Manufacturer": "nnunet_breast", "ManufacturerModelName": "nnunet_breast",
             "SoftwareVersions": __version__, "SeriesDescription": "nnunet_breast auto-contours",
             "StructureSetDescription": description, "ApprovalStatus": "UNAPPROVED"}

    out_file.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would survive the rename and hide the file from other users (TPS import).
    tmp = out_file.with_name(f".{out_file.name}.{uuid.uuid4().hex}.tmp")
    try:
        write_rtstruct(rois, refs, ct.image.GetSpacing(), ct.image.GetOrigin(), study, tmp,
                       series_uid=series_uid, ct_series_uid=str(header.SeriesInstanceUID),
                       frame_of_reference_uid=str(header.FrameOfReferenceUID), label=label, extra=extra)
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return out_file
