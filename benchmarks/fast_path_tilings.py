"""The fast path's tilings against nnU-Net's whole grid, as the scanner's field of view widens.

A trained breast model's held-out cases (the validation cases of ``-f``'s fold in ``splits_final.json``) are
padded left and right with ``--pads`` columns of air (-1000 HU, the same spacing: a wider reconstruction field of
view) and predicted in this process, in fp32 (``nnUNet_breast_cpu_bf16=0``: the tiling alone differs), by

* ``nnunet``: nnU-Net's predictor unchanged (``--fast-path off``): its tiles are anchored at the image's corner;
* ``box``: the fast path's default, the body's box tiled afresh (anchored on the body);
* ``grid``: the fast path's nnU-Net tiles that meet the body's box.

Per tiling, over the structures a case contoured and nnU-Net scored above 0.3 at the narrowest field of view:
DSC against the reference inside the body (mean, and the largest spread over the fields of view of one
structure), agreement (DSC) with the same tiling at the narrowest field of view and with nnU-Net at the same field
of view (mean, lowest), and patches run (ratio to nnU-Net's, same run). Markdown and one JSON line.

    python benchmarks/fast_path_tilings.py --nnunet DEMO/nnunet -d 701 -tr nnUNetTrainerEffNetB0DemoCPU \\
        -c 3d_cpu_effnetb0
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from steps import dsc, use_nnunet_folders

TILINGS = {"nnunet": "off", "box": "box", "grid": "grid"}


def counting(predictor):
    """``predictor`` with ``.patches``: how many patches its network ran (one call per patch, no mirroring)."""
    predictor.patches, run_patch = 0, predictor._internal_maybe_mirror_and_predict

    def counted(x):
        predictor.patches += 1
        return run_patch(x)
    predictor._internal_maybe_mirror_and_predict = counted
    return predictor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nnunet", type=Path, required=True, help="folder holding nnUNet_raw / _preprocessed / _results")
    ap.add_argument("-d", "--dataset-id", type=int, required=True)
    ap.add_argument("-tr", "--trainer", required=True)
    ap.add_argument("-c", "--configuration", required=True)
    ap.add_argument("-f", "--fold", type=int, default=0)
    ap.add_argument("--pads", type=int, nargs="+", default=[30, 61, 125, 250],
                    help="columns of air each side (30 61 125 250; with 0 a small phantom's box, widened to a patch, "
                         "may reach the image's edge)")
    args = ap.parse_args()
    use_nnunet_folders(args.nnunet)
    os.environ["nnUNet_breast_cpu_bf16"] = "0"

    import SimpleITK as sitk
    import torch

    from nnunet_breast.env import dataset_dir
    from nnunet_breast.inference.predictor import ModelRef, make_predictor
    from nnunet_breast.structures.regions import OverlapEncoding
    from nnunet_breast.volumes.body import body_mask

    raw = dataset_dir("nnUNet_raw", args.dataset_id)
    pre = dataset_dir("nnUNet_preprocessed", args.dataset_id)
    encoding = OverlapEncoding.from_json(json.loads((raw / "dataset.json").read_text())["nnunet_breast"]["encoding"])
    cases = json.loads((pre / "splits_final.json").read_text())[args.fold]["val"]
    ref_model = ModelRef(args.dataset_id, args.trainer, args.configuration, folds=(args.fold,))
    predictors = {name: counting(make_predictor(ref_model, "cpu", use_mirroring=False, fast_path=mode))
                  for name, mode in TILINGS.items()}

    scores = {n: [] for n in TILINGS}       # (case, structure, pad, dsc vs ref, vs narrowest, vs nnunet)
    for case in cases:
        image = sitk.ReadImage(str(raw / "imagesTr" / f"{case}_0000.nii.gz"))
        hu = sitk.GetArrayFromImage(image).astype(np.float32)
        ref = encoding.decode(sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{case}.nii.gz"))))
        body = body_mask(hu, image.GetSpacing())
        masks = {}
        for pad in args.pads:
            wide = np.pad(hu, ((0, 0), (0, 0), (pad, pad)), constant_values=-1000)[None]
            for name, p in predictors.items():
                p._box_for = None
                _, prob = p.predict_single_npy_array(wide, {"spacing": list(image.GetSpacing())[::-1]}, None, None,
                                                     True)
                masks[name, pad] = prob[:, :, :, pad:pad + hu.shape[2]] >= 0.5
        first = args.pads[0]
        for i, s in enumerate(encoding.structures):
            if not ref[s].any() or dsc(masks["nnunet", first][i][body], ref[s][body]) <= 0.3:
                continue
            for name in TILINGS:
                for pad in args.pads:
                    m = masks[name, pad][i][body]
                    scores[name].append((case, s, pad, dsc(m, ref[s][body]), dsc(m, masks[name, first][i][body]),
                                         dsc(m, masks["nnunet", pad][i][body])))
        print(f"{case}: done", flush=True)

    result = {"benchmark": "fast_path_tilings", "model": ref_model.describe(), "cases": cases, "pads": args.pads,
              "threads": torch.get_num_threads(), "precision": "fp32", "tilings": {}}
    base_patches = predictors["nnunet"].patches
    for name, rows in scores.items():
        by_structure = {}
        for case, s, pad, d, _, _ in rows:
            by_structure.setdefault((case, s), []).append(d)
        worst = max(by_structure.items(), key=lambda kv: max(kv[1]) - min(kv[1]))
        wider = [r for r in rows if r[2] != args.pads[0]]
        result["tilings"][name] = {
            "mean_dsc": round(float(np.mean([r[3] for r in rows])), 4),
            "largest_spread_over_fov": round(max(worst[1]) - min(worst[1]), 4),
            "largest_spread_at": f"{worst[0][0]} {worst[0][1]}",
            "mean_agreement_with_narrowest_fov": round(float(np.mean([r[4] for r in wider])), 4),
            "lowest_agreement_with_narrowest_fov": round(min(r[4] for r in wider), 4),
            "lowest_agreement_with_nnunet": round(min(r[5] for r in rows), 4),
            "mean_agreement_with_nnunet": round(float(np.mean([r[5] for r in rows])), 4),
            "patches": predictors[name].patches, "patches_vs_nnunet": round(predictors[name].patches / base_patches, 3)}
    result["structures_scored"] = len(scores["nnunet"]) // len(args.pads)
    print(markdown(result))
    print(json.dumps(result), flush=True)
    return 0


def markdown(result: dict) -> str:
    cols = ("mean_dsc", "largest_spread_over_fov", "mean_agreement_with_narrowest_fov",
            "lowest_agreement_with_narrowest_fov",
            "mean_agreement_with_nnunet", "lowest_agreement_with_nnunet", "patches", "patches_vs_nnunet")
    lines = [f"| tiling | {' | '.join(c.replace('_', ' ') for c in cols)} | largest spread at |",
             "|---" * (len(cols) + 2) + "|"]
    for name, t in result["tilings"].items():
        lines.append(f"| {name} | " + " | ".join(str(t[c]) for c in cols) + f" | {t['largest_spread_at']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
