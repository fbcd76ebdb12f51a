"""The synthetic cohorts read back as a TPS export would: geometry, references, determinism."""
import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from nnunet_breast.structures import catalog
from nnunet_breast.cli import COMMANDS
from nnunet_breast.structures.contours import polygons_to_mask
from nnunet_breast.synth.cohort import make_case, write_cohort
from nnunet_breast.synth.export import patient_id


def read_ct_with_sitk(folder: Path):
    ct_series = pydicom.dcmread(next(folder.glob("CT.*.dcm")), stop_before_pixels=True).SeriesInstanceUID
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), ct_series))
    return reader.Execute()


def rasterise_rtstruct(rs, image: sitk.Image) -> dict[str, np.ndarray]:
    """Minimal reader for the test: even-odd fill of each plane's contours on the CT grid."""
    ox, oy, oz = image.GetOrigin()
    sx, sy, sz = image.GetSpacing()
    nx, ny, nz = image.GetSize()
    names = {r.ROINumber: r.ROIName for r in rs.StructureSetROISequence}
    out = {}
    for rc in rs.ROIContourSequence:
        mask = np.zeros((nz, ny, nx), bool)
        planes: dict[int, list] = {}
        for c in rc.ContourSequence:
            pts = np.asarray(c.ContourData, float).reshape(-1, 3)
            k = int(round((pts[0, 2] - oz) / sz))
            assert abs(oz + k * sz - pts[0, 2]) < 1e-3, "contour not on a CT plane"
            planes.setdefault(k, []).append(np.c_[(pts[:, 0] - ox) / sx, (pts[:, 1] - oy) / sy])
        for k, polys in planes.items():
            mask[k] = polygons_to_mask(polys, (ny, nx))
        out[names[rc.ReferencedROINumber]] = mask
    return out


def test_ct_geometry_and_hu_match_the_phantom(breast_export):
    for i in range(3):
        case = make_case("breast", i, seed=0)
        folder = breast_export / patient_id(case)
        image = read_ct_with_sitk(folder)
        assert image.GetSize() == case.grid.shape[::-1]
        np.testing.assert_allclose(image.GetSpacing(), case.grid.spacing, atol=1e-5)
        np.testing.assert_allclose(image.GetOrigin(), case.grid.origin, atol=1e-3)
        np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel())
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), case.hu)


def test_ct_files_are_a_real_export(breast_export):
    folder = next(p for p in breast_export.iterdir() if p.is_dir())
    slices = [pydicom.dcmread(f) for f in folder.glob("CT.*.dcm")]
    assert len({s.SeriesInstanceUID for s in slices}) == 1
    assert len({s.FrameOfReferenceUID for s in slices}) == 1
    z = np.array([float(s.ImagePositionPatient[2]) for s in slices])
    inst = np.array([int(s.InstanceNumber) for s in slices])
    order = np.argsort(z)
    assert np.allclose(np.diff(z[order]), float(slices[0].SliceThickness))
    assert not np.array_equal(np.argsort(inst), order), "instance numbers should not give the spatial order"
    s = slices[0]
    assert s.Modality == "CT" and s.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert [float(v) for v in s.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert float(s.RescaleSlope) == 1 and float(s.RescaleIntercept) in (-1024, -1000)
    assert s.InstitutionName and s.PatientID and s.StudyInstanceUID


def test_rtstruct_holds_all_20_structures_and_reproduces_the_masks(breast_export):
    contrast_seen, sides = set(), set()
    for i in range(3):
        case = make_case("breast", i, seed=0)
        contrast_seen.add(case.contrast)
        sides.add(case.side)
        folder = breast_export / patient_id(case)
        rs = pydicom.dcmread(next(folder.glob("RS.*.dcm")))
        ct = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in folder.glob("CT.*.dcm")}
        frame = pydicom.dcmread(next(folder.glob("CT.*.dcm")), stop_before_pixels=True).FrameOfReferenceUID
        assert rs.Modality == "RTSTRUCT"
        assert rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == frame
        refd = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
        assert {c.ReferencedSOPInstanceUID for c in refd.ContourImageSequence} == ct
        for rc in rs.ROIContourSequence:
            for c in rc.ContourSequence:
                assert c.ContourGeometricType == "CLOSED_PLANAR"
                assert c.ContourImageSequence[0].ReferencedSOPInstanceUID in ct
                assert all(len(str(v)) <= 16 for v in c.ContourData)
        names = [r.ROIName for r in rs.StructureSetROISequence]
        matched = catalog.match_names(names)
        assert not matched.unknown and not matched.duplicates
        assert sorted(matched.mapped.values()) == sorted(catalog.BREAST_STRUCTURES)
        kinds = {o.ReferencedROINumber: o.RTROIInterpretedType for o in rs.RTROIObservationsSequence}
        for r in rs.StructureSetROISequence:
            assert kinds[r.ROINumber] == catalog.BY_NAME[matched.mapped[r.ROIName]].kind
        masks = rasterise_rtstruct(rs, read_ct_with_sitk(folder))
        for written, mask in masks.items():
            np.testing.assert_array_equal(mask, case.masks[matched.mapped[written]], err_msg=written)
        l4, scl = case.masks["CTVn_L4_L"], case.masks["CTVn_SCL_L"]
        assert (l4 & scl).sum() > 0.5 * l4.sum(), "CTVn_L4 should lie mostly inside CTVn_SCL (RTOG)"
    assert contrast_seen == {True, False} or len(contrast_seen) == 1  # cohort-level variety is tested below


