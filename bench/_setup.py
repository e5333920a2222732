"""Shared set-up of the benchmarks: a scratch state folder and specs sized for the run."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]


def scratch_platform(
    demo_rows: int, trials: int, governance: dict | None = None, model: str = "demo"
) -> Path:
    """Point the platform at a fresh state folder and a copy of the specs with `model` (a spec
    on generated data: `demo`, `churn_mlp`) resized (and `governance` fields changed); bring
    Airflow's metadata database up. Call before anything imports Airflow."""
    home = Path(tempfile.mkdtemp(prefix="maestro-bench-"))
    specs = home / "specs"
    specs.mkdir()
    for path in (PROJECT / "include" / "specs").glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        if raw["name"] == model:
            raw["source"]["rows"] = demo_rows
            raw["trials"] = trials
            raw["schedule"] = None  # runs only when a benchmark triggers one
            raw["governance"].update(governance or {})
        (specs / path.name).write_text(yaml.safe_dump(raw, sort_keys=False))
    os.environ["MAESTRO_HOME"] = str(home)
    os.environ["MAESTRO_SPECS_DIR"] = str(specs)
    from maestro.config import get_settings
    from maestro.platform.airflow_env import apply_environment, migrate_metadata_db

    get_settings.cache_clear()
    apply_environment(get_settings())
    migrate_metadata_db(get_settings(), home / "airflow-setup.log")
    return home


def python() -> str:
    return sys.executable


def run(code: str, *args: str) -> str:
    return subprocess.run(
        [python(), "-c", code, *args], check=True, capture_output=True, text=True
    ).stdout
