"""The converted dataset through stock nnU-Net: integrity check, planning, and training on our splits.

The conversion, the stratified splits and stock planning with ``--verify_dataset_integrity`` run once per session
in the ``breast501`` fixture (conftest.py), which test_effnet_nnunet.py trains on too."""
import json


def test_converted_breast_dataset_plans_and_trains_on_stratified_splits(breast501):
    splits, pre = breast501["splits"], breast501["preprocessed"]
    raw = breast501["dirs"]["nnUNet_raw"] / "Dataset501_BreastRT"
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (raw / "imagesTr").glob("*_0000.nii.gz"))
    assert len(cases) == 6                                    # every exported case converted
    assert len(splits) == 3 and sorted(sum((s["val"] for s in splits), [])) == cases
    assert all(sorted(s["train"] + s["val"]) == cases for s in splits)
    # stock planning ran after the splits (integrity verified, or the fixture would have failed) and kept them
    assert (pre / "nnUNetPlans_3d_fullres").is_dir()
    assert json.loads((pre / "splits_final.json").read_text()) == splits, "planning must keep our splits"
    breast501["run"]("nnUNetv2_train", "501", "3d_fullres", "0", "-tr", "nnUNetTrainerTiny_2epochs", "-device", "cpu")
    fold = breast501["dirs"]["nnUNet_results"] / "Dataset501_BreastRT" / \
        "nnUNetTrainerTiny_2epochs__nnUNetPlans__3d_fullres" / "fold_0"
    validated = sorted(p.name[: -len(".nii.gz")] for p in (fold / "validation").glob("*.nii.gz"))
    assert validated == sorted(splits[0]["val"])
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert len(summary["mean"]) == 20          # one entry per structure region
