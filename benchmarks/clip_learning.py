"""How soon a short clip training starts finding clips: clips found, missed and false every few iterations.

    python benchmarks/clip_learning.py -d 702 -c 3d_clip_fullres --steps 200 --every 50 --seeds 0 1 \\
        --variant shipped:nnUNetTrainerClipSingleStageDemoCPU \\
        --variant nnunet_sampling:nnUNetTrainerClipSingleStageDemoCPU:foreground_patches=0.33,lr=1e-3

On a preprocessed clip dataset (the demo's is ``DIR/nnunet/nnUNet_preprocessed/Dataset702_BreastClips`` after
``nnunet-breast demo --out DIR``), each ``--variant NAME:TRAINER[:key=value,...]`` (``foreground_patches=``: the
share of patches centred on a clip, ``lr=``: Adam's rate) trains fold ``-f`` in this process for ``--steps``
iterations per seed, with nnU-Net's data loader and augmentation (``nnUNet_n_proc_DA=0``), the trainer's own
``train_step`` (bf16 on CPUs that have it) and LR schedule. Every ``--every`` iterations nnU-Net's sliding window
predicts every case of the dataset (argmax) and the clips are matched as the clip benchmark does
(``evaluation.clip_scores``): validation cases and training cases are summed apart. When the first clips appear
varies from seed to seed: the table gives, per variant, the first checkpoint at which the validation cases' clips
were >= 80 % found, for each seed. One JSON line per checkpoint, then a Markdown table and one JSON summary line.
"""
from __future__ import annotations

import json
import os

import numpy as np
from learning_curve import checkpoints, curve_arguments, make_trainer, seed_everything

os.environ["nnUNet_n_proc_DA"] = "0"


#: the learning_curve.make_trainer overrides that mean something for a clip trainer
CLIP_OVERRIDES = ("foreground_patches", "lr")


def make_clip_trainer(dataset: str, configuration: str, fold: int, spec: str, steps: int):
    """:func:`learning_curve.make_trainer`, refusing overrides a clip trainer would silently ignore."""
    _, _, *rest = spec.split(":")
    keys = {kv.split("=")[0] for kv in rest[0].split(",")} if rest and rest[0] else set()
    if keys - set(CLIP_OVERRIDES):
        raise SystemExit(f"unknown override(s) {sorted(keys - set(CLIP_OVERRIDES))} in {spec!r}; "
                         f"choose from {', '.join(CLIP_OVERRIDES)}")
    return make_trainer(dataset, configuration, fold, spec, steps)


def clip_counts(t, predictor, cases, val_keys) -> dict[str, list[int]]:
    """Found, missed and false clips summed over the validation cases (``val``) and the training cases."""
    import torch

    from nnunet_breast.evaluation.clip_scores import score_clip_mask

    counts = {"val": [0, 0, 0], "train": [0, 0, 0]}
    t.network.eval()
    t.set_deep_supervision_enabled(False)
    with torch.no_grad():
        for key, (data, seg) in cases.items():
            logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(data))
            score = score_clip_mask(key, seg, logits.argmax(0).numpy() > 0, t.configuration_manager.spacing)
            c = counts["val" if key in val_keys else "train"]
            for i, n in enumerate((score.clips_found, score.clips_missed, score.clips_false)):
                c[i] += n
    t.network.train()
    t.set_deep_supervision_enabled(True)
    return counts


def curve(dataset: str, configuration: str, fold: int, spec: str, steps: int, every: int, seed: int):
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    seed_everything(seed)
    name, t = make_clip_trainer(dataset, configuration, fold, spec, steps)
    t.initialize()
    train_loader, _ = t.get_dataloaders()
    _, val_keys = t.do_split()
    dataset_ = t.dataset_class(t.preprocessed_dataset_folder, None)
    cases = {}
    for key in dataset_.identifiers:
        data, seg, _, _ = dataset_.load_case(key)
        cases[key] = (np.asarray(data, np.float32), np.asarray(seg)[0] > 0)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_mirroring=False, device=torch.device("cpu"),
                                perform_everything_on_device=False, allow_tqdm=False)
    predictor.manual_initialization(t.network, t.plans_manager, t.configuration_manager, None, t.dataset_json,
                                    type(t).__name__, None)
    for step, s_per_step in checkpoints(t, train_loader, steps, every):
        counts = clip_counts(t, predictor, cases, set(val_keys))
        yield {"variant": name, "seed": seed, "step": step, "s_per_step": s_per_step,
               **{f"{part}_{k}": v for part, c in counts.items() for k, v in zip(("found", "missed", "false"), c)}}


def first_detection(lines: list[dict], share: float = 0.8) -> int | None:
    """The first checkpoint whose validation clips are >= ``share`` found; None when none is."""
    for line in lines:
        total = line["val_found"] + line["val_missed"]
        if total and line["val_found"] >= share * total:
            return line["step"]
    return None


def main() -> int:
    ap = curve_arguments(__doc__, "3d_clip_fullres", 200, 50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    first: dict[str, list] = {}
    seconds: dict[str, list[float]] = {}
    for spec in args.variant:
        for seed in args.seeds:
            lines = []
            for line in curve(args.dataset, args.configuration, args.fold, spec, args.steps, args.every, seed):
                print(json.dumps(line), flush=True)
                lines.append(line)
            first.setdefault(lines[0]["variant"], []).append(first_detection(lines))
            seconds.setdefault(lines[0]["variant"], []).append(lines[-1]["s_per_step"])
    base = float(np.mean(next(iter(seconds.values()))))
    print(f"\n| variant | first checkpoint with >= 80 % of the validation clips found, per seed {args.seeds} "
          f"| s per step | vs {next(iter(seconds))} |\n|---|---|---|---|")
    summary = {}
    for name, steps in first.items():
        s = float(np.mean(seconds[name]))
        cells = ", ".join(str(v) if v is not None else f"> {args.steps}" for v in steps)
        print(f"| {name} | {cells} | {s:.3f} | {s / base:.2f}x |")
        summary[name] = {"first_detection": steps, "s_per_step": round(s, 3), "s_per_step_vs_first": round(s / base, 3)}
    print(json.dumps({"benchmark": "clip_learning", "dataset": args.dataset, "steps": args.steps, **summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
