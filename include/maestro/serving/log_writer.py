"""The prediction log's writer process: it writes what a server before it spilled, then reads
entries from its pipe and every second turns what it read into rows for the log's sink.

An entry no sink can hold is set aside as a dead letter, never holding back those beside it;
a write that fails (the database is down) is retried with the next. It ignores SIGINT and
SIGTERM (a Ctrl-C or `killpg` reaches the whole process group) and stops when its pipe
closes, writing the rest until the server's drain deadline and spilling what is left to a file
that the next writer writes first."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import pickle
import signal
import sys
import time
from collections import deque
from contextlib import suppress
from dataclasses import asdict
from pathlib import Path

import numpy as np

from maestro.logs.predictions import (
    Entry,
    ParquetSink,
    PostgresSink,
    prediction_store,
    rows_of,
    sink_for,
)
from maestro.serving.log_pipe import FrameReader, WriterStats
from maestro.vocabulary import LOG_DRAIN_SECONDS

log = logging.getLogger(__name__)

WRITE_INTERVAL = 1.0  # seconds between the writer's writes (one parquet file per model each)
CHUNK_ROWS = 100_000  # rows per write at most (a fraction of a second), so a deadline is kept
SPILL_MARGIN = 1.0  # the writer stops writing this long before the server's drain deadline
READ_PAUSE = 0.01  # the writer reads what piled up every 10 ms, not woken by every entry
IDLE_READ_PAUSE = 0.1  # ... and, while nothing comes, every 100 ms
# the writer yields the CPU to the server it logs for: requests first, then the log (it
# catches up in the gaps; the pipe buffers meanwhile, and past the bounds requests wait)
WRITER_NICENESS = 10


def run_writer() -> None:
    """The writer process: writes what a server before it spilled, then reads entries from
    stdin until it closes, writing what it read every WRITE_INTERVAL seconds (retrying what
    failed with the next write), and stops reading while it holds more than its bounds. At the
    end it writes the rest until the server's drain deadline, and spills what is left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(WRITER_NICENESS)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    frames = FrameReader(sys.stdin.fileno())
    first = frames.read(timeout=None)
    if not first:
        return  # the server closed the pipe before it said anything
    opening = json.loads(first[0])
    store = prediction_store(opening["location"])
    try:
        sink = sink_for(store)
        writer = Writer(
            sink, EntryFile(Path(opening["dead_letter"])), EntryFile(Path(opening["spill"]))
        )
    except Exception:
        log.exception("prediction log %r cannot be opened", store.shown)
        sys.exit(1)
    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.buffer.flush()
    os.set_blocking(sys.stdout.fileno(), False)
    writer.write_spilled()
    max_rows, max_bytes = opening["max_rows"], opening["max_bytes"]
    drain_until: float | None = None
    due = time.monotonic() + WRITE_INTERVAL
    pause = READ_PAUSE
    failing = False
    report_due = 0.0
    # read on a timer, never waiting on the pipe: a reader blocked on it would be woken by
    # every request's write, which costs the server a cross-CPU wake-up in its answer's path
    while True:
        holding = writer.pending_rows >= max_rows or writer.pending_bytes >= max_bytes
        batch = [] if holding else frames.read(timeout=0)
        if batch is None:  # the server closed the pipe
            break
        for frame in batch:
            # B301: our own server's pipe to its child
            fields = pickle.loads(frame)  # nosec B301
            if isinstance(fields, dict):  # the server's last word: when to stop writing
                drain_until = fields["drain_until"]
            else:
                writer.add(Entry(*fields))
        if batch and time.monotonic() >= report_due:  # what it holds, twice a second at most
            writer.report()
            report_due = time.monotonic() + 0.5
        # every second, or sooner once half its bounds are read (not while writes fail)
        half = writer.pending_rows >= max_rows // 2 or writer.pending_bytes >= max_bytes // 2
        if time.monotonic() >= due or (half and not failing):
            failing = writer.write()
            due = time.monotonic() + WRITE_INTERVAL
        pause = READ_PAUSE if batch or holding else min(IDLE_READ_PAUSE, 2 * pause)
        time.sleep(pause)
    # done a moment before the server's deadline: spilling takes a moment too
    deadline = (drain_until or time.time() + LOG_DRAIN_SECONDS) - SPILL_MARGIN
    if writer.pending_rows:
        log.info("prediction log writer: writing the last %d rows", writer.pending_rows)
    while writer.pending_rows and time.time() < deadline:
        if writer.write(until=deadline):
            time.sleep(min(1.0, max(0.0, deadline - time.time())))  # a failed write: again
    if writer.pending_rows:
        writer.spill("not written before the server's drain deadline")
    os.set_blocking(sys.stdout.fileno(), True)  # the last report must reach the server
    writer.report()
    if writer.stats.spilled_rows:
        sys.exit(1)


