"""Every DICOM object we write passes dicom3tools' dciodvfy with zero errors; DICOM-SEG; the department's settings.

dciodvfy (Debian/Ubuntu package dicom3tools; ``.ci/run`` installs it) checks an object against the IOD its SOP
class names: modules, attribute types 1/2/1C/2C, value representations and enumerated values. Warnings are
allowed; a line starting with ``Error`` fails the test.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from nnunet_breast.dicom.rtstruct_export import (DEFAULT_LABEL, RTStructSettings, check_name_map, export_rtstruct,
                                                 load_name_map)
from nnunet_breast.dicom.seg_export import export_seg
from nnunet_breast.errors import UserError
from nnunet_breast.structures import catalog
from nnunet_breast.synth.cohort import write_cohort

DCIODVFY = shutil.which("dciodvfy")
needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools' dciodvfy is not installed "
                                                             "(apt-get install dicom3tools; .ci/run installs it)")
PROPOSAL = "CTV_TumorBed_proposal"


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(error lines, warning lines) of dciodvfy on ``path``; fails if the validator itself did not finish."""
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    assert run.returncode >= 0 and not any("Assertion" in line or "Abort" in line for line in lines), \
        f"dciodvfy did not finish on {path.name}: {lines[-3:]}"
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warning")]


def assert_conformant(path: Path) -> None:
    errors, _ = dciodvfy(path)
    assert errors == [], f"{path.name}: " + "; ".join(errors)


def _hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def source(breast_patient):
    """One synthetic breast patient (CT + RTSTRUCT + RTPLAN + RTDOSE), its CT read back, masks and a proposal."""
    patient, ct, masks = breast_patient()
    masks["Glnd_Thyroid"] = np.zeros_like(masks["Heart"])                      # predicted empty
    proposal = np.zeros_like(masks["Heart"])
    z, y, x = np.argwhere(masks["CTVp_breast_L"]).mean(axis=0).round().astype(int)
    proposal[z - 1:z + 2, y - 3:y + 3, x - 4:x + 4] = True
    return patient, ct, masks, {PROPOSAL: proposal}


# ------------------------------------------------------------------------------------------ dciodvfy per object

@needs_dciodvfy
@pytest.mark.parametrize("prefix", ["CT", "RS", "RP", "RD"])
def test_synthetic_export_passes_dciodvfy(source, prefix):
    patient = source[0]
    files = sorted(patient.glob(f"{prefix}.*.dcm"))
    assert files, f"no {prefix} object in the synthetic export"
    for f in files[:3] + files[-2:]:                  # CT: first and last slices (one writer, same attributes)
        assert_conformant(f)


@needs_dciodvfy
def test_predicted_rtstruct_passes_dciodvfy(source, tmp_path):
    _, ct, masks, proposals = source
    assert_conformant(export_rtstruct(masks, ct, tmp_path / "RS.auto.dcm", proposals=proposals))


def test_synthetic_dose_references_its_plan_and_the_plan_its_structure_set(source):
    patient = source[0]
    rd = pydicom.dcmread(next(patient.glob("RD.*.dcm")))
    rp = pydicom.dcmread(next(patient.glob("RP.*.dcm")))
    rs = pydicom.dcmread(next(patient.glob("RS.*.dcm")))
    assert (rd.BitsAllocated, rd.DoseSummationType) == (16, "PLAN")
    assert rd.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == rp.SOPInstanceUID
    assert "ReferencedStructureSetSequence" not in rd          # RT DVH module: not written without DVHs
    assert rp.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    assert rp.FractionGroupSequence[0].NumberOfBeams == 0
    (target,) = rp.DoseReferenceSequence
    roi = {int(r.ROINumber): r.ROIName for r in rs.StructureSetROISequence}[int(target.ReferencedROINumber)]
    assert catalog.match_name(roi) == target.DoseReferenceDescription
    assert rd.FrameOfReferenceUID == rp.FrameOfReferenceUID == rs.FrameOfReferenceUID


# ------------------------------------------------------------------------------------------ SEG

@pytest.fixture(scope="module")
def seg(source, tmp_path_factory):
    _, ct, masks, proposals = source
    params = {n: {"model": "breast", "dataset_id": "501", "folds": "0,1,2,3,4"} for n in masks}
    out, left_out = export_seg(masks, ct, tmp_path_factory.mktemp("seg") / "SEG.case.dcm", proposals=proposals,
                               parameters=params)
    return out, left_out


