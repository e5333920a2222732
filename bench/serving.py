"""Model server throughput and latency, side by side in one run, on `demo` and `adult_income`.

Each model is a LightGBM pipeline (ordinal categories) registered in a scratch MLflow registry.
Servers, one worker each, on loopback; the load generator (bench/loadgen.py) in its own process:
- maestro: `maestro serve` (prediction log on, as deployed) and the same with the log off;
- mlflow: `mlflow models serve` of the same version (--env-manager local, one worker);
- bare: a FastAPI endpoint on uvicorn that returns a constant (this machine's HTTP ceiling).
Runs: single-row requests in a closed loop (8 connections), at a fixed 200 requests/s (open
loop), and 1,000-row batches (2 connections). The cost of the prediction log is p99 at 200/s
with the log against without, over `--rounds` alternating pairs of runs, latencies pooled.

    .venv/bin/python bench/serving.py [--seconds 8] [--rounds 5] [--smoke]
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

from maestro.web import free_port

HERE = Path(__file__).resolve().parent
BARE = """
from fastapi import FastAPI
from fastapi.responses import Response
import uvicorn, sys
app = FastAPI()
@app.post("/predict")
async def predict() -> Response:
    return Response(b'{"predictions": [0.5]}', media_type="application/json")
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools", access_log=False, log_level="warning")
"""


def register(settings, model: str, frame) -> dict:
    """A LightGBM pipeline of `model` on `frame`, registered as its champion; returns a row."""
    import mlflow

    from maestro import tracking
    from maestro.spec import get_spec
    from maestro.training.families import build_estimator, fit
    from maestro.training.stages import log_pipeline

    spec = get_spec(model, settings)
    X, y = frame[spec.feature_names], frame[spec.target.name].to_numpy()
    params = {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 31}
    pipeline = fit(build_estimator(spec, "lightgbm", params, threads=2), spec, "lightgbm", X, y)
    mlc = tracking.client(settings)
    with mlflow.start_run(experiment_id=tracking.experiment_id(settings, model)):
        logged = log_pipeline(pipeline, spec, X.dropna().head(5))
    version = mlflow.register_model(logged.model_uri, model).version
    mlc.set_registered_model_alias(model, "champion", str(version))
    return json.loads(X.dropna().head(1).to_json(orient="records"))[0]


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_until_up(url: str, body: bytes, timeout: float = 180) -> None:
    """Until `url` answers the body with 200 (a server loading its models answers 503)."""
    import httpx

    from maestro.waiting import wait_for

    def answers() -> bool:
        try:
            headers = {"Content-Type": "application/json"}
            return httpx.post(url, content=body, headers=headers, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, timeout=timeout, interval=0.5, what=f"{url} did not answer")


def load(
    url: str,
    body: bytes,
    tmp: Path,
    seconds: float,
    connections: int,
    rate: float | None = None,
    raw: bool = False,
) -> dict:
    path = tmp / "body.json"
    path.write_bytes(body)
    command = [
        sys.executable,
        str(HERE / "loadgen.py"),
        url,
        str(path),
        "--connections",
        str(connections),
        "--seconds",
        str(seconds),
    ]
    if rate:
        command += ["--rate", str(rate)]
    if raw:
        command.append("--raw")
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def paced(ours: str, nolog: str, body: bytes, tmp: Path, seconds: float, rounds: int) -> dict:
    """200 requests/s with and without the prediction log, in alternating runs; per server,
    the latencies of all its runs pooled (a p99 of 2,000 requests moves with whatever else the
    machine does; one of 10,000 from alternating runs much less)."""
    runs: dict[str, list[dict]] = {"maestro @200/s": [], "maestro @200/s, log off": []}
    for i in range(rounds):
        order = list(zip(runs, (ours, nolog), strict=True))
        for name, url in order if i % 2 == 0 else order[::-1]:
            runs[name].append(load(url, body, tmp, seconds, 4, rate=200, raw=True))
    pooled = {}
    for name, results in runs.items():
        latencies = np.concatenate([r["latencies_ms"] for r in results])
        pooled[name] = {
            "requests": len(latencies),
            "errors": sum(r["errors"] for r in results),
            "rps": float(np.mean([r["rps"] for r in results])),
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)),
            "p99_ms_per_run": [round(r["p99_ms"], 2) for r in results],
        }
    return pooled


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="1-second runs, one round: a check")
    a = p.parse_args()
    if a.smoke:
        a.seconds, a.rounds = 1, 1
    tmp = Path(tempfile.mkdtemp(prefix="maestro-bench-serving-"))
    os.environ["MAESTRO_HOME"] = str(tmp / "home")
    from maestro.config import get_settings
    from maestro.data import sources
    from maestro.data.synthetic import generate
    from maestro.spec import get_spec

    settings = get_settings()
    adult = get_spec("adult_income", settings)
    origin = "adult"
    adult_frame = sources.conform(
        sources.add_keys(sources.read_source(adult, settings), adult, origin), adult, origin
    )
    rows = {
        "demo": register(settings, "demo", generate(20000)),
        "adult_income": register(settings, "adult_income", adult_frame),
    }

    bin_dir = str(Path(sys.executable).parent)  # `mlflow models serve` runs `uvicorn` from PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.tracking_uri,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    maestro = str(Path(sys.executable).with_name("maestro"))
    ports = {name: free_port() for name in ("maestro", "maestro-nolog", "bare")}
    procs = [
        start(
            [maestro, "serve", "demo", "adult_income", "--port", str(ports["maestro"])],
            env,
            tmp / "maestro.log",
        ),
        start(
            [maestro, "serve", "demo", "adult_income", "--port", str(ports["maestro-nolog"])],
            {
                **env,
                "MAESTRO_PREDICTION_LOG": "off",
                "MAESTRO_SERVING_PLAN": str(tmp / "plan-nolog.json"),
            },
            tmp / "maestro-nolog.log",
        ),
        start([sys.executable, "-c", BARE, str(ports["bare"])], env, tmp / "bare.log"),
    ]
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    for model in rows:
        ports[f"mlflow-{model}"] = free_port()
        command = [
            mlflow_bin,
            "models",
            "serve",
            "-m",
            f"models:/{model}@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(ports[f"mlflow-{model}"]),
            "--workers",
            "1",
        ]
        procs.append(start(command, env, tmp / f"mlflow-{model}.log"))
    results = {}
    try:
        for model, row in rows.items():
            single = json.dumps(row).encode()
            batch = json.dumps([row] * 1000).encode()
            ours = f"http://127.0.0.1:{ports['maestro']}/v1/models/{model}/predict"
            nolog = f"http://127.0.0.1:{ports['maestro-nolog']}/v1/models/{model}/predict"
            theirs = f"http://127.0.0.1:{ports[f'mlflow-{model}']}/invocations"
            bare = f"http://127.0.0.1:{ports['bare']}/predict"
            theirs_body = json.dumps({"dataframe_records": [row]}).encode()
            for url, body in (
                (ours, single),
                (nolog, single),
                (theirs, theirs_body),
                (bare, single),
            ):
                wait_until_up(url, body)
            s = a.seconds
            results[model] = {
                "maestro": load(ours, single, tmp, s, 8),
                "mlflow models serve": load(theirs, theirs_body, tmp, s, 8),
                "bare FastAPI": load(bare, single, tmp, s, 8),
                **paced(ours, nolog, single, tmp, s, a.rounds),
                "maestro batch 1000": load(ours, batch, tmp, s, 2),
            }
            print(f"\n### {model}\n")
            print("| server, load | requests/s | p50 ms | p99 ms | errors |")
            print("| --- | ---: | ---: | ---: | ---: |")
            for name, r in results[model].items():
                print(
                    f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |"
                )
            m = results[model]
            print(
                f"\nthroughput vs mlflow models serve: {m['maestro']['rps'] / m['mlflow models serve']['rps']:.1f}x; "
                f"vs bare FastAPI: {m['maestro']['rps'] / m['bare FastAPI']['rps']:.2f}; "
                f"batch rows/s: {m['maestro batch 1000']['rps'] * 1000:,.0f}; "
                f"p99 at 200/s with log / without: {m['maestro @200/s']['p99_ms'] / m['maestro @200/s, log off']['p99_ms']:.2f} "
                f"(p99 of each run, with: {m['maestro @200/s']['p99_ms_per_run']}, "
                f"without: {m['maestro @200/s, log off']['p99_ms_per_run']})"
            )
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
    (tmp / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nraw figures: {tmp / 'results.json'}")


if __name__ == "__main__":
    main()
