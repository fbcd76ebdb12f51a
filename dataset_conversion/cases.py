"""One source case (DICOM CT + RTSTRUCT, or NIfTI image + masks) -> CT image, structure masks, metadata.

Independent of nnU-Net: :mod:`nnunet_breast.dataset_conversion.dataset` turns these into a raw dataset.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_breast.dataset_conversion.rasterise import rasterise_roi
from nnunet_breast.dicom.ct_reader import read_ct_series
from nnunet_breast.dicom.rtstruct import read_rtstruct
from nnunet_breast.errors import UserError
from nnunet_breast.structures import catalog
from nnunet_breast.volumes.orientation import patient_x


class CaseError(UserError):
    """This case cannot be converted; the message says why (the run goes on with the other cases)."""


@dataclass
class SourceCase:
    """Where one case comes from; ``kind`` is "dicom" or "nifti"."""
    kind: str
    key: str                                  # stable identity (CT SeriesInstanceUID or NIfTI folder name)
    patient_id: str
    ct_files: list[Path] = field(default_factory=list)
    rtstruct: Path | None = None
    image: Path | None = None                 # NIfTI input
    masks: dict[str, Path] = field(default_factory=dict)   # NIfTI input: ROI name as written -> file
    rtdose: list[Path] = field(default_factory=list)        # DICOM input: RTDOSE of the same frame

    @property
    def case_id(self) -> str:
        """nnU-Net case identifier, stable across reruns: patient id + short hash of the source series."""
        pid = re.sub(r"[^A-Za-z0-9-]+", "-", self.patient_id).strip("-") or "case"
        return f"{pid}_{hashlib.sha1(self.key.encode()).hexdigest()[:6]}"


@dataclass
class LoadedCase:
    source: SourceCase
    image: sitk.Image                         # HU, float32
    masks: dict[str, np.ndarray]              # canonical name -> bool [z, y, x] (only masks with a voxel)
    names_seen: dict[str, str | None]         # ROI name as written -> canonical name (None: unknown)
    empty_rois: list[str]                     # ROIs present but without any voxel
    meta: dict
    # wanted structures this case annotates (canonical names): an ROI with at least one contour, or a NIfTI
    # mask file, even if no voxel lies inside it (then it is annotated as absent); an ROI declared without any
    # contour (an empty placeholder of a TPS template) is not an annotation
    annotated: list[str] = field(default_factory=list)


def load_case(src: SourceCase, mapping: dict[str, str] | None, wanted: tuple[str, ...],
              point_radius_mm: float = 2.0) -> LoadedCase:
    """Read one case and rasterise the wanted catalog structures; unknown ROI names are reported."""
    if src.kind == "dicom":
        return _load_dicom(src, mapping, wanted, point_radius_mm)
    return _load_nifti(src, mapping, wanted)


def _match(names: list[str], mapping, wanted) -> tuple[dict[str, str | None], dict[str, str]]:
    seen = {n: catalog.match_name(n, mapping) for n in names}
    chosen: dict[str, str] = {}
    for written, canon in seen.items():
        if canon is None or canon not in wanted:
            continue
        if canon in chosen:
            raise CaseError(f"ROIs {chosen[canon]!r} and {written!r} both mean {canon}; "
                            f"rename one or map it explicitly with --mapping")
        chosen[canon] = written
    return seen, chosen


def _load_dicom(src: SourceCase, mapping, wanted, point_radius_mm) -> LoadedCase:
    try:
        ct = read_ct_series(src.ct_files)
    except ValueError as e:
        raise CaseError(str(e)) from None
    header, rois = read_rtstruct(src.rtstruct)
    frames = {str(f.FrameOfReferenceUID) for f in getattr(header, "ReferencedFrameOfReferenceSequence", [])}
    if frames and str(ct.header.FrameOfReferenceUID) not in frames:
        raise CaseError(f"{src.rtstruct.name}: frame of reference {sorted(frames)} is not the CT's "
                        f"({ct.header.FrameOfReferenceUID})")
    seen, chosen = _match([r.name for r in rois], mapping, wanted)
    by_name = {r.name: r for r in rois}
    masks, empty, annotated = {}, [], []
    for canon, written in chosen.items():
        try:
            mask = rasterise_roi(by_name[written], ct.image, point_radius_mm=point_radius_mm)
        except ValueError as e:
            raise CaseError(f"{src.rtstruct.name}: {e}") from None
        if by_name[written].contours:
            annotated.append(canon)
        if mask.any():
            masks[canon] = mask
        else:
            empty.append(written)
    h = ct.header
    meta = {
        "patient_id": str(getattr(h, "PatientID", "")),
        "study_uid": str(getattr(h, "StudyInstanceUID", "")),
        "series_uid": str(getattr(h, "SeriesInstanceUID", "")),
        "contrast_agent": str(getattr(h, "ContrastBolusAgent", "") or ""),
        "site": str(getattr(h, "InstitutionName", "") or ""),
        "rtstruct": src.rtstruct.name,
        "dose_side": _dose_side(src.rtdose, ct.image),
    }
    return LoadedCase(src, ct.image, masks, seen, empty, meta, _in_order(annotated, wanted))


def _in_order(names, wanted) -> list[str]:
    names = set(names)
    return [n for n in wanted if n in names]


def _dose_side(rtdose: list[Path], ct: sitk.Image) -> str:
    """Side of the high-dose region (>= 80% of the maximum) relative to the body's midline, if a dose exists."""
    from nnunet_breast.dicom.rtdose import read_rtdose

    if not rtdose:
        return "unknown"
    dose, _ = read_rtdose(rtdose[0])
    arr = sitk.GetArrayViewFromImage(dose)
    hot = np.argwhere(arr >= 0.8 * arr.max()) if arr.max() > 0 else np.empty((0, 3))
    tissue = np.argwhere(sitk.GetArrayViewFromImage(ct) > -500)
    if not len(hot) or not len(tissue):
        return "unknown"
    x_hot = dose.TransformContinuousIndexToPhysicalPoint(hot.mean(0)[::-1].tolist())[0]
    x_mid = ct.TransformContinuousIndexToPhysicalPoint(tissue.mean(0)[::-1].tolist())[0]
    return "L" if x_hot > x_mid else "R"