def test_seg_segments_equal_the_masks_voxel_for_voxel(source, seg):
    import highdicom as hd

    _, ct, masks, proposals = source
    out, left_out = seg
    assert left_out == ["Glnd_Thyroid"]
    sd = hd.seg.segread(out)
    assert sd.SegmentationType == "BINARY"
    labels = {int(d.SegmentNumber): str(d.SegmentLabel) for d in sd.SegmentSequence}
    expected = {**{n: m for n, m in masks.items() if m.any()}, **proposals}
    assert list(labels.values()) == list(expected)
    pixels = sd.get_pixels_by_source_instance(source_sop_instance_uids=ct.slice_sop_uids,
                                              segment_numbers=list(labels), assert_missing_frames_are_empty=True)
    assert pixels.shape == (len(ct.slice_sop_uids), *next(iter(masks.values())).shape[1:], len(labels))
    for k, (number, name) in enumerate(labels.items()):
        assert np.array_equal(pixels[..., k].astype(bool), expected[name]), name
    # geometry: each frame lies where the CT slice it was derived from lies
    z_of = {sop: ct.image.TransformIndexToPhysicalPoint((0, 0, k)) for k, sop in enumerate(ct.slice_sop_uids)}
    for frame in sd.PerFrameFunctionalGroupsSequence:
        src = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        pos = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(pos, z_of[src], atol=1e-3)


def test_seg_references_codes_colours_algorithm(source, seg):
    import highdicom as hd

    patient, ct, _, _ = source
    sd = hd.seg.segread(seg[0])
    h = ct.header
    assert sd.ReferencedSeriesSequence[0].SeriesInstanceUID == h.SeriesInstanceUID
    assert {str(i.ReferencedSOPInstanceUID) for i in sd.ReferencedSeriesSequence[0].ReferencedInstanceSequence} \
        <= set(ct.slice_sop_uids)
    for kw in ("FrameOfReferenceUID", "StudyInstanceUID", "PatientID", "PatientName"):
        assert sd[kw].value == h[kw].value, kw
    assert sd.SeriesInstanceUID != h.SeriesInstanceUID
    by_label = {str(d.SegmentLabel): d for d in sd.SegmentSequence}
    code = lambda seq: (seq[0].CodingSchemeDesignator, seq[0].CodeValue)      # noqa: E731
    assert code(by_label["Heart"].SegmentedPropertyTypeCodeSequence) == ("SCT", "80891009")
    assert code(by_label["Heart"].SegmentedPropertyCategoryCodeSequence) == ("SCT", "91723000")
    lung = by_label["Lung_L"].SegmentedPropertyTypeCodeSequence[0]
    assert (lung.CodeValue, lung.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue) == ("39607008", "7771000")
    ctv = by_label["CTVn_L2_R"]
    assert code(ctv.SegmentedPropertyTypeCodeSequence) == ("SCT", "228792002")
    assert code(ctv.SegmentedPropertyCategoryCodeSequence) == ("DCM", "130041")
    assert code(ctv.AnatomicRegionSequence) == ("SCT", "91470000")
    assert ctv.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0].CodeValue == "24028007"
    assert str(by_label[PROPOSAL].SegmentDescription).startswith("PROPOSAL")
    for name in ("Heart", "CTVn_IMN_L", "SpinalCord"):
        rgb = hd.color.CIELabColor.from_dicom_value(by_label[name].RecommendedDisplayCIELabValue).to_rgb()
        assert np.allclose(rgb, catalog.BY_NAME[name].color, atol=2), name
    algorithm = by_label["Heart"].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "nnunet_breast" and algorithm.AlgorithmVersion
    assert "dataset_id=501" in str(algorithm.AlgorithmParameters)
    assert by_label["Heart"].SegmentAlgorithmType == "AUTOMATIC"


@needs_dciodvfy
def test_seg_passes_dciodvfy(seg):
    assert_conformant(seg[0])


# ------------------------------------------------------------------------------------------ department settings

def test_label_series_description_and_name_map(source, tmp_path):
    _, ct, masks, proposals = source
    names = {"Heart": "COEUR", "Lung_L": "Poumon G"}
    out = export_rtstruct(masks, ct, tmp_path / "RS.dcm", proposals=proposals, label="SEIN_IA",
                          series_description="Contours IA (a relire)", name_map=names)
    ds = pydicom.dcmread(out)
    assert (ds.StructureSetLabel, ds.SeriesDescription) == ("SEIN_IA", "Contours IA (a relire)")
    written = [str(r.ROIName) for r in ds.StructureSetROISequence]
    assert written == [names.get(n, n) for n in masks] + [PROPOSAL]
    assert pydicom.dcmread(export_rtstruct(masks, ct, tmp_path / "RS2.dcm")).StructureSetLabel == DEFAULT_LABEL


