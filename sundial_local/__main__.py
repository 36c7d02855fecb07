"""`make dev`: run Sundial locally until Ctrl-C. Settings come from the environment (sundial_local.config)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from sundial_local.config import LocalConfig
from sundial_local.stack import LocalStack, StartupError

logger = logging.getLogger("sundial_local")


class ReadableFormatter(logging.Formatter):
    """`15:04:05 dispatched …` in UTC (the time zone of every instant Sundial shows); level only when notable."""

    converter = staticmethod(time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        return line if record.levelno < logging.WARNING else line.replace(" ", f" {record.levelname}: ", 1)


def configure_logging(level: str) -> None:
    """Readable lines on stdout. The local stack's logger keeps its own handler: powertools filters
    every root handler record whose logger name contains its service name ("sundial")."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    formatter = ReadableFormatter("%(asctime)s %(message)s", datefmt="%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stdout)]
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=logging.WARNING, handlers=handlers[:1])
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto server's request lines
    local = logging.getLogger("sundial_local")
    local.addHandler(handlers[1])
    local.propagate = False
    local.setLevel(level)
    # The functions' metrics are off locally; powertools still warns once per request that there are none.
    warnings.filterwarnings("ignore", message="No application metrics to publish")


def install_stop_signals(stopping: threading.Event) -> None:
    """First Ctrl-C (or SIGTERM/SIGHUP): shut down cleanly. A second one: quit at once, without saving."""

    def handle(_signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():
            print("stopping at once; the tables were not saved", file=sys.stderr, flush=True)
            os._exit(130)
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handle)


def make_was_interrupted(parent: int) -> bool:
    """Whether the parent is `make` handling a SIGINT sent to it alone (`kill -INT` on make's pid).

    GNU make passes SIGTERM on to its recipe but not SIGINT, which it expects the terminal to have
    sent to the whole process group: it waits for the recipe inside its handler, with SIGINT blocked.
    That blocked bit is visible in /proc (Linux); elsewhere this returns False.
    """
    proc = Path("/proc") / str(parent)
    try:
        if (proc / "comm").read_text().strip() not in ("make", "gmake"):
            return False
        status = (proc / "status").read_text()
    except OSError:
        return False
    blocked = next((line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:")), "0")
    return bool(int(blocked, 16) & (1 << (signal.SIGINT - 1)))


def main() -> int:
    try:
        config = LocalConfig()
    except ValidationError as error:
        for problem in error.errors():
            name = ".".join(str(part) for part in problem["loc"])
            print(f"invalid setting {name}: {problem['msg']}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    if config.uses_dev_secret:
        logger.warning(
            "SUNDIAL_LOCAL_JWT_SECRET is not set: tokens are checked with the built-in development secret "
            "(fine on 127.0.0.1; `make token` uses it too)"
        )
    stopping = threading.Event()
    install_stop_signals(stopping)
    stack = LocalStack(config)
    try:
        stack.start()
    except StartupError as error:
        stack.stop()
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    except Exception:
        logger.exception("the local stack could not start")
        stack.stop()
        return 1
    print(f"Sundial local stack ready on {stack.url}", flush=True)
    print(f"Console: {stack.url}/console · API docs: {stack.url}/docs", flush=True)
    parent = os.getppid()
    while not stopping.wait(0.5):
        if os.getppid() != parent:
            # Its parent (`make dev`, a shell) was killed outright: stop and save as on a signal.
            logger.info("the process that started the stack is gone")
            break
        if make_was_interrupted(parent):
            logger.info("make was interrupted")
            break
    logger.info("shutting down (press Ctrl-C again to quit at once)")
    stack.stop()
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
