"""The model server now against the same server at an earlier commit, side by side in one run:
what a change to the serving code did to its figures, on this machine, today.

The earlier commit is checked out in a scratch git worktree and served by the same virtualenv
(its `include/` first on PYTHONPATH). Both serve `demo` and `adult_income` (LightGBM, 200
trees, registered once in a scratch registry), one process each, prediction log on, forests
compiled. Debian's `wrk` loads one server at a time: single rows (8 connections) and 1,000-row
JSON batches (2 connections), in `--rounds` pairs of runs whose order alternates, each server
left quiet (its log written) before the next run. Reported per model and load: each server's
requests/s and p99 (means of its runs), and now/before with the ratio of every pair.

    .venv/bin/python bench/against.py 34d510a [--seconds 10] [--rounds 5] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serving import (  # noqa: E402
    register_models,
    start,
    wait_until_compiled,
    wait_until_quiet,
    wait_until_up,
    wrk,
)

from maestro.web import free_port  # noqa: E402

PROJECT = HERE.parent
LOADS = (("single rows", 8), ("1,000-row batches", 2))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("before", help="the earlier commit (any git revision)")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="1-second runs, one round: a check")
    a = p.parse_args()
    if a.smoke:
        a.seconds, a.rounds = 1, 1
    tmp = Path(tempfile.mkdtemp(prefix="maestro-bench-against-"))
    os.environ["MAESTRO_HOME"] = str(tmp / "home")
    worktree = tmp / "before"
    subprocess.run(
        ["git", "-C", str(PROJECT), "worktree", "add", "--detach", str(worktree), a.before],
        check=True,
        capture_output=True,
    )
    try:
        run(a, tmp, worktree)
    finally:
        subprocess.run(
            ["git", "-C", str(PROJECT), "worktree", "remove", "--force", str(worktree)],
            check=True,
        )


def run(a, tmp: Path, worktree: Path) -> None:
    from maestro.config import get_settings

    settings = get_settings()
    rows = {model: found[0] for model, found in register_models(settings).items()}
    maestro = str(Path(sys.executable).with_name("maestro"))
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.tracking_uri,
    }
    servers = {}
    for name, extra in (
        ("now", {}),
        (
            "before",
            {"PYTHONPATH": f"{worktree / 'include'}{os.pathsep}{env.get('PYTHONPATH', '')}"},
        ),
    ):
        port = free_port()
        server_env = {
            **env,
            **extra,
            "MAESTRO_PREDICTION_LOG": str(tmp / f"log-{name}"),
            "MAESTRO_SERVING_PLAN": str(tmp / f"plan-{name}.json"),
        }
        command = [maestro, "serve", "demo", "adult_income", "--port", str(port), "--workers", "1"]
        servers[name] = (
            start(command, server_env, tmp / f"{name}.log"),
            f"http://127.0.0.1:{port}",
        )
    results = {}
    try:
        for model, model_rows in rows.items():
            bodies = {
                "single rows": json.dumps(model_rows[0]).encode(),
                "1,000-row batches": json.dumps((model_rows * 1000)[:1000]).encode(),
            }
            for _, base in servers.values():
                url = f"{base}/v1/models/{model}/predict"
                wait_until_up(url, bodies["single rows"])
                wait_until_compiled(base, model, bodies["1,000-row batches"])
            results[model] = compare(model, servers, bodies, tmp, a)
            report(model, results[model])
    finally:
        for process, _ in servers.values():
            os.killpg(process.pid, signal.SIGTERM)
    (tmp / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nraw figures: {tmp / 'results.json'}")


def compare(model: str, servers: dict, bodies: dict, tmp: Path, a) -> dict:
    """Every load on both servers, in alternating pairs of runs."""
    pids = [process.pid for process, _ in servers.values()]
    found: dict[str, dict[str, list[dict]]] = {}
    for load, connections in LOADS:
        runs: dict[str, list[dict]] = {name: [] for name in servers}
        for i in range(a.rounds):
            order = list(servers) if i % 2 == 0 else list(servers)[::-1]
            for name in order:
                wait_until_quiet(pids)
                url = f"{servers[name][1]}/v1/models/{model}/predict"
                runs[name].append(wrk(url, bodies[load], tmp, a.seconds, connections))
        found[load] = runs
    return found


def report(model: str, found: dict) -> None:
    print(f"\n### {model}\n")
    print(
        "| load | before: requests/s, p99 ms | now: requests/s, p99 ms | now / before (each pair) |"
    )
    print("| --- | ---: | ---: | --- |")
    for load, runs in found.items():
        before, now = runs["before"], runs["now"]
        pairs = [n["rps"] / b["rps"] for n, b in zip(now, before, strict=True)]
        print(
            f"| {load} | {np.mean([r['rps'] for r in before]):,.0f}, "
            f"{np.mean([r['p99_ms'] for r in before]):.2f} | "
            f"{np.mean([r['rps'] for r in now]):,.0f}, {np.mean([r['p99_ms'] for r in now]):.2f} | "
            f"{np.mean(pairs):.2f} ({', '.join(f'{p:.2f}' for p in pairs)}) |"
        )


if __name__ == "__main__":
    main()
