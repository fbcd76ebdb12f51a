"""nnU-Net's own CLI finds and trains a trainer of ours through nnUNet_extTrainer."""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_breast import env
from nnunet_breast.synth.cohort import make_case


def write_tiny_raw_dataset(raw: Path, dataset_id: int = 990, n: int = 5) -> str:
    """Heart + lungs of small phantoms as an nnU-Net raw dataset (the converters do this properly)."""
    name = f"Dataset{dataset_id}_Tiny"
    (raw / name / "imagesTr").mkdir(parents=True)
    (raw / name / "labelsTr").mkdir()
    for i in range(n):
        case = make_case("breast", i, seed=1)
        label = np.zeros(case.hu.shape, np.uint8)
        label[case.masks["Heart"]] = 1
        label[case.masks["Lung_L"] | case.masks["Lung_R"]] = 2
        for arr, sub, suffix in ((case.hu[:, ::2, ::2], "imagesTr", "_0000"), (label[:, ::2, ::2], "labelsTr", "")):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing((case.grid.spacing[0] * 2, case.grid.spacing[1] * 2, case.grid.spacing[2]))
            img.SetOrigin(case.grid.origin)
            sitk.WriteImage(img, str(raw / name / sub / f"tiny_{i:03d}{suffix}.nii.gz"))
    (raw / name / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "Heart": 1, "Lungs": 2},
        "numTraining": n, "file_ending": ".nii.gz"}))
    return name


def test_ext_folder_only_reexports_installed_classes():
    folder = env.ext_trainer_folder()
    modules = list(folder.glob("*.py"))
    assert modules and not (folder / "__init__.py").exists()
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    os.environ["nnUNet_extTrainer"] = env.extended_ext_trainer("")
    cls = recursive_find_trainer_class_by_name("nnUNetTrainerTiny_2epochs")
    again = recursive_find_trainer_class_by_name("nnUNetTrainerTiny_2epochs")
    assert cls is again, "the class must not be re-created on every lookup"
    assert cls.__module__.startswith("nnunet_breast.trainers")
    assert pickle.loads(pickle.dumps(cls)) is cls      # what nnU-Net's spawn pools need


def test_extended_ext_trainer_keeps_other_folders_once():
    ours = str(env.ext_trainer_folder())
    assert env.extended_ext_trainer("") == ours
    both = env.extended_ext_trainer(f"/other{os.pathsep}{ours}")
    assert both.split(os.pathsep) == ["/other", ours]


def test_env_command(run_cli, nnunet_dirs, tmp_path):
    r = run_cli(["nnunet-breast", "env", "--shell"])
    assert r.returncode == 0 and r.stdout.strip() == f"export nnUNet_extTrainer={env.ext_trainer_folder()}"
    r = run_cli(["nnunet-breast", "env", "--strict"])
    assert r.returncode == 0 and "nnUNet_results" in r.stdout
    bad = dict(os.environ, nnUNet_results=str(tmp_path / "missing"))
    r = run_cli(["nnunet-breast", "env", "--strict"], env=bad)
    assert r.returncode == 1 and "folder does not exist" in r.stdout


def test_stock_nnunet_train_runs_our_trainer(run_cli, nnunet_dirs):
    name = write_tiny_raw_dataset(Path(nnunet_dirs["nnUNet_raw"]))
    r = run_cli(["nnUNetv2_plan_and_preprocess", "-d", "990", "-c", "3d_fullres", "-np", "1",
                 "--verify_dataset_integrity"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    child = env.child_environ()            # what `eval "$(nnunet-breast env --shell)"` gives a user
    r = run_cli(["nnUNetv2_train", "990", "3d_fullres", "0", "-tr", "nnUNetTrainerTiny_2epochs", "-device", "cpu"],
                env=child)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = Path(nnunet_dirs["nnUNet_results"]) / name / "nnUNetTrainerTiny_2epochs__nnUNetPlans__3d_fullres" / "fold_0"
    assert (out / "checkpoint_final.pth").is_file()
    summary = json.loads((out / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"}
    # without the variable, stock nnU-Net cannot find it: the discovery really went through nnUNet_extTrainer
    plain = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    r = run_cli(["nnUNetv2_train", "990", "3d_fullres", "1", "-tr", "nnUNetTrainerTiny_2epochs", "-device", "cpu"],
                env=plain)
    assert r.returncode != 0 and "Could not find requested nnunet trainer" in (r.stdout + r.stderr)
