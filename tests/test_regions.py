"""Tests for nnunet_breast.structures.regions: lossless overlap encoding, checked against nnU-Net's own label handling.

The decisive checks use nnU-Net's code, not ours: LabelManager built from our dataset.json entries, the
training-time region conversion (ConvertSegmentationToRegionsTransform with the trainer's
``label_manager.foreground_regions``), the evaluation's ``region_or_label_to_mask`` and the integrity check's
label verification must all see exactly the original per-structure masks.
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from nnunet_breast.structures.catalog import BREAST_STRUCTURES
from nnunet_breast.structures.regions import OverlapEncoding, build_encoding, combinations_present, merge_encodings

SCL, L4, BREAST, HEART, CORD, LUNG = "CTVn_SCL_L", "CTVn_L4_L", "CTVp_breast_L", "Heart", "SpinalCord", "Lung_L"
STRUCTS = (BREAST, L4, SCL, HEART, LUNG, CORD)   # catalog order, so region order is the catalog's


def ball(shape, centre, radius) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius ** 2


@pytest.fixture
def masks() -> dict[str, np.ndarray]:
    """3D masks with every overlap kind: L4 fully inside SCL, breast/SCL partial, heart/lung partial,
    a triple overlap (breast, SCL, lung), the cord disjoint and a speckled random mask thrown in."""
    shape = (24, 40, 36)
    rng = np.random.default_rng(7)
    m = {
        SCL: ball(shape, (8, 12, 12), 7),
        L4: ball(shape, (8, 12, 12), 3),                       # strictly inside SCL
        BREAST: ball(shape, (12, 18, 16), 7),                  # partially overlaps SCL
        HEART: ball(shape, (16, 28, 20), 6),
        LUNG: (rng.random(shape) < 0.08) | ball(shape, (14, 22, 20), 6),   # overlaps heart, breast, SCL
    }
    m[CORD] = np.zeros(shape, dtype=bool)
    m[CORD][:, 36:39, 2:5] = True
    for s in STRUCTS:
        if s != CORD:
            m[s][:, 36:39, 2:5] = False                         # keep the cord disjoint from everything
    assert (m[L4] & ~m[SCL]).sum() == 0 and (m[L4] & m[SCL]).any()
    assert (m[BREAST] & m[SCL]).any() and (m[BREAST] & ~m[SCL]).any()
    return m


@pytest.fixture
def encoding(masks) -> OverlapEncoding:
    return build_encoding(STRUCTS, combinations_present(masks, STRUCTS))


def label_manager(enc: OverlapEncoding):
    """nnU-Net's LabelManager as the planner/trainer builds it: from dataset.json after a JSON round trip."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    dataset_json = json.loads(json.dumps({"labels": enc.dataset_json_labels(),
                                          "regions_class_order": enc.regions_class_order()}))
    return LabelManager(dataset_json["labels"], regions_class_order=dataset_json["regions_class_order"])


# ----------------------------------------------------------------------------- round trips
def test_round_trip_3d_overlapping(masks, encoding):
    label_map = encoding.encode(masks)
    assert label_map.dtype == np.uint8 and label_map.shape == masks[SCL].shape
    assert set(np.unique(label_map)) <= set(range(encoding.num_labels + 1))
    decoded = encoding.decode(label_map)
    assert list(decoded) == list(STRUCTS)
    for s in STRUCTS:
        assert decoded[s].dtype == bool
        np.testing.assert_array_equal(decoded[s], masks[s], err_msg=s)
    # the combinations found are exactly the ones used, and L4 never occurs without SCL
    present = combinations_present(masks, STRUCTS)
    assert (L4,) not in present and (L4, SCL) in present and (BREAST, SCL, LUNG) in present
    used = {encoding.combos[k - 1] for k in np.unique(label_map) if k}
    assert used == present


