"""The prediction log: every scored row with its features, prediction, model version, latency
and time, for drift monitoring to read.

The server keeps only references: per request, the body it has already validated and the
predictions as bytes. Before the answer leaves, the entry goes into a pipe to a writer process,
which every second turns what it read into rows: parquet partitioned by model and date, or a
PostgreSQL table when the log's location is a `postgresql://` URL. Parsing, Arrow and parquet
for 100,000 rows a second then run on another core, outside the server's GIL, instead of
stretching its request latencies.

The pipe (1 MiB) is written without blocking: if the writer falls that far behind, entries wait
in the server, in order, and a thread feeds them to the pipe as it drains. The writer ignores
SIGINT and SIGTERM (a Ctrl-C or `killpg` reaches the whole process group) and stops when its
pipe closes, after writing everything it read. So a server stopped normally loses nothing, and
a killed one loses only what was still waiting in it: nothing while its writer keeps up.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import itertools
import json
import logging
import os
import pickle
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager, suppress
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from maestro.files import atomic_write

log = logging.getLogger(__name__)

TABLE = "prediction_log"
DEAD_LETTER = "_dead_letter"  # the folder beside a parquet log's `model=` folders
JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # an escaped NUL, not an escaped backslash
FRAME = struct.Struct("<Q")
FINAL_RETRIES = 5
MAX_PENDING = 200_000  # requests kept while no writer takes them; older ones are dropped
PIPE_BYTES = 1 << 20  # Linux's limit for an unprivileged process (/proc/sys/fs/pipe-max-size)
F_SETPIPE_SZ = 1031  # fcntl's command for a pipe's size (Linux)
WRITE_INTERVAL = 1.0  # seconds between the writer's writes (one parquet file per model each)
READ_PAUSE = 0.01  # the writer reads what piled up every 10 ms, not woken by every entry
IDLE_READ_PAUSE = 0.1  # ... and, while nothing comes, every 100 ms
FEED_FRAMES = 1000  # waiting entries written into the pipe at once, at most
# the writer yields the CPU to the server it logs for: requests first, then the log (it
# catches up in the gaps; the pipe buffers meanwhile)
WRITER_NICENESS = 19


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
    # "records": the request as received, one JSON record or an array of them; "columns": a
    # JSON object of one array per feature (what an Open Inference Protocol request becomes)
    form: str = "records"


class PredictionLog:
    """The server's side: each entry into the writer's pipe as it is logged, and a thread that
    feeds the pipe what it could not take at once (and replaces a writer that died)."""

    def __init__(self, location: str, dead_letter: Path | None = None) -> None:
        self.location = location
        self.dead_letter = dead_letter or dead_letter_folder(location, None)
        self.restarts = 0  # writers that died and were replaced
        self.dropped = 0  # entries given up while no writer took them
        self.stats = WriterStats()  # what the writers reported, added up over replacements
        self._reported = WriterStats()  # the current writer's last report
        self._lines = bytearray()  # its report channel's unfinished line
        self._waiting: deque[bytes] = deque()  # frames the pipe has not taken yet, in order
        self._sent = 0  # bytes of the first waiting frame already in the pipe
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._writer, self._fd = _start_writer(location, self.dead_letter)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, *fields) -> None:
        """Log one request; `fields` are Entry's, in order (a plain tuple pickles eight times
        faster than a NamedTuple). It is in the pipe when this returns, unless the pipe is full
        or its writer gone: then it waits here, behind those before it."""
        payload = pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL)
        frame = FRAME.pack(len(payload)) + payload
        with self._lock:
            if self._waiting:  # behind those waiting; the thread is already feeding them
                self._waiting.append(frame)
                if len(self._waiting) > MAX_PENDING:
                    head = self._waiting.popleft()  # perhaps partly sent: it stays first
                    self._waiting.popleft()
                    self._waiting.appendleft(head)
                    self.dropped += 1
                return
            try:
                sent = os.write(self._fd, frame)
            except OSError:  # full (BlockingIOError) or the writer is gone
                sent = 0
            if sent == len(frame):
                return
            self._sent = sent
            self._waiting.append(frame)
        self._wake.set()

    def flush(self, timeout: float = 60) -> None:
        """Wait until the pipe has taken every entry logged so far."""
        deadline = time.monotonic() + timeout
        while self._waiting and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.01)

    @property
    def pending(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        """Hand over the rest and wait until the writer has written everything."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        if self._waiting:
            log.error("prediction log: %d entries lost, no writer took them", len(self._waiting))
        os.close(self._fd)
        code = self._writer.wait()
        self.read_stats()
        if code:
            log.error("prediction log writer exited with code %d; see its errors above", code)

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
            if self._stop.is_set() and not self._waiting:
                return

    def _feed(self) -> None:
        """Write the waiting frames into the pipe, in order, as it drains, many per write.
        Only this thread writes while frames wait (`append` queues behind them), so the lock is
        not held while waiting for the pipe."""
        while True:
            with self._lock:
                if not self._waiting:
                    return
                offset, fd = self._sent, self._fd
                frames = list(itertools.islice(self._waiting, FEED_FRAMES))
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
                while done and done >= len(self._waiting[0]):
                    done -= len(self._waiting.popleft())
                self._sent = done
            time.sleep(READ_PAUSE)  # let the pipe drain a while: fewer, larger writes

    def _replace_writer(self) -> None:
        """A new writer for a dead one. What the dead one read but had not written is lost with
        it; the frame it was sent part of goes whole to the new one."""
        log.error(
            "prediction log writer (pid %d) is gone (exit code %s); starting another",
            self._writer.pid,
            self._writer.poll(),
        )
        writer, fd = _start_writer(self.location, self.dead_letter)
        self.read_stats()
        with self._lock:
            os.close(self._fd)
            self._writer, self._fd, self._sent = writer, fd, 0
            self._reported, self._lines = WriterStats(), bytearray()
            self.restarts += 1

    def read_stats(self) -> WriterStats:
        """The writers' counts so far: the current one's latest report (it sends one after
        every write, dropped when nobody has read the last), plus those of writers replaced."""
        fd = self._writer.stdout.fileno()
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


