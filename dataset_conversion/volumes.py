"""Structure volumes of a converted cohort: per case in ``cohort.csv``, as a range in ``dataset.json``.

Why: ``predict``'s QA report (:mod:`nnunet_breast.inference.qa_report`) flags a predicted structure whose
volume lies outside what the model was trained on. nnU-Net copies dataset.json into the trained model folder,
so the range travels with the model: ``"nnunet_breast": {"volume_cc": {structure: {"p5", "p95", "n"}}}``,
the 5th and 95th percentile (cc) over the ``n`` cases that have the structure.

``cohort.csv`` has one ``<Structure>_cc`` column per cohort structure: the case's volume of each structure it
annotates with at least one voxel, empty otherwise. A structure a case lacks (not contoured, or contoured
without a voxel centre inside) is left out, never counted as 0 cc, which would pull the 5th percentile to
nothing and let an empty prediction pass. Volumes are measured once, on the masks in memory while a case is
converted; rows of a cohort.csv written before the columns existed get them from their label files once (the
columns are then written back).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_breast.structures.regions import OverlapEncoding

__all__ = ["case_volumes", "fill_volumes_from_labels", "volume_columns", "volume_ranges", "volumes_missing"]


def volume_columns(wanted: tuple[str, ...]) -> list[str]:
    return [f"{n}_cc" for n in wanted]


def case_volumes(masks: dict[str, np.ndarray], annotated, spacing, wanted: tuple[str, ...]) -> dict[str, float]:
    """The ``<Structure>_cc`` cells of one case: cc (``spacing`` in mm) of the annotated structures with
    voxels, empty for the others."""
    voxel_cc = float(np.prod(spacing)) / 1000.0
    voxels = {n: int(np.count_nonzero(masks[n])) if n in annotated and n in masks else 0 for n in wanted}
    return {f"{n}_cc": round(v * voxel_cc, 3) if v else "" for n, v in voxels.items()}


def volume_ranges(rows: dict[str, dict], wanted: tuple[str, ...]) -> dict[str, dict]:
    """Structure -> {"p5", "p95": cc, "n": cases} over the rows whose ``<Structure>_cc`` is filled in; a
    structure no case has is left out."""
    out = {}
    for n in wanted:
        v = [float(r[f"{n}_cc"]) for r in rows.values() if r.get(f"{n}_cc") not in (None, "")]
        if v:
            out[n] = {"p5": round(float(np.percentile(v, 5)), 3), "p95": round(float(np.percentile(v, 95)), 3),
                      "n": len(v)}
    return out


def volumes_missing(rows: dict[str, dict], wanted: tuple[str, ...]) -> dict[str, dict]:
    """Rows read from a cohort.csv written before the volume columns existed."""
    return {c: r for c, r in rows.items() if not any(k in r for k in volume_columns(wanted))}


def fill_volumes_from_labels(rows: dict[str, dict], annotated: dict[str, list[str]], wanted: tuple[str, ...],
                             labels: Path, encoding: OverlapEncoding) -> None:
    """Fill the volume cells of the cases in ``annotated`` (case id -> structures it annotates) from their
    label files in ``labels``: one read each, voxels counted per label id, summed per structure's ids."""
    ids = encoding.region_label_ids()
    for cid, names in annotated.items():
        label = sitk.ReadImage(str(Path(labels) / f"{cid}.nii.gz"))
        counts = np.bincount(sitk.GetArrayViewFromImage(label).ravel(), minlength=encoding.num_labels + 1)
        voxel_cc = float(np.prod(label.GetSpacing())) / 1000.0
        for n in wanted:
            voxels = int(counts[ids[n]].sum()) if n in names else 0
            rows[cid][f"{n}_cc"] = round(voxels * voxel_cc, 3) if voxels else ""
