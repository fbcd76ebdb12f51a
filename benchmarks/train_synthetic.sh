#!/usr/bin/env bash
# Short real training on the synthetic breast cohort: EfficientNet-B0 U-Net vs vanilla nnU-Net, same folds.
#
#   bash benchmarks/train_synthetic.sh WORKDIR [N_CASES=20] [EPOCHS=50] [DEVICE=cuda] [FOLDS="0"]
#
# Generates N cases, converts them, plans (stock + `nnunet-breast plan`), trains nnUNetTrainerEffNetB0_<E>epochs
# on 3d_fullres_effnetb0 and nnUNetTrainerNoLRMirroring_<E>epochs (vanilla nnU-Net under the same no-left-right-
# mirroring and partial-label rules) on 3d_fullres for the given folds, then evaluates the
# out-of-fold validation predictions and compares the two models. Prints the summary lines at the end.
# On a GPU both models train at the same time (one GPU has room for both small runs).
set -euo pipefail
work=${1:?usage: train_synthetic.sh WORKDIR [N_CASES] [EPOCHS] [DEVICE] [FOLDS]}
n=${2:-20}; epochs=${3:-50}; device=${4:-cuda}; folds=${5:-0}
mkdir -p "$work"
export nnUNet_raw=$work/raw nnUNet_preprocessed=$work/preprocessed nnUNet_results=$work/results
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
eval "$(nnunet-breast env --shell)"
nnunet-breast synth --cohort breast --n "$n" --out "$work/export" --seed 0
nnunet-breast convert breast --input "$work/export" --dataset-id 501 -np "${nnUNet_def_n_proc:-4}"
nnunet-breast splits -d 501 --stratify contrast
nnUNetv2_plan_and_preprocess -d 501 -c 3d_fullres -np "${nnUNet_def_n_proc:-4}"
nnunet-breast plan -d 501 --no-paper
ours=nnUNetTrainerEffNetB0_${epochs}epochs    # _5, _10 and _50 exist, as nnU-Net's own _Xepochs
vanilla=nnUNetTrainerNoLRMirroring_${epochs}epochs   # _5, _10 and _50 exist
for f in $folds; do
  if [ "$device" = cuda ]; then
    nnUNetv2_train 501 3d_fullres_effnetb0 "$f" -tr "$ours" -device cuda > "$work/train_ours_$f.log" 2>&1 &
    nnUNetv2_train 501 3d_fullres "$f" -tr "$vanilla" -device cuda > "$work/train_vanilla_$f.log" 2>&1 &
    wait
  else
    nnUNetv2_train 501 3d_fullres_effnetb0 "$f" -tr "$ours" -device "$device"
    nnUNetv2_train 501 3d_fullres "$f" -tr "$vanilla" -device "$device"
  fi
done
grep -h "Epoch time" "$work"/*/Dataset501_BreastRT/*/fold_*/training_log_*.txt 2>/dev/null | tail -2 || true
a=${vanilla}__nnUNetPlans__3d_fullres
b=${ours}__nnUNetPlans__3d_fullres_effnetb0
for model in "$a" "$b"; do
  mkdir -p "$work/val_$model"
  for f in $folds; do cp "$nnUNet_results"/Dataset501_BreastRT/"$model"/fold_"$f"/validation/*.nii.gz "$work/val_$model/"; done
  nnunet-breast evaluate --ref "$nnUNet_raw/Dataset501_BreastRT/labelsTr" --pred "$work/val_$model" -d 501 \
    -o "$work/eval_$model" -np 4
done
# shellcheck disable=SC2086
nnunet-breast compare -d 501 --a "$a" --b "$b" -f $folds -o "$work/compare"
grep -h '"mean_dsc"' "$work"/eval_*/summary.json || true
