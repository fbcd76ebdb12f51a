"""`nnunet-breast demo --quick` end to end, and `nnunet-breast predict` on its trained models (DICOM and NIfTI
inputs, RTSTRUCT for the TPS, tumour-bed proposal, bad inputs, reruns, -num_parts).

What the demo's models must produce: they train 2 x 2 iterations from a 1 % foreground prior
(``QuickDemoCPUSchedule``), so their masks are allowed to be empty, and none of these tests pretends otherwise.
Checked instead: every output is there, on the CT's grid, binary, and consistent with every other output
(summary volumes = mask voxels, RTSTRUCT contours exactly where masks are non-empty, NIfTI input = DICOM input of
the same CT, voxel for voxel). What a method must *find* is checked where it is deterministic: the threshold clip
method on the demo's new patients finds every synthetic clip, with contours in the RTSTRUCT.
"""
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
from nnunet_breast.volumes.components import label_components

TINY_EFFNET = "nnUNetTrainerEffNetB0QuickCPU"
CPU_CONFIG = "3d_cpu_effnetb0"            # the demo's breast configuration on CPU (`plan --cpu`)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    environ = child_environ(nnUNet_def_n_proc="1", nnUNet_compile="false")
    environ.pop("nnUNet_n_proc_DA", None)        # the demo's own choice: augmentation in the training process
    bindir = Path(sys.executable).parent
    r = subprocess.run([str(bindir / "nnunet-breast"), "demo", "--out", str(out), "--quick", "--n-train", "6",
                        "--n-new", "2", "-device", "cpu"], capture_output=True, text=True, env=environ)
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


def test_cpu_trainings_augment_in_process_and_the_users_settings_win(monkeypatch, tmp_path):
    """nnU-Net's augmentation workers beside torch's threads slow a CPU training on a small machine; its planner
    cannot take 0 workers; what the user exported is kept."""
    from nnunet_breast.demo import Demo

    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    cpu = Demo(tmp_path, "cpu", 2, 1, n_train_clips=2)
    assert cpu.environ(training=True)["nnUNet_n_proc_DA"] == "0"
    assert int(cpu.environ()["nnUNet_n_proc_DA"]) >= 1
    assert Demo(tmp_path, "cuda", 2, 1, n_train_clips=2).environ(training=True)["nnUNet_n_proc_DA"] != "0"
    monkeypatch.setenv("nnUNet_n_proc_DA", "3")
    users = Demo(tmp_path, "cpu", 2, 1, n_train_clips=2)
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")      # what run() exports for the demo's own steps
    assert users.environ(training=True)["nnUNet_n_proc_DA"] == "3"


def test_demo_outputs_exist_and_read_back(demo):
    out = demo["out"]
    assert "read back: 2 RTSTRUCT(s)" in demo["stdout"]
    summary = list(csv.DictReader(open(out / "predictions" / "summary.csv")))
    assert len(summary) == 2 and all(r["status"] == "predicted" and r["rtstruct"] for r in summary)
    sources = {c.case_id: c for c in load_inputs(out / "exports" / "new_patients")}
    assert sorted(r["case_id"] for r in summary) == sorted(sources)
    assert (out / "evaluation_breast" / "metrics.csv").is_file()
    assert list((out / "evaluation_breast" / "report").glob("*.png"))
    assert (out / "evaluation_clips.csv").is_file()
    # the breast model scored on the new patients against their full structure sets, one row per case x structure
    scores = list(csv.DictReader(open(out / "evaluation_new_patients.csv")))
    assert {"case_id", "structure", "dsc", "hd95_mm"} <= set(scores[0])
    assert sorted({r["case_id"] for r in scores}) == sorted(sources)
    assert sorted(r["structure"] for r in scores) == sorted(list(catalog.BREAST_STRUCTURES) * 2)
    assert all(r["evaluated"] == "True" and 0.0 <= float(r["dsc"]) <= 1.0 for r in scores)
    assert "mean" in demo["stdout"] and "CTVp_breast_L" in demo["stdout"]     # the table, printed
    for case in (out / "predictions").iterdir():
        if not case.is_dir() or case.name.startswith("."):
            continue
        masks = {p.name[: -len(".nii.gz")] for p in (case / "masks").glob("*.nii.gz")}
        assert set(catalog.BREAST_STRUCTURES) | {"Clips", "CTV_TumorBed_proposal"} == masks
        ct, row = sources[case.name].image, [r for r in summary if r["case_id"] == case.name][0]
        voxel_cc = float(np.prod(ct.GetSpacing())) / 1000.0
        for name in masks:                                 # on the CT grid, 0/1, volumes as the summary says
            img = sitk.ReadImage(str(case / "masks" / f"{name}.nii.gz"))
            arr = sitk.GetArrayFromImage(img)
            assert img.GetSize() == ct.GetSize() and np.allclose(img.GetOrigin(), ct.GetOrigin())
            assert set(np.unique(arr)) <= {0, 1}
            column = "tumour_bed_proposal_cc" if name == "CTV_TumorBed_proposal" else f"{name}_cc"
            assert float(row[column]) == pytest.approx(round(arr.sum() * voxel_cc, 2), abs=0.006), name
        info = json.loads((case / "clips.json").read_text())
        assert info["method"] == "single" and "tumour_bed_proposal" in info
        assert (case / "preview.png").stat().st_size > 10_000
        assert info["n_clips"] == len(info["clips"]) == int(row["n_clips"])
    # no work folder (cases are assembled there); only the summary's lock file stays
    assert [p.name for p in (out / "predictions").glob(".*")] == [".summary.lock"]


