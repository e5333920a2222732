"""Serving any model, side by side in one run: a multiclass model and a spec's own pyfunc model.

Models, each registered as its champion in a scratch MLflow registry, as the training DAG logs
them:
- forest_cover: UCI Forest Covertype (../shared/data/covtype.csv, 54 features, 7 classes), a
  LightGBM multiclass pipeline (100 rounds, 700 trees; 10 under --smoke): maestro scores it on its booster path
  (batches on the compiled forest), answering every class's probability;
- churn_mlp: the PyTorch network of include/trainers/tabular_mlp.py (a spec's own trainer) on
  the demo's generated data, logged as an MLflow pyfunc model with its code: no fast path, the
  server's generic pyfunc path.
Servers, one process each, on loopback:
- maestro: `maestro serve forest_cover churn_mlp --workers 1`, prediction log on; its JSON
  records route and its Open Inference Protocol (V2) route, one input per feature;
- MLServer 1.7.1 with its MLflow runtime (mlserver-mlflow) on the same versions' files, in its
  own virtualenv with the same mlflow, scikit-learn, LightGBM and torch (made once under
  ~/.cache/maestro; left out of --smoke), `parallel_workers` 0 as maestro's one process; sent
  the same V2 body as maestro's V2 route (its runtime reads the signature: a pandas frame);
  its answer is checked equal to maestro's;
- `mlflow models serve` of each version (--env-manager local, one worker), sent
  `dataframe_records`.
Every server is loaded by Debian's `wrk` (one thread): single rows with 8 connections,
1,000-row batches with 2; `--rounds` rounds, the servers' order rotated each round, each run
once every server and its children are quiet (maestro's prediction log writer caught up),
figures averaged. Requests/s counts answers: a request refused (maestro's 503 when its log's
writer falls behind past its bounds) counts under errors only. wrk cannot pace, so the p99
at 200 requests/s is measured by bench/loadgen.py (open loop, latency counted from when each
request was due), maestro only.

    .venv/bin/python bench/any_model.py [--seconds 10] [--rounds 3] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from serving import (  # importing it puts the project on the path (tests.support)
    load,
    start,
    v2_body,
    wait_until_compiled,
    wait_until_quiet,
    wait_until_up,
    wrk,
)

from maestro.web import free_port

HERE = Path(__file__).resolve().parent
MODELS = ("forest_cover", "churn_mlp")
MLSERVER = (
    "mlserver==1.7.1",
    "mlserver-mlflow==1.7.1",
    "mlflow=={mlflow}",
    "scikit-learn=={scikit-learn}",
    "lightgbm=={lightgbm}",
    "pandas=={pandas}",
    "skops=={skops}",
    "cloudpickle=={cloudpickle}",
    "torch=={torch}",
)


def register_models(settings, smoke: bool) -> dict[str, list[dict]]:
    """Both models registered as their champions (smaller under --smoke); 1,000 rows of each
    one's features."""
    from maestro.data.synthetic import generate
    from maestro.handles import BestTrial
    from maestro.spec import get_spec
    from maestro.training.stages import fit_trainer
    from tests.support import fit_lightgbm, forest_cover_frame, register_version

    cover = get_spec("forest_cover", settings)
    frame = forest_cover_frame(settings)
    params = {"n_estimators": 10 if smoke else 100, "learning_rate": 0.1, "num_leaves": 31}
    register_version(settings, cover, fit_lightgbm(cover, frame, params, threads=2), frame)

    mlp = get_spec("churn_mlp", settings)
    data = generate(20000)
    params = {"hidden": 64, "learning_rate": 0.005, "dropout": 0.1, "epochs": 2 if smoke else 15}
    best = BestTrial(number=0, family="mlp", params=params, value=0.0, trials=1)
    network = fit_trainer(mlp, best, data.iloc[:16000], data.iloc[16000:])
    register_version(settings, mlp, network, data, trainer="mlp")
    return {
        "forest_cover": records(frame[cover.feature_names]),
        "churn_mlp": records(data[mlp.feature_names]),
    }


def records(features) -> list[dict]:
    return json.loads(features.dropna().head(1000).to_json(orient="records"))


