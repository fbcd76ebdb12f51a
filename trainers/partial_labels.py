"""Partial labels: a structure not contoured in a case teaches that case nothing.

A clinical structure set of a left-sided patient holds the left CTVs only, often not every nodal level and
now and then no thyroid or esophagus. Written as background, those voxels would teach the model that the right
breast is not ``CTVp_breast_R``. The converter records which structures each case annotates (dataset.json,
``nnunet_breast.annotated``: case -> structures; nnU-Net copies dataset.json into the preprocessed folder),
and the breast trainers weight nnU-Net's region loss (BCE + soft Dice) per case and per structure: an
unannotated structure adds exactly nothing, at every deep-supervision scale; an annotated structure trains as
before, also where it is empty (then it is background). With every structure annotated the loss equals
nnU-Net's ``DC_and_BCE_loss``.

Known negatives (the exclusion idea of Shi et al., Med Image Anal 2021, "Marginal loss and exclusion loss for
partially supervised multi-organ segmentation"): a structure with a side never reaches into a structure of the
other side, so the voxels a case annotates as any right-side structure are background for every left-side
structure it did not annotate, and the reverse. Without them a treated-side-only cohort never shows the
left-breast output a right breast it must not paint in a right-sided patient: measured, both breast outputs
painted the same breast of new patients (docs/benchmarks.md, demo timings). They enter the BCE as background
voxels and, as Shi et al.'s exclusion loss, a soft Dice of the prediction with them that the loss minimises:
as BCE voxels alone they weigh a few thousand voxels against the whole patch, far less than the Dice of the
annotated side, and one demo run in three still painted both breasts with both outputs. With the exclusion term
at weight 1 no run did, but no nodal level started by 1000 demo iterations; at 0.3 two benchmark seeds kept the
breasts apart and started 4 nodal levels each, but a demo run painted both breasts with both outputs
(docs/benchmarks.md, known negatives).

The exclusion term ramps up over the first :attr:`PartialLabels.exclusion_ramp_fraction` of the epochs: a structure
is learnt first, its side then. From the first iteration, before the network tells the sides apart, the term
pushed a breast output down on both breasts harder than the Dice pulled it up on its own (it weighs each
known-negative voxel more, averaged over fewer pairs): the demo's breast outputs started at epoch 7-10 of 14 and
in one run the left one never did; with the ramp at epoch 4-8 in 4 of 5 runs, each on its own breast
(docs/benchmarks.md, the exclusion term's ramp).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_breast.errors import UserError
from nnunet_breast.structures.catalog import BY_NAME

#: dataset.json key (inside "nnunet_breast") of the per-case annotation record
ANNOTATED_KEY = "annotated"


def annotation_record(dataset_json: dict) -> dict[str, list[str]] | None:
    """case -> annotated structures, or None when the dataset has no record (every structure annotated)."""
    record = dataset_json.get("nnunet_breast", {}).get(ANNOTATED_KEY)
    return None if record is None else {str(k): list(v) for k, v in record.items()}


def is_partial(record: dict[str, list[str]] | None, structures: list[str]) -> bool:
    return record is not None and any(set(structures) - set(names) for names in record.values())


def channel_mask(record: dict[str, list[str]], cases, structures: list[str]) -> torch.Tensor:
    """(cases, structures) float mask: 1 where the case annotates the structure (= output channel)."""
    rows = []
    for case in cases:
        names = record.get(str(case))
        if names is None:
            raise UserError(f"case {case} is missing from dataset.json's annotation record "
                            f"(nnunet_breast.{ANNOTATED_KEY}); reconvert the dataset with `nnunet-breast convert`")
        rows.append([float(s in names) for s in structures])
    return torch.tensor(rows, dtype=torch.float32)


def opposite_sides(structures: list[str]) -> torch.Tensor:
    """(structures, structures) 0/1: [c, s] = 1 when s has the other side of c in the catalog (L vs R)."""
    sides = [BY_NAME[n].side if n in BY_NAME else None for n in structures]
    return torch.tensor([[float(a in ("L", "R") and b in ("L", "R") and a != b) for b in sides] for a in sides])


class PartialLabelRegionLoss(nn.Module):
    """nnU-Net's region loss (BCE + soft Dice, sigmoid per region) weighted by :attr:`channel_mask`.

    ``channel_mask`` ((batch, regions), set by the trainer before each step) zeroes a structure's BCE and
    leaves it out of the Dice mean for the cases that do not annotate it. None: every structure annotated.
    ``exclusive`` ((regions, regions), :func:`opposite_sides`): where set, the voxels of a case's annotated
    structures that exclude an unannotated one are background for it (known negatives): in the BCE, and in an
    exclusion term, the soft Dice of its prediction with them (2 sum(p e) / (sum(p e) + sum(e))), averaged over
    the (case, structure) pairs that have known negatives and added to the loss with ``exclusion_weight``
    (1; 0.3 and 0.1 measured and not kept; 0: known negatives in the BCE only), times ``exclusion_ramp`` (0 to 1,
    set by the trainer each epoch: :class:`PartialLabels`).
    """

    exclusion_weight: float = 1.0
    exclusion_ramp: float = 1.0

    def __init__(self, batch_dice: bool, smooth: float = 1e-5, ddp: bool = False):
        super().__init__()
        self.batch_dice, self.smooth, self.ddp = batch_dice, smooth, ddp
        self.channel_mask: torch.Tensor | None = None
        self.exclusive: torch.Tensor | None = None

    def known_negatives(self, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor | None:
        """1 on the known negatives of each unannotated channel (the voxels of the case's annotated structures that
        exclude it), else 0; None without any."""
        if self.exclusive is None or bool(m.all()):
            return None
        w = m.view(*m.shape, *(1,) * (y.ndim - 2))
        annotated = (y * w).flatten(2)                                      # the targets a case vouches for
        reached = torch.matmul(self.exclusive.to(y), annotated).view_as(y) > 0      # (c, s) @ (b, s, voxels)
        return (1.0 - w) * reached

    def forward(self, net_output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x, y = net_output.float(), target.float()
        b, c = x.shape[:2]
        m = torch.ones((b, c), device=x.device) if self.channel_mask is None else self.channel_mask.to(x.device)
        if m.shape != (b, c):
            raise ValueError(f"channel mask {tuple(m.shape)} does not match the output's (batch, regions) {(b, c)}")
        spatial = tuple(range(2, x.ndim))
        known = self.known_negatives(y, m)
        known_size = None if known is None else known.sum(spatial)
        annotated = m.view(b, c, *(1,) * len(spatial))
        supervised = m.sum() * y[0, 0].numel() + (0 if known is None else known_size.sum())    # voxels
        if not supervised > 0:
            return x.sum() * 0.0
        weights = annotated if known is None else annotated + known
        bce = F.binary_cross_entropy_with_logits(x, y * annotated, weights, reduction="sum") / supervised
        p = torch.sigmoid(x)
        exclusion = self.exclusion(p, known, known_size)
        if not m.any():
            return bce + exclusion
        intersect = torch.einsum("bcn,bcn->bc", p.flatten(2), y.flatten(2)) * m
        sum_pred, sum_gt = p.sum(spatial) * m, y.sum(spatial) * m
        if self.batch_dice:
            counts = m
            if self.ddp:
                from nnunetv2.utilities.ddp_allgather import AllGatherGrad

                intersect, sum_pred, sum_gt, counts = (AllGatherGrad.apply(t).sum(0)
                                                       for t in (intersect, sum_pred, sum_gt, counts))
            intersect, sum_pred, sum_gt, counts = intersect.sum(0), sum_pred.sum(0), sum_gt.sum(0), counts.sum(0)
            dc = (2 * intersect + self.smooth) / (sum_gt + sum_pred + self.smooth).clamp_min(1e-8)
            dice = dc[counts > 0].mean()
        else:
            dc = (2 * intersect + self.smooth) / (sum_gt + sum_pred + self.smooth).clamp_min(1e-8)
            dice = (dc * m).sum() / m.sum()
        return bce - dice + exclusion

    def exclusion(self, p: torch.Tensor, known: torch.Tensor | None, size: torch.Tensor | None) -> torch.Tensor:
        """Mean soft Dice of unannotated channels' predictions with their known negatives (``size``: their voxels per
        case and channel; 0 without any)."""
        weight = self.exclusion_weight * self.exclusion_ramp
        if known is None or not weight:
            return p.sum() * 0.0
        pairs = size > 0
        if not pairs.any():
            return p.sum() * 0.0
        overlap = torch.einsum("bcn,bcn->bc", p.flatten(2), known.flatten(2))
        return weight * (2 * overlap / (overlap + size + self.smooth))[pairs].mean()


def exclusion_ramp(epoch: int, num_epochs: int, fraction: float) -> float:
    """The exclusion term's share at ``epoch``: 0 at the first epoch, rising linearly to 1 at ``fraction`` of the
    epochs, 1 after (and always 1 when ``fraction`` is 0)."""
    span = fraction * num_epochs
    return 1.0 if span <= 0 else float(min(1.0, epoch / span))


class PartialLabels:
    """Trainer mixin (before nnU-Net's trainer in the bases): the partial-label loss when the dataset's
    annotation record says some case lacks some structure; nnU-Net's own loss otherwise. Its exclusion term
    ramps up over the first ``exclusion_ramp_fraction`` of the epochs (:func:`exclusion_ramp`)."""

    exclusion_ramp_fraction: float = 0.3

    def _build_loss(self):
        loss = super()._build_loss()
        record = annotation_record(self.dataset_json)
        structures = [n for n in self.dataset_json["labels"] if n != "background"]
        self._annotations = record if is_partial(record, structures) else None
        if self._annotations is None:
            return loss
        if not self.label_manager.has_regions:
            raise UserError("partial annotations need region-based training (sigmoid per structure); this dataset's "
                            "labels are mutually exclusive classes")
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

        cases = infer_dataset_class(self.preprocessed_dataset_folder).get_identifiers(self.preprocessed_dataset_folder)
        channel_mask(self._annotations, cases, structures)          # every case must be in the record
        self._structures = structures
        n_partial = sum(bool(set(structures) - set(self._annotations.get(c, structures))) for c in cases)
        self.print_to_log_file(f"partial labels: {n_partial} of {len(cases)} cases lack some structure; the loss "
                               "ignores, per case, the structures it did not annotate, except on their known "
                               "negatives (the other side's annotated structures)")
        inner = PartialLabelRegionLoss(self.configuration_manager.batch_dice, ddp=self.is_ddp)
        inner.exclusive = opposite_sides(structures)
        if hasattr(loss, "loss") and hasattr(loss, "weight_factors"):      # nnU-Net's DeepSupervisionWrapper
            loss.loss = inner
            return loss
        return inner

    def on_epoch_start(self):
        super().on_epoch_start()
        if getattr(self, "_annotations", None) is not None:           # _build_loss made the partial-label loss
            inner = getattr(self.loss, "loss", self.loss)
            ramp = exclusion_ramp(self.current_epoch, self.num_epochs, self.exclusion_ramp_fraction)
            if self.current_epoch == 0 or ramp != inner.exclusion_ramp:
                self.print_to_log_file(f"known negatives' exclusion term at {ramp:.2f} of its weight "
                                       f"{inner.exclusion_weight:g}")
            inner.exclusion_ramp = ramp

    def _set_channel_mask(self, batch: dict) -> None:
        if getattr(self, "_annotations", None) is None:
            return
        inner = getattr(self.loss, "loss", self.loss)
        inner.channel_mask = channel_mask(self._annotations, batch["keys"], self._structures).to(self.device)

    def train_step(self, batch: dict) -> dict:
        self._set_channel_mask(batch)
        return super().train_step(batch)

    def validation_step(self, batch: dict) -> dict:
        self._set_channel_mask(batch)
        return super().validation_step(batch)
