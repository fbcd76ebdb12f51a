"""The converted dataset through stock nnU-Net: integrity check, planning, and training on our splits."""
import json
from pathlib import Path

from nnunet_breast import env


def test_converted_breast_dataset_plans_and_trains_on_stratified_splits(breast_export, run_cli, nnunet_dirs):
    r = run_cli(["nnunet-breast", "convert", "breast", "--input", breast_export, "--dataset-id", "501", "-np", "1"])
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli(["nnunet-breast", "splits", "-d", "501", "--stratify", "contrast,site", "--folds", "3"])
    assert r.returncode == 0, r.stderr
    pre = Path(nnunet_dirs["nnUNet_preprocessed"]) / "Dataset501_BreastRT"
    splits = json.loads((pre / "splits_final.json").read_text())
    assert len(splits) == 3 and sorted(sum((s["val"] for s in splits), [])) == sorted(splits[0]["train"] + splits[0]["val"])

    r = run_cli(["nnUNetv2_plan_and_preprocess", "-d", "501", "-c", "3d_fullres", "-np", "1",
                 "--verify_dataset_integrity"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert json.loads((pre / "splits_final.json").read_text()) == splits, "planning must keep our splits"
    r = run_cli(["nnUNetv2_train", "501", "3d_fullres", "0", "-tr", "nnUNetTrainerTiny_2epochs", "-device", "cpu"],
                env=env.child_environ())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    fold = Path(nnunet_dirs["nnUNet_results"]) / "Dataset501_BreastRT" / \
        "nnUNetTrainerTiny_2epochs__nnUNetPlans__3d_fullres" / "fold_0"
    validated = sorted(p.name[: -len(".nii.gz")] for p in (fold / "validation").glob("*.nii.gz"))
    assert validated == sorted(splits[0]["val"])
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert len(summary["mean"]) == 20          # one entry per structure region
