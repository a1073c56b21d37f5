"""Imports flow one way, benchmark -> methods -> tasks -> common, with no circle inside a package: the import-linter
contracts in pyproject.toml ([tool.importlinter]), checked by running `lint-imports` from this environment."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")  # the `test` extra installs it
ROOT = Path(__file__).resolve().parent.parent


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "importlinter.cli"]
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_import_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    "layout, broken",
    [
        ({"tasks/low.py": "from methods import mid\n", "methods/mid.py": "import tasks\n"}, "Layers"),
        (
            {
                "tasks/datasets/base.py": "from tasks.datasets import generic\n",
                "tasks/datasets/generic.py": "from tasks.datasets import base\n",
            },
            "No import cycle",
        ),
    ],
)
def test_the_contracts_catch_an_upward_import_and_a_circle(tmp_path, layout, broken):
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for package in ("benchmark", "methods", "tasks", "tasks/datasets"):
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    for path, text in layout.items():
        (tmp_path / path).write_text(text)
    result = lint_imports(tmp_path)
    assert result.returncode != 0 and f"{broken}" in result.stdout.split("Broken contracts")[-1], result.stdout
