"""The prediction log: every scored row with its features, prediction, model version, latency
and time, for drift monitoring to read.

The server keeps only references: per request, its validated columns as JSON and the
predictions as bytes. Before the answer leaves, the entry goes into a pipe to a writer process,
which every second turns what it read into rows: parquet partitioned by model and date, or a
PostgreSQL table when the log's location is a `postgresql://` URL. Arrow and parquet for
hundreds of thousands of rows a second then run on another core, outside the server's GIL,
instead of stretching its request latencies.

The pipe (1 MiB) is written without blocking: if the writer falls that far behind, entries wait
in the server, in order, and a thread feeds them to the pipe as it drains. What waits is
bounded: past `max_rows` or `max_bytes` waiting, the server refuses requests (503, Retry-After)
until the writer catches up, and the writer itself stops reading past the same bounds. The
writer ignores SIGINT and SIGTERM (a Ctrl-C or `killpg` reaches the whole process group) and
stops when its pipe closes. Stopping is bounded too: `close` drains for at most
`drain_seconds`, saying how much and how fast, and whatever is still unwritten then, in the
server or in the writer, is spilled to a file that the next writer writes first.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import itertools
import json
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

import numpy as np

from maestro.files import atomic_write
from maestro.vocabulary import LOG_DRAIN_SECONDS

log = logging.getLogger(__name__)

TABLE = "prediction_log"
DEAD_LETTER = "_dead_letter"  # folders beside a parquet log's `model=` folders: entries no
SPILL = "_spill"  # sink can hold, and entries left unwritten at a shutdown
FRAME = struct.Struct("<Q")
PIPE_BYTES = 1 << 20  # Linux's limit for an unprivileged process (/proc/sys/fs/pipe-max-size)
F_SETPIPE_SZ = 1031  # fcntl's command for a pipe's size (Linux)
WRITE_INTERVAL = 1.0  # seconds between the writer's writes (one parquet file per model each)
CHUNK_ROWS = 100_000  # rows per write at most (a fraction of a second), so a deadline is kept
SPILL_MARGIN = 1.0  # the writer stops writing this long before the server's drain deadline
READ_PAUSE = 0.01  # the writer reads what piled up every 10 ms, not woken by every entry
IDLE_READ_PAUSE = 0.1  # ... and, while nothing comes, every 100 ms
MAX_ROWS = 1_000_000  # rows waiting in the server (and, apart, in its writer) before refusing
MAX_BYTES = 128 << 20  # ... and their bytes
# the writer yields the CPU to the server it logs for: requests first, then the log (it
# catches up in the gaps; the pipe buffers meanwhile, and past the bounds requests wait)
WRITER_NICENESS = 10


class Entry(NamedTuple):
    """One answered request (or one shadow scoring of it)."""

    at: float  # seconds since the epoch
    request_id: str
    model: str
    version: str
    role: str  # primary | shadow
    latency_ms: float
    names: tuple[str, ...]  # the signature's columns
    body: bytes  # the features as validated, in the form below
    predictions: bytes  # float64, one per record
    # "columns": a JSON object of one array per feature (what the server logs, `columns_body`);
    # "records": one JSON record or an array of them
    form: str = "records"

    @property
    def rows(self) -> int:
        return len(self.predictions) // 8


def columns_body(table: dict) -> bytes:
    """Validated columns (lists or NumPy arrays) as an entry's body in the "columns" form: a
    third of the bytes of the records they came from, and columns the writer takes whole."""
    import orjson

    return orjson.dumps(table, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass(frozen=True)
class Folders:
    """Where a log keeps what it could not write: entries no sink can hold (dead letters,
    kept for a person) and entries left unwritten at a shutdown (spilled, written by the next
    writer)."""

    dead_letter: Path
    spill: Path

    @classmethod
    def of(cls, location: str, home: Path | None) -> Folders:
        """Beside a parquet log; in the state folder for a database (required then)."""
        if not is_database(location):
            return cls(Path(location) / DEAD_LETTER, Path(location) / SPILL)
        if home is None:
            raise ValueError("a prediction log in a database needs the state folder")
        return cls(home / "prediction_log_dead_letter", home / "prediction_log_spill")


class PredictionLog:
    """The server's side: each entry into the writer's pipe as it is logged, and a thread that
    feeds the pipe what it could not take at once (and replaces a writer that died)."""

    def __init__(
        self,
        location: str,
        folders: Folders | None = None,
        max_rows: int = MAX_ROWS,
        max_bytes: int = MAX_BYTES,
        drain_seconds: float = LOG_DRAIN_SECONDS,
    ) -> None:
        self.location = location
        self.folders = folders or Folders.of(location, None)
        self.max_rows, self.max_bytes = max_rows, max_bytes
        self.drain_seconds = drain_seconds
        self.restarts = 0  # writers that died and were replaced
        self.stats = WriterStats()  # what the writers reported, added up over replacements
        self._reported = WriterStats()  # the current writer's last report
        self._lines = bytearray()  # its report channel's unfinished line
        self._waiting: deque[tuple[bytes, int]] = deque()  # frames (and their rows) in order
        self.waiting_rows = self.waiting_bytes = 0
        self._sent = 0  # bytes of the first waiting frame already in the pipe
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._deadline: float | None = None  # when a stopping feeder gives up
        self._writer, self._fd = self._start_writer()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    @property
    def full(self) -> bool:
        """Whether what waits in the server is at its bounds: new requests are refused."""
        return self.waiting_rows >= self.max_rows or self.waiting_bytes >= self.max_bytes

    def append(self, *fields: Any) -> None:
        """Log one request; `fields` are Entry's, in order (a plain tuple pickles eight times
        faster than a NamedTuple). It is in the pipe when this returns, unless the pipe is full
        or its writer gone: then it waits here, behind those before it."""
        payload = pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL)
        frame = FRAME.pack(len(payload)) + payload
        rows = len(fields[8]) // 8
        with self._lock:
            if self._waiting:  # behind those waiting; the thread is already feeding them
                self._wait(frame, rows)
                return
            try:
                sent = os.write(self._fd, frame)
            except OSError:  # full (BlockingIOError) or the writer is gone
                sent = 0
            if sent == len(frame):
                return
            self._sent = sent
            self._wait(frame, rows)
        self._wake.set()

    def _wait(self, frame: bytes, rows: int) -> None:
        self._waiting.append((frame, rows))
        self.waiting_rows += rows
        self.waiting_bytes += len(frame)

    def flush(self, timeout: float = 60) -> None:
        """Wait until the pipe has taken every entry logged so far."""
        deadline = time.monotonic() + timeout
        while self._waiting and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.01)

    @property
    def pending(self) -> int:
        """Entries waiting in the server."""
        return len(self._waiting)

    def close(self, drain_seconds: float | None = None) -> int:
        """Hand over what waits and have the writer write everything, within `drain_seconds`
        (default: the log's), saying each second how much is left and how fast it goes; what
        is still unwritten then is spilled for the next writer. Returns the rows spilled."""
        started = time.monotonic()
        self._deadline = started + (self.drain_seconds if drain_seconds is None else drain_seconds)
        if self.waiting_rows:
            log.info(
                "prediction log: draining %d rows (%.1f MB) waiting in the server, for at most "
                "%.0f s",
                self.waiting_rows,
                self.waiting_bytes / 1e6,
                self._deadline - started,
            )
        self._stop.set()
        self._wake.set()
        before = self.waiting_rows
        while self._thread.is_alive():
            self._thread.join(1.0)
            if self._thread.is_alive():
                moved, before = before - self.waiting_rows, self.waiting_rows
                log.info(
                    "prediction log: %d rows left in the server, %d rows/s into the writer",
                    self.waiting_rows,
                    moved,
                )
        spilled = 0
        if self._waiting:  # out of time: the rest waits in a file for the next writer
            # B301: the server's own frames, never sent anywhere
            left = [pickle.loads(frame[FRAME.size :]) for frame, _ in self._waiting]  # nosec B301
            entries = [Entry(*fields) for fields in left]
            spilled += sum(e.rows for e in entries)
            path = EntryFile(self.folders.spill).put(entries, "spilled at shutdown by the server")
            log.warning(
                "prediction log: %d rows not handed to the writer in time: spilled to %s",
                spilled,
                path,
            )
        control = pickle.dumps(
            {"drain_until": time.time() + max(0.0, self._deadline - time.monotonic())}
        )
        with suppress(OSError):  # a gone writer: nothing to tell
            os.set_blocking(self._fd, True)
            os.write(self._fd, FRAME.pack(len(control)) + control)
        os.close(self._fd)
        give_up = max(time.monotonic(), self._deadline) + 5
        while self._writer.poll() is None and time.monotonic() < give_up:
            self.read_stats()  # its reports keep coming: the pipe must not fill
            time.sleep(0.05)
        if self._writer.poll() is None:
            self._writer.kill()
            log.error("prediction log writer did not stop in time: killed")
        code = self._writer.wait()
        stats = self.read_stats()
        spilled += stats.spilled_rows
        if code:
            log.error("prediction log writer exited with code %d; see its errors above", code)
        if spilled:
            log.warning(
                "prediction log: stopped after %.1f s; %d rows spilled to %s (the next start "
                "writes them)",
                time.monotonic() - started,
                spilled,
                self.folders.spill,
            )
        else:
            log.info(
                "prediction log: stopped after %.1f s; every row logged is written (%d)",
                time.monotonic() - started,
                stats.written_rows,
            )
        return spilled

    def _run(self) -> None:
        while True:
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self._feed()
            except Exception:  # no new writer could start: the entries wait for the next try
                log.exception("prediction log: %d entries wait for a writer", len(self._waiting))
                if self._stop.is_set():
                    return
            if self._stop.is_set() and (not self._waiting or self._past_deadline()):
                return

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _feed(self) -> None:
        """Write the waiting frames into the pipe, in order, as it drains, about a pipe's worth
        per write. Only this thread writes while frames wait (`append` queues behind them), so
        the lock is not held while waiting for the pipe."""
        while not self._past_deadline():
            with self._lock:
                if not self._waiting:
                    return
                offset, fd = self._sent, self._fd
                frames: list[bytes] = []
                size = -offset
                for frame, _ in self._waiting:  # at least one, at most about the pipe's size
                    if frames and size + len(frame) > PIPE_BYTES:
                        break
                    frames.append(frame)
                    size += len(frame)
            try:
                select.select([], [fd], [], 1.0)
                sent = os.write(fd, memoryview(b"".join(frames))[offset:])
            except BlockingIOError:
                continue
            except OSError:
                self._replace_writer()
                continue
            with self._lock:
                done = offset + sent
                while done and done >= len(self._waiting[0][0]):
                    frame, rows = self._waiting.popleft()
                    done -= len(frame)
                    self.waiting_rows -= rows
                    self.waiting_bytes -= len(frame)
                self._sent = done
            if sent < PIPE_BYTES // 2:
                time.sleep(READ_PAUSE)  # let the pipe drain a while: fewer, larger writes

    def _start_writer(self) -> tuple[subprocess.Popen, int]:
        """The writer process, once its sink is open, and the non-blocking end of its pipe.
        The location goes over the pipe, not the command line, where a database password
        would show in the process list. The writer's stdout carries its reports (`WriterStats`,
        one JSON line after each write), read without blocking."""
        read_end, write_end = os.pipe()
        try:
            fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:  # a lower limit on this host: the default size (64 KiB) still works
            log.warning("prediction log: the writer's pipe stays at its default size")
        writer = subprocess.Popen(
            [sys.executable, "-c", "from maestro.serving.predlog import run_writer; run_writer()"],
            stdin=read_end,
            stdout=subprocess.PIPE,
        )
        os.close(read_end)
        opening = json.dumps(
            {
                "location": self.location,
                "dead_letter": str(self.folders.dead_letter),
                "spill": str(self.folders.spill),
                "max_rows": self.max_rows,
                "max_bytes": self.max_bytes,
            }
        ).encode()
        os.write(write_end, FRAME.pack(len(opening)) + opening)
        stdout = cast(IO[bytes], writer.stdout)  # a pipe: stdout=PIPE above
        if stdout.readline() != b"ready\n":
            writer.wait()
            os.close(write_end)
            raise RuntimeError(
                f"prediction log {redacted(self.location)!r} could not be opened (writer exit "
                f"code {writer.returncode}; its error is above)"
            )
        os.set_blocking(write_end, False)
        os.set_blocking(stdout.fileno(), False)
        return writer, write_end

    def _replace_writer(self) -> None:
        """A new writer for a dead one. What the dead one read but had not written is lost with
        it; the frame it was sent part of goes whole to the new one."""
        log.error(
            "prediction log writer (pid %d) is gone (exit code %s); starting another",
            self._writer.pid,
            self._writer.poll(),
        )
        writer, fd = self._start_writer()
        self.read_stats()
        with self._lock:
            os.close(self._fd)
            self._writer, self._fd, self._sent = writer, fd, 0
            self._reported, self._lines = WriterStats(), bytearray()
            self.restarts += 1

    def read_stats(self) -> WriterStats:
        """The writers' counts so far: the current one's latest report (it sends one after
        every write, dropped when nobody has read the last), plus those of writers replaced.
        Its pending rows and bytes are its latest, not added up."""
        fd = cast(IO[bytes], self._writer.stdout).fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._lines += chunk
        *lines, rest = self._lines.split(b"\n")
        self._lines = bytearray(rest)
        for line in reversed(lines):
            try:
                report = WriterStats(**json.loads(line))
            except (ValueError, TypeError):  # a line cut short; the next report is whole
                continue
            self.stats = self.stats.plus(report.minus(self._reported))
            self._reported = report
            break
        return self.stats


@dataclass(frozen=True)
class WriterStats:
    """What a writer process did: rows and entries written, writes that failed (retried),
    entries set aside because no sink can hold them, rows spilled at shutdown; and what it
    holds now, read but not yet written."""

    written_rows: int = 0
    written_entries: int = 0
    failed_writes: int = 0
    dead_letter_entries: int = 0
    dead_letter_rows: int = 0
    spilled_rows: int = 0
    pending_rows: int = 0
    pending_bytes: int = 0

    def plus(self, other: WriterStats) -> WriterStats:
        return WriterStats(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def minus(self, other: WriterStats) -> WriterStats:
        return WriterStats(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))


def redacted(location: str) -> str:
    if is_database(location) and "@" in location:
        scheme, rest = location.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return location


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
    location = opening["location"]
    try:
        sink = PostgresSink(location) if is_database(location) else ParquetSink(location)
        writer = Writer(
            sink, EntryFile(Path(opening["dead_letter"])), EntryFile(Path(opening["spill"]))
        )
    except Exception:
        log.exception("prediction log %r cannot be opened", redacted(location))
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


class FrameReader:
    """Length-prefixed frames from a pipe: each read takes whatever has arrived."""

    def __init__(self, fd: int) -> None:
        self._fd, self._buffer = fd, bytearray()

    def read(self, timeout: float | None) -> list[bytes] | None:
        """The whole frames that arrived within `timeout` seconds (None: wait for one), or
        None once the pipe is closed (a frame cut short by a killed server is dropped)."""
        frames: list[bytes] = []
        while True:
            ready, _, _ = select.select([self._fd], [], [], timeout)
            if ready:
                chunk = os.read(self._fd, PIPE_BYTES)
                if not chunk:
                    return frames or None
                self._buffer += chunk
                frames += self._whole_frames()
                if len(chunk) == PIPE_BYTES:  # more may be there: take it now
                    continue
            if frames or timeout is not None:
                return frames

    def _whole_frames(self) -> list[bytes]:
        frames, at = [], 0
        while len(self._buffer) - at >= FRAME.size:
            (size,) = FRAME.unpack_from(self._buffer, at)
            if len(self._buffer) - at - FRAME.size < size:
                break
            frames.append(bytes(self._buffer[at + FRAME.size : at + FRAME.size + size]))
            at += FRAME.size + size
        del self._buffer[:at]
        return frames


class Writer:
    """The writer process's work: entries to rows to the sink, model by model. An entry the
    sink cannot hold (found while building its rows, before anything is written) is set aside
    in the dead-letter folder, never holding back the entries beside it; a write that fails
    (the database is down) keeps its entries for the next try."""

    def __init__(self, sink: Any, dead_letter: EntryFile, spill: EntryFile) -> None:
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
            prepared = self.sink.prepare(_rows(entries))
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


def is_database(location: str) -> bool:
    return location.startswith(("postgresql://", "postgresql+psycopg2://"))


def database_engine(url: str) -> Any:
    """An SQLAlchemy engine for a `postgresql://` location (psycopg2 driver)."""
    from sqlalchemy import create_engine

    return create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))


class Rows(NamedTuple):
    """Entries flattened to columns: one row per scored record."""

    meta: dict[str, np.ndarray]  # ts, request_id, model, version, role, latency_ms, prediction
    features: dict[str, list]  # every feature's values, in first-seen order of the names


def _rows(entries: list[Entry]) -> Rows:
    """Columns of every entry's rows. A "columns" body is taken column by column, whole; a
    "records" body is read record by record. A feature an entry lacks (another version's
    signature) is null in its rows."""
    import orjson

    names = list(dict.fromkeys(itertools.chain.from_iterable(e.names for e in entries)))
    features: dict[str, list] = {name: [] for name in names}
    for entry in entries:
        try:
            body = orjson.loads(entry.body)
        except orjson.JSONDecodeError:  # what only the standard parser takes (big integers)
            body = json.loads(entry.body)
        if entry.form == "records":
            records = [body] if isinstance(body, dict) else body
            body = {name: [record.get(name) for record in records] for name in entry.names}
        rows = entry.rows
        for name, values in features.items():
            given = body.get(name)
            if given is None:
                values.extend([None] * rows)
            elif len(given) != rows:
                raise ValueError(f"feature {name!r} has {len(given)} values for {rows} rows")
            else:
                values.extend(given)
    sizes = [e.rows for e in entries]
    micros = (np.array([e.at for e in entries]) * 1e6).astype("int64")
    meta = {
        "ts": np.repeat(micros, sizes),
        "request_id": np.repeat([e.request_id for e in entries], sizes),
        "model": np.repeat([e.model for e in entries], sizes),
        "version": np.repeat([e.version for e in entries], sizes),
        "role": np.repeat([e.role for e in entries], sizes),
        "latency_ms": np.repeat([e.latency_ms for e in entries], sizes),
        "prediction": np.concatenate(
            [np.frombuffer(e.predictions, dtype=np.float64) for e in entries]
        ),
    }
    return Rows(meta, features)


def _arrow_table(rows: Rows) -> Any:
    """One Arrow table, built column by column (no pandas: a flush of 50,000 rows then costs a
    fraction of what a DataFrame would)."""
    import pyarrow as pa

    columns = {
        name: pa.array(values, type=pa.timestamp("us", tz="UTC") if name == "ts" else None)
        for name, values in rows.meta.items()
    }
    for name, values in rows.features.items():
        columns[f"feature.{name}"] = pa.array(values, from_pandas=True)
    return pa.table(columns)


class ParquetSink:
    """Parquet under `model=<m>/date=<d>/`: one small file per write (a second of traffic),
    merged as they pile up (see `compact`), so a day under steady traffic is a few dozen files,
    not 86,400."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def prepare(self, rows: Rows) -> Any:
        return _arrow_table(rows)

    def write(self, model: str, table: Any) -> None:
        """One parquet file per batch and day, then merge the day's files if enough piled up."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        days = pc.strftime(table["ts"], format="%Y-%m-%d")
        for day in pc.unique(days).to_pylist():
            part = table.filter(pc.equal(days, day))
            folder = self.root / f"model={model}" / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(_file_name(folder, 0), lambda tmp, part=part: pq.write_table(part, tmp))
            compact(folder)


MERGE_FAN_IN = 32  # files of one level merged into one of the next
LEVELS = 4  # part files (level 0) up to level 3: a day at one write a second is <= ~100 files


def _file_name(folder: Path, level: int) -> Path:
    stamp = f"{dt.datetime.now(dt.UTC):%H%M%S%f}-{uuid.uuid4().hex[:8]}"
    return folder / f"l{level}-{stamp}.parquet"


def _read_files(files: list[Path], columns: list[str] | None = None, filters: Any = None) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(f, columns=columns, filters=filters) for f in files]
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


@contextmanager
def _locked(folder: Path, exclusive: bool) -> Iterator[None]:
    """Readers share a day's lock; a merge holds it alone, so a reader never sees a merged
    file beside the files it replaced, nor misses files deleted under it."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def compact(folder: Path, fan_in: int = MERGE_FAN_IN) -> int:
    """Size-tiered merging of one day's files: every `fan_in` files of a level become one file
    of the next. Returns how many files were merged away."""
    import pyarrow.parquet as pq

    merged = 0
    for level in range(LEVELS - 1):
        files = sorted(folder.glob(f"l{level}-*.parquet"))
        if len(files) < fan_in:
            continue
        with _locked(folder, exclusive=True):
            table = _read_files(files)
            atomic_write(_file_name(folder, level + 1), lambda tmp, t=table: pq.write_table(t, tmp))
            for f in files:
                f.unlink()
        merged += len(files)
    return merged


