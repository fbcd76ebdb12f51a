"""Find CT series, RTSTRUCTs and RTDOSEs in any folder layout and pair them, explaining every choice.

Clinical exports come as flat folders, one folder per patient, per series, or per PACS query, mixed
with stray reports, other modalities and half-copied files. File names and folders are therefore
ignored: every file's header is read and objects are paired by DICOM references only (RTSTRUCT ->
series UID, frame of reference and referenced images). Nothing is fatal and nothing is silent: each
unused file lands in ``skipped`` with a reason and each pairing choice adds a line to ``decisions``,
so the person converting a dataset can audit what was used. Files are only ever opened for reading.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError

from nnunet_breast.errors import UserError


@dataclass
class SeriesInfo:
    series_uid: str
    study_uid: str
    frame_uid: str
    modality: str
    patient_id: str
    files: list[Path] = field(default_factory=list)
    sop_uids: set[str] = field(default_factory=set)


@dataclass
class StructureSetInfo:
    path: Path
    sop_uid: str
    patient_id: str
    study_uid: str
    frame_uids: list[str]
    referenced_series_uids: list[str]
    referenced_sop_uids: set[str]
    date_time: str                 # StructureSetDate + StructureSetTime (HHMMSS[.f]), sortable as text
    roi_names: list[str]


@dataclass
class CasePair:
    ct: SeriesInfo
    rtstruct: StructureSetInfo | None
    other_rtstructs: list[StructureSetInfo]
    rtdose: list[Path]


@dataclass
class Discovery:
    pairs: list[CasePair]                      # one per CT series, sorted by (patient_id, series_uid)
    decisions: list[str]                       # human-readable report lines, one per decision (what and why)
    skipped: list[tuple[Path, str]]            # files not used and why (not DICOM, unreadable, non-CT series ...)
    orphan_rtstructs: list[StructureSetInfo]   # RTSTRUCTs whose CT is not in the folder


_UNDEFINED_LENGTH = 0xFFFFFFFF
_ENCAPSULATED_HINT = "1.2.840.10008.1.2.4"     # JPEG, JPEG-LS, JPEG 2000 ... transfer syntaxes


def _read_header(path: Path) -> tuple[pydicom.Dataset | None, str]:
    """Header without pixels, or (None, why not). pydicom reads truncated files silently, so check."""
    try:
        with open(path, "rb") as fp:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
            pixel_start = fp.tell()      # pydicom rewinds to the start of PixelData when it stops there
    except InvalidDicomError:
        return None, "not a DICOM file (no DICOM preamble)"
    except Exception as exc:  # pydicom raises many types for damaged files
        return None, f"unreadable DICOM ({type(exc).__name__}: {exc})"
    for elem in ds.elements():
        if isinstance(elem, RawDataElement) and elem.value is not None and elem.length != _UNDEFINED_LENGTH \
                and len(elem.value) < elem.length:
            return None, f"truncated: element {elem.tag} declares {elem.length} bytes, the file holds {len(elem.value)}"
    if "Rows" in ds and "Columns" in ds and "BitsAllocated" in ds:
        syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
        if not syntax.startswith(_ENCAPSULATED_HINT) and syntax != "1.2.840.10008.1.2.5":
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            needed = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * frames \
                * ((int(ds.BitsAllocated) + 7) // 8)
            left = path.stat().st_size - pixel_start
            if left < needed + 8:   # 8 bytes: the smallest element header
                return None, f"truncated: pixel data needs {needed} bytes, only {max(left - 8, 0)} remain in the file"
    return ds, ""


def _time(date: str, time: str) -> str:
    """StructureSetDate+Time as sortable text: '0930' and '093000.5' compare correctly."""
    hhmmss, _, fraction = str(time).partition(".")
    return f"{str(date):0<8}{hhmmss:0<6}{('.' + fraction) if fraction else ''}"


def _structure_set(path: Path, ds: pydicom.Dataset) -> StructureSetInfo:
    frames, series, sops = [], [], set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        if "FrameOfReferenceUID" in frame:
            frames.append(str(frame.FrameOfReferenceUID))
        for study in frame.get("RTReferencedStudySequence", []):
            for s in study.get("RTReferencedSeriesSequence", []):
                if "SeriesInstanceUID" in s:
                    series.append(str(s.SeriesInstanceUID))
                sops.update(str(i.ReferencedSOPInstanceUID) for i in s.get("ContourImageSequence", []))
    for roi in ds.get("ROIContourSequence", []):
        for contour in roi.get("ContourSequence", []):
            sops.update(str(i.ReferencedSOPInstanceUID) for i in contour.get("ContourImageSequence", []))
    return StructureSetInfo(
        path=path, sop_uid=str(ds.get("SOPInstanceUID", "")), patient_id=str(ds.get("PatientID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")), frame_uids=frames, referenced_series_uids=series,
        referenced_sop_uids=sops,
        date_time=_time(ds.get("StructureSetDate", ""), ds.get("StructureSetTime", "")),
        roi_names=[str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])])


def _match(rs: StructureSetInfo, cts: dict[str, SeriesInfo], name: str) -> tuple[SeriesInfo | None, str]:
    """The CT series ``rs`` was drawn on, and why; or None and why not."""
    named = [cts[uid] for uid in rs.referenced_series_uids if uid in cts]
    if named:
        ct = named[0]
        why = "the RTSTRUCT references this series by UID"
    else:
        same_frame = [ct for ct in cts.values() if ct.frame_uid in rs.frame_uids]
        if not same_frame:
            frames = ", ".join(rs.frame_uids) or "(none given)"
            return None, f"{name}: frame of reference {frames} matches no CT series in the folder"
        complete = [ct for ct in same_frame if rs.referenced_sop_uids <= ct.sop_uids]
        if len(complete) != 1:
            problem = "several CT series" if complete else "no CT series"
            return None, (f"{name}: its {len(rs.referenced_sop_uids)} referenced images are contained in {problem} "
                          f"of frame of reference {same_frame[0].frame_uid}; cannot tell which CT it belongs to")
        ct = complete[0]
        why = f"matched by frame of reference {ct.frame_uid} and all {len(rs.referenced_sop_uids)} referenced images"
    missing = rs.referenced_sop_uids - ct.sop_uids
    if missing and named:
        # the series is named by UID: pair it, so that reading the CT reports which slices are missing
        why += (f"; WARNING: {len(missing)} of its {len(rs.referenced_sop_uids)} referenced images are not in the "
                f"folder (e.g. {sorted(missing)[0]})")
    elif missing:
        return None, (f"{name}: references CT series {ct.series_uid}, but {len(missing)} of its "
                      f"{len(rs.referenced_sop_uids)} referenced images are not in that series "
                      f"(e.g. {sorted(missing)[0]}); the CT is incomplete or a different version")
    if ct.frame_uid not in rs.frame_uids:
        return None, (f"{name}: references CT series {ct.series_uid} but declares frame of reference "
                      f"{', '.join(rs.frame_uids) or '(none)'} instead of the series' {ct.frame_uid}")
    if rs.patient_id != ct.patient_id:
        return None, (f"{name}: PatientID {rs.patient_id!r} differs from its CT series' {ct.patient_id!r}; "
                      f"refusing to pair across patients")
    return ct, why


def discover(root: Path) -> Discovery:
    """Read every file under ``root`` (recursively) and pair each CT series with its RTSTRUCT and RTDOSEs."""
    root = Path(root)

    def rel(path: Path) -> str:   # report paths as the user sees them
        return str(path.relative_to(root))

    decisions: list[str] = []
    skipped: list[tuple[Path, str]] = []
    cts: dict[str, SeriesInfo] = {}
    other_series: dict[tuple[str, str], list[Path]] = defaultdict(list)
    structure_sets: list[StructureSetInfo] = []
    doses: list[tuple[Path, str]] = []

    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        ds, why = _read_header(path)
        if ds is None:
            skipped.append((path, why))
            continue
        modality = str(ds.get("Modality", ""))
        if modality == "CT":
            missing = [kw for kw in ("SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID",
                                     "ImagePositionPatient") if kw not in ds]
            if missing:
                skipped.append((path, f"CT file lacks {', '.join(missing)}"))
            elif "LOCALIZER" in [str(v).upper() for v in ds.get("ImageType", [])]:
                skipped.append((path, "CT localizer (scout) image, not part of a volume"))
            elif int(ds.get("NumberOfFrames", 1) or 1) > 1:
                skipped.append((path, "multi-frame (enhanced) CT is not supported"))
            else:
                uid = str(ds.SeriesInstanceUID)
                ct = cts.setdefault(uid, SeriesInfo(uid, str(ds.get("StudyInstanceUID", "")),
                                                    str(ds.FrameOfReferenceUID), modality,
                                                    str(ds.get("PatientID", ""))))
                ct.files.append(path)
                ct.sop_uids.add(str(ds.SOPInstanceUID))
        elif modality == "RTSTRUCT":
            structure_sets.append(_structure_set(path, ds))
        elif modality == "RTDOSE":
            doses.append((path, str(ds.get("FrameOfReferenceUID", ""))))
        elif modality:
            other_series[(modality, str(ds.get("SeriesInstanceUID", "")))].append(path)
        else:
            skipped.append((path, "DICOM object without Modality (a DICOMDIR, or a truncated file); not used"))

    for (modality, series_uid), files in sorted(other_series.items()):
        reason = f"{modality} object, series {series_uid}: only CT image series are converted"
        skipped.extend((f, reason) for f in files)
        decisions.append(f"skipped {modality} series {series_uid} ({len(files)} file(s)): only CT image series "
                         f"are converted")

    by_ct: dict[str, list[StructureSetInfo]] = defaultdict(list)
    orphans: list[StructureSetInfo] = []
    for rs in structure_sets:
        ct, why = _match(rs, cts, rel(rs.path))
        if ct is None:
            orphans.append(rs)
            decisions.append(f"{why}; RTSTRUCT not used")
        else:
            by_ct[ct.series_uid].append(rs)
            decisions.append(f"{rel(rs.path)} -> CT series {ct.series_uid} (patient {ct.patient_id}): {why}")

    pairs = []
    for ct in sorted(cts.values(), key=lambda s: (s.patient_id, s.series_uid)):
        candidates = sorted(by_ct[ct.series_uid], key=lambda s: (s.date_time, s.path.name, str(s.path)),
                            reverse=True)
        chosen = candidates[0] if candidates else None
        if chosen is None:
            decisions.append(f"CT series {ct.series_uid} (patient {ct.patient_id}, {len(ct.files)} files): no RTSTRUCT "
                             f"references it; paired without structures")
        elif len(candidates) > 1:
            ignored = ", ".join(f"{rel(s.path)} ({s.date_time})" for s in candidates[1:])
            decisions.append(f"CT series {ct.series_uid} (patient {ct.patient_id}): {len(candidates)} RTSTRUCTs; "
                             f"chose the latest {rel(chosen.path)} ({chosen.date_time}), ignored {ignored} "
                             f"(latest StructureSetDate/Time wins, then file name)")
        ct.files.sort()
        pairs.append(CasePair(ct, chosen, candidates[1:], []))

    for path, frame in doses:
        targets = [p for p in pairs if p.ct.frame_uid == frame]
        if not targets:
            skipped.append((path, f"RTDOSE with frame of reference {frame or '(none)'}: matches no CT series"))
            decisions.append(f"{rel(path)}: RTDOSE frame of reference {frame or '(none)'} matches no CT series; "
                             f"not used")
            continue
        for p in targets:
            p.rtdose.append(path)
        decisions.append(f"{rel(path)}: RTDOSE attached to CT series "
                         f"{', '.join(p.ct.series_uid for p in targets)} (same frame of reference {frame})")
    return Discovery(pairs, decisions, skipped, orphans)


class NoCTSeriesError(UserError):
    """A folder holds no usable CT series; the message says what it holds instead."""


def find_ct_series(root: Path) -> list[SeriesInfo]:
    """The CT series under ``root`` (any layout, searched recursively), sorted by (patient id, series UID).

    Each :class:`SeriesInfo` lists its ``files`` (sorted), ready for
    :func:`nnunet_breast.dicom.ct_reader.read_ct_series`; RTSTRUCTs, RTDOSEs, other modalities and
    non-DICOM files are passed over. Raises :class:`NoCTSeriesError` when there is no CT series.
    """
    found = discover(root)
    if not found.pairs:
        modalities = sorted({why.split(" object")[0] for _, why in found.skipped if " object, series " in why})
        what = f"only {', '.join(modalities)} series" if modalities else "no readable DICOM CT image"
        raise NoCTSeriesError(f"{Path(root)}: no CT series found ({what}; {len(found.skipped)} file(s) skipped)")
    return [pair.ct for pair in found.pairs]
