"""Clip cascade without training: stage-2 dataset building from out-of-fold maps, inputs, baselines, clip tables."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_breast.clips.prepare import CascadeError, prepare_stage2
from nnunet_breast.clips.roi import Roi, RoiSettings
from nnunet_breast.clips.table import clip_table
from nnunet_breast.clips.threshold import threshold_clips
from nnunet_breast.dataset_conversion.dataset import ConvertOptions, convert
from nnunet_breast.evaluation.clip_detection import detect_clips
from nnunet_breast.inference.inputs import InputError, list_inputs, load_inputs
from nnunet_breast.synth.cohort import make_case
from nnunet_breast.volumes.components import label_components

MODEL = "nnUNetTrainerClipLocation__nnUNetPlans__3d_clip_location"


def tree_hash(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def clip_stage1(clips_export, nnunet_dirs):
    """A converted clip dataset (502) and an empty stage-1 results folder; returns (raw dataset dir, model dir)."""
    report = convert(ConvertOptions("clips", clips_export, 502, "BreastClips", Path(nnunet_dirs["nnUNet_raw"])),
                     progress=False)
    model = Path(nnunet_dirs["nnUNet_results"]) / report.dataset_dir.name / MODEL
    return report.dataset_dir, model


def case_ids(raw: Path) -> list[str]:
    return sorted(p.name[: -len("_0000.nii.gz")] for p in (raw / "imagesTr").glob("*_0000.nii.gz"))


def write_oof(raw: Path, model: Path, make_prob, folds=None) -> None:
    """Fake out-of-fold npz files (nnU-Net's layout: fold_k/validation/<case>.npz, 'probabilities' [c, z, y, x])."""
    for i, cid in enumerate(case_ids(raw)):
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{cid}.nii.gz")))
        fg = make_prob(label).astype(np.float32)
        fold = (folds or {}).get(cid, i % 5)
        out = model / f"fold_{fold}" / "validation"
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / f"{cid}.npz", probabilities=np.stack([1 - fg, fg]))