def test_singles_first_then_multis_sorted_and_deterministic(masks):
    present = list(combinations_present(masks, STRUCTS))
    enc = build_encoding(STRUCTS, present)
    assert enc.combos[: len(STRUCTS)] == tuple((s,) for s in STRUCTS)     # every single, even L4's
    multis = enc.combos[len(STRUCTS):]
    index = {s: i for i, s in enumerate(STRUCTS)}
    keys = [(len(c), [index[s] for s in c]) for c in multis]
    assert keys == sorted(keys) and all(len(c) > 1 for c in multis)
    # order of the input (and of names inside a combination) does not matter
    shuffled = [tuple(reversed(c)) for c in reversed(present)]
    assert build_encoding(STRUCTS, shuffled) == enc


def test_missing_structure_is_empty(masks, encoding):
    partial = {s: m for s, m in masks.items() if s not in (CORD, L4)}
    decoded = encoding.decode(encoding.encode(partial))
    assert not decoded[CORD].any() and not decoded[L4].any()
    np.testing.assert_array_equal(decoded[SCL], masks[SCL])
    empty = encoding.encode({}, shape=(2, 3, 4))
    assert empty.shape == (2, 3, 4) and not empty.any()


def test_non_bool_masks_are_accepted(masks, encoding):
    as_uint8 = {s: m.astype(np.uint8) * 255 for s, m in masks.items()}
    np.testing.assert_array_equal(encoding.encode(as_uint8), encoding.encode(masks))


def test_catalog_structures_round_trip():
    rng = np.random.default_rng(3)
    shape = (6, 20, 20)
    m = {s: rng.random(shape) < 0.15 for s in BREAST_STRUCTURES}
    enc = build_encoding(BREAST_STRUCTURES, combinations_present(m, BREAST_STRUCTURES))
    decoded = enc.decode(enc.encode(m))
    assert all(np.array_equal(decoded[s], m[s]) for s in BREAST_STRUCTURES)


def test_more_than_255_combinations_uses_uint16():
    structs = tuple(f"S{i}" for i in range(9))
    combos = [c for r in range(2, 10) for c in itertools.combinations(structs, r)]
    enc = build_encoding(structs, combos)
    assert enc.num_labels == 2 ** 9 - 1
    rng = np.random.default_rng(0)
    m = {s: rng.random((8, 16, 16)) < 0.5 for s in structs}
    lm = enc.encode(m)
    assert lm.dtype == np.uint16 and lm.max() > 255
    assert all(np.array_equal(enc.decode(lm)[s], m[s]) for s in structs)


def test_many_structures_use_the_searchsorted_path():
    structs = tuple(f"S{i:02d}" for i in range(40))         # > 32 bits: uint64 codes, no direct table
    rng = np.random.default_rng(1)
    m = {s: rng.random((4, 10, 10)) < 0.03 for s in structs}
    enc = build_encoding(structs, combinations_present(m, structs))
    lm = enc.encode(m)
    assert all(np.array_equal(enc.decode(lm)[s], m[s]) for s in structs)
    extra = dict(m)
    extra["S00"] = np.ones((4, 10, 10), dtype=bool)
    extra["S39"] = np.ones((4, 10, 10), dtype=bool)
    with pytest.raises(ValueError, match="S00.*S39"):
        enc.encode(extra)


# ----------------------------------------------------------------------------- nnU-Net's view
def test_label_manager_accepts_labels_and_regions(encoding):
    lm = label_manager(encoding)
    assert lm.has_regions
    assert lm.num_segmentation_heads == len(STRUCTS)
    # verify_dataset_integrity: labels must be 0..K consecutive
    assert lm.all_labels == list(range(encoding.num_labels + 1))
    ids = encoding.region_label_ids()
    expected = [tuple(ids[s]) if len(ids[s]) > 1 else ids[s][0] for s in STRUCTS]
    assert lm.foreground_regions == expected             # region order = structure order
    labels = encoding.dataset_json_labels()
    assert list(labels) == ["background", *STRUCTS] and labels["background"] == 0
    assert all(type(v) is int or (type(v) is list and all(type(i) is int for i in v)) for v in labels.values())


