"""What request tracing costs the model server, side by side in one run.

Three `maestro serve --workers 1` of `demo` and `adult_income` (LightGBM, 200 trees, one
scratch registry, prediction log on): one as deployed (tracing off), one with
`OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an OTLP/HTTP receiver on loopback (its own process;
it keeps each export and decodes them when asked for the count, so that it takes little of the
cores the server runs on), and one that samples a tenth of the traces
(`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.1`). Debian's `wrk`
loads one server at a time with single rows (8 connections), in `--rounds` rounds whose order
alternates, each server left quiet before the next run. Reported per model: each server's
requests/s, p50 and p99 (means of its runs), the ratios to tracing off, and the spans received
per request answered.

    .venv/bin/python bench/tracing.py [--seconds 10] [--rounds 5] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
EXPORT_DELAY = 5.0  # seconds: the batch span exporter's default schedule
EXPORT_DELAY_SMOKE = 0.5
sys.path.insert(0, str(HERE))

from serving import register_models, start, wait_until_quiet, wait_until_up, wrk  # noqa: E402

from maestro.web import free_port  # noqa: E402

RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
bodies = []
def spans(body):
    export = ExportTraceServiceRequest.FromString(body)
    return sum(len(s.spans) for r in export.resource_spans for s in r.scope_spans)
class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # kept whole and decoded when counted: little CPU under load
        bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()
    def do_GET(self):
        body = str(sum(map(spans, bodies))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="1-second runs, one round: a check")
    a = p.parse_args()
    if a.smoke:
        a.seconds, a.rounds = 1, 1
    tmp = Path(tempfile.mkdtemp(prefix="maestro-bench-tracing-"))
    os.environ["MAESTRO_HOME"] = str(tmp / "home")
    from maestro.config import get_settings

    settings = get_settings()
    rows = {model: found[0] for model, found in register_models(settings, a.smoke).items()}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.tracking_uri,
    }
    if a.smoke:  # the exporter sends every half second, not 5: the check waits less for it
        env["OTEL_BSP_SCHEDULE_DELAY"] = str(int(EXPORT_DELAY_SMOKE * 1000))
    receiver_port = free_port()
    receiver = start([sys.executable, "-c", RECEIVER, str(receiver_port)], env, tmp / "otlp.log")
    receiver_url = f"http://127.0.0.1:{receiver_port}"
    maestro = str(Path(sys.executable).with_name("maestro"))
    servers = {}
    sampled = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    for name, extra in (
        ("off", {}),
        ("on", {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver_url}),
        ("on, 10% sampled", {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver_url, **sampled}),
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
            body = json.dumps(model_rows[0]).encode()
            for _, base in servers.values():
                wait_until_up(f"{base}/v1/models/{model}/predict", body)
            results[model] = compare(model, servers, body, receiver, receiver_url, tmp, a)
            report(model, results[model])
    finally:
        for process, _ in servers.values():
            os.killpg(process.pid, signal.SIGTERM)
        os.killpg(receiver.pid, signal.SIGTERM)
    (tmp / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nraw figures: {tmp / 'results.json'}")


def spans_received(receiver_url: str) -> int:
    import httpx

    return int(httpx.get(receiver_url, timeout=5).text)


def compare(model: str, servers: dict, body: bytes, receiver, receiver_url: str, tmp: Path, a):
    """Single rows on every server, in rounds whose order alternates; the spans each traced
    one sent during its runs (counted after each run, once its exporter has caught up)."""
    pids = [process.pid for process, _ in servers.values()] + [receiver.pid]
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    for i in range(a.rounds):
        for name in list(servers) if i % 2 == 0 else list(servers)[::-1]:
            wait_until_quiet(pids)
            before = spans_received(receiver_url)
            run = wrk(f"{servers[name][1]}/v1/models/{model}/predict", body, tmp, a.seconds, 8)
            time.sleep(1 + (EXPORT_DELAY_SMOKE if a.smoke else EXPORT_DELAY))  # spans sent
            run["spans"] = spans_received(receiver_url) - before
            run["seconds"] = max(1, round(a.seconds))  # what wrk ran
            runs[name].append(run)
    return runs


def report(model: str, runs: dict) -> None:
    def mean(name: str, key: str) -> float:
        return float(np.mean([r[key] for r in runs[name]]))

    print(f"\n{model}, single rows (wrk, 8 connections), mean of {len(runs['off'])} runs:\n")
    print("| tracing | requests/s | p50 ms | p99 ms | spans sent per request |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in runs:
        requests = sum(r["rps"] * r["seconds"] for r in runs[name]) or 1
        per = sum(r["spans"] for r in runs[name]) / requests
        print(
            f"| {name} | {mean(name, 'rps'):,.0f} | {mean(name, 'p50_ms'):.2f} | "
            f"{mean(name, 'p99_ms'):.2f} | {per:.2f} |"
        )
    for name in ("on", "on, 10% sampled"):
        print(
            f"\n{name}/off: requests/s {mean(name, 'rps') / mean('off', 'rps'):.2f}, "
            f"p99 {mean(name, 'p99_ms') / mean('off', 'p99_ms'):.2f}"
        )


if __name__ == "__main__":
    main()