def test_cohort_variety():
    cases = [make_case("breast", i, seed=0) for i in range(8)]
    assert {c.side for c in cases} == {"L", "R"}
    assert {c.contrast for c in cases} == {True, False}
    assert len({c.site for c in cases}) >= 2
    assert {c.grid.spacing[2] for c in cases} == {3.0, 5.0}
    assert all(0.9 <= c.grid.spacing[0] <= 1.4 for c in cases)
    for c in cases:   # realistic HU
        heart = np.median(c.hu[c.masks["Heart"]])
        assert (150 < heart < 320) if c.contrast else (0 < heart < 80)
        assert -900 < np.median(c.hu[c.masks["Lung_L"]]) < -780
        assert c.hu.min() <= -1000 and c.hu.max() >= 400


def test_contrast_cases_carry_contrast_bolus_agent(breast_export):
    for i in range(3):
        case = make_case("breast", i, seed=0)
        s = pydicom.dcmread(next((breast_export / patient_id(case)).glob("CT.*.dcm")), stop_before_pixels=True)
        assert ("ContrastBolusAgent" in s) == case.contrast


def test_rtdose_is_a_plausible_tangential_plan(breast_export):
    case = make_case("breast", 0, seed=0)
    folder = breast_export / patient_id(case)
    rd = pydicom.dcmread(next(folder.glob("RD.*.dcm")))
    frame = pydicom.dcmread(next(folder.glob("CT.*.dcm")), stop_before_pixels=True).FrameOfReferenceUID
    assert rd.DoseUnits == "GY" and rd.FrameOfReferenceUID == frame
    dose = rd.pixel_array * float(rd.DoseGridScaling)
    assert dose.shape == (int(rd.NumberOfFrames), rd.Rows, rd.Columns)
    assert 49 < dose.max() <= 50.01
    grid, expected = case.dose
    np.testing.assert_allclose(dose, expected, atol=1e-6 * 50 + float(rd.DoseGridScaling))
    assert float(rd.PixelSpacing[0]) > case.grid.spacing[1]          # its own, coarser grid
    # the treated breast gets the prescription, the other breast almost nothing (dose voxel (k, j, i) is
    # centred on CT voxel (k, 2j + 0.5, 2i + 0.5): sample the CT masks there)
    other = "R" if case.side == "L" else "L"
    on_dose_grid = lambda m: m[:, 1::2, 1::2][:, : dose.shape[1], : dose.shape[2]]  # noqa: E731
    assert dose[on_dose_grid(case.masks[f"CTVp_breast_{case.side}"])].mean() > 40
    assert dose[on_dose_grid(case.masks[f"CTVp_breast_{other}"])].max() < 5