def test_bad_settings_refused_with_one_line(tmp_path):
    for mapping, match in (({"Coeur": "COEUR"}, "not a catalog structure name"),
                           ({"Lt Lung": "X"}, "did you mean Lung_L"),
                           ({"Heart": "A", "Esophagus": "a"}, "both be written"),
                           ({"Heart": "Lung_L"}, "both be written"),
                           ({"Heart": "x" * 65}, "1-64"),
                           ({"Heart": "A\\B"}, "backslash")):
        with pytest.raises(UserError, match=match) as e:
            check_name_map(mapping)
        assert "\n" not in str(e.value)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not a readable JSON"):
        load_name_map(tmp_path / "bad.json")
    (tmp_path / "names.json").write_text(json.dumps({"Heart": "COEUR"}))
    assert load_name_map(tmp_path / "names.json") == {"Heart": "COEUR"}
    with pytest.raises(UserError, match="1-16"):
        RTStructSettings(label="A_LABEL_OF_17_CHR")
    with pytest.raises(UserError, match="on-clash"):
        RTStructSettings(on_clash="merge")


def _rois(ds) -> dict[int, str]:
    return {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}


@pytest.mark.parametrize("policy", ["refuse", "suffix"])
def test_add_to_department_structure_set(source, tmp_path, policy):
    patient, ct, masks, proposals = source
    base = next(patient.glob("RS.*.dcm"))
    before = _hash(base)
    original = pydicom.dcmread(base)
    ours = {"Heart": masks["Heart"], "CTVn_L4_L": masks["CTVn_L4_L"]}
    # the synthetic TPS spells its heart one of "Heart", "HEART", "Cor", ...; force a clash case-insensitively
    clash_name = next(str(r.ROIName) for r in original.StructureSetROISequence if catalog.match_name(r.ROIName)
                      == "Heart")
    name_map = {"Heart": clash_name.swapcase()}
    out = tmp_path / "RS.merged.dcm"
    if policy == "refuse":
        with pytest.raises(UserError, match="already has ROI") as e:
            export_rtstruct(ours, ct, out, name_map=name_map, add_to=base, on_clash="refuse")
        assert "\n" not in str(e.value) and not out.exists()
        return
    export_rtstruct(ours, ct, out, proposals=proposals, name_map=name_map, add_to=base, on_clash="suffix",
                    label="DEPT+AI")
    assert _hash(base) == before, "the department's structure set was modified"
    ds = pydicom.dcmread(out)
    old, new = _rois(original), _rois(ds)
    assert {k: v for k, v in new.items() if k in old} == old                      # theirs: numbers and names kept
    added = {k: v for k, v in new.items() if k not in old}
    assert min(added) == max(old) + 1
    taken = {n.casefold() for n in old.values()}
    expected = [n + "_AI" if n.casefold() in taken else n for n in (name_map["Heart"], "CTVn_L4_L", PROPOSAL)]
    assert list(added.values()) == expected and expected[0] == name_map["Heart"] + "_AI"
    for kw in ("ROIContourSequence", "RTROIObservationsSequence"):
        assert len(ds[kw].value) == len(original[kw].value) + 3
    first = {int(rc.ReferencedROINumber): rc for rc in original.ROIContourSequence}
    for rc in ds.ROIContourSequence:
        n = int(rc.ReferencedROINumber)
        if n in first and "ContourSequence" in first[n]:
            assert rc.ContourSequence[0].ContourData == first[n].ContourSequence[0].ContourData
    observations = [int(o.ObservationNumber) for o in ds.RTROIObservationsSequence]
    assert len(set(observations)) == len(observations)
    assert ds.SOPInstanceUID != original.SOPInstanceUID and ds.SeriesInstanceUID != original.SeriesInstanceUID
    assert ds.PredecessorStructureSetSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
    assert ds.ApprovalStatus == "UNAPPROVED" and ds.StructureSetLabel == "DEPT+AI"
    assert ds.ContributingEquipmentSequence[-1].PurposeOfReferenceCodeSequence[0].CodeValue == "109103"
    assert ds.Manufacturer == original.Manufacturer                      # General Equipment: the original's
    if DCIODVFY:
        assert_conformant(out)


