"""How much the folds of an ensemble agree, per structure, for the QA report, at no extra network cost.

nnU-Net's predictor runs every fold's network over the case and averages their logits
(``predict_logits_from_preprocessed_data`` calls ``predict_sliding_window_return_logits`` once per fold).
:func:`fold_logits_hook` sees each fold's logits as they pass; :class:`FoldVotes` turns them into one vote per
fold and voxel (the fold's own mask, on the network's grid) and keeps only the vote counts.

Agreement is the pooled pairwise Dice over all pairs of folds, from the vote counts v (0..K) alone:
sum over pairs of 2|A_i & A_j| / sum over pairs of (|A_i| + |A_j|) = sum v(v-1) / ((K-1) sum v).
It is 1 when every fold paints the same voxels and falls towards 0 as they paint different ones; a structure no
fold paints has no agreement value (None).
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np


class FoldVotes:
    def __init__(self, decode):
        """``decode(logits [c, z, y, x] numpy) -> {structure: bool mask}``: one fold's masks."""
        self.decode, self.votes, self.folds = decode, {}, 0

    def add(self, logits) -> None:
        for name, mask in self.decode(np.asarray(logits)).items():
            count = self.votes.get(name)
            if count is None:
                self.votes[name] = count = np.zeros(mask.shape, np.uint8)
            count += mask
        self.folds += 1

    def agreement(self) -> dict[str, float | None]:
        if self.folds < 2:
            return {}
        out = {}
        for name, v in self.votes.items():
            v = v.astype(np.int64)
            painted = int(v.sum())
            out[name] = None if painted == 0 else float((v * (v - 1)).sum()) / ((self.folds - 1) * painted)
        return out


@contextmanager
def fold_logits_hook(predictor, callback):
    """Within the block, ``callback(logits)`` gets each fold's logits as nnU-Net's ensemble loop computes them."""
    original = predictor.predict_sliding_window_return_logits

    def each_fold(data):
        logits = original(data)
        callback(logits.detach().cpu().numpy())     # fp16 or fp32, as nnU-Net computed them
        return logits

    predictor.predict_sliding_window_return_logits = each_fold
    try:
        yield
    finally:
        del predictor.predict_sliding_window_return_logits       # the class's method again
