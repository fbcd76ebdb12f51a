"""Deterministic thorax phantoms: structure masks and HU on a CT grid, in memory.

Anatomy is described in normalised patient coordinates so that one description serves the small CPU test
size and the full 512x512 size: ``u = x / R`` (patient left positive, DICOM LPS), ``v = y / R`` (posterior
positive) with ``R`` the half-width of the body, and ``w`` in [0, 1] from the inferior to the superior end
of the scan. Each case jitters sizes and positions, picks a treated side, contrast, spacing and site.
The masks *are* the ground truth: the RTSTRUCT written from them reproduces them when rasterised.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from nnunet_breast.structures.catalog import BREAST_STRUCTURES, spellings

ALLOWED_OVERLAPS = {frozenset({"CTVn_L4_L", "CTVn_SCL_L"}), frozenset({"CTVn_L4_R", "CTVn_SCL_R"})}
SITES = ("Site A University Hospital", "Site B Cancer Centre")
# site -> (Manufacturer, ManufacturerModelName, RescaleIntercept of its 12-bit CT export)
SCANNERS = {SITES[0]: ("SIEMENS", "SOMATOM Definition AS", -1024.0),
            SITES[1]: ("Philips", "Brilliance Big Bore", -1000.0)}
TITANIUM_HU = 8000.0   # titanium at 120 kV, far above the 12-bit ceiling: clips saturate near 3071


@dataclass
class Grid:
    """An axial CT grid, identity direction (the patient's own LPS axes). Arrays are indexed [z, y, x].
    A scan in another patient position holds these voxels in another order (:func:`scan_geometry`)."""
    shape: tuple[int, int, int]            # (slices, rows, columns)
    spacing: tuple[float, float, float]    # (x, y, z) in mm, SimpleITK order
    origin: tuple[float, float, float]     # centre of voxel [0, 0, 0] in patient mm (LPS)

    def axis_mm(self, axis: str) -> np.ndarray:
        i = "xyz".index(axis)
        n = self.shape[::-1][i]
        return self.origin[i] + self.spacing[i] * np.arange(n)


@dataclass
class Case:
    case_id: str
    cohort: str
    grid: Grid
    hu: np.ndarray                       # float32 [z, y, x]
    masks: dict[str, np.ndarray]         # canonical structure name -> bool [z, y, x]: what the RTSTRUCT holds
    side: str                            # treated side, "L" or "R"
    contrast: bool
    site: str
    meta: dict = field(default_factory=dict)
    clips: list[dict] = field(default_factory=list)   # clip cohort: per-clip centre (mm) and axis
    dose: tuple[Grid, np.ndarray] | None = None        # breast cohort: (dose grid, Gy [z, y, x])


def case_rng(cohort: str, index: int, seed: int) -> np.random.Generator:
    """One independent stream per (cohort, case, seed): case 3 is the same whatever N is."""
    key = int.from_bytes(hashlib.sha256(f"{cohort}/{index}/{seed}".encode()).digest()[:8], "little")
    return np.random.default_rng(key)


def structure_spelling(name: str, rng: np.random.Generator, site: str) -> str:
    """Site A exports TG-263 names, site B the free-text names its planners type."""
    options = spellings(name)
    if site == SITES[0]:
        return options[0]
    return options[int(rng.integers(1, len(options)))] if len(options) > 1 else options[0]


SIZES = {"small": (96, 44), "full": (512, 100), "slab": (512, 100)}
SLAB_MM = 120.0   # "slab": a full-size case cut to this many mm of slices around the tumour bed / treated breast


def make_grid(rng: np.random.Generator, size: str) -> Grid:
    n_xy, n_z = SIZES[size]
    if size == "small":
        n_z += int(rng.integers(-4, 5))
    px = float(rng.choice([0.9, 0.977, 1.074, 1.17, 1.27, 1.37]))
    dz = float(rng.choice([3.0, 5.0]))
    origin = (-px * (n_xy - 1) / 2 + float(rng.uniform(-5, 5)),
              -px * (n_xy - 1) / 2 + float(rng.uniform(-5, 5)),
              float(rng.uniform(-400, -200)))
    return Grid((n_z, n_xy, n_xy), (px, px, dz), origin)


def _coords(grid: Grid, R: float, z0: float, z1: float):
    x, y, z = (grid.axis_mm(a) for a in "xyz")
    u = (x / R)[None, None, :]
    v = (y / R)[None, :, None]
    w = ((z - z0) / (z1 - z0))[:, None, None]
    return u, v, w


def _ellipsoid(u, v, w, c, semi):
    return ((u - c[0]) / semi[0]) ** 2 + ((v - c[1]) / semi[1]) ** 2 + ((w - c[2]) / semi[2]) ** 2 <= 1.0


def _cylinder(u, v, w, c, r, w_range):
    inside = ((u - c[0]) / r) ** 2 + ((v - c[1]) / r) ** 2 <= 1.0
    return inside & (w >= w_range[0]) & (w <= w_range[1])


def build_anatomy(grid: Grid, rng: np.random.Generator):
    """Tissue masks (body, bone, air ways ...) and the 20 breast structures on ``grid``."""
    fov = grid.spacing[0] * grid.shape[2]
    R = min(175.0, 0.42 * fov) * float(rng.uniform(0.95, 1.05))
    z = grid.axis_mm("z")
    u, v, w = _coords(grid, R, z[0], z[-1])
    j = lambda s=0.02: float(rng.uniform(-s, s))  # noqa: E731  position jitter

    # body: thorax ellipse narrowing to the neck above w=0.78, plus the two breasts
    half_w = np.clip(1.0 - (w - 0.78) / 0.08 * 0.6, 0.4, 1.0)
    half_ap = np.clip(0.64 - (w - 0.78) / 0.08 * 0.26, 0.38, 0.64)
    body = (u / half_w) ** 2 + (v / half_ap) ** 2 <= 1.0
    breast_semi = (0.30 + j(0.03), 0.20 + j(0.03), 0.19)
    breast_c = {s: (sg * (0.45 + j()), -0.55 + j(), 0.37 + j()) for s, sg in (("L", 1), ("R", -1))}
    for s in "LR":
        body |= _ellipsoid(u, v, w, breast_c[s], tuple(1.12 * a for a in breast_semi))
    core = (u / 0.86) ** 2 + (v / 0.52) ** 2 <= 1.0   # rib cage and chest-wall muscles

    lung_semi = (0.30 + j(), 0.40 + j(), 0.34)
    lung_c = {s: (sg * 0.42, 0.02, 0.46) for s, sg in (("L", 1), ("R", -1))}
    # a chest is not symmetric, and a network tells left from right by it: two thirds of the heart lie left of
    # the midline, the aortic arch turns left over the left main bronchus, the liver dome lifts the right
    # hemidiaphragm (the right lung base ends higher)
    heart = _ellipsoid(u, v, w, (0.20 + j(), -0.08 + j(), 0.30 + j()), (0.28 + j(), 0.26 + j(), 0.16))
    liver = _ellipsoid(u, v, w, (-0.30, 0.05, -0.02), (0.55, 0.50, 0.22))   # no draw: same stream as before
    bone = np.zeros(grid.shape, bool)
    # vertebral body and the ring of the spinal canal, sternum, ribs following the lungs, clavicles
    bone |= _cylinder(u, v, w, (0, 0.36), 0.10, (0, 1))
    canal = _cylinder(u, v, w, (0, 0.49), 0.045, (0, 1))
    bone |= _cylinder(u, v, w, (0, 0.49), 0.075, (0, 1)) & ~canal
    bone |= (((u / 0.08) ** 2 + ((v + 0.50) / 0.03) ** 2) <= 1) & (w > 0.25) & (w < 0.72)
    rib_band = (np.sin(w * 2 * np.pi * 7) > 0.55) & (w < 0.78)
    for s in "LR":
        c = lung_c[s]
        rr = np.sqrt(((u - c[0]) / lung_semi[0]) ** 2 + ((v - c[1]) / lung_semi[1]) ** 2)
        bone |= rib_band & (rr >= 1.06) & (rr <= 1.16) & (np.abs(u) > 0.12)
    bone |= (np.abs(v + 0.30) < 0.03) & (np.abs(u) > 0.10) & (np.abs(u) < 0.55) & (np.abs(w - 0.80) < 0.015)
    bone &= body
    trachea = _cylinder(u, v, w, (0, 0.08), 0.06, (0.55, 1.01))
    aorta = (_cylinder(u, v, w, (0.10, 0.25), 0.05, (-0.01, 0.45))
             | _ellipsoid(u, v, w, (0.10, 0.08, 0.47), (0.08, 0.20, 0.035))) & ~heart & ~trachea

    s_masks: dict[str, np.ndarray] = {}
    lungs = {}
    for s in "LR":
        lungs[s] = _ellipsoid(u, v, w, lung_c[s], lung_semi) & ~heart & ~bone & ~aorta & ~liver
    s_masks["Lung_L"], s_masks["Lung_R"] = lungs["L"], lungs["R"]
    s_masks["Heart"] = heart & body
    s_masks["SpinalCord"] = _cylinder(u, v, w, (0, 0.49), 0.032, (-0.01, 1.01)) & body
    s_masks["Esophagus"] = _cylinder(u, v, w, (0.04, 0.19), 0.045, (0.05, 1.01)) & ~heart & ~aorta & body
    thyroid = np.zeros(grid.shape, bool)
    for sg in (1, -1):
        thyroid |= _ellipsoid(u, v, w, (sg * 0.10, -0.04, 0.92), (0.045, 0.07, 0.06))
    thyroid |= _ellipsoid(u, v, w, (0, -0.08, 0.90), (0.08, 0.025, 0.025))
    s_masks["Glnd_Thyroid"] = thyroid & ~trachea & body

    taken = bone | lungs["L"] | lungs["R"] | heart | trachea | aorta | s_masks["Esophagus"] | thyroid
    nodal = {  # centre (u, v, w) for the left side, semi-axes
        "CTVn_L1": ((0.84, -0.05, 0.62), (0.08, 0.12, 0.06)),
        "CTVn_L2": ((0.70, -0.25, 0.68), (0.07, 0.07, 0.05)),
        "CTVn_L3": ((0.52, -0.33, 0.74), (0.08, 0.06, 0.045)),
        "CTVn_L4": ((0.30, -0.05, 0.84), (0.08, 0.08, 0.05)),
        "CTVn_SCL": ((0.32, -0.04, 0.84), (0.12, 0.11, 0.07)),
    }
    for s, sg in (("L", 1), ("R", -1)):
        breast = _ellipsoid(u, v, w, breast_c[s], breast_semi) & ~core & body
        s_masks[f"CTVp_breast_{s}"] = breast
        for name, (c, semi) in nodal.items():
            c = (sg * c[0] + j(0.01), c[1] + j(0.01), c[2] + j(0.01))
            s_masks[f"{name}_{s}"] = _ellipsoid(u, v, w, c, semi) & body & ~taken
        s_masks[f"CTVn_IMN_{s}"] = _cylinder(u, v, w, (sg * 0.11, -0.47), 0.028, (0.35, 0.68)) & body & ~taken

    arms = np.zeros(grid.shape, bool)
    for sg in (1, -1):
        arm = _ellipsoid(u, v, w, (sg * 0.80, -0.05, 1.0), (0.14, 0.13, 0.16))
        arms |= arm
        bone |= arm & _cylinder(u, v, w, (sg * 0.80, -0.05), 0.045, (0, 1.01))

    tissues = dict(body=body, arms=arms, bone=bone, trachea=trachea, aorta=aorta, core=core, canal=canal,
                   lungs=lungs["L"] | lungs["R"], heart=heart, liver=liver & core & body & ~bone)
    geometry = dict(R=R, z0=float(z[0]), z1=float(z[-1]), breast_c=breast_c, breast_semi=breast_semi)
    return tissues, {k: s_masks[k] for k in BREAST_STRUCTURES}, geometry


def check_overlaps(masks: dict[str, np.ndarray]) -> None:
    """The phantom may overlap only where real RT structures do (CTVn_L4 inside CTVn_SCL RTOG)."""
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if frozenset({a, b}) not in ALLOWED_OVERLAPS and np.any(masks[a] & masks[b]):
                raise AssertionError(f"phantom structures {a} and {b} overlap")


def render_hu(grid: Grid, tissues, masks, contrast: bool, rng: np.random.Generator) -> np.ndarray:
    """HU as a scanner would show them: tissue values, texture, partial volume and noise."""
    hu = np.full(grid.shape, -1000.0, np.float32)
    body = tissues["body"]
    fat = -100.0 + 15 * rng.standard_normal(grid.shape)
    hu[body | tissues["arms"]] = fat[body | tissues["arms"]]
    hu[tissues["core"] & body] = 40.0
    hu[tissues["arms"]] = 45.0
    for s in "LR":
        gland = masks[f"CTVp_breast_{s}"]
        texture = ndimage.gaussian_filter(rng.standard_normal(grid.shape), 1.5) * 3
        hu[gland] = np.where(texture[gland] > 0.2, 30.0, -90.0)
    hu[tissues["liver"]] = 60.0 + (40.0 if contrast else 0.0)
    blood = float(rng.uniform(150, 300)) if contrast else 40.0
    hu[tissues["heart"] & body] = blood
    hu[tissues["aorta"] & body] = blood
    hu[tissues["lungs"]] = -850.0 + 30 * rng.standard_normal(int(tissues["lungs"].sum()))
    hu[masks["Esophagus"]] = 35.0
    hu[masks["Glnd_Thyroid"]] = 100.0 + (60.0 if contrast else 0.0)
    hu[tissues["trachea"]] = -990.0
    hu[tissues["canal"] & body] = 30.0
    bone_hu = 400 + 800 * ndimage.gaussian_filter(rng.random(grid.shape), 2)
    hu[tissues["bone"]] = np.clip(bone_hu[tissues["bone"]] * 1.6 - 300, 400, 1200)
    return hu


# Patient positions (DICOM PatientPosition) -> patient directions (LPS) of the image's rows (+column index) and
# columns (+row index, towards the couch). The slice normal (row x column) points to the head for head-first
# and to the feet for feet-first scans. A "-negated" suffix stores the same scan with both cosines negated (the
# pixel data turned by 180 degrees in the plane).
POSITIONS = {"HFS": ((1, 0, 0), (0, 1, 0)), "HFP": ((-1, 0, 0), (0, -1, 0)), "FFS": ((-1, 0, 0), (0, 1, 0)),
             "FFP": ((1, 0, 0), (0, -1, 0)), "HFDL": ((0, -1, 0), (1, 0, 0)), "HFDR": ((0, 1, 0), (-1, 0, 0))}
ORIENTATIONS = (*POSITIONS, *(f"{p}-negated" for p in POSITIONS))


def scan_geometry(orientation: str) -> tuple[str, np.ndarray]:
    """(PatientPosition, SimpleITK direction 3x3 whose columns are the rows', columns' and slices' directions)."""
    position, _, negated = orientation.partition("-")
    if position not in POSITIONS or negated not in ("", "negated"):
        raise ValueError(f"unknown orientation {orientation!r}; choose from {ORIENTATIONS}")
    row, col = (np.asarray(v, float) * (-1 if negated else 1) for v in POSITIONS[position])
    return position, np.column_stack([row, col, np.cross(row, col)])


def add_couch(grid: Grid, hu: np.ndarray, R: float, down=(0.0, 1.0), surface: float = 0.64) -> None:
    """The couch, under the patient: a shell 0.06-0.15 R beyond the body's farthest point ``surface`` (R units)
    along ``down``, the patient direction (x, y) towards the couch (+y supine, -y prone, +-x decubitus). The gap
    is at least two pixels of a small phantom: with one, blur and noise now and then bridged couch and body."""
    x, y = grid.axis_mm("x") / R, grid.axis_mm("y") / R
    along = down[0] * x[None, :] + down[1] * y[:, None]
    across = np.abs(down[1] * x[None, :] - down[0] * y[:, None])
    couch = (along >= surface + 0.06) & (along <= surface + 0.15) & (across <= 1.15)
    shell = couch & ~((along > surface + 0.08) & (along < surface + 0.13))
    hu[:, couch] = -850.0
    hu[:, shell] = 250.0


def body_surface(geo: dict, down) -> float:
    """How far (R units) the body reaches along the unit vector ``down`` (x, y): the thorax ellipse, the breasts."""
    n = np.asarray(down, float)
    reach = float(np.hypot(n[0] * 1.0, n[1] * 0.64))                  # the thorax (build_anatomy's body)
    for c in geo["breast_c"].values():
        a, b = (1.12 * s for s in geo["breast_semi"][:2])
        reach = max(reach, float(c[0] * n[0] + c[1] * n[1] + np.hypot(a * n[0], b * n[1])))
    return reach


def finish(hu: np.ndarray, rng: np.random.Generator, noise: float, intercept: float) -> np.ndarray:
    """Scanner blur (partial volume), quantum noise, integer HU and the 12-bit range of the export."""
    sigma_vox = (0.4, 0.6, 0.6)  # z, y, x
    out = ndimage.gaussian_filter(hu, sigma_vox)
    out += noise * rng.standard_normal(hu.shape).astype(np.float32)
    return np.clip(np.round(out), intercept, intercept + 4095).astype(np.float32)


def crop_slices(case: Case, centre_z_mm: float, length_mm: float = SLAB_MM) -> None:
    """Keep ``length_mm`` of slices centred on ``centre_z_mm`` (in place): a CT exported over a sub-range of
    slices. Real-scale anatomy at a fraction of the voxels, for CPU training; the dose grid (same slices) too."""
    g = case.grid
    dz = g.spacing[2]
    n = min(g.shape[0], max(1, int(round(length_mm / dz))))
    k0 = int(np.clip(round((centre_z_mm - length_mm / 2 - g.origin[2]) / dz), 0, g.shape[0] - n))
    keep = slice(k0, k0 + n)
    case.hu = case.hu[keep]
    case.masks = {k: m[keep] for k, m in case.masks.items()}
    case.grid = Grid((n, *g.shape[1:]), g.spacing, (g.origin[0], g.origin[1], g.origin[2] + k0 * dz))
    if case.dose is not None:
        dgrid, dose = case.dose
        case.dose = (Grid((n, *dgrid.shape[1:]), dgrid.spacing, (dgrid.origin[0], dgrid.origin[1],
                                                                   dgrid.origin[2] + k0 * dz)), dose[keep])