def read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_prepare_crops_exactly_and_keeps_every_clip(clip_stage1, nnunet_dirs):
    raw1, model = clip_stage1
    write_oof(raw1, model, lambda lab: (lab > 0) * 0.9)
    before = tree_hash(raw1)
    settings = RoiSettings(threshold=0.5, margin_mm=5.0, min_size_mm=40.0)
    result = prepare_stage2(502, 503, settings=settings, progress=False)
    assert tree_hash(raw1) == before                                  # stage-1 data only read
    ds2 = result.dataset_dir
    assert ds2.name == "Dataset503_BreastClipsStage2"
    assert not list(Path(nnunet_dirs["nnUNet_raw"]).glob(".Dataset503*"))   # no staging left behind
    info = json.loads((ds2 / "dataset.json").read_text())
    assert info["channel_names"] == {"0": "noNorm", "1": "noNorm"} and info["numTraining"] == 3
    assert info["nnunet_breast"]["stage"] == 2 and RoiSettings.from_json(info["nnunet_breast"]["roi"]) == settings
    rois = json.loads((ds2 / "cascade_rois.json").read_text())
    for cid in case_ids(raw1):
        roi = Roi.from_json(rois[cid]["roi"])
        assert roi.source == "prediction" and rois[cid]["label_voxels_outside"] == 0
        ct1 = sitk.ReadImage(str(raw1 / "imagesTr" / f"{cid}_0000.nii.gz"))
        lab1 = read(raw1 / "labelsTr" / f"{cid}.nii.gz")
        ct2 = sitk.ReadImage(str(ds2 / "imagesTr" / f"{cid}_0000.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(ct2), sitk.GetArrayFromImage(ct1)[roi.slices()])
        np.testing.assert_array_equal(read(ds2 / "labelsTr" / f"{cid}.nii.gz"), lab1[roi.slices()])
        np.testing.assert_allclose(read(ds2 / "imagesTr" / f"{cid}_0001.nii.gz"), (lab1[roi.slices()] > 0) * 0.9)
        # world geometry kept: the crop's first voxel is the ROI start in the whole CT
        np.testing.assert_allclose(ct2.GetOrigin(), ct1.TransformIndexToPhysicalPoint(roi.start[::-1]), atol=1e-4)
        # minimum size honoured (40 mm per axis, or the whole axis)
        for n, sp, full in zip(roi.size, ct1.GetSpacing()[::-1], lab1.shape):
            assert n == full or n * sp >= 40.0 - 1e-6
        assert roi.size != lab1.shape, "the ROI should be a real crop here"
    assert (ds2 / "cohort.csv").is_file()


def test_prepare_fallback_when_stage1_finds_nothing(clip_stage1):
    raw1, model = clip_stage1
    write_oof(raw1, model, lambda lab: np.zeros(lab.shape))
    result = prepare_stage2(502, 503, settings=RoiSettings(min_size_mm=40.0), progress=False)
    assert sorted(result.fallbacks) == case_ids(raw1)
    for cid, r in result.rois.items():
        assert r["roi"]["source"] == "fallback_breast"               # treated side known from cohort.csv
        assert r["label_voxels_outside"] == 0                        # the clips sit in the treated breast


def test_prepare_in_parallel_writes_the_same_dataset(clip_stage1):
    raw1, model = clip_stage1
    write_oof(raw1, model, lambda lab: (lab > 0) * 0.8)
    serial = prepare_stage2(502, 503, settings=RoiSettings(min_size_mm=40.0), progress=False)
    arrays = {f.name: sitk.GetArrayFromImage(sitk.ReadImage(str(f))) for f in serial.dataset_dir.rglob("*.nii.gz")}
    parallel = prepare_stage2(502, 503, settings=RoiSettings(min_size_mm=40.0), overwrite=True, progress=False,
                              num_processes=2)
    assert parallel.rois == serial.rois
    again = {f.name: sitk.GetArrayFromImage(sitk.ReadImage(str(f))) for f in parallel.dataset_dir.rglob("*.nii.gz")}
    assert again.keys() == arrays.keys() and len(arrays) == 9
    assert all(np.array_equal(again[k], arrays[k]) for k in arrays)


def test_prepare_without_map_for_the_ablation(clip_stage1):
    raw1, model = clip_stage1
    write_oof(raw1, model, lambda lab: (lab > 0) * 0.9)
    result = prepare_stage2(502, 503, settings=RoiSettings(min_size_mm=40.0), with_map=False, progress=False)
    info = json.loads((result.dataset_dir / "dataset.json").read_text())
    assert info["channel_names"] == {"0": "noNorm"}                 # nnUNetTrainerClipSegmentationNoMap's input
    assert not list((result.dataset_dir / "imagesTr").glob("*_0001.nii.gz"))
    assert len(list((result.dataset_dir / "imagesTr").glob("*_0000.nii.gz"))) == 3


def test_prepare_refusals(clip_stage1):
    raw1, model = clip_stage1
    with pytest.raises(ValueError, match="no trained model"):
        prepare_stage2(502, 503, progress=False)
    ids = case_ids(raw1)
    write_oof(raw1, model, lambda lab: lab > 0)
    shutil.rmtree(model / "fold_0")
    with pytest.raises(CascadeError, match="--npz"):
        prepare_stage2(502, 503, progress=False)
    write_oof(raw1, model, lambda lab: lab > 0)
    write_oof(raw1, model, lambda lab: lab > 0, folds={ids[0]: 3})   # ids[0] now validated by fold 0 and 3
    with pytest.raises(CascadeError, match="more than one fold"):
        prepare_stage2(502, 503, progress=False)
    shutil.rmtree(model / "fold_3")
    write_oof(raw1, model, lambda lab: lab > 0)
    with pytest.raises(CascadeError, match="id of its own"):
        prepare_stage2(502, 502, progress=False)
    first = prepare_stage2(502, 503, progress=False)
    with pytest.raises(CascadeError, match="--overwrite"):
        prepare_stage2(502, 503, progress=False)
    again = prepare_stage2(502, 503, overwrite=True, progress=False)
    assert again.dataset_dir == first.dataset_dir and (again.dataset_dir / "dataset.json").is_file()


def test_threshold_baseline_finds_clips_inside_the_body():
    case = make_case("clips", 4)       # every clip of this case reaches 1500 HU (partial volume dims some elsewhere)
    img = sitk.GetImageFromArray(case.hu.astype(np.float32))
    img.SetSpacing(case.grid.spacing)
    img.SetOrigin(case.grid.origin)
    mask = threshold_clips(img, 1500.0)
    det = detect_clips(case.masks["Clips"], mask, img.GetSpacing()[::-1])
    # the threshold reaches every clip; with the clips' metal artefacts (blooming) it also joins close clips into
    # one blob, which clip detection counts once
    labels, sizes = label_components(case.masks["Clips"])
    assert set(np.unique(labels[mask])) >= set(range(1, len(sizes) + 1)) and det.true_positives >= 1
    assert not (mask & ~(case.hu >= 1500)).any()
    none_inside = threshold_clips(img, 1500.0, body=np.zeros(case.hu.shape, bool))
    assert not none_inside.any()                                    # nothing outside the body mask
    big_only = threshold_clips(img, 1500.0, min_volume_mm3=1e6)
    assert not big_only.any()


def test_predicted_specks_below_the_smallest_clip_are_dropped(tmp_path):
    """A 1- or 2-voxel speck (3 / 6 mm^3 at 1 x 1 x 3 mm) is not a clip; a clip-sized component (24 mm^3) is."""
    from nnunet_breast.clips.predict import MIN_CLIP_MM3, ClipPredictOptions, predict_clips
    from nnunet_breast.inference.inputs import InputCT

    z, y, x = np.mgrid[:12, :40, :40]
    hu = np.where((y - 20) ** 2 + (x - 20) ** 2 <= 15 ** 2, 40.0, -1000.0).astype(np.float32)   # a water body
    hu[4:6, 10:12, 10:12] = 3000.0          # clip: 8 voxels = 24 mm^3
    hu[9, 25, 25] = 3000.0                  # speck: 3 mm^3
    hu[2, 28, 14:16] = 3000.0               # speck: 6 mm^3
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing((1.0, 1.0, 3.0))
    case = InputCT("SPECKS", img)
    assert 6.0 < MIN_CLIP_MM3 < 24.0
    preds, _ = predict_clips([case], tmp_path / "default", ClipPredictOptions("threshold"), progress=False)
    assert [c["voxels"] for c in preds[0].clips] == [8]
    assert preds[0].mask.sum() == 8 and preds[0].mask[4:6, 10:12, 10:12].all()
    loose, _ = predict_clips([case], tmp_path / "loose", ClipPredictOptions("threshold", min_clip_mm3=2.0),
                             progress=False)
    assert sorted(c["voxels"] for c in loose[0].clips) == [1, 2, 8]


def test_predict_pipeline_clips_json_is_predict_clips_record_plus_proposal(tmp_path):
    """`predict --model clips` writes each clips.json once, in the case folder, from the in-memory prediction:
    `predict-clips`' <case>_clips.json plus the tumour-bed proposal, and no stray clip files."""
    from nnunet_breast.clips.predict import ClipPredictOptions, predict_clips
    from nnunet_breast.inference.predict import PredictOptions, predict

    case = make_case("clips", 3)
    img = sitk.GetImageFromArray(case.hu.astype(np.float32))
    img.SetSpacing(case.grid.spacing)
    img.SetOrigin(case.grid.origin)
    (tmp_path / "in").mkdir()
    sitk.WriteImage(img, str(tmp_path / "in" / "caseA.nii.gz"))
    opts = ClipPredictOptions("threshold")
    predict_clips(load_inputs(tmp_path / "in"), tmp_path / "alone", opts, progress=False)
    assert sorted(p.name for p in (tmp_path / "alone").iterdir()) == ["caseA.nii.gz", "caseA_clips.json", "clips.csv"]
    alone = json.loads((tmp_path / "alone" / "caseA_clips.json").read_text())
    [res] = predict(tmp_path / "in", tmp_path / "out", PredictOptions("clips", clips=opts, preview=False),
                    progress=False)
    folder = tmp_path / "out" / "caseA"
    data = json.loads((folder / "clips.json").read_text())
    assert list(data)[-2:] == ["clips", "tumour_bed_proposal"]                  # the layout predict always wrote
    proposal = data.pop("tumour_bed_proposal")
    assert data == alone and res.n_clips == alone["n_clips"] >= 1
    assert proposal["name"] == "CTV_TumorBed_proposal" and proposal["volume_cc"] == res.proposal_cc
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "clips.json", "masks/CTV_TumorBed_proposal.nii.gz", "masks/Clips.nii.gz", "qa_report.html", "summary.json"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "masks" / "Clips.nii.gz"))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "alone" / "caseA.nii.gz"))))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".summary.lock", "caseA", "summary.csv"]


