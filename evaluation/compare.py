"""Compare two nnU-Net models on the out-of-fold validation predictions nnU-Net already wrote.

``nnUNet_results/<dataset>/<TRAINER__PLANS__CONFIG>/fold_*/validation`` holds every training case once
(five-fold cross-validation), so two models can be compared case by case without extra inference: paired
differences per structure, the Wilcoxon signed-rank test (SciPy) and a win/tie/loss count.

Only evaluated pairs count. A case whose reference lacks the structure (not contoured there) is not
evaluated (:data:`~nnunet_breast.evaluation.metrics.EMPTY_POLICY`) and is left out of the means, the
win/tie/loss count and the test: ``n_not_evaluated``. A case whose reference has the structure but where a
model's value is NaN (HD95 or ASSD of an empty prediction) is left out of that metric too: ``n_undefined``.
``n`` is the number of pairs used; ``n + n_not_evaluated + n_undefined`` is the number of shared cases.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from nnunet_breast.errors import UserError
from nnunet_breast.evaluation.evaluate import evaluate_one, load_dataset_encoding
from nnunet_breast.evaluation.metrics import is_evaluated

HIGHER_IS_BETTER = {"dsc": True, "hd95": False, "assd": False, "surface_dice": True}


def validation_cases(results_dir: Path, model: str, folds: list[int] | None) -> dict[str, Path]:
    """case id -> the validation folder holding its out-of-fold prediction."""
    found: dict[str, Path] = {}
    fold_dirs = sorted((results_dir / model).glob("fold_*")) if folds is None else \
        [results_dir / model / f"fold_{f}" for f in folds]
    for fold in fold_dirs:
        val = fold / "validation"
        if not val.is_dir():
            raise UserError(f"{val} is missing: train (and validate) {model} {fold.name} first")
        for p in list(val.glob("*.npz")) + list(val.glob("*.nii.gz")):
            found.setdefault(p.name.split(".")[0], val)
    if not found:
        raise UserError(f"no validation predictions under {results_dir / model}")
    return found


def compare_models(results_dir: Path, labels_dir: Path, dataset_json: Path, model_a: str, model_b: str,
                   out_dir: Path, folds: list[int] | None = None, tolerance_mm: float = 2.0) -> list[dict]:
    encoding, cohort = load_dataset_encoding(dataset_json)
    a, b = validation_cases(results_dir, model_a, folds), validation_cases(results_dir, model_b, folds)
    common = sorted(set(a) & set(b))
    if not common:
        raise UserError(f"{model_a} and {model_b} share no validated case")
    per_case = {}
    for cid in common:
        rows_a, _ = evaluate_one(cid, labels_dir, a[cid], encoding, cohort, tolerance_mm)
        rows_b, _ = evaluate_one(cid, labels_dir, b[cid], encoding, cohort, tolerance_mm)
        per_case[cid] = ({r["structure"]: r for r in rows_a}, {r["structure"]: r for r in rows_b})
    table = [paired_row(s, metric, higher, [(per_case[c][0][s], per_case[c][1][s]) for c in common])
             for s in encoding.structures for metric, higher in HIGHER_IS_BETTER.items()]
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "comparison.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(table[0]))
        w.writeheader()
        w.writerows(table)
    _markdown(table, model_a, model_b, len(common), out_dir / "comparison.md")
    _plot(table, model_a, model_b, out_dir / "comparison.png")
    return table


def paired_row(structure: str, metric: str, higher: bool, rows: list[tuple[dict, dict]]) -> dict:
    """One line of comparison.csv from the (model a, model b) metrics rows of the shared cases.

    Pairs whose reference lacks the structure are left out (``n_not_evaluated``), and so are pairs with a
    NaN value (``n_undefined``); means, b's wins / ties / losses and the Wilcoxon test use the ``n`` others.
    """
    pairs, not_evaluated, undefined = [], 0, 0
    for ra, rb in rows:
        if not (is_evaluated(ra) and is_evaluated(rb)):   # same reference for both models
            not_evaluated += 1
            continue
        x, y = float(ra[metric]), float(rb[metric])
        if math.isfinite(x) and math.isfinite(y):
            pairs.append((x, y))
        else:
            undefined += 1
    diff = np.array([y - x for x, y in pairs])          # b - a
    better = diff > 1e-9 if higher else diff < -1e-9
    worse = diff < -1e-9 if higher else diff > 1e-9
    return {"structure": structure, "metric": metric, "n": len(pairs), "n_not_evaluated": not_evaluated,
            "n_undefined": undefined,
            "mean_a": float(np.mean([x for x, _ in pairs])) if pairs else math.nan,
            "mean_b": float(np.mean([y for _, y in pairs])) if pairs else math.nan,
            "mean_diff_b_minus_a": float(diff.mean()) if diff.size else math.nan,
            "b_wins": int(better.sum()), "ties": int((~better & ~worse).sum()),
            "b_losses": int(worse.sum()), "wilcoxon_p": _wilcoxon(diff)}


def _wilcoxon(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; NaN when there are too few non-zero differences."""
    if diff.size < 2 or np.allclose(diff, 0):
        return math.nan
    return float(wilcoxon(diff, zero_method="wilcox").pvalue)


def _markdown(table, a, b, n, path: Path) -> None:
    lines = [f"# {b} (b) vs {a} (a), {n} cases (out-of-fold validation)", "",
             "n: pairs compared; not evaluated: cases whose reference lacks the structure (not contoured there); "
             "undefined: a model's value is NaN (e.g. HD95 of an empty prediction). Both are left out.", "",
             "| structure | metric | n | not evaluated | undefined | mean a | mean b | b - a | "
             "b wins / ties / losses | Wilcoxon p |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for t in table:
        lines.append(f"| {t['structure']} | {t['metric']} | {t['n']} | {t['n_not_evaluated']} | {t['n_undefined']} | "
                     f"{t['mean_a']:.3f} | {t['mean_b']:.3f} | {t['mean_diff_b_minus_a']:+.3f} | "
                     f"{t['b_wins']} / {t['ties']} / {t['b_losses']} | {t['wilcoxon_p']:.3g} |")
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
    ax.set_xticks(range(len(rows)), [f"{t['structure']} ({t['n']})" for t in rows], rotation=60, ha="right",
                  fontsize=8)
    ax.set_ylabel("mean DSC difference (b - a), n pairs")
    ax.set_title(f"b = {b}\na = {a}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
