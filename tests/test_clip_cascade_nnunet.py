"""The clip cascade end to end through the real nnU-Net CLIs (tiny networks, CPU).

synthetic DICOM -> convert clips -> stock planning + `plan --model clips` -> stage 1 on a two-fold
splits_final.json with --npz (nnU-Net trains whatever folds the file holds; two give every case one out-of-fold
map, as five do, at 2/5 of the cost) -> `cascade prepare` -> stage 2 planned, preprocessed, trained ->
`predict-clips` on new DICOM cases.

What the tiny 2-epoch nets must produce: nothing in particular (they may find no clip), so their tests check
geometry, the ROI and consistency; finding the clips is checked on the threshold baseline, which is deterministic
on the synthetic CTs and must find every clip.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_breast.clips.roi import Roi
from nnunet_breast.env import child_environ
from nnunet_breast.evaluation.clip_scores import score_clip_mask
from nnunet_breast.inference.inputs import load_inputs
from nnunet_breast.synth.cohort import make_case, write_cohort
from nnunet_breast.synth.export import patient_id
from nnunet_breast.volumes.components import label_components

T1 = "nnUNetTrainerClipLocationTiny_2epochs"
T2 = "nnUNetTrainerClipSegmentationTiny_2epochs"


@pytest.fixture(scope="module")
def cascade(tmp_path_factory, nnunet_sandbox_factory):
    root = tmp_path_factory.mktemp("cascade")
    dirs, run, _ = nnunet_sandbox_factory(root)

    write_cohort("clips", 5, root / "export", seed=0, size="small", progress=False)
    write_cohort("clips", 2, root / "new", seed=11, size="small", progress=False)
    run("nnunet-breast", "convert", "clips", "-i", root / "export", "-d", "502", "-np", "1")
    run("nnUNetv2_plan_and_preprocess", "-d", "502", "--no_pp", "-np", "1")
    run("nnunet-breast", "plan", "-d", "502", "--model", "clips")
    run("nnUNetv2_preprocess", "-d", "502", "-c", "3d_clip_location", "-np", "1")
    run("nnunet-breast", "splits", "-d", "502", "--folds", "2")      # before training: stock nnU-Net uses it
    # two stock nnUNetv2_train processes at a time: tiny folds are mostly start-up and export waits
    from concurrent.futures import ThreadPoolExecutor

    def train(fold):
        return run("nnUNetv2_train", "502", "3d_clip_location", fold, "-tr", T1, "--npz", "-device", "cpu")

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(train, range(2)))
    prep = run("nnunet-breast", "cascade", "prepare", "-d", "502", "--stage2-id", "503", "-tr", T1,
               "--min-size-mm", "60")
    run("nnUNetv2_plan_and_preprocess", "-d", "503", "--no_pp", "-np", "1")
    run("nnunet-breast", "plan", "-d", "503", "--model", "clips")
    run("nnUNetv2_preprocess", "-d", "503", "-c", "3d_clip_segmentation", "-np", "1")
    run("nnUNetv2_train", "503", "3d_clip_segmentation", "0", "-tr", T2, "-device", "cpu")
    return {"root": root, "dirs": dirs, "run": run, "prepare_stdout": prep.stdout}


def test_plans_and_stage2_dataset(cascade):
    pre = cascade["dirs"]["nnUNet_preprocessed"]
    plans = json.loads((pre / "Dataset502_BreastClips" / "nnUNetPlans.json").read_text())["configurations"]
    assert plans["3d_clip_location"]["spacing"] == [4.0] * 3
    assert plans["3d_clip_fullres"]["spacing"] == plans["3d_fullres"]["spacing"]      # the planning CT's spacing
    assert plans["3d_clip_location"]["architecture"]["network_class_name"].endswith("ResSEUNet3d")
    raw2 = cascade["dirs"]["nnUNet_raw"] / "Dataset503_BreastClipsStage2"
    rois = json.loads((raw2 / "cascade_rois.json").read_text())
    s1 = json.loads((pre / "Dataset502_BreastClips" / "splits_final.json").read_text())
    assert len(s1) == 2 and len(rois) == 5
    assert sorted(rois) == sorted(s1[0]["val"] + s1[1]["val"])                  # every case once ...
    assert all(cid in s1[r["fold"]]["val"] for cid, r in rois.items())        # ... from the fold that held it out
    for cid, r in rois.items():
        roi = Roi.from_json(r["roi"])
        ct = sitk.ReadImage(str(raw2 / "imagesTr" / f"{cid}_0000.nii.gz"))
        pmap = sitk.GetArrayFromImage(sitk.ReadImage(str(raw2 / "imagesTr" / f"{cid}_0001.nii.gz")))
        assert ct.GetSize()[::-1] == roi.size and pmap.shape == roi.size
        assert 0.0 <= pmap.min() and pmap.max() <= 1.0 + 1e-6
    # stage 2 uses stage 1's folds
    s2 = json.loads((pre / "Dataset503_BreastClipsStage2" / "splits_final.json").read_text())
    assert s1 == s2
    stage2 = json.loads((pre / "Dataset503_BreastClipsStage2" / "nnUNetPlans.json").read_text())["configurations"]
    assert stage2["3d_clip_segmentation"]["spacing"] == stage2["3d_fullres"]["spacing"]
    assert stage2["3d_clip_segmentation"]["spacing"] == plans["3d_fullres"]["spacing"]  # crops keep the CT grid
    assert "next:" in cascade["prepare_stdout"]


def test_stock_nnunet_builds_every_clip_configuration_we_plan(cascade, stock_builds):
    """The plans carry each net's input variant: the stage-2 net takes the map as its second channel."""
    pre = cascade["dirs"]["nnUNet_preprocessed"]
    assert sorted(stock_builds(pre / "Dataset502_BreastClips")) == ["3d_clip_fullres", "3d_clip_location"]
    assert stock_builds(pre / "Dataset503_BreastClipsStage2") == ["3d_clip_segmentation"]
    plans = json.loads((pre / "Dataset503_BreastClipsStage2" / "nnUNetPlans.json").read_text())
    kwargs = plans["configurations"]["3d_clip_segmentation"]["architecture"]["arch_kwargs"]
    assert kwargs["passthrough_channels"] == 1 and kwargs["binary_threshold_hu"] is None
    assert kwargs["metal_window"] == [300.0, 3000.0]


