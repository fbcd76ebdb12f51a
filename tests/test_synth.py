"""The synthetic cohorts read back as a TPS export would: geometry, references, determinism."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from nnunet_breast.cli import COMMANDS
from nnunet_breast.structures import catalog
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
    sides = set()
    for i in range(3):
        case = make_case("breast", i, seed=0, labels="full")
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
    assert sides == {"L", "R"}, "full labels contour both sides whichever side is treated: check both kinds"


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
    # parallel: the same files; and the clip cohort is the same whatever --labels says
    write_cohort("clips", 2, b, seed=7, progress=False, num_processes=2, labels="clinical")
    write_cohort("clips", 2, c, seed=8, progress=False)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_case_k_does_not_depend_on_n(breast_clinical_export, tmp_path, run_cli):
    """Case 3 of `synth --n 4` (the CLI, default labels: clinical) is case 3 of a cohort of 6: same pixels, same
    ROI names, same files."""
    out = tmp_path / "n4"
    r = run_cli(["nnunet-breast", "synth", "--cohort", "breast", "--n", "4", "--out", out, "--seed", "0"])
    assert r.returncode == 0, r.stderr
    assert "clinical labels" in r.stdout
    assert json.loads((out / "synth_breast.json").read_text())["labels"] == "clinical"
    small, large = out / "SYN-BR-003", breast_clinical_export / "SYN-BR-003"
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_ct_with_sitk(small)),
                                  sitk.GetArrayFromImage(read_ct_with_sitk(large)))
    names = [[r.ROIName for r in pydicom.dcmread(next(f.glob("RS.*.dcm"))).StructureSetROISequence]
             for f in (small, large)]
    assert names[0] == names[1]
    assert _digest(small) == _digest(large)
    assert not (out / "SYN-BR-004").exists()


def test_clinical_labels_contour_what_a_clinic_exports(breast_clinical_export):
    """The treated side's CTVs for the case's nodal indication, the OARs but now and then thyroid or esophagus;
    the masks are the full re-contouring's for those structures, and the CT is the same."""
    from nnunet_breast.synth.cohort import ALWAYS_CONTOURED, NODAL_INDICATIONS, OAR_OMISSION

    nodal = {name: set(ctvs) for name, _, ctvs in NODAL_INDICATIONS}
    seen = {"indication": set(), "side": set(), "omitted": set()}
    for i in range(6):
        case = make_case("breast", i, seed=0, labels="clinical")
        full = make_case("breast", i, seed=0, labels="full")
        side, indication = case.side, case.meta["nodal_indication"]
        np.testing.assert_array_equal(case.hu, full.hu)
        np.testing.assert_array_equal(case.dose[1], full.dose[1])
        assert (full.side, full.contrast, full.site) == (side, case.contrast, case.site)
        expected = ({f"CTVp_breast_{side}"} | {f"{n}_{side}" for n in nodal[indication]} | set(ALWAYS_CONTOURED)
                    | (set(OAR_OMISSION) - set(case.meta["omitted_oars"])))
        assert set(case.masks) == expected, i
        for name, mask in case.masks.items():
            np.testing.assert_array_equal(mask, full.masks[name], err_msg=name)
        # the RTSTRUCT holds exactly these, each spelt as a TPS would, and reproduces the masks
        folder = breast_clinical_export / patient_id(case)
        rs = pydicom.dcmread(next(folder.glob("RS.*.dcm")))
        matched = catalog.match_names([r.ROIName for r in rs.StructureSetROISequence])
        assert not matched.unknown and not matched.duplicates
        assert sorted(matched.mapped.values()) == sorted(expected)
        assert all(catalog.BY_NAME[n].kind != "CTV" or catalog.BY_NAME[n].side == side
                   for n in matched.mapped.values()), "a CTV of the untreated side"
        for written, mask in rasterise_rtstruct(rs, read_ct_with_sitk(folder)).items():
            np.testing.assert_array_equal(mask, case.masks[matched.mapped[written]], err_msg=written)
        seen["indication"].add(indication)
        seen["side"].add(side)
        seen["omitted"].update(case.meta["omitted_oars"])
    assert seen == {"indication": set(nodal), "side": {"L", "R"}, "omitted": set(OAR_OMISSION)}


