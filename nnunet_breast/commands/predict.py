"""Contours for new planning CTs: breast structures, surgical clips + tumour-bed proposal, or both.

  nnunet-breast predict -i DICOM_OR_NIFTI -o OUT --model breast -d 501 [-f 0 1 2 3 4]
  nnunet-breast predict -i IN -o OUT --model clips --clips-d 502 --stage2-id 503
  nnunet-breast predict -i IN -o OUT --model both -d 501 --clips-d 502 --stage2-id 503 [-device cuda]

Input: a DICOM export (any layout, one or many patients; non-CT objects are ignored) or NIfTI CTs in HU.
Per case OUT/<case>/: masks/<Structure>.nii.gz, RS.<case>.dcm (RTSTRUCT for the TPS, DICOM input only),
clips.json and masks/CTV_TumorBed_proposal.nii.gz (clip model), preview.png, summary.json. OUT/summary.csv: one
row per finished case in OUT. For the TPS (DICOM input): --structure-set-label, --series-description,
--name-map names.json, --add-to RS.dcm [--on-clash refuse|suffix], --seg (SEG.<case>.dcm, DICOM Segmentation).
Existing case folders are skipped (--overwrite replaces them). -num_parts/-part_id split the cases between
machines as nnUNetv2_predict does; parts may run at the same time into one OUT. Exit 0 on success, 2 on a
refused run (bad input, missing model).
"""
from __future__ import annotations

from nnunet_breast.commands import options

HELP = "predict on new CTs (DICOM or NIfTI) -> NIfTI masks, RTSTRUCT, clips.json, tumour-bed proposal, PNG"


def add_arguments(p):
    options.add_input_output(p)
    options.add_prediction(p)
    p.add_argument("-num_parts", type=int, default=1)
    p.add_argument("-part_id", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing case folders")


def run(args) -> int:
    from dataclasses import replace

    from nnunet_breast.inference.predict import predict

    opts = replace(options.predict_options(args), num_parts=args.num_parts, part_id=args.part_id,
                   overwrite=args.overwrite)
    results = predict(args.input, args.output, opts)
    for r in results:
        if r.skipped:
            print(f"{r.case_id}: exists, skipped (--overwrite to redo)")
            continue
        extra = f", {r.n_clips} clip(s), tumour-bed proposal {r.proposal_cc} cc" if r.n_clips is not None else ""
        rs = f", {r.rtstruct.name}" if r.rtstruct else ""
        if r.seg:
            rs += f", {r.seg.name}" + (f" (empty, left out: {', '.join(r.seg_left_out)})" if r.seg_left_out else "")
        print(f"{r.case_id}: {len(r.structures)} structure(s){extra}{rs} -> {r.folder}")
    print(f"summary: {args.output / 'summary.csv'}")
    return 0
