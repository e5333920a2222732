"""The prediction log's writer process, for real: partitions, mixed signatures, a writer that
dies, and a location that cannot be opened."""

from __future__ import annotations

import time

import numpy as np
import pytest

from maestro.logs.predictions import read_log
from maestro.serving.predlog import PredictionLog

DAY = 1_760_000_000.0  # 2025-10-09 08:53 UTC


def log_request(log: PredictionLog, at: float, version: str, body: bytes, names, scores) -> None:
    log.append(
        at, "req", "demo", version, "primary", 1.0, names, body, np.asarray(scores).tobytes()
    )


def wait_for_rows(root: str, rows: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(read_log(root, "demo")) < rows:
        assert time.monotonic() < deadline, f"fewer than {rows} rows logged in {timeout}s"
        time.sleep(0.05)


def test_rows_go_to_the_day_they_were_scored_with_every_versions_columns(tmp_path):
    log = PredictionLog(str(tmp_path))
    log_request(log, DAY, "1", b'{"age": 30, "region": "north"}', ("age", "region"), [0.1])
    # the next version takes a column more, and it is scored a day later
    body = b'[{"age": 41, "region": null, "plan": "pro"}, {"age": 7, "region": "s", "plan": "x"}]'
    log_request(log, DAY + 86_400, "2", body, ("age", "region", "plan"), [0.2, 0.3])
    log.close()
    days = sorted(p.name for p in (tmp_path / "model=demo").iterdir())
    assert days == ["date=2025-10-09", "date=2025-10-10"]
    logged = read_log(str(tmp_path), "demo").sort_values("prediction")
    assert logged["version"].tolist() == ["1", "2", "2"]
    assert logged["feature.age"].tolist() == [30, 41, 7]
    assert logged["feature.plan"].tolist()[1:] == ["pro", "x"]
    assert logged["feature.plan"].isna().tolist()[0]
    assert logged["ts"].dt.tz is not None and logged["ts"].iloc[0].timestamp() == DAY


def test_a_writer_that_dies_is_replaced_and_what_it_was_not_handed_is_kept(tmp_path):
    log = PredictionLog(str(tmp_path))
    log_request(log, DAY, "1", b'{"age": 1}', ("age",), [0.5])
    wait_for_rows(str(tmp_path), 1)
    first = log._writer
    first.kill()
    first.wait()
    log_request(log, DAY, "1", b'[{"age": 2}, {"age": 3}]', ("age",), [0.6, 0.7])
    log.flush()  # the pipe to the dead writer refuses it: kept, and sent to a new writer
    assert log._writer.pid != first.pid and log.restarts == 1
    log.close()
    assert sorted(read_log(str(tmp_path), "demo")["feature.age"]) == [1, 2, 3]


def test_a_killed_server_loses_nothing_it_answered(tmp_path):
    """Each entry is in the writer's pipe before the answer leaves: a server killed right after
    a burst of requests (SIGKILL: no chance to hand anything over) still has every one of them
    written by its writer."""
    import subprocess
    import sys

    burst = 1000  # about 600 KiB of entries: within the pipe, which is also being read
    script = f"""
import os, signal, numpy as np
from maestro.serving.predlog import PredictionLog
log = PredictionLog({str(tmp_path)!r})
body = b'{{"age": 1, "note": "' + b"x" * 500 + b'"}}'
for i in range({burst}):
    log.append({DAY} + i, f"r{{i}}", "demo", "1", "primary", 1.0, ("age", "note"), body,
               np.asarray([0.5]).tobytes())
assert log.pending == 0, log.pending
os.kill(os.getpid(), signal.SIGKILL)
"""
    server = subprocess.run([sys.executable, "-c", script], timeout=120)
    assert server.returncode == -9
    wait_for_rows(str(tmp_path), burst, timeout=60)
    assert read_log(str(tmp_path), "demo")["request_id"].nunique() == burst


def test_a_log_that_cannot_be_opened_stops_the_server_with_its_location(tmp_path):
    occupied = tmp_path / "a-file"
    occupied.write_text("not a folder")
    with pytest.raises(RuntimeError, match="a-file"):
        PredictionLog(str(occupied / "log"))


def test_a_day_of_handovers_is_merged_into_few_files_and_read_back_by_window(tmp_path):
    import datetime as dt

    from maestro.logs.parquet import ParquetStore
    from maestro.logs.predictions import Entry, ParquetSink, rows_of

    sink = ParquetSink(ParquetStore(tmp_path, "prediction_log"))
    for n in range(40):  # 40 handovers, a minute apart, of two requests each
        entries = [
            Entry(
                DAY + 60 * n + k,
                f"r{n}-{k}",
                "demo",
                "1",
                "primary",
                1.0,
                ("age",),
                f'{{"age": {n}}}'.encode(),
                np.array([0.5]).tobytes(),
            )
            for k in range(2)
        ]
        sink.write("demo", sink.prepare(rows_of(entries)))
    files = sorted(p.name for p in (tmp_path / "model=demo" / "date=2025-10-09").glob("*.parquet"))
    assert len(files) == 9, files  # 32 merged into one of the next level, 8 since
    assert sum(name.startswith("l1-") for name in files) == 1
    assert len(read_log(str(tmp_path), "demo")) == 80
    start = dt.datetime.fromtimestamp(DAY + 60 * 10, dt.UTC)
    end = dt.datetime.fromtimestamp(DAY + 60 * 20, dt.UTC)
    window = read_log(str(tmp_path), "demo", start, end)
    assert sorted(set(window["feature.age"])) == list(range(10, 20))


def test_an_entry_no_sink_can_hold_is_set_aside_and_the_rest_are_written(tmp_path):
    """An entry whose rows cannot be built (an integer beyond 64 bits, a lone surrogate: what
    validation refuses, should one ever get past it) goes to the dead-letter folder with its
    reason; the entries around it, before and after, are written, and the writer says so."""
    import json

    log = PredictionLog(str(tmp_path))
    log_request(log, DAY, "1", b'{"age": 1}', ("age",), [0.1])
    log_request(log, DAY + 1, "1", b'{"age": 9223372036854775808}', ("age",), [0.2])
    log_request(log, DAY + 2, "1", b'{"age": 3, "region": "\\ud800"}', ("age", "region"), [0.3])
    for i in range(4, 50):
        log_request(log, DAY + i, "1", f'{{"age": {i}}}'.encode(), ("age",), [0.4])
    log.close()
    assert sorted(read_log(str(tmp_path), "demo")["feature.age"]) == [1, *range(4, 50)]
    (dead,) = (tmp_path / "_dead_letter").glob("*.jsonl")
    assert dead.stat().st_mode & 0o777 == 0o600
    set_aside = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [e["body"] for e in set_aside] == [
        '{"age": 9223372036854775808}',
        '{"age": 3, "region": "\\ud800"}',
    ]
    assert all(e["reason"] and e["model"] == "demo" for e in set_aside)
    stats = log.stats
    assert (stats.written_rows, stats.dead_letter_entries, stats.failed_writes) == (47, 2, 0)


def log_batch(log: PredictionLog, i: int, rows: int = 1000) -> None:
    """Request `r<i>`: a `rows`-row batch in the columns form, as the server logs it."""
    from maestro.serving.log_pipe import columns_body

    body = columns_body({"age": list(range(rows)), "region": ["north"] * rows})
    predictions = np.full(rows, 0.5).tobytes()
    log.append(
        DAY + i,
        f"r{i}",
        "demo",
        "1",
        "primary",
        1.0,
        ("age", "region"),
        body,
        predictions,
        "columns",
    )


def logged_ids(root) -> dict[str, int]:
    logged = read_log(str(root), "demo")
    return logged["request_id"].value_counts().to_dict() if len(logged) else {}


def test_a_stop_out_of_time_spills_the_rest_and_the_next_log_writes_it(tmp_path):
    """Two million rows logged at once and no time to drain: what is not written is spilled,
    every row exactly once between the log and the spill; the next log writes the spill."""
    from maestro.serving.log_writer import EntryFile

    log = PredictionLog(str(tmp_path), max_rows=10**9, max_bytes=10**12)
    for i in range(2000):
        log_batch(log, i)
    spilled = log.close(drain_seconds=0.5)
    written = logged_ids(tmp_path)
    kept = [e for path in (tmp_path / "_spill").iterdir() for e in EntryFile.read(path)]
    assert spilled > 0 and spilled == sum(e.rows for e in kept)
    assert sum(written.values()) + spilled == 2000 * 1000
    assert not set(written) & {e.request_id for e in kept}
    assert set(written) | {e.request_id for e in kept} == {f"r{i}" for i in range(2000)}

    PredictionLog(str(tmp_path)).close()  # the next start writes what was spilled
    assert logged_ids(tmp_path) == {f"r{i}": 1000 for i in range(2000)}
    assert not list((tmp_path / "_spill").iterdir())


def test_a_log_at_its_bounds_is_full_until_its_writer_catches_up(tmp_path):
    """Bounded memory: past `max_rows` waiting, `full` says so (the server refuses requests),
    and what waits never grows past the bound by more than the entry that crossed it."""
    log = PredictionLog(str(tmp_path), max_rows=20_000, max_bytes=10**12)
    peak, i = 0, 0
    deadline = time.monotonic() + 30
    while not log.full:
        assert time.monotonic() < deadline, "the log never filled"
        log_batch(log, i)
        peak, i = max(peak, log.waiting_rows), i + 1
    assert peak <= 20_000 + 1000
    deadline = time.monotonic() + 60
    while log.full:
        assert time.monotonic() < deadline, "the writer did not catch up"
        time.sleep(0.05)
    log.close()
    assert sum(logged_ids(tmp_path).values()) == i * 1000