def test_clinical_and_full_exports_share_ct_and_dose(breast_export, breast_clinical_export):
    """--labels changes the RTSTRUCT only: the CT pixel data and the dose of case k are the same."""
    for i in range(5):
        pid = f"SYN-BR-{i:03d}"
        np.testing.assert_array_equal(sitk.GetArrayFromImage(read_ct_with_sitk(breast_export / pid)),
                                      sitk.GetArrayFromImage(read_ct_with_sitk(breast_clinical_export / pid)))
        doses = [pydicom.dcmread(next((root / pid).glob("RD.*.dcm")))
                 for root in (breast_export, breast_clinical_export)]
        assert doses[0].PixelData == doses[1].PixelData and doses[0].DoseGridScaling == doses[1].DoseGridScaling


def test_nodal_indication_and_omission_probabilities():
    """The per-case draws follow the documented probabilities (4000 cases' streams, 5 standard errors)."""
    from nnunet_breast.synth.cohort import NODAL_INDICATIONS, OAR_OMISSION, clinical_structures
    from nnunet_breast.synth.phantom import case_rng

    n = 4000
    draws = [clinical_structures("L", case_rng("breast/labels", i, 0))[1] for i in range(n)]
    for name, p, _ in NODAL_INDICATIONS:
        f = sum(d["nodal_indication"] == name for d in draws) / n
        assert abs(f - p) < 5 * np.sqrt(p * (1 - p) / n), (name, f)
    for oar, p in OAR_OMISSION.items():
        f = sum(oar in d["omitted_oars"] for d in draws) / n
        assert abs(f - p) < 5 * np.sqrt(p * (1 - p) / n), (oar, f)
    names, _ = clinical_structures("R", case_rng("breast/labels", 0, 0))
    assert "CTVp_breast_R" in names and not any(n.endswith("_L") and n.startswith("CTV") for n in names)


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


def _distance_to_segments(points: np.ndarray, polyline: np.ndarray) -> np.ndarray:
    """mm from each of (N, 3) points to a polyline of (M, 3) vertices (M = 1: a point)."""
    if len(polyline) == 1:
        return np.linalg.norm(points - polyline[0], axis=1)
    out = np.full(len(points), np.inf)
    for a, b in zip(polyline[:-1], polyline[1:]):
        d = b - a
        t = np.clip(((points - a) @ d) / max(float(d @ d), 1e-12), 0, 1)
        out = np.minimum(out, np.linalg.norm(points - (a + t[:, None] * d), axis=1))
    return out


