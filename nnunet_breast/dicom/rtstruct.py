"""RTSTRUCT: structure masks on a CT grid -> CLOSED_PLANAR contours referencing the CT slices."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from nnunet_breast.dicom.common import (CT_IMAGE_STORAGE, RTSTRUCT_STORAGE, ds_str, new_rt_dataset, now,
                                        read_modality, uid)
from nnunet_breast.dicom.ct import SliceRef
from nnunet_breast.structures.contours import mask_to_polygons


@dataclass
class RoiSpec:
    name: str                        # ROIName as written
    mask: np.ndarray                 # bool [z, y, x] on the CT grid
    kind: str = "ORGAN"              # RTROIInterpretedType
    color: tuple[int, int, int] = (255, 0, 0)
    algorithm: str = "MANUAL"        # ROIGenerationAlgorithm: MANUAL, SEMIAUTOMATIC, AUTOMATIC
    description: str = ""


@contextmanager
def _trusted_decimal_strings():
    """Skip pydicom's per-value regex check of DS values while contours are built: ``ds_str`` already
    guarantees valid strings of <= 16 characters, and a structure set holds millions of them."""
    old = pydicom_config.settings.reading_validation_mode
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    try:
        yield
    finally:
        pydicom_config.settings.reading_validation_mode = old


def patient_points(poly_xy: np.ndarray, k: int, spacing, origin, direction=None) -> np.ndarray:
    """Pixel-index points ``(x=col, y=row)`` on slice ``k`` -> patient coordinates (N, 3) in mm (DICOM LPS):
    ``origin + D @ (index * spacing)`` with the grid's direction ``D`` (SimpleITK's 9 numbers; None: identity)."""
    d = np.eye(3) if direction is None else np.asarray(direction, float).reshape(3, 3)
    steps = np.column_stack([poly_xy[:, 0] * spacing[0], poly_xy[:, 1] * spacing[1],
                             np.full(len(poly_xy), k * spacing[2])])
    return np.asarray(origin, float) + steps @ d.T


def _contour_item(poly_xy: np.ndarray, spacing, origin, ref: SliceRef, k: int, direction=None) -> Dataset:
    pts = patient_points(poly_xy, k, spacing, origin, direction)
    item = Dataset()
    img = Dataset()
    img.ReferencedSOPClassUID = CT_IMAGE_STORAGE
    img.ReferencedSOPInstanceUID = ref.sop_instance_uid
    item.ContourImageSequence = Sequence([img])
    item.ContourGeometricType = "CLOSED_PLANAR"
    item.NumberOfContourPoints = len(pts)
    item.ContourData = [ds_str(v) for v in pts.ravel()]
    return item


def contour_image_items(ct_refs: list[SliceRef]) -> Sequence:
    """One ContourImageSequence item per CT slice (the RTReferencedSeriesSequence's list)."""
    items = Sequence()
    for ref in ct_refs:
        img = Dataset()
        img.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        img.ReferencedSOPInstanceUID = ref.sop_instance_uid
        items.append(img)
    return items


def roi_items(rois: list[RoiSpec], ct_refs: list[SliceRef], spacing, origin, frame_of_reference_uid: str, *,
              first_number: int = 1, simplify_tolerance: float | None = None, direction=None
              ) -> tuple[list[Dataset], list[Dataset], list[Dataset]]:
    """(StructureSetROI, ROIContour, RTROIObservations) items of ``rois``, numbered from ``first_number``
    (ROINumber and ObservationNumber alike)."""
    ssrs, contours, observations = [], [], []
    for number, roi in enumerate(rois, start=first_number):
        ssr = Dataset()
        ssr.ROINumber = number
        ssr.ReferencedFrameOfReferenceUID = frame_of_reference_uid
        ssr.ROIName = roi.name
        ssr.ROIGenerationAlgorithm = roi.algorithm
        if roi.description:
            ssr.ROIDescription = roi.description
        ssrs.append(ssr)

        rc = Dataset()
        rc.ROIDisplayColor = list(roi.color)
        rc.ReferencedROINumber = number
        items = Sequence()
        with _trusted_decimal_strings():
            for k in np.flatnonzero(roi.mask.any(axis=(1, 2))):
                for poly in mask_to_polygons(roi.mask[k], simplify_tolerance=simplify_tolerance):
                    items.append(_contour_item(poly, spacing, origin, ct_refs[k], k, direction))
        if len(items):              # an empty ROI has no ContourSequence: the standard allows none, not 0 items
            rc.ContourSequence = items
        contours.append(rc)

        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = roi.kind
        obs.ROIInterpreter = ""      # type 2: no person interpreted an automatic or synthetic ROI
        observations.append(obs)
    return ssrs, contours, observations


def write_rtstruct(rois: list[RoiSpec], ct_refs: list[SliceRef], spacing, origin, study: Dataset, out_file: Path,
                   *, series_uid: str, ct_series_uid: str, frame_of_reference_uid: str, label: str = "RTSTRUCT",
                   entropy=(), simplify_tolerance: float | None = None, extra: dict | None = None,
                   date_time: tuple[str, str] | None = None, position_reference_indicator: str = "",
                   direction=None) -> Path:
    """Write one RTSTRUCT with one ROI per ``RoiSpec``; contours lie exactly on the CT planes.

    Holes and islands come out as separate contours on a plane (readers combine them with the
    even-odd rule); each contour's area is the area of the voxels it encloses (``mask_to_polygons``).
    ``spacing``/``origin``/``direction`` are the CT grid's (x, y, z mm; direction None: identity), array index k
    = ``ct_refs[k]``; points are patient coordinates through the direction, for any axial grid. The Frame of
    Reference module repeats the CT's (``position_reference_indicator`` as the CT has it, empty when it has none);
    OperatorsName is empty unless ``extra`` names the person.
    """
    sop = uid(*entropy, "rtstruct") if entropy else uid()
    ds = new_rt_dataset(RTSTRUCT_STORAGE, sop, "RTSTRUCT", study, series_uid, 3, frame_of_reference_uid,
                        position_reference_indicator)
    date, time = date_time or now()
    ds.StructureSetLabel = label[:16]
    ds.StructureSetName = label[:64]
    ds.StructureSetDate, ds.StructureSetTime = date, time

    series = Dataset()
    series.SeriesInstanceUID = ct_series_uid
    series.ContourImageSequence = contour_image_items(ct_refs)
    rt_study = Dataset()
    rt_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired, customary)
    rt_study.ReferencedSOPInstanceUID = study.StudyInstanceUID
    rt_study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_of_reference_uid
    frame.RTReferencedStudySequence = Sequence([rt_study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])

    ssrs, contours, observations = roi_items(rois, ct_refs, spacing, origin, frame_of_reference_uid,
                                             simplify_tolerance=simplify_tolerance, direction=direction)
    ds.StructureSetROISequence = Sequence(ssrs)
    ds.ROIContourSequence = Sequence(contours)
    ds.RTROIObservationsSequence = Sequence(observations)
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out_file, enforce_file_format=True)
    return out_file


