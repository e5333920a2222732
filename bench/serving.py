"""Model server throughput and latency, side by side in one run, on `demo` and `adult_income`.

Each model is a LightGBM pipeline (ordinal categories) registered in a scratch MLflow registry.
Servers, one process each unless said, on loopback; the load generator (bench/loadgen.py) in
its own process:
- maestro: `maestro serve --workers 1` (prediction log on, as deployed) and the same with the
  log off; in the JSON records protocol and the Open Inference Protocol (V2, one input per
  feature); and `--workers 2`;
- MLServer 1.7.1 with its LightGBM runtime on the same booster, in its own virtualenv (made
  once under ~/.cache/maestro), sent the V2 tensor it takes: the features already encoded as
  one float matrix (left out of --smoke: installing it takes minutes);
- mlflow: `mlflow models serve` of the same version (--env-manager local, one worker);
- bare: a FastAPI endpoint on uvicorn that returns a constant (this machine's HTTP ceiling).
Runs: single-row requests in a closed loop (8 connections), at a fixed 200 requests/s (open
loop), and 1,000-row batches (2 connections). The cost of the prediction log is p99 at 200/s
with the log against without, over `--rounds` alternating pairs of runs, latencies pooled.
Worker scaling is measured with Debian's `wrk` (one thread, 32 connections, so that the kernel
spreads them evenly over the workers' sockets), which costs far less CPU than a Python
generator on cores it shares with the server; `--rounds` alternating pairs of runs, averaged;
its CPU share and the connections each worker got are printed.

    .venv/bin/python bench/serving.py [--seconds 8] [--rounds 5] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil

from maestro.web import free_port

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.support: how tests and benchmarks register a model
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


def register(settings, model: str, frame, trees: int = 200) -> tuple[list[dict], object]:
    """A LightGBM pipeline of `model` on `frame` (`trees` rounds), registered as its champion;
    returns 1,000 rows of its features and the pipeline."""
    from maestro.spec import get_spec
    from tests.support import fit_lightgbm, register_version

    spec = get_spec(model, settings)
    params = {"n_estimators": trees, "learning_rate": 0.05, "num_leaves": 31}
    pipeline = fit_lightgbm(spec, frame, params, threads=2)
    register_version(settings, spec, pipeline, frame)
    rows = frame[spec.feature_names].dropna().head(1000)
    return json.loads(rows.to_json(orient="records")), pipeline


def register_models(settings, smoke: bool = False) -> dict[str, tuple[list[dict], object]]:
    """`demo` (20,000 generated rows) and `adult_income` (UCI Adult), each registered as its
    champion (see `register`); 20 trees instead of 200 under --smoke, quick to fit and
    compile."""
    from maestro.data import sources
    from maestro.data.synthetic import generate
    from maestro.spec import get_spec

    adult = get_spec("adult_income", settings)
    adult_frame = sources.conform(
        sources.add_keys(sources.read_source(adult, settings), adult, "adult"), adult, "adult"
    )
    trees = 20 if smoke else 200
    return {
        "demo": register(settings, "demo", generate(20000), trees),
        "adult_income": register(settings, "adult_income", adult_frame, trees),
    }


MLSERVER = ("mlserver==1.7.1", "mlserver-lightgbm==1.7.1")


def mlserver_venv() -> Path:
    """MLServer and its LightGBM runtime in a virtualenv of their own, made once."""
    venv = Path.home() / ".cache" / "maestro" / "mlserver-1.7.1"
    if not (venv / "bin" / "mlserver").exists():
        print(f"installing {' '.join(MLSERVER)} into {venv} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *MLSERVER]
        subprocess.run(pip, check=True)
    return venv


def mlserver_repository(root: Path, pipelines: dict, port: int) -> Path:
    """Each model's booster as MLServer's LightGBM runtime loads it; one process, inference on
    its event loop (parallel_workers 0), as maestro's."""
    for name, pipeline in pipelines.items():
        folder = root / name
        folder.mkdir(parents=True)
        pipeline.named_steps["model"].booster_.save_model(str(folder / "model.bst"))
        settings = {
            "name": name,
            "implementation": "mlserver_lightgbm.LightGBMModel",
            "parameters": {"uri": "./model.bst", "version": "1"},
        }
        (folder / "model-settings.json").write_text(json.dumps(settings))
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