def _start_writer(location: str, dead_letter: Path) -> tuple[subprocess.Popen, int]:
    """The writer process, once its sink is open, and the non-blocking end of its pipe. The
    location goes over the pipe, not the command line, where a database password would show in
    the process list. The writer's stdout carries its reports (`WriterStats`, one JSON line
    after each write), read without blocking."""
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
    opening = json.dumps({"location": location, "dead_letter": str(dead_letter)}).encode()
    os.write(write_end, FRAME.pack(len(opening)) + opening)
    if writer.stdout.readline() != b"ready\n":
        writer.wait()
        os.close(write_end)
        raise RuntimeError(
            f"prediction log {redacted(location)!r} could not be opened (writer exit code "
            f"{writer.returncode}; its error is above)"
        )
    os.set_blocking(write_end, False)
    os.set_blocking(writer.stdout.fileno(), False)
    return writer, write_end


def dead_letter_folder(location: str, home: Path | None) -> Path:
    """Where entries that cannot be written are set aside: beside a parquet log, in the state
    folder for a database (a folder there is required)."""
    if not is_database(location):
        return Path(location) / DEAD_LETTER
    if home is None:
        raise ValueError("a prediction log in a database needs a dead-letter folder")
    return home / "prediction_log_dead_letter"


@dataclass(frozen=True)
class WriterStats:
    """What a writer process did: rows and entries written, writes that failed (retried), and
    entries set aside in the dead-letter folder because no sink can hold them."""

    written_rows: int = 0
    written_entries: int = 0
    failed_writes: int = 0
    dead_letter_entries: int = 0
    dead_letter_rows: int = 0

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
    """The writer process: reads entries from stdin until it closes, writes what it read every
    WRITE_INTERVAL seconds, and retries what failed to write with the next write."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.nice(WRITER_NICENESS)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    frames = FrameReader(sys.stdin.fileno())
    opening = json.loads(frames.read(timeout=None)[0])
    location = opening["location"]
    try:
        sink = PostgresSink(location) if is_database(location) else ParquetSink(location)
        writer = Writer(sink, DeadLetter(Path(opening["dead_letter"])))
    except Exception:
        log.exception("prediction log %r cannot be opened", redacted(location))
        sys.exit(1)
    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.buffer.flush()
    os.set_blocking(sys.stdout.fileno(), False)
    pending: list[Entry] = []
    due = time.monotonic() + WRITE_INTERVAL
    pause = READ_PAUSE
    # read on a timer, never waiting on the pipe: a reader blocked on it would be woken by
    # every request's write, which costs the server a cross-CPU wake-up in its answer's path
    while (batch := frames.read(timeout=0)) is not None:
        # B301: our own server's pipe to its child
        pending += [Entry(*pickle.loads(frame)) for frame in batch]  # nosec B301
        if time.monotonic() >= due:
            if pending:
                pending = writer.write(pending)
            due = time.monotonic() + WRITE_INTERVAL
        pause = READ_PAUSE if batch else min(IDLE_READ_PAUSE, 2 * pause)
        time.sleep(pause)
    for attempt in range(FINAL_RETRIES + 1):
        if not pending:
            return
        if attempt:
            time.sleep(1)
        pending = writer.write(pending)
    writer.set_aside(pending, "not written before the server stopped: the sink kept failing")
    log.error(
        "prediction log: %d entries could not be written; set aside in %s",
        len(pending),
        writer.dead_letter.folder,
    )
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

    def __init__(self, sink, dead_letter: DeadLetter) -> None:
        self.sink, self.dead_letter = sink, dead_letter
        self.stats = WriterStats()

    def write(self, entries: list[Entry]) -> list[Entry]:
        """Write entries model by model; returns those to try again."""
        failed: list[Entry] = []
        for model, group in itertools.groupby(
            sorted(entries, key=lambda e: e.model), key=lambda e: e.model
        ):
            failed += self._write(model, list(group))
        self._report()
        return failed

    def _write(self, model: str, entries: list[Entry]) -> list[Entry]:
        try:
            prepared = self.sink.prepare(_rows(entries))
        except Exception as error:  # some entry no sink can hold: halve until it is found
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
        rows = sum(len(e.predictions) // 8 for e in entries)
        self.stats = self.stats.plus(WriterStats(written_rows=rows, written_entries=len(entries)))
        return []

    def set_aside(self, entries: list[Entry], reason: str) -> None:
        if not entries:
            return
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
        rows = sum(len(e.predictions) // 8 for e in entries)
        self.stats = self.stats.plus(
            WriterStats(dead_letter_entries=len(entries), dead_letter_rows=rows)
        )
        self._report()

    def _report(self) -> None:
        """The counts so far, one JSON line to the server (dropped if it has not read the
        last ones: each report holds all the counts)."""
        with suppress(BlockingIOError, BrokenPipeError):
            os.write(sys.stdout.fileno(), json.dumps(asdict(self.stats)).encode() + b"\n")


class DeadLetter:
    """Entries set aside, one JSON line each (mode 600) with the reason, in a file per day:
    for a person to inspect, or to load after fixing what refused them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def put(self, entries: list[Entry], reason: str) -> Path:
        path = self.folder / f"{dt.datetime.now(dt.UTC):%Y-%m-%d}.jsonl"
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
                    # the body as sent: bytes that are not UTF-8 survive as \udcXX escapes
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