def test_clip_table_centroids_in_patient_mm():
    arr = np.full((10, 20, 30), 0.0, np.float32)
    mask = np.zeros(arr.shape, bool)
    mask[2:4, 5:7, 10:12] = True            # 8 voxels
    mask[7, 15, 25] = True                  # 1 voxel
    arr[2, 5, 10] = 3071.0
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 1.0, 3.0))
    img.SetOrigin((-10.0, 20.0, 100.0))
    rows = clip_table(mask, img)
    assert [r["clip"] for r in rows] == [1, 2] and [r["voxels"] for r in rows] == [8, 1]
    assert rows[0]["centroid_mm"] == [-10 + 10.5 * 0.5, 20 + 5.5 * 1.0, 100 + 2.5 * 3.0]
    assert rows[0]["volume_mm3"] == 8 * 1.5 and rows[0]["max_hu"] == 3071.0
    assert rows[1]["centroid_mm"] == [-10 + 25 * 0.5, 20 + 15.0, 100 + 21.0]
    with pytest.raises(ValueError, match="shape"):
        clip_table(mask[:5], img)


def test_inputs_dicom_nifti_and_refusals(clips_export, tmp_path):
    cases = load_inputs(clips_export)
    assert len(cases) == 3 and all(c.dicom is not None for c in cases)
    from nnunet_breast.dataset_conversion.dataset import Report, find_sources
    sources = find_sources(ConvertOptions("clips", clips_export, 502, "X", tmp_path), Report(tmp_path))
    assert sorted(c.case_id for c in cases) == sorted(s.case_id for s in sources)   # same ids as the converter
    for c in cases:
        assert c.image.GetPixelID() == sitk.sitkFloat32 and len(c.dicom.slice_sop_uids) == c.image.GetSize()[2]
    nii = tmp_path / "nii"
    nii.mkdir()
    sitk.WriteImage(cases[0].image, str(nii / "caseA_0000.nii.gz"))
    sitk.WriteImage(cases[1].image, str(nii / "caseB.nii.gz"))
    got = load_inputs(nii)
    assert [c.case_id for c in got] == ["caseA", "caseB"] and got[0].dicom is None
    assert [c for c, _ in list_inputs(nii / "caseB.nii.gz")] == ["caseB"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty"):
        load_inputs(empty)
    rs_only = tmp_path / "rs_only"
    rs_only.mkdir()
    for rs in clips_export.rglob("RS*.dcm"):
        shutil.copy(rs, rs_only / rs.name)
    with pytest.raises(InputError, match="no CT series"):
        load_inputs(rs_only)
    with pytest.raises(InputError, match="does not exist"):
        load_inputs(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------------------------------
# planning: the fine spacing is the planning CT's
# ---------------------------------------------------------------------------------------------------------------------
def _stock_plans(spacing, median):
    cfg = {"data_identifier": "nnUNetPlans_3d_fullres", "spacing": list(spacing), "patch_size": [40, 96, 96],
           "median_image_size_in_voxels": list(median), "batch_size": 2,
           "normalization_schemes": ["NoNormalization"],
           "architecture": {"network_class_name": "x", "arch_kwargs": {}}}
    return {"dataset_name": "Dataset502_BreastClips", "plans_name": "nnUNetPlans", "configurations": {"3d_fullres": cfg}}


def test_clip_configuration_patch_is_a_cube_in_mm():
    from nnunet_breast.planning import clip_configuration

    base = _stock_plans([3.0, 1.0, 1.0], [100, 400, 400])["configurations"]["3d_fullres"]
    fine = clip_configuration(base, [3.0, 1.0, 1.0], "3d_clip_fullres")
    assert fine["spacing"] == [3.0, 1.0, 1.0]
    assert fine["patch_size"] == [32, 96, 96]                      # 96 mm on every axis
    strides = fine["architecture"]["arch_kwargs"]["strides"]
    assert strides[1][0] == 1 and strides[1][1:] == [2, 2]          # anisotropic: no z pooling at first
    iso = clip_configuration(base, 2.0, "3d_clip_fullres")
    assert iso["spacing"] == [2.0] * 3 and iso["patch_size"] == [96, 96, 96]
    small = clip_configuration(dict(base, median_image_size_in_voxels=[40, 96, 96]), 4.0, "3d_clip_location")
    assert all(p <= m for p, m in zip(small["patch_size"], [32, 24, 24]))   # never beyond the median image


@pytest.mark.parametrize("spacing_mm,expected", [(None, [3.0, 1.1, 1.1]), (2.0, [2.0, 2.0, 2.0])])
def test_plan_clips_fine_spacing(nnunet_dirs, spacing_mm, expected):
    from nnunet_breast.planning import plan_clips

    folder = Path(nnunet_dirs["nnUNet_preprocessed"]) / "Dataset502_BreastClips"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "noNorm"}, "labels": {}}))
    (folder / "nnUNetPlans.json").write_text(json.dumps(_stock_plans([3.0, 1.1, 1.1], [100, 400, 400])))
    out = plan_clips(502, spacing_mm=spacing_mm)
    assert out["3d_clip_location"]["spacing"] == [4.0] * 3 and out["3d_clip_fullres"]["spacing"] == expected
    assert out["3d_clip_location"]["patch_size"] == [48, 48, 48]                   # 192 mm, the paper's view
    assert out["3d_clip_location"]["resampling_fn_data_kwargs"]["order"] == 1     # as predict-clips resamples
    written = json.loads((folder / "nnUNetPlans.json").read_text())["configurations"]
    assert set(written) == {"3d_fullres", "3d_clip_location", "3d_clip_fullres"}
