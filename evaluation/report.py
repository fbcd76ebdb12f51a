"""Paper-style tables from metrics.csv: mean +- SD of DSC and HD95 per structure, overall and by subgroup.

Subgroups come from the dataset's cohort.csv (contrast, site, side, ...), as in Table 1 of Chung et al.
(total / contrast / non-contrast). Writes Markdown and CSV tables and box plots (PNG).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

TABLE_METRICS = ("dsc", "hd95")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _stats(values: list[float]) -> tuple[float, float, int]:
    v = np.array([x for x in values if math.isfinite(x)], float)
    if not v.size:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def build_table(rows: list[dict], cohort: dict[str, dict], by: list[str]) -> tuple[list[str], list[dict]]:
    """Rows: one per structure; columns: '<group> <metric>' with 'mean +- sd (n)' and numeric companions."""
    groups: dict[str, set[str]] = {"all": {r["case_id"] for r in rows}}
    for key in by:
        for cid in groups["all"]:
            if cid not in cohort:
                raise ValueError(f"case {cid} is missing from cohort.csv")
            if key not in cohort[cid]:
                raise ValueError(f"cohort.csv has no column {key!r}; columns: {', '.join(cohort[cid])}")
            groups.setdefault(f"{key}={cohort[cid][key]}", set()).add(cid)
    structures = list(dict.fromkeys(r["structure"] for r in rows))
    table, columns = [], ["structure"]
    for g in groups:
        columns += [f"{g} {m}" for m in TABLE_METRICS]
    for s in structures:
        line = {"structure": s}
        for g, members in groups.items():
            for m in TABLE_METRICS:
                mean, sd, n = _stats([float(r[m]) for r in rows if r["structure"] == s and r["case_id"] in members])
                line[f"{g} {m}"] = f"{mean:.3f} ± {sd:.3f} ({n})" if m == "dsc" else f"{mean:.2f} ± {sd:.2f} ({n})"
                line[f"{g} {m}_mean"], line[f"{g} {m}_sd"], line[f"{g} {m}_n"] = mean, sd, n
        table.append(line)
    return columns, table


def write_report(metrics_csv: Path, cohort_csv: Path | None, out_dir: Path, by: list[str]) -> dict[str, Path]:
    rows = read_csv(metrics_csv)
    if not rows:
        raise ValueError(f"{metrics_csv} has no rows")
    cohort = {r["case_id"]: r for r in read_csv(cohort_csv)} if cohort_csv else {}
    if by and not cohort:
        raise ValueError("--by needs the dataset's cohort.csv")
    columns, table = build_table(rows, cohort, by)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"markdown": out_dir / "table.md", "csv": out_dir / "table.csv"}
    md = ["| " + " | ".join(c.replace(" dsc", " DSC").replace(" hd95", " HD95 (mm)") for c in columns) + " |",
          "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(str(t[c]) for c in columns) + " |" for t in table]
    files["markdown"].write_text("\n".join(md) + "\n")
    numeric = ["structure"] + [k for k in table[0] if k.endswith(("_mean", "_sd", "_n"))]
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
    data = [[float(r[metric]) for r in rows if r["structure"] == s and math.isfinite(float(r[metric]))]
            for s in structures]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(structures)), 4))
    ax.boxplot(data, showfliers=True)
    ax.set_xticks(range(1, len(structures) + 1), structures, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel({"dsc": "DSC", "hd95": "HD95 (mm)"}.get(metric, metric))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