def test_rtstruct_is_tps_ready(demo, rtstruct_matches_masks):
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
        contours = rtstruct_matches_masks(rs_file.parent)    # contours exactly where the masks are non-empty
        assert set(contours) == set(catalog.BREAST_STRUCTURES) | {"Clips", "CTV_TumorBed_proposal"}


def test_threshold_clips_on_the_demo_patients_are_found_and_contoured(demo, tmp_path, rtstruct_matches_masks):
    """The threshold method needs no training: on the demo's new patients it must find every synthetic clip."""
    from nnunet_breast.evaluation.clip_scores import score_clip_mask

    out, pred = demo["out"], tmp_path / "thr"
    demo["predict"]("-i", out / "exports" / "new_patients", "-o", pred, "--model", "clips", "--clips-method",
                    "threshold", "--no-preview")
    truth = sorted((out / "nnunet" / "nnUNet_raw").glob("Dataset704_*/labelsTr/*.nii.gz"))
    assert len(truth) == 2
    for ref_file in truth:
        cid = ref_file.name[: -len(".nii.gz")]
        ref_img = sitk.ReadImage(str(ref_file))
        got = sitk.GetArrayFromImage(sitk.ReadImage(str(pred / cid / "masks" / "Clips.nii.gz"))) > 0
        ref = sitk.GetArrayFromImage(ref_img) > 0
        score = score_clip_mask(cid, ref, got, ref_img.GetSpacing()[::-1])
        # it reaches every clip and over-segments, as on a scanner's metal artefacts (synth.metal; the clip paper's
        # threshold DSC: 0.40); blooming joins close clips into one blob, which clip detection counts once
        labels, sizes = label_components(ref)
        assert set(np.unique(labels[got])) >= set(range(1, len(sizes) + 1)), "a clip below the threshold"
        assert score.clips_found >= 1 and 0.3 < score.dsc < 0.8 and got.sum() > ref.sum(), score
        contours = rtstruct_matches_masks(pred / cid)
        assert contours["Clips"] >= 1 and contours["CTV_TumorBed_proposal"] >= 1


def test_predict_nifti_input_reruns_and_parts(demo, tmp_path):
    out, predict = demo["out"], demo["predict"]
    cases = load_inputs(out / "exports" / "new_patients")
    nii = tmp_path / "nii"
    nii.mkdir()
    for c in cases:
        sitk.WriteImage(c.image, str(nii / f"{c.case_id}_0000.nii.gz"))
    pred = tmp_path / "pred"
    common = ["-d", "701", "-tr", TINY_EFFNET, "-c", CPU_CONFIG, "-device", "cpu", "--no-preview"]
    predict("-i", nii, "-o", pred, "--model", "breast", "-num_parts", "2", "-part_id", "1", *common)
    done = [p.name for p in pred.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(done) == 1 and not (pred / done[0] / f"RS.{done[0]}.dcm").exists()    # NIfTI: nothing to reference
    # the same CT as NIfTI gives the demo's DICOM-input masks, voxel for voxel, on the same grid
    from_dicom = out / "predictions" / done[0] / "masks"
    for name in catalog.BREAST_STRUCTURES:
        a, b = (sitk.ReadImage(str(d / f"{name}.nii.gz")) for d in (pred / done[0] / "masks", from_dicom))
        assert a.GetSize() == b.GetSize() and np.allclose(a.GetOrigin(), b.GetOrigin()), name
        np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b), err_msg=name)
    before = (pred / done[0] / "masks" / "Heart.nii.gz").stat().st_mtime_ns
    r = predict("-i", nii, "-o", pred, "--model", "breast", *common)
    assert "exists, skipped" in r.stdout and len([p for p in pred.iterdir() if p.is_dir()]) == 2
    summary = list(csv.DictReader(open(pred / "summary.csv")))
    assert sorted(r["case_id"] for r in summary) == sorted(c.case_id for c in cases)     # both parts' cases
    assert (pred / done[0] / "masks" / "Heart.nii.gz").stat().st_mtime_ns == before


def test_predict_refuses_bad_inputs(demo, tmp_path):
    out, predict = demo["out"], demo["predict"]
    common = ["-o", tmp_path / "o", "--model", "breast", "-d", "701", "-tr", TINY_EFFNET, "-c", CPU_CONFIG,
              "-device", "cpu"]
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
