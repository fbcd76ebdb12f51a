"""DICOM-RT / NIfTI -> nnU-Net raw datasets: masks, names, metadata, overlap encoding, safety."""
import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from nnunet_breast.structures.contours import polygon_area
from nnunet_breast.dataset_conversion.dataset import ConversionError, ConvertOptions, convert
from nnunet_breast.dataset_conversion.rasterise import ContourError, rasterise_roi
from nnunet_breast.dicom.rtstruct import RoiContours, read_rtstruct
from nnunet_breast.structures.regions import OverlapEncoding
from nnunet_breast.synth.cohort import make_case
from nnunet_breast.synth.export import patient_id


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(folder).rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def dice(a, b):
    return 2 * (a & b).sum() / max(1, a.sum() + b.sum())


def opts(cohort, src, raw, dataset_id=501, **kw):
    return ConvertOptions(cohort, Path(src), dataset_id, kw.pop("name", "Test"), Path(raw), **kw)


def decoded(dataset: Path, case_id: str) -> dict[str, np.ndarray]:
    info = json.loads((dataset / "dataset.json").read_text())["nnunet_breast"]
    enc = OverlapEncoding.from_json(info["encoding"])
    return enc.decode(sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "labelsTr" / f"{case_id}.nii.gz"))))


def rows(dataset: Path) -> dict[str, dict]:
    with open(dataset / "cohort.csv", newline="") as f:
        return {r["patient_id"]: r for r in csv.DictReader(f)}


def test_breast_masks_match_ground_truth(breast_dataset):
    ds = breast_dataset.dataset_dir
    table = rows(ds)
    assert len(breast_dataset.converted) == 5 and not breast_dataset.failed
    for i in range(5):
        case = make_case("breast", i, seed=0)
        row = table[patient_id(case)]
        masks = decoded(ds, row["case_id"])
        assert set(masks) == set(case.masks)
        for name, truth in case.masks.items():
            assert dice(masks[name], truth) >= 0.99, name
        img = sitk.ReadImage(str(ds / "imagesTr" / f"{row['case_id']}_0000.nii.gz"))
        np.testing.assert_allclose(img.GetOrigin(), case.grid.origin, atol=1e-3)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(img), case.hu)
        assert row["contrast"] == str(int(case.contrast))
        assert row["site"] == case.site and row["side"] == case.side
        assert row["structures_missing"] == "" and len(row["structures_present"].split(";")) == 20


def test_overlap_is_encoded_losslessly_as_regions(breast_dataset):
    ds = json.loads((breast_dataset.dataset_dir / "dataset.json").read_text())
    assert ds["channel_names"] == {"0": "CT"} and ds["numTraining"] == 5 and ds["file_ending"] == ".nii.gz"
    labels = ds["labels"]
    assert labels["background"] == 0 and len(labels) == 21
    assert len(ds["regions_class_order"]) == 20
    enc = OverlapEncoding.from_json(ds["nnunet_breast"]["encoding"])
    assert ("CTVn_L4_L", "CTVn_SCL_L") in enc.combos
    both = enc.combos.index(("CTVn_L4_L", "CTVn_SCL_L")) + 1
    assert both in labels["CTVn_L4_L"] and both in labels["CTVn_SCL_L"]


def test_volumes_match_polygon_areas(breast_export):
    case = make_case("breast", 0, seed=0)
    folder = breast_export / patient_id(case)
    _, rois = read_rtstruct(next(folder.glob("RS.*.dcm")))
    voxel = np.prod(case.grid.spacing)
    from nnunet_breast.structures.catalog import match_name
    for roi in rois:
        name = match_name(roi.name)
        if name not in ("Heart", "Lung_L", "Lung_R", "CTVp_breast_L", "CTVp_breast_R"):
            continue
        polygon_volume = 0.0
        for _, pts in roi.contours:   # no holes in these organs: sum of areas x slice thickness
            polygon_volume += polygon_area(pts[:, :2]) * case.grid.spacing[2]
        assert abs(case.masks[name].sum() * voxel - polygon_volume) / polygon_volume < 0.02, name


def _grid(n=40, spacing=(1.0, 1.0, 3.0)):
    img = sitk.Image(n, n, 10, sitk.sitkFloat32)
    img.SetSpacing(spacing)
    img.SetOrigin((-20.0, -20.0, 100.0))
    return img


def _square(c, half, z):
    return np.array([[c[0] - half, c[1] - half, z], [c[0] + half, c[1] - half, z],
                     [c[0] + half, c[1] + half, z], [c[0] - half, c[1] + half, z]], float)


