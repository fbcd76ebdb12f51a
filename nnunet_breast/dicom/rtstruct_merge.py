"""``--add-to``: our ROIs added to a copy of a department's structure set of the same CT.

The copy keeps every ROI of the given structure set as it is (names, numbers, colours, contours, observations,
references) and appends ours with new ROI and observation numbers after the highest in use. It is a new
object: new SOP instance and series UIDs, PredecessorStructureSetSequence pointing at the original,
ApprovalStatus UNAPPROVED (an approval covers what the reviewer saw, not ROIs added since; the review
attributes are removed), and our software listed in ContributingEquipmentSequence as *Modifying Equipment*
(DCM 109103) while the General Equipment module keeps the original's. The given file is only read.

A structure set that references another frame of reference, another CT series, images that are not slices
of this CT, or another patient is refused (one line): its contours would not lie on this CT. ROI names that
clash with existing ones (case-insensitive, as TPSs compare them) are refused, or suffixed ``_AI`` (``_AI2``,
... if that is taken too) when asked.
"""
from __future__ import annotations

import copy
import datetime as _dt
from pathlib import Path
from typing import Iterable

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from nnunet_breast import __version__
from nnunet_breast.dicom.common import RTSTRUCT_STORAGE, new_file_dataset, now, uid
from nnunet_breast.dicom.ct import SliceRef
from nnunet_breast.dicom.rtstruct import RoiSpec, contour_image_items, roi_items
from nnunet_breast.errors import UserError

CLASH_POLICIES = ("refuse", "suffix")
CLASH_SUFFIX = "_AI"
MAX_ROI_NAME = 64
_SKIP = {"SOPInstanceUID", "SOPClassUID", "SpecificCharacterSet"}
_REVIEW = ("ReviewDate", "ReviewTime", "ReviewerName")


def read_structure_set(path: Path) -> Dataset:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError) as e:
        raise UserError(f"--add-to {path}: not a readable DICOM file ({e})") from None
    if getattr(ds, "Modality", None) != "RTSTRUCT":
        raise UserError(f"--add-to {path}: not an RTSTRUCT (Modality {getattr(ds, 'Modality', None)!r})")
    return ds


def referenced_ct(ds: Dataset) -> tuple[set[str], set[str], set[str]]:
    """(frames of reference, CT series, image SOP instances) a structure set references."""
    frames = {str(ds.FrameOfReferenceUID)} if "FrameOfReferenceUID" in ds else set()
    series, images = set(), set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        frames.add(str(frame.FrameOfReferenceUID))
        for study in frame.get("RTReferencedStudySequence", []):
            for s in study.get("RTReferencedSeriesSequence", []):
                series.add(str(s.SeriesInstanceUID))
    frames |= {str(r.ReferencedFrameOfReferenceUID) for r in ds.get("StructureSetROISequence", [])
               if "ReferencedFrameOfReferenceUID" in r}
    for rc in ds.get("ROIContourSequence", []):
        for c in rc.get("ContourSequence", []):
            images |= {str(i.ReferencedSOPInstanceUID) for i in c.get("ContourImageSequence", [])}
    return frames, series, images


def check_same_ct(ds: Dataset, path: Path, header: Dataset, slice_uids: Iterable[str]) -> None:
    """Refuse (UserError) a structure set whose contours do not belong to the CT ``header`` describes."""
    frames, series, images = referenced_ct(ds)
    frame, ct_series = str(header.FrameOfReferenceUID), str(header.SeriesInstanceUID)
    name = Path(path).name
    if frames != {frame}:
        raise UserError(f"--add-to {name}: references frame of reference {', '.join(sorted(frames)) or '(none)'}, "
                        f"not the CT's {frame}; add only to a structure set of this CT")
    if series != {ct_series}:
        raise UserError(f"--add-to {name}: references CT series {', '.join(sorted(series)) or '(none)'}, not the "
                        f"CT's {ct_series}; add only to a structure set of this CT")
    foreign = images - set(slice_uids)
    if foreign:
        raise UserError(f"--add-to {name}: {len(foreign)} contour(s) lie on images that are not slices of this CT "
                        f"series; add only to a structure set of this CT")
    if str(ds.get("PatientID", "")) != str(header.get("PatientID", "")):
        raise UserError(f"--add-to {name}: PatientID {ds.get('PatientID', '')!r} is not the CT's "
                        f"{header.get('PatientID', '')!r}")


