"""read_ct_series: same geometry as SimpleITK/GDCM, exact HU, and clear refusals of unsafe series.

Every refusal test works on a copy in tmp_path and checks that the copy it read is byte-for-byte
unchanged afterwards (the reader must never write), as well as the session fixture it came from.
"""
import hashlib
import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from nnunet_breast.dicom.ct_reader import CTSeriesError, CTVolume, read_ct_series
from nnunet_breast.synth.cohort import make_case


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def sorted_ct(folder: Path) -> list[Path]:
    """CT files of the folder in spatial order (the synthetic series are axial, head-first)."""
    files = list(folder.glob("CT.*.dcm"))
    return sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))


def copy_ct(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.glob("CT.*.dcm"):
        shutil.copy2(f, dst / f.name)
    return dst


def edit(path: Path, **changes) -> None:
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)


@pytest.fixture
def case_copy(breast_export, tmp_path):
    """A private copy of SYN-BR-000's CT slices, and a check that neither it nor the fixture is written to."""
    src = breast_export / "SYN-BR-000"
    before_src = digest(src)
    folder = copy_ct(src, tmp_path / "ct")
    yield folder
    assert digest(src) == before_src


def refuse(folder: Path, files=None) -> str:
    """Read expecting a refusal; check the folder is untouched and return the message."""
    before = digest(folder)
    with pytest.raises(CTSeriesError) as info:
        read_ct_series(files if files is not None else list(folder.glob("CT.*.dcm")))
    assert digest(folder) == before
    return str(info.value)


@pytest.mark.parametrize("cohort,index", [("breast", 0), ("breast", 1), ("clips", 0)])
def test_matches_simpleitk_and_ground_truth(request, cohort, index):
    folder = request.getfixturevalue(f"{cohort}_export") / f"SYN-{cohort.upper()[:2]}-{index:03d}"
    vol = read_ct_series(sorted(folder.glob("CT.*.dcm")))
    assert isinstance(vol, CTVolume)

    series_uid = pydicom.dcmread(vol.files[0], stop_before_pixels=True).SeriesInstanceUID
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder), series_uid)
    reader.SetFileNames(names)
    ref = reader.Execute()
    assert vol.image.GetSize() == ref.GetSize()
    np.testing.assert_allclose(vol.image.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.image.GetSpacing(), ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(vol.image.GetDirection(), ref.GetDirection(), atol=1e-9)
    assert [f.name for f in vol.files] == [Path(n).name for n in names]

    array = sitk.GetArrayFromImage(vol.image)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, sitk.GetArrayFromImage(ref).astype(np.float32))
    truth = make_case(cohort, index, seed=0)
    np.testing.assert_array_equal(array, truth.hu)
    np.testing.assert_allclose(vol.image.GetSpacing(), truth.grid.spacing, atol=1e-3)
    np.testing.assert_allclose(vol.image.GetOrigin(), truth.grid.origin, atol=1e-3)

    assert vol.slice_sop_uids == [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in vol.files]
    assert vol.header.SOPInstanceUID == vol.slice_sop_uids[0] and "PixelData" not in vol.header


def test_file_order_does_not_matter(breast_export):
    files = sorted((breast_export / "SYN-BR-000").glob("CT.*.dcm"))
    first = read_ct_series(files)
    shuffled = files[:]
    random.Random(7).shuffle(shuffled)
    second = read_ct_series(shuffled)
    assert second.files == first.files and second.slice_sop_uids == first.slice_sop_uids
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        assert getattr(second.image, get)() == getattr(first.image, get)()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(second.image), sitk.GetArrayFromImage(first.image))


def test_missing_slice_names_neighbours(case_copy):
    files = sorted_ct(case_copy)
    k = len(files) // 2
    files[k].unlink()
    msg = refuse(case_copy)
    assert files[k - 1].name in msg and files[k + 1].name in msg
    assert "missing" in msg


def test_non_uniform_spacing(case_copy):
    files = sorted_ct(case_copy)
    ds = pydicom.dcmread(files[3], stop_before_pixels=True)
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    edit(files[3], ImagePositionPatient=[f"{x:.3f}", f"{y:.3f}", f"{z + 0.5:.3f}"])
    msg = refuse(case_copy)
    assert "spacing" in msg and files[3].name in msg


