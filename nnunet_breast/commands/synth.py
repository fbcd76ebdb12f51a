"""Generate a synthetic cohort written as a treatment planning system exports it.

Each case is a folder <out>/<PatientID>/ with one DICOM CT file per slice, an RTSTRUCT (RS.*.dcm) and, for
the breast cohort, an RTPLAN (RP.*.dcm) and its RTDOSE (RD.*.dcm). Same --seed, same files (UIDs included);
case k does not depend on --n.
Breast --labels: clinical (default) contours what a clinic exports, the treated side's CTVs for a per-case nodal
indication and now and then no thyroid or esophagus; full contours all 20 structures on both sides (held-out
evaluation). The CT and dose of a case are the same for both.
--orientation: the patient position of the scan (head-/feet-first, supine/prone, decubitus left/right), with
"-negated" the same scan stored with negated direction cosines. The patient is the same in every orientation
(anatomy, clips and dose at the same patient coordinates); the couch lies under the patient, PatientPosition,
ImageOrientationPatient and ImagePositionPatient follow.
"""
from __future__ import annotations

from pathlib import Path

from nnunet_breast.errors import UserError

HELP = "write synthetic DICOM CT + RTSTRUCT (+ RTPLAN + RTDOSE) phantom cohorts"
POSITIONS = ("HFS", "HFP", "FFS", "FFP", "HFDL", "HFDR")            # = nnunet_breast.synth.phantom.POSITIONS
ORIENTATIONS = (*POSITIONS, *(f"{p}-negated" for p in POSITIONS))


def add_arguments(p):
    p.add_argument("--cohort", required=True, choices=("breast", "clips"))
    p.add_argument("--n", type=int, required=True, help="number of cases")
    p.add_argument("--out", required=True, type=Path, help="output folder (created; cases replaced whole)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=("small", "full", "slab"), default="small",
                   help="small: ~96x96x44 voxels, a scaled-down body, for CPU tests; full: 512x512x100; slab: a full "
                        "case cut to 120 mm of slices around the tumour bed (real-scale anatomy for CPU training)")
    p.add_argument("--labels", choices=("clinical", "full"), default="clinical",
                   help="breast cohort: clinical (default): what a clinic exports, the treated side's CTVs for a "
                        "per-case nodal indication (breast only / + L1-L3 / + all nodal CTVs), now and then no "
                        "thyroid or esophagus (probabilities in docs/methods.md); full: all 20 structures on both "
                        "sides (research re-contouring, for held-out evaluation). Same CT either way; the clip "
                        "cohort always contours its clips")
    p.add_argument("--with-structures", action="store_true",
                   help="clip cohort: also contour the breast structures (--labels applies), as a boost patient's "
                        "structure set does")
    p.add_argument("--orientation", choices=ORIENTATIONS, default="HFS", metavar="POSITION",
                   help="patient position of the scan: HFS (default), HFP, FFS, FFP, HFDL, HFDR; add -negated for "
                        "the same scan stored with negated row and column direction cosines (e.g. HFS-negated). "
                        "Same patient, same patient coordinates, another scan geometry")
    p.add_argument("-np", "--num-processes", type=int, default=1, help="cases written in parallel (same files)")


def run(args) -> int:
    from nnunet_breast.synth.cohort import write_cohort

    if args.n < 1:
        raise UserError("--n must be at least 1")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")
    written = write_cohort(args.cohort, args.n, args.out, seed=args.seed, size=args.size,
                           num_processes=max(1, args.num_processes), labels=args.labels,
                           orientation=args.orientation, structures=args.with_structures)
    labels = f" ({args.labels} labels)" if args.cohort == "breast" or args.with_structures else ""
    scan = f", scanned {args.orientation}" if args.orientation != "HFS" else ""
    print(f"wrote {len(written)} {args.cohort} cases{labels}{scan} to {args.out}")
    return 0
