"""Speed of the 20-structure evaluation on a full-size synthetic case (512 x 512 x 100).

    python benchmarks/metrics_speed.py [--index 0] [--seed 0] [--repeat 1]

This script generates breast case ``index`` with ``size="full"`` and builds predictions by perturbing the
reference masks. Structures take turns at a 1-voxel binary dilation, a 2-voxel in-plane shift, a
1-slice shift and a 1-voxel erosion. It then times :func:`nnunet_breast.evaluation.metrics.evaluate_case`
(DSC, HD95, HD, ASSD, surface Dice, volumes) over all structures. If ``medpy`` is importable it also
times ``medpy.metric.binary.hd95`` + ``assd`` on the same mask pairs, skipping empty ones, because MedPy
raises on those. The script prints one JSON line. Without MedPy, ``medpy_s`` and ``ratio`` are null.
``ratio`` is ``medpy_s / ours_s``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
from scipy import ndimage


def perturb(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for i, (name, m) in enumerate(masks.items()):
        kind = i % 4
        if kind == 0:
            p = ndimage.binary_dilation(m)
        elif kind == 1:
            p = np.roll(m, 2, axis=2)
        elif kind == 2:
            p = np.roll(m, 1, axis=0)
        else:
            p = ndimage.binary_erosion(m)
        out[name] = p
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="time the evaluation this many times, keep the best")
    args = ap.parse_args(argv)

    from nnunet_breast.evaluation.metrics import evaluate_case
    from nnunet_breast.evaluation.surface import surfel_area_table
    from nnunet_breast.synth.cohort import make_case

    t0 = time.perf_counter()
    case = make_case("breast", args.index, args.seed, size="full")
    gen_s = time.perf_counter() - t0
    spacing_zyx = tuple(float(s) for s in case.grid.spacing[::-1])
    ref = {k: np.asarray(v, bool) for k, v in case.masks.items()}
    pred = perturb(ref)

    surfel_area_table(spacing_zyx)          # build the table once, outside the timing (~0.05 s)
    ours = []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        res = evaluate_case(ref, pred, spacing_zyx)
        ours.append(time.perf_counter() - t0)
    ours_s = min(ours)

    medpy_s = None
    medpy_hd95_mean_abs_diff = None
    try:
        from medpy.metric import binary as mb
    except ImportError:
        mb = None
    if mb is not None:
        t0 = time.perf_counter()
        medpy_hd95 = {}
        for name in ref:
            if ref[name].any() and pred[name].any():
                medpy_hd95[name] = mb.hd95(pred[name], ref[name], voxelspacing=spacing_zyx)
                mb.assd(pred[name], ref[name], voxelspacing=spacing_zyx)
        medpy_s = time.perf_counter() - t0
        if medpy_hd95:
            medpy_hd95_mean_abs_diff = float(np.mean([abs(medpy_hd95[k] - res[k].hd95) for k in medpy_hd95]))

    out = {
        "benchmark": "metrics_speed",
        "case": case.case_id,
        "shape_zyx": list(case.grid.shape),
        "spacing_zyx": list(spacing_zyx),
        "n_structures": len(ref),
        "voxels_per_structure_mean": int(np.mean([m.sum() for m in ref.values()])),
        "generate_s": round(gen_s, 3),
        "ours_s": round(ours_s, 3),
        "ours_per_structure_s": round(ours_s / max(1, len(ref)), 4),
        "medpy_s": None if medpy_s is None else round(medpy_s, 3),
        "ratio": None if medpy_s is None else round(medpy_s / ours_s, 2),
        "medpy_hd95_mean_abs_diff_mm": medpy_hd95_mean_abs_diff,
        "hd95_mean_mm": float(np.nanmean([r.hd95 for r in res.values()])),
        "dsc_mean": float(np.nanmean([r.dsc for r in res.values()])),
        "python": platform.python_version(),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
