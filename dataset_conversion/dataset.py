"""Source cases -> ``nnUNet_raw/DatasetXXX_Name`` (imagesTr, labelsTr, dataset.json, cohort.csv, report).

Safety rules: the input is only read; each case is written to a staging folder and moved into place with
its label last, so an interrupted run never leaves a case that looks complete (images without a label
are removed at the next run); a rerun skips converted cases (``redo`` replaces them); an existing dataset id
with another name or cohort is refused unless ``overwrite``.

The annotation record: a clinical structure set holds only some structures (the treated side's CTVs, the
nodal levels of the indication, not always every OAR), and the label map writes the others as background.
``dataset.json`` therefore says, per case, which structures the case annotates
(``"nnunet_breast": {"annotated": {case_id: [structure, ...]}}``, catalog order): the cohort's structures
minus ``cohort.csv``'s ``structures_missing``. Annotated means contoured in the case's RTSTRUCT (at least one
contour, even if no voxel centre lies inside it) or given as a NIfTI mask; an ROI declared without contours
is not. The clip cohort's record is complete (``["Clips"]`` for every case: no clip ROI = no clips). The
record covers exactly the cases in ``labelsTr``; nnU-Net copies dataset.json into the preprocessed folder,
where the breast trainers read it (``trainers/partial_labels.py``).

Volumes: ``cohort.csv`` has a ``<Structure>_cc`` column per structure and ``dataset.json`` the cohort's range
(``"nnunet_breast": {"volume_cc": ...}``), which ``predict``'s QA report compares predictions with
(:mod:`nnunet_breast.dataset_conversion.volumes`).

Orientation: any patient position converts (head- or feet-first, supine, prone, decubitus, any axial storage
order); images and labels are written with their voxels in the LPS layout (the identity direction, as a
head-first supine CT; :func:`nnunet_breast.volumes.orientation.to_lps`: no resampling, every voxel keeps its
patient position), the layout ``nnunet-breast predict`` shows the models. A non-axial series is refused.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunet_breast.dataset_conversion.cases import CaseError, SourceCase, load_case, nifti_sources, treated_side
from nnunet_breast.dataset_conversion.volumes import (case_volumes, fill_volumes_from_labels, volume_columns,
                                                      volume_ranges, volumes_missing)
from nnunet_breast.errors import UserError
from nnunet_breast.structures import catalog
from nnunet_breast.structures.regions import OverlapEncoding, build_encoding, merge_encodings
from nnunet_breast.util.files import atomic_write_csv, atomic_write_text
from nnunet_breast.volumes.body import air_outside_body
from nnunet_breast.volumes.orientation import array_to_lps, axial_problem, to_lps

log = logging.getLogger(__name__)
COHORTS = {"breast": catalog.BREAST_STRUCTURES, "clips": catalog.CLIP_STRUCTURES}
COHORT_COLUMNS = ["case_id", "patient_id", "study_uid", "series_uid", "source", "contrast", "contrast_agent", "site",
                  "side", "spacing_x", "spacing_y", "spacing_z", "n_slices", "structures_present",
                  "structures_missing"]


class ConversionError(UserError):
    """The conversion as a whole is refused (bad arguments, unsafe paths, dataset id clash)."""


@dataclass
class ConvertOptions:
    cohort: str
    input: Path
    dataset_id: int
    name: str
    raw_root: Path
    mapping: dict[str, str] | None = None
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)   # patient or case id -> overrides
    num_processes: int = 1
    overwrite: bool = False
    redo: bool = False
    point_radius_mm: float = 2.0


@dataclass
class Report:
    dataset_dir: Path
    decisions: list[str] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    cases: dict[str, dict] = field(default_factory=dict)     # case id -> status, names, missing, reason
    unused_rtstructs: list[str] = field(default_factory=list)
    ct_without_rtstruct: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [c for c, r in self.cases.items() if r["status"] == "failed"]

    @property
    def converted(self) -> list[str]:
        return [c for c, r in self.cases.items() if r["status"] == "converted"]


def dataset_folder(raw_root: Path, dataset_id: int, name: str, overwrite: bool, cohort: str) -> Path:
    if not 1 <= dataset_id <= 999:
        raise ConversionError(f"dataset id {dataset_id} must be between 1 and 999")
    target = raw_root / f"Dataset{dataset_id:03d}_{name}"
    for other in raw_root.glob(f"Dataset{dataset_id:03d}_*"):
        clash = other != target
        if not clash and (other / "dataset.json").is_file():
            info = json.loads((other / "dataset.json").read_text()).get("nnunet_breast", {})
            clash = info.get("cohort") != cohort
        if clash:
            if not overwrite:
                raise ConversionError(f"{other} already holds dataset {dataset_id} with other content; "
                                      f"choose another id or pass --overwrite to replace it")
            shutil.rmtree(other)
    return target


def _check_paths(input_dir: Path, target: Path) -> None:
    src, dst = input_dir.resolve(), target.resolve()
    if not src.is_dir():
        raise ConversionError(f"--input {input_dir} is not a folder")
    if dst == src or src in dst.parents or dst in src.parents:
        raise ConversionError(f"output {target} and input {input_dir} overlap; the input is never written to")


def find_sources(opts: ConvertOptions, report: Report) -> list[SourceCase]:
    from nnunet_breast.dataset_conversion.discovery import discover

    found = discover(opts.input)
    report.decisions += found.decisions
    report.skipped_files += [(str(p), why) for p, why in found.skipped]
    report.unused_rtstructs = [str(rs.path) for rs in found.orphan_rtstructs]
    report.ct_without_rtstruct = [p.ct.series_uid for p in found.pairs if p.rtstruct is None]
    sources = [SourceCase("dicom", p.ct.series_uid, p.ct.patient_id, ct_files=list(p.ct.files),
                          rtstruct=p.rtstruct.path, rtdose=list(p.rtdose))
               for p in found.pairs if p.rtstruct is not None]
    if not sources:
        sources = nifti_sources(opts.input)
        if sources:
            report.decisions.append(f"no DICOM CT + RTSTRUCT pairs; read {len(sources)} NIfTI cases "
                                    f"(<case>/image.nii.gz + <case>/masks/<ROI>.nii.gz)")
    return sources


def _convert_one(src: SourceCase, opts: ConvertOptions, staging: Path) -> dict:
    """Worker: read, rasterise, write image + structure bits to staging; returns the case record."""
    wanted = COHORTS[opts.cohort]
    case = load_case(src, opts.mapping, wanted, opts.point_radius_mm)
    problem = axial_problem(case.image.GetDirection())
    if problem:
        raise CaseError(problem)
    # the voxels in the LPS layout (a head-first supine CT as it is): prediction shows the models every CT so
    image = to_lps(case.image)
    case.masks = {name: np.ascontiguousarray(array_to_lps(m, case.image.GetDirection()))
                  for name, m in case.masks.items()}
    body = None
    if opts.cohort == "clips":
        image, body = air_outside_body(image)
    bits = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint32)
    for i, name in enumerate(wanted):
        if name in case.masks:
            bits[case.masks[name]] |= np.uint32(1 << i)
    cid = src.case_id
    sitk.WriteImage(image, str(staging / f"{cid}_0000.nii.gz"), useCompression=True)
    np.save(staging / f"{cid}_bits.npy", bits)
    if body is not None:
        sitk.WriteImage(_like(body.astype(np.uint8), image), str(staging / f"{cid}_body.nii.gz"), useCompression=True)
    combos = {tuple(wanted[i] for i in range(len(wanted)) if v >> i & 1) for v in np.unique(bits) if v}
    meta = dict(case.meta)
    annotated = set(case.annotated)
    meta.update(case_volumes(case.masks, annotated, image.GetSpacing(), wanted))
    meta.update({
        "case_id": cid, "source": meta.pop("rtstruct") or str(src.image), "contrast": int(bool(meta["contrast_agent"])),
        "side": treated_side(case.masks, image, opts.cohort, body, meta.pop("dose_side")),
        "spacing_x": round(image.GetSpacing()[0], 4), "spacing_y": round(image.GetSpacing()[1], 4),
        "spacing_z": round(image.GetSpacing()[2], 4), "n_slices": image.GetSize()[2],
        "structures_present": ";".join(n for n in wanted if n in annotated),      # = the annotation record
        "structures_missing": ";".join(n for n in wanted if n not in annotated),
    })
    return {"meta": meta, "combos": sorted(combos), "names": case.names_seen, "empty_rois": case.empty_rois}


def _like(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(ref)
    return img


def convert(opts: ConvertOptions, progress: bool = True) -> Report:
    if opts.cohort not in COHORTS:
        raise ConversionError(f"unknown cohort {opts.cohort!r}")
    _check_mapping(opts.mapping)
    target = dataset_folder(opts.raw_root, opts.dataset_id, opts.name, opts.overwrite, opts.cohort)
    _check_paths(opts.input, target)
    report = Report(target)
    sources = find_sources(opts, report)
    if not sources:
        raise ConversionError(f"no convertible case under {opts.input} (DICOM CT + RTSTRUCT, or NIfTI layout)")
    images, labels = target / "imagesTr", target / "labelsTr"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(exist_ok=True)
    _remove_half_cases(images, labels, report)
    old = _read_existing(target)
    todo = []
    for src in sources:
        done = (labels / f"{src.case_id}.nii.gz").is_file() and src.case_id in old["rows"]
        if done and not opts.redo:
            report.cases[src.case_id] = {"status": "skipped", "reason": "already converted (use --redo to replace)"}
        else:
            todo.append(src)
    staging = target / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    results = {}
    try:
        results = _run_all(todo, opts, staging, report, progress)
        wanted = COHORTS[opts.cohort]
        combos = {tuple(c) for r in results.values() for c in r["combos"]}
        encoding = merge_encodings(old["encoding"], combos) if old["encoding"] else build_encoding(wanted, combos)
        rows = dict(old["rows"])
        for cid, r in results.items():
            _place_case(cid, staging, target, encoding, wanted)
            rows[cid] = _apply_overrides(r["meta"], opts.metadata)
            report.cases[cid].update(status="converted")
        rows = _rows_on_disk(rows, labels, report)
        old = volumes_missing(rows, wanted)
        fill_volumes_from_labels(rows, annotation_record(old, wanted, opts.cohort), wanted, labels, encoding)
        if old:
            report.decisions.append(f"{len(old)} case(s) from a cohort.csv without volume columns: volumes read "
                                    f"from their labels")
        _write_dataset_json(target, opts.cohort, encoding, annotation_record(rows, wanted, opts.cohort),
                            volume_ranges(rows, wanted))
        atomic_write_csv(target / "cohort.csv", COHORT_COLUMNS + volume_columns(wanted),
                         [rows[c] for c in sorted(rows)])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_report(report, results, opts.cohort)
    return report


def _run_all(todo, opts, staging, report, progress) -> dict[str, dict]:
    results = {}
    bar = tqdm(total=len(todo), desc=f"convert {opts.cohort}", unit="case", disable=not progress)

    def record(src, fut_result=None, error=None):
        if error is not None:
            report.cases[src.case_id] = {"status": "failed", "reason": str(error), "patient_id": src.patient_id}
        else:
            results[src.case_id] = fut_result
            report.cases[src.case_id] = {"status": "pending", "names": fut_result["names"],
                                         "empty_rois": fut_result["empty_rois"],
                                         "missing": fut_result["meta"]["structures_missing"]}
        bar.update()

    if opts.num_processes <= 1:
        for src in todo:
            try:
                record(src, _convert_one(src, opts, staging))
            except CaseError as e:
                record(src, error=e)
    else:
        with ProcessPoolExecutor(opts.num_processes, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_convert_one, src, opts, staging): src for src in todo}
            for fut, src in futures.items():
                try:
                    record(src, fut.result())
                except CaseError as e:
                    record(src, error=e)
    bar.close()
    return results


def _place_case(cid: str, staging: Path, target: Path, encoding: OverlapEncoding, wanted) -> None:
    """Encode the structure bits as labels, then move image (and body) first and the label last."""
    bits = np.load(staging / f"{cid}_bits.npy")
    lut_keys, inverse = np.unique(bits, return_inverse=True)
    label_of = {tuple(wanted[i] for i in range(len(wanted)) if int(v) >> i & 1): k
                for k, v in enumerate(lut_keys)}
    ids = np.zeros(len(lut_keys), np.uint16)
    combo_id = {c: i + 1 for i, c in enumerate(encoding.combos)}
    for combo, k in label_of.items():
        ids[k] = combo_id[combo] if combo else 0
    label = ids[inverse.reshape(bits.shape)].astype(np.uint8 if len(encoding.combos) < 256 else np.uint16)
    image_file = staging / f"{cid}_0000.nii.gz"
    ref = sitk.ReadImage(str(image_file))
    sitk.WriteImage(_like(label, ref), str(staging / f"{cid}.nii.gz"), useCompression=True)
    if (staging / f"{cid}_body.nii.gz").is_file():
        (target / "bodyTr").mkdir(exist_ok=True)
        os.replace(staging / f"{cid}_body.nii.gz", target / "bodyTr" / f"{cid}.nii.gz")
    os.replace(image_file, target / "imagesTr" / f"{cid}_0000.nii.gz")
    os.replace(staging / f"{cid}.nii.gz", target / "labelsTr" / f"{cid}.nii.gz")


def _check_mapping(mapping: dict[str, str] | None) -> None:
    for written, canon in (mapping or {}).items():
        if not isinstance(canon, str) or canon not in catalog.BY_NAME:
            raise ConversionError(f"--mapping sends {written!r} to {canon!r}, which is not a catalog structure "
                                  f"(TG-263 names such as Heart, Lung_L, CTVp_breast_L, CTVn_L1_R)")


def _rows_on_disk(rows: dict[str, dict], labels: Path, report: Report) -> dict[str, dict]:
    """The cohort.csv rows (and so the annotation record) of the cases whose label is in ``labelsTr``: a case
    removed from the dataset loses its row; a label without a row is reported (it has no annotation record)."""
    on_disk = {f.name[: -len(".nii.gz")] for f in labels.glob("*.nii.gz")}
    for cid in sorted(set(rows) - on_disk):
        report.decisions.append(f"{cid}: in cohort.csv but no longer in labelsTr; its row and annotation record "
                                f"are dropped")
    for cid in sorted(on_disk - set(rows)):
        report.decisions.append(f"{cid}: in labelsTr but not in cohort.csv, so without an annotation record; "
                                f"convert its source again or remove its files")
    return {c: r for c, r in rows.items() if c in on_disk}


def annotation_record(rows: dict[str, dict], wanted: tuple[str, ...], cohort: str) -> dict[str, list[str]]:
    """case id -> the structures it annotates (catalog order): the cohort's structures minus
    ``structures_missing`` (rows of datasets converted before the record existed too). Clip cohort: every case
    annotates its clips; an RTSTRUCT without a clip ROI is a patient without clips (as evaluation reads it)."""
    record = {}
    for cid in sorted(rows):
        missing = set() if cohort == "clips" else set(rows[cid].get("structures_missing", "").split(";"))
        record[cid] = [n for n in wanted if n not in missing]
    return record


def _remove_half_cases(images: Path, labels: Path, report: Report) -> None:
    for img in images.glob("*_0000.nii.gz"):
        cid = img.name[: -len("_0000.nii.gz")]
        if not (labels / f"{cid}.nii.gz").is_file():
            img.unlink()
            report.decisions.append(f"{cid}: image without label left by an interrupted run; removed, redone")


def _read_existing(target: Path) -> dict:
    rows, encoding = {}, None
    if (target / "cohort.csv").is_file():
        with open(target / "cohort.csv", newline="") as f:
            rows = {r["case_id"]: r for r in csv.DictReader(f)}
    if (target / "dataset.json").is_file():
        info = json.loads((target / "dataset.json").read_text()).get("nnunet_breast", {})
        if "encoding" in info:
            encoding = OverlapEncoding.from_json(info["encoding"])
    return {"rows": rows, "encoding": encoding}


def _apply_overrides(meta: dict, overrides: dict[str, dict[str, str]]) -> dict:
    extra = overrides.get(meta["case_id"]) or overrides.get(meta["patient_id"]) or {}
    meta = dict(meta)
    for key in ("contrast", "site", "side"):
        if extra.get(key, "") != "":
            meta[key] = extra[key]
    return meta


def _write_dataset_json(target: Path, cohort: str, encoding: OverlapEncoding, annotated: dict[str, list[str]],
                        volume_cc: dict[str, dict]) -> None:
    # clips: raw HU ('noNorm') so the clip networks' input layer can threshold HU >= 300 (trainers/clips.py)
    channel = "noNorm" if cohort == "clips" else "CT"
    ds = {"channel_names": {"0": channel}, "labels": encoding.dataset_json_labels(), "numTraining": len(annotated),
          "file_ending": ".nii.gz", "name": target.name.split("_", 1)[1],
          "description": f"nnunet_breast {cohort} cohort converted from DICOM-RT",
          "nnunet_breast": {"cohort": cohort, "encoding": encoding.to_json(), "annotated": annotated,
                            "volume_cc": volume_cc}}
    if any(len(c) > 1 for c in encoding.combos):
        ds["regions_class_order"] = encoding.regions_class_order()
    atomic_write_text(target / "dataset.json", json.dumps(ds, indent=2))


def _write_report(report: Report, results: dict, cohort: str) -> None:
    names: dict[str, str | None] = {}
    for r in report.cases.values():
        names.update(r.get("names", {}))
    summary = {
        "dataset": str(report.dataset_dir), "cohort": cohort,
        "converted": report.converted, "failed": {c: report.cases[c]["reason"] for c in report.failed},
        "skipped": [c for c, r in report.cases.items() if r["status"] == "skipped"],
        "roi_names": names, "unmapped_names": sorted(n for n, c in names.items() if c is None),
        "unused_rtstructs": report.unused_rtstructs, "ct_without_rtstruct": report.ct_without_rtstruct,
        "decisions": report.decisions, "skipped_files": report.skipped_files, "cases": report.cases,
    }
    atomic_write_text(report.dataset_dir / "conversion_report.json", json.dumps(summary, indent=2, default=str))
    lines = [f"# Conversion report: {report.dataset_dir.name}", "",
             f"converted {len(report.converted)}, failed {len(report.failed)}, "
             f"skipped {len(summary['skipped'])}", "", "## Decisions", ""]
    lines += [f"- {d}" for d in report.decisions] or ["- none"]
    lines += ["", "## ROI names", "", "| written | mapped to |", "|---|---|"]
    lines += [f"| {n} | {c or '**unknown**'} |" for n, c in sorted(names.items())]
    lines += ["", "## Cases", ""]
    for cid, r in sorted(report.cases.items()):
        detail = r.get("reason") or (f"missing: {r.get('missing') or 'none'}"
                                     + (f"; empty ROIs: {', '.join(r['empty_rois'])}" if r.get("empty_rois") else ""))
        lines.append(f"- {cid}: {r['status']} ({detail})")
    if report.skipped_files:
        lines += ["", "## Files not used", ""] + [f"- {p}: {why}" for p, why in report.skipped_files]
    atomic_write_text(report.dataset_dir / "conversion_report.md", "\n".join(lines) + "\n")
