"""How fast a trainer learns: DSC on a fold's validation cases every few iterations, in one process.

    python benchmarks/learning_curve.py -d 801 -c 3d_cpu_effnetb0 --steps 300 --every 100 \\
        --variant stem4:nnUNetTrainerEffNetB0DemoCPU:stem_features=4 \\
        --variant stem16:nnUNetTrainerEffNetB0DemoCPU

Each ``--variant NAME:TRAINER[:key=value,...]`` trains ``TRAINER`` (network kwargs overridden by the key=values;
``lr=`` sets the rate, ``optimizer=sgd`` nnU-Net's SGD recipe and initialisation, ``config=`` another configuration
of the same data, e.g. vanilla ``3d_cpu`` beside ``3d_cpu_effnetb0``, ``partial_labels=off`` nnU-Net's loss, which
teaches every structure a case did not annotate as background, ``known_negatives=off`` the partial-label loss
without the other side's known negatives, ``known_negatives=bce`` with them as BCE voxels only (no exclusion term),
``known_negatives=0.1`` with the exclusion term at that weight, ``foreground_patches=`` the share of patches nnU-Net
centres on foreground) for ``--steps`` iterations on fold ``-f`` of a
preprocessed dataset, with nnU-Net's own data loader and augmentation in this process (``nnUNet_n_proc_DA=0``), the
trainer's own ``train_step`` (bf16 on CPUs that have it) and its LR schedule stretched over ``--steps``. Every
``--every`` iterations the network predicts each validation case whole (one padded patch: the CPU configuration's
patch holds a case) and reports per-structure DSC (structures a case annotates), the mean, ``side_err``: the
share of predicted lung voxels that lie in the other side's lung (0.5 = left and right not told apart), and
``breast_side_err``, the same for the breast CTVs on cases that contour both breasts. The first
variant is the baseline: each checkpoint line carries the ratio of seconds per step against it. One JSON line per
checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

os.environ["nnUNet_n_proc_DA"] = "0"

#: left/right pairs whose mix-up is reported: the share of a pair's predicted voxels lying in the other side's
#: reference (cases that contour both sides only)
SIDE_PAIRS = {"side_err": ("Lung_L", "Lung_R"), "breast_side_err": ("CTVp_breast_L", "CTVp_breast_R")}


def make_trainer(dataset: str, configuration: str, fold: int, spec: str, steps: int):
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    name, trainer, *rest = spec.split(":")
    overrides = dict(kv.split("=") for kv in rest[0].split(",")) if rest and rest[0] else {}
    lr = float(overrides.pop("lr")) if "lr" in overrides else None
    sgd = overrides.pop("optimizer", "") == "sgd"
    configuration = overrides.pop("config", configuration)
    unmasked = overrides.pop("partial_labels", "on") == "off"
    negatives = overrides.pop("known_negatives", "on")
    no_negatives = negatives == "off"
    exclusion = None if negatives in ("on", "off") else 0.0 if negatives == "bce" else float(negatives)
    foreground_patches = overrides.pop("foreground_patches", None)
    t = get_trainer_from_args(dataset, configuration, fold, trainer, "nnUNetPlans", device=torch.device("cpu"))
    if overrides or lr or sgd or unmasked or no_negatives or exclusion is not None:
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        cls = type(t)
        body = {"network_overrides": {**getattr(cls, "network_overrides", {}),
                                      **{k: json.loads(v) for k, v in overrides.items()}}}
        if sgd:      # nnU-Net's own: SGD, momentum 0.99, Nesterov, poly decay from 1e-2, its initialisation
            body.update(configure_optimizers=nnUNetTrainer.configure_optimizers, foreground_prior=None)
        if unmasked:  # skip the PartialLabels mixin: nnU-Net's own region loss
            from nnunet_breast.trainers.partial_labels import PartialLabels

            body["_build_loss"] = lambda self: super(PartialLabels, self)._build_loss()
        elif no_negatives or exclusion is not None:  # the partial-label loss without known negatives / reweighted
            body["_build_loss"] = _known_negatives(cls._build_loss, exclusion)
        sub = type(f"{cls.__name__}_{name}", (cls,), body)
        plans = {**t.plans_manager.plans, "continue_training": False}      # nnU-Net's trainer pops this key
        t = sub(plans, configuration, fold, t.dataset_json, torch.device("cpu"))
        if sgd:
            t.initial_lr, t.weight_decay = 1e-2, 3e-5
        if lr:
            t.initial_lr = lr
    if foreground_patches is not None:
        t.oversample_foreground_percent = float(foreground_patches)
    t.num_epochs = max(1, steps // t.num_iterations_per_epoch)
    return name, t


def _known_negatives(build, exclusion_weight: float | None):
    """The loss without known negatives (None) or with its exclusion term weighted ``exclusion_weight``."""
    def _build_loss(self):
        loss = build(self)
        if exclusion_weight is None:
            getattr(loss, "loss", loss).exclusive = None
        else:
            getattr(loss, "loss", loss).exclusion_weight = exclusion_weight
        return loss
    return _build_loss


def validation_cases(t):
    _, val_keys = t.do_split()
    dataset = t.dataset_class(t.preprocessed_dataset_folder, val_keys)
    regions = t.label_manager.foreground_regions
    cases = []
    for key in val_keys:
        data, seg, _, _ = dataset.load_case(key)
        seg = np.asarray(seg)[0]
        ref = np.stack([np.isin(seg, r if isinstance(r, (list, tuple)) else [r]) for r in regions])
        cases.append((key, np.asarray(data, np.float32), ref))
    return cases


def evaluate(t, cases, names, annotated) -> dict[str, float]:
    import torch

    strides = np.prod(np.array(t.configuration_manager.network_arch_init_kwargs["strides"]), 0)
    scores: dict[str, list[float]] = {}
    t.network.eval()
    t.set_deep_supervision_enabled(False)
    with torch.no_grad():
        for key, data, ref in cases:
            shape = np.array(data.shape[1:])
            size = (np.ceil(np.maximum(shape, t.configuration_manager.patch_size) / strides) * strides).astype(int)
            x = torch.zeros((1, data.shape[0], *size))
            x[0, :, : shape[0], : shape[1], : shape[2]] = torch.from_numpy(data)
            out = t.network(x)[0, :, : shape[0], : shape[1], : shape[2]].float().sigmoid().numpy() > 0.5
            for i, n in enumerate(names):
                if n in annotated.get(key, names) and ref[i].any():
                    scores.setdefault(n, []).append(2 * (out[i] & ref[i]).sum() / (out[i].sum() + ref[i].sum()))
            for key_err, (left, right) in SIDE_PAIRS.items():
                if {left, right} <= set(names) and {left, right} <= set(annotated.get(key, names)):
                    il, ir = names.index(left), names.index(right)
                    wrong = (out[il] & ref[ir]).sum() + (out[ir] & ref[il]).sum()
                    scores.setdefault(key_err, []).append(wrong / max(1, out[il].sum() + out[ir].sum()))
    t.network.train()
    t.set_deep_supervision_enabled(True)
    return {k: float(np.mean(v)) for k, v in scores.items()}


def seed_everything(seed: int) -> None:
    """The same weights and batches for every variant run with ``seed``."""
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoints(t, train_loader, steps: int, every: int):
    """``steps`` iterations of the trainer's own ``train_step`` (its LR schedule stepped once per epoch, as
    nnU-Net does); yields ``(step, seconds per step of train_step)`` every ``every`` iterations and at the last
    (an evaluation there puts the network back into training mode)."""
    t.network.train()
    spent = 0.0
    for step in range(1, steps + 1):
        if (step - 1) % t.num_iterations_per_epoch == 0:
            t.lr_scheduler.step((step - 1) // t.num_iterations_per_epoch)
        batch = next(train_loader)
        start = time.perf_counter()
        t.train_step(batch)
        spent += time.perf_counter() - start
        if step % every == 0 or step == steps:
            yield step, round(spent / step, 3)


def curve(dataset: str, configuration: str, fold: int, spec: str, steps: int, every: int, seed: int = 0):
    seed_everything(seed)
    name, t = make_trainer(dataset, configuration, fold, spec, steps)
    t.initialize()
    train_loader, _ = t.get_dataloaders()
    cases = validation_cases(t)
    names = [n for n in t.dataset_json["labels"] if n != "background"]
    annotated = t.dataset_json.get("nnunet_breast", {}).get("annotated", {})
    for step, s_per_step in checkpoints(t, train_loader, steps, every):
        scores = evaluate(t, cases, names, annotated)
        sides = {k: round(scores.pop(k, float("nan")), 3) for k in SIDE_PAIRS}
        yield {"variant": name, "step": step, "s_per_step": s_per_step, **sides,
               "mean_dsc": round(float(np.mean(list(scores.values()))), 3),
               "dsc": {k: round(v, 3) for k, v in scores.items()}}


def curve_arguments(doc: str, configuration: str, steps: int, every: int) -> argparse.ArgumentParser:
    """The options every in-process training curve takes: dataset, configuration, fold, variants, length."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-d", "--dataset", required=True)
    ap.add_argument("-c", "--configuration", default=configuration)
    ap.add_argument("-f", "--fold", type=int, default=0)
    ap.add_argument("--variant", action="append", required=True, metavar="NAME:TRAINER[:key=value,...]")
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--every", type=int, default=every)
    ap.add_argument("--threads", type=int, default=2)
    return ap


def main() -> int:
    ap = curve_arguments(__doc__, "3d_cpu_effnetb0", 300, 100)
    ap.add_argument("--seed", type=int, default=0, help="every variant starts from this seed (weights, batches)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    baseline: dict[int, float] = {}
    for i, spec in enumerate(args.variant):
        for line in curve(args.dataset, args.configuration, args.fold, spec, args.steps, args.every, args.seed):
            if i == 0:
                baseline[line["step"]] = line["s_per_step"]
            line["s_per_step_vs_first"] = round(line["s_per_step"] / baseline.get(line["step"], line["s_per_step"]), 3)
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