def encoded_tensor(pipeline, rows: list[dict]) -> bytes:
    """The V2 body MLServer's LightGBM runtime takes: the rows encoded by the pipeline's own
    preprocessing (numbers as they are, categories as ordinal codes), one FP64 tensor."""
    import numpy as np
    import pandas as pd

    matrix = np.asarray(pipeline.named_steps["prep"].transform(pd.DataFrame(rows)), dtype=float)
    tensor = {
        "name": "input-0",
        "shape": list(matrix.shape),
        "datatype": "FP64",
        "data": matrix.ravel().tolist(),
    }
    return json.dumps({"inputs": [tensor]}).encode()


def v2_body(metadata: dict, rows: list[dict]) -> bytes:
    """An Open Inference Protocol request for maestro: one input per feature, typed as its
    model metadata says."""
    inputs = [
        {
            "name": i["name"],
            "shape": [len(rows)],
            "datatype": i["datatype"],
            "data": [r[i["name"]] for r in rows],
        }
        for i in metadata["inputs"]
    ]
    return json.dumps({"inputs": inputs}).encode()


def v2_binary_body(columns, rows: list[dict]) -> tuple[bytes, str]:
    """The same request in the V2 binary tensor extension: a JSON header, then each column's
    bytes (numbers as one little-endian array, text length-prefixed)."""
    import struct

    import numpy as np

    from maestro.serving.v2 import DATATYPE

    inputs, chunks = [], []
    for c in columns:
        values = [r[c.name] for r in rows]
        if c.kind == "string":
            chunk = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
        else:
            dtype = {"number": "<f8", "integer": "<i8", "boolean": "?"}[c.kind]
            chunk = np.array(values, dtype=dtype).tobytes()
        parameters = {"binary_data_size": len(chunk)}
        inputs.append(
            {
                "name": c.name,
                "shape": [len(rows)],
                "datatype": DATATYPE[c.kind],
                "parameters": parameters,
            }
        )
        chunks.append(chunk)
    header = json.dumps({"inputs": inputs}).encode()
    return header + b"".join(chunks), str(len(header))


def batch_split(model: str, rows: list[dict], repeats: int, forests: Path) -> dict[str, float]:
    """Where a 1,000-row batch's time goes in the server, in-process (median ms of `repeats`):
    reading each protocol's body into validated columns, and the model on one thread (encoding
    the categories, then the booster or the compiled forest)."""
    import numpy as np
    import orjson

    from maestro.serving import v2
    from maestro.serving.records import to_columns
    from maestro.serving.scorer import load_scorer
    from maestro.waiting import wait_for

    scorer = load_scorer(model, "1", threads=1)
    compiled = load_scorer(model, "1", threads=1, forests=forests)
    batch = (rows * 1000)[:1000]
    records = json.dumps(batch).encode()
    v2_json = v2_body(v2.model_metadata(model, ["1"], scorer.columns), batch)
    binary, header = v2_binary_body(scorer.columns, batch)
    table = to_columns(batch, scorer.columns)
    compiled.score(table)
    wait_for(
        lambda: compiled.forest.state == "ready",
        timeout=300,
        interval=0.1,
        what=f"{model}'s forest was not compiled ({compiled.forest.state})",
    )
    steps = {
        "JSON records: parse": lambda: orjson.loads(records),
        "JSON records: parse and validate": lambda: to_columns(
            orjson.loads(records), scorer.columns
        ),
        "V2 JSON: parse and validate": lambda: v2.infer_request(
            v2_json, None, scorer.columns, 10_000
        ),
        "V2 binary: parse and validate": lambda: v2.infer_request(
            binary, header, scorer.columns, 10_000
        ),
        "model, booster (one thread)": lambda: scorer.score(table),
        "model, compiled forest (one thread)": lambda: compiled.score(table),
    }
    split = {}
    for name, step in steps.items():
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            times.append((time.perf_counter() - started) * 1000)
        split[name] = float(np.median(times))
    return split


def wait_until_compiled(base: str, model: str, batch: bytes, timeout: float = 300) -> None:
    """Send a batch, then wait until the server says its forest is compiled: batch runs
    measure the server as it runs once warm, not the seconds of compiling."""
    import httpx

    from maestro.waiting import wait_for

    url, headers = f"{base}/v1/models/{model}/predict", {"Content-Type": "application/json"}
    httpx.post(url, content=batch, headers=headers, timeout=60).raise_for_status()

    def compiled() -> bool:
        routes = httpx.get(f"{base}/v1/models", timeout=10).json()["models"][model]["routes"]
        states = {route["compiled"] for route in routes}
        if any(str(state).startswith("failed") for state in states):
            raise RuntimeError(f"{model}: {states}")
        return states == {"ready"}

    wait_for(compiled, timeout=timeout, interval=0.2, what=f"{model}'s forest was not compiled")


WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
# the kernel hashes each connection to one worker's socket: 8 connections often split 6/2 or
# worse between two workers, 32 split close to even
WRK_CONNECTIONS = 32


def wrk(
    url: str,
    body: bytes,
    tmp: Path,
    seconds: float,
    connections: int = WRK_CONNECTIONS,
    during: Callable[[], None] | None = None,
) -> dict:
    """Debian's wrk, one thread: requests answered per second (a 503 refusal, quick as it is,
    is counted in `errors`, not there), latency percentiles and the CPU wrk used itself;
    `during` is called halfway through the run."""
    (tmp / "wrk-body.json").write_bytes(body)
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=tmp / "wrk-body.json"))
    out = tmp / "wrk.out"
    duration = f"-d{max(1, round(seconds))}s"  # wrk takes whole seconds
    command = ["wrk", "-t1", f"-c{connections}", duration, "--latency", "-s", str(script)]
    with out.open("w") as stream:
        proc = subprocess.Popen([*command, url], stdout=stream, stderr=subprocess.STDOUT)
        if during is not None:
            time.sleep(seconds / 2)
            during()
        _, status, usage = os.wait4(proc.pid, 0)
    text = out.read_text()
    if status != 0 or "Requests/sec" not in text:
        raise RuntimeError(f"wrk failed: {text}")

    def percentile(p: str) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)$", text, re.M).groups()
        return float(value) * UNITS[unit]

    found = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = int(found[1]) if found else 0
    requests = int(re.search(r"(\d+) requests in", text)[1])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text)[1])
    return {
        "rps": rps * (requests - errors) / max(requests, 1),  # answered: a refusal is no answer
        "p50_ms": percentile("50"),
        "p99_ms": percentile("99"),
        "errors": errors,
        "generator_cpu": (usage.ru_utime + usage.ru_stime) / seconds,
    }


def scaling(one: str, two: str, server: int, body: bytes, tmp: Path, a) -> dict:
    """wrk on one worker and on two, in `a.rounds` alternating pairs of runs; each figure is
    the mean of its runs, and the two-worker one says how the kernel split wrk's connections
    among the workers (`server` is the two-worker server's pid)."""
    port = int(two.split(":")[2].split("/")[0])
    splits: list[str] = []

    def split() -> None:
        workers = [w for w in psutil.Process(server).children() if w.children()]
        counts = [
            sum(
                1
                for c in w.net_connections("tcp")
                if c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
            )
            for w in workers
        ]
        splits.append("/".join(map(str, sorted(counts))))

    runs: dict[str, list[dict]] = {"wrk: maestro, 1 worker": [], "wrk: maestro, 2 workers": []}
    for url in (one, two):  # every worker has answered before it is measured
        wrk(url, body, tmp, 1)
    for _ in range(a.rounds):
        runs["wrk: maestro, 1 worker"].append(wrk(one, body, tmp, a.seconds))
        runs["wrk: maestro, 2 workers"].append(wrk(two, body, tmp, a.seconds, during=split))
    pooled = {
        name: {key: float(np.mean([r[key] for r in found])) for key in found[0]}
        for name, found in runs.items()
    }
    pooled["wrk: maestro, 2 workers"]["splits"] = splits
    return pooled


def wait_until_quiet(servers: list[int], timeout: float = 120) -> None:
    """Until the servers and their children (prediction log writers) use under a tenth of a
    core between them: a writer still catching up on the last closed-loop run would take CPU
    from the next measurement."""
    processes = [psutil.Process(pid) for pid in servers]
    processes += [child for p in processes for child in p.children(recursive=True)]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(_cpu_seconds(p) for p in processes)
        time.sleep(1)
        if sum(_cpu_seconds(p) for p in processes) - before < 0.1:
            return
    print(f"(servers still busy after {timeout:.0f} s; measuring anyway)", flush=True)


