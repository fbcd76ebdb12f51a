"""One self-contained HTML page per predicted case: what a physicist checks before the contours go to the TPS.

Why one file with everything inside: it is opened from a share or an e-mail on a locked-down planning
workstation, without this package and often without network: the preview PNG is embedded as a data URI, the
CSS is inline, there is no script and no external resource. The page is written atomically.

Flags (counted in the summary line at the top):

* volume: a structure outside the 5th-95th percentile of the training cohort's contoured volumes (stored
  with the model by ``convert``: dataset.json ``"nnunet_breast" -> "volume_cc"``, read by
  :func:`cohort_ranges`), or a structure predicted empty;
* laterality: a lateral catalog structure whose centroid lies on the other side of the midline than its
  name says (patient left = +x in DICOM LPS, taken through the CT's own direction, so a prone or feet-first
  CT is judged right); a treated side given that is not the side of the larger predicted breast CTV; clips
  on the untreated side. The midline is the spinal cord's centroid, else the oesophagus', else the centroid
  of the CT's tissue (HU > -500);
* fold disagreement: the folds' agreement per structure (e.g. mean pairwise Dice) below a threshold.

The page never names the patient: it shows the case id and what the caller passes, nothing from DICOM headers.
"""
from __future__ import annotations

import base64
import hashlib
import html
import importlib.metadata
import json
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import nnunet_breast
from nnunet_breast.inference.preview import structure_color
from nnunet_breast.structures.catalog import BY_NAME, STRUCTURES
from nnunet_breast.util.files import atomic_write_text
from nnunet_breast.volumes.orientation import patient_x

__all__ = ["AGREEMENT_THRESHOLD", "cohort_ranges", "model_provenance", "software_versions", "write_qa_report"]

