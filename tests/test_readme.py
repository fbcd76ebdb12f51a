"""The README's two commands at its top stay true: CI runs the test command verbatim."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = text.split("```")
    return [blocks[i].strip().removeprefix("bash").strip() for i in (1, 3)]


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = readme_commands()
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    venv, _, command = tests.partition("\n")
    assert command.strip() in ci_lines
    assert "pytest" in command


def test_readme_main_command_uses_our_cli():
    main, _ = readme_commands()
    assert "nnunet-breast " in main and "pip install" in main
