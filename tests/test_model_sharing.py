"""export-model / install-model: nnU-Net's model zip with our manifest, checked before nnU-Net's installer runs.

A model folder with the files a finished nnU-Net training leaves (plans, dataset.json, fingerprint; per fold the
checkpoint, progress.png, validation/summary.json) stands in for a trained model: sharing copies files, it never
loads the weights. The round trip through a real trained model and `predict` is the next step of issue 16.
"""
import json
import os
import zipfile
from pathlib import Path

import pytest

from nnunet_breast.cli import main
from nnunet_breast.errors import UserError
from nnunet_breast.sharing import MANIFEST, check_model_zip, export_model, install_model

TRAINER, CONFIG = "nnUNetTrainerEffNetB0", "3d_fullres_effnetb0"
MODEL = f"Dataset501_BreastRT/{TRAINER}__nnUNetPlans__{CONFIG}"
VOLUME_RANGE = {"p5": 480.5, "p95": 720.25, "n": 12}


def _fake_model(results: Path, folds=(0, 1)) -> Path:
    folder = results / MODEL
    for f in folds:
        (folder / f"fold_{f}" / "validation").mkdir(parents=True)
        (folder / f"fold_{f}" / "checkpoint_final.pth").write_bytes(os.urandom(2048))
        (folder / f"fold_{f}" / "progress.png").write_bytes(b"\x89PNG fake")
        (folder / f"fold_{f}" / "validation" / "summary.json").write_text("{}")
    (folder / "plans.json").write_text(json.dumps({"plans_name": "nnUNetPlans"}))
    (folder / "dataset_fingerprint.json").write_text("{}")
    (folder / "dataset.json").write_text(json.dumps({"nnunet_breast": {"encoding": {"structures": ["Heart"]},
                                                                       "volume_cc": {"Heart": VOLUME_RANGE}}}))
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def exported(nnunet_dirs, tmp_path):
    source = _fake_model(Path(nnunet_dirs["nnUNet_results"]))
    out = tmp_path / "model.zip"
    manifest = export_model(501, TRAINER, CONFIG, out, folds=(0, 1), license="CC-BY-4.0")
    return {"zip": out, "manifest": manifest, "source": source}


def _receiving_site(monkeypatch, tmp_path) -> Path:
    results = tmp_path / "site_results"
    monkeypatch.setenv("nnUNet_results", str(results))
    return results


def test_round_trip_installs_the_same_files_and_the_manifest(exported, monkeypatch, tmp_path):
    m = exported["manifest"]
    assert (m["trainer"], m["configuration"], m["folds"], m["license"]) == (TRAINER, CONFIG, [0, 1], "CC-BY-4.0")
    assert m["encoding"] == {"structures": ["Heart"]} and m["model"] == MODEL
    assert m["cohort_volume_cc"] == {"Heart": VOLUME_RANGE}
    assert len(m["files"]) == 9           # per fold: checkpoint, progress.png, summary; plans, dataset, fingerprint
    results = _receiving_site(monkeypatch, tmp_path)
    folder = install_model(exported["zip"])
    assert folder == results / MODEL
    installed = _files(folder)
    assert json.loads(installed.pop(MANIFEST)) == m
    assert installed == _files(exported["source"])
    assert not [p for p in results.iterdir() if p.name.startswith(".install-")]     # staging folder gone


def test_refuses_to_replace_an_installed_model_without_overwrite(exported, monkeypatch, tmp_path):
    _receiving_site(monkeypatch, tmp_path)
    folder = install_model(exported["zip"])
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"local")
    with pytest.raises(UserError, match="installed already"):
        install_model(exported["zip"])
    assert (folder / "fold_0" / "checkpoint_final.pth").read_bytes() == b"local"     # untouched
    install_model(exported["zip"], overwrite=True)
    assert (folder / "fold_0" / "checkpoint_final.pth").read_bytes() != b"local"


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """A copy of the zip with ``edit(name, data) -> (name, data) or None`` applied to each member."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            out = edit(name, zin.read(name))
            if out is not None:
                zout.writestr(*out)
    return dst


def _with_manifest(**changes):
    def edit(name, data):
        if name.endswith(MANIFEST):
            return name, json.dumps({**json.loads(data), **changes})
        return name, data
    return edit


@pytest.mark.parametrize("case, edit, message", [
    ("altered", lambda n, d: (n, d + b"x") if n.endswith("fold_0/checkpoint_final.pth") else (n, d), "checksum"),
    ("missing", lambda n, d: None if n.endswith("fold_1/checkpoint_final.pth") else (n, d), "missing"),
    ("newer", _with_manifest(package_version="9.1.0"), "nnunet_breast 9.1.0"),
    ("no_manifest", lambda n, d: None if n.endswith(MANIFEST) else (n, d), "not a model from"),
    ("escape", lambda n, d: (n, d) if not n.endswith("plans.json") else ("../../plans.json", d), "leaves"),
    ("trainer", _with_manifest(trainer="nnUNetTrainerNobodyWrote"), "not found through nnUNet_extTrainer"),
])
def test_refuses_a_bad_zip_with_one_line_and_installs_nothing(exported, monkeypatch, tmp_path, case, edit, message):
    bad = _rewrite(exported["zip"], tmp_path / f"{case}.zip", edit)
    results = _receiving_site(monkeypatch, tmp_path)
    with pytest.raises(UserError, match=message) as e:
        install_model(bad)
    assert "\n" not in str(e.value)
    assert not (results / MODEL).exists()


def test_not_a_zip_is_refused(tmp_path):
    (tmp_path / "model.zip").write_text("hello")
    with pytest.raises(UserError, match="not a readable zip"):
        check_model_zip(tmp_path / "model.zip")


def test_cli_exports_and_refuses_with_exit_2(nnunet_dirs, tmp_path, capsys):
    _fake_model(Path(nnunet_dirs["nnUNet_results"]), folds=(0,))
    out = tmp_path / "m.zip"
    assert main(["export-model", "-d", "501", "-f", "0", "-o", str(out)]) == 0
    assert zipfile.ZipFile(out).testzip() is None
    assert main(["export-model", "-d", "501", "-f", "0", "-o", str(out)]) == 2          # exists: never replaced
    assert main(["export-model", "-d", "501", "-f", "0", "1", "-o", str(tmp_path / "n.zip")]) == 2   # no fold 1
    assert not (tmp_path / "n.zip").exists() and not list(tmp_path.glob("*.partial"))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "exists" in err[0] and "fold(s) [1]" in err[1]
