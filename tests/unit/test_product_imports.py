"""The product (services/, shared/, trainyard/) imports none of the dev-only dependencies."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Import names of pyproject.toml's [dev] extra that code could import.
DEV_ONLY = {"pytest", "yaml", "unasync", "schemathesis", "playwright", "secantusdb", "mypy", "ruff", "tests",
            "bench"}


def imported_top_levels(path: Path) -> set[str]:
    """Every module the file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_product_module_imports_a_dev_only_dependency() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_top_levels(path) & DEV_ONLY)
        for package in ("services", "shared", "trainyard") for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}