def test_clip_cases_carry_unlabelled_decoys_a_threshold_takes_for_clips():
    """Skin BB, scar wire and dense cortical bone, as the phantom defines them: everything the threshold
    baseline's HU finds that is not a clip is one of them, and none of them is labelled.

    Bounds from the definition, not from one seed's output: ordinary phantom tissue stays below the baseline's
    threshold (bone <= 1200 HU before blur, noise sd <= 18 HU; a bright streak adds <= 450 HU * 2.5 mm / r, so it
    lifts bone over it only within ~4 mm of a clip, and the clips' bloom and bright streak cores end within
    ~5 mm of a clip's axis, synth.metal); a painted object's HU reaches at most its radius
    plus the scanner blur's kernel (finish(): sigma 0.6 / 0.4 voxel, truncated at 4 sigma -> 3 voxels in-plane,
    2 across slices) plus half a voxel of partial volume. On 3 mm slices the 1 mm lead wire (30000 HU) is always
    sampled by the 4x supersampled partial volume (0.75 mm apart) and exceeds the threshold; on 5 mm slices
    (samples 1.25 mm apart) it can fall between the samples, so only 3 mm cases are held to it.
    """
    from nnunet_breast.clips import DEFAULT_THRESHOLD_HU

    cases, thin = [], 0
    for i in range(12):                          # the first two cases on each slice thickness
        case = make_case("clips", i, seed=5)
        dz = case.grid.spacing[2]
        if sum(c.grid.spacing[2] == dz for c in cases) < 2:
            cases.append(case)
        if len(cases) == 4:
            break
    assert sorted(c.grid.spacing[2] for c in cases) == [3.0, 3.0, 5.0, 5.0]
    for case in cases:
        sp, org = np.array(case.grid.spacing), np.array(case.grid.origin)
        reach = float(np.linalg.norm([3.5 * sp[0], 3.5 * sp[1], 2.5 * sp[2]]))
        decoys = case.meta["decoys"]
        objects = ([(np.array([c["centre_mm"]]) + np.outer([-0.5, 0.5], c["axis"]) * c["length_mm"], 1.0)
                    for c in case.clips]
                   + [(np.array([decoys["bb"]]), 1.2), (np.array(decoys["wire"]), 0.5)]
                   + [(np.array([b]), 2.5) for b in decoys["bone"]])
        assert 2 <= len(decoys["bone"]) <= 4 and len(decoys["wire"]) == 8
        bright = org + sp * np.argwhere(case.hu >= DEFAULT_THRESHOLD_HU)[:, ::-1]         # voxel centres, mm
        explained = np.zeros(len(bright), bool)
        for polyline, radius in objects:
            explained |= _distance_to_segments(bright, polyline) <= radius + reach
        assert explained.all(), f"{case.case_id}: bright voxels away from every clip and decoy"
        # none of the decoys is labelled: every label voxel holds clip metal (>= 15% of its supersamples lie
        # within the clip's 1 mm radius, so its centre lies within 1 mm + half a voxel diagonal of the clip's axis)
        label = org + sp * np.argwhere(case.masks["Clips"])[:, ::-1]
        near_clip = np.zeros(len(label), bool)
        for polyline, radius in objects[: len(case.clips)]:
            near_clip |= _distance_to_segments(label, polyline) <= radius + 0.5 * np.linalg.norm(sp)
        assert near_clip.all(), f"{case.case_id}: labelled voxels away from every clip"
        if sp[2] == 3.0:
            on_wire = _distance_to_segments(bright, np.array(decoys["wire"])) <= 0.5 + 0.5 * np.linalg.norm(sp)
            assert on_wire.any(), f"{case.case_id}: the lead wire should exceed {DEFAULT_THRESHOLD_HU} HU"
            thin += 1
    assert thin == 2


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
    """Also: on real-scale anatomy the threshold baseline over-segments the clips as on a scanner (metal
    artefacts, synth.metal; calibrated to a DSC of 0.35-0.55, the clip paper's is 0.40) and reaches every clip."""
    from nnunet_breast.evaluation.clip_scores import score_clip_mask

    from nnunet_breast.clips.threshold import threshold_clips
    from nnunet_breast.volumes.components import label_components

    case = make_case("clips", 0, 0, size="slab")
    z = case.grid.axis_mm("z")
    assert case.hu.shape[1:] == (512, 512) and 110 <= z[-1] - z[0] + case.grid.spacing[2] <= 130
    assert case.masks["Clips"].any() and case.meta["R_mm"] > 150                     # a real body, not a mini one
    assert all(z[0] <= c["centre_mm"][2] <= z[-1] for c in case.clips)
    image = sitk.GetImageFromArray(case.hu)
    image.SetSpacing(case.grid.spacing)
    pred = threshold_clips(image)
    score = score_clip_mask(case.case_id, case.masks["Clips"], pred, case.grid.spacing[::-1])
    labels, sizes = label_components(case.masks["Clips"])
    assert set(np.unique(labels[pred])) >= set(range(1, len(sizes) + 1)), "a clip below the threshold"
    assert 0.3 < score.dsc < 0.6 and pred.sum() > 2 * case.masks["Clips"].sum(), score


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


