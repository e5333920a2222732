"""The prediction log, the model server's side (the table itself is `maestro.logs.predictions`,
its writer process `log_writer`).

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

import fcntl
import json
import logging
import os
import pickle
import select
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from maestro.logs.predictions import Entry, prediction_store
from maestro.serving.log_pipe import F_SETPIPE_SZ, FRAME, PIPE_BYTES, WriterStats
from maestro.serving.log_writer import READ_PAUSE, EntryFile
from maestro.vocabulary import LOG_DRAIN_SECONDS
from maestro.waiting import wait_for

log = logging.getLogger(__name__)

MAX_ROWS = 1_000_000  # rows waiting in the server (and, apart, in its writer) before refusing
MAX_BYTES = 128 << 20  # ... and their bytes
DEAD_LETTER = "_dead_letter"  # folders beside a parquet log's `model=` folders: entries no
SPILL = "_spill"  # sink can hold, and entries left unwritten at a shutdown


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
        store = prediction_store(location)
        return cls(store.state_folder(DEAD_LETTER, home), store.state_folder(SPILL, home))


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
        """Wait until the pipe has taken every entry logged so far (at most `timeout`)."""

        def drained() -> bool:
            self._wake.set()
            return not self._waiting

        with suppress(TimeoutError):
            wait_for(drained, timeout=timeout, interval=0.01, what="the prediction log's pipe")

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
            [
                sys.executable,
                "-c",
                "from maestro.serving.log_writer import run_writer; run_writer()",
            ],
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
                f"prediction log {prediction_store(self.location).shown!r} could not be opened (writer exit "
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