def test_predict_clips_cascade_on_new_dicom_cases(cascade):
    """Tiny 2-epoch nets may find no clip, so this checks the chain, not its finds: the mask pasted back on the
    whole CT grid, 0/1, nothing outside stage 2's ROI, the clip table summing to the mask, both models recorded
    (finding clips: the threshold baseline in the next test)."""
    root = cascade["root"]
    out = root / "pred_cascade"
    r = cascade["run"]("nnunet-breast", "predict-clips", "-i", root / "new", "-o", out, "--clips-d", "502",
                       "--stage2-id", "503", "--clips-tr", T1, "--stage2-tr", T2, "-device", "cpu")
    assert "stage2" in r.stdout
    cases = {c.case_id: c for c in load_inputs(root / "new")}
    assert len(cases) == 2
    for cid, case in cases.items():
        mask = sitk.ReadImage(str(out / f"{cid}.nii.gz"))
        assert mask.GetSize() == case.image.GetSize()                                  # pasted back whole
        np.testing.assert_allclose(mask.GetOrigin(), case.image.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(mask.GetSpacing(), case.image.GetSpacing(), atol=1e-5)
        info = json.loads((out / f"{cid}_clips.json").read_text())
        arr = sitk.GetArrayFromImage(mask)
        assert set(np.unique(arr)) <= {0, 1}
        assert info["method"] == "cascade" and info["n_clips"] == len(info["clips"])
        assert sum(c["voxels"] for c in info["clips"]) == int(arr.sum())
        roi = Roi.from_json(info["roi"])
        outside = np.ones(arr.shape, bool)
        outside[roi.slices()] = False
        assert not arr[outside].any()                                                 # stage 2 only inside its ROI
        assert info["stage1"]["trainer"] == T1 and info["stage2"]["trainer"] == T2
    assert not (out / ".work").exists()
    assert len((out / "clips.csv").read_text().strip().splitlines()) == 3


def test_predict_clips_baselines_and_refusals(cascade):
    root, run = cascade["root"], cascade["run"]
    single = root / "pred_single"
    run("nnunet-breast", "predict-clips", "-i", root / "new", "-o", single, "--clips-method", "single",
        "--clips-d", "502", "--clips-tr", T1, "--clips-c", "3d_clip_location", "--clips-f", "0", "-device", "cpu")
    thr = root / "pred_threshold"
    run("nnunet-breast", "predict-clips", "-i", root / "new", "-o", thr, "--clips-method", "threshold")
    for out, method in ((single, "single"), (thr, "threshold")):
        files = sorted(out.glob("*_clips.json"))
        assert len(files) == 2 and all(json.loads(f.read_text())["method"] == method for f in files)
    for k in range(2):                          # the threshold finds every synthetic clip of both new cases
        truth = make_case("clips", k, seed=11)
        [info_file] = thr.glob(f"{patient_id(truth)}_*_clips.json")
        info = json.loads(info_file.read_text())
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(thr / f"{info['case_id']}.nii.gz"))) > 0
        ref = truth.masks["Clips"]
        score = score_clip_mask(info["case_id"], ref, mask, truth.grid.spacing[::-1])
        # it reaches every clip and over-segments, as on a scanner's metal artefacts (synth.metal; the clip paper's
        # threshold DSC: 0.40); blooming joins close clips into one blob, which clip detection counts once
        labels, sizes = label_components(ref)
        assert set(np.unique(labels[mask])) >= set(range(1, len(sizes) + 1)), "a clip below the threshold"
        assert score.clips_found >= 1 and 0.3 < score.dsc < 0.8 and mask.sum() > ref.sum(), score
        assert info["n_clips"] >= score.clips_found and all(c["max_hu"] >= 1500 for c in info["clips"])
        assert sum(c["voxels"] for c in info["clips"]) == int(mask.sum())
    bad = run("nnunet-breast", "predict-clips", "-i", root / "new", "-o", root / "x", "--clips-d", "502",
              "--clips-tr", T1, ok=False)
    assert bad.returncode == 2 and "--stage2-id" in bad.stderr
    missing = run("nnunet-breast", "predict-clips", "-i", root / "new", "-o", root / "x", "--clips-d", "502",
                  "--stage2-id", "503", "--clips-tr", "nnUNetTrainerClipLocation", ok=False)
    assert missing.returncode == 2 and "no trained model" in missing.stderr
    empty = root / "empty_in"
    empty.mkdir()
    r = run("nnunet-breast", "predict-clips", "-i", empty, "-o", root / "x", "--clips-method", "threshold", ok=False)
    assert r.returncode == 2 and "empty" in r.stderr