@dataclass
class RoiContours:
    """One ROI of an RTSTRUCT as written: its contours in patient coordinates (mm)."""
    number: int
    name: str
    kind: str | None                              # RTROIInterpretedType, if the file has one
    color: tuple[int, int, int] | None
    contours: list[tuple[str, np.ndarray]]        # (ContourGeometricType, points (N, 3) in mm)


def read_rtstruct(path: Path) -> tuple[Dataset, list[RoiContours]]:
    """All ROIs of an RTSTRUCT, including ROIs without contours (an empty ROI is data, not an error)."""
    ds = read_modality(path, "RTSTRUCT")
    kinds = {int(o.ReferencedROINumber): str(getattr(o, "RTROIInterpretedType", "") or "") or None
             for o in getattr(ds, "RTROIObservationsSequence", [])}
    contours: dict[int, Dataset] = {int(rc.ReferencedROINumber): rc for rc in getattr(ds, "ROIContourSequence", [])}
    rois = []
    for r in getattr(ds, "StructureSetROISequence", []):
        number = int(r.ROINumber)
        rc = contours.get(number)
        items = []
        color = None
        if rc is not None:
            color = tuple(int(c) for c in rc.ROIDisplayColor) if "ROIDisplayColor" in rc else None
            for c in getattr(rc, "ContourSequence", []):
                pts = np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
                items.append((str(c.ContourGeometricType), pts))
        rois.append(RoiContours(number, str(r.ROIName), kinds.get(number), color, items))
    return ds, rois
