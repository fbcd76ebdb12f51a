"""EfficientNet-B0 U-Net as an nnU-Net citizen: planned, trained, chosen and applied by stock CLIs.

One fold is trained: `find_best_configuration -f 0` and `predict -f 0` are the same stock code paths as with five
folds (nnU-Net loops over the folds it is given), so five tiny folds would prove nothing more at five times the
cost. The paper preset is preprocessed by the stock CLI and its recipe checked on the trainer nnUNetv2_train
builds (`get_trainer_from_args`): optimiser and schedule from `configure_optimizers`, one training step on a
batch of the paper-preprocessed data."""
import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_breast import planning
from nnunet_breast.networks.plans import EFFNET_CLASS
from nnunet_breast.structures.regions import OverlapEncoding
from nnunet_breast.synth.cohort import make_case

TRAINER = "nnUNetTrainerEffNetB0Tiny_2epochs"


@pytest.fixture(scope="module")
def planned(breast501):
    """Dataset 501 from a cohort exported as clinics do (treated side only, per-case nodal levels, some OARs
    missing): converted, split in three stratified folds, stock-planned and `nnunet-breast plan`ned once per
    session (conftest.py's ``breast501``, shared with test_convert_nnunet.py)."""
    return breast501


def test_plans_hold_our_configurations(planned):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pre = planned["dirs"]["nnUNet_preprocessed"] / "Dataset501_BreastRT"
    plans = PlansManager(json.loads((pre / "nnUNetPlans.json").read_text()))
    cfg = plans.get_configuration(planning.EFFNET_CONFIG)
    base = plans.get_configuration("3d_fullres")
    assert cfg.network_arch_class_name == EFFNET_CLASS
    assert cfg.data_identifier == base.data_identifier and cfg.spacing == base.spacing   # reuses 3d_fullres data
    strides = np.prod(np.array(cfg.network_arch_init_kwargs["strides"]), axis=0)
    assert all(p % s == 0 for p, s in zip(cfg.patch_size, strides)) and cfg.batch_size >= 2
    paper = PlansManager(json.loads((pre / f"{planning.PAPER_PLANS}.json").read_text()))
    pcfg = paper.get_configuration(planning.PAPER_CONFIG)
    assert list(pcfg.spacing) == [3.0, 1.0, 1.0] and list(pcfg.patch_size) == [64, 128, 128]
    # anisotropic spacing: the first downsampling is in-plane only
    assert pcfg.network_arch_init_kwargs["strides"][1] == [1, 2, 2]
    # the fixed HU window through nnU-Net's own CTNormalization
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization
    norm = CTNormalization(use_mask_for_norm=False,
                           intensityproperties=paper.foreground_intensity_properties_per_channel["0"])
    out = norm.run(np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0]))
    np.testing.assert_allclose(out, [0, 0, 0.5, 1, 1])                 # the paper's [0, 1]: padding 0 = -160 HU


def test_stock_nnunet_builds_every_configuration_we_plan(planned, stock_builds):
    pre = planned["dirs"]["nnUNet_preprocessed"] / "Dataset501_BreastRT"
    assert sorted(stock_builds(pre)) == sorted([planning.EFFNET_CONFIG, planning.PAPER_CONFIG])


