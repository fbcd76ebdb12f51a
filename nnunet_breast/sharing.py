"""One-file model sharing: nnU-Net's model zip plus a manifest that says what the model needs to run here.

:func:`export_model` writes nnU-Net's own zip (``nnUNetv2_export_model_to_zip``'s function: plans, dataset.json,
fingerprint, the folds' checkpoints) and adds ``nnunet_breast_model.json`` to the model folder: the package and
nnU-Net versions, trainer, plans, configuration, folds, the dataset's structure encoding, a license, and a SHA-256
of every file. :func:`install_model` checks the zip against its manifest before nnU-Net's installer
(``nnUNetv2_install_pretrained_model_from_zip``'s function) unpacks it: made by a compatible package version,
nothing missing or altered, no path leaving ``nnUNet_results``, the trainer found through ``nnUNet_extTrainer``,
and no installed model replaced unless ``overwrite``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from nnunet_breast import __version__
from nnunet_breast.env import extended_ext_trainer, nnunet_folder
from nnunet_breast.errors import UserError

MANIFEST = "nnunet_breast_model.json"
FORMAT = 1


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _compatible(version: str) -> bool:
    """Same major.minor: the trainers, catalog and encoding a model was trained with are this package's."""
    return version.split(".")[:2] == __version__.split(".")[:2]


def export_model(dataset_id: int, trainer: str, configuration: str, out_zip: Path, plans: str = "nnUNetPlans",
                 folds=(0, 1, 2, 3, 4), checkpoint: str = "checkpoint_final.pth", license: str = "unspecified") -> dict:
    """nnU-Net's model zip of one trained model + our manifest; returns the manifest."""
    from importlib.metadata import version

    from nnunetv2.model_sharing.model_export import export_pretrained_model

    from nnunet_breast.inference.predictor import ModelRef

    folder = ModelRef(dataset_id, trainer, configuration, plans, tuple(folds), checkpoint).trained_folder()
    out_zip = Path(out_zip)
    if out_zip.exists():
        raise UserError(f"{out_zip} exists; give a new file name")
    partial = out_zip.with_name(out_zip.name + ".partial")
    try:
        export_pretrained_model(folder.parent.name, str(partial), configurations=(configuration,), trainer=trainer,
                                plans_identifier=plans, folds=tuple(folds), save_checkpoints=(checkpoint,))
    except (AssertionError, FileNotFoundError) as e:       # nnU-Net asserts the files a finished training leaves
        partial.unlink(missing_ok=True)
        raise UserError(f"{folder}: cannot export: {e}") from None
    dataset = json.loads((folder / "dataset.json").read_text())
    with zipfile.ZipFile(partial, "a", zipfile.ZIP_DEFLATED) as z:
        files = {name: _sha256(z.read(name)) for name in z.namelist()}
        manifest = {"format": FORMAT, "package": "nnunet_breast", "package_version": __version__,
                    "nnunetv2_version": version("nnunetv2"),
                    "dataset": folder.parent.name, "model": f"{folder.parent.name}/{folder.name}",
                    "trainer": trainer, "plans": plans, "configuration": configuration, "folds": list(folds),
                    "checkpoint": checkpoint, "encoding": dataset.get("nnunet_breast", {}).get("encoding"),
                    "cohort_volume_cc": dataset.get("nnunet_breast", {}).get("volume_cc"),   # the QA report's ranges
                    "license": license, "files": files}
        z.writestr(f"{folder.parent.name}/{folder.name}/{MANIFEST}", json.dumps(manifest, indent=1))
    os.replace(partial, out_zip)
    return manifest


def read_manifest(z: zipfile.ZipFile, zip_path: Path) -> dict:
    names = [n for n in z.namelist() if PurePosixPath(n).name == MANIFEST]
    if len(names) != 1:
        raise UserError(f"{zip_path}: not a model from `nnunet-breast export-model` ({len(names)} manifests; "
                        f"a plain nnU-Net zip installs with nnUNetv2_install_pretrained_model_from_zip)")
    return json.loads(z.read(names[0]))


def check_model_zip(zip_path: Path) -> dict:
    """The manifest of a model zip that is safe and complete to install here; UserError (one line) otherwise."""
    try:
        z = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, FileNotFoundError, IsADirectoryError) as e:
        raise UserError(f"{zip_path}: not a readable zip ({e})") from None
    with z:
        manifest = read_manifest(z, zip_path)
        version = str(manifest.get("package_version", "?"))
        if manifest.get("format") != FORMAT or not _compatible(version):
            raise UserError(f"{zip_path} was exported by nnunet_breast {version} (manifest format "
                            f"{manifest.get('format')}); this is {__version__}: install a matching version")
        for name in z.namelist():
            p = PurePosixPath(name)
            if p.is_absolute() or ".." in p.parts or "\\" in name:
                raise UserError(f"{zip_path}: refusing the path {name!r}, which leaves nnUNet_results")
        listed = manifest.get("files", {})
        present = set(z.namelist()) - {n for n in z.namelist() if PurePosixPath(n).name == MANIFEST}
        if set(listed) != present:
            odd = sorted(set(listed) ^ present)
            raise UserError(f"{zip_path}: files missing or not in the manifest: {', '.join(odd[:3])}")
        for name, digest in listed.items():
            if _sha256(z.read(name)) != digest:
                raise UserError(f"{zip_path}: {name} does not match its manifest checksum (damaged or altered)")
    return manifest


def install_model(zip_path: Path, overwrite: bool = False) -> Path:
    """Check ``zip_path`` (:func:`check_model_zip`), then nnU-Net's installer; returns the model folder."""
    from nnunetv2.model_sharing.model_import import install_model_from_zip_file
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    manifest = check_model_zip(Path(zip_path))
    os.environ["nnUNet_extTrainer"] = extended_ext_trainer()
    try:
        recursive_find_trainer_class_by_name(manifest["trainer"])
    except (RuntimeError, AssertionError):
        raise UserError(f"{zip_path}: trainer {manifest['trainer']} is not found through nnUNet_extTrainer "
                        f"({os.environ['nnUNet_extTrainer']})") from None
    results = nnunet_folder("nnUNet_results")
    target = results / manifest["model"]
    if target.exists() and not overwrite:
        raise UserError(f"{target} is installed already; --overwrite replaces it")
    results.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".install-", dir=results))
    try:                # nnU-Net's installer unpacks into a folder of our own; the model appears whole or not at all
        os.environ["nnUNet_results"] = str(staging)
        install_model_from_zip_file(str(zip_path))
        target.parent.mkdir(exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / manifest["model"], target)
        for extra in (staging / manifest["dataset"]).iterdir():       # nnU-Net's dataset-level files, if new
            if not (target.parent / extra.name).exists():
                os.replace(extra, target.parent / extra.name)
    finally:
        os.environ["nnUNet_results"] = str(results)
        shutil.rmtree(staging, ignore_errors=True)
    return target
