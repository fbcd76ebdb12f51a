"""`nnunet-breast demo --quick` end to end, and `nnunet-breast predict` on its trained models (DICOM and NIfTI
inputs, RTSTRUCT for the TPS, tumour-bed proposal, bad inputs, reruns, -num_parts)."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from nnunet_breast.env import child_environ
from nnunet_breast.inference.inputs import load_inputs
from nnunet_breast.structures import catalog

TINY_EFFNET = "nnUNetTrainerEffNetB0QuickCPU"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    environ = child_environ(nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1", nnUNet_compile="false")
    bindir = Path(sys.executable).parent
    r = subprocess.run([str(bindir / "nnunet-breast"), "demo", "--out", str(out), "--quick", "--n-new", "2",
                        "-device", "cpu"], capture_output=True, text=True, env=environ)
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-4000:])
    nn = {v: str(out / "nnunet" / v) for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    env2 = child_environ(**nn, nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1", nnUNet_compile="false")

    def predict(*args, ok=True):
        p = subprocess.run([str(bindir / "nnunet-breast"), "predict", *map(str, args)], capture_output=True,
                           text=True, env=env2)
        if ok:
            assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
        return p

    return {"out": out, "stdout": r.stdout, "predict": predict}


def test_demo_outputs_exist_and_read_back(demo):
    out = demo["out"]
    assert "read back: 2 RTSTRUCT(s)" in demo["stdout"]
    summary = list(csv.DictReader(open(out / "predictions" / "summary.csv")))
    assert len(summary) == 2 and all(r["status"] == "predicted" and r["rtstruct"] for r in summary)
    assert (out / "evaluation_breast" / "metrics.csv").is_file()
    assert list((out / "evaluation_breast" / "report").glob("*.png"))
    assert (out / "evaluation_clips.csv").is_file()
    for case in (out / "predictions").iterdir():
        if not case.is_dir() or case.name.startswith("."):
            continue
        masks = {p.name[: -len(".nii.gz")] for p in (case / "masks").glob("*.nii.gz")}
        assert set(catalog.BREAST_STRUCTURES) | {"Clips", "CTV_TumorBed_proposal"} == masks
        info = json.loads((case / "clips.json").read_text())
        assert info["method"] == "single" and "tumour_bed_proposal" in info
        assert (case / "preview.png").stat().st_size > 10_000
    assert not list((out / "predictions").glob(".*"))                  # no partial folders, no work folder


def test_rtstruct_is_tps_ready(demo):
    out = demo["out"]
    sources = {c.case_id: c for c in load_inputs(out / "exports" / "new_patients")}
    for rs_file in (out / "predictions").glob("*/RS.*.dcm"):
        ds = pydicom.dcmread(rs_file)
        src = sources[rs_file.parent.name].dicom
        assert ds.PatientID == src.header.PatientID and ds.StudyInstanceUID == src.header.StudyInstanceUID
        assert ds.SeriesInstanceUID != src.header.SeriesInstanceUID
        ref_uids = set(src.slice_sop_uids)
        types = {o.ReferencedROINumber: o.RTROIInterpretedType for o in ds.RTROIObservationsSequence}
        for roi in ds.StructureSetROISequence:
            name = roi.ROIName
            if name == "CTV_TumorBed_proposal":
                assert roi.ROIGenerationAlgorithm == "SEMIAUTOMATIC" and roi.ROIDescription.startswith("PROPOSAL")
            else:
                assert roi.ROIGenerationAlgorithm == "AUTOMATIC"
                assert types[roi.ROINumber] == catalog.BY_NAME[name].kind
        assert types[[r.ROINumber for r in ds.StructureSetROISequence if r.ROIName == "Clips"][0]] == "MARKER"
        for rc in ds.ROIContourSequence:
            for c in getattr(rc, "ContourSequence", []):
                assert c.ContourImageSequence[0].ReferencedSOPInstanceUID in ref_uids
                assert all(len(str(v)) <= 16 for v in c.ContourData)


def test_predict_nifti_input_reruns_and_parts(demo, tmp_path):
    out, predict = demo["out"], demo["predict"]
    cases = load_inputs(out / "exports" / "new_patients")
    nii = tmp_path / "nii"
    nii.mkdir()
    for c in cases:
        sitk.WriteImage(c.image, str(nii / f"{c.case_id}_0000.nii.gz"))
    pred = tmp_path / "pred"
    common = ["-d", "701", "-tr", TINY_EFFNET, "-device", "cpu", "--no-preview"]
    predict("-i", nii, "-o", pred, "--model", "breast", "-num_parts", "2", "-part_id", "1", *common)
    done = [p.name for p in pred.iterdir() if p.is_dir()]
    assert len(done) == 1 and not (pred / done[0] / f"RS.{done[0]}.dcm").exists()    # NIfTI: nothing to reference
    mask = sitk.ReadImage(str(pred / done[0] / "masks" / "Heart.nii.gz"))
    assert mask.GetSize() == {c.case_id: c for c in cases}[done[0]].image.GetSize()
    before = (pred / done[0] / "masks" / "Heart.nii.gz").stat().st_mtime_ns
    r = predict("-i", nii, "-o", pred, "--model", "breast", *common)
    assert "exists, skipped" in r.stdout and len([p for p in pred.iterdir() if p.is_dir()]) == 2
    assert (pred / done[0] / "masks" / "Heart.nii.gz").stat().st_mtime_ns == before


def test_predict_refuses_bad_inputs(demo, tmp_path):
    out, predict = demo["out"], demo["predict"]
    common = ["-o", tmp_path / "o", "--model", "breast", "-d", "701", "-tr", TINY_EFFNET, "-device", "cpu"]
    empty = tmp_path / "empty"
    empty.mkdir()
    r = predict("-i", empty, *common, ok=False)
    assert r.returncode == 2 and "empty" in r.stderr
    rs_only = tmp_path / "rs_only"
    rs_only.mkdir()
    for rs in (out / "exports" / "new_patients").rglob("RS*.dcm"):
        shutil.copy(rs, rs_only / rs.name)
    r = predict("-i", rs_only, *common, ok=False)
    assert r.returncode == 2 and "no CT series" in r.stderr
    coarse = tmp_path / "coarse"
    coarse.mkdir()
    img = sitk.GetImageFromArray(np.full((10, 40, 40), -1000, np.float32))
    img.SetSpacing((4.0, 4.0, 10.0))
    sitk.WriteImage(img, str(coarse / "coarse_0000.nii.gz"))
    r = predict("-i", coarse, *common, ok=False)
    assert r.returncode == 2 and "voxel size outside" in r.stderr
    r = predict("-i", coarse, "-o", tmp_path / "o", "--model", "clips", "--clips-method", "cascade",
                "--clips-d", "702", ok=False)
    assert r.returncode == 2 and "--stage2-id" in r.stderr
    assert not (tmp_path / "o" / "coarse").exists()
