"""nnunet-breast evaluate on converted data with predictions made by perturbing the ground truth."""
import csv
import json

import numpy as np
import pytest
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
    assert "0 case x structure not evaluated" in r.stdout      # every synthetic reference has all 20
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
    assert "0 not evaluated" in r.stdout
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


def test_evaluate_clips_writes_clip_scores(clips_export, tmp_path):
    """The clip cohort's clip_detection.csv and summary use evaluation.clip_scores' columns."""
    from nnunet_breast.dataset_conversion.dataset import ConvertOptions, convert
    from nnunet_breast.evaluation.clip_scores import CLIP_SCORE_COLUMNS
    from nnunet_breast.evaluation.evaluate import evaluate_folder
    from nnunet_breast.volumes.components import label_components

    ds = convert(ConvertOptions("clips", clips_export, 502, "Test", tmp_path / "raw"), progress=False).dataset_dir
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    cases = sorted(p.name[:-7] for p in (ds / "labelsTr").glob("*.nii.gz"))
    for cid in cases:        # each prediction misses the case's first clip
        ref = sitk.ReadImage(str(ds / "labelsTr" / f"{cid}.nii.gz"))
        labels, _ = label_components(sitk.GetArrayFromImage(ref) == 1)
        img = sitk.GetImageFromArray((labels > 1).astype(np.uint8))
        img.CopyInformation(ref)
        sitk.WriteImage(img, str(pred_dir / f"{cid}.nii.gz"))
    summary = evaluate_folder(ds / "labelsTr", pred_dir, ds / "dataset.json", tmp_path / "eval", progress=False)
    with open(tmp_path / "eval" / "clip_detection.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == CLIP_SCORE_COLUMNS and [r["case_id"] for r in rows] == cases
    assert all(r["clips_missed"] == "1" and r["clips_false"] == "0" and float(r["dsc"]) < 1 for r in rows)
    assert summary["clips"]["clips_missed"] == len(cases)
    assert summary["clips"]["clips_found"] == sum(int(r["clips_found"]) for r in rows)


# ------------------------------------------------------------------------------------------------
# Structures absent from a case's reference (single-side clinical exports) are not evaluated
# ------------------------------------------------------------------------------------------------

DROPPED = "CTVp_breast_R"      # a left-sided clinical export: no right breast CTV in the reference


def _single_side_references(ds, enc, folder, n_without: int = 2) -> list[str]:
    """The dataset's references with DROPPED removed from the first ``n_without`` cases; returns all case ids."""
    folder.mkdir(parents=True)
    cases = []
    for i, ref_file in enumerate(sorted((ds / "labelsTr").glob("*.nii.gz"))):
        ref = sitk.ReadImage(str(ref_file))
        masks = enc.decode(sitk.GetArrayFromImage(ref))
        if i < n_without:
            masks[DROPPED] = np.zeros_like(masks[DROPPED])
        img = sitk.GetImageFromArray(enc.encode(masks))
        img.CopyInformation(ref)
        sitk.WriteImage(img, str(folder / ref_file.name))
        cases.append(ref_file.name[:-7])
    return cases


def _probabilities(ds, enc, folder, shift: dict[int, int], drop_in: set[int] = frozenset()) -> None:
    """npz predictions from the full references: DROPPED shifted by ``shift[case index]`` voxels along x (absent
    from ``shift``: 1) and left out in the cases ``drop_in``."""
    folder.mkdir(parents=True)
    for i, ref_file in enumerate(sorted((ds / "labelsTr").glob("*.nii.gz"))):
        masks = enc.decode(sitk.GetArrayFromImage(sitk.ReadImage(str(ref_file))))
        masks[DROPPED] = np.roll(masks[DROPPED], shift.get(i, 1), axis=2)
        if i in drop_in:
            masks[DROPPED] = np.zeros_like(masks[DROPPED])
        probs = np.stack([masks[s].astype(np.float32) for s in enc.structures])
        np.savez_compressed(folder / f"{ref_file.name[:-7]}.npz", probabilities=probs)


def _strict_json(path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_structure_absent_from_reference_is_not_evaluated(breast_dataset, tmp_path):
    """evaluate -> metrics.csv / summary.json and report -> tables: the not-contoured cells are NaN, counted and
    left out; the first case predicts the structure (empty='ref'), the second does not (empty='both')."""
    from nnunet_breast.evaluation.evaluate import METRIC_COLUMNS, evaluate_folder
    from nnunet_breast.evaluation.report import write_report

    ds = breast_dataset.dataset_dir
    enc = _encoding(ds)
    cases = _single_side_references(ds, enc, tmp_path / "ref")
    _probabilities(ds, enc, tmp_path / "pred", shift={}, drop_in={1})
    summary = evaluate_folder(tmp_path / "ref", tmp_path / "pred", ds / "dataset.json", tmp_path / "eval",
                              progress=False)
    with open(tmp_path / "eval" / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == METRIC_COLUMNS and "evaluated" in METRIC_COLUMNS
    dropped = {r["case_id"]: r for r in rows if r["structure"] == DROPPED}
    first, second = dropped[cases[0]], dropped[cases[1]]
    assert (first["empty"], first["evaluated"], second["empty"], second["evaluated"]) == ("ref", "False", "both", "False")
    for r in (first, second):
        for m in ("dsc", "surface_dice", "hd95", "hd", "assd"):
            assert r[m] == "nan", (m, r)
    assert float(first["volume_pred_cc"]) > 1 and float(first["volume_ref_cc"]) == 0   # the prediction's volume
    scored = [float(dropped[c]["dsc"]) for c in cases[2:]]
    assert all(dropped[c]["evaluated"] == "True" for c in cases[2:]) and all(0.5 < d < 1 for d in scored)
    assert all(r["evaluated"] == "True" for r in rows if r["structure"] != DROPPED)

    s = summary["per_structure"][DROPPED]
    assert (s["n"], s["n_evaluated"], s["n_not_evaluated"], s["n_not_evaluated_predicted"]) == (5, 3, 2, 1)
    assert s["dsc_n"] == 3 and s["dsc_mean"] == np.mean(scored)          # neither 1 (both empty) nor 0 (ref empty)
    assert summary["per_structure"]["Heart"]["n_not_evaluated"] == 0
    assert summary["n_not_evaluated"] == 2 and "not evaluated" in summary["not_evaluated"]
    written = _strict_json(tmp_path / "eval" / "summary.json")             # NaN written as null, strict JSON
    assert written["per_structure"][DROPPED]["n_not_evaluated"] == 2
    assert written["per_structure"][DROPPED]["dsc_mean"] == np.mean(scored)

    files = write_report(tmp_path / "eval" / "metrics.csv", ds / "cohort.csv", tmp_path / "report", ["contrast"])
    md = files["markdown"].read_text()
    line = next(x for x in md.splitlines() if x.startswith(f"| {DROPPED} |"))
    assert f"{np.mean(scored):.3f} ± " in line and "(3; 2 not evaluated)" in line.split("|")[2]
    assert "not evaluated" not in next(x for x in md.splitlines() if x.startswith("| Heart |"))
    assert "reference lacks it" in md
    with open(files["csv"], newline="") as f:
        table = {r["structure"]: r for r in csv.DictReader(f)}
    assert table[DROPPED]["all n_not_evaluated"] == "2" and table[DROPPED]["all dsc_n"] == "3"
    assert float(table[DROPPED]["all dsc_mean"]) == np.mean(scored)
    by_contrast = [k for k in table[DROPPED] if k.startswith("contrast=") and k.endswith(" n_not_evaluated")]
    assert len(by_contrast) == 2 and sum(int(table[DROPPED][k]) for k in by_contrast) == 2
    assert table["Heart"]["all n_not_evaluated"] == "0"
    for png in ("boxplot_dsc.png", "boxplot_hd95.png"):
        assert files[png[:-4]].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a metrics.csv written before the `evaluated` column (both-empty DSC 1, ref-empty DSC 0): the same table
    old = tmp_path / "old_metrics.csv"
    with open(old, "w", newline="") as f:
        w = csv.DictWriter(f, [c for c in METRIC_COLUMNS if c != "evaluated"], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "dsc": {"both": "1.0", "ref": "0.0"}.get(r["empty"], r["dsc"])})
    old_md = write_report(old, None, tmp_path / "report_old", [])["markdown"].read_text()
    assert old_md == write_report(tmp_path / "eval" / "metrics.csv", None, tmp_path / "plain", [])["markdown"].read_text()
    assert "(3; 2 not evaluated)" in old_md


def test_compare_leaves_not_evaluated_pairs_out(breast_dataset, tmp_path):
    """Wilcoxon over the evaluated pairs only; the pairs left out are counted (not evaluated / undefined)."""
    from nnunet_breast.evaluation.compare import compare_models

    ds = breast_dataset.dataset_dir
    enc = _encoding(ds)
    _single_side_references(ds, enc, tmp_path / "ref")            # cases 0, 1 without DROPPED
    results = tmp_path / "results" / ds.name
    a, b = "TrainerA__nnUNetPlans__3d_fullres", "TrainerB__nnUNetPlans__3d_fullres"
    # a: DROPPED shifted by 2 voxels, and missed entirely in case 2 (DSC 0, HD95 undefined); b: exact
    _probabilities(ds, enc, results / a / "fold_0" / "validation", shift={i: 2 for i in range(5)}, drop_in={2})
    _probabilities(ds, enc, results / b / "fold_0" / "validation", shift={i: 0 for i in range(5)})
    table = compare_models(results, tmp_path / "ref", ds / "dataset.json", a, b, tmp_path / "cmp")
    rows = {(t["structure"], t["metric"]): t for t in table}
    dsc = rows[(DROPPED, "dsc")]
    assert (dsc["n"], dsc["n_not_evaluated"], dsc["n_undefined"]) == (3, 2, 0)
    assert (dsc["b_wins"], dsc["ties"], dsc["b_losses"]) == (3, 0, 0) and dsc["mean_b"] == 1.0
    assert dsc["wilcoxon_p"] == pytest.approx(0.25)               # exact two-sided p of 3 positive differences
    hd95 = rows[(DROPPED, "hd95")]
    assert (hd95["n"], hd95["n_not_evaluated"], hd95["n_undefined"]) == (2, 2, 1)
    assert hd95["b_wins"] == 2 and hd95["mean_b"] == 0.0
    heart = rows[("Heart", "dsc")]
    assert (heart["n"], heart["n_not_evaluated"], heart["n_undefined"]) == (5, 0, 0) and heart["ties"] == 5
    with open(tmp_path / "cmp" / "comparison.csv", newline="") as f:
        written = {(r["structure"], r["metric"]): r for r in csv.DictReader(f)}
    assert written[(DROPPED, "dsc")]["n_not_evaluated"] == "2" and written[(DROPPED, "hd95")]["n_undefined"] == "1"
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| not evaluated | undefined |" in md and f"| {DROPPED} | dsc | 3 | 2 | 0 |" in md


def test_paired_row_counts_left_out_pairs():
    from nnunet_breast.evaluation.compare import paired_row

    def row(dsc, empty="", evaluated=None):
        r = {"dsc": dsc, "empty": empty}
        if evaluated is not None:
            r["evaluated"] = evaluated
        return r

    pairs = [(row("0.5"), row("0.7")), (row("0.6"), row("0.9")), (row("0.4"), row("0.6")),
             (row("nan", "both", "False"), row("nan", "both", "False")),
             (row("1.0", "both"), row("1.0", "both")),          # an old row: DSC 1 for both empty, still left out
             (row("0.0", "pred"), row("nan", "ref", "False"))]  # a reference without it never counts
    t = paired_row("CTVn_L2_R", "dsc", True, pairs)
    assert (t["n"], t["n_not_evaluated"], t["n_undefined"]) == (3, 3, 0)
    assert t["mean_diff_b_minus_a"] == pytest.approx(0.7 / 3) and t["b_wins"] == 3
    assert t["wilcoxon_p"] == pytest.approx(0.25)
    none = paired_row("CTVn_L2_R", "dsc", True, pairs[3:5])
    assert (none["n"], none["n_not_evaluated"]) == (0, 2) and np.isnan(none["mean_a"]) and np.isnan(none["wilcoxon_p"])


def test_clip_case_without_reference_clip_still_counts_false_clips(clips_export, tmp_path):
    """A clip-cohort CT without clips: DSC not evaluated (NaN, left out of the means), its predicted clips false."""
    from nnunet_breast.dataset_conversion.dataset import ConvertOptions, convert
    from nnunet_breast.evaluation.evaluate import evaluate_folder

    ds = convert(ConvertOptions("clips", clips_export, 502, "Test", tmp_path / "raw"), progress=False).dataset_dir
    refs, pred_dir = tmp_path / "ref", tmp_path / "pred"
    refs.mkdir()
    pred_dir.mkdir()
    cases = sorted(p.name[:-7] for p in (ds / "labelsTr").glob("*.nii.gz"))
    for i, cid in enumerate(cases):     # predictions equal the clips; the first reference has none
        ref = sitk.ReadImage(str(ds / "labelsTr" / f"{cid}.nii.gz"))
        sitk.WriteImage(ref, str(pred_dir / f"{cid}.nii.gz"))
        blank = sitk.Image(ref) * 0 if i == 0 else ref
        sitk.WriteImage(blank, str(refs / f"{cid}.nii.gz"))
    summary = evaluate_folder(refs, pred_dir, ds / "dataset.json", tmp_path / "eval", progress=False)
    with open(tmp_path / "eval" / "clip_detection.csv", newline="") as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    first = rows[cases[0]]
    assert first["dsc"] == "nan" and first["clips_found"] == "0" and int(first["clips_false"]) >= 1
    assert all(float(rows[c]["dsc"]) == 1.0 and rows[c]["clips_false"] == "0" for c in cases[1:])
    clips = summary["clips"]
    assert clips["clips_false"] == int(first["clips_false"]) and (clips["n_cases"], clips["n_not_evaluated"]) == (3, 1)
    assert clips["dsc_mean"] == 1.0
    assert summary["per_structure"]["Clips"]["n_not_evaluated"] == 1
    assert _strict_json(tmp_path / "eval" / "summary.json")["clips"]["clips_false"] == clips["clips_false"]


def test_report_refuses_bad_metrics_in_one_line(tmp_path, run_cli):
    from nnunet_breast.errors import UserError
    from nnunet_breast.evaluation.report import write_report

    bad = tmp_path / "metrics.csv"
    bad.write_text("case_id,structure,dsc\nc1,Heart,0.9\n")
    r = run_cli(["nnunet-breast", "report", "--metrics", bad, "-o", tmp_path / "r"])
    assert r.returncode == 2 and "lacks the column(s) hd95" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bad.write_text("case_id,structure,dsc,hd95,empty,evaluated\nc1,Heart,0.9,2.0,,maybe\n")
    with pytest.raises(UserError, match="evaluated must be True or False"):
        write_report(bad, None, tmp_path / "r", [])
    bad.write_text("case_id,structure,dsc,hd95,empty,evaluated\nc1,Heart,high,2.0,,True\n")
    with pytest.raises(UserError, match="dsc is 'high', not a number"):
        write_report(bad, None, tmp_path / "r", [])
