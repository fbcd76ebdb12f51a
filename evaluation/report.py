"""Paper-style tables from metrics.csv: mean +- SD of DSC and HD95 per structure, overall and by subgroup.

Subgroups come from the dataset's cohort.csv (contrast, site, side, ...), as in Table 1 of Chung et al.
(total / contrast / non-contrast). Writes Markdown and CSV tables and box plots (PNG).

Only evaluated rows count: a case whose reference lacks the structure (not contoured there, ``evaluated``
False in metrics.csv; older files: ``empty`` "ref" or "both") is left out of the mean, SD and n, and counted
per structure and group as "not evaluated" (table.csv: ``<group> n_not_evaluated``). The box plots use the
same rows.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from nnunet_breast.errors import UserError
from nnunet_breast.evaluation.metrics import is_evaluated

TABLE_METRICS = ("dsc", "hd95")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _stats(values: list[float]) -> tuple[float, float, int]:
    v = np.array([x for x in values if math.isfinite(x)], float)
    if not v.size:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def _evaluated(row: dict) -> bool:
    try:
        return is_evaluated(row)
    except ValueError as e:
        raise UserError(f"metrics.csv, case {row.get('case_id')}, {row.get('structure')}: {e}") from None


def _float(row: dict, metric: str) -> float:
    try:
        return float(row[metric])
    except (TypeError, ValueError):
        raise UserError(f"metrics.csv, case {row.get('case_id')}, {row.get('structure')}: {metric} is "
                        f"{row[metric]!r}, not a number") from None


def _cell(mean: float, sd: float, n: int, left_out: int, digits: int) -> str:
    text = f"{mean:.{digits}f} ± {sd:.{digits}f} ({n})" if n else "– (0)"
    return text[:-1] + f"; {left_out} not evaluated)" if left_out else text


def build_table(rows: list[dict], cohort: dict[str, dict], by: list[str]) -> tuple[list[str], list[dict]]:
    """Rows: one per structure; columns: '<group> <metric>' with 'mean +- sd (n)' and numeric companions.

    Statistics over evaluated rows only (see the module docstring); a cell whose group has cases without
    the structure in the reference reads 'mean ± sd (n; k not evaluated)', and ``<group> n_not_evaluated``
    holds k.
    """
    groups: dict[str, set[str]] = {"all": {r["case_id"] for r in rows}}
    for key in by:
        for cid in groups["all"]:
            if cid not in cohort:
                raise UserError(f"case {cid} is missing from cohort.csv")
            if key not in cohort[cid]:
                raise UserError(f"cohort.csv has no column {key!r}; columns: {', '.join(cohort[cid])}")
            groups.setdefault(f"{key}={cohort[cid][key]}", set()).add(cid)
    structures = list(dict.fromkeys(r["structure"] for r in rows))
    table, columns = [], ["structure"]
    for g in groups:
        columns += [f"{g} {m}" for m in TABLE_METRICS]
    evaluated = [_evaluated(r) for r in rows]
    for s in structures:
        line = {"structure": s}
        for g, members in groups.items():
            mine = [(r, e) for r, e in zip(rows, evaluated) if r["structure"] == s and r["case_id"] in members]
            left_out = sum(not e for _, e in mine)
            for m in TABLE_METRICS:
                mean, sd, n = _stats([_float(r, m) for r, e in mine if e])
                line[f"{g} {m}"] = _cell(mean, sd, n, left_out, 3 if m == "dsc" else 2)
                line[f"{g} {m}_mean"], line[f"{g} {m}_sd"], line[f"{g} {m}_n"] = mean, sd, n
            line[f"{g} n_not_evaluated"] = left_out
        table.append(line)
    return columns, table


def write_report(metrics_csv: Path, cohort_csv: Path | None, out_dir: Path, by: list[str]) -> dict[str, Path]:
    for path in (metrics_csv, cohort_csv):
        if path is not None and not Path(path).is_file():
            raise UserError(f"{path} not found")
    rows = read_csv(metrics_csv)
    if not rows:
        raise UserError(f"{metrics_csv} has no rows")
    missing = [c for c in ("case_id", "structure", *TABLE_METRICS) if c not in rows[0]]
    if missing:
        raise UserError(f"{metrics_csv} lacks the column(s) {', '.join(missing)}: not a metrics.csv of "
                        f"nnunet-breast evaluate")
    cohort = {r["case_id"]: r for r in read_csv(cohort_csv)} if cohort_csv else {}
    if by and not cohort:
        raise UserError("--by needs the dataset's cohort.csv")
    columns, table = build_table(rows, cohort, by)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out_dir / "table.md", "csv": out_dir / "table.csv"}
    md = ["| " + " | ".join(c.replace(" dsc", " DSC").replace(" hd95", " HD95 (mm)") for c in columns) + " |",
          "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(str(t[c]) for c in columns) + " |" for t in table]
    md += ["", "Mean ± SD (n) over the cases whose reference has the structure; \"not evaluated\": cases whose "
           "reference lacks it (not contoured there), left out."]
    files["markdown"].write_text("\n".join(md) + "\n")
    numeric = ["structure"] + [k for k in table[0] if k.endswith(("_mean", "_sd", "_n", " n_not_evaluated"))]
    with open(files["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, numeric, extrasaction="ignore")
        w.writeheader()
        w.writerows(table)
    for metric in TABLE_METRICS:
        files[f"boxplot_{metric}"] = boxplot(rows, metric, out_dir / f"boxplot_{metric}.png")
    return files


def boxplot(rows: list[dict], metric: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    structures = list(dict.fromkeys(r["structure"] for r in rows))
    used = [r for r in rows if _evaluated(r)]                 # not-evaluated rows left out, as in the tables
    data = [[v for v in (_float(r, metric) for r in used if r["structure"] == s) if math.isfinite(v)]
            for s in structures]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(structures)), 4))
    ax.boxplot([d if d else [math.nan] for d in data], showfliers=True)
    ax.set_xticks(range(1, len(structures) + 1), [f"{s} ({len(d)})" for s, d in zip(structures, data)],
                  rotation=60, ha="right", fontsize=8)
    ax.set_ylabel({"dsc": "DSC", "hd95": "HD95 (mm)"}.get(metric, metric))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
