"""Any patient orientation: the same phantom scanned head-/feet-first, supine/prone, decubitus, and stored with
negated direction cosines converts, predicts and exports RTSTRUCT with everything at the patient's coordinates.

The truth is the phantom in memory (``make_case``: arrays on an identity-direction grid in the patient's own LPS
axes); every scan of it must give the same patient coordinates: converted masks, clips.json centroids, RTSTRUCT
contours. A non-axial or gantry-tilted series stays a one-line refusal.
"""
from __future__ import annotations

import csv
import itertools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from shapely.geometry import Polygon

from nnunet_breast.clips.predict import ClipPredictOptions
from nnunet_breast.clips.roi import roi_from_probability
from nnunet_breast.dataset_conversion.cases import treated_side
from nnunet_breast.dataset_conversion.dataset import ConvertOptions, convert
from nnunet_breast.dataset_conversion.rasterise import rasterise_roi
from nnunet_breast.dicom.ct_reader import read_ct_series
from nnunet_breast.dicom.rtstruct import read_rtstruct
from nnunet_breast.dicom.rtstruct_export import export_rtstruct
from nnunet_breast.inference.predict import PredictOptions, predict
from nnunet_breast.structures.regions import OverlapEncoding
from nnunet_breast.synth.cohort import make_case, write_cohort
from nnunet_breast.synth.phantom import ORIENTATIONS, POSITIONS, scan_geometry
from nnunet_breast.volumes.components import components
from nnunet_breast.volumes.orientation import (array_from_lps, array_to_lps, axial_problem, grid_from_lps,
                                               to_lps)

TESTED = ("HFS", "HFP", "FFS", "FFP", "HFDL", "HFDR", "HFS-negated")


def centroid_mm(mask: np.ndarray, image: sitk.Image) -> np.ndarray:
    """Patient coordinates (mm, LPS) of a mask's voxel centroid, through the image's geometry."""
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint(np.argwhere(mask).mean(0)[::-1].tolist()))


def truth_image(case) -> sitk.Image:
    image = sitk.GetImageFromArray(case.hu)
    image.SetSpacing(case.grid.spacing)
    image.SetOrigin(case.grid.origin)
    return image


