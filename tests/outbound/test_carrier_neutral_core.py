"""The core never imports a carrier: routing/, workers/ and the models speak only the
gateway's own types, and reach a carrier through gateway/sending.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "gateway"
CORE = sorted([*PACKAGE.joinpath("routing").glob("*.py"), *PACKAGE.joinpath("workers").glob("*.py"),
               PACKAGE / "models.py"])


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_the_core_module_does_not_import_a_carrier(path):
    carriers = sorted(n for n in imported_modules(path) if n == "gateway.carriers" or
                      n.startswith("gateway.carriers."))
    assert carriers == []