# ----- the clips' metal artefacts (synth/metal.py): HU only, the labels stay the physical clips' -----

def _water_phantom(dz: float, clips, n_slices: int = 24):
    """A water cylinder (40 HU, radius 35 mm) on a 1 mm grid of ``dz`` mm slices (slice 12 at z = 0) with titanium
    clips (p0, p1 in mm) painted as the clip cohort paints them: (grid, hu, body, [metal.Clip])."""
    from nnunet_breast.synth import metal
    from nnunet_breast.synth.cohort import _segment_occupancy
    from nnunet_breast.synth.phantom import TITANIUM_HU, Grid

    grid = Grid((n_slices, 81, 81), (1.0, 1.0, dz), (-40.0, -40.0, -12 * dz))
    x, y = grid.axis_mm("x"), grid.axis_mm("y")
    body = np.broadcast_to(x[None, None] ** 2 + y[None, :, None] ** 2 <= 35.0 ** 2, grid.shape).copy()
    hu = np.where(body, 40.0, -1000.0).astype(np.float32)
    painted = []
    for p0, p1 in clips:
        p0, p1 = np.array(p0, float), np.array(p1, float)
        sl, occ = _segment_occupancy(grid, p0, p1, radius=metal.CLIP_RADIUS_MM)
        hu[sl] = hu[sl] * (1 - occ) + TITANIUM_HU * occ
        painted.append(metal.Clip(p0, p1, sl, occ))
    return grid, hu, body, painted


def _sample(plane: np.ndarray, grid, x_mm, y_mm) -> np.ndarray:
    """Bilinear HU of an axial plane at (x, y) mm."""
    from scipy import ndimage

    rows = (np.asarray(y_mm) - grid.origin[1]) / grid.spacing[1]
    cols = (np.asarray(x_mm) - grid.origin[0]) / grid.spacing[0]
    return ndimage.map_coordinates(plane, [np.atleast_1d(rows), np.atleast_1d(cols)], order=1)


def test_rod_occupancy_is_the_cohorts_partial_volume_and_stretches_along_z():
    """Blooming compares its wider rod with the painted clip: with radius_z = radius both are the same rod."""
    from nnunet_breast.synth import metal
    from nnunet_breast.synth.cohort import _segment_occupancy

    grid, _, _, _ = _water_phantom(3.0, [])
    p0, p1 = np.array([-2.0, 1.0, -2.0]), np.array([3.0, -1.0, 2.5])
    sl, occ = _segment_occupancy(grid, p0, p1, radius=1.0)
    box, same = metal.rod_occupancy(grid, p0, p1, 1.0, 1.0)
    assert box == sl
    np.testing.assert_array_equal(same, occ)
    _, long_z = metal.rod_occupancy(grid, p0, p1, 1.0, 4.0)
    assert long_z.sum() > 1.5 * occ.sum() and long_z.sum() * 3.0 < 5.0 * occ.sum() * 3.0