def test_nnunet_training_region_conversion_gives_original_masks(masks, encoding):
    """The exact transform nnUNetTrainer appends (regions=label_manager.foreground_regions)."""
    import torch
    from batchgeneratorsv2.transforms.utils.seg_to_regions import ConvertSegmentationToRegionsTransform

    lm = label_manager(encoding)
    seg = torch.from_numpy(encoding.encode(masks).astype(np.int16))[None]   # preprocessed segs are int8/int16
    out = ConvertSegmentationToRegionsTransform(regions=lm.foreground_regions, channel_in_seg=0)(segmentation=seg)
    targets = out["segmentation"].numpy()
    assert targets.shape == (len(STRUCTS), *masks[SCL].shape)
    for i, s in enumerate(STRUCTS):
        np.testing.assert_array_equal(targets[i], masks[s], err_msg=s)


def test_nnunet_one_hot_and_evaluation_masks_give_original_masks(masks, encoding):
    from nnunetv2.evaluation.evaluate_predictions import region_or_label_to_mask
    from nnunetv2.utilities.label_handling.label_handling import convert_labelmap_to_one_hot

    lm = label_manager(encoding)
    label_map = encoding.encode(masks)
    one_hot = convert_labelmap_to_one_hot(label_map, lm.all_labels).astype(bool)
    for s, region in zip(STRUCTS, lm.foreground_regions):
        ids = [region] if np.isscalar(region) else list(region)
        np.testing.assert_array_equal(one_hot[ids].any(0), masks[s], err_msg=s)
        np.testing.assert_array_equal(region_or_label_to_mask(label_map, region), masks[s], err_msg=s)


def test_nnunet_export_with_regions_class_order_uses_single_ids(masks, encoding):
    """nnU-Net's own export is lossy for overlaps; where a voxel has one structure it must decode exactly."""
    lm = label_manager(encoding)
    probs = np.stack([masks[s].astype(np.float32) for s in STRUCTS])
    exported = lm.convert_probabilities_to_segmentation(probs)
    decoded = encoding.decode(exported)
    n_present = sum(masks[s].astype(int) for s in STRUCTS)
    single = n_present == 1
    for s in STRUCTS:
        np.testing.assert_array_equal(decoded[s][single], masks[s][single], err_msg=s)
    order = encoding.regions_class_order()
    assert [encoding.combos[k - 1] for k in order] == [(s,) for s in STRUCTS]


def test_nnunet_verify_labels_accepts_written_label_file(masks, encoding, tmp_path):
    import SimpleITK as sitk
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_labels
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    path = tmp_path / "case_000.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(encoding.encode(masks)), str(path))
    assert verify_labels(str(path), SimpleITKIO, label_manager(encoding).all_labels)
    seg, _ = SimpleITKIO().read_seg(str(path))
    decoded = encoding.decode(seg[0].astype(np.int64))
    assert all(np.array_equal(decoded[s], masks[s]) for s in STRUCTS)


def test_no_overlap_dataset_is_plain_labels_for_nnunet():
    enc = build_encoding(STRUCTS, [])
    assert not enc.has_overlaps
    lm = label_manager(enc)
    assert not lm.has_regions and lm.num_segmentation_heads == len(STRUCTS) + 1
    assert enc.dataset_json_labels() == {"background": 0, **{s: i + 1 for i, s in enumerate(STRUCTS)}}
    # softmax probabilities as nnU-Net saves them then (background first) decode by argmax
    label_map = np.array([[0, 1, 2], [3, 4, 6]])
    probs = np.eye(len(STRUCTS) + 1)[label_map].transpose(2, 0, 1) * 0.8 + 0.01
    decoded = enc.decode_regions(probs)
    for i, s in enumerate(STRUCTS):
        np.testing.assert_array_equal(decoded[s], label_map == i + 1)


