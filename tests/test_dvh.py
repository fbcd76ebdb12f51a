"""Dose-volume parameters (Table 2 of the breast paper): analytic dose fields and the `dvh` command.

The analytic cases pin the definitions (mean, Dx cc, V in cc and %) and the trilinear resampling; the
synthetic breast export checks the command end to end on a realistic tangent-pair dose.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset

from nnunet_breast.commands import dvh as dvh_cmd
from nnunet_breast.dicom.rtdose import write_rtdose
from nnunet_breast.errors import UserError
from nnunet_breast.evaluation import dvh, dvh_table
from nnunet_breast.synth.cohort import make_case

FRAME = "1.2.826.0.1.3680043.8.498.1"


def _image(arr: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(np.asarray(arr, np.float32))
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(o) for o in origin))
    return img


def _linear_dose(shape_zyx, spacing, origin, a: float, b: float = 0.0) -> sitk.Image:
    """Dose = a * x(mm) + b on the given grid."""
    x = origin[0] + spacing[0] * np.arange(shape_zyx[2])
    arr = np.broadcast_to((a * x + b)[None, None, :], shape_zyx)
    return _image(arr, spacing, origin)


def _box(shape_zyx, x: slice, y: slice, z: slice) -> np.ndarray:
    m = np.zeros(shape_zyx, bool)
    m[z, y, x] = True
    return m


# ------------------------------------------------------------------------------------------ metric definitions

def test_d_cc_and_v_gy_definitions():
    doses = np.array([10.0, 9.0, 8.0, 7.0, 6.0])
    # hottest 0.03 cc = 3 voxels of 0.01 cc: the third hottest voxel
    assert dvh.d_cc(doses, 0.01, 0.03) == 8.0
    # cumulative volume first reaching or exceeding 0.025 cc is at the third voxel too
    assert dvh.d_cc(doses, 0.01, 0.025) == 8.0
    assert dvh.d_cc(doses, 0.01, 0.005) == 10.0           # less than a voxel: the hottest voxel
    assert dvh.d_cc(doses, 0.01, 0.05) == 6.0             # exactly the structure's volume: its minimum
    assert dvh.d_cc(doses, 0.01, 1.0) == 0.0              # structure smaller than 1 cc: 0 Gy (dicompyler-core)
    assert math.isnan(dvh.d_cc(np.array([]), 0.01, 0.03))
    # 0.03 / 0.003 is 10.000000000000002 in floating point: still exactly 10 voxels
    assert dvh.d_cc(np.arange(20.0, 0.0, -1.0), 0.003, 0.03) == 11.0
    assert dvh.v_gy(doses, 0.01, 8.0, percent=False) == pytest.approx(0.03)   # >= threshold counts
    assert dvh.v_gy(doses, 0.01, 8.0, percent=True) == pytest.approx(60.0)
    assert math.isnan(dvh.v_gy(np.array([]), 0.01, 5.0, percent=True))
    assert math.isnan(dvh.mean_dose(np.array([])))


def test_d_cc_of_a_structure_smaller_than_x_cc_is_zero_as_dicompyler_core():
    """dicompyler-core's DVH.dose_constraint returns 0 dose when the volume asked for exceeds the structure's."""
    shape, spacing = (12, 20, 20), (1.0, 1.0, 2.0)        # voxel 0.002 cc
    cube = _box(shape, slice(5, 15), slice(5, 15), slice(3, 8))   # 500 voxels = 1.0 cc
    dose = np.broadcast_to(np.arange(shape[2], dtype=np.float32)[None, None, :], shape)   # x index in Gy
    values = dose[cube]
    assert dvh.d_cc(values, 0.002, 2.0) == 0.0            # D2cc of a 1 cc structure
    assert dvh.d_cc(values, 0.002, 1.0) == 5.0            # D1cc: the whole structure, its minimum (x = 5)
    assert dvh.d_cc(values, 0.002, 0.5) == 10.0           # D0.5cc: the 250 hottest voxels, x = 10..14
    p = dvh.breast_dvh_parameters(dose, {"SpinalCord": cube & (np.arange(shape[2]) >= 10)}, spacing, "L")
    assert p["spinalcord_d1cc_gy"] == 0.0                 # a 0.5 cc cord has no 1 cc: 0 Gy


def test_uniform_dose_over_a_cube():
    shape, spacing = (12, 20, 20), (1.0, 1.0, 2.0)        # voxel 0.002 cc
    cube = _box(shape, slice(5, 15), slice(5, 15), slice(3, 8))   # 10 x 10 x 5 voxels = 1.0 cc
    ct = _image(np.zeros(shape), spacing)
    # the dose on a coarser grid of its own that covers the CT: uniform stays uniform
    dose_img = _image(np.full((8, 8, 8), 10.0), (3.0, 3.0, 4.0), (-1.0, -1.0, -2.0))
    dose = dvh.dose_on_grid(dose_img, ct)
    assert dose.dtype == np.float32 and dose.shape == shape
    p = dvh.breast_dvh_parameters(dose, {"Heart": cube, "Lung_L": cube}, spacing, "L")
    assert p["heart_mean_gy"] == pytest.approx(10.0)
    assert p["heart_d0.03cc_gy"] == pytest.approx(10.0)
    assert p["heart_v5gy_cc"] == pytest.approx(1.0)
    assert p["ipsi_lung_v20gy_pct"] == 0.0
    assert p["ipsi_lung_v5gy_pct"] == pytest.approx(100.0)
    assert set(p) == set(dvh.PARAMETER_KEYS)


def test_missing_or_empty_structures_give_nan():
    shape = (6, 10, 10)
    dose = np.full(shape, 3.0, np.float32)
    heart = _box(shape, slice(2, 5), slice(2, 5), slice(1, 4))
    p = dvh.breast_dvh_parameters(dose, {"Heart": heart, "Lung_R": np.zeros(shape, bool), "SpinalCord": None},
                                  (1, 1, 1), "R")
    assert p["heart_mean_gy"] == pytest.approx(3.0)
    for key in ("ipsi_lung_mean_gy", "ipsi_lung_v20gy_pct", "ipsi_lung_v5gy_pct", "contra_lung_mean_gy",
                "esophagus_d0.03cc_gy", "spinalcord_d1cc_gy"):
        assert math.isnan(p[key]), key
    rows = dvh.compare_manual_auto(dose, {"Heart": heart}, {}, (1, 1, 1), "R")
    assert [r["parameter"] for r in rows] == list(dvh.PARAMETER_KEYS)
    assert rows[0]["manual"] == pytest.approx(3.0) and math.isnan(rows[0]["auto"]) and math.isnan(rows[0]["abs_diff"])
    with pytest.raises(ValueError, match="side"):
        dvh.breast_dvh_parameters(dose, {}, (1, 1, 1), "left")


def test_linear_gradient_same_grid_mean_and_d1cc():
    a = 0.5                                               # Gy per mm along x
    shape, spacing, origin = (20, 20, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)
    ct = _image(np.zeros(shape), spacing, origin)
    box = _box(shape, slice(15, 35), slice(5, 15), slice(5, 15))   # each x column slab: 100 voxels = 0.1 cc
    dose = dvh.dose_on_grid(_linear_dose(shape, spacing, origin, a), ct)
    p = dvh.breast_dvh_parameters(dose, {"Heart": box, "SpinalCord": box}, spacing, "L")
    x_centres = origin[0] + spacing[0] * np.arange(15, 35)
    assert p["heart_mean_gy"] == pytest.approx(a * x_centres.mean(), rel=1e-6)
    # the hottest 1 cc is the 10 slabs x = 25..34 mm; its minimum dose is at x = 25 mm
    assert p["spinalcord_d1cc_gy"] == pytest.approx(a * 25.0, rel=1e-6)
    assert p["heart_d0.03cc_gy"] == pytest.approx(a * 34.0, rel=1e-6)   # 30 voxels < one 100-voxel slab


def test_linear_gradient_on_a_coarser_offset_dose_grid_is_reproduced():
    """Trilinear interpolation is exact for a linear field anywhere inside the dose grid's voxel centres."""
    a, b = 0.8, 2.0
    shape, spacing, origin = (16, 24, 40), (1.17, 1.17, 3.0), (-20.0, -10.0, -5.0)
    ct = _image(np.zeros(shape), spacing, origin)
    d_spacing, d_origin = (2.5, 2.5, 3.0), (-21.3, -11.1, -6.5)
    d_shape = (19, 13, 21)                                # covers the CT with margin
    dose = dvh.dose_on_grid(_linear_dose(d_shape, d_spacing, d_origin, a, b), ct)
    x_ct = origin[0] + spacing[0] * np.arange(shape[2])
    expected = np.broadcast_to((a * x_ct + b)[None, None, :], shape)
    np.testing.assert_allclose(dose, expected, rtol=1e-5, atol=1e-4)
    box = _box(shape, slice(4, 36), slice(3, 20), slice(2, 14))
    p = dvh.breast_dvh_parameters(dose, {"Heart": box}, spacing, "R")
    assert p["heart_mean_gy"] == pytest.approx(a * x_ct[4:36].mean() + b, rel=1e-5)


