"""Compare two nnU-Net models on the out-of-fold validation predictions nnU-Net already wrote.

``nnUNet_results/<dataset>/<TRAINER__PLANS__CONFIG>/fold_*/validation`` holds every training case once
(five-fold cross-validation), so two models can be compared case by case without extra inference: paired
differences per structure, the Wilcoxon signed-rank test (SciPy) and a win/tie/loss count.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from nnunet_breast.evaluation.evaluate import evaluate_one, load_dataset_encoding

HIGHER_IS_BETTER = {"dsc": True, "hd95": False, "assd": False, "surface_dice": True}


def validation_cases(results_dir: Path, model: str, folds: list[int] | None) -> dict[str, Path]:
    """case id -> the validation folder holding its out-of-fold prediction."""
    found: dict[str, Path] = {}
    fold_dirs = sorted((results_dir / model).glob("fold_*")) if folds is None else \
        [results_dir / model / f"fold_{f}" for f in folds]
    for fold in fold_dirs:
        val = fold / "validation"
        if not val.is_dir():
            raise FileNotFoundError(f"{val} is missing: train (and validate) {model} {fold.name} first")
        for p in list(val.glob("*.npz")) + list(val.glob("*.nii.gz")):
            found.setdefault(p.name.split(".")[0], val)
    if not found:
        raise FileNotFoundError(f"no validation predictions under {results_dir / model}")
    return found


def compare_models(results_dir: Path, labels_dir: Path, dataset_json: Path, model_a: str, model_b: str,
                   out_dir: Path, folds: list[int] | None = None, tolerance_mm: float = 2.0) -> list[dict]:
    encoding, cohort = load_dataset_encoding(dataset_json)
    a, b = validation_cases(results_dir, model_a, folds), validation_cases(results_dir, model_b, folds)
    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError(f"{model_a} and {model_b} share no validated case")
    per_case = {}
    for cid in common:
        rows_a, _ = evaluate_one(cid, labels_dir, a[cid], encoding, cohort, tolerance_mm)
        rows_b, _ = evaluate_one(cid, labels_dir, b[cid], encoding, cohort, tolerance_mm)
        per_case[cid] = ({r["structure"]: r for r in rows_a}, {r["structure"]: r for r in rows_b})
    table = []
    for s in encoding.structures:
        for metric, higher in HIGHER_IS_BETTER.items():
            pairs = [(float(per_case[c][0][s][metric]), float(per_case[c][1][s][metric])) for c in common]
            pairs = [(x, y) for x, y in pairs if math.isfinite(x) and math.isfinite(y)]
            diff = np.array([y - x for x, y in pairs])          # b - a
            better = diff > 1e-9 if higher else diff < -1e-9
            worse = diff < -1e-9 if higher else diff > 1e-9
            p = _wilcoxon(diff)
            table.append({"structure": s, "metric": metric, "n": len(pairs),
                          "mean_a": float(np.mean([x for x, _ in pairs])) if pairs else math.nan,
                          "mean_b": float(np.mean([y for _, y in pairs])) if pairs else math.nan,
                          "mean_diff_b_minus_a": float(diff.mean()) if diff.size else math.nan,
                          "b_wins": int(better.sum()), "ties": int((~better & ~worse).sum()),
                          "b_losses": int(worse.sum()), "wilcoxon_p": p})
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "comparison.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(table[0]))
        w.writeheader()
        w.writerows(table)
    _markdown(table, model_a, model_b, len(common), out_dir / "comparison.md")
    _plot(table, model_a, model_b, out_dir / "comparison.png")
    return table


def _wilcoxon(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; NaN when there are too few non-zero differences."""
    if diff.size < 2 or np.allclose(diff, 0):
        return math.nan
    return float(wilcoxon(diff, zero_method="wilcox").pvalue)


def _markdown(table, a, b, n, path: Path) -> None:
    lines = [f"# {b} (b) vs {a} (a), {n} cases (out-of-fold validation)", "",
             "| structure | metric | mean a | mean b | b - a | b wins / ties / losses | Wilcoxon p |",
             "|---|---|---|---|---|---|---|"]
    for t in table:
        lines.append(f"| {t['structure']} | {t['metric']} | {t['mean_a']:.3f} | {t['mean_b']:.3f} | "
                     f"{t['mean_diff_b_minus_a']:+.3f} | {t['b_wins']} / {t['ties']} / {t['b_losses']} | "
                     f"{t['wilcoxon_p']:.3g} |")
    path.write_text("\n".join(lines) + "\n")


def _plot(table, a, b, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [t for t in table if t["metric"] == "dsc"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(rows)), 4))
    ax.bar(range(len(rows)), [t["mean_diff_b_minus_a"] for t in rows],
           color=["tab:green" if t["mean_diff_b_minus_a"] >= 0 else "tab:red" for t in rows])
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(rows)), [t["structure"] for t in rows], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("mean DSC difference (b - a)")
    ax.set_title(f"b = {b}\na = {a}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