def mlserver_venv() -> Path:
    """MLServer and its MLflow runtime in a virtualenv of their own, made once, with the
    versions of what the models load with that this environment has."""
    from importlib.metadata import version

    names = ("mlflow", "scikit-learn", "lightgbm", "pandas", "skops", "cloudpickle", "torch")
    pins = [p.format(**{n: version(n).split("+")[0] for n in names}) for p in MLSERVER]
    venv = Path.home() / ".cache" / "maestro" / "mlserver-1.7.1-mlflow"
    if not (venv / "bin" / "mlserver").exists():
        print(f"installing {' '.join(pins)} into {venv} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *pins]
        subprocess.run(pip, check=True)
    return venv


def mlserver_repository(root: Path, port: int) -> Path:
    """Each champion's files, downloaded from the registry, under MLServer's MLflow runtime."""
    import mlflow

    for name in MODELS:
        local = mlflow.artifacts.download_artifacts(
            f"models:/{name}@champion", dst_path=str(root / name / "model")
        )
        settings = {
            "name": name,
            "implementation": "mlserver_mlflow.MLflowRuntime",
            "parameters": {"uri": local, "version": "1"},
        }
        (root / name / "model-settings.json").write_text(json.dumps(settings))
    server = {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": 0,
    }
    (root / "settings.json").write_text(json.dumps(server))
    return root


def bodies(metadata: dict, rows: list[dict]) -> dict[str, dict[str, bytes]]:
    """Each protocol's single-row and 1,000-row bodies."""
    batch = (rows * 1000)[:1000]
    return {
        "records": {"single": json.dumps(rows[0]).encode(), "batch": json.dumps(batch).encode()},
        "v2": {"single": v2_body(metadata, rows[:1]), "batch": v2_body(metadata, batch)},
        "mlflow": {
            "single": json.dumps({"dataframe_records": rows[:1]}).encode(),
            "batch": json.dumps({"dataframe_records": batch}).encode(),
        },
    }


def probabilities(answer: dict) -> np.ndarray:
    """The probabilities in a V2 answer (maestro's or MLServer's): its FP64 tensor, rows x
    classes, or P(positive) per row."""
    tensor = next(o for o in answer["outputs"] if o["datatype"] == "FP64")
    return np.asarray(tensor["data"], dtype=float).reshape(tensor["shape"])


def check_same_answers(ours: str, theirs: str, body: bytes) -> None:
    """Both servers answer the same probabilities (MLServer answers a binary model's two
    columns, maestro P(positive))."""
    import httpx

    headers = {"Content-Type": "application/json"}
    mine = probabilities(httpx.post(ours, content=body, headers=headers, timeout=30).json())
    other = probabilities(httpx.post(theirs, content=body, headers=headers, timeout=30).json())
    if mine.ndim == 1 and other.ndim == 2:
        other = other[:, -1]
    np.testing.assert_allclose(mine, other, rtol=1e-6, atol=1e-9)


def measure(
    urls: dict[str, tuple[str, str]], payloads: dict, pids: list[int], tmp: Path, a
) -> dict[str, dict]:
    """wrk on every server, single rows and batches, in rotating order, each run once the
    servers (`pids`) are quiet; maestro's p99 at 200 requests/s (loadgen, open loop) in both
    protocols."""
    runs = {
        f"{server}, {size}": (url, payloads[protocol][size], 8 if size == "single" else 2)
        for server, (url, protocol) in urls.items()
        for size in ("single", "batch")
    }
    found: dict[str, list[dict]] = {name: [] for name in runs}
    names = list(runs)
    for name in names:  # every server has answered this body before it is measured
        url, body, connections = runs[name]
        wrk(url, body, tmp, 1, connections)
    for i in range(a.rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            url, body, connections = runs[name]
            if not a.smoke:  # no run measured while a writer catches up on the one before
                wait_until_quiet(pids)
            found[name].append(wrk(url, body, tmp, a.seconds, connections))
    pooled = {  # figures averaged over the rounds, errors counted over all of them
        name: {
            key: sum(r[key] for r in results)
            if key == "errors"
            else float(np.mean([r[key] for r in results]))
            for key in results[0]
        }
        for name, results in found.items()
    }
    for protocol, server in (("records", "maestro"), ("v2", "maestro V2")):
        url = urls[server][0]
        paced = load(url, payloads[protocol]["single"], tmp, a.seconds * a.rounds, 4, rate=200)
        pooled[f"{server} @200/s"] = paced
    return pooled


def report(model: str, m: dict[str, dict]) -> None:
    print(f"\n| {model} | requests/s | rows/s | p50 ms | p99 ms | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in m.items():
        rows = 1000 if name.endswith("batch") else 1
        print(
            f"| {name} | {r['rps']:,.0f} | {r['rps'] * rows:,.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['errors']} |"
        )
    goals = [("single rows at least 3x MLServer", "single", 3.0, 1)]
    goals.append(("1,000-row batches at least MLServer's rows/s", "batch", 1.0, 1000))
    for goal, size, wanted, _ in goals:
        theirs = m.get(f"MLServer V2, {size}")
        if theirs is None:
            continue
        for server in ("maestro", "maestro V2"):
            ratio = m[f"{server}, {size}"]["rps"] / theirs["rps"]
            verdict = "yes" if ratio >= wanted else "no"
            print(f"goal: {goal} ({server}): {ratio:.2f}x -> {verdict}")
    for server in ("maestro", "maestro V2"):
        p99 = m[f"{server} @200/s"]["p99_ms"]
        print(f"goal: p99 at most 10 ms at 200 requests/s ({server}): {p99:.2f} ms")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="1-second runs, one round, no MLServer")
    a = p.parse_args()
    if a.smoke:
        a.seconds, a.rounds = 1, 1
    tmp = Path(tempfile.mkdtemp(prefix="maestro-bench-any-model-"))
    os.environ["MAESTRO_HOME"] = str(tmp / "home")
    import httpx

    from maestro.config import get_settings

    settings = get_settings()
    rows = register_models(settings, a.smoke)
    bin_dir = str(Path(sys.executable).parent)  # `mlflow models serve` runs `uvicorn` from PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.tracking_uri,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    ports = {name: free_port() for name in ("maestro", "mlserver", *MODELS)}
    maestro = str(Path(sys.executable).with_name("maestro"))
    command = [maestro, "serve", *MODELS, "--port", str(ports["maestro"]), "--workers", "1"]
    procs = [start(command, env, tmp / "maestro.log")]
    if not a.smoke:
        repository = mlserver_repository(tmp / "mlserver", ports["mlserver"])
        mlserver = str(mlserver_venv() / "bin" / "mlserver")
        procs.append(start([mlserver, "start", str(repository)], env, tmp / "mlserver.log"))
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    for model in MODELS:
        command = [mlflow_bin, "models", "serve", "-m", f"models:/{model}@champion"]
        command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(ports[model])]
        procs.append(start([*command, "--workers", "1"], env, tmp / f"mlflow-{model}.log"))
    base = f"http://127.0.0.1:{ports['maestro']}"
    results = {}
    try:
        for model in MODELS:
            wait_until_up(f"{base}/v1/models/{model}/predict", json.dumps(rows[model][0]).encode())
            metadata = httpx.get(f"{base}/v2/models/{model}", timeout=10).json()
            payloads = bodies(metadata, rows[model])
            urls = {
                "maestro": (f"{base}/v1/models/{model}/predict", "records"),
                "maestro V2": (f"{base}/v2/models/{model}/infer", "v2"),
                "mlflow models serve": (f"http://127.0.0.1:{ports[model]}/invocations", "mlflow"),
            }
            if not a.smoke:
                theirs = f"http://127.0.0.1:{ports['mlserver']}/v2/models/{model}/infer"
                wait_until_up(theirs, payloads["v2"]["single"])
                check_same_answers(urls["maestro V2"][0], theirs, payloads["v2"]["batch"])
                urls["MLServer V2"] = (theirs, "v2")
            wait_until_up(urls["mlflow models serve"][0], payloads["mlflow"]["single"])
            if model == "forest_cover":  # batches on the compiled forest, once it is built
                wait_until_compiled(base, model, payloads["records"]["batch"])
            pids = [proc.pid for proc in procs]
            wait_until_quiet(pids)
            results[model] = measure(urls, payloads, pids, tmp, a)
            report(model, results[model])
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
    (tmp / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults: {tmp / 'results.json'}")


if __name__ == "__main__":
    main()
