"""The breast model learns: a short real nnU-Net training on the CPU configuration, scored on held-out cases.

Six synthetic patients exported as clinics do (treated side only, some structures missing), three folds; fold 0
trains on four with the demo's recipe on 600 iterations (``nnUNetTrainerEffNetB0LearningCPU``: AdamW, 12 x 50) on
``3d_cpu_effnetb0`` (``plan --cpu``: 16 x 64 x 64 voxels per patch), and nnU-Net's own
validation predicts the other two. Heart and both lungs must reach DSC 0.8 there: a flipped left-right axis, a
broken loss, a recipe or a network that stops learning turns this red. Not timed.
"""
import csv
import json

import numpy as np
import pytest

TRAINER = "nnUNetTrainerEffNetB0LearningCPU"
CONFIG = "3d_cpu_effnetb0"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, nnunet_sandbox_factory):
    from nnunet_breast.synth.cohort import write_cohort

    root = tmp_path_factory.mktemp("learning")
    (root / "nnunet").mkdir()
    dirs, run, _ = nnunet_sandbox_factory(root / "nnunet")
    write_cohort("breast", 6, root / "export", seed=11, labels="clinical", progress=False)
    run("nnunet-breast", "convert", "breast", "--input", root / "export", "--dataset-id", "601", "-np", "1")
    run("nnunet-breast", "splits", "-d", "601", "--stratify", "side", "--folds", "3")
    run("nnUNetv2_plan_and_preprocess", "-d", "601", "--no_pp", "-np", "1")
    run("nnunet-breast", "plan", "-d", "601", "--no-paper", "--cpu")
    run("nnUNetv2_preprocess", "-d", "601", "-c", CONFIG, "-np", "1")
    run("nnUNetv2_train", "601", CONFIG, "0", "-tr", TRAINER, "--npz", "-device", "cpu")
    fold = dirs["nnUNet_results"] / "Dataset601_BreastRT" / f"{TRAINER}__nnUNetPlans__{CONFIG}" / "fold_0"
    run("nnunet-breast", "evaluate", "--ref", dirs["nnUNet_raw"] / "Dataset601_BreastRT" / "labelsTr",
        "--pred", fold / "validation", "-d", "601", "-o", root / "eval", "-np", "1")
    with open(root / "eval" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    plans = json.loads((dirs["nnUNet_preprocessed"] / "Dataset601_BreastRT" / "nnUNetPlans.json").read_text())
    return {"rows": rows, "fold": fold, "config": plans["configurations"][CONFIG], "plans": plans}


def test_cpu_configuration_is_planned_from_the_data(trained):
    config = trained["config"]
    assert np.prod(config["patch_size"]) <= 2 * 65536 and config["batch_size"] == 2
    assert config["architecture"]["arch_kwargs"]["stem_features"] >= 16       # the heads' features (see plans.py)
    assert config["spacing"][1] > 1.5           # coarser than the phantoms' 0.9 - 1.37 mm pixels


def test_vanilla_cpu_configuration_is_nnunets_own_network_on_the_same_data(trained):
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(trained["plans"])
    ours, vanilla = plans.get_configuration(CONFIG), plans.get_configuration("3d_cpu")
    assert vanilla.network_arch_class_name.endswith(".PlainConvUNet")
    assert (vanilla.data_identifier, vanilla.spacing, vanilla.patch_size, vanilla.batch_size) == \
        (ours.data_identifier, ours.spacing, ours.patch_size, ours.batch_size)
    net = nnUNetTrainer.build_network_architecture(plans, vanilla, 1, 20, enable_deep_supervision=False)
    with torch.no_grad():
        assert tuple(net(torch.zeros((1, 1, *vanilla.patch_size))).shape) == (1, 20, *vanilla.patch_size)


def test_heart_and_lungs_are_learnt_on_held_out_cases(trained):
    dsc = {}
    for r in trained["rows"]:
        if r["structure"] in ("Heart", "Lung_L", "Lung_R"):
            dsc.setdefault(r["structure"], []).append(float(r["dsc"]))
    assert set(dsc) == {"Heart", "Lung_L", "Lung_R"} and all(len(v) == 2 for v in dsc.values())
    means = {k: float(np.mean(v)) for k, v in dsc.items()}
    assert all(m >= 0.8 for m in means.values()), means


def test_training_ran_in_bf16_where_the_cpu_has_it(trained):
    from nnunet_breast.trainers.cpu import cpu_bf16_supported

    log = "".join(p.read_text() for p in trained["fold"].glob("training_log_*.txt"))
    assert ("CPU training in bf16 autocast" if cpu_bf16_supported() else "CPU training in fp32") in log