class PostgresSink:
    def __init__(self, url: str) -> None:
        from sqlalchemy import text

        self.engine = database_engine(url)
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (ts timestamptz NOT NULL, "
                    "request_id text NOT NULL, model text NOT NULL, version text NOT NULL, "
                    "role text NOT NULL, latency_ms double precision, "
                    "prediction double precision, features jsonb NOT NULL)"
                )
            )

    def prepare(self, rows: Rows) -> str:
        """The rows as COPY's text format, the features of each as one JSON object that jsonb
        takes: a NUL character or a lone surrogate raises ValueError before anything is
        written."""
        for name, values in rows.features.items():
            text = "".join(v for v in values if type(v) is str)
            if "\x00" in text:
                raise ValueError(f"feature {name!r} holds a NUL character, which jsonb cannot hold")
        meta = rows.meta
        columns = (
            np.datetime_as_string(meta["ts"].astype("datetime64[us]"), unit="us").tolist(),
            meta["request_id"].tolist(),
            meta["model"].tolist(),
            meta["version"].tolist(),
            meta["role"].tolist(),
            list(map(repr, meta["latency_ms"].tolist())),  # repr: every float, nan and inf too
            list(map(repr, meta["prediction"].tolist())),
            [text.replace("\\", "\\\\") for text in _json_objects(rows.features, len(meta["ts"]))],
        )
        return "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n"

    def write(self, model: str, text: str) -> None:
        """One COPY per write, in one transaction (its timestamps are UTC)."""
        import io

        connection = self.engine.raw_connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL TIME ZONE 'UTC'")
                cursor.copy_expert(
                    f"COPY {TABLE} ({', '.join(COPY_COLUMNS)}) FROM STDIN", io.StringIO(text)
                )
            connection.commit()
        finally:
            connection.close()


