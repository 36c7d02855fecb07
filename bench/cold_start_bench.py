"""Cold start: how long each Lambda handler module takes to import in a fresh interpreter, against two
minimal powertools handlers: one with Logger alone (the baseline the ratio is taken against), and one
with the whole house decorator stack (Logger, Metrics and Tracer), whose Tracer imports the X-Ray SDK.

What it models: the init phase's import work only, with bytecode already compiled (as a build that
byte-compiles the layer ships it) and, as a second column, without it (`-B` and a cold
`PYTHONPYCACHEPREFIX`, as a layer without .pyc files pays on every cold start). It leaves out Lambda's
own runtime start and the first request's client creation. Each figure is the median of several fresh
processes.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "cold_start.json"
RUNS = 7
BASELINE = "baseline_logger"
BASELINES = {
    BASELINE: """
from aws_lambda_powertools import Logger
logger = Logger()

@logger.inject_lambda_context
def lambda_handler(event, context):
    return event
""",
    "baseline_house_stack": """
from aws_lambda_powertools import Logger, Metrics, Tracer
logger, metrics, tracer = Logger(), Metrics(namespace="x"), Tracer()

@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler
def lambda_handler(event, context):
    return event
""",
}
HANDLERS = {"api": "api_handler", "dispatch": "dispatch_handler", "runner": "runner_handler"}
MEASURE = "import time, sys; start = time.perf_counter(); {statement}; print(time.perf_counter() - start)"


def _seconds(statement: str, *, bytecode: bool, cwd: Path) -> float:
    env = {**os.environ, "POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}
    args = [sys.executable]
    if not bytecode:
        args.append("-B")
        env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="sundial-pycache-")
    args += ["-c", MEASURE.format(statement=statement)]
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def measure(runs: int = RUNS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        statements: dict[str, str] = {}
        for name, source in BASELINES.items():
            Path(folder, f"{name}.py").write_text(source)
            statements[name] = f"sys.path.insert(0, {folder!r}); import {name}"
        statements |= {name: f"import {module}" for name, module in HANDLERS.items()}
        cwd = Path(folder)
        for statement in statements.values():
            _seconds(statement, bytecode=True, cwd=cwd)  # write the bytecode the first column assumes
        figures: dict[str, dict[str, float]] = {}
        for name, statement in statements.items():
            warm = statistics.median(_seconds(statement, bytecode=True, cwd=cwd) for _ in range(runs))
            cold = statistics.median(_seconds(statement, bytecode=False, cwd=cwd) for _ in range(max(3, runs // 2)))
            figures[name] = {"import_ms": round(warm * 1000, 1), "import_ms_without_bytecode": round(cold * 1000, 1)}
    base = figures[BASELINE]["import_ms"]
    for name in [*HANDLERS, "baseline_house_stack"]:
        figures[name]["times_baseline"] = round(figures[name]["import_ms"] / base, 2)
    return figures


def main() -> None:
    figures = measure()
    for name, row in figures.items():
        print(json.dumps({"handler": name, **row}), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    model = " ".join((__doc__ or "").split())
    RESULTS.write_text(json.dumps({"model": model, "baseline": BASELINE, "handlers": figures}, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()