class Writer:
    """The writer process's work: entries to rows to the sink, model by model. An entry the
    sink cannot hold (found while building its rows, before anything is written) is set aside
    in the dead-letter folder, never holding back the entries beside it; a write that fails
    (the database is down) keeps its entries for the next try."""

    def __init__(
        self, sink: ParquetSink | PostgresSink, dead_letter: EntryFile, spill: EntryFile
    ) -> None:
        self.sink, self.dead_letter, self.spill_file = sink, dead_letter, spill
        self.stats = WriterStats()
        self._pending: deque[Entry] = deque()
        self.pending_rows = self.pending_bytes = 0

    def add(self, entry: Entry) -> None:
        self._pending.append(entry)
        self.pending_rows += entry.rows
        self.pending_bytes += _size(entry)

    def write(self, until: float | None = None) -> bool:
        """Write what is pending, in order, CHUNK_ROWS rows or so at a time, stopping at
        `until` (a `time.time()`) if given; True when a write failed (what it held, and what
        was not reached, stay pending)."""
        failed: list[Entry] = []
        while self._pending and not failed and (until is None or time.time() < until):
            chunk: list[Entry] = []
            rows = 0
            while self._pending and (not chunk or rows + self._pending[0].rows <= CHUNK_ROWS):
                entry = self._pending.popleft()
                chunk.append(entry)
                rows += entry.rows
                self.pending_rows -= entry.rows
                self.pending_bytes -= _size(entry)
            failed = self._write_all(chunk)
            for entry in reversed(failed):  # back in front, in order
                self._pending.appendleft(entry)
                self.pending_rows += entry.rows
                self.pending_bytes += _size(entry)
        self.report()
        return bool(failed)

    def write_spilled(self) -> None:
        """Write what servers before this one spilled at their shutdown, file by file, each
        file taken by one writer (sibling workers start together) and removed once written; a
        file that fails to write is left for the next start, whole."""
        claimed = self.spill_file.claim()
        for i, path in enumerate(claimed):
            entries = EntryFile.read(path)
            if self._write_all(entries):
                log.error("prediction log: %s not written; kept for the next start", path)
                for left in claimed[i:]:
                    left.rename(left.with_suffix(".jsonl"))
                break
            path.unlink()
            rows = sum(e.rows for e in entries)
            log.info("prediction log: wrote %d rows spilled before, from %s", rows, path)
        self.report()

    def _write_all(self, entries: list[Entry]) -> list[Entry]:
        """Write entries model by model; returns those whose write failed."""
        failed: list[Entry] = []
        for model, group in itertools.groupby(
            sorted(entries, key=lambda e: e.model), key=lambda e: e.model
        ):
            failed += self._write(model, list(group))
        return failed

    def _write(self, model: str, entries: list[Entry]) -> list[Entry]:
        try:
            prepared = self.sink.prepare(rows_of(entries))
        except Exception as error:  # noqa: BLE001 - some entry no sink can hold: halve until it is found
            if len(entries) == 1:
                self.set_aside(entries, f"{type(error).__name__}: {error}")
                return []
            middle = len(entries) // 2
            return self._write(model, entries[:middle]) + self._write(model, entries[middle:])
        try:
            self.sink.write(model, prepared)
        except Exception:
            log.exception("prediction log: writing %d entries of %s failed", len(entries), model)
            self.stats = self.stats.plus(WriterStats(failed_writes=1))
            return entries
        rows = sum(e.rows for e in entries)
        self.stats = self.stats.plus(WriterStats(written_rows=rows, written_entries=len(entries)))
        return []

    def set_aside(self, entries: list[Entry], reason: str) -> None:
        path = self.dead_letter.put(entries, reason)
        log.error(
            "prediction log: %d entries (first: request %s of %s) cannot be written (%s); "
            "set aside in %s",
            len(entries),
            entries[0].request_id,
            entries[0].model,
            reason,
            path,
        )
        rows = sum(e.rows for e in entries)
        self.stats = self.stats.plus(
            WriterStats(dead_letter_entries=len(entries), dead_letter_rows=rows)
        )
        self.report()

    def spill(self, reason: str) -> None:
        """What is pending into the spill folder, for the next writer."""
        path = self.spill_file.put(list(self._pending), reason)
        log.warning("prediction log writer: %d rows spilled to %s", self.pending_rows, path)
        self.stats = self.stats.plus(WriterStats(spilled_rows=self.pending_rows))
        self._pending, self.pending_rows, self.pending_bytes = deque(), 0, 0
        self.report()

    def report(self) -> None:
        """The counts so far, one JSON line to the server (dropped if it has not read the
        last ones: each report holds all the counts)."""
        report = asdict(self.stats) | {
            "pending_rows": self.pending_rows,
            "pending_bytes": self.pending_bytes,
        }
        with suppress(BlockingIOError, BrokenPipeError):
            os.write(sys.stdout.fileno(), json.dumps(report).encode() + b"\n")


