"""Put Sundial's module path (pyproject's [tool.sundial] module-path) on the environment's sys.path.

Lambda imports the layer and each function's folder from the top level; a .pth file in the virtual
environment gives every tool run from it the same view, with the list declared once.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PTH_NAME = "sundial-module-path.pth"


def module_path() -> list[Path]:
    with (ROOT / "pyproject.toml").open("rb") as pyproject:
        folders: list[str] = tomllib.load(pyproject)["tool"]["sundial"]["module-path"]
    return [(ROOT / folder).resolve() for folder in folders]


def main() -> None:
    if sys.argv[1:] == ["--print"]:  # for MYPYPATH: mypy maps checked files to modules by these roots
        print(os.pathsep.join(str(folder) for folder in module_path()))
        return
    site_packages = Path(sysconfig.get_paths()["purelib"])
    (site_packages / PTH_NAME).write_text("".join(f"{folder}\n" for folder in module_path()))
    print(f"module path written to {site_packages / PTH_NAME}", file=sys.stderr)


if __name__ == "__main__":
    main()
