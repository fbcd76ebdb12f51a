"""Metal artefacts of titanium clips, added to a phantom's HU before the scanner's blur and noise.

Without them a 1500 HU threshold segments a phantom's clips almost exactly; on a scanner it over-segments (the
clip paper's threshold Dice is 0.40), because metal blooms, streaks radiate from it and beam hardening darkens
the line between two pieces of metal. The three effects change HU only (the clip label stays the physical
clip's), inside the body only (air stays air), every parameter drawn from the case's random stream:

* blooming (:func:`bloom`): each clip looks ``bloom_mm`` (0.5-1 mm) wider in-plane and 0.3 slice longer each way
  along z (more mm on thick slices), at up to ``BLOOM_HU``: neighbouring voxels and slices cross the threshold;
* streaks (:func:`streak_field`): 3-8 lines through each clip (6-16 rays) in the slices holding its metal,
  fading over one slice beyond, alternately bright and dark, 150-450 HU at 2.5 mm decaying as 1/r over tens of
  mm; some bright lines carry an over-range core next to the clip that crosses the threshold a mm or two past
  the bloom (what makes a threshold take more than the clip on a scanner);
* dark bands (:func:`band_field`): beam hardening along the line between two clips closer than ``BAND_MM``
  whose slices overlap or touch, 100-400 HU deep, a few mm wide; where bands cross, the darkest counts.

Dark artefacts fade out under the skin (:func:`skin_taper`), so that a body mask by HU (air < -150 HU, the clip
paper's) keeps the patient's outline and the clips inside it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from nnunet_breast.synth.phantom import Grid

CLIP_RADIUS_MM = 1.0        # the painted clip's (cohort._add_clips)
BLOOM_MM = (0.5, 1.0)       # in-plane bloom, drawn per case
BLOOM_Z_SLICES = 0.3        # the metal this many slices longer each way along z
BLOOM_HU = 4000.0           # the bloom's HU where it fills a voxel: spread metal, fainter than the clip
STREAK_LINES = (3, 9)       # lines through a clip (integers, upper bound excluded)
STREAK_HU = (150.0, 450.0)  # a streak's HU (bright or dark) out to STREAK_CORE_MM from the clip ...
STREAK_CORE_MM = 2.5        # ... falling as 1/r beyond ...
STREAK_SCALE_MM = 60.0      # ... and fading as exp(-r / STREAK_SCALE_MM)
STREAK_REACH_MM = 90.0      # streaks are computed this far from the clips (< 10 HU beyond)
STREAK_WIDTH_MM = (0.5, 1.0)  # sd across a streak
HOT_FRACTION = 0.4          # of the bright lines carry an over-range core next to the clip ...
HOT_HU = (1800.0, 2800.0)   # ... this many HU more (the scanner's blur thins the line) ...
HOT_REACH_MM = (0.3, 1.5)   # ... out to this far beyond the bloomed metal ...
HOT_CORE_DECAY_MM = 0.5     # ... decaying over this beyond
BAND_MM = 40.0              # clips closer than this (centre to centre) are joined by a dark band ...
BAND_HU = (100.0, 400.0)    # ... this many HU deep on the line ...
BAND_WIDTH_MM = (1.0, 2.5)  # ... Gaussian across (sd)
SKIN_MM = 8.0               # dark artefacts fade out over this depth under the skin
SIMULATED = {"simulated": "clip metal artefacts: blooming, streaks, beam-hardening bands (synth.metal)"}


@dataclass
class Clip:
    """One clip's metal as painted: axis end points (mm, LPS) and its occupancy (fraction of each voxel) in ``box``."""
    p0: np.ndarray
    p1: np.ndarray
    box: tuple[slice, slice, slice]        # [z, y, x] slices of the grid
    occ: np.ndarray


