"""`make openapi`: write docs/openapi.json, the OpenAPI document generated from the API's routes.

The committed copy is what client authors and reviewers read; tests/test_openapi.py fails when it
no longer matches the routes.
"""

from __future__ import annotations

from pathlib import Path

import api_handler

DOCUMENT_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def main() -> None:
    DOCUMENT_PATH.write_text(api_handler.openapi_json(), encoding="utf-8")
    print(f"wrote {DOCUMENT_PATH}")


if __name__ == "__main__":
    main()