def test_duplicated_slice(case_copy):
    files = sorted_ct(case_copy)
    copy = case_copy / "CT.copy-of-a-slice.dcm"
    shutil.copy2(files[5], copy)
    msg = refuse(case_copy)
    assert "Duplicated" in msg and files[5].name in msg and copy.name in msg


def test_gantry_tilt(case_copy):
    files = sorted_ct(case_copy)
    ds = pydicom.dcmread(files[10], stop_before_pixels=True)
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    edit(files[10], ImagePositionPatient=[f"{x + 1.0:.3f}", f"{y:.3f}", f"{z:.3f}"])
    msg = refuse(case_copy)
    assert "tilt" in msg and files[10].name in msg


def test_mixed_orientation(case_copy):
    files = sorted_ct(case_copy)
    edit(files[7], ImageOrientationPatient=["1", "0", "0", "0", "0.996195", "-0.087156"])
    msg = refuse(case_copy)
    assert "orientations" in msg and files[7].name in msg


def test_mixed_series(case_copy):
    files = sorted_ct(case_copy)
    edit(files[2], SeriesInstanceUID=pydicom.uid.generate_uid())
    msg = refuse(case_copy)
    assert "SeriesInstanceUID" in msg and files[2].name in msg


def test_too_few_slices(case_copy):
    assert "at least 2" in refuse(case_copy, sorted_ct(case_copy)[:1])


@pytest.mark.parametrize("keep", [0.5, 300])
def test_truncated_file(case_copy, keep):
    files = sorted_ct(case_copy)
    data = files[4].read_bytes()
    files[4].write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    msg = refuse(case_copy)
    assert files[4].name in msg and "truncated" in msg


def test_rescale_per_slice(case_copy):
    """Slope 0.5, slope 2 and signed stored values on three slices: HU come out right on each."""
    truth = make_case("breast", 0, seed=0).hu
    files = sorted_ct(case_copy)
    a, b, c = 3, 8, 12
    for k, slope in ((a, 0.5), (b, 2.0)):
        ds = pydicom.dcmread(files[k])
        intercept = float(ds.RescaleIntercept)
        stored = np.round((truth[k] - intercept)).astype(np.int64)
        new = stored * 2 if slope == 0.5 else stored // 2
        ds.BitsStored, ds.HighBit, ds.RescaleSlope = 16, 15, str(slope)
        ds.PixelData = new.astype(np.uint16).tobytes()
        ds.save_as(files[k])
    ds = pydicom.dcmread(files[c])    # signed storage: stored value = HU
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
    ds.PixelData = truth[c].astype(np.int16).tobytes()
    ds.save_as(files[c])

    array = sitk.GetArrayFromImage(read_ct_series(files).image)
    expected = truth.copy()
    intercept_b = float(pydicom.dcmread(files[b], stop_before_pixels=True).RescaleIntercept)
    expected[b] -= (truth[b] - intercept_b) % 2      # slope 2 keeps only even offsets from the intercept
    np.testing.assert_array_equal(array, expected)
    assert np.any(expected[b] != truth[b])           # the slope-2 slice really was rescaled


@pytest.mark.parametrize("row,col", [((1, 0, 0), (0, np.cos(0.35), np.sin(0.35))),    # oblique
                                     ((0, 1, 0), (0, 0, -1))])                          # sagittal
def test_non_axial_direction_matches_simpleitk(case_copy, row, col):
    """Rewrite the geometry as an oblique / sagittal stack: direction and origin agree with GDCM."""
    row, col = np.array(row, float), np.array(col, float)
    normal = np.cross(row, col)
    origin = np.array([-40.0, 12.5, -250.0])
    files = sorted_ct(case_copy)
    for k, f in enumerate(files):
        ipp = origin + k * 3.0 * normal
        edit(f, ImageOrientationPatient=[f"{v:.6f}" for v in (*row, *col)],
             ImagePositionPatient=[f"{v:.4f}" for v in ipp])
    random.Random(1).shuffle(files)
    vol = read_ct_series(files)

    series_uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(case_copy), series_uid))
    ref = reader.Execute()
    np.testing.assert_allclose(vol.image.GetDirection(), ref.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(vol.image.GetOrigin(), ref.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(vol.image.GetSpacing(), ref.GetSpacing(), atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(vol.image), sitk.GetArrayFromImage(ref).astype(np.float32))
