"""The pipe between a model server and its prediction-log writer: length-prefixed frames, each
a pickled entry (or the server's last word), and the writer's reports back (`WriterStats`, one
JSON line after each write)."""

from __future__ import annotations

import os
import select
import struct
from dataclasses import astuple, dataclass

FRAME = struct.Struct("<Q")
PIPE_BYTES = 1 << 20  # Linux's limit for an unprivileged process (/proc/sys/fs/pipe-max-size)
F_SETPIPE_SZ = 1031  # fcntl's command for a pipe's size (Linux)


def columns_body(table: dict) -> bytes:
    """Validated columns (lists or NumPy arrays) as an entry's body in the "columns" form: a
    third of the bytes of the records they came from, and columns the writer takes whole."""
    import orjson

    return orjson.dumps(table, option=orjson.OPT_SERIALIZE_NUMPY)


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