def _load_nifti(src: SourceCase, mapping, wanted) -> LoadedCase:
    image = sitk.Cast(sitk.ReadImage(str(src.image)), sitk.sitkFloat32)
    seen, chosen = _match(list(src.masks), mapping, wanted)
    masks, empty = {}, []
    for canon, written in chosen.items():
        m = sitk.ReadImage(str(src.masks[written]))
        if m.GetSize() != image.GetSize() or not np.allclose(m.GetSpacing(), image.GetSpacing(), atol=1e-4) \
                or not np.allclose(m.GetOrigin(), image.GetOrigin(), atol=1e-3) \
                or not np.allclose(m.GetDirection(), image.GetDirection(), atol=1e-4):
            raise CaseError(f"{src.masks[written]}: mask geometry differs from the image {src.image}")
        arr = sitk.GetArrayFromImage(m) > 0
        if arr.any():
            masks[canon] = arr
        else:
            empty.append(written)
    meta = {"patient_id": src.patient_id, "study_uid": "", "series_uid": "", "contrast_agent": "", "site": "",
            "rtstruct": "", "dose_side": "unknown"}
    return LoadedCase(src, image, masks, seen, empty, meta, _in_order(chosen, wanted))


def nifti_sources(root: Path) -> list[SourceCase]:
    """NIfTI input layout: ``root/<case>/image.nii.gz`` and ``root/<case>/masks/<ROI name>.nii.gz``."""
    out = []
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        image = next((case_dir / n for n in ("image.nii.gz", "image.nii", "ct.nii.gz", "CT.nii.gz")
                      if (case_dir / n).is_file()), None)
        if image is None:
            continue
        masks = {}
        for f in sorted((case_dir / "masks").glob("*.nii*")):
            masks[f.name.split(".nii")[0]] = f
        out.append(SourceCase("nifti", case_dir.name, case_dir.name, image=image, masks=masks))
    return out


def treated_side(masks: dict[str, np.ndarray], image: sitk.Image, cohort: str, body: np.ndarray | None = None,
                 dose_side: str = "unknown") -> str:
    """L or R: the clips' side of the body midline, the only breast CTV's side, or the dose's; else unknown.

    Sides are patient coordinates (DICOM LPS: +x is the patient's left), through ``image``'s direction, so any
    patient position and storage order gives the same answer."""
    if cohort == "clips" and "Clips" in masks and body is not None and body.any():
        x_clips = patient_x(image, np.argwhere(masks["Clips"]).mean(axis=0))
        x_body = patient_x(image, np.argwhere(body).mean(axis=0))
        return "L" if x_clips > x_body else "R"
    sides = [s for s in "LR" if f"CTVp_breast_{s}" in masks]
    return sides[0] if len(sides) == 1 else dose_side