def match_structure_sets(paths: Iterable[Path], ct_series_uids: Iterable[str] | None) -> dict[str, Path]:
    """CT series UID -> the ``--add-to`` file drawn on it; refuses files that fit no input CT (``None``: any
    series is fine), or two for one."""
    wanted, found = None if ct_series_uids is None else set(ct_series_uids), {}
    for path in map(Path, paths):
        _, series, _ = referenced_ct(read_structure_set(path))
        if len(series) != 1:
            raise UserError(f"--add-to {path.name}: references {len(series)} CT series "
                            f"({', '.join(sorted(series)) or 'none named'}); it needs exactly one, an input CT's")
        (s,) = series
        if wanted is not None and s not in wanted:
            raise UserError(f"--add-to {path.name}: references CT series {s}, which is not among the input CTs")
        if s in found:
            raise UserError(f"--add-to: {found[s].name} and {path.name} are both for CT series {s}; give one")
        found[s] = path
    return found


def structure_set_for(paths: Iterable[Path], ct_series_uid: str) -> Path | None:
    """The one of ``paths`` drawn on CT series ``ct_series_uid`` (checked by :func:`match_structure_sets`)."""
    return match_structure_sets(paths, None).get(str(ct_series_uid))


def resolve_names(rois: list[RoiSpec], existing: Iterable[str], on_clash: str) -> list[RoiSpec]:
    """``rois`` renamed where they clash with ``existing`` (``suffix``), or a refusal (``refuse``)."""
    if on_clash not in CLASH_POLICIES:
        raise UserError(f"--on-clash must be one of {', '.join(CLASH_POLICIES)}, got {on_clash!r}")
    taken = {n.strip().casefold() for n in existing}
    clashes = [r.name for r in rois if r.name.strip().casefold() in taken]
    if clashes and on_clash == "refuse":
        raise UserError(f"--add-to: the structure set already has ROI(s) named {', '.join(clashes)}; rename them "
                        f"(--name-map) or add ours with a suffix (--on-clash suffix)")
    out = []
    for roi in rois:
        name, k = roi.name, 1
        while name.strip().casefold() in taken:
            tail = CLASH_SUFFIX + (str(k) if k > 1 else "")
            name, k = roi.name[:MAX_ROI_NAME - len(tail)] + tail, k + 1
        taken.add(name.strip().casefold())
        out.append(RoiSpec(name, roi.mask, roi.kind, roi.color, roi.algorithm, roi.description))
    return out


def _contributing_equipment(n_rois: int) -> Dataset:
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = "109103", "DCM", "Modifying Equipment"
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = Sequence([purpose])
    item.Manufacturer = "nnunet_breast"
    item.ManufacturerModelName = "nnunet_breast"
    item.SoftwareVersions = __version__
    item.ContributionDateTime = _dt.datetime.now().strftime("%Y%m%d%H%M%S")
    item.ContributionDescription = f"added {n_rois} automatic ROI(s)"
    return item


