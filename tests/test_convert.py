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

from nnunet_breast.dataset_conversion.dataset import ConversionError, ConvertOptions, convert
from nnunet_breast.dataset_conversion.rasterise import ContourError, rasterise_roi
from nnunet_breast.dicom.rtstruct import RoiContours, read_rtstruct
from nnunet_breast.structures.catalog import BREAST_STRUCTURES
from nnunet_breast.structures.contours import polygon_area
from nnunet_breast.structures.regions import OverlapEncoding
from nnunet_breast.synth.cohort import make_case
from nnunet_breast.synth.export import patient_id


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(folder).rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


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
        case = make_case("breast", i, seed=0, labels="full")
        row = table[patient_id(case)]
        masks = decoded(ds, row["case_id"])
        assert set(masks) == set(case.masks)
        for name, truth in case.masks.items():   # contours -> masks is exact (centre-inside, even-odd)
            np.testing.assert_array_equal(masks[name], truth, err_msg=name)
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


def test_every_contour_has_the_area_of_its_voxels(breast_export):
    """A TPS takes a structure's volume from its polygons' areas, so every exported contour (holes too) has the
    area of the voxels whose centres it encloses (structures.contours: the traced line grown to that area),
    exactly, but for the file's coordinates rounded to 0.001 mm (each vertex off by <= 0.0005 * sqrt(2) mm: the
    area by <= that times the perimeter). The polygons also reproduce the masks (test_synth). The midpoint
    contours written before were half a pixel short each: -3 to -21 % for the 1-2 cc structures."""
    from nnunet_breast.structures.contours import polygons_to_mask

    for i in range(3):
        case = make_case("breast", i, seed=0, labels="full")
        folder = breast_export / patient_id(case)
        _, rois = read_rtstruct(next(folder.glob("RS.*.dcm")))
        (sx, sy, _), (ox, oy, _) = case.grid.spacing, case.grid.origin
        shape = case.grid.shape[1:]
        assert len(rois) == 20
        for roi in rois:
            assert roi.contours, roi.name
            for _, pts in roi.contours:
                xy = np.c_[(pts[:, 0] - ox) / sx, (pts[:, 1] - oy) / sy]      # pixel index coordinates
                enclosed = int(polygons_to_mask([xy], shape).sum())
                perimeter = np.linalg.norm(pts[:, :2] - np.roll(pts[:, :2], -1, axis=0), axis=1).sum()
                error = abs(polygon_area(pts[:, :2]) - enclosed * sx * sy)        # mm^2
                assert error <= perimeter * 0.0005 * np.sqrt(2) + 1e-9, (roi.name, float(pts[0, 2]), error)


# ---- the annotation record: dataset.json says per case which structures it annotates ----

def annotated(dataset: Path) -> dict[str, list[str]]:
    return json.loads((dataset / "dataset.json").read_text())["nnunet_breast"]["annotated"]


def case_ids(dataset: Path) -> list[str]:
    """nnU-Net's case identifiers: the image file stems without _0000."""
    return sorted(f.name[: -len("_0000.nii.gz")] for f in (dataset / "imagesTr").glob("*_0000.nii.gz"))


def test_full_labels_annotate_every_structure_of_every_case(breast_dataset):
    ds = breast_dataset.dataset_dir
    record = annotated(ds)
    assert sorted(record) == case_ids(ds) == sorted(breast_dataset.converted)
    assert all(names == list(BREAST_STRUCTURES) for names in record.values())