def _cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


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

    settings = get_settings()
    registered = register_models(settings, a.smoke)

    bin_dir = str(Path(sys.executable).parent)  # `mlflow models serve` runs `uvicorn` from PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.tracking_uri,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    maestro = str(Path(sys.executable).with_name("maestro"))
    names = ("maestro", "maestro-nolog", "maestro-2", "bare", "mlserver")
    ports = {name: free_port() for name in names}

    def serve(name: str, workers: int, **extra: str) -> subprocess.Popen:
        command = [maestro, "serve", "demo", "adult_income", "--port", str(ports[name])]
        command += ["--workers", str(workers)]
        return start(command, {**env, **extra}, tmp / f"{name}.log")

    procs = [
        serve("maestro", 1),
        serve(
            "maestro-nolog",
            1,
            MAESTRO_PREDICTION_LOG="off",
            MAESTRO_SERVING_PLAN=str(tmp / "plan-nolog.json"),
        ),
        serve("maestro-2", 2),
        start([sys.executable, "-c", BARE, str(ports["bare"])], env, tmp / "bare.log"),
    ]
    if not a.smoke:
        repository = mlserver_repository(
            tmp / "mlserver", {m: p for m, (_, p) in registered.items()}, ports["mlserver"]
        )
        mlserver = str(mlserver_venv() / "bin" / "mlserver")
        procs.append(start([mlserver, "start", str(repository)], env, tmp / "mlserver.log"))
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    for model in registered:
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
    # the prediction log against its server: one server per sink, adult_income alone
    log_sinks = {"log-parquet": str(tmp / "log-parquet")}
    postgres = scratch_postgres()
    if postgres:
        log_sinks["log-postgresql"] = postgres
    log_servers = {}
    for sink, location in log_sinks.items():
        ports[sink] = free_port()
        command = [maestro, "serve", "adult_income", "--port", str(ports[sink]), "--workers", "1"]
        log_servers[sink] = start(
            command,
            {
                **env,
                "MAESTRO_PREDICTION_LOG": location,
                "MAESTRO_SERVING_PLAN": str(tmp / f"plan-{sink}.json"),
            },
            tmp / f"{sink}.log",
        )
        procs.append(log_servers[sink])
    results = {}
    try:
        for model, (rows, pipeline) in registered.items():
            pids = [proc.pid for proc in procs]
            results[model] = measure(model, rows, pipeline, ports, pids, tmp, a)
            report(model, results[model])
            split = batch_split(model, rows, 5 if a.smoke else 100, tmp / "forests")
            print(f"\nin-process, per 1,000-row batch of {model} (median of repeats):\n")
            print("| step | ms |\n| --- | ---: |")
            for step, ms in split.items():
                print(f"| {step} | {ms:.2f} |")
            results[model]["split_ms"] = split
        rows = registered["adult_income"][0]
        bodies = {
            "single rows": json.dumps(rows[0]).encode(),
            "1,000-row batches": json.dumps((rows * 1000)[:1000]).encode(),
        }
        for sink, location in log_sinks.items():
            url = f"http://127.0.0.1:{ports[sink]}/v1/models/adult_income/predict"
            wait_until_up(url, bodies["single rows"])
            wait_until_compiled(
                url.rsplit("/v1/", 1)[0], "adult_income", bodies["1,000-row batches"]
            )
            for proc in procs:
                if proc.pid != log_servers[sink].pid:
                    os.killpg(proc.pid, signal.SIGSTOP)  # the log's figures on a quiet machine
            try:
                results[sink] = log_throughput(
                    url.rsplit("/v1/", 1)[0],
                    "adult_income",
                    bodies,
                    log_servers[sink].pid,
                    tmp,
                    a.seconds,
                )
            finally:
                for proc in procs:
                    os.killpg(proc.pid, signal.SIGCONT)
            report_log("PostgreSQL" if "://" in location else "parquet", results[sink])
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
    (tmp / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nraw figures: {tmp / 'results.json'}")


def measure(
    model: str, rows: list[dict], pipeline, ports: dict, servers: list[int], tmp: Path, a
) -> dict:
    """Every server and load on one model, one after the other (`servers`: their pids, the
    two-worker one third)."""
    import httpx

    row, batch_rows = rows[0], (rows * 1000)[:1000]
    single = json.dumps(row).encode()
    batch = json.dumps(batch_rows).encode()
    base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    ours = f"{base['maestro']}/v1/models/{model}/predict"
    nolog = f"{base['maestro-nolog']}/v1/models/{model}/predict"
    two = f"{base['maestro-2']}/v1/models/{model}/predict"
    ours_v2 = f"{base['maestro']}/v2/models/{model}/infer"
    theirs = f"{base[f'mlflow-{model}']}/invocations"
    bare = f"{base['bare']}/predict"
    theirs_body = json.dumps({"dataframe_records": [row]}).encode()
    for url, body in ((ours, single), (nolog, single), (two, single), (theirs, theirs_body)):
        wait_until_up(url, body)
    wait_until_up(bare, single)
    metadata = httpx.get(f"{base['maestro']}/v2/models/{model}", timeout=10).json()
    v2_single, v2_batch = v2_body(metadata, [row]), v2_body(metadata, batch_rows)
    wait_until_compiled(base["maestro"], model, batch)
    s = a.seconds
    found = {
        "maestro": load(ours, single, tmp, s, 8),
        "maestro V2": load(ours_v2, v2_single, tmp, s, 8),
        "mlflow models serve": load(theirs, theirs_body, tmp, s, 8),
        "bare FastAPI": load(bare, single, tmp, s, 8),
    }
    wait_until_quiet(servers)  # the prediction log writers have caught up
    found |= {
        **paced(ours, nolog, single, tmp, s, a.rounds),
        "maestro V2 @200/s": load(ours_v2, v2_single, tmp, s, 4, rate=200),
        "maestro @200/s, 2 workers": load(two, single, tmp, s, 4, rate=200),
        "maestro batch 1000": load(ours, batch, tmp, s, 2),
        "maestro V2 batch 1000": load(ours_v2, v2_batch, tmp, s, 2),
    }
    if not a.smoke:
        mlserver = f"{base['mlserver']}/v2/models/{model}/infer"
        tensor_single = encoded_tensor(pipeline, [row])
        wait_until_up(mlserver, tensor_single)
        headers = {"Content-Type": "application/json"}
        answer = httpx.post(mlserver, content=tensor_single, headers=headers, timeout=10).json()
        ours_answer = httpx.post(ours, content=single, headers=headers, timeout=10).json()
        ours_answer = ours_answer["predictions"][0]
        theirs_answer = answer["outputs"][0]["data"][-1]  # P(positive) last for classifiers
        assert abs(theirs_answer - ours_answer) < 1e-9, (theirs_answer, ours_answer)
        found["MLServer V2"] = load(mlserver, tensor_single, tmp, s, 8)
        found["MLServer V2 batch 1000"] = load(
            mlserver, encoded_tensor(pipeline, batch_rows), tmp, s, 2
        )
    wait_until_quiet(servers)
    found |= scaling(ours, two, servers[2], single, tmp, a)
    wait_until_quiet(servers)  # the next model's figures start on a quiet machine too
    return found


LOG_LOADS = (("single rows", 8), ("1,000-row batches", 2))


def log_throughput(base: str, model: str, bodies: dict, server: int, tmp: Path, seconds: float):
    """The prediction log against the server it logs for: wrk on single rows (8 connections)
    and on 1,000-row batches (2), each for `seconds`; rows/s answered, rows/s the writer wrote
    meanwhile, how long it took to write the rest, refusals (back-pressure), and the peaks of
    rows waiting and of the server's memory (with its writer), sampled every half second."""
    import threading

    from maestro.deploy.target import ServerTarget

    target = ServerTarget(base, tmp / "unused-plan.json")
    url = f"{base}/v1/models/{model}/predict"

    def counts() -> dict[str, float]:
        samples = target.metrics()
        total = {"answered": 0.0, "written": 0.0, "refused": 0.0, "pending": 0.0}
        for (name, labels), value in samples.items():
            if name == "maestro_predicted_rows_total" and ("role", "primary") in labels:
                total["answered"] += value
            elif name == "maestro_prediction_log_written_rows_total":
                total["written"] += value
            elif name == "maestro_prediction_log_refused_requests_total":
                total["refused"] += value
            elif name == "maestro_prediction_log_pending_rows":
                total["pending"] += value
        return total

    def rss() -> int:
        process = psutil.Process(server)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])

    found = {}
    for name, connections in LOG_LOADS:
        before, peaks, done = counts(), {"pending": 0.0, "rss": 0}, threading.Event()

        def sample(peaks=peaks, done=done) -> None:
            while not done.wait(0.5):
                peaks["pending"] = max(peaks["pending"], counts()["pending"])
                peaks["rss"] = max(peaks["rss"], rss())

        sampler = threading.Thread(target=sample)
        sampler.start()
        run = wrk(url, bodies[name], tmp, seconds, connections)
        done.set()
        sampler.join()
        after = counts()
        answered = after["answered"] - before["answered"]
        started = time.monotonic()
        while counts()["written"] - before["written"] < answered:
            if time.monotonic() - started > 300:
                raise RuntimeError(f"the prediction log did not catch up on {name} in 300 s")
            time.sleep(0.2)
        found[name] = {
            "answered_rows_per_s": answered / round(seconds),
            "written_rows_per_s": (after["written"] - before["written"]) / round(seconds),
            "catch_up_s": time.monotonic() - started,
            "refused": after["refused"] - before["refused"],
            "errors": run["errors"],
            "peak_pending_rows": peaks["pending"],
            "peak_rss_mb": peaks["rss"] / 2**20,
        }
    return found