def _referenced_series_item(ds: Dataset, frame: str, study_uid: str, ct_series: str) -> Dataset:
    """The RTReferencedSeriesSequence item of ``ct_series`` in ``ds`` (created where the original has none)."""
    if "ReferencedFrameOfReferenceSequence" not in ds:
        ds.ReferencedFrameOfReferenceSequence = Sequence()
    frames = [f for f in ds.ReferencedFrameOfReferenceSequence if str(f.FrameOfReferenceUID) == frame]
    if not frames:
        item = Dataset()
        item.FrameOfReferenceUID = frame
        ds.ReferencedFrameOfReferenceSequence.append(item)
        frames = [item]
    f = frames[0]
    if "RTReferencedStudySequence" not in f:
        f.RTReferencedStudySequence = Sequence()
    for study in f.RTReferencedStudySequence:
        for s in study.get("RTReferencedSeriesSequence", []):
            if str(s.SeriesInstanceUID) == ct_series:
                return s
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = study_uid
    series = Dataset()
    series.SeriesInstanceUID = ct_series
    series.ContourImageSequence = Sequence()
    study.RTReferencedSeriesSequence = Sequence([series])
    f.RTReferencedStudySequence.append(study)
    return series


def add_rois(base_path: Path, rois: list[RoiSpec], ct_refs: list[SliceRef], spacing, origin, header: Dataset, *,
             label: str | None, series_description: str, description: str, on_clash: str,
             direction=None) -> Dataset:
    """A new RTSTRUCT dataset: the structure set at ``base_path`` plus ``rois`` (see the module docstring);
    ``direction``: the CT's (SimpleITK's 9 numbers; None: identity), for the contours' patient coordinates."""
    base = read_structure_set(base_path)
    check_same_ct(base, base_path, header, [r.sop_instance_uid for r in ct_refs])
    frame, ct_series = str(header.FrameOfReferenceUID), str(header.SeriesInstanceUID)
    rois = resolve_names(rois, [str(r.ROIName) for r in base.get("StructureSetROISequence", [])], on_clash)

    ds = new_file_dataset(RTSTRUCT_STORAGE, uid())
    if "SpecificCharacterSet" in base:
        ds.SpecificCharacterSet = base.SpecificCharacterSet
    for elem in base:
        if elem.keyword not in _SKIP:
            ds.add(copy.deepcopy(elem))
    series_uid = uid()
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = series_description
    if label:
        ds.StructureSetLabel = label
    ds.StructureSetDescription = description
    ds.StructureSetDate, ds.StructureSetTime = now()
    ds.ApprovalStatus = "UNAPPROVED"
    for kw in _REVIEW:
        if kw in ds:
            delattr(ds, kw)
    predecessor = Dataset()
    predecessor.ReferencedSOPClassUID = RTSTRUCT_STORAGE
    predecessor.ReferencedSOPInstanceUID = str(base.SOPInstanceUID)
    ds.PredecessorStructureSetSequence = Sequence([predecessor])
    if "OperatorsName" not in ds:
        ds.OperatorsName = ""
    if "FrameOfReferenceUID" not in ds:
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = str(header.get("PositionReferenceIndicator", "") or "")
    if "ContributingEquipmentSequence" not in ds:
        ds.ContributingEquipmentSequence = Sequence()
    ds.ContributingEquipmentSequence.append(_contributing_equipment(len(rois)))

    series = _referenced_series_item(ds, frame, str(header.StudyInstanceUID), ct_series)
    listed = {str(i.ReferencedSOPInstanceUID) for i in series.get("ContourImageSequence", [])}
    if "ContourImageSequence" not in series:
        series.ContourImageSequence = Sequence()
    for item in contour_image_items([r for r in ct_refs if r.sop_instance_uid not in listed]):
        series.ContourImageSequence.append(item)

    for kw in ("StructureSetROISequence", "ROIContourSequence", "RTROIObservationsSequence"):
        if kw not in ds:
            setattr(ds, kw, Sequence())
    first = 1 + max((int(r.ROINumber) for r in ds.StructureSetROISequence), default=0)
    first_obs = 1 + max((int(o.ObservationNumber) for o in ds.RTROIObservationsSequence), default=0)
    ssrs, contours, observations = roi_items(rois, ct_refs, spacing, origin, frame, first_number=first,
                                             direction=direction)
    for k, obs in enumerate(observations):
        obs.ObservationNumber = first_obs + k
    ds.StructureSetROISequence.extend(ssrs)
    ds.ROIContourSequence.extend(contours)
    ds.RTROIObservationsSequence.extend(observations)
    return ds
