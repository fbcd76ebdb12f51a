"""The folds' agreement for the QA report: pooled pairwise Dice from vote counts, and the hook that sees each
fold's logits inside nnU-Net's ensemble loop."""
import itertools

import numpy as np
import pytest

from nnunet_breast.inference.ensemble import FoldVotes, fold_logits_hook


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def _votes(masks_per_fold):
    v = FoldVotes(lambda logits: {"A": logits[0] > 0, "B": logits[1] > 0})
    for a, b in masks_per_fold:
        v.add(np.stack([np.where(a, 1.0, -1.0), np.where(b, 1.0, -1.0)]).astype(np.float16))
    return v.agreement()


def test_agreement_is_one_for_identical_folds_and_the_pooled_pairwise_dice_otherwise():
    rng = np.random.default_rng(0)
    base = rng.random((6, 20, 20)) > 0.6
    empty = np.zeros_like(base)
    assert _votes([(base, empty)] * 3) == {"A": 1.0, "B": None}
    folds = [rng.random((6, 20, 20)) > 0.5 for _ in range(4)]
    got = _votes([(f, f) for f in folds])["A"]
    pairs = list(itertools.combinations(folds, 2))
    pooled = sum(2 * (a & b).sum() for a, b in pairs) / sum(a.sum() + b.sum() for a, b in pairs)
    assert got == pytest.approx(pooled)
    assert got == pytest.approx(np.mean([_dice(a, b) for a, b in pairs]), abs=0.02)   # near-equal volumes
    half = np.zeros_like(base)
    half[:3] = True
    assert _votes([(half, half), (~half, ~half)])["A"] == 0.0
    assert _votes([(base, base)]) == {}                          # one fold: nothing to compare


class _Ensemble:
    """nnU-Net's ensemble loop in miniature: one sliding window per fold, logits summed."""

    def __init__(self, folds):
        self.folds = folds

    def predict_sliding_window_return_logits(self, data):
        import torch

        return torch.full((2, *data.shape), float(self.current))

    def predict_logits_from_preprocessed_data(self, data):
        total = 0
        for self.current in self.folds:
            total = total + self.predict_sliding_window_return_logits(data)
        return total / len(self.folds)


def test_the_hook_sees_every_folds_logits_and_leaves_the_predictor_as_it_was():
    import torch

    predictor, seen = _Ensemble([-1, 2, 5]), []
    with fold_logits_hook(predictor, seen.append):
        mean = predictor.predict_logits_from_preprocessed_data(torch.zeros(3, 4))
    assert [float(s.max()) for s in seen] == [-1, 2, 5] and float(mean.max()) == 2
    assert "predict_sliding_window_return_logits" not in vars(predictor)
    predictor.predict_logits_from_preprocessed_data(torch.zeros(3, 4))
    assert len(seen) == 3
