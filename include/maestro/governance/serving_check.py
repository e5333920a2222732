"""Infrastructure validation: load a registered version exactly as serving will (by its
registry URI, through MLflow's pyfunc flavour, in a fresh process), score sample rows, and
time single-row predictions.

    python -m maestro.governance.serving_check MODEL_URI ROWS.parquet RESULT.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

WARM_UP = 5


def check_in_fresh_process(
    model_uri: str, rows: pd.DataFrame, expected: np.ndarray, tracking_uri: str
) -> dict:
    """Run this module in a new interpreter; compare its scores with `expected` (a matrix of
    class probabilities, multiclass; else one score per row)."""
    from maestro.models import output_scores

    with tempfile.TemporaryDirectory(prefix="maestro-serving-check-") as tmp:
        rows_path, result_path = Path(tmp) / "rows.parquet", Path(tmp) / "result.json"
        rows.to_parquet(rows_path)
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MLFLOW_REGISTRY_URI": tracking_uri,
        }
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "maestro.governance.serving_check",
                model_uri,
                str(rows_path),
                str(result_path),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            return {"loaded": False, "error": (done.stderr or done.stdout)[-2000:]}
        result = json.loads(result_path.read_text())
    multiclass = expected.ndim == 2
    scores = output_scores(result.pop("output"), classification=True, multiclass=multiclass)
    latencies = np.asarray(result.pop("latencies_ms"))
    return {
        **result,
        "loaded": True,
        "rows": len(rows),
        "max_abs_difference": float(np.max(np.abs(scores - expected)))
        if scores.shape == expected.shape
        else float("inf"),  # another shape: nothing like offline
        "latency_p50_ms": float(np.percentile(latencies, 50)),
        "latency_p95_ms": float(np.percentile(latencies, 95)),
    }


def main(model_uri: str, rows_path: str, result_path: str) -> None:
    import mlflow

    started = time.perf_counter()
    model = mlflow.pyfunc.load_model(model_uri)
    loaded = time.perf_counter() - started
    rows = pd.read_parquet(rows_path)
    output = model.predict(rows)
    output = np.asarray(output.to_numpy() if hasattr(output, "to_numpy") else output, dtype=float)
    latencies = []
    for i in range(len(rows) + WARM_UP):
        row = rows.iloc[[i % len(rows)]]
        tick = time.perf_counter()
        model.predict(row)
        if i >= WARM_UP:
            latencies.append((time.perf_counter() - tick) * 1000)
    Path(result_path).write_text(
        json.dumps({"output": output.tolist(), "latencies_ms": latencies, "load_seconds": loaded})
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
