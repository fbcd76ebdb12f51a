"""Shared fixtures: small synthetic cohorts written once per test session, and nnU-Net folders."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_breast.synth.cohort import write_cohort


@pytest.fixture(scope="session")
def breast_export(tmp_path_factory) -> Path:
    """5 breast cases contoured in full (all 20 structures, both sides): tests rely on both sides."""
    out = tmp_path_factory.mktemp("breast_export")
    write_cohort("breast", 5, out, seed=0, size="small", progress=False, labels="full")
    return out


@pytest.fixture(scope="session")
def breast_clinical_export(tmp_path_factory) -> Path:
    """6 breast cases as a clinic exports them (labels="clinical"): the same CTs as ``breast_export``'s first 5;
    seed 0 gives both sides, all three nodal indications and a case without thyroid, one without esophagus."""
    out = tmp_path_factory.mktemp("breast_clinical_export")
    write_cohort("breast", 6, out, seed=0, size="small", progress=False, labels="clinical")
    return out


@pytest.fixture(scope="session")
def clips_export(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clips_export")
    write_cohort("clips", 3, out, seed=0, size="small", progress=False)
    return out


@pytest.fixture(scope="session")
def breast_dataset(breast_export, tmp_path_factory):
    """The synthetic breast export converted once (report of nnunet_breast.dataset_conversion.convert)."""
    from nnunet_breast.dataset_conversion.dataset import ConvertOptions, convert

    raw = tmp_path_factory.mktemp("raw")
    return convert(ConvertOptions("breast", breast_export, 501, "Test", raw), progress=False)


@pytest.fixture(scope="session")
def breast501(breast_clinical_export, tmp_path_factory):
    """Dataset 501 converted from the clinical export, split, checked, planned and preprocessed once per session,
    in nnU-Net folders of its own, for the two files that train on it (test_convert_nnunet.py: stock 3d_fullres
    on our splits; test_effnet_nnunet.py: our configurations).

    ``nnunet-breast splits`` writes three stratified folds before planning (``splits``: as written), then stock
    ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity`` and ``nnunet-breast plan``. ``run(*cmd)`` runs a
    console script in that environment and asserts it succeeded.
    """
    import json

    dirs, run, environ = nnunet_sandbox(tmp_path_factory.mktemp("nnunet501"))

    run("nnunet-breast", "convert", "breast", "--input", breast_clinical_export, "--dataset-id", "501", "-np", "1")
    run("nnunet-breast", "splits", "-d", "501", "--stratify", "contrast,site", "--folds", "3")
    pre = dirs["nnUNet_preprocessed"] / "Dataset501_BreastRT"
    splits = json.loads((pre / "splits_final.json").read_text())
    run("nnUNetv2_plan_and_preprocess", "-d", "501", "-c", "3d_fullres", "-np", "1", "--verify_dataset_integrity")
    run("nnunet-breast", "plan", "-d", "501", "--gpu-memory-gb", "8")
    return {"dirs": dirs, "run": run, "environ": environ, "splits": splits, "preprocessed": pre}


@pytest.fixture
def nnunet_dirs(tmp_path, monkeypatch) -> dict[str, str]:
    """Fresh nnUNet_raw/preprocessed/results folders, exported for this test and its subprocesses."""
    dirs = {}
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        p = tmp_path / var
        p.mkdir()
        monkeypatch.setenv(var, str(p))
        dirs[var] = str(p)
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")   # 0 breaks the experiment planner (torch.set_num_threads(0))
    monkeypatch.setenv("nnUNet_compile", "false")
    return dirs


def console_script(name: str) -> str:
    """A console script of this environment (nnunet-breast, nnUNetv2_train, ...), venv activated or not."""
    sibling = Path(sys.executable).parent / name
    found = str(sibling) if sibling.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"console script {name} is not installed next to {sys.executable}")
    return found


def nnunet_sandbox(root: Path):
    """(nnU-Net's three folders under ``root``, ``run(*cmd, ok=True)``, the environment): ``run`` starts a console
    script of this environment in those folders (single process, no compile, our trainers found) and asserts it
    succeeded unless ``ok=False``."""
    import os

    from nnunet_breast import env

    dirs = {v: root / v for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for p in dirs.values():
        p.mkdir()
    environ = env.child_environ(**dict(os.environ, **{k: str(v) for k, v in dirs.items()}, nnUNet_def_n_proc="1",
                                       nnUNet_n_proc_DA="1", nnUNet_compile="false"))

    def run(*cmd, ok=True):
        r = subprocess.run([console_script(cmd[0]), *map(str, cmd[1:])], capture_output=True, text=True,
                           env=environ)
        if ok:
            assert r.returncode == 0, (cmd, r.stdout[-3000:], r.stderr[-3000:])
        return r
    return dirs, run, environ


@pytest.fixture(scope="session")
def breast_patient(tmp_path_factory):
    """One synthetic breast patient as a TPS exports it, its CT read back and the phantom's masks (a fresh dict per
    use: callers add masks to it)."""
    from nnunet_breast.dicom.ct_reader import read_ct_series
    from nnunet_breast.synth.cohort import make_case

    root = tmp_path_factory.mktemp("breast_patient")
    (patient,) = write_cohort("breast", 1, root, seed=0, size="small", progress=False)
    ct = read_ct_series(sorted(patient.glob("CT.*.dcm")))
    masks = make_case("breast", 0, seed=0, size="small").masks
    return lambda: (patient, ct, dict(masks))


@pytest.fixture(scope="session")
def console_scripts():
    """:func:`console_script` for test modules: console_scripts("nnunet-breast") -> its path."""
    return console_script


@pytest.fixture(scope="session")
def nnunet_sandbox_factory():
    """:func:`nnunet_sandbox` for test modules (importlib mode cannot import conftest)."""
    return nnunet_sandbox


@pytest.fixture(scope="session")
def run_cli():
    """run_cli(["nnunet-breast", "synth", ...], env=None) -> CompletedProcess, output captured as text."""
    def run(cmd: list[str], env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([console_script(cmd[0]), *map(str, cmd[1:])], capture_output=True, text=True,
                              env=env, timeout=timeout)
    return run


@pytest.fixture(scope="session")
def stock_builds():
    """stock_builds(preprocessed dataset folder) -> names of our configurations that stock nnU-Net built."""
    return assert_stock_nnunet_builds_our_configurations


def assert_stock_nnunet_builds_our_configurations(preprocessed_dataset: Path) -> list[str]:
    """Every configuration of ours in the dataset's plans files is built by stock nnU-Net from the plans alone
    (``nnUNetTrainer.build_network_architecture``) and runs a forward pass on a patch; returns the names."""
    import json

    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = json.loads((preprocessed_dataset / "dataset.json").read_text())
    built = []
    for plans_file in sorted(preprocessed_dataset.glob("nnUNetPlans*.json")):
        plans = PlansManager(json.loads(plans_file.read_text()))
        for name in plans.available_configurations:
            cm = plans.get_configuration(name)
            if not cm.network_arch_class_name.startswith("nnunet_breast."):
                continue
            n_in = determine_num_input_channels(plans, cm, dataset_json)
            n_out = plans.get_label_manager(dataset_json).num_segmentation_heads
            net = nnUNetTrainer.build_network_architecture(plans, cm, n_in, n_out, enable_deep_supervision=True)
            assert type(net).__module__ + "." + type(net).__name__ == cm.network_arch_class_name, name
            net.eval()
            with torch.no_grad():
                out = net(torch.zeros((1, n_in, *cm.patch_size)))
            assert tuple(out[0].shape) == (1, n_out, *cm.patch_size), name
            assert torch.isfinite(out[0]).all(), name
            export = cm.resampling_fn_probabilities          # nnU-Net resolves our export resampling by name
            assert getattr(export, "func", export).__name__ == "resample_torch_fornnunet", name
            built.append(name)
    return built


@pytest.fixture(scope="session")
def rtstruct_matches_masks():
    """rtstruct_matches_masks(predict case folder) -> {ROI: number of contours}; see below."""
    return assert_rtstruct_matches_masks


def assert_rtstruct_matches_masks(case_folder: Path) -> dict[str, int]:
    """Every mask of a ``predict`` case folder is an ROI of its RTSTRUCT, with contours exactly when the mask is
    non-empty, each contour on a CT slice where the mask has voxels and the mask's voxels on every such slice
    covered by some contour (planes and contours agree both ways); returns the number of contours per ROI."""
    import numpy as np
    import SimpleITK as sitk

    from nnunet_breast.dicom.rtstruct import read_rtstruct

    [rs] = case_folder.glob("RS.*.dcm")
    rois = {r.name: r for r in read_rtstruct(rs)[1]}
    counts = {}
    for mask_file in sorted((case_folder / "masks").glob("*.nii.gz")):
        name = mask_file.name[: -len(".nii.gz")]
        img = sitk.ReadImage(str(mask_file))
        mask = sitk.GetArrayFromImage(img) > 0
        contours = rois[name].contours
        assert bool(contours) == bool(mask.any()), (name, len(contours), int(mask.sum()))
        planes = {img.TransformPhysicalPointToIndex([float(v) for v in pts[0]])[2] for _, pts in contours}
        assert planes == set(np.flatnonzero(mask.any(axis=(1, 2))).tolist()), name
        counts[name] = len(contours)
    return counts
