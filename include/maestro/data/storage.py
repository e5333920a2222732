"""Files where they live: the local disk or an object store, through one fsspec filesystem,
and hive-partitioned parquet datasets read one window's partitions at a time."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import pandas as pd

from maestro.errors import DataError
from maestro.spec.sources import FileSource

if TYPE_CHECKING:
    import pyarrow as pa
    from fsspec import AbstractFileSystem

    from maestro.data.sources import Window


def open_store(source: FileSource, local: Path | None) -> tuple[AbstractFileSystem, str]:
    """The filesystem holding a source and the source's path on it: the local disk for a
    local path (already resolved inside the data folders), else the object store of the URL's
    scheme with the credentials of the source's Airflow connection."""
    import fsspec

    if local is not None:
        return fsspec.filesystem("file"), str(local)
    return object_store(source.path, source.conn_id, "source.conn_id")


def object_store(
    url: str, conn_id: str | None, conn_setting: str
) -> tuple[AbstractFileSystem, str]:
    """The object store of `url`'s scheme, with the credentials of the Airflow connection
    `conn_id` (none: the environment's; `conn_setting` names where it was given, for errors),
    and the URL's path on it."""
    import fsspec

    from maestro.data.connections import get_connection, storage_options

    scheme = urlsplit(url).scheme
    conn = get_connection(conn_id, conn_setting) if conn_id else None
    try:
        # a new filesystem per read: a cached one would answer from listings of an earlier read
        fs = fsspec.filesystem(scheme, skip_instance_cache=True, **storage_options(conn, scheme))
    except (ImportError, ValueError) as error:  # gcsfs or adlfs not installed
        raise DataError(f"{url}: cannot open the {scheme}:// store: {error}") from None
    return fs, fs._strip_protocol(url)


def reach_errors() -> tuple[type[Exception], ...]:
    """What reaching a file may raise: OSError (s3fs turns S3's answers into FileNotFoundError
    and PermissionError), and botocore's own errors for a store that does not answer."""
    from botocore.exceptions import BotoCoreError

    return OSError, BotoCoreError


def describe_reach_error(error: Exception, missing: str = "source file not found") -> str:
    """What went wrong reaching a file, in one line (botocore's messages are long)."""
    first_line = str(error).strip().split("\n", 1)[0]
    if isinstance(error, FileNotFoundError):
        return missing
    if isinstance(error, PermissionError):
        return f"access denied ({first_line}); check the connection's credentials"
    return f"cannot be reached: {type(error).__name__}: {first_line}"


def read_partitions(
    fs: AbstractFileSystem, path: str, key: str, window: Window, origin: str
) -> pd.DataFrame:
    """The rows of the partitions `key=<ISO date, month or year>` that overlap the window; the
    others are listed, never opened. Every file read must have the first one's schema."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    if not fs.exists(path):
        raise DataError(f"{origin}: source file not found")
    root = path.rstrip("/")
    files = sorted(
        f
        for f in fs.find(root)
        if not PurePosixPath(f).name.startswith(("_", "."))  # _SUCCESS, .crc and the like
    )
    chosen = [
        f for f in files if _in_window(_partition_value(f, root, key, origin), window, f, origin)
    ]
    if not chosen:
        return pd.DataFrame()
    fragments = list(ds.dataset(chosen, filesystem=fs, format="parquet").get_fragments())
    schema = fragments[0].physical_schema
    for fragment in fragments[1:]:
        _same_schema(fragment.physical_schema, schema, fragment.path, fragments[0].path, origin)
    return pa.concat_tables(f.to_table(schema=schema) for f in fragments).to_pandas()


def _partition_value(file: str, root: str, key: str, origin: str) -> str:
    """The value of `key` in a file's path below the dataset's root (`.../key=value/...`)."""
    for part in PurePosixPath(file).relative_to(root).parts[:-1]:
        name, _, value = part.partition("=")
        if name == key:
            return unquote(value)
    raise DataError(f"{origin}: {file} is not inside a {key}=... partition")


def _in_window(value: str, window: Window, where: str, origin: str) -> bool:
    """Whether the period a partition value names (2012, 2012-05 or 2012-05-01) overlaps the
    half-open window."""
    start, end = window
    try:
        begins = pd.Timestamp(value, tz="UTC")
    except ValueError:
        raise DataError(
            f"{origin}: partition {where}: {value!r} is not an ISO date, month or year"
        ) from None
    if end is not None and begins >= end:
        return False
    return start is None or value >= start.strftime("%Y-%m-%d")[: len(value)]


def _same_schema(
    schema: pa.Schema, first: pa.Schema, where: str, first_where: str, origin: str
) -> None:
    if schema.equals(first):
        return
    theirs = {f.name: str(f.type) for f in schema}
    ours = {f.name: str(f.type) for f in first}
    changes = [
        f"{name!r} is {theirs.get(name, 'missing')} there, {ours.get(name, 'missing')} in {first_where}"
        for name in sorted(set(theirs) | set(ours))
        if theirs.get(name) != ours.get(name)
    ]
    raise DataError(f"{origin}: partition {where} has another schema: {'; '.join(changes)}")
