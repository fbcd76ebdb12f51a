"""The breast model learns: a short real nnU-Net training on the CPU configuration, scored on new patients.

One run of ``benchmarks/breast_accuracy.py --cpu-config`` through the stock CLIs: six synthetic patients exported as
clinics do (treated side only, some structures missing; seed 0), stratified folds, fold 0 trains ours with the
demo's recipe on 600 iterations (``nnUNetTrainerEffNetB0LearningCPU``: AdamW, 12 x 50, augmentation in the training
process as the demo does) on ``3d_cpu_effnetb0`` (``plan --cpu``) and vanilla nnU-Net's network on the same data on
the tiny schedule (2 x 2: the benchmark's comparison at toy scale, checked for its report's shape, not its
numbers). Ours predicts two fully contoured new patients (another seed) with stock ``nnUNetv2_predict``: heart and
both lungs must reach DSC 0.8 there. A flipped left-right axis, a broken loss, a recipe or a network that stops
learning turns this red. Not timed.

The trained model also checks prediction's fast path (patches for the body's box only, bf16 on capable CPUs) on a
held-out case placed in a scanner-wide field of view of air: the ``grid`` tiling gives nnU-Net's own predictor's
probabilities inside the body, the default ``box`` tiling the same probabilities in two fields of view.
"""
import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_breast.env import child_environ
from nnunet_breast.evaluation.metrics import is_evaluated

