"""The package layout's rules: only `maestro.orchestration` (besides `dags/` and `plugins/`)
imports Airflow at module level, so the rest stays usable and testable without it."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import PROJECT

PACKAGE = PROJECT / "include" / "maestro"


def module_level_imports(path: Path) -> set[str]:
    """Top-level module names imported outside any function or class body."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, block, []):
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])

    visit(ast.parse(path.read_text()).body)
    return found


def test_only_orchestration_imports_airflow_at_module_level():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.parent.name != "orchestration" and "airflow" in module_level_imports(path)
    ]
    assert offenders == [], f"Airflow imported at module level outside orchestration: {offenders}"


def test_the_check_sees_an_airflow_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("try:\n    from airflow.sdk import dag\nexcept ImportError:\n    pass\n")
    assert "airflow" in module_level_imports(sample)
    sample.write_text("def f():\n    import airflow\n")
    assert "airflow" not in module_level_imports(sample)


def test_every_package_is_listed_in_the_readme():
    readme = (PROJECT / "README.md").read_text()
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    missing = [name for name in packages if f"{name}/" not in readme]
    assert missing == [], f"packages missing from the README's Layout: {missing}"