def is_database(location: str) -> bool:
    return location.startswith(("postgresql://", "postgresql+psycopg2://"))


def database_engine(url: str):
    """An SQLAlchemy engine for a `postgresql://` location (psycopg2 driver)."""
    from sqlalchemy import create_engine

    return create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))


class Rows(NamedTuple):
    """Entries flattened to one row per scored record."""

    meta: dict[str, np.ndarray]  # ts, request_id, model, version, role, latency_ms, prediction
    records: list[dict]  # the features of each row, as sent
    names: list[str]  # every feature name, in first-seen order


def _rows(entries: list[Entry]) -> Rows:
    import orjson

    records: list[dict] = []
    sizes: list[int] = []
    for entry in entries:
        try:
            body = orjson.loads(entry.body)
        except orjson.JSONDecodeError:  # what only the standard parser takes (big integers)
            body = json.loads(entry.body)
        if entry.form == "columns":
            batch = [dict(zip(body, row, strict=True)) for row in zip(*body.values(), strict=True)]
        else:
            batch = [body] if isinstance(body, dict) else body
        records += batch
        sizes.append(len(batch))
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
    names = list(dict.fromkeys(itertools.chain.from_iterable(e.names for e in entries)))
    return Rows(meta, records, names)


def _arrow_table(rows: Rows):
    """One Arrow table, built column by column (no pandas: a flush of 50,000 rows then costs a
    fraction of what a DataFrame would)."""
    import pyarrow as pa

    columns = {
        name: pa.array(values, type=pa.timestamp("us", tz="UTC") if name == "ts" else None)
        for name, values in rows.meta.items()
    }
    for name in rows.names:
        values = [record.get(name) for record in rows.records]
        columns[f"feature.{name}"] = pa.array(values, from_pandas=True)
    return pa.table(columns)


class ParquetSink:
    """Parquet under `model=<m>/date=<d>/`: one small file per write (a second of traffic),
    merged as they pile up (see `compact`), so a day under steady traffic is a few dozen files,
    not 86,400."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def prepare(self, rows: Rows):
        return _arrow_table(rows)

    def write(self, model: str, table) -> None:
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


def _read_files(files: list[Path], columns: list[str] | None = None, filters=None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(f, columns=columns, filters=filters) for f in files]
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


@contextmanager
def _locked(folder: Path, exclusive: bool):
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

    def prepare(self, rows: Rows):
        """The rows as a frame, the features of each as JSON text that jsonb takes (no NUL
        character, no lone surrogate: ValueError, before anything is written)."""
        import pandas as pd

        frame = pd.DataFrame(rows.meta)
        frame["ts"] = pd.to_datetime(frame["ts"], unit="us", utc=True)
        features = [json.dumps(record, ensure_ascii=False) for record in rows.records]
        for text in features:
            if JSON_NUL.search(text):
                raise ValueError("a text value holds a NUL character, which jsonb cannot hold")
            text.encode()  # UnicodeEncodeError (a ValueError) on a lone surrogate
        frame["features"] = features
        return frame

    def write(self, model: str, frame) -> None:
        """One multi-row INSERT per batch; the features of a row as one JSON object."""
        with self.engine.begin() as conn:
            frame.to_sql(TABLE, conn, if_exists="append", index=False, method="multi")


def read_log(
    location: str,
    model: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    role: str | None = None,
):
    """Logged rows of `model` as a DataFrame (features as `feature.<name>` columns), those at
    or after `start` and before `end` (aware datetimes) when given, of one `role` when given."""
    import pandas as pd

    if is_database(location):
        from sqlalchemy import text

        where, params = ["model = :m"], {"m": model}
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