def test_add_to_refuses_another_ct(source, tmp_path):
    patient, ct, masks, _ = source
    base = pydicom.dcmread(next(patient.glob("RS.*.dcm")))
    other_series = base.copy()
    other_series.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0] \
        .SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    other_series.save_as(tmp_path / "other_series.dcm")
    with pytest.raises(UserError, match="references CT series"):
        export_rtstruct({"Heart": masks["Heart"]}, ct, tmp_path / "out1.dcm", add_to=tmp_path / "other_series.dcm")
    other_frame = pydicom.dcmread(next(patient.glob("RS.*.dcm")))
    other_frame.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.78"
    other_frame.save_as(tmp_path / "other_frame.dcm")
    with pytest.raises(UserError, match="frame of reference"):
        export_rtstruct({"Heart": masks["Heart"]}, ct, tmp_path / "out2.dcm", add_to=tmp_path / "other_frame.dcm")
    with pytest.raises(UserError, match="not an RTSTRUCT"):
        export_rtstruct({"Heart": masks["Heart"]}, ct, tmp_path / "out3.dcm", add_to=next(patient.glob("RD.*.dcm")))
    assert not any(tmp_path.glob("out*.dcm"))


# ------------------------------------------------------------------------------------------ the CLI

@pytest.fixture(scope="module")
def clip_patient(tmp_path_factory):
    (patient,) = write_cohort("clips", 1, tmp_path_factory.mktemp("clip_src"), seed=0, size="small", progress=False)
    return patient


def test_predict_writes_seg_and_adds_to_the_department_structure_set(clip_patient, tmp_path, run_cli):
    """The threshold clip method needs no model: the whole predict path with --seg, --add-to, --name-map."""
    base = next(clip_patient.glob("RS.*.dcm"))
    before = _hash(base)
    (tmp_path / "names.json").write_text(json.dumps({"Clips": "Clips_auto"}))
    out = tmp_path / "out"
    r = run_cli(["nnunet-breast", "predict", "-i", clip_patient, "-o", out, "--model", "clips", "--clips-method",
                 "threshold", "--seg", "--add-to", base, "--name-map", tmp_path / "names.json",
                 "--structure-set-label", "CLIPS_DEPT", "--no-preview", "-device", "cpu"])
    assert r.returncode == 0, r.stderr
    (case,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    rs = pydicom.dcmread(case / f"RS.{case.name}.dcm")
    names = [str(x.ROIName) for x in rs.StructureSetROISequence]
    assert names[:-2] == [str(x.ROIName) for x in pydicom.dcmread(base).StructureSetROISequence]
    assert names[-2:] == ["Clips_auto", PROPOSAL] and rs.StructureSetLabel == "CLIPS_DEPT"
    assert _hash(base) == before
    seg_file = case / f"SEG.{case.name}.dcm"
    assert seg_file.exists() and f"SEG.{case.name}.dcm" in r.stdout
    labels = [str(d.SegmentLabel) for d in pydicom.dcmread(seg_file).SegmentSequence]
    assert labels[0] == "Clips"                             # SEG labels stay TG-263 / catalog names
    if DCIODVFY:
        assert_conformant(case / f"RS.{case.name}.dcm")
        assert_conformant(seg_file)


def test_predict_refusals_one_line(clip_patient, tmp_path, run_cli):
    import SimpleITK as sitk

    nifti = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.Image(8, 8, 4, sitk.sitkInt16), str(nifti))
    base = next(clip_patient.glob("RS.*.dcm"))
    common = ["--model", "clips", "--clips-method", "threshold", "--no-preview", "-device", "cpu"]
    for args, match in (([ "-i", nifti, "--seg"], "--seg needs DICOM CT input"),
                        (["-i", nifti, "--add-to", base], "--add-to needs DICOM CT input"),
                        (["-i", clip_patient, "--add-to", next(clip_patient.glob("CT.*.dcm"))], "not an RTSTRUCT"),
                        (["-i", clip_patient, "--add-to", base, "--no-rtstruct"], "drop --no-rtstruct"),
                        (["-i", clip_patient, "--structure-set-label", "x" * 17], "1-16")):
        r = run_cli(["nnunet-breast", "predict", *args, "-o", tmp_path / "o", *common])
        assert r.returncode == 2, (args, r.stderr)
        assert match in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists() or not any(p for p in (tmp_path / "o").iterdir() if not p.name.startswith("."))
