"""The console script's contract: commands only parse arguments, one spelling per option, one error type."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from nnunet_breast import cli
from nnunet_breast.commands import options
from nnunet_breast.errors import UserError
from nnunet_breast.inference.predictor import ModelRef, clip_model_refs, folds_arg

COMMANDS_DIR = Path(cli.__file__).resolve().parent / "commands"


def _subparser(name: str):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name]


def test_no_command_imports_another_command():
    for path in COMMANDS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("nnunet_breast.commands."):
                    assert name == "nnunet_breast.commands.options", (path.name, name)
                assert name != "nnunet_breast.cli.UserError", path.name


def test_predict_and_predict_clips_spell_the_clip_model_alike():
    argv = ["-i", "in", "-o", "out", "--clips-method", "cascade", "--clips-d", "502", "--clips-tr", "T1",
            "--clips-c", "C1", "--clips-f", "0", "1", "--stage2-id", "503", "--stage2-tr", "T2", "--stage2-c", "C2",
            "--stage2-f", "all", "--threshold-hu", "1200", "--min-clip-mm3", "4", "-p", "P", "-chk",
            "checkpoint_best.pth", "-device", "cpu", "--disable_tta", "-npp", "2", "-nps", "3", "-step_size", "0.75"]
    a = _subparser("predict").parse_args(argv + ["--model", "clips"])
    b = _subparser("predict-clips").parse_args(argv)
    assert options.clip_model_kwargs(a) == options.clip_model_kwargs(b)
    for key in ("threshold_hu", "min_clip_mm3", "device", "disable_tta", "npp", "nps", "step_size"):
        assert getattr(a, key) == getattr(b, key), key
    opts = options.predict_options(a)                 # predict, serve and watch: the breast and the clip models
    assert opts.tile_step_size == opts.clips.tile_step_size == 0.75
    stage1, stage2 = clip_model_refs(**options.clip_model_kwargs(b))
    assert stage1 == ModelRef(502, "T1", "C1", "P", (0, 1), "checkpoint_best.pth")
    assert stage2 == ModelRef(503, "T2", "C2", "P", ("all",), "checkpoint_best.pth")
    for old in (["--method", "single"], ["-tr2", "T"], ["-c2", "C"], ["-f2", "0"]):
        with pytest.raises(SystemExit):
            _subparser("predict-clips").parse_args(["-i", "in", "-o", "out", *old])


def test_clip_model_refs_defaults_and_refusals():
    s1, s2 = clip_model_refs("cascade", 502, stage2_id=503)
    assert (s1.trainer, s1.configuration) == ("nnUNetTrainerClipLocation", "3d_clip_location")
    assert (s2.trainer, s2.configuration) == ("nnUNetTrainerClipSegmentation", "3d_clip_segmentation")
    single, none = clip_model_refs("single", 502)
    assert (single.trainer, single.configuration, none) == ("nnUNetTrainerClipSingleStage", "3d_clip_fullres", None)
    assert clip_model_refs("threshold", None) == (None, None)
    with pytest.raises(UserError, match="--stage2-id"):
        clip_model_refs("cascade", 502)
    with pytest.raises(UserError, match="--clips-d"):
        clip_model_refs("single", None)
    assert folds_arg(None) is None and folds_arg(["0", "all"]) == (0, "all")
    with pytest.raises(UserError, match="folds"):
        folds_arg(["x"])


def test_user_error_is_one_line_exit_2_and_bugs_keep_their_traceback(tmp_path, capsys, monkeypatch):
    code = cli.main(["predict", "-i", str(tmp_path / "nonexistent"), "-o", str(tmp_path / "x"), "--model", "breast",
                     "-d", "1", "-device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("nnunet-breast predict: error: ") and len(err.strip().splitlines()) == 1

    def bug(args):
        raise ValueError("a bug, not the user's fault")

    monkeypatch.setattr("nnunet_breast.commands.synth.run", bug)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["synth", "--cohort", "breast", "--n", "1", "--out", str(tmp_path / "s")])


def test_a_sliding_window_step_outside_0_1_is_refused(tmp_path, capsys):
    code = cli.main(["predict", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "--model", "clips",
                     "--clips-method", "threshold", "-step_size", "1.5"])
    assert code == 2 and "-step_size" in capsys.readouterr().err