class EntryFile:
    """Entries kept in a folder as JSON lines (mode 600), each with the reason it is there:
    dead letters, for a person to inspect (or load once what refused them is fixed), and
    spilled entries, which the next writer writes. The body is kept as sent: bytes that are not
    UTF-8 survive as \\udcXX escapes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def put(self, entries: list[Entry], reason: str) -> Path:
        path = self.folder / f"{dt.datetime.now(dt.UTC):%Y-%m-%d}-{os.getpid()}.jsonl"
        lines = [
            json.dumps(
                {
                    "at": e.at,
                    "request_id": e.request_id,
                    "model": e.model,
                    "version": e.version,
                    "role": e.role,
                    "latency_ms": e.latency_ms,
                    "names": list(e.names),
                    "form": e.form,
                    "body": e.body.decode("utf-8", "surrogateescape"),
                    "predictions": np.frombuffer(e.predictions, dtype=np.float64).tolist(),
                    "reason": reason,
                }
            )
            for e in entries
        ]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write("\n".join(lines) + "\n")
        return path

    def claim(self) -> list[Path]:
        """The files here, each renamed for this process first: of two writers, one gets it.
        A file claimed by a process that is gone is claimed again."""
        claimed = []
        for path in sorted(self.folder.iterdir()):
            owner = path.suffix.removeprefix(".claimed-")
            if path.suffix != ".jsonl" and (not owner.isdigit() or _alive(int(owner))):
                continue
            mine = path.with_suffix(f".claimed-{os.getpid()}")
            with suppress(FileNotFoundError):  # another writer took it
                path.rename(mine)
                claimed.append(mine)
        return claimed

    @staticmethod
    def read(path: Path) -> list[Entry]:
        entries = []
        for line in path.read_text().splitlines():
            kept = json.loads(line)
            entries.append(
                Entry(
                    kept["at"],
                    kept["request_id"],
                    kept["model"],
                    kept["version"],
                    kept["role"],
                    kept["latency_ms"],
                    tuple(kept["names"]),
                    kept["body"].encode("utf-8", "surrogateescape"),
                    np.asarray(kept["predictions"], dtype=np.float64).tobytes(),
                    kept["form"],
                )
            )
        return entries


def _size(entry: Entry) -> int:
    return len(entry.body) + len(entry.predictions)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
