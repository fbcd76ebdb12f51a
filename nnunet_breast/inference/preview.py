"""PNG preview of predicted contours: axial, coronal and sagittal CT slices with each structure drawn.

Each structure is a semi-transparent fill plus an outline in its catalog colour
(:data:`nnunet_breast.structures.catalog.BY_NAME`); a name the catalog does not know gets :data:`FALLBACK_COLOR`.
The three slices pass through one point: the centroid of the union of all masks, the given
``slice_index_zyx``, or the image centre when every mask is empty.

Display follows the radiological convention for a head-first-supine CT with an identity direction matrix
(arrays ``[z, y, x]``, DICOM LPS: x to the patient's left, y to posterior, z to superior):

* axial: patient left on the image right, anterior up;
* coronal: patient left on the image right, superior up;
* sagittal: anterior on the image left, superior up.

Pixels are drawn at their physical size from ``spacing_zyx`` (mm), so 3 mm slices are not squashed.
Rendering uses a private Agg canvas (no pyplot, no change of the global matplotlib backend) and the PNG
(RGB) is written atomically: a temporary sibling, then a rename.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from nnunet_breast.structures.catalog import BY_NAME

__all__ = ["FALLBACK_COLOR", "structure_color", "write_preview"]

FALLBACK_COLOR: tuple[int, int, int] = (255, 0, 255)  # magenta: no catalog structure uses it
FILL_ALPHA = 0.25
_LINE_WIDTH = 1.5


def structure_color(name: str) -> tuple[int, int, int]:
    """Catalog display colour (RGB 0-255) of ``name``, or :data:`FALLBACK_COLOR` for unknown names."""
    s = BY_NAME.get(name)
    return tuple(s.color) if s is not None else FALLBACK_COLOR


def _check(hu, masks, spacing_zyx, window, slice_index_zyx):
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu must be 3-D [z, y, x], got shape {hu.shape}")
    if 0 in hu.shape:
        raise ValueError(f"hu is empty, shape {hu.shape}")
    spacing = np.asarray(spacing_zyx, np.float64).ravel()
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"spacing_zyx must be three positive numbers (mm), got {spacing_zyx!r}")
    lo, hi = (float(w) for w in window)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"window must be (low, high) HU with low < high, got {window!r}")
    arrays = {}
    for name, m in masks.items():
        m = np.asarray(m)
        if m.shape != hu.shape:
            raise ValueError(f"mask {name!r} has shape {m.shape}, the CT has shape {hu.shape}")
        arrays[str(name)] = m  # kept as given: "!= 0" is taken per slice, not on the whole volume
    index = None
    if slice_index_zyx is not None:
        index = tuple(int(i) for i in slice_index_zyx)
        if len(index) != 3 or any(not 0 <= i < n for i, n in zip(index, hu.shape)):
            raise ValueError(f"slice_index_zyx {tuple(slice_index_zyx)!r} is outside the CT of shape {hu.shape}")
    return hu, arrays, spacing, (lo, hi), index


def _centre(arrays: dict[str, np.ndarray], shape) -> tuple[int, int, int]:
    """Voxel nearest the centroid of the union of all masks; the image centre when all are empty."""
    union = np.zeros(shape, bool)
    for m in arrays.values():
        np.logical_or(union, m if m.dtype == bool else m != 0, out=union)
    total = int(np.count_nonzero(union))
    if total == 0:
        return tuple(n // 2 for n in shape)
    centre = []
    for axis, n in enumerate(shape):
        counts = np.count_nonzero(union, axis=tuple(a for a in range(3) if a != axis))
        c = float(np.dot(np.arange(n), counts)) / total
        centre.append(int(min(max(round(c), 0), n - 1)))
    return tuple(centre)


def _panels(index, spacing, shape):
    """(title, slicer, extent, origin, orientation letters) of each panel.

    Rows of the 2-D slice run down for ``origin='upper'`` and up for ``origin='lower'``; extent is in mm.
    """
    k, j, i = index
    sz, sy, sx = spacing
    nz, ny, nx = shape
    return [
        (f"Axial  z={k} ({k * sz:.1f} mm)", (k, slice(None), slice(None)),
         (0.0, nx * sx, ny * sy, 0.0), "upper", ("R", "L", "A", "P")),
        (f"Coronal  y={j} ({j * sy:.1f} mm)", (slice(None), j, slice(None)),
         (0.0, nx * sx, 0.0, nz * sz), "lower", ("R", "L", "S", "I")),
        (f"Sagittal  x={i} ({i * sx:.1f} mm)", (slice(None), slice(None), i),
         (0.0, ny * sy, 0.0, nz * sz), "lower", ("A", "P", "S", "I")),
    ]


def _padded_extent(extent, origin, pixel_w, pixel_h):
    """Extent of a 2-D slice padded by one pixel on every side (so outlines close at the border)."""
    x0, x1, y0, y1 = extent
    if origin == "upper":
        return (x0 - pixel_w, x1 + pixel_w, y0 + pixel_h, y1 - pixel_h)
    return (x0 - pixel_w, x1 + pixel_w, y0 - pixel_h, y1 + pixel_h)


def _render(hu, arrays, spacing, window, index, title, dpi):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    panels = _panels(index, spacing, hu.shape)
    widths = [abs(p[2][1] - p[2][0]) for p in panels]
    heights = [abs(p[2][3] - p[2][2]) for p in panels]
    # figure size: the three panels side by side at their physical proportions, plus room for text
    panel_in = 3.6  # height of the tallest panel, inches
    scale = panel_in / max(heights)
    legend_in = 1.9 if arrays else 0.0
    fig_w = min(max(sum(widths) * scale + 0.3 * len(panels) + legend_in + 0.4, 4.0), 24.0)
    fig_h = panel_in + (1.1 if title else 0.7)

    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    right = 1.0 - legend_in / fig_w
    grid = fig.add_gridspec(1, 3, width_ratios=widths, left=0.02, right=right - 0.01,
                            bottom=0.03, top=1.0 - (0.9 if title else 0.5) / fig_h, wspace=0.08)
    for n, (name, slicer, extent, origin, letters) in enumerate(panels):
        ax = fig.add_subplot(grid[0, n])
        ax.set_facecolor("black")
        image = np.asarray(hu[slicer], np.float64)
        # slice rows are the first remaining array axis: y (axial) or z (coronal, sagittal)
        pixel_h = spacing[1] if n == 0 else spacing[0]
        pixel_w = spacing[2] if n < 2 else spacing[1]
        ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], extent=extent, origin=origin,
                  interpolation="nearest", aspect="equal")
        pad_extent = _padded_extent(extent, origin, pixel_w, pixel_h)
        for struct, mask in arrays.items():
            cut = np.asarray(mask[slicer]) != 0
            if not cut.any():
                continue
            rgb = np.array(structure_color(struct), np.float64) / 255.0
            overlay = np.zeros(cut.shape + (4,))
            overlay[cut] = (*rgb, FILL_ALPHA)
            ax.imshow(overlay, extent=extent, origin=origin, interpolation="nearest", aspect="equal")
            ax.contour(np.pad(cut, 1).astype(np.float32), levels=[0.5], colors=[tuple(rgb)],
                       linewidths=_LINE_WIDTH, extent=pad_extent, origin=origin, antialiased=True)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_title(name, color="white", fontsize=9)
        style = dict(color="white", fontsize=9, fontweight="bold", transform=ax.transAxes)
        ax.text(0.02, 0.5, letters[0], ha="left", va="center", **style)
        ax.text(0.98, 0.5, letters[1], ha="right", va="center", **style)
        ax.text(0.5, 0.98, letters[2], ha="center", va="top", **style)
        ax.text(0.5, 0.02, letters[3], ha="center", va="bottom", **style)
    if arrays:
        handles = []
        for struct, mask in arrays.items():
            rgb = tuple(np.array(structure_color(struct)) / 255.0)
            label = struct if np.any(mask) else f"{struct} (empty)"
            handles.append(Line2D([], [], color=rgb, linewidth=4, label=label))
        fig.legend(handles=handles, loc="center right", frameon=False, labelcolor="white",
                   fontsize=8, bbox_to_anchor=(1.0, 0.5))
    if title:
        fig.suptitle(title, color="white", fontsize=11)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3])


def write_preview(hu: np.ndarray, masks: Mapping[str, np.ndarray], spacing_zyx, out_png: Path, *,
                  window=(-160, 240), title: str = "", slice_index_zyx=None, dpi: int = 100) -> Path:
    """Write an RGB PNG with axial, coronal and sagittal panels of ``hu`` and ``masks``; return its path.

    ``hu`` is the CT in HU, ``masks`` maps structure names (catalog names get their catalog colour) to
    arrays of the same ``[z, y, x]`` shape (non-zero = inside). ``slice_index_zyx`` is the ``(z, y, x)``
    voxel the three slices pass through. Raises ``ValueError`` on a shape mismatch or bad arguments.
    """
    from PIL import Image  # a dependency of matplotlib

    hu, arrays, spacing, window, index = _check(hu, masks, spacing_zyx, window, slice_index_zyx)
    if int(dpi) <= 0:
        raise ValueError(f"dpi must be positive, got {dpi!r}")
    if index is None:
        index = _centre(arrays, hu.shape)
    rgb = _render(hu, arrays, spacing, window, index, title, int(dpi))

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp")
    try:
        Image.fromarray(rgb).save(tmp, format="PNG", dpi=(int(dpi), int(dpi)))
        os.replace(tmp, out_png)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out_png