def test_holes_islands_points_and_off_plane_contours():
    img = _grid()
    ring = RoiContours(1, "ring", "ORGAN", None, [("CLOSED_PLANAR", _square((0, 0), 10, 106.0)),
                                                  ("CLOSED_PLANAR", _square((0, 0), 5, 106.0)),
                                                  ("CLOSED_PLANAR", _square((0, 0), 2, 106.0))])
    m = rasterise_roi(ring, img)
    assert m[2].sum() == 20 * 20 - 10 * 10 + 4 * 4            # outer - hole + island (centre-inside counts)
    assert not m[2, 20, 20 - 4] and m[2, 20, 20] and not m[[0, 1, 3]].any()
    point = RoiContours(2, "clip", "MARKER", None, [("POINT", np.array([[0.0, 0.0, 109.0]]))])
    sphere = rasterise_roi(point, img, point_radius_mm=2.0)
    assert sphere[3].sum() == 13 and sphere.sum() == 13        # 2 mm radius, 3 mm slices: one plane
    off = RoiContours(3, "off", "ORGAN", None, [("CLOSED_PLANAR", _square((0, 0), 5, 107.5))])
    with pytest.raises(ContourError, match="off the nearest CT slice"):
        rasterise_roi(off, img)


def test_clip_dataset_with_body_mask(clips_export, tmp_path):
    report = convert(opts("clips", clips_export, tmp_path, 502), progress=False)
    ds = report.dataset_dir
    info = json.loads((ds / "dataset.json").read_text())
    assert info["labels"] == {"background": 0, "Clips": 1} and "regions_class_order" not in info
    assert info["channel_names"] == {"0": "noNorm"}      # raw HU for the clip networks' input layer
    table = rows(ds)
    for i in range(3):
        case = make_case("clips", i, seed=0)
        row = table[patient_id(case)]
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "labelsTr" / f"{row['case_id']}.nii.gz")))
        np.testing.assert_array_equal(label == 1, case.masks["Clips"])
        body = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "bodyTr" / f"{row['case_id']}.nii.gz"))) > 0
        hu = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "imagesTr" / f"{row['case_id']}_0000.nii.gz")))
        assert (hu[~body] == -1000).all()                        # air and couch gone
        assert body[case.masks["Clips"]].all()                  # clips stay inside the body
        assert (case.hu[~body] > 0).any(), "the couch shell should have been removed"
        assert row["side"] == case.side


def test_nifti_input_layout(tmp_path):
    src = tmp_path / "nifti"
    case = make_case("breast", 4, seed=0)
    ref = sitk.GetImageFromArray(case.hu)
    ref.SetSpacing(case.grid.spacing)
    ref.SetOrigin(case.grid.origin)
    (src / "patient4" / "masks").mkdir(parents=True)
    sitk.WriteImage(ref, str(src / "patient4" / "image.nii.gz"))
    for name, written in (("Heart", "heart"), ("Lung_L", "Lt Lung"), ("CTVn_L4_L", "CTV_L4_L")):
        m = sitk.GetImageFromArray(case.masks[name].astype(np.uint8))
        m.CopyInformation(ref)
        sitk.WriteImage(m, str(src / "patient4" / "masks" / f"{written}.nii.gz"))
    report = convert(opts("breast", src, tmp_path / "raw"), progress=False)
    (cid,) = report.converted
    masks = decoded(report.dataset_dir, cid)
    for name in ("Heart", "Lung_L", "CTVn_L4_L"):
        np.testing.assert_array_equal(masks[name], case.masks[name])
    assert "Lung_R" in rows(report.dataset_dir)["patient4"]["structures_missing"]


def test_rerun_is_safe_and_clashes_are_refused(clips_export, tmp_path):
    raw = tmp_path / "raw"
    first = convert(opts("clips", clips_export, raw, 502), progress=False)
    ds = first.dataset_dir
    # an interrupted run leaves an image without its label: it is removed and redone
    victim = first.converted[0]
    (ds / "labelsTr" / f"{victim}.nii.gz").unlink()
    again = convert(opts("clips", clips_export, raw, 502), progress=False)
    assert again.converted == [victim]
    assert sorted(c for c, r in again.cases.items() if r["status"] == "skipped") == sorted(first.converted[1:])
    assert any("interrupted" in d for d in again.decisions)
    assert len(rows(ds)) == 3
    redo = convert(opts("clips", clips_export, raw, 502, redo=True), progress=False)
    assert sorted(redo.converted) == sorted(first.converted)
    with pytest.raises(ConversionError, match="other content"):
        convert(opts("clips", clips_export, raw, 502, name="Other"), progress=False)
    with pytest.raises(ConversionError, match="other content"):
        convert(opts("breast", clips_export, raw, 502), progress=False)
    replaced = convert(opts("clips", clips_export, raw, 502, name="Other", overwrite=True), progress=False)
    assert not ds.exists() and len(replaced.converted) == 3
    with pytest.raises(ConversionError, match="overlap"):
        convert(opts("clips", clips_export, clips_export / "raw"), progress=False)