def _window(grid: Grid, lo_mm, hi_mm) -> tuple[slice, slice, slice]:
    """[z, y, x] slices of the grid covering the box lo_mm..hi_mm (x, y, z mm), clipped to the grid."""
    org, sp = np.array(grid.origin), np.array(grid.spacing)
    i0 = np.maximum(np.floor((np.asarray(lo_mm) - org) / sp).astype(int), 0)
    i1 = np.minimum(np.ceil((np.asarray(hi_mm) - org) / sp).astype(int) + 1, np.array(grid.shape[::-1]))
    return tuple(slice(int(i0[a]), int(max(i0[a], i1[a]))) for a in (2, 1, 0))


def slice_weights(grid: Grid, p0, p1, radius: float = CLIP_RADIUS_MM) -> np.ndarray:
    """Per slice, how much a clip's streaks show there: 1 on the slices holding the clip's metal (its z extent
    +- ``radius`` meets the slice), falling linearly to 0 over one slice thickness beyond."""
    z, dz = grid.axis_mm("z"), grid.spacing[2]
    lo, hi = min(p0[2], p1[2]) - radius, max(p0[2], p1[2]) + radius
    gap = np.maximum(np.maximum(lo - (z + dz / 2), (z - dz / 2) - hi), 0.0)
    return np.clip(1.0 - gap / dz, 0.0, 1.0)


def _distance_2d(px, py, a, b) -> np.ndarray:
    """In-plane distance (mm) of points (px, py) from the segment a-b (x, y)."""
    d = np.asarray(b, float) - np.asarray(a, float)
    t = np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / max(float(d @ d), 1e-9), 0.0, 1.0)
    return np.hypot(px - (a[0] + t * d[0]), py - (a[1] + t * d[1]))