def test_streaks_radiate_bright_and_dark_from_a_clip_and_fade_with_distance():
    """One clip along z (6 mm, slices -1..1 of 3 mm): alternating bright and dark rays in its slices, hundreds of
    HU off the tissue a few mm out, weaker further out and gone two slices beyond; nothing outside the body."""
    from nnunet_breast.synth import metal

    grid, hu, body, clips = _water_phantom(3.0, [((0, 0, -3.0), (0, 0, 3.0))])
    before = hu.copy()
    drawn = metal.add_metal_artefacts(hu, grid, clips, body, np.random.default_rng(3))
    json.dumps(drawn)                                                   # JSON-ready, for case.meta
    (lines,) = drawn["streaks"]
    assert 3 <= len(lines) <= 8 and drawn["bands"] == []
    signs = np.sign([amp for _, amp, _ in lines])
    assert (signs[1:] != signs[:-1]).all(), "bright and dark lines alternate around the clip"
    theta = np.radians(np.arange(0, 360, 0.5))
    plane = hu[12] - before[12]                                         # the clip's central slice
    ring = _sample(plane, grid, 5 * np.cos(theta), 5 * np.sin(theta))   # 5 mm from the clip's axis
    assert ring.max() > 50 and ring.min() < -50                         # >= 150 HU at 2.5 mm, 1/r
    assert np.count_nonzero(np.diff(np.sign(ring[np.abs(ring) > 10]))) >= 4, "rays, not a halo"
    # along the strongest ray: the same sign, weaker at 24 mm than at 6 mm (1/r), still there
    k = int(np.argmax(np.abs(ring)))
    near, far = (float(_sample(plane, grid, r * np.cos(theta[k]), r * np.sin(theta[k]))[0]) for r in (6.0, 24.0))
    assert np.sign(near) == np.sign(far) and 0.1 * abs(near) < abs(far) < 0.6 * abs(near)
    # the slices of the clip's metal, one beyond fading, none further; HU only inside the body
    changed = np.abs(hu - before).max(axis=(1, 2))
    assert changed[10:15].min() > 100 and changed[9] < changed[10] and changed[15] < changed[14]
    assert changed[:9].max() == 0 and changed[16:].max() == 0
    np.testing.assert_array_equal(hu[~body], before[~body])


def test_blooming_and_bright_cores_over_segment_a_clip_a_threshold_takes_only_near_it():
    """After the scanner's blur, a 1500 HU threshold takes more than the clip's label (bloom, bright streak
    cores) but nothing farther than bloom + core reach from the clip's axis."""
    from nnunet_breast.synth import metal, phantom

    p0, p1 = np.array([-3.0, -1.0, 0.5]), np.array([3.0, 1.0, 0.5])        # in-plane, in slice 12 (5 mm)
    grid, hu, body, clips = _water_phantom(5.0, [(p0, p1)])
    (clip,) = clips
    label = np.zeros(grid.shape, bool)
    label[clip.box] = clip.occ >= 0.15                                    # the cohort's label
    plain = phantom.finish(hu.copy(), np.random.default_rng(0), noise=0.0, intercept=-1024.0)
    metal.add_metal_artefacts(hu, grid, clips, body, np.random.default_rng(1))
    ct = phantom.finish(hu, np.random.default_rng(0), noise=0.0, intercept=-1024.0)
    taken, before = ct >= 1500, plain >= 1500
    assert (taken & label).sum() == label.sum() and taken.sum() > 1.5 * label.sum()
    assert taken.sum() > 1.5 * before.sum()
    reach = metal.CLIP_RADIUS_MM + metal.BLOOM_MM[1] + metal.HOT_REACH_MM[1] + 1.0 + 1.5   # + decay, + blur
    z, y, x = np.nonzero(taken)
    d = np.array([float(np.min(np.hypot(*(np.array([xx - 40.0, yy - 40.0])[:, None]
                                          - np.linspace(p0[:2], p1[:2], 50).T)))) for zz, yy, xx in zip(z, y, x)])
    assert d.max() <= reach and set(z) <= {11, 12, 13}