# ---- malformed inputs: a clear message, the other cases converted, the input byte-for-byte unchanged ----

def _broken_copy(clips_export, tmp_path, damage):
    src = tmp_path / "export"
    shutil.copytree(clips_export, src)
    damage(src / "SYN-CL-001")
    return src


def _ct_by_z(folder: Path) -> list[Path]:
    files = list(folder.glob("CT.*.dcm"))
    return sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))


def _run_broken(src, tmp_path, run_cli, nnunet_dirs):
    before = digest(src)
    r = run_cli(["nnunet-breast", "convert", "clips", "--input", src, "--dataset-id", "502", "-np", "1"])
    assert digest(src) == before, "the input folder was modified"
    ds = next(Path(nnunet_dirs["nnUNet_raw"]).glob("Dataset502_*"))
    return r, json.loads((ds / "conversion_report.json").read_text())


def test_deleted_slice(clips_export, tmp_path, run_cli, nnunet_dirs):
    src = _broken_copy(clips_export, tmp_path, lambda f: _ct_by_z(f)[10].unlink())
    r, report = _run_broken(src, tmp_path, run_cli, nnunet_dirs)
    assert r.returncode == 1 and len(report["converted"]) == 2
    (reason,) = report["failed"].values()
    assert "CT." in reason and ("missing" in reason or "gap" in reason or "spacing" in reason)


def test_duplicated_slice(clips_export, tmp_path, run_cli, nnunet_dirs):
    src = _broken_copy(clips_export, tmp_path, lambda f: shutil.copy(_ct_by_z(f)[5], f / "copy_of_slice.dcm"))
    r, report = _run_broken(src, tmp_path, run_cli, nnunet_dirs)
    assert r.returncode == 1
    (reason,) = report["failed"].values()
    assert "copy_of_slice.dcm" in reason


def _other_frame(folder: Path):
    rs_file = next(folder.glob("RS.*.dcm"))
    rs = pydicom.dcmread(rs_file)
    rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = pydicom.uid.generate_uid()
    rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0] \
        .SeriesInstanceUID = pydicom.uid.generate_uid()
    for r in rs.StructureSetROISequence:
        r.ReferencedFrameOfReferenceUID = rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    for rc in rs.ROIContourSequence:
        for c in rc.ContourSequence:
            c.ContourImageSequence[0].ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
    rs.save_as(rs_file)


def test_rtstruct_of_another_frame_of_reference(clips_export, tmp_path, run_cli, nnunet_dirs):
    src = _broken_copy(clips_export, tmp_path, _other_frame)
    r, report = _run_broken(src, tmp_path, run_cli, nnunet_dirs)
    assert len(report["converted"]) == 2
    text = " ".join(report["decisions"])
    assert "frame of reference" in text and "RS." in text


def _empty_and_unknown_roi(folder: Path):
    rs_file = next(folder.glob("RS.*.dcm"))
    rs = pydicom.dcmread(rs_file)
    from pydicom.dataset import Dataset
    for number, name in ((7, "PTV_boost"), (8, "Heart")):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ROIGenerationAlgorithm = number, name, "MANUAL"
        roi.ReferencedFrameOfReferenceUID = rs.StructureSetROISequence[0].ReferencedFrameOfReferenceUID
        rs.StructureSetROISequence.append(roi)
    rs.save_as(rs_file)


def test_empty_roi_and_unknown_name_are_reported(clips_export, tmp_path, run_cli, nnunet_dirs):
    src = _broken_copy(clips_export, tmp_path, _empty_and_unknown_roi)
    r, report = _run_broken(src, tmp_path, run_cli, nnunet_dirs)
    assert r.returncode == 0 and len(report["converted"]) == 3
    assert "PTV_boost" in report["unmapped_names"]
    assert report["roi_names"]["Heart"] == "Heart"      # known, but not a structure of the clip cohort


def test_non_dicom_and_truncated_files(clips_export, tmp_path, run_cli, nnunet_dirs):
    def damage(folder):
        (folder / "notes.txt").write_text("exported by the TPS on Monday")
        victim = _ct_by_z(folder)[20]
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) // 3])
    src = _broken_copy(clips_export, tmp_path, damage)
    r, report = _run_broken(src, tmp_path, run_cli, nnunet_dirs)
    skipped = {Path(p).name: why for p, why in report["skipped_files"]}
    assert "notes.txt" in skipped
    assert r.returncode == 1 and len(report["converted"]) == 2   # the truncated slice leaves a gap
    (reason,) = report["failed"].values()
    assert "CT." in reason
