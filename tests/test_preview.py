"""PNG preview of contours: file, colours, orientation, physical aspect and argument checks."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from nnunet_breast.inference.preview import FALLBACK_COLOR, structure_color, write_preview
from nnunet_breast.structures.catalog import BY_NAME

SHAPE = (20, 40, 50)        # z, y, x
SPACING = (3.0, 1.0, 1.0)   # mm: the z extent (60 mm) is longer than the y extent (40 mm)


def flat_ct(hu: float = 40.0) -> np.ndarray:
    return np.full(SHAPE, hu, np.float32)  # 40 HU is mid-grey in the default window


def block(z=(8, 12), y=(4, 12), x=(36, 46)) -> np.ndarray:
    """Anterior (small y), patient-left (large x) block in the middle slices."""
    m = np.zeros(SHAPE, bool)
    m[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = True
    return m


def read_rgb(path) -> np.ndarray:
    img = imread(path)
    assert img.ndim == 3 and img.shape[2] == 3
    return np.rint(img * 255).astype(int) if img.dtype != np.uint8 else img.astype(int)


def near(img: np.ndarray, rgb, tol: int = 40) -> np.ndarray:
    return np.all(np.abs(img - np.array(rgb)) <= tol, axis=-1)


def grey_panels(img: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(row0, row1, col0, col1) of each mid-grey CT panel, left to right."""
    g = (img[..., 0] == img[..., 1]) & (img[..., 1] == img[..., 2]) & (np.abs(img[..., 0] - 128) <= 3)
    cols = np.flatnonzero(g.sum(axis=0) > 5)
    runs = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
    out = []
    for run in runs:
        rows = np.flatnonzero(g[:, run[0]:run[-1] + 1].any(axis=1))
        out.append((int(rows[0]), int(rows[-1]), int(run[0]), int(run[-1])))
    return out


def test_png_exists_reads_back_rgb_and_is_atomic(tmp_path):
    out = write_preview(flat_ct(), {"Heart": block()}, SPACING, tmp_path / "sub" / "p.png", title="case 1")
    assert out == tmp_path / "sub" / "p.png" and out.is_file()
    img = read_rgb(out)
    assert img.shape[0] > 100 and img.shape[1] > 200
    assert [p.name for p in out.parent.iterdir()] == ["p.png"]  # no temporary file left behind


def test_heart_is_drawn_in_catalog_red(tmp_path):
    assert structure_color("Heart") == BY_NAME["Heart"].color == (255, 0, 0)
    with_heart = read_rgb(write_preview(flat_ct(), {"Heart": block()}, SPACING, tmp_path / "a.png"))
    without = read_rgb(write_preview(flat_ct(), {}, SPACING, tmp_path / "b.png"))
    assert near(with_heart, (255, 0, 0)).sum() > 50
    assert near(without, (255, 0, 0)).sum() == 0


def test_empty_masks_are_fine_and_slices_go_through_the_centre(tmp_path):
    out = write_preview(flat_ct(), {"Heart": np.zeros(SHAPE, bool), "Lung_L": np.zeros(SHAPE, np.uint8)},
                        SPACING, tmp_path / "e.png")
    img = read_rgb(out)
    # only the legend shows the (empty) structures: no heart outline inside a CT panel
    panels = grey_panels(img)
    assert len(panels) == 3
    for r0, r1, c0, c1 in panels:
        assert near(img[r0:r1 + 1, c0:c1 + 1], (255, 0, 0)).sum() == 0


def test_unknown_structure_uses_the_fallback_colour(tmp_path):
    assert structure_color("Not_A_Structure") == FALLBACK_COLOR
    img = read_rgb(write_preview(flat_ct(), {"Not_A_Structure": block()}, SPACING, tmp_path / "u.png"))
    assert near(img, FALLBACK_COLOR, tol=30).sum() > 50


def test_radiological_orientation_and_physical_aspect(tmp_path):
    img = read_rgb(write_preview(flat_ct(), {"Heart": block()}, SPACING, tmp_path / "o.png"))
    panels = grey_panels(img)
    assert len(panels) == 3
    (ar0, ar1, ac0, ac1), (cr0, cr1, cc0, cc1), (sr0, sr1, sc0, sc1) = panels
    nz, ny, nx = SHAPE
    sz, sy, sx = SPACING
    # physical proportions: width / height of each panel in mm
    assert (ac1 - ac0) / (ar1 - ar0) == pytest.approx(nx * sx / (ny * sy), rel=0.08)
    assert (cc1 - cc0) / (cr1 - cr0) == pytest.approx(nx * sx / (nz * sz), rel=0.08)
    assert (sc1 - sc0) / (sr1 - sr0) == pytest.approx(ny * sy / (nz * sz), rel=0.08)

    def red_centre(r0, r1, c0, c1):
        rows, cols = np.nonzero(near(img[r0:r1 + 1, c0:c1 + 1], (255, 0, 0)))
        assert rows.size
        return rows.mean() / (r1 - r0), cols.mean() / (c1 - c0)

    row, col = red_centre(ar0, ar1, ac0, ac1)   # axial: patient left on the right, anterior up
    assert col > 0.6 and row < 0.4
    row, col = red_centre(cr0, cr1, cc0, cc1)   # coronal: patient left on the right
    assert col > 0.6 and 0.3 < row < 0.7
    row, col = red_centre(sr0, sr1, sc0, sc1)   # sagittal: anterior on the left
    assert col < 0.4


def test_superior_is_up(tmp_path):
    high_z = block(z=(15, 19), y=(15, 25), x=(20, 30))  # superior = large z index
    img = read_rgb(write_preview(flat_ct(), {"Heart": high_z}, SPACING, tmp_path / "s.png",
                                 slice_index_zyx=(17, 20, 25)))
    _, (cr0, cr1, cc0, cc1), _ = grey_panels(img)
    rows, _ = np.nonzero(near(img[cr0:cr1 + 1, cc0:cc1 + 1], (255, 0, 0)))
    assert rows.mean() / (cr1 - cr0) < 0.35


def test_bad_arguments_raise(tmp_path):
    png = tmp_path / "x.png"
    with pytest.raises(ValueError, match="shape"):
        write_preview(flat_ct(), {"Heart": np.zeros((20, 40, 49), bool)}, SPACING, png)
    with pytest.raises(ValueError):
        write_preview(flat_ct()[0], {}, SPACING[1:], png)
    with pytest.raises(ValueError):
        write_preview(flat_ct(), {}, (3.0, 1.0), png)
    with pytest.raises(ValueError):
        write_preview(flat_ct(), {}, SPACING, png, window=(240, -160))
    with pytest.raises(ValueError):
        write_preview(flat_ct(), {}, SPACING, png, slice_index_zyx=(20, 0, 0))
    assert not png.exists()
