"""Synthetic cohorts: cases in memory (:func:`make_case`) and written as a TPS export (:func:`write_cohort`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from nnunet_breast.structures.catalog import BREAST_STRUCTURES
from nnunet_breast.synth import metal, phantom
from nnunet_breast.synth.phantom import Case, Grid, case_rng
from nnunet_breast.util.parallel import map_cases

COHORTS = ("breast", "clips")
LABELS = ("clinical", "full")
# Breast cohort, labels="clinical": what a clinic's RTSTRUCT holds. The treated side's CTVs only, per the case's
# nodal indication (name, probability, nodal CTVs contoured besides the breast), and now and then an OAR left out.
NODAL_INDICATIONS = (
    ("breast", 0.5, ()),                                        # node-negative: whole breast only
    ("breast+L1-L3", 0.2, ("CTVn_L1", "CTVn_L2", "CTVn_L3")),    # axillary levels I-III
    ("breast+all_nodes", 0.3, ("CTVn_L1", "CTVn_L2", "CTVn_L3", "CTVn_L4", "CTVn_IMN", "CTVn_SCL")),
)
OAR_OMISSION = {"Glnd_Thyroid": 0.15, "Esophagus": 0.15}     # each left out of the RTSTRUCT independently
ALWAYS_CONTOURED = ("Heart", "Lung_L", "Lung_R", "SpinalCord")


def clinical_structures(side: str, rng: np.random.Generator) -> tuple[list[str], dict]:
    """The breast structures a clinical RTSTRUCT of a ``side``-treated patient holds, in catalog order, and
    what was drawn: ``{"nodal_indication": name, "omitted_oars": [...]}``."""
    k = int(rng.choice(len(NODAL_INDICATIONS), p=[p for _, p, _ in NODAL_INDICATIONS]))
    indication, _, nodal = NODAL_INDICATIONS[k]
    omitted = [name for name, p in OAR_OMISSION.items() if rng.random() < p]
    keep = {f"CTVp_breast_{side}", *(f"{n}_{side}" for n in nodal), *ALWAYS_CONTOURED,
            *(n for n in OAR_OMISSION if n not in omitted)}
    names = [n for n in BREAST_STRUCTURES if n in keep]
    return names, {"nodal_indication": indication, "omitted_oars": sorted(omitted)}


def make_case(cohort: str, index: int, seed: int = 0, size: str = "small", labels: str = "full",
              orientation: str = "HFS", structures: bool = False) -> Case:
    """Case ``index`` of a cohort: the same whatever else is generated (one random stream per case).

    ``labels`` (breast cohort): "full" contours all 20 structures on both sides (research re-contouring);
    "clinical" keeps what a clinic exports (:func:`clinical_structures`), drawn from a stream of its own so
    that the CT, the dose and every other draw are the same for both. The clip cohort contours its clips only,
    unless ``structures``: then also the breast structures as ``labels`` says (a boost patient's structure set).
    ``orientation`` (:data:`~nnunet_breast.synth.phantom.ORIENTATIONS`): how the patient lay in the scanner and
    how the slices are stored. The patient is the same in every orientation (anatomy, clips, dose: the same patient
    coordinates; arrays and grid stay in the patient's LPS axes); only the couch moves under the patient, and
    :func:`~nnunet_breast.synth.export.write_case` writes the scan geometry (``case.meta["orientation"]``).
    """
    position, _ = phantom.scan_geometry(orientation)
    if cohort not in COHORTS:
        raise ValueError(f"unknown cohort {cohort!r}; choose from {COHORTS}")
    if size not in phantom.SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {tuple(phantom.SIZES)}")
    if labels not in LABELS:
        raise ValueError(f"unknown labels {labels!r}; choose from {LABELS}")
    rng = case_rng(cohort, index, seed)
    grid = phantom.make_grid(rng, size)
    tissues, masks, geo = phantom.build_anatomy(grid, rng)
    phantom.check_overlaps(masks)
    side = "L" if rng.random() < 0.5 else "R"
    site = phantom.SITES[index % len(phantom.SITES)]
    contrast = bool(rng.random() < 0.4) if cohort == "breast" else False
    hu = phantom.render_hu(grid, tissues, masks, contrast, rng)
    case = Case(f"{cohort}_{index:03d}", cohort, grid, hu, masks, side, contrast, site)
    if cohort == "clips":
        _add_clips(case, tissues, geo, rng)
    if position == "HFS":
        phantom.add_couch(grid, case.hu, geo["R"])
    else:
        down = phantom.POSITIONS[position][1][:2]                   # towards the couch, whatever the storage
        phantom.add_couch(grid, case.hu, geo["R"], down, phantom.body_surface(geo, down))
    case.meta["orientation"] = orientation
    case.hu = phantom.finish(case.hu, rng, noise=float(rng.uniform(8, 18)), intercept=phantom.SCANNERS[site][2])
    if cohort == "clips" and not structures:
        case.masks = {"Clips": case.masks["Clips"]}
    elif cohort == "breast":
        case.dose = tangential_dose(case, geo)
    case.meta["R_mm"] = geo["R"]
    if cohort == "breast" or structures:
        case.meta["labels"] = labels
        if labels == "clinical":
            names, drawn = clinical_structures(side, case_rng(f"{cohort}/labels", index, seed))
            case.masks = {n: m for n, m in case.masks.items() if n in names or n == "Clips"}
            case.meta.update(drawn)
    if size == "slab":
        if case.clips:
            centre = float(np.mean([c["centre_mm"][2] for c in case.clips]))
        else:
            centre = geo["z0"] + geo["breast_c"][side][2] * (geo["z1"] - geo["z0"])
        phantom.crop_slices(case, centre)
    return case


def _segment_occupancy(grid: Grid, p0: np.ndarray, p1: np.ndarray, radius: float, supersample: int = 4):
    """Fraction of each voxel (near the segment) within ``radius`` mm of segment p0-p1: partial volume."""
    lo = np.minimum(p0, p1) - radius - 2 * np.array(grid.spacing)
    hi = np.maximum(p0, p1) + radius + 2 * np.array(grid.spacing)
    org, sp = np.array(grid.origin), np.array(grid.spacing)
    i0 = np.maximum(np.floor((lo - org) / sp).astype(int), 0)
    i1 = np.minimum(np.ceil((hi - org) / sp).astype(int) + 1, np.array(grid.shape[::-1]))
    if np.any(i1 <= i0):
        return None, None
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    axes = [org[a] + sp[a] * (np.arange(i0[a], i1[a])[:, None] + offs[None, :]).ravel() for a in range(3)]
    X, Y, Z = np.meshgrid(axes[0], axes[1], axes[2], indexing="ij")
    P = np.stack([X, Y, Z], -1)
    d = p1 - p0
    t = np.clip(((P - p0) @ d) / (d @ d), 0, 1)
    dist = np.linalg.norm(P - (p0 + t[..., None] * d), axis=-1)
    inside = (dist <= radius).astype(np.float32)
    n = i1 - i0
    occ = inside.reshape(n[0], supersample, n[1], supersample, n[2], supersample).mean((1, 3, 5))
    sl = tuple(slice(i0[a], i1[a]) for a in (2, 1, 0))
    return sl, occ.transpose(2, 1, 0)  # to [z, y, x]


def _add_clips(case: Case, tissues, geo, rng) -> None:
    """5-8 titanium clips on the wall of a lumpectomy cavity in the treated breast, plus decoys, then the clips'
    metal artefacts (:mod:`~nnunet_breast.synth.metal`; HU only, the label is the physical clips')."""
    grid, R = case.grid, geo["R"]
    s = case.side
    c_u, c_v, c_w = geo["breast_c"][s]
    z0, z1 = geo["z0"], geo["z1"]
    to_mm = lambda u, v, w: np.array([u * R, v * R, z0 + w * (z1 - z0)])  # noqa: E731
    # cavity towards the chest wall, so that the deep clips lie close to the ribs
    centre = to_mm(c_u * 0.95, c_v + 0.06, c_w + float(rng.uniform(-0.04, 0.04)))
    radius = np.array([0.45 * geo["breast_semi"][0] * R, 0.45 * geo["breast_semi"][1] * R,
                       max(10.0, 0.3 * geo["breast_semi"][2] * (z1 - z0))])
    x, y, z = (grid.axis_mm(a) for a in "xyz")
    cavity = (((x[None, None] - centre[0]) / radius[0]) ** 2 + ((y[None, :, None] - centre[1]) / radius[1]) ** 2
              + ((z[:, None, None] - centre[2]) / radius[2]) ** 2) <= 1
    case.hu[cavity & tissues["body"]] = 20.0           # seroma
    label = np.zeros(grid.shape, bool)
    painted = []
    n_clips = int(rng.integers(5, 9))
    dirs = rng.standard_normal((n_clips, 3))
    dirs[0] = [0, 1, 0]                                  # one clip on the deep wall, next to the ribs
    for k in range(n_clips):
        direction = dirs[k] / np.linalg.norm(dirs[k])
        pos = centre + direction * radius
        axis = rng.standard_normal(3)
        axis /= np.linalg.norm(axis)
        length = float(rng.uniform(5.0, 8.0))               # medium ligating clip, closed
        p0, p1 = pos - axis * length / 2, pos + axis * length / 2
        sl, occ = _segment_occupancy(grid, p0, p1, radius=1.0)
        if sl is None or occ.max() <= 0:
            continue
        case.hu[sl] = case.hu[sl] * (1 - occ) + phantom.TITANIUM_HU * occ
        label[sl] |= occ >= 0.15
        painted.append(metal.Clip(p0, p1, sl, occ))
        case.clips.append({"centre_mm": pos.round(2).tolist(), "axis": axis.round(3).tolist(), "length_mm": length})
    case.masks["Clips"] = label
    _add_decoys(case, tissues, geo, rng)
    case.meta["artefacts"] = metal.add_metal_artefacts(case.hu, grid, painted, tissues["body"], rng)


def _paint(case: Case, p0: np.ndarray, p1: np.ndarray, radius: float, hu: float) -> None:
    """A rod (or, p0 == p1, a bead) of material ``hu`` with partial volume."""
    sl, occ = _segment_occupancy(case.grid, p0, p1 + 1e-3, radius=radius)   # + 1e-3 mm: never a zero-length axis
    if sl is not None:
        case.hu[sl] = case.hu[sl] * (1 - occ) + hu * occ


def _add_decoys(case: Case, tissues, geo, rng) -> None:
    """What a HU threshold takes for clips on a real simulation CT, none of it labelled.

    * a radio-opaque skin marker (BB, ~2500 HU) on the treated breast;
    * a lead marker wire (1 mm) taped along the lumpectomy scar, a 30-50 mm arc on the breast skin;
    * dense cortical bone: 2-4 spots of 1600-1900 HU, 1.5-2.5 mm, in the ribs, sternum or spine (real cortex
      reaches ~1900 HU; the phantom's bone is otherwise 400-1200 HU).

    Their positions (mm) go to ``case.meta["decoys"]``: ``bb`` (centre), ``wire`` (polyline), ``bone`` (centres).
    """
    R, z0, z1 = geo["R"], geo["z0"], geo["z1"]
    c_u, c_v, c_w = geo["breast_c"][case.side]
    semi = geo["breast_semi"]
    to_mm = lambda u, v, w: np.array([u * R, v * R, z0 + w * (z1 - z0)])  # noqa: E731
    bb = to_mm(c_u, c_v - 1.1 * semi[1], c_w)
    _paint(case, bb, bb, 1.2, 2500.0)
    # the scar wire: an arc over the anterior breast surface, off the BB, at a height of its own
    theta0 = float(rng.uniform(-0.9, 0.3)) * (1 if case.side == "L" else -1)
    arc = float(rng.uniform(0.5, 0.8)) * (1 if case.side == "L" else -1)
    w = c_w + float(rng.uniform(-0.6, 0.6)) * semi[2]
    points = [to_mm(c_u + 1.08 * semi[0] * np.sin(t), c_v - 1.08 * semi[1] * np.cos(t), w)
              for t in np.linspace(theta0, theta0 + arc, 8)]
    for p0, p1 in zip(points[:-1], points[1:]):
        _paint(case, p0, p1, 0.5, 30000.0)           # lead: its partial volume still saturates
    # dense cortical bone spots
    spots = []
    bone = np.argwhere(tissues["bone"] & ~tissues["arms"])
    if len(bone):
        org, sp = np.array(case.grid.origin), np.array(case.grid.spacing)
        for k in rng.choice(len(bone), size=min(len(bone), int(rng.integers(2, 5))), replace=False):
            centre = org + sp * bone[k][::-1]
            _paint(case, centre, centre, float(rng.uniform(1.5, 2.5)), float(rng.uniform(1600, 1900)))
            spots.append(centre.round(2).tolist())
    case.meta["decoys"] = {"bb": bb.round(2).tolist(), "wire": [p.round(2).tolist() for p in points], "bone": spots}


def tangential_dose(case: Case, geo) -> tuple[Grid, np.ndarray]:
    """A plausible whole-breast tangent-pair dose (Gy) on a coarser grid of its own.

    Full dose anterior to the line joining the medial and lateral field borders on the treated side,
    4 mm penumbra, a cranio-caudal field edge, scatter falling off behind the field edge, zero in air.
    """
    g, R = case.grid, geo["R"]
    sp = (2 * g.spacing[0], 2 * g.spacing[1], g.spacing[2])
    shape = (g.shape[0], g.shape[1] // 2, g.shape[2] // 2)
    dgrid = Grid(shape, sp, (g.origin[0] + g.spacing[0] / 2, g.origin[1] + g.spacing[1] / 2, g.origin[2]))
    sg = 1 if case.side == "L" else -1
    x, y, z = (dgrid.axis_mm(a) for a in "xyz")
    a = np.array([sg * 0.08 * R, -0.50 * R])     # medial border
    b = np.array([sg * 0.85 * R, -0.05 * R])     # lateral border
    n = np.array([-(b - a)[1], (b - a)[0]]) / np.linalg.norm(b - a)
    if n @ np.array([0, -1.0]) < 0:              # point the normal anteriorly
        n = -n
    d = (x[None, :] - a[0]) * n[0] + (y[:, None] - a[1]) * n[1]            # mm, positive = in field
    w = (z - geo["z0"]) / (geo["z1"] - geo["z0"])
    cz = geo["breast_c"][case.side][2]
    z_mm = (np.abs(w - cz) - 0.26) * (geo["z1"] - geo["z0"])               # mm outside the field length
    from scipy.special import ndtr
    prescription = 50.0
    medial = sg * x[None, :] - 0.5 * a[0] * sg                              # mm lateral of the medial limit
    inplane = (ndtr(d / 4.0) + 0.04 * np.exp(np.minimum(d, 0) / 30.0) * (d < 0)) * ndtr(medial / 4.0)
    dose = prescription * ndtr(-z_mm / 4.0)[:, None, None] * inplane[None]
    body = ndimage.zoom(case.hu > -400, (1, 0.5, 0.5), order=0)[: shape[0], : shape[1], : shape[2]]
    dose *= body
    return dgrid, dose.astype(np.float32)


def _write_one(cohort: str, index: int, seed: int, size: str, out: Path, labels: str = "full",
               orientation: str = "HFS", structures: bool = False) -> Path:
    from nnunet_breast.synth.export import write_case  # pydicom is only needed when writing

    return write_case(make_case(cohort, index, seed, size, labels, orientation, structures), out, seed)


def write_cohort(cohort: str, n: int, out: Path, seed: int = 0, size: str = "small", progress: bool = True,
                 num_processes: int = 1, labels: str = "full", orientation: str = "HFS",
                 structures: bool = False) -> list[Path]:
    """Write ``n`` cases under ``out/<PatientID>/`` as CT slices + RTSTRUCT (+ RTDOSE for breast).

    Cases are independent (one random stream each), so ``num_processes`` > 1 writes the same bytes faster
    (a full-size case takes ~10 s). ``labels``: see :func:`make_case` (the CLI's default is "clinical");
    ``orientation``: every case scanned in that patient position; ``structures``: clip cases also contour the
    breast structures (:func:`make_case`).
    """
    if labels not in LABELS:
        raise ValueError(f"unknown labels {labels!r}; choose from {LABELS}")
    phantom.scan_geometry(orientation)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = map_cases(_write_one, [(cohort, i, seed, size, out, labels, orientation, structures)
                                     for i in range(n)],
                        num_processes,
                        desc=f"synth {cohort}", progress=progress)
    manifest = {"cohort": cohort, "n": n, "seed": seed, "size": size,
                "cases": [p.name for p in written], "generator": "nnunet_breast.synth"}
    if cohort == "breast" or structures:
        manifest["labels"] = labels
    if orientation != "HFS":
        manifest["orientation"] = orientation
    (out / f"synth_{cohort}.json").write_text(json.dumps(manifest, indent=2))
    return written