def test_plan_refuses_without_stock_plans(run_cli, nnunet_dirs):
    r = run_cli(["nnunet-breast", "plan", "-d", "777"])
    assert r.returncode == 2 and "777" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_one_fold_find_best_and_predict(planned, tmp_path, monkeypatch):
    run = planned["run"]
    run("nnUNetv2_train", "501", planning.EFFNET_CONFIG, "0", "-tr", TRAINER, "-device", "cpu")
    results = planned["dirs"]["nnUNet_results"] / "Dataset501_BreastRT"
    model = results / f"{TRAINER}__nnUNetPlans__{planning.EFFNET_CONFIG}"
    assert (model / "fold_0" / "checkpoint_final.pth").is_file()
    validated = sorted(p.name[: -len(".nii.gz")] for p in (model / "fold_0" / "validation").glob("*.nii.gz"))
    assert validated == sorted(planned["splits"][0]["val"])              # on our stratified splits
    # the clinical-data rules ran inside stock nnUNetv2_train: partial labels, no left-right mirroring
    log = next((model / "fold_0").glob("training_log_*.txt")).read_text()
    assert "partial labels: " in log and "cases lack some structure" in log
    plans = json.loads((planned["dirs"]["nnUNet_preprocessed"] / "Dataset501_BreastRT" / "nnUNetPlans.json").read_text())
    lr_axis = plans["transpose_forward"].index(2)            # identity directions: SimpleITK x = numpy axis 2
    assert f"no mirroring along axes [{lr_axis}]" in log
    run("nnUNetv2_find_best_configuration", "501", "-c", planning.EFFNET_CONFIG, "-tr", TRAINER,
        "--disable_ensembling", "-np", "1", "-f", "0")
    instructions = (results / "inference_instructions.txt").read_text()
    assert planning.EFFNET_CONFIG in instructions and TRAINER in instructions
    assert re.search(r"-f\s+0\s+-tr", instructions)                    # the fold it was given

    # predict a new synthetic case with the trained fold; probabilities keep overlapping structures
    case = make_case("breast", 9, seed=0)
    img = sitk.GetImageFromArray(case.hu)
    img.SetSpacing(case.grid.spacing)
    img.SetOrigin(case.grid.origin)
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    sitk.WriteImage(img, str(inp / "new_0000.nii.gz"))
    run("nnUNetv2_predict", "-i", inp, "-o", out, "-d", "501", "-c", planning.EFFNET_CONFIG, "-tr", TRAINER,
        "-f", "0", "--save_probabilities", "-device", "cpu", "-npp", "1", "-nps", "1")
    raw = planned["dirs"]["nnUNet_raw"] / "Dataset501_BreastRT"
    enc = OverlapEncoding.from_json(json.loads((raw / "dataset.json").read_text())["nnunet_breast"]["encoding"])
    probs = np.load(out / "new.npz")["probabilities"]
    masks = enc.decode_regions(probs)
    assert set(masks) == set(enc.structures) and len(masks) == 20
    assert masks["Heart"].shape == case.hu.shape
    assert (out / "new.nii.gz").is_file()

    # `predict` runs the breast model in its own process: nnU-Net's probabilities without the file route
    from nnunet_breast.inference.predictor import ModelRef, make_predictor, predict_probabilities

    for k, v in planned["environ"].items():
        if k.startswith("nnUNet_"):
            monkeypatch.setenv(k, v)
    predictor = make_predictor(ModelRef(501, TRAINER, planning.EFFNET_CONFIG, folds=(0,)), "cpu", fast_path="off")
    box, in_process = predict_probabilities(predictor, sitk.ReadImage(str(inp / "new_0000.nii.gz")))
    assert in_process.shape == probs.shape and all(b == slice(0, n) for b, n in zip(box, probs.shape[1:]))
    # nnU-Net sums the patches' logits in fp16 and the two processes run different thread counts: a logit may
    # round one fp16 step apart (a probability step of up to ~1e-3), never more
    np.testing.assert_allclose(in_process, probs, atol=5e-3)
    decoded = enc.decode_regions(in_process)
    assert max(np.mean(decoded[n] != masks[n]) for n in masks) < 1e-3


