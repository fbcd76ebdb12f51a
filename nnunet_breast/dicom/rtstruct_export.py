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

Any axial CT is supported, in any patient position (head- or feet-first, supine, prone, decubitus) and any
storage order: contour points are patient coordinates (mm, LPS) through the CT's origin, spacing and direction
(:func:`nnunet_breast.dicom.rtstruct.patient_points`). A sagittal, coronal or oblique grid is refused rather
than written with contours off the planes a TPS expects. Each contour's area is that of the voxels it encloses
(:func:`nnunet_breast.structures.contours.mask_to_polygons`), so the TPS's volume is the mask's.

What a department configures: the StructureSetLabel (``label``, DICOM SH: at most 16 characters) and the
SeriesDescription its TPS lists; a *name map* (catalog name -> the institution's ROI name, JSON, see
:func:`load_name_map`) applied as the file is written, so masks, tables and SEG keep TG-263 names; and
``add_to``: our ROIs added to a copy of the department's own structure set of the same CT
(:mod:`nnunet_breast.dicom.rtstruct_merge`), never to the file itself.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
from pydicom.dataset import Dataset

from nnunet_breast import __version__
from nnunet_breast.dicom.common import copy_patient_study, uid
from nnunet_breast.dicom.ct import SliceRef
from nnunet_breast.dicom.ct_reader import CTVolume
from nnunet_breast.dicom.rtstruct import RoiSpec, write_rtstruct
from nnunet_breast.dicom.rtstruct_merge import CLASH_POLICIES, add_rois
from nnunet_breast.errors import UserError
from nnunet_breast.structures import catalog
from nnunet_breast.volumes.orientation import axial_problem

PROPOSAL_PREFIX = "PROPOSAL"
PROPOSAL_DESCRIPTION = f"{PROPOSAL_PREFIX}: automatic draft by nnunet_breast, review and edit before use"
PROPOSAL_COLOR = (255, 140, 0)        # orange: distinct from every catalog colour
EMPTY_DESCRIPTION = "AUTOMATIC: predicted empty (no contours)"
MAX_ROI_NAME = 64                     # ROIName is LO
DEFAULT_LABEL = "NNUNET_AUTO"
DEFAULT_SERIES_DESCRIPTION = "nnunet_breast auto-contours"
DEFAULT_DESCRIPTION = "nnunet_breast automatic contours"


def _check_text(value: str, what: str, limit: int) -> str:
    """A DICOM SH/LO value: 1..``limit`` printable Latin-1 characters, no backslash (UserError otherwise)."""
    if not isinstance(value, str) or not value.strip() or len(value) > limit or "\\" in value \
            or not value.isprintable():
        raise UserError(f"{what} must be 1-{limit} printable characters without backslash, got {value!r}")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise UserError(f"{what} {value!r} has characters outside Latin-1 (ISO_IR 100)") from None
    return value


def check_label(label: str) -> str:
    """A StructureSetLabel (SH): 1-16 characters; refused (UserError) rather than cut."""
    return _check_text(label, "the structure set label", 16)


def check_series_description(text: str) -> str:
    return _check_text(text, "the series description", 64)


def check_name_map(mapping, source: str = "the name map") -> dict[str, str]:
    """Catalog name -> institution ROI name, validated: catalog names only, valid distinct ROI names."""
    if not isinstance(mapping, dict):
        raise UserError(f"{source}: expected a JSON object {{catalog name: ROI name}}, got {type(mapping).__name__}")
    for key, value in mapping.items():
        if key not in catalog.BY_NAME:
            hint = catalog.match_name(str(key))
            raise UserError(f"{source}: {key!r} is not a catalog structure name"
                            + (f" (did you mean {hint}?)" if hint else f"; known: {', '.join(catalog.BY_NAME)}"))
        _check_text(value, f"{source}: the ROI name for {key}", MAX_ROI_NAME)
    final = {n: mapping.get(n, n) for n in catalog.BY_NAME}
    seen: dict[str, str] = {}
    for name, roi in final.items():
        other = seen.setdefault(roi.strip().casefold(), name)
        if other != name:
            raise UserError(f"{source}: {other} and {name} would both be written as ROI {roi!r}")
    return dict(mapping)


def load_name_map(path: Path) -> dict[str, str]:
    """``{"Heart": "COEUR", "CTVn_L1_L": "CTV_Ax1_G", ...}`` from a JSON file; see :func:`check_name_map`."""
    try:
        mapping = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--name-map {path}: not a readable JSON file ({e})") from None
    return check_name_map(mapping, f"--name-map {Path(path).name}")


@dataclass(frozen=True)
class RTStructSettings:
    """What a department configures for the RTSTRUCT (``nnunet-breast predict`` options of the same names)."""
    label: str | None = None                          # --structure-set-label
    series_description: str = DEFAULT_SERIES_DESCRIPTION
    name_map: Mapping[str, str] = field(default_factory=dict)   # --name-map (already validated)
    add_to: tuple[Path, ...] = ()                     # --add-to: the department's structure sets
    on_clash: str = "refuse"                          # --on-clash

    def __post_init__(self):
        if self.label is not None:
            check_label(self.label)
        check_series_description(self.series_description)
        check_name_map(dict(self.name_map))
        if self.on_clash not in CLASH_POLICIES:
            raise UserError(f"--on-clash must be one of {', '.join(CLASH_POLICIES)}, got {self.on_clash!r}")


