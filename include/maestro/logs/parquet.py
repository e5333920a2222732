"""A log table as parquet files under a folder: `<model folder>/<partition>=<value>/*.parquet`.

Files are written whole and moved into place (a reader never sees half a file). Appends are
small files, merged as they pile up (`compact`); readers share a partition's lock and a merge
holds it alone, so a reader never sees a merged file beside the files it replaced."""

from __future__ import annotations

import datetime as dt
import fcntl
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maestro.files import atomic_write
from maestro.logs.store import Condition, check_conditions

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

MERGE_FAN_IN = 32  # files of one level merged into one of the next
LEVELS = 4  # part files (level 0) up to level 3: a day at one write a second is <= ~100 files


class ParquetStore:
    def __init__(
        self,
        root: str | Path,
        table: str,
        model_folder: str = "model={model}",
        partition: str = "date",
        whole_file: str = "part.parquet",
    ) -> None:
        self.root = Path(root)
        self.table = table
        self.model_folder, self.partition, self.whole_file = model_folder, partition, whole_file

    @property
    def shown(self) -> str:
        return str(self.root)

    def folder(self, model: str, partition: str) -> Path:
        """The folder of one model's partition."""
        return self.root / self.model_folder.format(model=model) / f"{self.partition}={partition}"

    def append(self, model: str, partition: str, frame: pd.DataFrame) -> None:
        path = new_file(self.folder(model, partition))
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))

    def append_table(self, model: str, partition: str, table: pa.Table) -> None:
        """Append an Arrow table, then merge the partition's files if enough piled up."""
        import pyarrow.parquet as pq

        folder = self.folder(model, partition)
        atomic_write(new_file(folder), lambda tmp: pq.write_table(table, tmp))
        compact(folder)

    def replace(self, model: str, partition: str, frame: pd.DataFrame) -> str:
        path = self.folder(model, partition) / self.whole_file
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
        return str(path)

    def read(
        self,
        model: str,
        where: Sequence[Condition] = (),
        partitions: tuple[str | None, str | None] = (None, None),
        columns: list[str] | None = None,
    ) -> pd.DataFrame:
        filters = parquet_filters(where)
        tables = []
        for folder in self._partitions(model, *partitions):
            with locked(folder, exclusive=False):
                table = read_files(sorted(folder.glob("*.parquet")), columns, filters)
            if table is not None:
                tables.append(table)
        return frame_of(tables, model, columns)

    def has(self, model: str) -> bool:
        home = self.root / self.model_folder.format(model=model)
        return any(home.glob(f"{self.partition}=*/*.parquet"))

    def beside(self, table: str, **options: Any) -> ParquetStore:
        return ParquetStore(self.root.parent / table, table, **options)

    def state_folder(self, name: str, home: Path | None) -> Path:
        return self.root / name

    def _partitions(self, model: str, first: str | None, last: str | None) -> list[Path]:
        """The partition folders of `model` from `first` to `last` (inclusive)."""
        low = f"{self.partition}={first}" if first else ""
        high = f"{self.partition}={last}" if last else f"{self.partition}=~"
        home = self.root / self.model_folder.format(model=model)
        return [f for f in sorted(home.glob(f"{self.partition}=*")) if low <= f.name <= high]


def parquet_filters(where: Sequence[Condition]) -> Any:
    """The conditions (checked) as pyarrow's filters; None for none."""
    check_conditions(where)
    return [(c, op, set(v) if op == "in" else v) for c, op, v in where] or None


def frame_of(tables: list[pa.Table], model: str, columns: list[str] | None) -> pd.DataFrame:
    """The partitions' tables as one DataFrame whose rows carry their model, as in a
    database."""
    import pandas as pd
    import pyarrow as pa

    if not tables:
        return pd.DataFrame(columns=columns or [])
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    if "model" not in frame.columns and (columns is None or "model" in columns):
        frame.insert(0, "model", model)
    return frame


def part_name(level: int, owner: str = "") -> str:
    """A new part's name: its merge level, then a time stamp (parts sort in the order
    written), then its `owner` if any."""
    stamp = f"{dt.datetime.now(dt.UTC):%H%M%S%f}-{uuid.uuid4().hex[:8]}"
    return f"l{level}-{stamp}{f'-{owner}' if owner else ''}.parquet"


def new_file(folder: Path, level: int = 0) -> Path:
    """A new file's path in `folder` (`part_name`)."""
    return folder / part_name(level)


def read_files(
    files: Sequence[Path | str],
    columns: list[str] | None = None,
    filters: Any = None,
    filesystem: Any = None,
) -> pa.Table | None:
    """The files' rows as one table (None for no files), on the local disk or `filesystem`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def present(path: Path | str) -> list[str] | None:
        """The wanted columns the file has (files of another signature lack some)."""
        if columns is None:
            return None
        names = set(pq.read_schema(path, filesystem=filesystem).names)
        return [c for c in columns if c in names]

    tables = [
        pq.read_table(f, columns=present(f), filters=filters, filesystem=filesystem) for f in files
    ]
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


@contextmanager
def locked(folder: Path, exclusive: bool) -> Iterator[None]:
    """Readers share a partition's lock; a merge holds it alone."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def compact(folder: Path, fan_in: int = MERGE_FAN_IN) -> int:
    """Size-tiered merging of one partition's files: every `fan_in` files of a level become
    one file of the next. Returns how many files were merged away."""
    import pyarrow.parquet as pq

    merged = 0
    for level in range(LEVELS - 1):
        files = sorted(folder.glob(f"l{level}-*.parquet"))
        if len(files) < fan_in:
            continue
        with locked(folder, exclusive=True):
            table = read_files(files)
            atomic_write(new_file(folder, level + 1), lambda tmp, t=table: pq.write_table(t, tmp))
            for f in files:
                f.unlink()
        merged += len(files)
    return merged
