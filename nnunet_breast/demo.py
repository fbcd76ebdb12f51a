"""``nnunet-breast demo``: the whole loop on synthetic patients, with no data of the user's.

Synthetic TPS exports (DICOM CT + RTSTRUCT) -> converters -> stock nnU-Net planning and preprocessing +
our plans -> short training of the breast model (EfficientNet-B0 U-Net) and the clip model -> evaluation
tables and plots -> prediction on new synthetic patients: NIfTI masks, RTSTRUCTs for the TPS, clips.json,
tumour-bed proposals, PNG previews. Every nnU-Net step is the stock CLI, printed as it runs, so the demo
doubles as a recipe. Its nnU-Net folders live inside ``--out``; the user's own are never touched.

Training is a short schedule, fold 0 (:data:`SCHEDULES`; on CPU 700 breast and 200 clip iterations, clip patches
of 64): the contours show that everything is wired, not what a real training run reaches. The clip model is the
single-stage Res-SE-U-Net by default; ``--cascade`` trains the two-stage cascade instead (five stage-1 folds for
the out-of-fold maps, then stage 2; a few minutes more).
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_breast.errors import UserError

BREAST_ID, CLIPS_ID, STAGE2_ID, CLIPS_TEST_ID, BREAST_TEST_ID = 701, 702, 703, 704, 705
#: (breast configuration, breast trainer, clip trainer suffix, clip patch edge) per device. CPU: the CPU
#: configuration (``plan --cpu``: coarse spacing, small patch, 1/4-width B0) and clip patches of 64 voxels
#: in-plane (``plan --model clips --patch 64``: 2.7x faster epochs than the paper's 96, as many clips found on
#: 8 new patients; docs/benchmarks.md) for a few minutes; GPU: nnU-Net's 3d_fullres spacing and patch, the
#: paper's clip patch, 10 / 5 nnU-Net epochs of 250 iterations
SCHEDULES = {"cpu": ("3d_cpu_effnetb0", "nnUNetTrainerEffNetB0DemoCPU", "DemoCPU", 64),
             "cuda": ("3d_fullres_effnetb0", "nnUNetTrainerEffNetB0_10epochs", "_5epochs", 96)}


class DemoError(UserError):
    """A demo step failed; the message names the command and the end of its log."""


class Demo:
    def __init__(self, out: Path, device: str, n_train: int, n_new: int, cascade: bool = False,
                 breast_trainer: str | None = None, clip_suffix: str | None = None, *, n_train_clips: int):
        """Case counts without defaults: ``nnunet-breast demo``'s options hold them, in one place."""
        self.out = Path(out).resolve()
        self.device = device
        self.n_train, self.n_new, self.cascade, self.n_train_clips = n_train, n_new, cascade, n_train_clips
        self.breast_config = SCHEDULES[device][0]
        self.breast_trainer = breast_trainer or SCHEDULES[device][1]
        self.clip_suffix = clip_suffix or SCHEDULES[device][2]
        self.clip_patch = SCHEDULES[device][3]
        self.np = str(max(1, min(2, os.cpu_count() or 1)))      # worker processes of each nnU-Net step
        self.users_settings = {k: v for k, v in os.environ.items()       # before run() exports the demo's own
                               if k in ("nnUNet_def_n_proc", "nnUNet_n_proc_DA", "nnUNet_compile")}
        self.logs = self.out / "logs"
        self.t0 = time.perf_counter()
        self.step_no = 0

    # ------------------------------------------------------------------------------------------ plumbing
    def environ(self, training: bool = False) -> dict[str, str]:
        """nnU-Net's variables for the demo's steps; the user's own win. A CPU training augments in its own
        process (``nnUNet_n_proc_DA=0``): worker processes beside torch's threads on the same two cores made the
        demo's epochs up to 28 % longer, never shorter (docs/benchmarks.md); nnU-Net's planner cannot take 0."""
        from nnunet_breast.env import child_environ

        nn = {v: str(self.out / "nnunet" / v) for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
        in_process = training and self.device == "cpu"
        defaults = {"nnUNet_def_n_proc": self.np, "nnUNet_n_proc_DA": "0" if in_process else self.np,
                    "nnUNet_compile": "false"}
        return child_environ(**{**defaults, **self.users_settings, **nn})

    def step(self, title: str) -> None:
        self.step_no += 1
        print(f"\n[{self.step_no}] {title}  (t = {time.perf_counter() - self.t0:.0f} s)", flush=True)

    def sh(self, *cmd) -> None:
        """Run a console script of this environment, log its output, fail loudly."""
        cmd = [str(c) for c in cmd]
        print("  $ " + " ".join(cmd), flush=True)
        exe = Path(sys.executable).parent / cmd[0]
        log = self.logs / f"{self.step_no:02d}_{cmd[0]}_{int(time.time() * 1000) % 100000}.log"
        with open(log, "w") as f:
            r = subprocess.run([str(exe) if exe.exists() else cmd[0], *cmd[1:]], stdout=f, stderr=subprocess.STDOUT,
                               env=self.environ(training=cmd[0] == "nnUNetv2_train"))
        if r.returncode != 0:
            tail = log.read_text()[-2000:]
            raise DemoError(f"`{' '.join(cmd)}` failed (exit {r.returncode}); log {log}:\n{tail}")

    # ------------------------------------------------------------------------------------------ the demo
    def run(self) -> dict[str, Path]:
        if self.out.exists():
            shutil.rmtree(self.out)          # the demo folder is the demo's own: rebuilt from scratch
        self.logs.mkdir(parents=True)
        for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            (self.out / "nnunet" / v).mkdir(parents=True)
        os.environ.update({k: v for k, v in self.environ().items() if k.startswith("nnUNet_")})
        self.make_data()
        self.train_breast()
        self.train_clips()
        evaluation = self.evaluate()
        predictions = self.predict()
        outputs = {**evaluation, **predictions, "new patients scores": self.score_new_patients(predictions["predictions"])}
        self.step(f"done in {time.perf_counter() - self.t0:.0f} s")
        for k, v in outputs.items():
            print(f"  {k:<28} {v}")
        return outputs

    def make_data(self) -> None:
        from nnunet_breast.synth.cohort import write_cohort

        self.step("synthetic TPS exports (DICOM CT + RTSTRUCT [+ RTDOSE])")
        exports = self.out / "exports"
        # training: what clinics export (treated side only, some structures missing); new patients: boost
        # patients (clips) with every structure contoured, to score both models against
        write_cohort("breast", self.n_train, exports / "breast_train", seed=0, size="small", labels="clinical")
        write_cohort("clips", self.n_train_clips, exports / "clips_train", seed=0, size="small")
        write_cohort("clips", self.n_new, exports / "new_patients", seed=2026, size="small", labels="full",
                     structures=True)
        self.step("convert to nnU-Net datasets")
        self.sh("nnunet-breast", "convert", "breast", "-i", exports / "breast_train", "-d", BREAST_ID, "-np", self.np)
        self.sh("nnunet-breast", "convert", "clips", "-i", exports / "clips_train", "-d", CLIPS_ID, "-np", self.np)
        self.sh("nnunet-breast", "convert", "clips", "-i", exports / "new_patients", "-d", CLIPS_TEST_ID,
                "--name", "NewPatientsClips", "-np", self.np)
        self.sh("nnunet-breast", "convert", "breast", "-i", exports / "new_patients", "-d", BREAST_TEST_ID,
                "--name", "NewPatientsBreast", "-np", self.np)

    def train_breast(self) -> None:
        self.step(f"breast model: stock planning + EfficientNet-B0 plans ({self.breast_config}), train fold 0")
        if self.breast_config == "3d_cpu_effnetb0":
            self.sh("nnUNetv2_plan_and_preprocess", "-d", BREAST_ID, "--no_pp", "-np", self.np)
            self.sh("nnunet-breast", "plan", "-d", BREAST_ID, "--no-paper", "--cpu")
            self.sh("nnUNetv2_preprocess", "-d", BREAST_ID, "-c", self.breast_config, "-np", self.np)
        else:
            self.sh("nnUNetv2_plan_and_preprocess", "-d", BREAST_ID, "-c", "3d_fullres", "-np", self.np)
            self.sh("nnunet-breast", "plan", "-d", BREAST_ID, "--no-paper")
        self.sh("nnUNetv2_train", BREAST_ID, self.breast_config, "0", "-tr", self.breast_trainer, "--npz",
                "-device", self.device)

    def train_clips(self) -> None:
        t1, t2, ts = (f"nnUNetTrainerClip{n}{self.clip_suffix}" for n in ("Location", "Segmentation", "SingleStage"))
        self.step("clip model: stock planning + Res-SE-U-Net plans, train")
        self.sh("nnUNetv2_plan_and_preprocess", "-d", CLIPS_ID, "--no_pp", "-np", self.np)
        self.sh("nnunet-breast", "plan", "-d", CLIPS_ID, "--model", "clips", "--patch", self.clip_patch)
        if not self.cascade:
            self.sh("nnUNetv2_preprocess", "-d", CLIPS_ID, "-c", "3d_clip_fullres", "-np", self.np)
            self.sh("nnUNetv2_train", CLIPS_ID, "3d_clip_fullres", "0", "-tr", ts, "-device", self.device)
            return
        self.sh("nnUNetv2_preprocess", "-d", CLIPS_ID, "-c", "3d_clip_location", "-np", self.np)
        for fold in range(5):
            self.sh("nnUNetv2_train", CLIPS_ID, "3d_clip_location", fold, "-tr", t1, "--npz", "-device", self.device)
        self.sh("nnunet-breast", "cascade", "prepare", "-d", CLIPS_ID, "--stage2-id", STAGE2_ID, "-tr", t1)
        self.sh("nnUNetv2_plan_and_preprocess", "-d", STAGE2_ID, "--no_pp", "-np", self.np)
        self.sh("nnunet-breast", "plan", "-d", STAGE2_ID, "--model", "clips", "--patch", self.clip_patch)
        self.sh("nnUNetv2_preprocess", "-d", STAGE2_ID, "-c", "3d_clip_segmentation", "-np", self.np)
        self.sh("nnUNetv2_train", STAGE2_ID, "3d_clip_segmentation", "0", "-tr", t2, "-device", self.device)

    def evaluate(self) -> dict[str, Path]:
        from nnunet_breast.env import dataset_dir

        self.step("evaluate the breast model on its fold-0 validation cases (tables + box plots)")
        raw = dataset_dir("nnUNet_raw", BREAST_ID)
        val = (dataset_dir("nnUNet_results", BREAST_ID) / f"{self.breast_trainer}__nnUNetPlans__{self.breast_config}"
               / "fold_0" / "validation")
        ev = self.out / "evaluation_breast"
        self.sh("nnunet-breast", "evaluate", "--ref", raw / "labelsTr", "--pred", val, "-d", BREAST_ID, "-o", ev,
                "-np", self.np)
        self.sh("nnunet-breast", "report", "--metrics", ev / "metrics.csv", "-d", BREAST_ID, "--by", "contrast",
                "-o", ev / "report")
        return {"breast metrics": ev / "metrics.csv", "breast report": ev / "report"}

    def predict(self) -> dict[str, Path]:
        self.step("predict on new patients (DICOM in): contours, clips, tumour-bed proposal, RTSTRUCT, previews")
        out = self.out / "predictions"
        clip_args = (["--clips-method", "cascade", "--clips-d", CLIPS_ID, "--stage2-id", STAGE2_ID,
                      "--clips-tr", f"nnUNetTrainerClipLocation{self.clip_suffix}",
                      "--stage2-tr", f"nnUNetTrainerClipSegmentation{self.clip_suffix}"] if self.cascade else
                     ["--clips-method", "single", "--clips-d", CLIPS_ID,
                      "--clips-tr", f"nnUNetTrainerClipSingleStage{self.clip_suffix}"])
        self.sh("nnunet-breast", "predict", "-i", self.out / "exports" / "new_patients", "-o", out, "--model", "both",
                "-d", BREAST_ID, "-tr", self.breast_trainer, "-c", self.breast_config, *clip_args,
                "-device", self.device)
        table = self.score_clips(out)
        return {"predictions": out, "summary": out / "summary.csv", "clip scores": table,
                "RTSTRUCTs": out / "*/RS.*.dcm", "previews": out / "*/preview.png"}

    def score_clips(self, pred: Path) -> Path:
        """Clip DSC / HD95 / detection of the new patients against their (synthetic) truth."""
        from nnunet_breast.env import dataset_dir
        from nnunet_breast.evaluation.clip_scores import CLIP_SCORE_COLUMNS, score_clip_mask
        from nnunet_breast.util.files import atomic_write_csv

        truth = dataset_dir("nnUNet_raw", CLIPS_TEST_ID) / "labelsTr"
        rows = []
        for ref_file in sorted(truth.glob("*.nii.gz")):
            cid = ref_file.name[: -len(".nii.gz")]
            ref_img = sitk.ReadImage(str(ref_file))
            ref = sitk.GetArrayFromImage(ref_img) > 0
            got = sitk.GetArrayFromImage(sitk.ReadImage(str(pred / cid / "masks" / "Clips.nii.gz"))) > 0
            sp = ref_img.GetSpacing()[::-1]
            score = score_clip_mask(cid, ref, got, sp).as_dict()
            rows.append({k: round(v, 4) if isinstance(v, float) else v for k, v in score.items()})
        path = self.out / "evaluation_clips.csv"
        atomic_write_csv(path, CLIP_SCORE_COLUMNS, rows)
        for r in rows:
            print(f"  {r['case_id']}: clip DSC {r['dsc']:.3f}, found {r['clips_found']}, missed {r['clips_missed']}, "
                  f"false {r['clips_false']}")
        return path

    def score_new_patients(self, pred: Path) -> Path:
        """The breast model's masks on the new patients against their full structure sets (``nnunet-breast
        evaluate`` reads ``predict``'s output): ``evaluation_new_patients.csv``, one row per case and structure;
        printed as per-structure means."""
        from nnunet_breast.env import dataset_dir
        from nnunet_breast.evaluation.metrics import is_evaluated
        from nnunet_breast.util.files import atomic_write_csv

        self.step("score the breast model on the new patients (every structure contoured)")
        raw = dataset_dir("nnUNet_raw", BREAST_TEST_ID)
        ev = self.out / "evaluation_new_patients"
        self.sh("nnunet-breast", "evaluate", "--ref", raw / "labelsTr", "--pred", pred, "-d", BREAST_TEST_ID,
                "-o", ev, "-np", self.np)
        rows = [{"case_id": r["case_id"], "structure": r["structure"], "dsc": r["dsc"], "hd95_mm": r["hd95"],
                 "volume_ref_cc": r["volume_ref_cc"], "volume_pred_cc": r["volume_pred_cc"],
                 "evaluated": is_evaluated(r)} for r in read_summary(ev / "metrics.csv")]
        path = self.out / "evaluation_new_patients.csv"
        atomic_write_csv(path, list(rows[0]), rows)
        print(new_patients_table(rows))
        return path


def new_patients_table(rows: list[dict]) -> str:
    """Per-structure mean DSC / HD95 over the cases that contour it, and the mean over structures."""
    by: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r["evaluated"]:
            by.setdefault(r["structure"], []).append((float(r["dsc"]), float(r["hd95_mm"])))
    lines = [f"  {'structure':<16} {'DSC':>6} {'HD95 mm':>8}  cases"]
    means = []
    for name, scores in by.items():
        dsc = float(np.mean([s[0] for s in scores]))
        hds = [s[1] for s in scores if np.isfinite(s[1])]           # no HD95 where nothing was predicted
        means.append(dsc)
        hd = f"{np.mean(hds):8.1f}" if hds else f"{'-':>8}"
        lines.append(f"  {name:<16} {dsc:6.3f} {hd}  {len(scores)}")
    lines.append(f"  {'mean':<16} {np.mean(means):6.3f}")
    return "\n".join(lines)


def read_summary(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_outputs(out: Path) -> dict[str, int]:
    """Read every demo output back (RTSTRUCT with pydicom, masks with SimpleITK, PNGs); counts per kind."""
    import pydicom
    from PIL import Image

    counts = {"rtstruct": 0, "masks": 0, "png": 0}
    for rs in out.glob("predictions/*/RS.*.dcm"):
        ds = pydicom.dcmread(rs)
        assert ds.Modality == "RTSTRUCT" and len(ds.StructureSetROISequence) > 0
        counts["rtstruct"] += 1
    for m in out.glob("predictions/*/masks/*.nii.gz"):
        assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(m))))) <= {0, 1}
        counts["masks"] += 1
    for png in list(out.glob("predictions/*/preview.png")) + list(out.glob("evaluation_breast/report/*.png")):
        with Image.open(png) as im:
            im.verify()
        counts["png"] += 1
    return counts