AGREEMENT_THRESHOLD = 0.8                  # fold agreement (e.g. mean pairwise Dice) below this is flagged
MIDLINE_STRUCTURES = ("SpinalCord", "Esophagus")
TISSUE_HU = -500.0
_ORDER = {s.name: i for i, s in enumerate(STRUCTURES)}
_SIDE_WORD = {"L": "left", "R": "right"}
_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left}
th{background:#eee}td.num{text-align:right}.flag{background:#fdd;font-weight:bold}
.summary{font-size:1.2em;padding:.5em;border:2px solid #888}.summary.flagged{border-color:#c00}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.4em;border:1px solid #555}
img{max-width:100%}"""


def cohort_ranges(model_folder: Path) -> dict[str, dict] | None:
    """Volume ranges of the model's training cohort ({structure: {"p5", "p95", "n"}}, cc), from the
    dataset.json nnU-Net copied into the model folder; None for a model converted before they were stored."""
    f = Path(model_folder) / "dataset.json"
    if not f.is_file():
        return None
    return json.loads(f.read_text()).get("nnunet_breast", {}).get("volume_cc") or None


def software_versions() -> dict[str, str]:
    """This package's, nnU-Net's and torch's versions (installed distributions), for the provenance table."""
    out = {"nnunet_breast": nnunet_breast.__version__}
    for dist in ("nnunetv2", "torch"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def model_provenance(model) -> dict:
    """Which trained model made the contours (a :class:`~nnunet_breast.inference.predictor.ModelRef`): its
    folder, settings and each used checkpoint's SHA-256, so a page can be traced to the exact weights even
    after a model was retrained in place. Hashing reads every checkpoint: call it once per run, not per case."""
    folder = model.trained_folder()
    folds = [f"fold_{f}" for f in model.folds] if model.folds else sorted(
        p.parent.name for p in folder.glob(f"fold_*/{model.checkpoint}"))
    sha = {}
    for fold in folds:
        h = hashlib.sha256()
        with open(folder / fold / model.checkpoint, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        sha[fold] = h.hexdigest()
    return {"model folder": str(folder), **model.describe(), "checkpoint sha256": sha}


def write_qa_report(path: Path, *, case_id: str, image: sitk.Image, masks: Mapping[str, np.ndarray],
                    preview_png: Path | None = None, clips: dict | None = None,
                    cohort_ranges: Mapping[str, dict] | None = None, fold_agreement: Mapping[str, float] | None = None,
                    provenance: Mapping | None = None, side: str | None = None,
                    agreement_threshold: float = AGREEMENT_THRESHOLD) -> Path:
    """Write the QA page of one case to ``path`` and return it.

    ``masks``: structure -> 0/1 array [z, y, x] on ``image``'s grid (the CT as read, any orientation: its
    geometry gives volumes and patient sides). ``clips``: the case's clips.json content. ``side``: the
    treated side (L/R) when known; else the side of the larger predicted breast CTV. ``provenance``: shown
    as given, after :func:`software_versions`."""
    if side is not None and side.upper()[:1] not in _SIDE_WORD:
        raise ValueError(f"side must be L or R, got {side!r}")
    side = side.upper()[:1] if side else None
    voxel_cc = float(np.prod(image.GetSpacing())) / 1000.0
    names = sorted(masks, key=lambda n: (_ORDER.get(n, len(_ORDER)), n))
    stats = {n: _count_and_centroid(masks[n]) for n in names}
    volumes = {n: stats[n][0] * voxel_cc for n in names}
    flags: list[str] = []
    mid_x, mid_source = _midline_x(image, stats)
    n_flags = len(flags)
    treated, side_text = _treated_side(side, volumes, flags)
    lateral = [("Treated side", side_text, len(flags) > n_flags),
               ("Midline reference", "none" if mid_x is None else f"{mid_source}, x = {mid_x:.1f} mm (LPS)", False)]

    rows = []
    for n in names:
        cells = [f'<td><span class="swatch" style="background:rgb{structure_color(n)}"></span>{_e(n)}</td>',
                 f'<td class="num">{volumes[n]:.2f}</td>', _range_cell(cohort_ranges, n)]
        for text, bad in (_volume_check(volumes[n], cohort_ranges, n), _side_check(n, stats[n][1], image, mid_x),
                          _agreement_check(fold_agreement, n, agreement_threshold)):
            cells.append(_td(text, bad))
            if bad:
                flags.append(f"{n}: {text}")
        rows.append("".join(cells))
    structures = _table(["Structure", "Volume (cc)", "Cohort p5-p95 (cc), n cases", "Volume check",
                         "Laterality", f"Fold agreement (flag < {agreement_threshold:g})"], rows)

    clip_html = "<p>No clip model output for this case.</p>"
    if clips is not None:
        n_flags = len(flags)
        clip_side = _clip_side(clips, mid_x, treated, flags)
        if clip_side:
            lateral.append(("Clip side", clip_side, len(flags) > n_flags))
        clip_html = _clips_section(clips)

    body = [f"<h1>QA report: {_e(case_id)}</h1>", _summary(flags),
            "<h2>Structures</h2>", structures,
            "<h2>Laterality</h2>", _table(["Check", "Result"], [_td(k) + _td(v, bad) for k, v, bad in lateral]),
            "<h2>Preview</h2>", _preview(preview_png),
            "<h2>Surgical clips and tumour-bed proposal</h2>", clip_html,
            "<h2>Provenance</h2>", _provenance(provenance)]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>QA {_e(case_id)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    path = Path(path)
    atomic_write_text(path, page)
    return path


def _e(value) -> str:
    return html.escape(str(value))


def _td(text, flagged: bool = False) -> str:
    return f'<td class="flag">{_e(text)}</td>' if flagged else f"<td>{_e(text)}</td>"


def _table(header: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    return "<table><tr>" + head + "</tr>\n" + "\n".join(f"<tr>{r}</tr>" for r in rows) + "</table>"


def _count_and_centroid(mask: np.ndarray) -> tuple[int, tuple[float, float, float] | None]:
    """Voxel count and centroid index (z, y, x) from the axis profiles: two passes over a large mask, no
    list of voxel coordinates."""
    m = np.asarray(mask).astype(bool, copy=False)
    zy = m.sum(axis=2, dtype=np.int64)
    profiles = (zy.sum(axis=1), zy.sum(axis=0), m.sum(axis=(0, 1), dtype=np.int64))
    n = int(profiles[0].sum())
    if n == 0:
        return 0, None
    return n, tuple(float((p * np.arange(len(p))).sum()) / n for p in profiles)


def _midline_x(image: sitk.Image, stats: dict) -> tuple[float | None, str]:
    """Patient x (mm) of the midline: a midline structure's centroid, else the tissue's (see module docstring)."""
    for name in MIDLINE_STRUCTURES:
        if name in stats and stats[name][1] is not None:
            return patient_x(image, stats[name][1]), f"{name} centroid"
    _, centre = _count_and_centroid(sitk.GetArrayViewFromImage(image) > TISSUE_HU)
    if centre is None:
        return None, ""
    return patient_x(image, centre), f"centroid of the CT's tissue (HU > {TISSUE_HU:g})"


def _treated_side(side: str | None, volumes: dict[str, float], flags: list[str]) -> tuple[str | None, str]:
    breast = {s: volumes.get(f"CTVp_breast_{s}", 0.0) for s in "LR"}
    larger = None if breast["L"] == breast["R"] else max(breast, key=breast.get)
    sizes = f"predicted CTVp_breast_L {breast['L']:.1f} cc, CTVp_breast_R {breast['R']:.1f} cc"
    if side is None:
        if larger is None:
            return None, f"unknown ({sizes})"
        return larger, f"{_SIDE_WORD[larger]}, from the larger predicted breast CTV ({sizes})"
    if larger is not None and larger != side:
        flags.append(f"treated side given as {_SIDE_WORD[side]} but the larger predicted breast CTV is the "
                     f"{_SIDE_WORD[larger]} one")
        return side, f"{_SIDE_WORD[side]} (given), but the larger predicted breast CTV is the other ({sizes})"
    return side, f"{_SIDE_WORD[side]} (given; {sizes})"


def _range_cell(ranges, name: str) -> str:
    r = (ranges or {}).get(name)
    if r is None:
        return _td("none")
    return f'<td class="num">{float(r["p5"]):.2f} - {float(r["p95"]):.2f} (n = {_e(r.get("n", "?"))})</td>'


def _volume_check(cc: float, ranges, name: str) -> tuple[str, bool]:
    if cc == 0:
        return "empty: nothing predicted", True
    if ranges is None:
        return "no cohort range stored with the model", False
    r = ranges.get(name)
    if r is None:
        return "no cohort range for this structure", False
    if cc < float(r["p5"]):
        return "outside cohort range (below the 5th percentile)", True
    if cc > float(r["p95"]):
        return "outside cohort range (above the 95th percentile)", True
    return "within cohort range", False


def _side_check(name: str, centroid, image: sitk.Image, mid_x: float | None) -> tuple[str, bool]:
    s = BY_NAME.get(name)
    if s is None or s.side is None:
        return "midline / not lateral", False
    if centroid is None:
        return "empty: not checked", False
    if mid_x is None:
        return "no midline reference: not checked", False
    offset = patient_x(image, centroid) - mid_x
    found = "L" if offset > 0 else "R"
    where = f"centroid {abs(offset):.1f} mm to the patient's {_SIDE_WORD[found]}"
    if found != s.side:
        return f"wrong side: {where}, the name says {_SIDE_WORD[s.side]}", True
    return where, False


def _agreement_check(agreement, name: str, threshold: float) -> tuple[str, bool]:
    if not agreement or name not in agreement:
        return "single fold / not computed", False
    if agreement[name] is None:
        return "no fold paints it", False
    value = float(agreement[name])
    if value < threshold:
        return f"{value:.3f}: folds disagree", True
    return f"{value:.3f}", False


def _clip_side(clips: dict, mid_x: float | None, treated: str | None, flags: list[str]) -> str:
    """Side of the clips' mean centroid (clips.json centroids are patient LPS mm); flagged against the
    treated side: clips mark the tumour bed, so they lie in the treated breast."""
    centroids = [c["centroid_mm"] for c in clips.get("clips") or [] if c.get("centroid_mm")]
    if not centroids or mid_x is None:
        return ""
    offset = float(np.mean([c[0] for c in centroids])) - mid_x
    found = "L" if offset > 0 else "R"
    text = f"mean centroid {abs(offset):.1f} mm to the patient's {_SIDE_WORD[found]}"
    if treated is not None and found != treated:
        flags.append(f"clips lie on the patient's {_SIDE_WORD[found]}, the treated side is the {_SIDE_WORD[treated]}")
        return text + f": not the treated side ({_SIDE_WORD[treated]})"
    return text


def _clips_section(clips: dict) -> str:
    table = clips.get("clips") or []
    parts = [f"<p>Method: {_e(clips.get('method', 'unknown'))}; {len(table)} clip(s) predicted.</p>"]
    if table:
        rows = [_td(c.get("clip", "")) + "".join(f'<td class="num">{_e(v)}</td>' for v in
                (", ".join(f"{x:.1f}" for x in c.get("centroid_mm", [])), c.get("volume_mm3", ""),
                 c.get("max_hu", ""))) for c in table]
        parts.append(_table(["Clip", "Centroid x, y, z (mm, LPS)", "Volume (mm3)", "Max HU"], rows))
    bed = clips.get("tumour_bed_proposal")
    if bed:
        excluded = bed.get("clips_excluded") or []
        ex_text = "; ".join(f"component {x.get('index')} at {x.get('distance_mm', 0):.1f} mm from the median"
                            for x in excluded) or "none"
        info = [("Structure", bed.get("name", "")), ("Volume (cc)", bed.get("volume_cc", "")),
                ("Margin (mm)", bed.get("margin_mm", "")), ("Clips used", bed.get("clips_used", "")),
                ("Clips excluded", f"{len(excluded)}: {ex_text}"), ("Clipped to", bed.get("clipped_to", "")),
                ("Note", bed.get("note") or "")]
        parts += ["<h3>Tumour-bed proposal (for the physician to edit)</h3>",
                  _table(["Item", "Value"], [_td(k) + _td(v) for k, v in info])]
    return "\n".join(parts)


def _preview(preview_png: Path | None) -> str:
    if preview_png is None or not Path(preview_png).is_file():
        return "<p>No preview image.</p>"
    data = Path(preview_png).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "<p>The preview file is not a PNG; not embedded.</p>"
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<img alt="axial, coronal and sagittal preview" src="{uri}">'


def _provenance(provenance: Mapping | None) -> str:
    items = {**software_versions(), "report written": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
             **(provenance or {})}
    rows = [_td(k) + _td(v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in items.items()]
    return _table(["Item", "Value"], rows)


def _summary(flags: list[str]) -> str:
    if not flags:
        return '<p class="summary">0 flags: no check found anything to look at.</p>'
    items = "".join(f"<li>{_e(f)}</li>" for f in flags)
    return (f'<p class="summary flagged">{len(flags)} flag{"s" if len(flags) != 1 else ""}: '
            f"look at these before using the contours.</p><ul>{items}</ul>")