def test_dark_band_between_two_close_clips_only():
    """Two clips 20 mm apart in one slice are joined by a dark band (its depth on the midpoint, a few mm wide,
    on their slices and the next); a third clip far off in z gets none."""
    from nnunet_breast.synth import metal

    clips = [((-10.0, -3.0, 0.0), (-10.0, 3.0, 0.0)), ((10.0, -3.0, 0.0), (10.0, 3.0, 0.0)),
             ((0.0, 15.0, 30.0), (0.0, 21.0, 30.0))]
    grid, hu, body, painted = _water_phantom(3.0, clips)
    no_band = hu.copy()
    drawn = metal.add_metal_artefacts(hu, grid, painted, body, np.random.default_rng(5))
    (band,) = drawn["bands"]
    assert band[:2] == [0, 1] and 100 <= band[2] <= 400
    original = metal.band_field
    try:                                       # the same draws without the band: what the band alone does
        metal.band_field = lambda *a, **k: original(*a, **k) * 0
        metal.add_metal_artefacts(no_band, grid, painted, body, np.random.default_rng(5))
    finally:
        metal.band_field = original
    diff = hu - no_band
    assert diff[12, 40, 40] == pytest.approx(-band[2], abs=0.5)        # the midpoint, slice z = 0
    assert diff[12, 40 + 8, 40] > -0.1 * band[2]                         # 8 mm off the line: little
    assert diff[11, 40, 40] < -50 and diff[13, 40, 40] < -50             # the adjacent slices too
    assert diff[9, 40, 40] == 0 and diff[15, 40, 40] == 0
    # on the line between the clips the CT is darker than the tissue, whatever the streaks do there
    x_mid = np.arange(-5, 6)
    assert np.mean(_sample(hu[12], grid, x_mid, np.zeros_like(x_mid))) < 40 - 50


def _clip_case_without_artefacts(monkeypatch, index, seed=0, size="small"):
    from nnunet_breast.synth import metal

    with monkeypatch.context() as m:
        m.setattr(metal, "add_metal_artefacts", lambda *a, **k: {})
        return make_case("clips", index, seed, size=size)


def test_clip_cases_get_artefacts_in_hu_and_keep_their_labels(monkeypatch):
    """The cohort's clip cases: the same labels, clips and decoys as without artefacts; a 1500 HU threshold takes
    more voxels than the label (blooming, on 5 mm slices also in the next slice) and more than without
    artefacts; air stays air; the same seed gives the same HU; the drawn artefacts are in case.meta."""
    from nnunet_breast.volumes.body import body_mask

    thick = 0
    for i in range(4):
        case = make_case("clips", i, seed=5)
        plain = _clip_case_without_artefacts(monkeypatch, i, seed=5)
        np.testing.assert_array_equal(case.masks["Clips"], plain.masks["Clips"])
        assert case.clips == plain.clips and case.meta["decoys"] == plain.meta["decoys"]
        assert len(case.meta["artefacts"]["streaks"]) == len(case.clips)
        json.dumps(case.meta)
        label = case.masks["Clips"]
        taken = case.hu >= 1500
        assert taken.sum() > 1.5 * label.sum() and taken.sum() > 1.5 * (plain.hu >= 1500).sum()
        assert (case.hu[plain.hu < -900] < -800).all(), "artefacts outside the body"
        assert body_mask(case.hu, case.grid.spacing)[label].all(), "a body mask by HU lost clip voxels"
        if case.grid.spacing[2] == 5.0:           # partial volume of thick slices: metal in the next slice
            above_below = np.zeros_like(label)
            above_below[1:] |= label[:-1]
            above_below[:-1] |= label[1:]
            grown, grown_plain = (int(((hu >= 1500) & above_below & ~label).sum()) for hu in (case.hu, plain.hu))
            assert grown > grown_plain + 10
            thick += 1
        np.testing.assert_array_equal(make_case("clips", i, seed=5).hu, case.hu)
    assert thick >= 1


def test_breast_cases_have_no_metal_artefacts(monkeypatch):
    """The breast cohort never draws artefacts: its HU and random stream are what they were."""
    from nnunet_breast.synth import metal

    def fail(*a, **k):
        raise AssertionError("metal artefacts in a breast case")

    monkeypatch.setattr(metal, "add_metal_artefacts", fail)
    case = make_case("breast", 0, seed=0)
    assert "artefacts" not in case.meta
    with pytest.raises(AssertionError, match="metal artefacts"):
        make_case("clips", 0, seed=0)