def _json_objects(features: dict[str, list], rows: int) -> list[str]:
    """Each row's features as one JSON object, built column by column: a column of numbers (or
    booleans, or nulls) is encoded in one call and split at its commas, text value by value;
    then each row is one join of keys and values. A lone surrogate raises orjson's
    JSONEncodeError (a ValueError)."""
    import orjson

    if not features:
        return ["{}"] * rows
    pieces: list[Iterable[str]] = []
    for i, (name, values) in enumerate(features.items()):
        pieces.append(
            itertools.repeat(("{" if i == 0 else ",") + orjson.dumps(name).decode() + ":")
        )
        if set(map(type, values)) <= {int, float, bool, type(None)}:
            pieces.append(orjson.dumps(values).decode()[1:-1].split(","))
        else:
            pieces.append([orjson.dumps(v).decode() for v in values])
    pieces.append(itertools.repeat("}"))
    return list(map("".join, zip(*pieces, strict=False)))  # the keys repeat without end


COPY_COLUMNS = (
    "ts",
    "request_id",
    "model",
    "version",
    "role",
    "latency_ms",
    "prediction",
    "features",
)


def read_log(
    location: str,
    model: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    role: str | None = None,
) -> Any:
    """Logged rows of `model` as a DataFrame (features as `feature.<name>` columns), those at
    or after `start` and before `end` (aware datetimes) when given, of one `role` when given."""
    import pandas as pd

    if is_database(location):
        from sqlalchemy import text

        where = ["model = :m"]
        params: dict[str, Any] = {"m": model}
        for clause, key, value in (
            ("ts >= :start", "start", start),
            ("ts < :end", "end", end),
            ("role = :role", "role", role),
        ):
            if value is not None:
                where.append(clause)
                params[key] = value
        with database_engine(location).connect() as conn:
            frame = pd.read_sql(
                # B608: constant table and clauses, bound values
                text(f"SELECT * FROM {TABLE} WHERE {' AND '.join(where)} ORDER BY ts"),  # nosec B608
                conn,
                params=params,
            )
        features = pd.json_normalize(frame.pop("features").tolist()).add_prefix("feature.")
        return pd.concat([frame, features], axis=1)
    filters = []
    if start is not None:
        filters.append(("ts", ">=", pd.Timestamp(start)))
    if end is not None:
        filters.append(("ts", "<", pd.Timestamp(end)))
    if role is not None:
        filters.append(("role", "=", role))
    tables = []
    for folder in _day_folders(Path(location) / f"model={model}", start, end):
        with _locked(folder, exclusive=False):
            table = _read_files(sorted(folder.glob("l*-*.parquet")), filters=filters or None)
        if table is not None:
            tables.append(table)
    if not tables:
        return pd.DataFrame()
    import pyarrow as pa

    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    return frame.sort_values("ts", kind="stable", ignore_index=True)


