"""nnU-Net's own CLI finds and trains a trainer of ours through nnUNet_extTrainer."""
import os
import pickle

from nnunet_breast import env


def test_ext_folder_only_reexports_installed_classes(monkeypatch):
    folder = env.ext_trainer_folder()
    modules = list(folder.glob("*.py"))
    assert modules and not (folder / "__init__.py").exists()
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    monkeypatch.setenv("nnUNet_extTrainer", env.extended_ext_trainer(""))
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


def test_stock_cli_needs_nnunet_exttrainer(run_cli, nnunet_dirs):
    """Without the variable stock nnU-Net cannot find our trainer: discovery really goes through it.

    The positive case, stock `nnUNetv2_train ... -tr nnUNetTrainerTiny_2epochs` training a fold through
    nnUNet_extTrainer, runs in tests/test_convert_nnunet.py on a converted dataset.
    """
    plain = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    r = run_cli(["nnUNetv2_train", "990", "3d_fullres", "0", "-tr", "nnUNetTrainerTiny_2epochs", "-device", "cpu"],
                env=plain)
    assert r.returncode != 0 and "Could not find requested nnunet trainer" in (r.stdout + r.stderr)
