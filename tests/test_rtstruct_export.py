"""RTSTRUCT export of predicted masks: round trip through our own importer, references, TPS conventions."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest

from nnunet_breast.dataset_conversion.rasterise import rasterise_roi
from nnunet_breast.dicom import rtstruct_export
from nnunet_breast.dicom.common import RTSTRUCT_STORAGE
from nnunet_breast.dicom.rtstruct import read_rtstruct
from nnunet_breast.dicom.rtstruct_export import PROPOSAL_PREFIX, export_rtstruct
from nnunet_breast.structures import catalog

PROPOSAL = "CTV_TumorBed_proposal"


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def source(breast_patient):
    """One synthetic breast patient as a TPS export, its CT read back, and masks to export."""
    patient, ct, masks = breast_patient()
    assert next(iter(masks.values())).shape == ct.image.GetSize()[::-1]
    clips = np.zeros_like(masks["Heart"])
    heart = np.argwhere(masks["Heart"])
    for zc, yc, xc in heart[:: max(1, len(heart) // 3)][:3]:       # three small clip blobs
        clips[zc, yc:yc + 2, xc:xc + 3] = True
    masks["Clips"] = clips
    masks["Glnd_Thyroid"] = np.zeros_like(clips)                     # predicted empty
    proposal = np.zeros_like(clips)
    breast = np.argwhere(masks["CTVp_breast_L"]).mean(axis=0).round().astype(int)
    proposal[breast[0] - 1:breast[0] + 2, breast[1] - 3:breast[1] + 3, breast[2] - 4:breast[2] + 4] = True
    return patient, ct, masks, {PROPOSAL: proposal}


@pytest.fixture(scope="module")
def exported(source, tmp_path_factory):
    patient, ct, masks, proposals = source
    before = _hashes(patient)
    out = export_rtstruct(masks, ct, tmp_path_factory.mktemp("rs_out") / "sub" / "RS.auto.dcm", proposals=proposals)
    assert _hashes(patient) == before, "export touched the source CT folder"
    ds, rois = read_rtstruct(out)
    return out, ds, {r.name: r for r in rois}


def test_round_trip_masks(source, exported):
    _, ct, masks, proposals = source
    _, _, rois = exported
    for name, mask in {**masks, **proposals}.items():
        back = rasterise_roi(rois[name], ct.image)
        if mask.any():
            dice = 2 * np.sum(back & mask) / (back.sum() + mask.sum())
            assert dice >= 0.98, f"{name}: Dice {dice:.4f}"
            assert np.array_equal(back, mask), f"{name}: {np.sum(back ^ mask)} voxels differ"
        else:
            assert not back.any()


def test_contour_areas_are_the_voxel_areas(source, exported):
    """A TPS computes volumes from contour areas: on every slice the even-odd area of an ROI's contours is the
    area of its voxels (within 1 % for >= 20 voxels, a voxel for smaller ones, every region kept; here to the
    file's 0.001 mm rounding), so structure volumes in the TPS are the masks' (1-2 cc nodal CTVs included)."""
    from shapely.geometry import Polygon

    _, ct, masks, proposals = source
    _, _, rois = exported
    sx, sy, _ = ct.image.GetSpacing()
    for name, mask in {**masks, **proposals}.items():
        planes: dict[float, list] = {}
        for _, pts in rois[name].contours:
            planes.setdefault(round(float(pts[0, 2]), 3), []).append(Polygon(pts[:, :2]))
        z_of = {round(ct.image.TransformIndexToPhysicalPoint((0, 0, k))[2], 3): k for k in range(mask.shape[0])}
        assert sorted(z_of[z] for z in planes) == list(np.flatnonzero(mask.any(axis=(1, 2)))), name
        for z, polys in planes.items():
            geom = polys[0]
            for poly in polys[1:]:
                geom = geom.symmetric_difference(poly)
            pixels = int(mask[z_of[z]].sum())
            rounding = sum(p.length for p in polys) * 0.0005 * np.sqrt(2)     # mm^2: vertices written to 0.001 mm
            assert abs(geom.area - pixels * sx * sy) <= rounding + 1e-9, (name, z, pixels, geom.area / (sx * sy))


def test_names_colours_types(source, exported):
    _, _, masks, _ = source
    _, ds, rois = exported
    assert [r.ROIName for r in ds.StructureSetROISequence] == [*masks, PROPOSAL]
    algorithm = {r.ROIName: r.ROIGenerationAlgorithm for r in ds.StructureSetROISequence}
    described = {r.ROIName: str(r.get("ROIDescription", "")) for r in ds.StructureSetROISequence}
    for name in masks:
        s = catalog.BY_NAME[name]
        assert (rois[name].kind, rois[name].color, algorithm[name]) == (s.kind, s.color, "AUTOMATIC")
    assert rois["Clips"].kind == "MARKER"
    assert rois[PROPOSAL].kind == "CTV" and algorithm[PROPOSAL] == "SEMIAUTOMATIC"
    assert described[PROPOSAL].startswith(PROPOSAL_PREFIX) and "review" in described[PROPOSAL]
    assert rois[PROPOSAL].color not in {s.color for s in catalog.STRUCTURES}
    assert not described["Heart"].startswith(PROPOSAL_PREFIX)


def test_empty_mask_keeps_roi_without_contours(exported):
    _, ds, rois = exported
    assert rois["Glnd_Thyroid"].contours == [] and rois["Glnd_Thyroid"].kind == "ORGAN"
    number = rois["Glnd_Thyroid"].number
    (rc,) = [rc for rc in ds.ROIContourSequence if rc.ReferencedROINumber == number]
    assert len(rc.get("ContourSequence", [])) == 0
    assert all(r.contours for n, r in rois.items() if n != "Glnd_Thyroid")


def test_references_and_identity(source, exported):
    patient, ct, _, _ = source
    _, ds, _ = exported
    h = ct.header
    z_of = {sop: ct.image.TransformIndexToPhysicalPoint((0, 0, k))[2] for k, sop in enumerate(ct.slice_sop_uids)}
    n = 0
    for rc in ds.ROIContourSequence:
        for c in rc.get("ContourSequence", []):
            (img,) = c.ContourImageSequence
            sop = img.ReferencedSOPInstanceUID
            assert sop in z_of
            z = np.asarray(c.ContourData, float).reshape(-1, 3)[:, 2]
            assert np.allclose(z, z_of[sop], atol=1e-3), "contour references a slice it does not lie on"
            n += 1
    assert n > 100
    (frame,) = ds.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == h.FrameOfReferenceUID
    assert all(r.ReferencedFrameOfReferenceUID == h.FrameOfReferenceUID for r in ds.StructureSetROISequence)
    (series,) = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence
    assert series.SeriesInstanceUID == h.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == set(ct.slice_sop_uids)
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "StudyDate"):
        assert ds[kw].value == h[kw].value, kw
    source_sops = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in patient.glob("*.dcm")}
    assert ds.SOPInstanceUID not in source_sops
    assert ds.SeriesInstanceUID != h.SeriesInstanceUID
    assert ds.SeriesInstanceUID != pydicom.dcmread(next(patient.glob("RS.*.dcm"))).SeriesInstanceUID
    assert ds.ApprovalStatus == "UNAPPROVED"
    assert "nnunet_breast" in ds.Manufacturer and "nnunet_breast" in ds.SeriesDescription


def test_contour_data_strings_fit_16_chars(exported):
    out, _, _ = exported
    ds = pydicom.dcmread(out)          # fresh read: nested ContourData still raw bytes as written
    n = 0
    for rc in ds.ROIContourSequence:
        for c in rc.get("ContourSequence", []):
            raw = c.get_item("ContourData").value
            values = raw.decode().strip().split("\\") if isinstance(raw, bytes) else [str(v) for v in raw]
            assert max(len(v) for v in values) <= 16, [v for v in values if len(v) > 16][:3]
            assert len(values) == 3 * int(c.NumberOfContourPoints)
            n += 1
    assert n > 0


def test_file_is_valid_rtstruct(exported):
    out, _, _ = exported
    ds = pydicom.dcmread(out)          # no force=: needs preamble, DICM prefix and file meta
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == RTSTRUCT_STORAGE
    assert ds.file_meta.MediaStorageSOPClassUID == RTSTRUCT_STORAGE
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert "TransferSyntaxUID" in ds.file_meta
    assert list(out.parent.iterdir()) == [out], "temporary file left behind"


def test_bad_input_refused(source, tmp_path):
    patient, ct, masks, _ = source
    before = _hashes(patient)
    out = tmp_path / "RS.dcm"
    with pytest.raises(ValueError, match="Heart.*shape"):
        export_rtstruct({"Heart": masks["Heart"][:, :-1]}, ct, out)
    with pytest.raises(ValueError, match="Hart"):
        export_rtstruct({"Heart": masks["Heart"], "Hart": masks["Heart"]}, ct, out)
    with pytest.raises(ValueError, match="64"):
        export_rtstruct({}, ct, out, proposals={"P" * 65: masks["Heart"]})
    with pytest.raises(ValueError, match="probabilities"):
        export_rtstruct({"Heart": masks["Heart"].astype(np.float32)}, ct, out)
    image = ct.image[:, :, :]                                       # a copy, not a view
    image.SetDirection((1, 0, 0, 0, 0, 1, 0, -1, 0))                 # a sagittal/coronal-type grid
    with pytest.raises(ValueError, match="sagittal or coronal.*only axial"):         # a UserError: one line
        export_rtstruct({"Heart": masks["Heart"]}, dataclasses.replace(ct, image=image), out)
    with pytest.raises(ValueError, match="source CT"):
        export_rtstruct({"Heart": masks["Heart"]}, ct, ct.files[0])
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert _hashes(patient) == before


def test_failed_write_leaves_previous_file(source, tmp_path, monkeypatch):
    _, ct, masks, _ = source
    out = tmp_path / "RS.dcm"
    out.write_bytes(b"previous export")

    def crash(rois, refs, spacing, origin, study, path, **kw):
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(rtstruct_export, "write_rtstruct", crash)
    with pytest.raises(OSError, match="disk full"):
        export_rtstruct({"Heart": masks["Heart"]}, ct, out)
    assert out.read_bytes() == b"previous export"
    assert list(tmp_path.iterdir()) == [out]
