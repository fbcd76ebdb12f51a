"""discover(): pairs CT, RTSTRUCT and RTDOSE by DICOM references in any layout, and says why.

Each test edits a private copy of the session cohort and checks that discover() left it unchanged.
"""
import hashlib
import random
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from nnunet_breast.dataset_conversion.discovery import Discovery, discover

PATIENTS = [f"SYN-BR-{i:03d}" for i in range(5)]   # the session fixture breast_export


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run(root: Path) -> Discovery:
    before = digest(root)
    found = discover(root)
    assert digest(root) == before
    return found


def pair_of(found: Discovery, patient: str):
    (pair,) = [p for p in found.pairs if p.ct.patient_id == patient]
    return pair


@pytest.fixture
def export(breast_export, tmp_path) -> Path:
    """A private copy of the breast cohort (3 patients: CT + RTSTRUCT + RTDOSE each)."""
    root = tmp_path / "export"
    shutil.copytree(breast_export, root)
    return root


def test_nested_layout_pairs_everything(breast_export, tmp_path):
    before = digest(breast_export)
    root = tmp_path / "scrambled"
    rng = random.Random(3)
    for f in sorted(breast_export.rglob("*")):
        if f.is_file():
            sub = root.joinpath(*(f"d{rng.randrange(4)}" for _ in range(rng.randrange(4))))
            sub.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, sub / f.name)
    found = run(root)
    assert [p.ct.patient_id for p in found.pairs] == PATIENTS
    for pair in found.pairs:
        src = breast_export / pair.ct.patient_id
        assert sorted(f.name for f in pair.ct.files) == sorted(f.name for f in src.glob("CT.*.dcm"))
        assert len(pair.ct.sop_uids) == len(pair.ct.files) and pair.ct.modality == "CT"
        assert pair.rtstruct is not None and pair.rtstruct.path.name == next(src.glob("RS.*.dcm")).name
        assert pair.rtstruct.referenced_series_uids == [pair.ct.series_uid]
        assert pair.rtstruct.referenced_sop_uids <= pair.ct.sop_uids and pair.rtstruct.roi_names
        assert [d.name for d in pair.rtdose] == [next(src.glob("RD.*.dcm")).name]
        assert pair.other_rtstructs == []
    assert found.orphan_rtstructs == []
    plans = sorted(f.name for f in breast_export.rglob("RP.*.dcm"))     # the plans the doses belong to: not used
    assert len(plans) == len(PATIENTS)
    assert sorted(p.name for p, _ in found.skipped) == sorted(["synth_breast.json", *plans])
    assert all("RTPLAN" in why for p, why in found.skipped if p.name.startswith("RP."))
    assert any("RTDOSE attached" in d for d in found.decisions)
    assert digest(breast_export) == before


def test_text_and_truncated_files_are_skipped(export):
    notes = export / "SYN-BR-000" / "notes.txt"
    notes.write_text("planning notes, not DICOM\n")
    ct = next((export / "SYN-BR-001").glob("CT.*.dcm"))
    data = ct.read_bytes()
    cut = export / "incoming" / "partial_copy.dcm"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    found = run(export)
    reasons = {p.name: why for p, why in found.skipped}
    assert "not a DICOM file" in reasons["notes.txt"]
    assert "truncated" in reasons["partial_copy.dcm"]
    pair = pair_of(found, "SYN-BR-001")
    assert cut not in pair.ct.files and len(pair.ct.files) == len(list((export / "SYN-BR-001").glob("CT.*.dcm")))
    assert all(p.rtstruct is not None for p in found.pairs)


def test_rtstruct_with_foreign_frame_of_reference_is_orphan(export):
    rs_path = next((export / "SYN-BR-001").glob("RS.*.dcm"))
    rs = pydicom.dcmread(rs_path)
    new_frame = generate_uid()
    frame = rs.ReferencedFrameOfReferenceSequence[0]
    frame.FrameOfReferenceUID = new_frame
    frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0].SeriesInstanceUID = generate_uid()
    rs.save_as(rs_path)
    found = run(export)
    assert [o.path for o in found.orphan_rtstructs] == [rs_path]
    assert pair_of(found, "SYN-BR-001").rtstruct is None
    line = next(d for d in found.decisions if rs_path.name in d)
    assert f"frame of reference {new_frame} matches no CT series in the folder" in line
    assert all(p.rtstruct is not None for p in found.pairs if p.ct.patient_id != "SYN-BR-001")