def scratch_postgres() -> str | None:
    """An empty PostgreSQL database for the log (the tests' server), or None."""
    import uuid

    import psycopg2

    server = os.environ.get("MAESTRO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
    try:
        conn = psycopg2.connect(f"{server}/postgres", connect_timeout=5)
    except psycopg2.OperationalError as error:
        print(f"(no PostgreSQL at {server}: its prediction log is not measured: {error})")
        return None
    conn.autocommit = True
    name = f"maestro_bench_{uuid.uuid4().hex[:8]}"
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"{server}/{name}"


def report_log(sink: str, found: dict) -> None:
    print(f"\n### prediction log, {sink}\n")
    print(
        "| load | rows/s answered | rows/s written meanwhile | written / answered | "
        "caught up after | refused (503) | peak rows waiting | peak RSS MB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in found.items():
        ratio = r["written_rows_per_s"] / max(r["answered_rows_per_s"], 1)
        print(
            f"| {name} | {r['answered_rows_per_s']:,.0f} | {r['written_rows_per_s']:,.0f} | "
            f"{ratio:.2f} | {r['catch_up_s']:.1f} s | {r['refused']:.0f} | "
            f"{r['peak_pending_rows']:,.0f} | {r['peak_rss_mb']:,.0f} |"
        )


def report(model: str, m: dict) -> None:
    print(f"\n### {model}\n")
    print("| server, load | requests/s | p50 ms | p99 ms | errors |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in m.items():
        print(
            f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |"
        )
    print(
        f"\nthroughput vs mlflow models serve: {m['maestro']['rps'] / m['mlflow models serve']['rps']:.1f}x; "
        f"vs bare FastAPI: {m['maestro']['rps'] / m['bare FastAPI']['rps']:.2f}; "
        f"batch rows/s: {m['maestro batch 1000']['rps'] * 1000:,.0f}; "
        f"V2 batch rows/s: {m['maestro V2 batch 1000']['rps'] * 1000:,.0f}; "
        f"p99 at 200/s with log / without: {m['maestro @200/s']['p99_ms'] / m['maestro @200/s, log off']['p99_ms']:.2f} "
        f"(p99 of each run, with: {m['maestro @200/s']['p99_ms_per_run']}, "
        f"without: {m['maestro @200/s, log off']['p99_ms_per_run']})"
    )
    one, two = m["wrk: maestro, 1 worker"], m["wrk: maestro, 2 workers"]
    print(
        f"workers 2 / 1 (wrk, single rows): {two['rps'] / one['rps']:.2f}x "
        f"({one['rps']:,.0f} and {two['rps']:,.0f} requests/s; wrk used "
        f"{100 * one['generator_cpu']:.0f}% and {100 * two['generator_cpu']:.0f}% of a core; "
        f"wrk's connections per worker: {', '.join(two['splits'])})"
    )
    if "MLServer V2" in m:
        theirs, theirs_batch = m["MLServer V2"], m["MLServer V2 batch 1000"]
        print(
            f"vs MLServer: single rows {m['maestro']['rps'] / theirs['rps']:.2f}x; "
            f"1,000-row batches, V2 {m['maestro V2 batch 1000']['rps'] / theirs_batch['rps']:.2f}x, "
            f"JSON records {m['maestro batch 1000']['rps'] / theirs_batch['rps']:.2f}x "
            f"(MLServer {theirs_batch['rps'] * 1000:,.0f} rows/s)"
        )
    else:
        print("vs MLServer: left out of --smoke (installing it takes minutes)")


if __name__ == "__main__":
    main()
