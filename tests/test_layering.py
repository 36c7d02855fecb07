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


def lint_imports(package_root: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """lint-imports on the packages under `package_root`; run from `cwd`, which comes first on the path."""
    environment = {**os.environ, "PYTHONPATH": str(package_root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
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


def test_the_migration_reaching_a_table_fails_the_check(tmp_path: Path) -> None:
    for package in (PACKAGE, ROOT / "sundial_migrate"):
        shutil.copytree(package, tmp_path / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "sundial_migrate" / "plan.py"
    target.write_text(target.read_text() + "\nfrom sundial.store import records  # deliberate\n")

    checked = lint_imports(tmp_path, cwd=tmp_path)  # the repository's own sundial_migrate is not in the way

    assert checked.returncode != 0
    assert "The migration writes through the services" in checked.stdout
    assert "BROKEN" in checked.stdout, checked.stdout


# What only a store may do with a record: reach DynamoDB through the model class or an instance.
RECORD_IO_METHODS = frozenset(
    {"save", "refresh", "delete", "update", "query", "scan", "get", "count", "batch_get", "batch_write"}
)
RECORDS_MODULE = "sundial.store.records"
CLIENT_MAKERS = frozenset({"client", "resource", "create_client", "get_session", "Session"})
BOTOCORE_CLIENT_MODULES = ("botocore.session", "botocore.client")


def _record_names(tree: ast.AST) -> tuple[set[str], set[str]]:
    """Names bound to record classes (aliases included), and names bound to the records module itself."""
    classes: set[str] = set()
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == RECORDS_MODULE:
            classes |= {alias.asname or alias.name for alias in node.names if alias.name.endswith("Record")}
        elif isinstance(node, ast.ImportFrom) and node.module == "sundial.store":
            modules |= {alias.asname or alias.name for alias in node.names if alias.name == "records"}
        elif isinstance(node, ast.Import):
            modules |= {alias.asname or alias.name for alias in node.names if alias.name == RECORDS_MODULE}
    return classes, modules


def _is_record_class(node: ast.AST, classes: set[str], modules: set[str]) -> bool:
    """`TriggerRecord`, an alias of it, `records.TriggerRecord`, or `type(record)`."""
    if isinstance(node, ast.Name):
        return node.id.endswith("Record") or node.id in classes
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id in modules or node.attr.endswith("Record")
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "type"


def record_io(source: str) -> list[str]:
    """Where code touches DynamoDB (or makes an AWS client) other than through a store function.

    Services may build and read records (they are the stores' data), but every read and write of a
    table goes through a store function, so a service can be tested, and later run, on another store.
    Flagged: any attribute of a record class (however it is named), an I/O method called on anything
    but a `*_store` module (`getattr(record, "save")` included), and a client made from boto3 or
    botocore.
    """
    tree = ast.parse(source)
    classes, modules = _record_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_record_class(node.value, classes, modules):
            found.append(f"line {node.lineno}: a record class's .{node.attr}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("botocore.session", "botocore.client")):
            found.append(f"line {node.lineno}: imports {node.module}")
        if isinstance(node, ast.Import) and any(
            alias.name in ("botocore.session", "botocore.client") for alias in node.names
        ):
            found.append(f"line {node.lineno}: imports a botocore client module")
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2:
            name = node.args[1]
            if isinstance(name, ast.Constant) and name.value in RECORD_IO_METHODS:
                found.append(f"line {node.lineno}: getattr(..., {name.value!r})")
        if isinstance(node.func, ast.Attribute):
            receiver = node.func.value
            if isinstance(receiver, ast.Name) and receiver.id.endswith("_store"):
                continue  # a store function, e.g. trigger_store.delete(record)
            method = node.func.attr
            if method in CLIENT_MAKERS:
                found.append(f"line {node.lineno}: .{method}(...) makes a client")
            elif method in RECORD_IO_METHODS and not _is_plain_read(node):
                found.append(f"line {node.lineno}: .{method}(...)")
    return found


def _is_plain_read(call: ast.Call) -> bool:
    """`mapping.get(key)` / `mapping.get(key, default)` on a value that is not a record class: a dict read."""
    method = call.func.attr if isinstance(call.func, ast.Attribute) else None
    return method == "get" and not call.keywords and len(call.args) in (1, 2)


@pytest.mark.parametrize("module", sorted((PACKAGE / "services").glob("*.py")), ids=lambda path: path.name)
def test_services_reach_tables_only_through_a_store(module: Path) -> None:
    assert record_io(module.read_text()) == []


@pytest.mark.parametrize(
    "violation",
    [
        "TriggerRecord.get('pk', consistent_read=True)",
        "record.update(actions=[TriggerRecord.enabled.set(False)])",
        "record.update(actions)",
        "record.refresh(consistent_read=True)",
        "getattr(record, 'save')()",
        "type(record).get('pk', consistent_read=True)",
        "records.TriggerRecord.get('pk')",
        "Triggers.get('pk')",
        "boto3.client('dynamodb')",
        "botocore.session.get_session().create_client('dynamodb')",
    ],
)
def test_the_record_check_sees_a_service_touching_a_table(violation: str) -> None:
    imports = "from sundial.store.records import TriggerRecord as Triggers\nfrom sundial.store import records\n"
    source = imports + (PACKAGE / "services" / "runner.py").read_text()
    source += f"\n\ndef _deliberate(record, actions):\n    {violation}\n"
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