def test_v20_percent_of_a_box_half_above_20_gy():
    shape, spacing = (10, 10, 20), (1.0, 1.0, 1.0)
    ct = _image(np.zeros(shape), spacing)
    dose = dvh.dose_on_grid(_linear_dose(shape, spacing, (0.0, 0.0, 0.0), 2.0, 1.0), ct)   # 1, 3, ..., 39 Gy
    lung = np.ones(shape, bool)
    p = dvh.breast_dvh_parameters(dose, {"Lung_R": lung, "Lung_L": lung}, spacing, "R")
    assert p["ipsi_lung_v20gy_pct"] == pytest.approx(50.0)
    assert p["ipsi_lung_v5gy_pct"] == pytest.approx(90.0)          # 18 of 20 slabs have >= 5 Gy
    assert p["contra_lung_mean_gy"] == pytest.approx(20.0, rel=1e-6)


def test_dose_outside_its_grid_is_zero():
    ct = _image(np.zeros((4, 10, 30)))
    dose_img = _image(np.full((4, 10, 10), 7.0), (1, 1, 1), (0.0, 0.0, 0.0))   # covers x = 0..9 mm
    dose = dvh.dose_on_grid(dose_img, ct)
    assert np.all(dose[:, :, :10] == 7.0) and np.all(dose[:, :, 11:] == 0.0)