@pytest.fixture(scope="module")
def clinical_dataset(breast_clinical_export, tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw_clinical")
    return convert(opts("breast", breast_clinical_export, raw, 503, name="Clinical"), progress=False)


def test_clinical_export_records_what_each_case_annotates(clinical_dataset):
    ds = clinical_dataset.dataset_dir
    record, table = annotated(ds), rows(ds)
    info = json.loads((ds / "dataset.json").read_text())
    assert len(clinical_dataset.converted) == 6 and not clinical_dataset.failed
    assert sorted(record) == case_ids(ds) and info["numTraining"] == 6
    assert len(info["labels"]) == 21          # every structure keeps its output channel, annotated or not
    for i in range(6):
        case = make_case("breast", i, seed=0, labels="clinical")
        row = table[patient_id(case)]
        cid = row["case_id"]
        assert record[cid] == [n for n in BREAST_STRUCTURES if n in case.masks]
        missing = set(row["structures_missing"].split(";"))
        assert record[cid] == [n for n in BREAST_STRUCTURES if n not in missing]
        assert row["structures_present"].split(";") == record[cid]
        masks = decoded(ds, cid)
        for name in BREAST_STRUCTURES:
            if name in case.masks:
                np.testing.assert_array_equal(masks[name], case.masks[name], err_msg=name)
            else:                              # written as background: what the trainer must not learn from
                assert not masks[name].any(), name
        assert row["side"] == case.side        # the only breast CTV's side


def _zero_voxel_and_placeholder_rois(folder: Path, case) -> None:
    """CTVp_breast_R contoured by a sliver between pixel centres; CTVn_IMN_L declared without any contour."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    rs_file = next(folder.glob("RS.*.dcm"))
    rs = pydicom.dcmread(rs_file)
    (sx, sy, sz), (ox, oy, oz) = case.grid.spacing, case.grid.origin
    z = oz + 10 * sz
    sliver = [(ox + (40 + dx) * sx, oy + (40 + dy) * sy, z) for dx, dy in ((0.1, 0.1), (0.4, 0.1), (0.2, 0.4))]
    frame = rs.StructureSetROISequence[0].ReferencedFrameOfReferenceUID
    for number, name in ((101, "CTV_Breast_R"), (102, "CTV_IMN_L")):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ROIGenerationAlgorithm = number, name, "MANUAL"
        roi.ReferencedFrameOfReferenceUID = frame
        rs.StructureSetROISequence.append(roi)
    contour = Dataset()
    contour.ContourGeometricType, contour.NumberOfContourPoints = "CLOSED_PLANAR", 3
    contour.ContourData = [f"{v:.4f}" for p in sliver for v in p]
    rc = Dataset()
    rc.ReferencedROINumber, rc.ROIDisplayColor, rc.ContourSequence = 101, [255, 105, 180], Sequence([contour])
    rs.ROIContourSequence.append(rc)
    rs.save_as(rs_file)


def test_contoured_but_empty_is_annotated_a_placeholder_roi_is_not(breast_clinical_export, tmp_path):
    case = make_case("breast", 1, seed=0, labels="clinical")
    assert case.side == "L" and "CTVp_breast_R" not in case.masks and "CTVn_IMN_L" not in case.masks
    src = tmp_path / "export"
    shutil.copytree(breast_clinical_export / patient_id(case), src / patient_id(case))
    _zero_voxel_and_placeholder_rois(src / patient_id(case), case)
    report = convert(opts("breast", src, tmp_path / "raw"), progress=False)
    (cid,) = report.converted
    names = annotated(report.dataset_dir)[cid]
    assert "CTVp_breast_R" in names and "CTVn_IMN_L" not in names
    assert names == [n for n in BREAST_STRUCTURES if n in case.masks or n == "CTVp_breast_R"]
    assert not decoded(report.dataset_dir, cid)["CTVp_breast_R"].any()
    assert sorted(report.cases[cid]["empty_rois"]) == ["CTV_Breast_R", "CTV_IMN_L"]   # both reported
    row = rows(report.dataset_dir)[patient_id(case)]
    assert "CTVn_IMN_L" in row["structures_missing"] and "CTVp_breast_R" in row["structures_present"]
    assert row["side"] == "L"                 # the side comes from the breast CTV with voxels


def test_incremental_conversion_keeps_and_drops_records(breast_clinical_export, tmp_path):
    src, raw = tmp_path / "export", tmp_path / "raw"
    patients = sorted(p.name for p in breast_clinical_export.iterdir() if p.is_dir())
    for pid in patients[:4]:
        shutil.copytree(breast_clinical_export / pid, src / pid)
    first = convert(opts("breast", src, raw), progress=False)
    ds = first.dataset_dir
    before = annotated(ds)
    assert sorted(before) == case_ids(ds) and len(before) == 4
    for pid in patients[4:]:                                  # two new patients arrive
        shutil.copytree(breast_clinical_export / pid, src / pid)
    second = convert(opts("breast", src, raw), progress=False)
    assert len(second.converted) == 2 and sum(r["status"] == "skipped" for r in second.cases.values()) == 4
    after = annotated(ds)
    assert sorted(after) == case_ids(ds) and len(after) == 6
    assert {c: after[c] for c in before} == before            # cases not reconverted keep their record
    patient_of = {r["case_id"]: r["patient_id"] for r in rows(ds).values()}
    for c in second.converted:
        truth = make_case("breast", int(patient_of[c].split("-")[-1]), seed=0, labels="clinical")
        assert after[c] == [n for n in BREAST_STRUCTURES if n in truth.masks]
    # a case removed from the dataset (and from the export) loses its row and its record
    gone = first.converted[0]
    (ds / "labelsTr" / f"{gone}.nii.gz").unlink()
    (ds / "imagesTr" / f"{gone}_0000.nii.gz").unlink()
    shutil.rmtree(src / patient_of[gone])
    third = convert(opts("breast", src, raw), progress=False)
    assert not third.converted and gone not in annotated(ds)
    assert sorted(annotated(ds)) == case_ids(ds) and len(case_ids(ds)) == 5
    assert json.loads((ds / "dataset.json").read_text())["numTraining"] == 5 and len(rows(ds)) == 5
    assert any(gone in d and "dropped" in d for d in third.decisions)
    # a dataset converted before the record existed: the record is rebuilt from cohort.csv
    info = json.loads((ds / "dataset.json").read_text())
    kept = info["nnunet_breast"].pop("annotated")
    (ds / "dataset.json").write_text(json.dumps(info))
    convert(opts("breast", src, raw), progress=False)
    assert annotated(ds) == kept


def test_mapping_to_a_name_outside_the_catalog_is_refused_in_one_line(breast_clinical_export, tmp_path,
                                                                     nnunet_dirs, capsys):
    from nnunet_breast import cli
    from nnunet_breast.errors import UserError

    with pytest.raises(UserError, match="'Hart'.*not a catalog structure"):
        convert(opts("breast", breast_clinical_export, tmp_path / "raw", mapping={"Heart muscle": "Hart"}),
                progress=False)
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())   # refused before writing
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"Lt Breast": "CTVp_breast_L", "Cor": "Heart muscle"}))
    code = cli.main(["convert", "breast", "-i", str(breast_clinical_export), "-d", "504", "--mapping", str(mapping),
                     "-np", "1"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'Heart muscle'" in err
    assert not list(Path(nnunet_dirs["nnUNet_raw"]).iterdir())


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
    assert info["nnunet_breast"]["annotated"] == {c: ["Clips"] for c in case_ids(ds)} and len(case_ids(ds)) == 3
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
    assert annotated(report.dataset_dir) == {cid: ["CTVn_L4_L", "Heart", "Lung_L"]}   # the masks given, catalog order


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
    assert len(rows(ds)) == 3 and sorted(annotated(ds)) == case_ids(ds) == sorted(first.converted)
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