def test_clip_cohort(clips_export):
    for i in range(3):
        case = make_case("clips", i, seed=0)
        assert 5 <= len(case.clips) <= 8
        assert set(case.masks) == {"Clips"}
        folder = clips_export / patient_id(case)
        rs = pydicom.dcmread(next(folder.glob("RS.*.dcm")))
        assert [catalog.match_name(r.ROIName) for r in rs.StructureSetROISequence] == ["Clips"]
        assert rs.RTROIObservationsSequence[0].RTROIInterpretedType == "MARKER"
        assert not list(folder.glob("RD.*.dcm"))
        image = read_ct_with_sitk(folder)
        hu = sitk.GetArrayFromImage(image)
        for clip in case.clips:   # every clip is bright where it is
            idx = image.TransformPhysicalPointToIndex(clip["centre_mm"])[::-1]
            window = hu[tuple(slice(max(0, j - 1), j + 2) for j in idx)]
            assert window.max() > 1500
        # decoys: bright voxels that are not clips (bone, skin marker)
        assert (hu[~case.masks["Clips"]] > 300).sum() > 10 * case.masks["Clips"].sum()
        assert hu[case.masks["Clips"]].max() >= 2500


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_cases(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_cohort("clips", 2, a, seed=7, progress=False)
    write_cohort("clips", 2, b, seed=7, progress=False, num_processes=2)    # parallel: the same files
    write_cohort("clips", 2, c, seed=8, progress=False)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    # case k does not depend on how many cases are asked for
    np.testing.assert_array_equal(make_case("clips", 1, 7).hu, make_case("clips", 1, 7).hu)


def test_full_size_grid_is_512():
    from nnunet_breast.synth import phantom
    rng = np.random.default_rng(0)
    grid = phantom.make_grid(rng, "full")
    assert grid.shape[1:] == (512, 512) and grid.shape[0] >= 90


def test_cli_synth_and_errors(tmp_path, run_cli):
    out = tmp_path / "cohort"
    r = run_cli(["nnunet-breast", "synth", "--cohort", "clips", "--n", "1", "--out", out, "--seed", "3"])
    assert r.returncode == 0, r.stderr
    assert len(list((out / "SYN-CL-000").glob("CT.*.dcm"))) > 30
    bad = run_cli(["nnunet-breast", "synth", "--cohort", "clips", "--n", "0", "--out", out])
    assert bad.returncode != 0 and "error" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("cmd", [[]] + [[c] for c in COMMANDS] + [["cascade", "prepare"]])
def test_help_for_every_command(cmd, run_cli):
    r = run_cli(["nnunet-breast", *cmd, "--help"])
    assert r.returncode == 0 and "usage: nnunet-breast" in r.stdout


def test_clip_cases_carry_unlabelled_decoys_a_threshold_takes_for_clips():
    """Skin BB, scar wire and dense cortical bone: >= 1500 HU, inside the body, far from every clip, not labelled."""
    from scipy import ndimage

    from nnunet_breast.volumes.body import body_mask

    counts = []
    for i in range(4):
        case = make_case("clips", i, seed=5)
        clips = case.masks["Clips"]
        sp = case.grid.spacing[::-1]
        far = ndimage.distance_transform_edt(~clips, sampling=sp) > 8.0
        bright = (case.hu >= 1500) & body_mask(case.hu, case.grid.spacing) & far
        counts.append(ndimage.label(bright)[1])
        assert case.hu[clips].max() >= 2500
    # partial volume on 5 mm slices dims a BB or a wire below 1500 HU now and then, as on a real CT
    assert sum(counts) >= 4 and sum(c > 0 for c in counts) >= 3, counts


def test_crop_slices_keeps_world_positions_and_every_clip():
    from nnunet_breast.synth import phantom

    case = make_case("clips", 2, 0)
    full_hu, full_origin, dz = case.hu.copy(), case.grid.origin, case.grid.spacing[2]
    n_clip = int(case.masks["Clips"].sum())
    centre = float(np.mean([c["centre_mm"][2] for c in case.clips]))
    phantom.crop_slices(case, centre, length_mm=60.0)
    k0 = int(round((case.grid.origin[2] - full_origin[2]) / dz))
    assert case.hu.shape[0] == round(60.0 / dz) and case.grid.shape == case.hu.shape
    np.testing.assert_array_equal(case.hu, full_hu[k0:k0 + case.hu.shape[0]])      # same voxels, same places
    assert case.grid.origin[:2] == full_origin[:2] and case.masks["Clips"].sum() == n_clip


def test_slab_size_is_real_scale_anatomy_around_the_clips():
    case = make_case("clips", 0, 0, size="slab")
    z = case.grid.axis_mm("z")
    assert case.hu.shape[1:] == (512, 512) and 110 <= z[-1] - z[0] + case.grid.spacing[2] <= 130
    assert case.masks["Clips"].any() and case.meta["R_mm"] > 150                     # a real body, not a mini one
    assert all(z[0] <= c["centre_mm"][2] <= z[-1] for c in case.clips)


def test_crop_slices_crops_the_dose_grid_alike():
    from nnunet_breast.synth import phantom

    case = make_case("breast", 1, 0)
    dose_before, z_before, dz = case.dose[1].copy(), case.grid.origin[2], case.grid.spacing[2]
    phantom.crop_slices(case, case.grid.axis_mm("z")[10], length_mm=45.0)
    dgrid, dose = case.dose
    k0, n = int(round((case.grid.origin[2] - z_before) / dz)), int(round(45.0 / dz))
    assert dose.shape[0] == case.hu.shape[0] == dgrid.shape[0] == n
    assert dgrid.origin[2] == case.grid.origin[2]                                 # the same slices as the CT
    np.testing.assert_array_equal(dose, dose_before[k0:k0 + n])
