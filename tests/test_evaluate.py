"""nnunet-breast evaluate on converted data with predictions made by perturbing the ground truth."""
import csv
import json

import numpy as np
import SimpleITK as sitk

from nnunet_breast.structures.regions import OverlapEncoding


def _encoding(dataset_dir):
    info = json.loads((dataset_dir / "dataset.json").read_text())["nnunet_breast"]
    return OverlapEncoding.from_json(info["encoding"])


def test_evaluate_label_maps_and_probabilities(breast_dataset, tmp_path, run_cli, monkeypatch):
    ds = breast_dataset.dataset_dir
    monkeypatch.setenv("nnUNet_raw", str(ds.parent))
    enc = _encoding(ds)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    cases = sorted(p.name[:-7] for p in (ds / "labelsTr").glob("*.nii.gz"))
    for i, cid in enumerate(cases):
        ref = sitk.ReadImage(str(ds / "labelsTr" / f"{cid}.nii.gz"))
        masks = enc.decode(sitk.GetArrayFromImage(ref))
        masks["Heart"] = np.roll(masks["Heart"], 2, axis=2)           # heart shifted 2 voxels along x
        if i == 0:   # probabilities (overlaps kept) for the first case, label map for the others
            probs = np.stack([masks[s].astype(np.float32) for s in enc.structures])
            np.savez_compressed(pred_dir / f"{cid}.npz", probabilities=probs)
        else:        # what nnU-Net exports for region training: regions written in order, later ones win
            seg = np.zeros(next(iter(masks.values())).shape, np.uint8)
            for name, label in zip(enc.structures, enc.regions_class_order()):
                seg[masks[name]] = label
            img = sitk.GetImageFromArray(seg)
            img.CopyInformation(ref)
            sitk.WriteImage(img, str(pred_dir / f"{cid}.nii.gz"))
    out = tmp_path / "eval"
    r = run_cli(["nnunet-breast", "evaluate", "--ref", ds / "labelsTr", "--pred", pred_dir, "-d", "501", "-o", out,
                 "-np", "2"])                                        # two worker processes: same rows, same order
    assert r.returncode == 0, r.stderr
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(cases) * 20
    heart = [r for r in rows if r["structure"] == "Heart"]
    spacing_x = [sitk.ReadImage(str(ds / "labelsTr" / f"{c}.nii.gz")).GetSpacing()[0] for c in cases]
    for row, sx in zip(sorted(heart, key=lambda r: r["case_id"]), spacing_x):
        assert 0.8 < float(row["dsc"]) < 1.0
        assert abs(float(row["hd"]) - 2 * sx) < 1e-6       # a pure shift: HD is the shift in mm
    first = cases[0]
    for row in rows:
        if row["structure"] == "Heart":
            continue
        if row["case_id"] == first or row["structure"] not in ("CTVn_L4_L", "CTVn_L4_R"):
            assert float(row["dsc"]) == 1.0 and float(row["hd95"]) == 0.0, row
        else:   # the label map lost the L4 voxels inside SCL; the probabilities (first case) kept them
            assert float(row["dsc"]) < 0.9, row
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == len(cases) and set(summary["per_structure"]) == set(enc.structures)
    assert summary["per_structure"]["Lung_L"]["dsc_mean"] == 1.0
    assert summary["per_structure"]["Heart"]["n"] == len(cases)


