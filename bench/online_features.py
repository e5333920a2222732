"""Entity requests against full-record requests, side by side in one run, on one model server.

`demo` (20,000 generated customers, a LightGBM pipeline of 200 trees) is registered in a scratch
registry and its features materialized to Feast's online store in Redis (an empty database of
MAESTRO_BENCH_REDIS, default redis://127.0.0.1:6379, flushed afterwards). One `maestro serve`
process (prediction log on) answers both kinds of request:
- entity: `{"customer_id": N}`, the features read from Redis through the feature service;
- full record: the same customer's features in the request.
Load from bench/loadgen.py in its own process: a closed loop (8 connections) for throughput,
and 200 requests/s (open loop) in `--rounds` alternating pairs of runs, latencies pooled.
Goal: entity requests' p99 at 200 requests/s at most 10 ms.

    .venv/bin/python bench/online_features.py [--seconds 8] [--rounds 5] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np
from serving import load, register, start, wait_until_up

from maestro.web import free_port


def empty_redis_database(server: str) -> str:
    import redis

    for number in range(1, 16):
        url = f"{server}/{number}"
        if redis.Redis.from_url(url).dbsize() == 0:
            return url
    raise SystemExit(f"no empty database on the Redis server at {server}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="1-second runs, one round: a check")
    a = p.parse_args()
    if a.smoke:
        a.seconds, a.rounds = 1, 1
    tmp = Path(tempfile.mkdtemp(prefix="maestro-bench-online-"))
    online = empty_redis_database(os.environ.get("MAESTRO_BENCH_REDIS", "redis://127.0.0.1:6379"))
    os.environ["MAESTRO_HOME"] = str(tmp / "home")
    os.environ["MAESTRO_FEAST_ONLINE_STORE"] = online
    import redis

    from maestro.config import get_settings
    from maestro.data.features import apply_and_materialize
    from maestro.data.synthetic import generate
    from maestro.spec import get_spec

    settings = get_settings()
    spec = get_spec("demo", settings)
    frame = generate(20000)
    register(settings, "demo", frame)
    start_ts, end_ts = frame["event_timestamp"].min(), frame["event_timestamp"].max()
    apply_and_materialize(frame, spec, settings, start_ts, end_ts)
    customer = frame.iloc[100]
    bodies = {
        "entity": json.dumps({spec.entity.key: int(customer[spec.entity.key])}).encode(),
        "full record": customer[spec.feature_names].to_json().encode(),
    }
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.tracking_uri,
    }
    port = free_port()
    maestro = str(Path(sys.executable).with_name("maestro"))
    command = [maestro, "serve", "demo", "--port", str(port), "--workers", "1"]
    server = start(command, env, tmp / "maestro.log")
    url = f"http://127.0.0.1:{port}/v1/models/demo/predict"
    results = {}
    try:
        for body in bodies.values():
            wait_until_up(url, body)
        for name, body in bodies.items():
            results[f"{name}, closed loop"] = load(url, body, tmp, a.seconds, 8)
        paced: dict[str, list[dict]] = {name: [] for name in bodies}
        for i in range(a.rounds):
            order = list(bodies.items())
            for name, body in order if i % 2 == 0 else order[::-1]:
                paced[name].append(load(url, body, tmp, a.seconds, 4, rate=200, raw=True))
        for name, runs in paced.items():
            latencies = np.concatenate([r["latencies_ms"] for r in runs])
            results[f"{name} @200/s"] = {
                "rps": float(np.mean([r["rps"] for r in runs])),
                "p50_ms": float(np.percentile(latencies, 50)),
                "p99_ms": float(np.percentile(latencies, 99)),
                "errors": sum(r["errors"] for r in runs),
            }
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        redis.Redis.from_url(online).flushdb()
    print("\n| request, load | requests/s | p50 ms | p99 ms | errors |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(
            f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |"
        )
    entity = results["entity @200/s"]["p99_ms"]
    print(
        f"\nentity p99 at 200/s: {entity:.2f} ms (goal: at most 10 ms); "
        f"full record: {results['full record @200/s']['p99_ms']:.2f} ms"
    )
    (tmp / "results.json").write_text(json.dumps(results, indent=2))
    print(f"raw figures: {tmp / 'results.json'}")


if __name__ == "__main__":
    main()
