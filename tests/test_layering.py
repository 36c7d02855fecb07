"""The layering rules in pyproject.toml hold, and `make lint` would fail the day one is broken."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(package_root: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(package_root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        check=False,
    )


def test_the_package_keeps_its_layering_rules() -> None:
    checked = lint_imports(ROOT / "layers" / "sundial")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 broken" in checked.stdout


@pytest.mark.parametrize(
    ("module", "violation"),
    [
        pytest.param("domain/schedule.py", "import pynamodb", id="domain-imports-pynamodb"),
        pytest.param("domain/missed_runs.py", "from sundial import storage", id="domain-imports-the-store"),
        pytest.param("contracts/execution.py", "import boto3", id="contract-imports-a-client"),
    ],
)
def test_a_broken_rule_fails_the_check(tmp_path: Path, module: str, violation: str) -> None:
    copy = tmp_path / "sundial"
    shutil.copytree(ROOT / "layers" / "sundial" / "sundial", copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{violation}  # deliberate\n")

    checked = lint_imports(tmp_path)

    assert checked.returncode != 0
    assert "BROKEN" in checked.stdout, checked.stdout