def test_clip_learning_benchmark_counts_every_clip(cascade):
    """benchmarks/clip_learning.py on the stage-1 dataset (2 iterations, 2 variants): every checkpoint accounts for
    the same reference clips (found + missed), the table and the summary name both variants."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "clip_learning.py"
    dirs = cascade["dirs"]
    env = child_environ(**{k: str(v) for k, v in dirs.items()}, nnUNet_compile="false")
    variants = ["--variant", f"shipped:{T1}", "--variant", f"all_clips:{T1}:foreground_patches=1"]
    r = subprocess.run([sys.executable, str(script), "-d", "502", "-c", "3d_clip_location", "--steps", "2",
                        "--every", "1", *variants], env=env, capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    lines = [json.loads(s) for s in r.stdout.splitlines() if s.startswith("{")]
    checkpoints = [ln for ln in lines if "step" in ln]
    assert len(checkpoints) == 4 and {ln["step"] for ln in checkpoints} == {1, 2}
    # the reference clips (of the preprocessed 4 mm labels) are the same at every checkpoint, whatever was predicted
    references = {(ln["val_found"] + ln["val_missed"], ln["train_found"] + ln["train_missed"]) for ln in checkpoints}
    assert len(references) == 1
    assert checkpoints[0]["val_found"] + checkpoints[0]["val_missed"] > 0
    summary = lines[-1]
    assert summary["benchmark"] == "clip_learning" and set(summary) >= {"shipped", "all_clips"}
    assert "| shipped |" in r.stdout and "| all_clips |" in r.stdout
