"""The layering rules in pyproject.toml hold, and `make lint` would fail the day one is broken."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGE = ROOT / "layers" / "sundial" / "sundial"


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
        pytest.param("domain/missed_runs.py", "from sundial.store import records", id="domain-imports-the-store"),
        pytest.param("contracts/execution.py", "import boto3", id="contract-imports-a-client"),
        pytest.param("services/runner.py", "from pynamodb.models import Model", id="service-imports-pynamodb"),
        pytest.param("services/triggers.py", "import boto3", id="service-creates-a-client"),
        pytest.param("store/triggers.py", "from sundial.services import runner", id="store-imports-a-service"),
        pytest.param("adapters/aws_retry.py", "from sundial.store import records", id="adapter-reaches-a-table"),
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


# What only a store may do with a record: reach DynamoDB through the model class or an instance.
RECORD_IO_METHODS = frozenset({"save", "refresh", "delete", "query", "scan", "batch_get", "batch_write"})


def record_io(source: str) -> list[str]:
    """Where code touches DynamoDB through pynamodb records: `SomethingRecord.<anything>`, or an I/O method.

    Services may build and read records (they are the stores' data), but every read and write of a
    table goes through a store function, so a service can be tested, and later run, on another store.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id.endswith("Record"):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = node.func.value
            if isinstance(receiver, ast.Name) and receiver.id.endswith("_store"):
                continue  # a store function, e.g. trigger_store.delete(record)
            method = node.func.attr
            if method in RECORD_IO_METHODS or (method == "update" and any(k.arg == "actions" for k in node.keywords)):
                found.append(f"line {node.lineno}: .{method}(...)")
    return found


@pytest.mark.parametrize("module", sorted((PACKAGE / "services").glob("*.py")), ids=lambda path: path.name)
def test_services_reach_tables_only_through_a_store(module: Path) -> None:
    assert record_io(module.read_text()) == []


@pytest.mark.parametrize(
    "violation",
    [
        "TriggerRecord.get('pk', consistent_read=True)",
        "record.update(actions=[TriggerRecord.enabled.set(False)])",
        "record.refresh(consistent_read=True)",
    ],
)
def test_the_record_check_sees_a_service_touching_a_table(violation: str) -> None:
    source = (PACKAGE / "services" / "runner.py").read_text() + f"\n\ndef _deliberate(record):\n    {violation}\n"
    assert record_io(source) != []


def ends_runs_directly(source: str) -> list[str]:
    """Calls of the store's `finish`: a run ended there, not through services.ending, is never announced."""
    return [
        f"line {node.lineno}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "finish"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "invocation_store"
    ]


@pytest.mark.parametrize(
    "module",
    sorted(path for path in (PACKAGE / "services").glob("*.py") if path.name != "ending.py"),
    ids=lambda path: path.name,
)
def test_services_end_runs_only_through_ending(module: Path) -> None:
    assert ends_runs_directly(module.read_text()) == []


def test_the_ending_check_sees_a_direct_finish() -> None:
    assert ends_runs_directly("invocation_store.finish(deps, record, 'failed')\n") == ["line 1"]