TRAINER = "nnUNetTrainerEffNetB0LearningCPU"
VANILLA = "nnUNetTrainerTiny_2epochs"
CONFIG = "3d_cpu_effnetb0"
DATASET = 811                  # the benchmark's training dataset; its new patients are DATASET + 1
BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "breast_accuracy.py"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("learning")
    cmd = [sys.executable, str(BENCHMARK), "--work", str(work), "--n-train", "6", "--n-test", "2", "--cpu-config",
           "--models", "vanilla,ours", "--schedule", "Tiny_2epochs", "--trainer", f"vanilla={VANILLA}",
           "--trainer", f"ours={TRAINER}", "-np", "1", "--device", "cpu"]
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False, timeout=3600,
                       env=child_environ(nnUNet_def_n_proc="1", nnUNet_n_proc_DA="0", nnUNet_compile="false"))
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    dirs = {v: work / v for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    environ = child_environ(**{k: str(v) for k, v in dirs.items()}, nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1",
                            nnUNet_compile="false")
    name = f"Dataset{DATASET}_BreastRT"
    fold = dirs["nnUNet_results"] / name / f"{TRAINER}__nnUNetPlans__{CONFIG}" / "fold_0"
    ours = next((work / "eval").glob(f"ours__{TRAINER}__*"))
    with open(ours / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    plans = json.loads((dirs["nnUNet_preprocessed"] / name / "nnUNetPlans.json").read_text())
    return {"rows": rows, "fold": fold, "config": plans["configurations"][CONFIG], "plans": plans, "dirs": dirs,
            "environ": environ, "work": work, "line": json.loads(r.stdout.strip().splitlines()[-1])}


def test_cpu_configuration_is_planned_from_the_data(trained):
    config = trained["config"]
    assert np.prod(config["patch_size"]) <= 2 * 65536 and config["batch_size"] == 2
    assert config["architecture"]["arch_kwargs"]["stem_features"] >= 16       # the heads' features (see plans.py)
    assert config["spacing"][1] > 1.5           # coarser than the phantoms' 0.9 - 1.37 mm pixels


def test_vanilla_cpu_configuration_is_nnunets_own_network_on_the_same_data(trained):
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(trained["plans"])
    ours, vanilla = plans.get_configuration(CONFIG), plans.get_configuration("3d_cpu")
    assert vanilla.network_arch_class_name.endswith(".PlainConvUNet")
    assert (vanilla.data_identifier, vanilla.spacing, vanilla.patch_size, vanilla.batch_size) == \
        (ours.data_identifier, ours.spacing, ours.patch_size, ours.batch_size)
    net = nnUNetTrainer.build_network_architecture(plans, vanilla, 1, 20, enable_deep_supervision=False)
    with torch.no_grad():
        assert tuple(net(torch.zeros((1, 1, *vanilla.patch_size))).shape) == (1, 20, *vanilla.patch_size)


def test_heart_and_lungs_are_learnt_on_held_out_cases(trained):
    dsc = {}
    for r in trained["rows"]:
        if r["structure"] in ("Heart", "Lung_L", "Lung_R"):
            dsc.setdefault(r["structure"], []).append(float(r["dsc"]))
    assert set(dsc) == {"Heart", "Lung_L", "Lung_R"} and all(len(v) == 2 for v in dsc.values())   # 2 new patients
    means = {k: float(np.mean(v)) for k, v in dsc.items()}
    assert all(m >= 0.8 for m in means.values()), means


def test_the_accuracy_benchmark_reports_both_models(trained):
    """benchmarks/breast_accuracy.py's report: both models, their schedules, sizes, speeds, the paired comparison,
    every structure of the fully contoured new patients in the table; the JSON line = the JSON file."""
    line, work = trained["line"], trained["work"]
    assert line["benchmark"] == "breast_accuracy" and line["device"] == "cpu"
    assert line["seeds"] == {"train": 0, "test": 100}
    assert line["iterations"] == {"vanilla": 4, "ours": 600}          # each role's own schedule, reported per role
    assert set(line["models"]) == {"vanilla", "ours"}
    assert line["models"]["vanilla"]["configuration"] == "3d_cpu"
    assert line["models"]["ours"]["configuration"] == CONFIG
    for model in line["models"].values():
        assert math.isfinite(model["s_per_iter"]) and model["s_per_iter"] > 0
        assert 0.0 <= model["mean_dsc"] <= 1.0
        assert model["params_M"] > 0 and model["gflop"] > 0
    assert line["ratio_s_per_iter_ours_vs_vanilla"] > 0
    assert math.isfinite(line["mean_dsc_diff_ours_minus_vanilla"])
    assert all(isinstance(v, bool) for v in line["goal_met"].values()) and len(line["goal_met"]) == 2
    assert json.loads((work / "breast_accuracy.json").read_text()) == line

    md = (work / "breast_accuracy.md").read_text()
    evaluated = set()
    for metrics in (work / "eval").glob("*/metrics.csv"):
        with open(metrics, newline="") as f:
            evaluated |= {row["structure"] for row in csv.DictReader(f) if is_evaluated(row)}
    assert len(evaluated) == 20                                     # the new patients are contoured in full
    for structure in evaluated:
        assert f"| {structure} | " in md, structure
    assert "**mean DSC**" in md and TRAINER in md and VANILLA in md


def test_training_ran_in_bf16_where_the_cpu_has_it(trained):
    from nnunet_breast.trainers.cpu import cpu_bf16_supported

    log = "".join(p.read_text() for p in trained["fold"].glob("training_log_*.txt"))
    assert ("CPU training in bf16 autocast" if cpu_bf16_supported() else "CPU training in fp32") in log


def test_the_exclusion_term_ramped_up_in_the_real_training(trained):
    """The partial-label loss's exclusion term starts at 0 and reaches its full weight within the first third."""
    log = "".join(p.read_text() for p in sorted(trained["fold"].glob("training_log_*.txt")))
    ramp = [float(v) for v in re.findall(r"exclusion term at ([0-9.]+) of its weight", log)]
    assert ramp[0] == 0.0 and ramp[-1] == 1.0 and ramp == sorted(ramp) and 3 <= len(ramp) <= 6, ramp


PAD = 250       # voxels of air left and right of the small phantoms: a scanner's wide field of view, mostly air
WIDE = ((0, 0), (0, 0), (PAD, PAD))


def _wide_field_of_view(image: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(np.pad(sitk.GetArrayFromImage(image), WIDE, constant_values=-1000))
    out.SetSpacing(image.GetSpacing())
    out.SetDirection(image.GetDirection())
    out.SetOrigin(image.TransformContinuousIndexToPhysicalPoint((-PAD, 0, 0)))
    return out


@pytest.fixture(scope="module")
def wide_case(trained, tmp_path_factory, run_cli):
    """A held-out case in a wide field of view of air, predicted by `nnunet-breast predict` (NIfTI input) in fp32
    (nnUNet_breast_cpu_bf16=0) on the fast path's two tilings and with --no-fast-path (nnU-Net's predictor)."""
    from nnunet_breast.structures.regions import OverlapEncoding

    raw = trained["dirs"]["nnUNet_raw"] / f"Dataset{DATASET}_BreastRT"
    pre = trained["dirs"]["nnUNet_preprocessed"] / f"Dataset{DATASET}_BreastRT"
    case = json.loads((pre / "splits_final.json").read_text())[0]["val"][0]
    root = tmp_path_factory.mktemp("fast_path")
    (root / "ct").mkdir()
    original = sitk.ReadImage(str(raw / "imagesTr" / f"{case}_0000.nii.gz"))
    image = _wide_field_of_view(original)
    sitk.WriteImage(image, str(root / "ct" / f"{case}_0000.nii.gz"))
    out = {}
    for name, flags in (("fast_fp32", ()), ("grid", ("--fast-path", "grid")), ("whole", ("--no-fast-path",))):
        r = run_cli(["nnunet-breast", "predict", "-i", root / "ct", "-o", root / name, "--model", "breast",
                     "-d", DATASET, "-tr", TRAINER, "-c", CONFIG, "-f", "0", "-device", "cpu", "--no-preview", *flags],
                    env=dict(trained["environ"], nnUNet_breast_cpu_bf16="0"))
        assert r.returncode == 0, (name, r.stdout[-2000:], r.stderr[-2000:])
        out[name] = root / name / case / "masks"
    encoding = OverlapEncoding.from_json(json.loads((raw / "dataset.json").read_text())["nnunet_breast"]["encoding"])
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{case}.nii.gz")))
    ref = encoding.decode(np.pad(label, WIDE))
    return {"case": case, "file": root / "ct" / f"{case}_0000.nii.gz", "image": image, "original": original,
            "out": out, "ref": ref, "structures": encoding.structures}


def _mask(folder, name):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{name}.nii.gz"))) > 0


def _dsc(a, b):
    return 2 * (a & b).sum() / max(1, a.sum() + b.sum())


@pytest.fixture
def predictor_for(trained, monkeypatch):
    """predictor_for(fast_path) -> an in-process predictor of the trained fold in fp32, counting its patches."""
    from nnunet_breast.inference.predictor import ModelRef, make_predictor

    for var, path in trained["dirs"].items():
        monkeypatch.setenv(var, str(path))
    monkeypatch.setenv("nnUNet_breast_cpu_bf16", "0")

    def make(fast_path):
        predictor = make_predictor(ModelRef(DATASET, TRAINER, CONFIG, folds=(0,)), "cpu", use_mirroring=False,
                                   fast_path=fast_path)
        predictor.patches = 0
        run_patch = predictor._internal_maybe_mirror_and_predict

        def counted(x):
            predictor.patches += 1
            return run_patch(x)
        predictor._internal_maybe_mirror_and_predict = counted
        return predictor
    return make


def _probabilities(predictor, image: sitk.Image) -> np.ndarray:
    array = sitk.GetArrayFromImage(image).astype(np.float32)[None]
    return predictor.predict_single_npy_array(array, {"spacing": list(image.GetSpacing())[::-1]}, None, None, True)[1]


def test_grid_tiling_gives_nnunets_probabilities_inside_the_body(wide_case, predictor_for):
    """``--fast-path grid``: nnU-Net's own tiles minus those that miss the body's box. Inside the body every
    probability is nnU-Net's full sliding window's (up to the channels-last arithmetic's rounding), so a mask voxel
    may differ only where nnU-Net itself is at 0.5; outside the box, background; fewer patches than nnU-Net ran.
    (Between the body and the box's edge, air, the export's interpolation meets the background outside the box
    found on nnU-Net's grid: there the two may differ.)"""
    from nnunet_breast.volumes.body import body_box, body_mask

    image = wide_case["image"]
    nnunet, grid = predictor_for("off"), predictor_for("grid")
    whole, ours = _probabilities(nnunet, image), _probabilities(grid, image)
    assert 0 < grid.patches < nnunet.patches, (grid.patches, nnunet.patches)
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    body, box = body_mask(hu, image.GetSpacing()), body_box(hu, image.GetSpacing())
    assert np.abs(ours[:, body] - whole[:, body]).max() <= 0.01
    flipped = (ours[:, body] >= 0.5) != (whole[:, body] >= 0.5)
    assert np.all(np.abs(whole[:, body][flipped] - 0.5) <= 0.01)
    outside = np.ones(hu.shape, bool)
    outside[box] = False
    assert ours[:, outside].max() < 1e-3
    for name in wide_case["structures"]:                  # the CLI's flag reaches the same predictor
        grid_mask, nnunet_mask = _mask(wide_case["out"]["grid"], name), _mask(wide_case["out"]["whole"], name)
        assert not grid_mask[outside].any(), name
        assert (grid_mask[body] != nnunet_mask[body]).sum() <= 0.001 * max(1, nnunet_mask[body].sum()), name


def test_box_tiling_masks_do_not_depend_on_the_field_of_view(wide_case, predictor_for):
    """The default ``box`` tiling anchors its patches on the body, so the same patient in a wider field of view
    gets the same probabilities (nnU-Net's whole grid is anchored at the image's corner and moves with it:
    docs/benchmarks.md). The masks of the wide case, written by `predict`, leave everything outside the box empty
    and predict heart and lungs as the learning test requires."""
    from nnunet_breast.volumes.body import body_box

    box_tiling = predictor_for("box")
    narrower = 125                                    # 250 - 125: any shift (the body grid starts at the body)
    image = sitk.GetImageFromArray(sitk.GetArrayFromImage(wide_case["image"])[:, :, PAD - narrower:-(PAD - narrower)])
    image.SetSpacing(wide_case["image"].GetSpacing())
    image.SetDirection(wide_case["image"].GetDirection())
    image.SetOrigin(wide_case["original"].TransformContinuousIndexToPhysicalPoint((-narrower, 0, 0)))
    wide, narrow = _probabilities(box_tiling, wide_case["image"]), _probabilities(box_tiling, image)
    np.testing.assert_allclose(wide[..., PAD - narrower:-(PAD - narrower)], narrow, atol=1e-6)

    hu = sitk.GetArrayFromImage(wide_case["image"]).astype(np.float32)
    outside = np.ones(hu.shape, bool)
    outside[body_box(hu, wide_case["image"].GetSpacing())] = False
    for name in wide_case["structures"]:
        fast = _mask(wide_case["out"]["fast_fp32"], name)
        assert not fast[outside].any(), name
        if name in ("Heart", "Lung_L", "Lung_R"):
            assert _dsc(fast, wide_case["ref"][name]) >= 0.8, name


def test_the_tilings_benchmark_runs_on_the_trained_model(trained):
    """benchmarks/fast_path_tilings.py end to end on this model and two fields of view: the box tiling's masks
    the same in both, the grid's nnU-Net's; the box runs fewer patches than nnU-Net, the grid no more (its
    saving needs tiles wholly in air, a field of view wider than these: test_grid_tiling_... counts it)."""
    script = BENCHMARK.parent / "fast_path_tilings.py"
    r = subprocess.run([sys.executable, str(script), "--nnunet", str(trained["dirs"]["nnUNet_raw"].parent), "-d",
                        str(DATASET), "-tr", TRAINER, "-c", CONFIG, "--pads", "20", "101"],
                       capture_output=True, text=True, env=trained["environ"])
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    tilings = result["tilings"]
    assert result["structures_scored"] >= 3 and set(tilings) == {"nnunet", "box", "grid"}
    assert tilings["box"]["largest_spread_over_fov"] == 0 and tilings["box"]["lowest_agreement_with_narrowest_fov"] == 1
    assert tilings["grid"]["lowest_agreement_with_nnunet"] >= 0.99
    assert tilings["box"]["patches_vs_nnunet"] < 1 and tilings["grid"]["patches_vs_nnunet"] <= 1


def test_the_spacing_ceiling_benchmark_bounds_what_the_cpu_configuration_can_reach(trained):
    """benchmarks/spacing_ceiling.py on the new patients: at the data's own spacing a perfect network's masks come
    back nearly whole; at the CPU configuration's coarser spacing large organs keep most of it, the thin IMN tube
    (a voxel or two across) far less."""
    script = BENCHMARK.parent / "spacing_ceiling.py"
    r = subprocess.run([sys.executable, str(script), "--nnunet", str(trained["dirs"]["nnUNet_raw"].parent), "-d",
                        str(DATASET + 1), "--plans-dataset", str(DATASET), "-c", "3d_fullres", CONFIG],
                       capture_output=True, text=True, env=trained["environ"])
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    full, cpu = result["per_structure"]["3d_fullres"], result["per_structure"][CONFIG]
    assert result["cases"] == 2 and len(cpu) == 20 and result["ratio_to_baseline"]["3d_fullres"] == 1
    assert result["mean"]["3d_fullres"] >= 0.85 and result["mean"][CONFIG] < result["mean"]["3d_fullres"]
    assert min(cpu[s] for s in ("Heart", "Lung_L", "Lung_R")) >= 0.9
    assert max(cpu["CTVn_IMN_L"], cpu["CTVn_IMN_R"]) < min(cpu["Heart"], full["CTVn_IMN_L"], full["CTVn_IMN_R"])


def test_fast_path_skips_the_air_and_bf16_costs_at_most_half_a_dsc_point(trained, wide_case, monkeypatch):
    """In process: how many of nnU-Net's patches the fast path runs, and bf16 vs fp32 DSC against the reference."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape

    from nnunet_breast.inference.predictor import ModelRef, make_predictor
    from nnunet_breast.trainers.cpu import cpu_bf16_supported

    for var, path in trained["dirs"].items():
        monkeypatch.setenv(var, str(path))
    predictor = make_predictor(ModelRef(DATASET, TRAINER, CONFIG, folds=(0,)), "cpu", use_mirroring=False)
    images, tiled = [], []
    sliding_window = predictor.predict_sliding_window_return_logits

    def record_image(x):
        images.append(tuple(x.shape[1:]))
        return sliding_window(x)

    def record_tiling(size):
        tiled.append(tuple(size))
        return nnUNetPredictor._internal_get_sliding_window_slicers(predictor, size)

    monkeypatch.setattr(predictor, "predict_sliding_window_return_logits", record_image)
    monkeypatch.setattr(predictor, "_internal_get_sliding_window_slicers", record_tiling)
    image, props = SimpleITKIO().read_images([str(wide_case["file"])])
    dsc = {}
    for precision in (("bf16", "fp32") if cpu_bf16_supported() else ("fp32",)):
        monkeypatch.setenv("nnUNet_breast_cpu_bf16", "1" if precision == "bf16" else "0")
        _, probabilities = predictor.predict_single_npy_array(image, props, None, None, True)
        dsc[precision] = {n: _dsc(probabilities[i] >= 0.5, wide_case["ref"][n])
                          for i, n in enumerate(wide_case["structures"]) if n in ("Heart", "Lung_L", "Lung_R")}
    whole = compute_new_shape(image.shape[1:], props["spacing"], predictor.configuration_manager.spacing)
    whole_grid = tuple(max(n, p) for n, p in zip(whole, predictor.configuration_manager.patch_size))
    total = len(nnUNetPredictor._internal_get_sliding_window_slicers(predictor, whole_grid))
    kept = len(nnUNetPredictor._internal_get_sliding_window_slicers(predictor, tiled[0]))
    assert tiled[0] != whole_grid and 0 < kept <= 0.6 * total, (images, tiled)    # a wide field of view is air
    print(f"fast path: {kept} patches where nnU-Net's whole grid has {total}")
    assert all(d > 0.3 for d in dsc["fp32"].values()), dsc                   # the model predicts them
    if "bf16" not in dsc:
        pytest.skip("this CPU has no native bf16 (AMX / AVX512-BF16): the fast path runs in fp32 here")
    assert all(abs(dsc["bf16"][n] - dsc["fp32"][n]) <= 0.005 for n in dsc["fp32"]), dsc


def test_a_shared_model_predicts_the_same_masks_at_another_site(trained, wide_case, tmp_path, run_cli):
    """export-model -> install-model into empty nnU-Net folders -> predict: the masks the original model gave."""
    model_zip = tmp_path / "model.zip"
    r = run_cli(["nnunet-breast", "export-model", "-d", DATASET, "-tr", TRAINER, "-c", CONFIG, "-f", "0",
                 "-o", model_zip], env=trained["environ"])
    assert r.returncode == 0, r.stderr[-2000:]
    site = {var: tmp_path / "site" / var for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for folder in site.values():
        folder.mkdir(parents=True)
    env = dict(trained["environ"], **{k: str(v) for k, v in site.items()}, nnUNet_breast_cpu_bf16="0")
    r = run_cli(["nnunet-breast", "install-model", model_zip], env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli(["nnunet-breast", "predict", "-i", wide_case["file"].parent, "-o", tmp_path / "pred", "--model",
                 "breast", "-d", DATASET, "-tr", TRAINER, "-c", CONFIG, "-f", "0", "-device", "cpu", "--no-preview"],
                env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in wide_case["structures"]:
        np.testing.assert_array_equal(_mask(tmp_path / "pred" / wide_case["case"] / "masks", name),
                                      _mask(wide_case["out"]["fast_fp32"], name), err_msg=name)
    # the QA page: every structure, the cohort's volume range travelled with the model, the installed weights' hash
    import hashlib

    page = (tmp_path / "pred" / wide_case["case"] / "qa_report.html").read_text()
    for name in wide_case["structures"]:
        assert f"{name}</td>" in page, name
    heart_row = page.split("Heart</td>", 1)[1].split("</tr>", 1)[0]
    assert "(n = " in heart_row and "no cohort range" not in heart_row
    checkpoint = next(site["nnUNet_results"].glob(f"*/{TRAINER}__nnUNetPlans__{CONFIG}/fold_0/checkpoint_final.pth"))
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() in page
    assert "single fold / not computed" in heart_row
    # an ensemble of two folds with the same weights: the same masks, and the folds agree exactly
    import shutil

    shutil.copytree(checkpoint.parent, checkpoint.parent.parent / "fold_1")
    r = run_cli(["nnunet-breast", "predict", "-i", wide_case["file"].parent, "-o", tmp_path / "pred2", "--model",
                 "breast", "-d", DATASET, "-tr", TRAINER, "-c", CONFIG, "-f", "0", "1", "-device", "cpu",
                 "--no-preview"], env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in wide_case["structures"]:
        np.testing.assert_array_equal(_mask(tmp_path / "pred2" / wide_case["case"] / "masks", name),
                                      _mask(tmp_path / "pred" / wide_case["case"] / "masks", name), err_msg=name)
    page = (tmp_path / "pred2" / wide_case["case"] / "qa_report.html").read_text()
    assert "<td>1.000</td>" in page.split("Heart</td>", 1)[1].split("</tr>", 1)[0]
