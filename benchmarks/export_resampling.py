"""nnU-Net's export of a whole CT's probabilities: its default resampling (SciPy) vs its own torch resampling.

nnU-Net resamples the network's logits from the plans' spacing back to the CT's grid before decoding them
(``resampling_fn_probabilities`` in the plans). Shapes as in ``benchmarks/inference_speed.py``'s case (a
512 x 512 x 100 CT at 1.27 x 1.27 x 3 mm, 20 structures): the default configuration's grid (1.17 mm) and the CPU
configuration's (9.54 x 9.54 x 18.75 mm). Both functions are nnU-Net's, called as its export calls them, with the
kwargs in the plans (``resample_data_or_seg_to_shape``: stock ExperimentPlanner's; ``resample_torch_fornnunet``:
what ``nnunet-breast plan`` writes, ``planning.common.TORCH_EXPORT``); the output difference is printed. Random logits (the cost does not depend on the values).

    python benchmarks/export_resampling.py [--channels 20] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
from nnunetv2.preprocessing.resampling.resample_torch import resample_torch_fornnunet

from nnunet_breast.planning.common import TORCH_EXPORT

CT_SHAPE, CT_SPACING = (100, 512, 512), (3.0, 1.27, 1.27)
GRIDS = {"3d_fullres_effnetb0": (3.0, 1.17, 1.17), "3d_cpu_effnetb0": (18.75, 9.54, 9.54)}
SCIPY_KW = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
TORCH_KW = TORCH_EXPORT["resampling_fn_probabilities_kwargs"]      # what `nnunet-breast plan` writes


def timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    rows = []
    for config, spacing in GRIDS.items():
        shape = [round(n * s / t) for n, s, t in zip(CT_SHAPE, CT_SPACING, spacing)]
        logits = np.random.default_rng(0).standard_normal((args.channels, *shape), dtype=np.float32)
        t_scipy, a = timed(lambda: resample_data_or_seg_to_shape(logits, CT_SHAPE, spacing, CT_SPACING, **SCIPY_KW),
                           args.repeats)
        t_torch, b = timed(lambda: resample_torch_fornnunet(torch.from_numpy(logits), CT_SHAPE, spacing, CT_SPACING,
                                                            **TORCH_KW), args.repeats)
        b = b.numpy() if isinstance(b, torch.Tensor) else b
        diff = np.abs(a.astype(np.float32) - b.astype(np.float32))
        rows.append({"configuration": config, "grid": shape, "scipy_s": round(t_scipy, 2), "torch_s": round(t_torch, 2),
                     "speedup": round(t_scipy / t_torch, 1), "max_abs_diff": float(diff.max()),
                     "mean_abs_diff": float(diff.mean())})
    print("| configuration | grid (z, y, x) | nnU-Net default (SciPy) s | nnU-Net torch s | speed-up | "
          "mean / max abs diff (logits) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['configuration']} | {r['grid']} | {r['scipy_s']} | {r['torch_s']} | {r['speedup']}x | "
              f"{r['mean_abs_diff']:.3g} / {r['max_abs_diff']:.3g} |")
    print(json.dumps({"benchmark": "export_resampling", "channels": args.channels, "threads": threads,
                      "ct_shape": CT_SHAPE, "rows": rows}))


if __name__ == "__main__":
    main()