# ----------------------------------------------------------------------------- decode_regions
def test_decode_regions_thresholds_each_channel(encoding):
    rng = np.random.default_rng(5)
    probs = rng.random((len(STRUCTS), 5, 6, 7)).astype(np.float32)
    probs[0, 0, 0, 0] = 0.5                                   # on the threshold counts as inside
    out = encoding.decode_regions(probs)
    for i, s in enumerate(STRUCTS):
        np.testing.assert_array_equal(out[s], probs[i] >= 0.5)
    assert out[STRUCTS[0]][0, 0, 0]
    high = encoding.decode_regions(probs, threshold=0.9)
    assert all(np.array_equal(high[s], probs[i] >= 0.9) for i, s in enumerate(STRUCTS))
    # overlapping predictions survive, unlike nnU-Net's label-map export
    both = np.zeros((len(STRUCTS), 2), dtype=np.float32)
    both[STRUCTS.index(L4)] = both[STRUCTS.index(SCL)] = 0.9
    res = encoding.decode_regions(both)
    assert res[L4].all() and res[SCL].all() and not res[HEART].any()
    with pytest.raises(ValueError, match="channels"):
        encoding.decode_regions(probs[:-1])


# ----------------------------------------------------------------------------- errors
def test_unknown_combination_raises_naming_it(masks, encoding):
    bad = dict(masks)
    bad[CORD] = bad[CORD] | masks[HEART]                      # cord + heart never occurred
    with pytest.raises(ValueError, match=r"Heart.*SpinalCord"):
        encoding.encode(bad)


def test_bad_inputs_raise(masks, encoding):
    with pytest.raises(ValueError, match="not in the encoding"):
        encoding.encode({**masks, "Esophagus": masks[HEART]})
    with pytest.raises(ValueError, match="same shape"):
        encoding.encode({SCL: masks[SCL], HEART: masks[HEART][:-1]})
    with pytest.raises(ValueError, match="unknown label ids"):
        encoding.decode(np.array([0, 1, encoding.num_labels + 1]))
    with pytest.raises(ValueError, match="unknown label ids"):
        encoding.decode(np.array([-1, 0]))
    with pytest.raises(ValueError, match="unique"):
        build_encoding([SCL, SCL], [])
    with pytest.raises(ValueError, match="not in the encoding"):
        build_encoding([SCL], [(SCL, "Nope")])
    with pytest.raises(ValueError, match="appears twice"):
        OverlapEncoding((SCL, L4), ((SCL,), (L4,), (SCL, L4), (L4, SCL)))
    with pytest.raises(ValueError, match="without any label id"):
        OverlapEncoding((SCL, L4), ((SCL,),))


# ----------------------------------------------------------------------------- merge / json
def test_merge_keeps_existing_ids(masks, encoding):
    old_map = encoding.encode(masks)
    new = merge_encodings(encoding, [(HEART, CORD), (CORD, HEART, LUNG), (L4, SCL), ()])
    assert new.combos[: encoding.num_labels] == encoding.combos
    assert new.combos[encoding.num_labels:] == ((HEART, CORD), (HEART, LUNG, CORD))
    decoded = new.decode(old_map)                              # old label maps stay valid
    assert all(np.array_equal(decoded[s], masks[s]) for s in STRUCTS)
    heart_only = masks[HEART] & (sum(masks[s].astype(int) for s in STRUCTS) == 1)
    bad = dict(masks)
    bad[CORD] = bad[CORD] | heart_only                        # adds exactly the new (Heart, SpinalCord)
    with pytest.raises(ValueError, match=r"\('Heart', 'SpinalCord'\)"):
        encoding.encode(bad)
    assert all(np.array_equal(new.decode(new.encode(bad))[s], bad[s]) for s in STRUCTS)
    assert merge_encodings(new, new.combos) == new              # idempotent
    with pytest.raises(ValueError, match="not in the encoding"):
        merge_encodings(encoding, [("Esophagus",)])


def test_json_round_trip(encoding):
    text = json.dumps(encoding.to_json())
    back = OverlapEncoding.from_json(json.loads(text))
    assert back == encoding
    assert back.dataset_json_labels() == encoding.dataset_json_labels()
    with pytest.raises(ValueError, match="format"):
        OverlapEncoding.from_json({**json.loads(text), "format": "something else"})


def test_regions_class_order_without_single_combination():
    enc = OverlapEncoding((SCL, L4), ((SCL,), (SCL, L4)))      # hand-made: L4 never alone
    assert enc.regions_class_order() == [1, 2]
    assert enc.dataset_json_labels() == {"background": 0, SCL: [1, 2], L4: 2}
