"""CT inputs for prediction: a DICOM export (any layout, one or many patients) or NIfTI files.

DICOM goes through the same discovery and series reader as the converters (sorted along the slice
normal, geometry checked, per-slice rescale), so a CT is read for prediction exactly as it was for
training. A DICOM input keeps its header and slice UIDs: the RTSTRUCT export needs them to point back
at the CT. A NIfTI input is ``<case>.nii.gz`` or nnU-Net's ``<case>_0000.nii.gz`` (HU).
Inputs are only read, never written.

Orientation is checked here, once, as each CT is read, before any model runs: any patient position (head- or
feet-first, supine, prone, decubitus) and any axial storage order is accepted; a sagittal, coronal, oblique or
tilted grid is refused (:func:`nnunet_breast.volumes.orientation.axial_problem`). Models see every CT in one
array layout (:meth:`InputCT.lps`); their outputs go back onto the CT's own grid.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from nnunet_breast.dicom.ct_reader import CTSeriesError, CTVolume, read_ct_series
from nnunet_breast.errors import UserError
from nnunet_breast.volumes.orientation import array_from_lps, array_to_lps, axial_problem, to_lps

NIFTI_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


class InputError(UserError):
    """The input holds no usable CT; the message says what was found instead."""


@dataclass
class InputCT:
    case_id: str
    image: sitk.Image                 # HU, float32
    dicom: CTVolume | None = None     # source series (header, slice UIDs) for DICOM inputs
    source: str = ""

    def lps(self) -> sitk.Image:
        """The CT as the models see it: voxels in the LPS layout (the same image for a head-first supine CT)."""
        return to_lps(self.image)

    def from_lps(self, arr):
        """An array [z, y, x] (+ channels) on :meth:`lps`'s grid -> the same voxels on the CT's own grid."""
        return array_from_lps(arr, self.image.GetDirection())

    def to_lps(self, arr):
        """An array [z, y, x] on the CT's grid -> the same voxels on :meth:`lps`'s grid (display, models)."""
        return array_to_lps(arr, self.image.GetDirection())


def check_orientation(image: sitk.Image, source) -> None:
    """Refuse (InputError, one line) a CT that is not axial; any patient position is fine."""
    problem = axial_problem(image.GetDirection())
    if problem:
        raise InputError(f"{source}: {problem}")


def _nifti_case_id(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"_0000$", "", name)


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.endswith(NIFTI_SUFFIXES)


def _dicom_case_id(ct: CTVolume, series_uid: str) -> str:
    """The converter's case id (patient id + hash of the series), so predictions line up with datasets."""
    from nnunet_breast.dataset_conversion.cases import SourceCase

    return SourceCase("dicom", series_uid, str(ct.header.get("PatientID", ""))).case_id


def list_inputs(path: Path) -> list[tuple[str, object]]:
    """(case_id, source) pairs without reading pixels: source is a NIfTI path or a DICOM series' files."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if _is_nifti(path):
        return [(_nifti_case_id(path), path)]
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise InputError(f"{path} is empty: expected a DICOM CT series or NIfTI images")
    niftis = [p for p in files if _is_nifti(p)]
    if niftis:
        others = [p for p in niftis if not re.search(r"_000[1-9]\.", p.name)]
        ids = [_nifti_case_id(p) for p in others]
        if len(set(ids)) != len(ids):
            raise InputError(f"{path}: several NIfTI files share a case id: {sorted(ids)}")
        return list(zip(ids, others))
    from nnunet_breast.dataset_conversion.discovery import NoCTSeriesError, find_ct_series

    try:
        series = find_ct_series(path)
    except NoCTSeriesError as e:
        raise InputError(str(e)) from None
    return [(s.series_uid, s.files) for s in series]


def read_input(case: tuple[str, object]) -> InputCT:
    """Read one entry of :func:`list_inputs` (NIfTI or DICOM) as HU float32."""
    key, source = case
    if isinstance(source, Path):
        image = sitk.Cast(sitk.ReadImage(str(source)), sitk.sitkFloat32)
        if image.GetDimension() != 3:
            raise InputError(f"{source}: a 3-D CT is needed, got {image.GetDimension()}-D")
        check_orientation(image, source)
        return InputCT(key, image, None, str(source))
    try:
        ct = read_ct_series(source)
    except CTSeriesError as e:
        raise InputError(str(e)) from None
    folder = Path(source[0]).parent
    check_orientation(ct.image, f"{folder} (CT series {key})")
    return InputCT(_dicom_case_id(ct, key), ct.image, ct, str(folder))


def load_inputs(path: Path) -> list[InputCT]:
    """Every CT under ``path`` (see the module docstring); raises :class:`InputError` when there is none."""
    return [read_input(c) for c in list_inputs(path)]


def check_output_outside(input_path: Path, out_dir: Path) -> None:
    """Refuse an output folder inside the input folder: inputs are only read, and a rerun would find its own
    outputs among them."""
    input_path, out_dir = Path(input_path), Path(out_dir)
    if input_path.is_dir() and out_dir.resolve().is_relative_to(input_path.resolve()):
        raise InputError(f"the output {out_dir} lies inside the input {input_path}; choose another folder")
