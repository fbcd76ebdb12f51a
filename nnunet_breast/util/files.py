"""Writing result files so that a reader never sees half a file: write a temporary sibling, then rename."""
from __future__ import annotations

import csv
import os
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """CSV with a header; keys of ``rows`` outside ``columns`` are ignored."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