def test_paper_preset_preprocesses_and_trains_with_the_paper_recipe(planned, monkeypatch):
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

    planned["run"]("nnUNetv2_preprocess", "-d", "501", "-plans_name", planning.PAPER_PLANS, "-c",
                   planning.PAPER_CONFIG, "-np", "1")
    for k, v in planned["environ"].items():                 # nnU-Net 2.8 reads its folders at call time
        if k.startswith("nnUNet_"):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")              # augmentation in this process
    # the trainer exactly as `nnUNetv2_train 501 3d_effnetb0_paper 0 -p ... -tr ...` builds and initialises it
    trainer = get_trainer_from_args("501", planning.PAPER_CONFIG, 0, "nnUNetTrainerEffNetB0PaperTiny_2epochs",
                                    planning.PAPER_PLANS, device=torch.device("cpu"))
    trainer.initialize()
    optimizer = trainer.optimizer
    assert type(optimizer) is torch.optim.RMSprop
    assert optimizer.defaults["lr"] == 5e-4 and optimizer.defaults["weight_decay"] == 1e-4
    assert isinstance(trainer.lr_scheduler, PolyLRScheduler) and trainer.lr_scheduler.initial_lr == 5e-4
    assert float(trainer.network.decoder.seg_layers[-1].bias.min()) > -1.0     # nnU-Net's init, not the 1 % prior
    # one training step on the paper-preprocessed data: 1 x 1 x 3 mm patches, the HU window in [0, 1]
    train_loader, _ = trainer.get_dataloaders()
    batch = next(train_loader)
    assert tuple(batch["data"].shape[2:]) == (64, 128, 128) == tuple(trainer.configuration_manager.patch_size)
    assert list(trainer.configuration_manager.spacing) == [3.0, 1.0, 1.0]
    assert 0.0 <= float(batch["data"].min()) and float(batch["data"].max()) <= 1.0 + 1e-6    # float32 rounding
    before = [p.detach().clone() for p in trainer.network.parameters()]
    trainer.network.train()
    loss = trainer.train_step(batch)["loss"]
    assert np.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.network.parameters()))     # RMSprop stepped


def test_default_recipe_is_adamw_warmup_cosine_from_a_foreground_prior(planned, monkeypatch):
    """nnUNetTrainerEffNetB0's recipe (docs/benchmarks.md: SGD learnt nothing in 200 iterations, AdamW did)."""
    import math

    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    from nnunet_breast.trainers.lr_schedule import LinearWarmupCosineLRScheduler

    for k, v in planned["environ"].items():
        if k.startswith("nnUNet_"):
            monkeypatch.setenv(k, v)
    trainer = get_trainer_from_args("501", planning.EFFNET_CONFIG, 0, "nnUNetTrainerEffNetB0", device=torch.device("cpu"))
    trainer.initialize()
    assert type(trainer.optimizer) is torch.optim.AdamW and trainer.optimizer.defaults["lr"] == 3e-3
    assert isinstance(trainer.lr_scheduler, LinearWarmupCosineLRScheduler)
    assert trainer.num_epochs == 1000                                     # nnU-Net's schedule otherwise
    for head in trainer.network.decoder.seg_layers:                      # every deep-supervision head
        assert torch.allclose(head.bias, torch.full_like(head.bias, math.log(0.01 / 0.99)))
        assert float(head.weight.std()) < 0.02


def test_paper_trainer_keeps_only_spatial_augmentation():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_breast.trainers import nnUNetTrainerEffNetB0Paper
    from nnunet_breast.trainers.transforms import INTENSITY_TRANSFORMS

    args = dict(patch_size=(32, 64, 64), rotation_for_DA=(-0.5, 0.5), deep_supervision_scales=None,
                mirror_axes=(0, 1, 2), do_dummy_2d_data_aug=False)
    names = lambda p: [type(getattr(t, "transform", t)).__name__ for t in p.transforms]  # noqa: E731
    stock, paper = names(nnUNetTrainer.get_training_transforms(**args)), \
        names(nnUNetTrainerEffNetB0Paper.get_training_transforms(**args))
    assert "GaussianNoiseTransform" in stock and "GammaTransform" in stock
    assert not set(paper) & set(INTENSITY_TRANSFORMS)
    assert "SpatialTransform" in paper and "MirrorTransform" in paper