def _like(mask: np.ndarray, image: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(image)
    return out


def contour_centroid_mm(contours: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Area-weighted centroid (mm) of an ROI's contours, each plane's contours combined even-odd."""
    planes: dict[float, list[np.ndarray]] = {}
    for kind, pts in contours:
        assert kind == "CLOSED_PLANAR" and np.ptp(pts[:, 2]) < 1e-3, "contour not on an axial plane"
        planes.setdefault(round(float(pts[0, 2]), 3), []).append(pts[:, :2])
    total, moment = 0.0, np.zeros(3)
    for z, polys in planes.items():
        geom = None
        for p in polys:
            geom = Polygon(p) if geom is None else geom.symmetric_difference(Polygon(p))
        total += geom.area
        moment += geom.area * np.array([geom.centroid.x, geom.centroid.y, z])
    return moment / total


@pytest.fixture(scope="module")
def truth():
    return {"breast": make_case("breast", 0, seed=0, labels="full"), "clips": make_case("clips", 0, seed=0)}


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """orientation -> {"breast": case folder, "clips": case folder}: the same two patients in every orientation."""
    root = tmp_path_factory.mktemp("orientations")
    return {o: {cohort: write_cohort(cohort, 1, root / o / cohort, seed=0, progress=False, labels="full",
                                     orientation=o)[0] for cohort in ("breast", "clips")} for o in TESTED}


# ------------------------------------------------------------------------------------------------ the helpers
DIRECTIONS = [np.array([[s[j] if p == perm[j] else 0 for j in range(3)] for p in range(3)], float)
              for perm in itertools.permutations(range(3)) for s in itertools.product((1, -1), repeat=3)]


@pytest.mark.parametrize("k", range(len(DIRECTIONS)))
def test_lps_layout_round_trips_every_axis_aligned_direction(k):
    d = DIRECTIONS[k].ravel()
    rng = np.random.default_rng(k)
    lps = sitk.GetImageFromArray(rng.random((5, 6, 7)).astype(np.float32))
    lps.SetSpacing((0.8, 0.9, 3.0))
    lps.SetOrigin((-20.0, 15.0, -300.0))
    spacing, origin = grid_from_lps(lps.GetSize(), lps.GetSpacing(), lps.GetOrigin(), d)
    scan = sitk.GetImageFromArray(np.ascontiguousarray(array_from_lps(sitk.GetArrayFromImage(lps), d)))
    scan.SetSpacing(spacing)
    scan.SetOrigin(origin)
    scan.SetDirection(d)
    back = to_lps(scan)                              # the scan's voxels, laid out again
    np.testing.assert_allclose(back.GetDirection(), np.eye(3).ravel())
    np.testing.assert_allclose(back.GetOrigin(), lps.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(back.GetSpacing(), lps.GetSpacing())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(lps))
    arr = sitk.GetArrayFromImage(scan)
    np.testing.assert_array_equal(array_to_lps(arr, d), sitk.GetArrayFromImage(lps))
    for idx in [(0, 0, 0), (6, 5, 4), (3, 1, 2)]:                   # every voxel keeps its patient position
        assert scan[scan.TransformPhysicalPointToIndex(lps.TransformIndexToPhysicalPoint(idx))] == lps[idx]
    assert (axial_problem(d) is None) == (abs(DIRECTIONS[k][2, 2]) == 1)


def test_non_axial_grids_are_named():
    assert "sagittal or coronal" in axial_problem((1, 0, 0, 0, 0, 1, 0, -1, 0))
    tilted = (1, 0, 0, 0, np.cos(0.2), np.sin(0.2), 0, -np.sin(0.2), np.cos(0.2))
    assert "oblique or gantry-tilted" in axial_problem(tilted) and "11.46 degrees" in axial_problem(tilted)
    assert axial_problem((0, 1, 0, -1, 0, 0, 0, 0, -1)) is None       # decubitus, feet-first: axial


def test_every_orientation_has_a_geometry():
    for o in ORIENTATIONS:
        position, d = scan_geometry(o)
        assert position in POSITIONS and np.allclose(d.T @ d, np.eye(3)) and abs(d[2, 2]) == 1
        assert d[2, 2] == (1 if position.startswith("HF") else -1)    # slices run towards the head for HF scans
    with pytest.raises(ValueError, match="orientation"):
        scan_geometry("HFX")


# ------------------------------------------------------------------------------------------------ the scans
@pytest.mark.parametrize("orientation", TESTED)
def test_scan_geometry_in_the_files(scans, truth, orientation):
    """PatientPosition, ImageOrientationPatient and ImagePositionPatient describe one patient: read back and laid
    out in LPS, the CT is the phantom's, voxel for voxel, at the phantom's coordinates."""
    folder = scans[orientation]["breast"]
    position, d = scan_geometry(orientation)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in folder.glob("CT.*.dcm")]
    assert {h.PatientPosition for h in headers} == {position}
    assert {tuple(float(v) for v in h.ImageOrientationPatient) for h in headers} == {(*d[:, 0], *d[:, 1])}
    ct = read_ct_series(sorted(folder.glob("CT.*.dcm")))
    np.testing.assert_allclose(np.asarray(ct.image.GetDirection()).reshape(3, 3), d)
    ipp = np.array(sorted((tuple(float(v) for v in h.ImagePositionPatient) for h in headers),
                          key=lambda p: np.dot(p, d[:, 2])))
    np.testing.assert_allclose(np.diff(ipp, axis=0), np.tile(ct.image.GetSpacing()[2] * d[:, 2], (len(ipp) - 1, 1)),
                               atol=2e-3)
    lps = to_lps(ct.image)
    np.testing.assert_allclose(lps.GetOrigin(), truth["breast"].grid.origin, atol=2e-3)
    hu = sitk.GetArrayFromImage(lps)
    np.testing.assert_array_equal(hu, make_case("breast", 0, seed=0, labels="full", orientation=orientation).hu)
    patient = np.logical_or.reduce(list(truth["breast"].masks.values()))    # only the couch moved
    np.testing.assert_array_equal(hu[patient], truth["breast"].hu[patient])


@pytest.mark.parametrize("orientation", TESTED)
def test_convert_puts_masks_and_side_at_patient_coordinates(scans, truth, orientation, tmp_path):
    """convert: every structure (breast) and the clips land where the phantom has them; the treated side is the
    phantom's (from the dose for the breast case, from the clips for the clip case)."""
    for cohort, dataset_id in (("breast", 601), ("clips", 602)):
        case = truth[cohort]
        report = convert(ConvertOptions(cohort, scans[orientation][cohort].parent, dataset_id, "Orient",
                                        tmp_path / "raw"), progress=False)
        assert len(report.converted) == 1 and not report.failed, report.cases
        ds = json.loads((report.dataset_dir / "dataset.json").read_text())
        (label_file,) = (report.dataset_dir / "labelsTr").glob("*.nii.gz")
        label = sitk.ReadImage(str(label_file))
        np.testing.assert_allclose(label.GetDirection(), np.eye(3).ravel())       # stored in the LPS layout
        arr = sitk.GetArrayFromImage(label)
        masks = (OverlapEncoding.from_json(ds["nnunet_breast"]["encoding"]).decode(arr) if cohort == "breast"
                 else {"Clips": arr == 1})
        reference = truth_image(case)
        for name, mask in case.masks.items():
            np.testing.assert_allclose(centroid_mm(masks[name], label), centroid_mm(mask, reference), atol=1e-3,
                                       err_msg=name)
            np.testing.assert_array_equal(masks[name], mask, err_msg=name)
        with open(report.dataset_dir / "cohort.csv", newline="") as f:
            (row,) = list(csv.DictReader(f))
        assert row["side"] == case.side


@pytest.fixture(scope="module")
def predictions(scans, tmp_path_factory):
    """``nnunet-breast predict --model clips --clips-method threshold`` (the library call) on every clip scan."""
    out = {}
    for o in TESTED:
        folder = tmp_path_factory.mktemp(f"pred_{o}")
        (result,) = predict(scans[o]["clips"].parent, folder,
                            PredictOptions(model="clips", clips=ClipPredictOptions(method="threshold"), preview=False),
                            progress=False)
        out[o] = result.folder
    return out


@pytest.mark.parametrize("orientation", TESTED)
def test_predicted_clips_at_patient_coordinates(predictions, scans, truth, orientation):
    """clips.json centroids: the same in every orientation, and on the phantom's clips; the RTSTRUCT's Clips and
    tumour-bed contours lie on the predicted voxels, at their patient coordinates."""
    folder = predictions[orientation]
    clips = json.loads((folder / "clips.json").read_text())
    reference = json.loads((predictions["HFS"] / "clips.json").read_text())
    centroids = np.array([c["centroid_mm"] for c in clips["clips"]])
    np.testing.assert_allclose(centroids, np.array([c["centroid_mm"] for c in reference["clips"]]), atol=0.011)
    case = truth["clips"]                                             # every phantom clip found where it is
    _, truth_centroids, _ = components(case.masks["Clips"], case.grid.spacing[::-1], case.grid.origin[::-1])
    for centre in truth_centroids[:, ::-1]:                           # (a flip would be tens of mm off)
        assert np.min(np.linalg.norm(centroids - centre, axis=1)) <= max(case.grid.spacing), centre
    # the proposal is cut to the body mask, which the couch (moved under the patient) may touch: a few voxels
    assert clips["tumour_bed_proposal"]["volume_cc"] == pytest.approx(reference["tumour_bed_proposal"]["volume_cc"],
                                                                       rel=0.01)

    ct = read_ct_series(sorted(scans[orientation]["clips"].glob("CT.*.dcm")))
    _, rois = read_rtstruct(next(folder.glob("RS.*.dcm")))
    for roi in rois:
        mask_file = folder / "masks" / f"{roi.name}.nii.gz"
        mask_image = sitk.ReadImage(str(mask_file))
        mask = sitk.GetArrayFromImage(mask_image) > 0
        np.testing.assert_array_equal(rasterise_roi(roi, ct.image), mask, err_msg=roi.name)
        np.testing.assert_allclose(contour_centroid_mm(roi.contours), centroid_mm(mask, mask_image),
                                   atol=0.25 * max(ct.image.GetSpacing()[:2]), err_msg=roi.name)
    contoured = to_lps(_like(rasterise_roi(next(r for r in rois if r.name == "Clips"), ct.image), ct.image))
    np.testing.assert_allclose(contoured.GetOrigin(), case.grid.origin, atol=2e-3)
    labels, _, sizes = components(case.masks["Clips"], case.grid.spacing[::-1])
    hit = np.bincount(labels[sitk.GetArrayFromImage(contoured) > 0], minlength=len(sizes) + 1)[1:]
    assert np.all(hit > 0), (hit, sizes)                            # the RTSTRUCT outlines every phantom clip


@pytest.mark.parametrize("orientation", TESTED)
def test_rtstruct_export_of_every_structure(scans, truth, orientation, tmp_path):
    """export_rtstruct of the 20 phantom structures on each scan: contours at the phantom's patient coordinates
    (area-weighted centroid within a quarter pixel of the voxels'), each rasterising back to its voxels."""
    case = truth["breast"]
    ct = read_ct_series(sorted(scans[orientation]["breast"].glob("CT.*.dcm")))
    d = ct.image.GetDirection()
    masks = {n: np.ascontiguousarray(array_from_lps(m, d)) for n, m in case.masks.items()}   # the scan's layout
    _, rois = read_rtstruct(export_rtstruct(masks, ct, tmp_path / "RS.dcm"))
    reference = truth_image(case)
    for roi in rois:
        np.testing.assert_array_equal(rasterise_roi(roi, ct.image), masks[roi.name], err_msg=roi.name)
        np.testing.assert_allclose(contour_centroid_mm(roi.contours), centroid_mm(case.masks[roi.name], reference),
                                   atol=0.25 * max(case.grid.spacing[:2]), err_msg=roi.name)


@pytest.mark.parametrize("orientation", TESTED)
def test_fallback_roi_and_side_use_patient_directions(scans, truth, orientation):
    """With no stage-1 clip, the cascade's ROI is the anterior half of the body on the treated side in patient
    coordinates: the same box of the patient in every orientation. The clip cohort's side, too."""
    case = truth["clips"]
    ct = read_ct_series(sorted(scans[orientation]["clips"].glob("CT.*.dcm")))
    hu = sitk.GetArrayFromImage(ct.image)
    roi = roi_from_probability(np.zeros_like(hu), ct.image.GetSpacing()[::-1], 0.0, (1, 1, 1), hu=hu,
                               side=case.side, direction=ct.image.GetDirection())
    assert roi.source == "fallback_breast"
    corners = [ct.image.TransformIndexToPhysicalPoint([int(v) for v in index[::-1]])
               for index in (roi.start, np.asarray(roi.stop) - 1)]
    box = np.sort(corners, axis=0)
    ref = roi_from_probability(np.zeros_like(case.hu), case.grid.spacing[::-1], 0.0, (1, 1, 1), hu=case.hu,
                               side=case.side)
    origin, spacing = np.asarray(case.grid.origin), np.asarray(case.grid.spacing)
    ref_box = np.sort([origin + np.asarray(ref.start[::-1]) * spacing,
                       origin + (np.asarray(ref.stop[::-1]) - 1) * spacing], axis=0)
    np.testing.assert_allclose(box, ref_box, atol=2e-3)
    body = hu > -400
    assert treated_side({"Clips": np.ascontiguousarray(array_from_lps(case.masks["Clips"], ct.image.GetDirection()))},
                        ct.image, "clips", body) == case.side


def test_evaluation_of_a_prediction_on_the_ct_grid(scans, tmp_path):
    """predict-clips writes masks on the CT's grid; convert writes labels in the LPS layout. Evaluating one against
    the other compares the same voxels (not array indices): a decubitus scan scores as the supine one."""
    from nnunet_breast.clips.predict import predict_clips_from
    from nnunet_breast.evaluation.evaluate import evaluate_one, load_dataset_encoding

    scores = {}
    for k, o in enumerate(("HFS", "HFDL", "HFS-negated")):
        report = convert(ConvertOptions("clips", scans[o]["clips"].parent, 610 + k, "Eval", tmp_path / "raw"),
                         progress=False)
        (pred,), _ = predict_clips_from(scans[o]["clips"].parent, tmp_path / f"pred_{o}",
                                        ClipPredictOptions(method="threshold"), progress=False)
        if o != "HFS":
            assert sitk.ReadImage(str(pred.files["mask"])).GetDirection() != (1, 0, 0, 0, 1, 0, 0, 0, 1)
        encoding, cohort = load_dataset_encoding(report.dataset_dir / "dataset.json")
        rows, clip = evaluate_one(pred.case_id, report.dataset_dir / "labelsTr", tmp_path / f"pred_{o}", encoding,
                                  cohort, 1.0)
        scores[o] = (rows[0]["dsc"], clip.clips_found, clip.clips_missed, clip.clips_false)
    assert scores["HFS"][0] > 0.5
    assert scores["HFDL"] == scores["HFS-negated"] == scores["HFS"]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy is not installed")
@pytest.mark.parametrize("orientation", ["HFDL", "FFP", "HFS-negated"])
def test_oriented_objects_pass_dciodvfy(scans, predictions, orientation):
    """The oriented CT slices and structure sets, synthetic and predicted, conform (dciodvfy: no Error line)."""
    folder = scans[orientation]["breast"]
    for path in (next(folder.glob("CT.*.dcm")), next(folder.glob("RS.*.dcm")),
                 next(predictions[orientation].glob("RS.*.dcm"))):
        run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
        errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"


# ------------------------------------------------------------------------------------------------ refusals
def _rewrite(folder: Path, row, col, shear: float = 0.0) -> None:
    """Give every CT slice of ``folder`` the orientation (row, col), stacked along their normal (plus an in-plane
    shift of ``shear`` mm per slice: a gantry tilt written into the positions)."""
    row, col = np.asarray(row, float), np.asarray(col, float)
    normal = np.cross(row, col)
    files = sorted(folder.glob("CT.*.dcm"), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ipp = np.array([-40.0, 12.5, -250.0]) + k * 3.0 * normal + k * shear * col
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row, *col)]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
        ds.save_as(f)


@pytest.mark.parametrize("kind", ["coronal", "oblique", "gantry_tilt"])
def test_non_axial_or_tilted_series_is_a_one_line_refusal(scans, run_cli, tmp_path, kind):
    src = tmp_path / "in" / "case"
    shutil.copytree(scans["HFS"]["clips"], src)
    for f in src.glob("RS.*.dcm"):
        f.unlink()
    if kind == "coronal":
        _rewrite(src, (1, 0, 0), (0, 0, -1))
    elif kind == "oblique":
        _rewrite(src, (1, 0, 0), (0, np.cos(0.2), np.sin(0.2)))
    else:
        _rewrite(src, (1, 0, 0), (0, 1, 0), shear=0.8)
    out = tmp_path / "out"
    r = run_cli(["nnunet-breast", "predict", "-i", src.parent, "-o", out, "--model", "clips",
                 "--clips-method", "threshold"])
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    expected = {"coronal": "sagittal or coronal", "oblique": "oblique or gantry-tilted", "gantry_tilt": "Gantry tilt"}
    assert expected[kind] in lines[0]
    assert not out.exists() or not [p for p in out.iterdir() if p.name != ".summary.lock"], list(out.iterdir())


def test_synth_cli_writes_the_orientation(run_cli, tmp_path):
    r = run_cli(["nnunet-breast", "synth", "--cohort", "clips", "--n", "1", "--out", tmp_path, "--orientation",
                 "HFDR-negated"])
    assert r.returncode == 0, r.stderr
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    h = pydicom.dcmread(next(folder.glob("CT.*.dcm")), stop_before_pixels=True)
    assert h.PatientPosition == "HFDR" and [float(v) for v in h.ImageOrientationPatient] == [0, -1, 0, 1, 0, 0]
    assert json.loads((tmp_path / "synth_clips.json").read_text())["orientation"] == "HFDR-negated"
