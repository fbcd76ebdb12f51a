"""What a configuration's spacing alone allows: the DSC of a perfect network, per structure.

Each reference label map of a converted dataset (``-d``, every structure contoured: ``synth --labels full``) goes
the way a prediction goes in nnU-Net: resampled to a configuration's spacing with the plans' segmentation
resampling (what preprocessing gives the network as its target), each structure's region of that map taken as
the network's output (probability 1 inside, 0 outside), resampled back with the plans' probability resampling
(nnU-Net's export) and thresholded at 0.5. Its DSC with the reference is the ceiling no training at that spacing
can pass. Baseline: ``3d_fullres`` (the data's own spacing), in the same run; ratios = mean ceiling / the
baseline's. Markdown and one JSON line.

    python benchmarks/spacing_ceiling.py --nnunet DEMO/nnunet -d 705 --plans-dataset 701 \\
        -c 3d_fullres 3d_cpu_effnetb0
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from steps import dsc, use_nnunet_folders


def round_trip(label_map: np.ndarray, spacing, encoding, configuration) -> dict[str, np.ndarray]:
    """The structures of ``label_map`` (numpy z, y, x at ``spacing``) after nnU-Net's resampling to
    ``configuration``'s spacing (as a target) and back (as a perfect network's probabilities)."""
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

    target = configuration.spacing
    coarse_shape = compute_new_shape(label_map.shape, spacing, target)
    coarse = configuration.resampling_fn_seg(label_map[None].astype(np.int16), coarse_shape, spacing, target)[0]
    masks = encoding.decode(coarse)
    probs = np.stack([masks[s].astype(np.float32) for s in encoding.structures])
    back = configuration.resampling_fn_probabilities(probs, label_map.shape, target, spacing)
    return {s: np.asarray(back[i]) > 0.5 for i, s in enumerate(encoding.structures)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nnunet", type=Path, required=True, help="folder holding nnUNet_raw / _preprocessed")
    ap.add_argument("-d", "--dataset-id", type=int, required=True, help="converted dataset, every structure contoured")
    ap.add_argument("--plans-dataset", type=int, required=True, help="dataset whose nnUNetPlans.json holds -c")
    ap.add_argument("-c", "--configurations", nargs="+", default=["3d_fullres", "3d_cpu_effnetb0"],
                    help="the first is the baseline (default: 3d_fullres 3d_cpu_effnetb0)")
    args = ap.parse_args()
    use_nnunet_folders(args.nnunet)

    import SimpleITK as sitk
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_breast.env import dataset_dir
    from nnunet_breast.structures.regions import OverlapEncoding

    raw = dataset_dir("nnUNet_raw", args.dataset_id)
    encoding = OverlapEncoding.from_json(json.loads((raw / "dataset.json").read_text())["nnunet_breast"]["encoding"])
    plans = PlansManager(str(dataset_dir("nnUNet_preprocessed", args.plans_dataset) / "nnUNetPlans.json"))
    fwd, configs = plans.transpose_forward, {c: plans.get_configuration(c) for c in args.configurations}
    cases = sorted((raw / "labelsTr").glob("*.nii.gz"))
    if not cases:
        raise SystemExit(f"no reference label maps in {raw / 'labelsTr'}")
    scores = {c: {s: [] for s in encoding.structures} for c in configs}
    for f in cases:
        img = sitk.ReadImage(str(f))
        label_map = sitk.GetArrayFromImage(img).transpose(fwd)
        spacing = [list(img.GetSpacing())[::-1][i] for i in fwd]
        truth = encoding.decode(label_map)
        for c, cm in configs.items():
            got = round_trip(label_map, spacing, encoding, cm)
            for s in encoding.structures:
                if truth[s].any():
                    scores[c][s].append(dsc(got[s], truth[s]))
    per = {c: {s: round(float(np.mean(v)), 3) for s, v in by.items() if v} for c, by in scores.items()}
    means = {c: round(float(np.mean(list(v.values()))), 3) for c, v in per.items()}
    base = args.configurations[0]
    print(f"Ceiling DSC of a perfect network at each configuration's spacing ({len(cases)} cases of dataset "
          f"{args.dataset_id}; spacing z, y, x in mm)\n")
    print("| structure | " + " | ".join(f"{c} ({' x '.join(f'{v:.2f}' for v in cm.spacing)})"
                                        for c, cm in configs.items()) + " |")
    print("|---|" + "---|" * len(configs))
    for s in encoding.structures:
        print(f"| {s} | " + " | ".join(f"{per[c].get(s, float('nan')):.3f}" for c in configs) + " |")
    print("| mean | " + " | ".join(f"**{means[c]:.3f}**" for c in configs) + " |")
    ratios = {c: round(means[c] / means[base], 3) for c in configs}
    print(f"\nratio of the mean ceiling to {base}'s: " + ", ".join(f"{c} {r}" for c, r in ratios.items()))
    print(json.dumps({"benchmark": "spacing_ceiling", "dataset": args.dataset_id, "cases": len(cases),
                      "baseline": base, "mean": means, "ratio_to_baseline": ratios, "per_structure": per}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