def _day_folders(root: Path, start: dt.datetime | None, end: dt.datetime | None) -> list[Path]:
    """The `date=` folders that can hold rows of [start, end)."""
    first = f"date={start.astimezone(dt.UTC):%Y-%m-%d}" if start else ""
    last = f"date={end.astimezone(dt.UTC):%Y-%m-%d}" if end else "date=~"
    return [f for f in sorted(root.glob("date=*")) if first <= f.name <= last]


def has_log(location: str, model: str) -> bool:
    """Whether anything was ever logged for `model` at `location`."""
    if is_database(location):
        from sqlalchemy import inspect, text

        engine = database_engine(location)
        if not inspect(engine).has_table(TABLE):
            return False
        with engine.connect() as conn:
            # B608: constant table, bound values
            query = text(f"SELECT 1 FROM {TABLE} WHERE model = :m LIMIT 1")  # nosec B608
            return conn.execute(query, {"m": model}).first() is not None
    return any((Path(location) / f"model={model}").glob("date=*/l*-*.parquet"))


def known_requests(location: str, model: str, ids: list[str]) -> dict[str, int]:
    """How many rows each of `ids` scored for `model` (primary role), from the log itself."""
    if not ids:
        return {}
    if is_database(location):
        from sqlalchemy import text

        with database_engine(location).connect() as conn:
            found = conn.execute(
                text(
                    # B608: constant table, bound values
                    f"SELECT request_id, count(*) FROM {TABLE} WHERE model = :m "  # nosec B608
                    "AND role = 'primary' AND request_id = ANY(:ids) GROUP BY request_id"
                ),
                {"m": model, "ids": list(ids)},
            )
            return {request_id: int(n) for request_id, n in found}
    counts: dict[str, int] = {}
    wanted = set(ids)
    for folder in _day_folders(Path(location) / f"model={model}", None, None):
        with _locked(folder, exclusive=False):
            table = _read_files(
                sorted(folder.glob("l*-*.parquet")),
                columns=["request_id"],
                filters=[("role", "=", "primary"), ("request_id", "in", wanted)],
            )
        if table is not None:
            for request_id in table.column("request_id").to_pylist():
                counts[request_id] = counts.get(request_id, 0) + 1
    return counts