# ------------------------------------------------------------------------------------------ refusals

def _write_dose(path: Path, frame: str, value: float = 12.0) -> Path:
    study = Dataset()
    study.PatientID = "DVH-TEST"
    study.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    arr = np.full((5, 8, 8), value, np.float32)
    return write_rtdose(arr, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), study, path,
                        series_uid="1.2.826.0.1.3680043.8.498.3", frame_of_reference_uid=frame,
                        plan_uid="1.2.826.0.1.3680043.8.498.4")


def test_load_dose_checks_frame_of_reference_and_units(tmp_path):
    ct = _image(np.zeros((8, 14, 14)), (1.0, 1.0, 1.0))
    path = _write_dose(tmp_path / "RD.dcm", FRAME)
    dose, header = dvh.load_dose(path, ct, FRAME)
    assert dose.shape == (8, 14, 14) and float(dose.max()) == pytest.approx(12.0, rel=1e-6)
    with pytest.raises(ValueError, match="FrameOfReferenceUID"):
        dvh.load_dose(path, ct, "1.2.826.0.1.3680043.8.498.999")
    ds = pydicom.dcmread(path)
    ds.DoseUnits = "RELATIVE"
    ds.save_as(tmp_path / "RD_relative.dcm")
    with pytest.raises(ValueError, match="DoseUnits"):
        dvh.load_dose(tmp_path / "RD_relative.dcm", ct, FRAME)
    far = _image(np.zeros((8, 14, 14)), (1.0, 1.0, 1.0), (500.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="does not overlap"):
        dvh.load_dose(path, far, FRAME)


# ------------------------------------------------------------------------------------------ synthetic export

def _case_files(folder: Path) -> tuple[Path, Path]:
    return next(folder.glob("RS.*.dcm")), next(folder.glob("RD.*.dcm"))


def _read_ct(folder: Path):
    from nnunet_breast.dicom.ct_reader import read_ct_series
    return read_ct_series(dvh_table.ct_files(folder))


def _run(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    dvh_cmd.add_arguments(p)
    return dvh_cmd.run(p.parse_args(argv))


def _case_rows(out: Path) -> list[dict]:
    with open(out / "dvh_cases.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_rtstruct_masks_refuse_another_frame_and_duplicate_names(breast_export, tmp_path):
    case = sorted(p for p in breast_export.iterdir() if p.is_dir())[0]
    rs, _ = _case_files(case)
    ct = _read_ct(case)
    frame = str(ct.header.FrameOfReferenceUID)
    masks = dvh.load_masks(rs, ct.image, frame)
    assert set(masks) == set(dvh.DVH_STRUCTURES)
    with pytest.raises(ValueError, match="FrameOfReferenceUID"):
        dvh.load_masks(rs, ct.image, "1.2.826.0.1.3680043.8.498.999")
    ds = pydicom.dcmread(rs)
    esophagus = next(r for r in ds.StructureSetROISequence if dvh.catalog.match_name(r.ROIName) == "Esophagus")
    esophagus.ROIName = "Cor"                                     # now two ROIs mean Heart
    ds.save_as(tmp_path / "RS_dup.dcm")
    with pytest.raises(ValueError, match="several ROIs"):
        dvh.load_masks(tmp_path / "RS_dup.dcm", ct.image, frame)


def test_cli_manual_equals_auto_then_second_case(breast_export, tmp_path, capsys):
    cases = sorted(p for p in breast_export.iterdir() if p.is_dir())
    out = tmp_path / "dvh"
    truth_side = make_case("breast", 0, 0).side
    rs, rd = _case_files(cases[0])
    assert _run(["--ct", str(cases[0]), "--rtdose", str(rd), "--manual", str(rs), "--auto", str(rs), "-o", str(out),
                 "--case-id", "case0"]) == 0
    record = json.loads((out / "dvh_case0.json").read_text())
    assert record["side"] == truth_side and record["side_source"] == "dose"
    params = {p["parameter"]: p for p in record["parameters"]}
    assert list(params) == list(dvh.PARAMETER_KEYS)
    for p in params.values():
        assert p["abs_diff"] == 0.0, p
    v = {k: p["manual"] for k, p in params.items()}
    assert all(math.isfinite(x) for x in v.values())
    assert 0 <= v["heart_mean_gy"] <= v["heart_d0.03cc_gy"] <= record["dose_max_gy"]
    assert v["ipsi_lung_mean_gy"] > v["contra_lung_mean_gy"]      # tangents spare the other lung
    assert 0 < v["ipsi_lung_v20gy_pct"] < v["ipsi_lung_v5gy_pct"] < 100
    assert record["dose_max_gy"] == pytest.approx(50.0, rel=0.02)  # synthetic prescription
    if truth_side == "R":
        assert v["heart_mean_gy"] < v["ipsi_lung_mean_gy"]        # the heart is far from a right-sided field

    rows = _case_rows(out)
    assert len(rows) == 9 and {r["case_id"] for r in rows} == {"case0"}
    summary = (out / "dvh_summary.md").read_text()
    for label in dvh.LABELS.values():
        assert label in summary
    with open(out / "dvh_summary.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["parameter"] for r in table] == list(dvh.PARAMETER_KEYS) and {r["n"] for r in table} == {"1"}

    # the opposite side swaps the lungs: the "ipsilateral" lung is now the spared one
    assert _run(["--ct", str(cases[0]), "--rtdose", str(rd), "--manual", str(rs), "--auto", str(rs),
                 "-o", str(tmp_path / "swapped"), "--side", "L" if truth_side == "R" else "R"]) == 0
    swapped = {p["parameter"]: p["manual"] for p in json.loads(next((tmp_path / "swapped").glob("dvh_*.json"))
                                                               .read_text())["parameters"]}
    assert swapped["ipsi_lung_mean_gy"] == pytest.approx(v["contra_lung_mean_gy"])
    assert swapped["contra_lung_mean_gy"] == pytest.approx(v["ipsi_lung_mean_gy"])
    assert swapped["heart_mean_gy"] == pytest.approx(v["heart_mean_gy"])

    # second case: auto = NIfTI masks with synonym names, heart dilated by one voxel in-plane, no esophagus
    rs1, rd1 = _case_files(cases[1])
    ct1 = _read_ct(cases[1])
    manual = dvh.load_masks(rs1, ct1.image, str(ct1.header.FrameOfReferenceUID))
    masks_dir = tmp_path / "auto_masks"
    masks_dir.mkdir()
    from scipy import ndimage
    auto = dict(manual, Heart=ndimage.binary_dilation(manual["Heart"], structure=np.ones((1, 3, 3), bool)))
    names = {"Heart": "Cor", "Lung_L": "Lt Lung", "Lung_R": "Lung_R", "Esophagus": "Oesophagus",
             "SpinalCord": "Spinal Cord"}
    del auto["Esophagus"]
    for canon, mask in auto.items():
        img = sitk.GetImageFromArray(mask.astype(np.uint8))
        img.CopyInformation(ct1.image)
        sitk.WriteImage(img, str(masks_dir / f"{names[canon]}.nii.gz"))
    (masks_dir / "Notes.nii.gz").write_bytes(b"")                 # unknown names are not read
    assert _run(["--ct", str(cases[1]), "--rtdose", str(rd1), "--manual", str(rs1), "--auto", str(masks_dir),
                 "-o", str(out), "--case-id", "case1"]) == 0
    rows = _case_rows(out)
    assert len(rows) == 18
    diffs = {r["parameter"]: dvh_table._parse(r["abs_diff"]) for r in rows if r["case_id"] == "case1"}
    assert diffs["heart_mean_gy"] > 0
    for key in ("ipsi_lung_mean_gy", "ipsi_lung_v20gy_pct", "contra_lung_mean_gy", "spinalcord_d1cc_gy"):
        assert diffs[key] == 0.0, key
    case1 = {r["parameter"]: r for r in rows if r["case_id"] == "case1"}
    assert case1["esophagus_d0.03cc_gy"]["auto"] == "" and case1["esophagus_d0.03cc_gy"]["abs_diff"] == ""
    assert float(case1["esophagus_d0.03cc_gy"]["manual"]) > 0
    with open(out / "dvh_summary.csv", newline="") as f:
        table = {r["parameter"]: r for r in csv.DictReader(f)}
    # paired statistics: the esophagus counts only where both contour sets have it
    assert table.pop("esophagus_d0.03cc_gy")["n"] == "1"
    assert {r["n"] for r in table.values()} == {"2"}
    captured = capsys.readouterr()
    assert "case1" in captured.out and "auto contours lack Esophagus" in captured.err

    # rerunning a case replaces its rows instead of appending duplicates
    assert _run(["--ct", str(cases[0]), "--rtdose", str(rd), "--manual", str(rs), "--auto", str(rs), "-o", str(out),
                 "--case-id", "case0", "--side", truth_side]) == 0
    rows = _case_rows(out)
    assert len(rows) == 18 and sorted({r["case_id"] for r in rows}) == ["case0", "case1"]


def test_cli_refusals_exit_2(breast_export, tmp_path, monkeypatch, capsys):
    from nnunet_breast import cli

    monkeypatch.setitem(cli.COMMANDS, "dvh", "dvh")
    case = sorted(p for p in breast_export.iterdir() if p.is_dir())[0]
    rs, rd = _case_files(case)
    other = _write_dose(tmp_path / "RD_other.dcm", "1.2.826.0.1.3680043.8.498.999")
    code = cli.main(["dvh", "--ct", str(case), "--rtdose", str(other), "--manual", str(rs), "--auto", str(rs),
                     "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "FrameOfReferenceUID" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(UserError, match="no CT series"):
        _run(["--ct", str(tmp_path), "--rtdose", str(rd), "--manual", str(rs), "--auto", str(rs),
              "-o", str(tmp_path / "o")])
    with pytest.raises(UserError, match="not found"):
        _run(["--ct", str(case), "--rtdose", str(rd), "--manual", str(rs), "--auto", str(tmp_path / "nope"),
              "-o", str(tmp_path / "o")])
    assert not (tmp_path / "o" / "dvh_cases.csv").exists()
