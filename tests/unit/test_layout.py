"""The package layout's rules: only `maestro.orchestration` (besides `dags/` and `plugins/`)
imports Airflow at module level, so the rest stays usable and testable without it; and the
packages of `maestro` import each other only down the table below, never in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import PROJECT

PACKAGE = PROJECT / "include" / "maestro"

# What each package (or top-level module) of `maestro` may import of the others, at module level
# or inside a function alike. A new arrow goes here first, and only if it points down: the test
# below fails on a table with a circle in it.
BASE = {"config", "errors", "vocabulary"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "vocabulary": set(),
    "files": set(),
    "waiting": set(),
    "web": set(),
    "handles": {"vocabulary"},
    "config": {"errors", "vocabulary"},
    "spec": {"config", "errors"},
    "tracking": {"config"},
    "registry": BASE | {"spec", "tracking"},
    "models": {"spec"},
    "data": BASE | {"files", "spec"},
    "logs": BASE | {"data", "files", "spec"},  # data: object stores, opened as sources are
    "training": BASE | {"data", "handles", "models", "registry", "spec", "tracking"},
    "lineage": BASE | {"data", "handles", "spec"},
    "governance": BASE | {"handles", "models", "registry", "spec", "tracking", "training"},
    "serving": BASE
    | {"data", "files", "logs", "models", "registry", "spec", "tracking", "waiting"},
    "monitoring": BASE
    | {"handles", "logs", "models", "registry", "spec", "tracking", "training", "web"},
    "deploy": BASE
    | {"files", "monitoring", "registry", "serving", "spec", "tracking", "waiting", "web"},
    "orchestration": BASE
    | {"governance", "lineage", "monitoring", "registry", "spec", "tracking", "training"},
    "platform": BASE
    | {"data", "deploy", "files", "governance", "logs", "registry", "serving", "spec"}
    | {"tracking", "waiting", "web"},
}


def module_level_imports(path: Path, at_run_time: bool = False) -> set[str]:
    """Top-level module names imported outside any function or class body (`at_run_time`:
    not counting an `if TYPE_CHECKING:` block, which only the type checker reads)."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if (
                at_run_time
                and isinstance(node, ast.If)
                and ast.unparse(node.test) == "TYPE_CHECKING"
            ):
                visit(node.orelse)
            elif isinstance(node, ast.Import):
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
        if path.parent.name != "orchestration"
        and "airflow" in module_level_imports(path, at_run_time=True)
    ]
    assert offenders == [], f"Airflow imported at module level outside orchestration: {offenders}"


def test_the_check_sees_an_airflow_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("try:\n    from airflow.sdk import dag\nexcept ImportError:\n    pass\n")
    assert "airflow" in module_level_imports(sample)
    sample.write_text("def f():\n    import airflow\n")
    assert "airflow" not in module_level_imports(sample)
    sample.write_text("if TYPE_CHECKING:\n    from airflow.sdk import Connection\n")
    assert "airflow" not in module_level_imports(sample, at_run_time=True)


def test_every_package_is_listed_in_the_readme():
    readme = (PROJECT / "README.md").read_text()
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    missing = [name for name in packages if f"{name}/" not in readme]
    assert missing == [], f"packages missing from the README's Layout: {missing}"


def part_of(path: Path) -> str:
    """The package (or top-level module) of `maestro` a file belongs to."""
    first = path.relative_to(PACKAGE).parts[0]
    return first.removesuffix(".py")


def maestro_imports(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """Every `maestro` module a file imports, anywhere in it (functions and TYPE_CHECKING
    blocks included), relative imports resolved, with the line."""
    module = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    here = module[:-1]  # the package a relative import starts from
    found = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            name = ".".join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("maestro.")]


def arrows(path: Path, text: str | None = None) -> set[tuple[str, str, str]]:
    """(from, to, where) for each import of another part of `maestro` in a file."""
    parts = set(ALLOWED)
    source = part_of(path)
    found = set()
    for line, name in maestro_imports(path, text):
        target = name.split(".")[1]
        if target in parts and target != source:
            found.add((source, target, f"{path.relative_to(PACKAGE)}:{line}"))
    return found


def test_every_part_of_the_package_is_in_the_table():
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py"}
    parts |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert parts - {"__init__"} == set(ALLOWED)


def test_packages_import_each_other_only_down_the_table():
    wrong = sorted(
        f"{where}: {source} imports {target}"
        for path in PACKAGE.rglob("*.py")
        for source, target, where in arrows(path)
        if target not in ALLOWED[source]
    )
    assert wrong == [], "imports the layer table does not allow:\n" + "\n".join(wrong)


def test_the_table_has_no_circle():
    done: set[str] = set()

    def visit(part: str, path: tuple[str, ...]) -> None:
        assert part not in path, f"a circle: {' -> '.join((*path, part))}"
        if part not in done:
            for below in ALLOWED[part]:
                visit(below, (*path, part))
            done.add(part)

    for part in ALLOWED:
        visit(part, ())


def test_the_check_sees_imports_inside_functions_and_relative_ones():
    inside = PACKAGE / "serving" / "example.py"  # never written: only its place counts
    sample = "def f():\n    from maestro.monitoring import drift\n    from ..deploy import x\n"
    assert {(s, t) for s, t, _ in arrows(inside, sample)} == {
        ("serving", "monitoring"),
        ("serving", "deploy"),
    }


def test_no_module_grows_past_400_lines():
    """A module past 400 lines holds more than one idea: cut it by concern first."""
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}, f"modules above 400 lines: {long}"


def test_a_test_that_needs_a_server_carries_its_marker():
    """The markers come from the helpers and fixtures a test uses: `-m` selects by need."""
    import subprocess
    import sys

    def selected(expression: str) -> set[str]:
        found = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", expression],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            check=True,
        )
        return {line.split("::")[1] for line in found.stdout.splitlines() if "::" in line}

    assert selected("browser or (mariadb and not postgres)") == {
        "test_the_production_platform",
        "test_a_sql_source_reads_one_statement_in_a_read_only_transaction[mariadb]",
        "test_a_sql_source_reads_only_the_window_from_an_airflow_connection[mariadb]",
    }
    alone = selected("not (postgres or mariadb or redis or prometheus or browser)")
    assert "test_training_pipeline_on_postgres" not in alone
    assert "test_a_good_record_and_batch_are_scored" in alone