def axis_in_slice(p0, p1, z_mm: float, dz: float, radius: float = CLIP_RADIUS_MM):
    """x, y ends of the part of the clip's axis p0-p1 whose metal (``radius``) meets the slice at ``z_mm``
    (thickness ``dz``); both the nearest end when the slice lies beyond the clip."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    if abs(d[2]) < 1e-9:
        t0, t1 = 0.0, 1.0
    else:
        t0, t1 = np.clip(sorted(((z_mm - dz / 2 - radius - p0[2]) / d[2], (z_mm + dz / 2 + radius - p0[2]) / d[2])),
                         0.0, 1.0)
    return (p0 + t0 * d)[:2], (p0 + t1 * d)[:2]


def streak_field(px, py, axis_xy, angles, amplitudes, widths, hot, hot_mm) -> np.ndarray:
    """HU of one clip's streaks in one axial plane at points (px, py) (mm).

    ``axis_xy``: the ends (x, y) of the clip's axis in this plane (:func:`axis_in_slice`). Streak k is a line
    through the clip's centre at ``angles[k]`` (radians), of Gaussian cross-section ``widths[k]`` (sd, mm),
    ``amplitudes[k]`` HU (signed) out to ``STREAK_CORE_MM`` from the clip, falling as 1/r beyond and fading
    over ``STREAK_SCALE_MM``. ``hot[k]`` HU more on the line out to ``hot_mm[k]`` from the clip's axis, decaying
    over ``HOT_CORE_DECAY_MM`` beyond: the over-range core of a bright streak next to metal.
    """
    a, b = (np.asarray(p, float) for p in axis_xy)
    c = (a + b) / 2
    r = _distance_2d(px, py, a, b)
    radial = STREAK_CORE_MM / np.maximum(r, STREAK_CORE_MM) * np.exp(-np.maximum(r - STREAK_CORE_MM, 0)
                                                                      / STREAK_SCALE_MM)
    out = np.zeros(np.broadcast(px, py).shape, np.float32)
    for ang, amp, w, h, h_mm in zip(angles, amplitudes, widths, hot, hot_mm):
        across = np.abs(-(px - c[0]) * np.sin(ang) + (py - c[1]) * np.cos(ang))
        value = amp * radial
        if h:
            value = value + h * np.exp(-np.maximum(r - h_mm, 0.0) / HOT_CORE_DECAY_MM)
        out += np.exp(-0.5 * (across / w) ** 2) * value
    return out


def band_field(px, py, a, b, depth: float, width: float) -> np.ndarray:
    """HU (negative) of a beam-hardening band between clip centres a and b (x, y mm) in one axial plane:
    ``depth`` HU on the line, Gaussian across (sd ``width`` mm), tapered to nothing at the two clips."""
    d = np.asarray(b, float) - np.asarray(a, float)
    length = float(np.hypot(*d))
    t = ((px - a[0]) * d[0] + (py - a[1]) * d[1]) / length ** 2
    across = np.abs(-(px - a[0]) * d[1] + (py - a[1]) * d[0]) / length
    taper = np.sqrt(np.clip(np.sin(np.pi * np.clip(t, 0.0, 1.0)), 0.0, 1.0))
    return (-depth * taper * np.exp(-0.5 * (across / width) ** 2)).astype(np.float32)


def rod_occupancy(grid: Grid, p0, p1, radius: float, radius_z: float, supersample: int = 4):
    """(box, fraction of each voxel in it) within the rod p0-p1 stretched along z: in-plane radius ``radius``,
    ``radius_z`` across slices (an ellipsoidal cross-section; mm). ``box``: [z, y, x] slices of the grid."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    reach = np.array([radius, radius, radius_z]) + 2 * np.array(grid.spacing)
    box = _window(grid, np.minimum(p0, p1) - reach, np.maximum(p0, p1) + reach)
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    axes = [grid.origin[a] + grid.spacing[a] * (np.arange(box[2 - a].start, box[2 - a].stop)[:, None] + offs).ravel()
            for a in range(3)]
    s = np.array([1.0, 1.0, radius / radius_z])                   # z stretched: an isotropic rod of ``radius``
    P = np.stack(np.meshgrid(*axes, indexing="ij"), -1) * s
    a, d = p0 * s, (p1 - p0) * s
    t = np.clip(((P - a) @ d) / max(float(d @ d), 1e-9), 0, 1)
    inside = np.linalg.norm(P - (a + t[..., None] * d), axis=-1) <= radius
    n = [len(ax) // supersample for ax in axes]
    occ = inside.reshape(n[0], supersample, n[1], supersample, n[2], supersample).mean((1, 3, 5))
    return box, occ.transpose(2, 1, 0).astype(np.float32)


def bloom(hu: np.ndarray, grid: Grid, clip: Clip, body: np.ndarray, bloom_mm: float,
          z_slices: float = BLOOM_Z_SLICES) -> None:
    """Make the clip look larger (in place): a rod on the clip's axis ``bloom_mm`` wider in-plane and ``z_slices``
    of a slice longer and thicker along z (more mm on thick slices: a thick slice's partial volume shows metal in
    the next one) adds ``BLOOM_HU`` times the occupancy it has beyond the painted clip's."""
    radius, radius_z = CLIP_RADIUS_MM + bloom_mm, CLIP_RADIUS_MM + z_slices * grid.spacing[2]
    box, occ = rod_occupancy(grid, clip.p0, clip.p1, radius, radius_z)
    painted = np.zeros(occ.shape, np.float32)
    inner = tuple(slice(max(c.start, b.start) - b.start, min(c.stop, b.stop) - b.start) for c, b in zip(clip.box, box))
    outer = tuple(slice(max(b.start, c.start) - c.start, min(b.stop, c.stop) - c.start) for c, b in zip(clip.box, box))
    painted[inner] = clip.occ[outer]
    hu[box] += (BLOOM_HU * np.maximum(occ - painted, 0.0) * body[box]).astype(hu.dtype)


def skin_taper(body_slice: np.ndarray, spacing_yx, depth_mm: float = SKIN_MM) -> np.ndarray:
    """0 outside the body rising smoothly to 1 at ``depth_mm`` under the skin (in-plane): dark streaks fade out
    under the skin, so that the body outline a HU threshold finds (air < -150 HU) stays the patient's."""
    d = ndimage.distance_transform_edt(body_slice, sampling=spacing_yx)
    t = np.clip(d / depth_mm, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def add_metal_artefacts(hu: np.ndarray, grid: Grid, clips: list[Clip], body: np.ndarray,
                        rng: np.random.Generator) -> dict:
    """Blooming, streaks and dark bands of ``clips`` added to ``hu`` (in place, inside ``body``).

    Streaks add up; where bands cross, the darkest counts. Returns what was drawn, JSON-ready: ``bloom_mm``,
    per clip its streaks (``[angle in degrees, HU at the core, bright core HU]``) and the bands
    (``[i, j, depth HU]``, indices into ``clips``).
    """
    bloom_mm = float(rng.uniform(*BLOOM_MM))
    for clip in clips:
        bloom(hu, grid, clip, body, bloom_mm)
    if not clips:
        return {**SIMULATED, "bloom_mm": round(bloom_mm, 3), "streaks": [], "bands": []}
    centres = np.array([(c.p0 + c.p1) / 2 for c in clips])
    win = _window(grid, centres.min(0) - STREAK_REACH_MM, centres.max(0) + STREAK_REACH_MM)
    x, y, z = (grid.axis_mm(a) for a in "xyz")
    px, py = x[win[2]][None, :], y[win[1]][:, None]
    field = np.zeros((hu.shape[0], len(py), px.shape[1]), np.float32)   # every slice, the clips' window in-plane
    dark = np.zeros_like(field)
    weights = [slice_weights(grid, c.p0, c.p1) for c in clips]
    streaks = []
    for clip, wz in zip(clips, weights):
        n = int(rng.integers(*STREAK_LINES))
        angles = np.sort(rng.uniform(0, np.pi, n))
        sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0) * (1 if rng.random() < 0.5 else -1)
        amplitudes = sign * rng.uniform(*STREAK_HU, n)
        widths = rng.uniform(*STREAK_WIDTH_MM, n)
        hot = np.where((sign > 0) & (rng.random(n) < HOT_FRACTION), rng.uniform(*HOT_HU, n), 0.0)
        hot_mm = CLIP_RADIUS_MM + bloom_mm + rng.uniform(*HOT_REACH_MM, n)
        streaks.append([[round(float(np.degrees(a)), 1), round(float(m), 1), round(float(h), 1)]
                        for a, m, h in zip(angles, amplitudes, hot)])
        for k in np.flatnonzero(wz):
            # the hot cores on the clip's own slices only; a slice beyond, the streaks fade
            axis = axis_in_slice(clip.p0, clip.p1, z[k], grid.spacing[2])
            field[k] += streak_field(px, py, axis, angles, wz[k] * amplitudes, widths, hot * (wz[k] == 1), hot_mm)
    bands = []
    for i in range(len(clips)):
        for j in range(i + 1, len(clips)):
            ci, cj = centres[i], centres[j]
            # on the slices holding either clip's metal that hold or touch the other's
            wz = ndimage.binary_dilation(weights[i] == 1) & ndimage.binary_dilation(weights[j] == 1)
            if np.linalg.norm(ci - cj) > BAND_MM or np.hypot(*(ci - cj)[:2]) < 3.0 or not wz.any():
                continue                                              # (< 3 mm apart in-plane: no line between)
            depth, width = float(rng.uniform(*BAND_HU)), float(rng.uniform(*BAND_WIDTH_MM))
            bands.append([i, j, round(depth, 1)])
            band = band_field(px, py, ci[:2], cj[:2], depth, width)
            for k in np.flatnonzero(wz):
                np.minimum(dark[k], band, out=dark[k])
    field += dark
    sp_yx = (grid.spacing[1], grid.spacing[0])
    for k in np.flatnonzero(np.any(field != 0, axis=(1, 2))):
        inside = body[k, win[1], win[2]]
        taper = np.where(field[k] < 0, skin_taper(inside, sp_yx), 1.0)
        hu[k, win[1], win[2]] += field[k] * taper * inside
    return {**SIMULATED, "bloom_mm": round(bloom_mm, 3), "streaks": streaks, "bands": bands}