def test_rtstruct_naming_its_series_is_paired_even_when_slices_are_missing(export):
    """Pairing stays, with a warning, so that reading the CT can say which slices are missing."""
    rs_path = next((export / "SYN-BR-002").glob("RS.*.dcm"))
    referenced = next(iter(pydicom.dcmread(rs_path).ROIContourSequence[0].ContourSequence[0].ContourImageSequence))
    (export / "SYN-BR-002" / f"CT.{referenced.ReferencedSOPInstanceUID}.dcm").unlink()
    found = run(export)
    assert not found.orphan_rtstructs
    assert any(p.rtstruct and p.rtstruct.path == rs_path for p in found.pairs)
    line = next(d for d in found.decisions if rs_path.name in d)
    assert "WARNING: 1 of its" in line and "not in the folder" in line


def test_rtstruct_without_series_reference_pairs_by_frame_and_images(export):
    rs_path = next((export / "SYN-BR-000").glob("RS.*.dcm"))
    rs = pydicom.dcmread(rs_path)
    del rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence
    rs.save_as(rs_path)
    found = run(export)
    pair = pair_of(found, "SYN-BR-000")
    assert pair.rtstruct is not None and pair.rtstruct.path == rs_path
    assert any(rs_path.name in d and "matched by frame of reference" in d for d in found.decisions)


def test_moved_rtstruct_leaves_ct_without_structures(export, tmp_path):
    rs_path = next((export / "SYN-BR-002").glob("RS.*.dcm"))
    shutil.move(rs_path, tmp_path / rs_path.name)
    found = run(export)
    pair = pair_of(found, "SYN-BR-002")
    assert pair.rtstruct is None and len(pair.rtdose) == 1
    assert any(pair.ct.series_uid in d and "no RTSTRUCT" in d for d in found.decisions)


def test_latest_of_two_rtstructs_is_chosen(export):
    old = next((export / "SYN-BR-000").glob("RS.*.dcm"))
    rs = pydicom.dcmread(old)
    rs.SOPInstanceUID = rs.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    rs.StructureSetTime = "101500"
    new = export / "SYN-BR-000" / "nested" / "RS.revised.dcm"
    new.parent.mkdir()
    rs.save_as(new)
    found = run(export)
    pair = pair_of(found, "SYN-BR-000")
    assert pair.rtstruct.path == new
    assert [s.path for s in pair.other_rtstructs] == [old]
    line = next(d for d in found.decisions if "RTSTRUCTs" in d)
    assert "RS.revised.dcm" in line and old.name in line and line.index("RS.revised.dcm") < line.index(old.name)


def test_mr_series_is_skipped(export):
    ct = next((export / "SYN-BR-001").glob("CT.*.dcm"))
    ds = pydicom.dcmread(ct)
    ds.Modality = "MR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    mr = export / "SYN-BR-001" / "MR.slice.dcm"
    ds.save_as(mr)
    found = run(export)
    reasons = {p.name: why for p, why in found.skipped}
    assert "MR" in reasons["MR.slice.dcm"] and "only CT" in reasons["MR.slice.dcm"]
    assert mr not in pair_of(found, "SYN-BR-001").ct.files
    assert any(str(ds.SeriesInstanceUID) in d and "MR" in d for d in found.decisions)


def test_rtdose_without_ct_is_skipped(export):
    rd = next((export / "SYN-BR-000").glob("RD.*.dcm"))
    ds = pydicom.dcmread(rd)
    ds.FrameOfReferenceUID = generate_uid()
    ds.save_as(rd)
    found = run(export)
    assert pair_of(found, "SYN-BR-000").rtdose == []
    assert any(p == rd and "matches no CT series" in why for p, why in found.skipped)


def test_find_ct_series_lists_files_per_series_or_says_what_is_there(export, tmp_path):
    from nnunet_breast.dataset_conversion.discovery import NoCTSeriesError, find_ct_series

    series = find_ct_series(export / "SYN-BR-001")
    assert len(series) == 1 and series[0].patient_id == "SYN-BR-001"
    assert series[0].files == sorted((export / "SYN-BR-001").glob("CT.*.dcm"))
    only_rs = tmp_path / "only_rs"
    only_rs.mkdir()
    shutil.copy(next((export / "SYN-BR-001").glob("RS.*.dcm")), only_rs)
    with pytest.raises(NoCTSeriesError, match="no CT series found"):
        find_ct_series(only_rs)