def _axial(ct: CTVolume) -> None:
    problem = axial_problem(ct.image.GetDirection())
    if problem:
        raise UserError(f"RTSTRUCT export: {problem}")


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
          shape: tuple[int, int, int], name_map: Mapping[str, str]) -> list[RoiSpec]:
    unknown = [n for n in masks if n not in catalog.BY_NAME]
    if unknown:
        raise ValueError(f"not catalog structure names: {unknown}; use canonical names such as "
                         f"{list(catalog.BY_NAME)[:3]} (or pass free-named ROIs as proposals)")
    clash = [n for n in proposals if n in masks or n.casefold() in {name_map.get(m, m).casefold() for m in masks}]
    if clash:
        raise ValueError(f"ROI names given both as masks and as proposals: {clash}")
    bad = [n for n in proposals if not n.strip() or len(n) > MAX_ROI_NAME or "\\" in n]
    if bad:
        raise ValueError(f"proposal names must be 1-{MAX_ROI_NAME} characters without backslash (DICOM LO): {bad}")
    rois = []
    for name, mask in masks.items():
        s = catalog.BY_NAME[name]
        m = _check_mask(name, mask, shape)
        rois.append(RoiSpec(name_map.get(s.name, s.name), m, s.kind, s.color, "AUTOMATIC",
                            "" if m.any() else EMPTY_DESCRIPTION))
    for name, mask in proposals.items():
        rois.append(RoiSpec(name, _check_mask(name, mask, shape), "CTV", PROPOSAL_COLOR, "SEMIAUTOMATIC",
                            PROPOSAL_DESCRIPTION))
    return rois


def export_rtstruct(masks: Mapping[str, np.ndarray], ct: CTVolume, out_file: Path, *,
                    proposals: Mapping[str, np.ndarray] | None = None, label: str | None = None,
                    description: str = DEFAULT_DESCRIPTION, series_description: str = DEFAULT_SERIES_DESCRIPTION,
                    name_map: Mapping[str, str] | None = None, add_to: Path | None = None,
                    on_clash: str = "refuse") -> Path:
    """Write ``masks`` (catalog name -> bool [z, y, x] on ``ct``'s grid) and ``proposals`` as one RTSTRUCT.

    ROIs come in the given order, masks first, named through ``name_map`` (:func:`check_name_map`). ``label``
    becomes StructureSetLabel (default ``NNUNET_AUTO``; with ``add_to`` the original's is kept unless given).
    ``add_to``: write a copy of that structure set of this CT with our ROIs added (``on_clash``: ``refuse``
    or ``suffix`` for names it already has; :mod:`nnunet_breast.dicom.rtstruct_merge`). The file appears at
    ``out_file`` only when complete (temporary sibling, then rename); an existing ``out_file`` is replaced.
    Raises ValueError for unknown names or wrong shapes; UserError for a non-axial CT or bad settings.
    """
    out_file = Path(out_file)
    _axial(ct)
    nx, ny, nz = ct.image.GetSize()
    if len(ct.slice_sop_uids) != nz:
        raise ValueError(f"CT has {nz} slices but {len(ct.slice_sop_uids)} slice SOPInstanceUIDs")
    if any(out_file.resolve() == Path(f).resolve() for f in ct.files):
        raise ValueError(f"{out_file} is one of the source CT slice files; choose another output name")
    if add_to is not None and Path(add_to).resolve() == out_file.resolve():
        raise UserError(f"--add-to {add_to} is the output file; the given structure set is never overwritten")
    if on_clash not in CLASH_POLICIES:
        raise UserError(f"--on-clash must be one of {', '.join(CLASH_POLICIES)}, got {on_clash!r}")
    label = check_label(label) if label is not None else None
    check_series_description(series_description)
    rois = _rois(masks, proposals or {}, (nz, ny, nx), check_name_map(dict(name_map or {})))

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
             "SoftwareVersions": __version__, "SeriesDescription": series_description,
             "StructureSetDescription": description, "ApprovalStatus": "UNAPPROVED"}
    merged = None
    if add_to is not None:
        merged = add_rois(Path(add_to), rois, refs, ct.image.GetSpacing(), ct.image.GetOrigin(), header,
                          label=label, series_description=series_description, description=description,
                          on_clash=on_clash, direction=ct.image.GetDirection())

    out_file.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would survive the rename and hide the file from other users (TPS import).
    tmp = out_file.with_name(f".{out_file.name}.{uuid.uuid4().hex}.tmp")
    try:
        if merged is not None:
            merged.save_as(tmp, enforce_file_format=True)
        else:
            write_rtstruct(rois, refs, ct.image.GetSpacing(), ct.image.GetOrigin(), study, tmp,
                           series_uid=series_uid, ct_series_uid=str(header.SeriesInstanceUID),
                           frame_of_reference_uid=str(header.FrameOfReferenceUID), label=label or DEFAULT_LABEL,
                           extra=extra, position_reference_indicator=str(header.get("PositionReferenceIndicator",
                                                                                    "") or ""),
                           direction=ct.image.GetDirection())
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return out_file