def test_evaluate_reports_missing_dataset(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    (tmp_path / "a").mkdir()
    r = run_cli(["nnunet-breast", "evaluate", "--ref", tmp_path / "a", "--pred", tmp_path / "a", "-d", "777",
                 "-o", tmp_path / "o"])
    assert r.returncode == 2 and "no dataset 777" in r.stderr


def _write_predictions(ds, enc, folder, shift_heart: int):
    """Label maps as nnU-Net exports them for region training, with the heart shifted by ``shift_heart``."""
    folder.mkdir(parents=True)
    for ref_file in sorted((ds / "labelsTr").glob("*.nii.gz")):
        ref = sitk.ReadImage(str(ref_file))
        masks = enc.decode(sitk.GetArrayFromImage(ref))
        masks["Heart"] = np.roll(masks["Heart"], shift_heart, axis=2)
        seg = np.zeros(masks["Heart"].shape, np.uint8)
        for name, label in zip(enc.structures, enc.regions_class_order()):
            seg[masks[name]] = label
        img = sitk.GetImageFromArray(seg)
        img.CopyInformation(ref)
        sitk.WriteImage(img, str(folder / ref_file.name))


def test_report_tables_and_plots(breast_dataset, tmp_path, run_cli, monkeypatch):
    ds = breast_dataset.dataset_dir
    monkeypatch.setenv("nnUNet_raw", str(ds.parent))
    _write_predictions(ds, _encoding(ds), tmp_path / "pred", 1)
    assert run_cli(["nnunet-breast", "evaluate", "--ref", ds / "labelsTr", "--pred", tmp_path / "pred", "-d", "501",
                    "-o", tmp_path / "eval", "-np", "1"]).returncode == 0
    r = run_cli(["nnunet-breast", "report", "--metrics", tmp_path / "eval" / "metrics.csv", "-d", "501",
                 "--by", "contrast,site", "-o", tmp_path / "report"])
    assert r.returncode == 0, r.stderr
    table = (tmp_path / "report" / "table.md").read_text()
    header = table.splitlines()[0]
    assert "all DSC" in header and "contrast=0 DSC" in header and "contrast=1 DSC" in header and "site=" in header
    heart = next(line for line in table.splitlines() if line.startswith("| Heart |"))
    assert "(5)" in heart and "1.000 ± 0.000" not in heart.split("|")[2]
    for png in ("boxplot_dsc.png", "boxplot_hd95.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = run_cli(["nnunet-breast", "report", "--metrics", tmp_path / "eval" / "metrics.csv", "-d", "501",
                   "--by", "scanner", "-o", tmp_path / "r2"])
    assert bad.returncode == 2 and "no column 'scanner'" in bad.stderr


def test_compare_two_models_on_out_of_fold_predictions(breast_dataset, tmp_path, run_cli, monkeypatch):
    ds = breast_dataset.dataset_dir
    enc = _encoding(ds)
    results = tmp_path / "results"
    monkeypatch.setenv("nnUNet_raw", str(ds.parent))
    monkeypatch.setenv("nnUNet_results", str(results))
    a, b = "TrainerA__nnUNetPlans__3d_fullres", "TrainerB__nnUNetPlans__3d_fullres"
    _write_predictions(ds, enc, results / ds.name / a / "fold_0" / "validation", 2)   # worse heart
    _write_predictions(ds, enc, results / ds.name / b / "fold_0" / "validation", 0)   # exact
    r = run_cli(["nnunet-breast", "compare", "-d", "501", "--a", a, "--b", b, "-o", tmp_path / "cmp"])
    assert r.returncode == 0, r.stderr
    import csv as _csv
    with open(tmp_path / "cmp" / "comparison.csv", newline="") as f:
        rows = {(row["structure"], row["metric"]): row for row in _csv.DictReader(f)}
    heart = rows[("Heart", "dsc")]
    assert int(heart["b_wins"]) == 5 and int(heart["b_losses"]) == 0 and float(heart["mean_diff_b_minus_a"]) > 0
    assert float(heart["wilcoxon_p"]) < 0.1
    assert int(rows[("Heart", "hd95")]["b_wins"]) == 5                  # lower HD95 is a win
    lung = rows[("Lung_L", "dsc")]
    assert int(lung["ties"]) == 5 and lung["wilcoxon_p"] == "nan"
    assert (tmp_path / "cmp" / "comparison.png").is_file() and (tmp_path / "cmp" / "comparison.md").is_file()
    missing = run_cli(["nnunet-breast", "compare", "-d", "501", "--a", a, "--b", "NoSuchModel", "-o", tmp_path / "c2"])
    assert missing.returncode == 2
