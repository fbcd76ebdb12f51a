"""volumes.components: island removal on the structure's own box gives the same mask as on the whole grid."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from nnunet_breast.volumes.components import bounding_box, pasted, remove_islands


def test_bounding_box_of_a_mask_and_of_nothing():
    m = np.zeros((6, 7, 8), bool)
    m[1, 2, 3] = m[4, 5, 3] = m[2, 2, 7] = True
    assert bounding_box(m) == (slice(1, 5), slice(2, 6), slice(3, 8))
    assert bounding_box(np.zeros((3, 3, 3), bool)) is None


def test_remove_islands_matches_a_whole_grid_reference():
    """Random blobs in part of a larger grid: components under the volume go (26-connected
    counts), the largest always stays, nothing outside the mask appears."""
    rng = np.random.default_rng(0)
    m = np.zeros((40, 90, 80), bool)
    m[5:30, 20:70, 10:60] = ndimage.binary_dilation(rng.random((25, 50, 50)) > 0.997, iterations=2)
    spacing = (3.0, 1.0, 1.0)
    labels, n = ndimage.label(m, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(labels.ravel())[1:] * 3.0
    limit = float(np.median(sizes))
    expected = np.isin(labels, 1 + np.flatnonzero(sizes >= limit))
    assert 1 < expected.sum() < m.sum()
    np.testing.assert_array_equal(remove_islands(m, spacing, limit), expected)
    tiny = np.zeros((50, 60, 70), bool)
    tiny[20:22, 30:32, 40:41] = True                  # below the volume but the only component: kept
    tiny[25, 10, 10] = True
    out = remove_islands(tiny, spacing, 100.0)
    assert out.sum() == 4 and out[20, 30, 40] and not out[25, 10, 10]


def test_pasted_puts_the_box_back_on_the_grid_with_the_fill_elsewhere():
    inside = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)
    box = (slice(1, 3), slice(0, 3), slice(2, 6))
    out = pasted(inside, box, (4, 5, 6), np.array([1.0, 0.0], np.float32).reshape(2, 1, 1, 1))
    assert out.shape == (2, 4, 5, 6) and out.dtype == np.float32
    np.testing.assert_array_equal(out[(slice(None), *box)], inside)
    rest = np.ones((4, 5, 6), bool)
    rest[box] = False
    assert (out[0][rest] == 1).all() and (out[1][rest] == 0).all()
    mask = pasted(np.ones((2, 3, 4), bool), box, (4, 5, 6))
    assert mask.sum() == 24 and mask[box].all()
