"""A log table as parquet objects in an object store (`s3://`, `gs://`, `az://`), laid out as
the folder store lays out files: `<prefix>/<model folder>/<partition>=<value>/*.parquet`.

An object store has no rename and no lock, so the folder store's way of merging small files
(move the merged file into place under the partition's lock, then delete the parts) is not
available. Instead:

- every object is written whole by one PUT (a reader never sees half of one);
- each writer merges only its own objects (their names carry its id), so two writers never
  merge the same object;
- a merged object names the objects it replaces in its footer (`maestro.replaces`), and a
  reader leaves out every object some merged object replaces: between the merged object's PUT
  and the parts' deletion, and after a writer died between the two, every row is read once;
- a reader that finds an object gone (deleted by a merge after the listing) lists again.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from maestro.logs.parquet import (
    LEVELS,
    MERGE_FAN_IN,
    frame_of,
    parquet_filters,
    part_name,
    read_files,
)
from maestro.logs.store import Condition

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

REPLACES = b"maestro.replaces"
READ_ATTEMPTS = 3


class ObjectStore:
    def __init__(
        self,
        url: str,
        table: str,
        conn_id: str | None = None,
        model_folder: str = "model={model}",
        partition: str = "date",
        whole_file: str = "part.parquet",
    ) -> None:
        from maestro.data.storage import object_store

        self.url, self.table, self.conn_id = url.rstrip("/"), table, conn_id
        self.model_folder, self.partition, self.whole_file = model_folder, partition, whole_file
        self.fs, self.root = object_store(self.url, conn_id, "MAESTRO_PREDICTION_LOG_CONN_ID")
        self.writer = uuid.uuid4().hex[:12]  # this process's objects: the ones it merges

    @property
    def shown(self) -> str:
        return self.url

    def folder(self, model: str, partition: str) -> str:
        return f"{self.root}/{self.model_folder.format(model=model)}/{self.partition}={partition}"

    def append(self, model: str, partition: str, frame: pd.DataFrame) -> None:
        import pyarrow as pa

        self.append_table(model, partition, pa.Table.from_pandas(frame, preserve_index=False))

    def append_table(self, model: str, partition: str, table: pa.Table) -> None:
        """PUT the table as a new object, then merge this writer's objects if enough piled up."""
        folder = self.folder(model, partition)
        self._put(f"{folder}/{part_name(0, self.writer)}", table)
        self._compact(folder)

    def replace(self, model: str, partition: str, frame: pd.DataFrame) -> str:
        import pyarrow as pa

        path = f"{self.folder(model, partition)}/{self.whole_file}"
        self._put(path, pa.Table.from_pandas(frame, preserve_index=False))
        return f"{self.url.split('://')[0]}://{path}"

    def read(
        self,
        model: str,
        where: Sequence[Condition] = (),
        partitions: tuple[str | None, str | None] = (None, None),
        columns: list[str] | None = None,
    ) -> pd.DataFrame:
        filters = parquet_filters(where)
        tables = [
            table
            for folder in self._partitions(model, *partitions)
            if (table := self._read_partition(folder, columns, filters)) is not None
        ]
        return frame_of(tables, model, columns)

    def has(self, model: str) -> bool:
        home = f"{self.root}/{self.model_folder.format(model=model)}"
        return bool(self.fs.glob(f"{home}/{self.partition}=*/*.parquet"))

    def beside(self, table: str, **options: Any) -> ObjectStore:
        parent = self.url.rsplit("/", 1)[0]
        return ObjectStore(f"{parent}/{table}", table, self.conn_id, **options)

    def state_folder(self, name: str, home: Path | None) -> Path:
        if home is None:
            raise ValueError(f"a {self.table} in an object store needs the state folder for {name}")
        return Path(home) / f"{self.table}{name}"

    def _put(self, path: str, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        with self.fs.open(path, "wb") as out:
            pq.write_table(table, out)

    def _partitions(self, model: str, first: str | None, last: str | None) -> list[str]:
        low = f"{self.partition}={first}" if first else ""
        high = f"{self.partition}={last}" if last else f"{self.partition}=~"
        home = f"{self.root}/{self.model_folder.format(model=model)}"
        found = sorted(self.fs.glob(f"{home}/{self.partition}=*"))
        return [f for f in found if low <= PurePosixPath(f).name <= high]

    def _live(self, folder: str) -> list[str]:
        """The partition's objects that no merged object replaces."""
        import pyarrow.parquet as pq

        objects = sorted(self.fs.glob(f"{folder}/*.parquet"))
        replaced: set[str] = set()
        for path in objects:
            if not PurePosixPath(path).name.startswith("l0-"):
                footer = pq.read_metadata(path, filesystem=self.fs).metadata or {}
                replaced.update(json.loads(footer.get(REPLACES, b"[]")))
        return [p for p in objects if PurePosixPath(p).name not in replaced]

    def _read_partition(self, folder: str, columns: list[str] | None, filters: Any) -> Any:
        for attempt in range(READ_ATTEMPTS):
            try:
                return read_files(self._live(folder), columns, filters, self.fs)
            except FileNotFoundError:  # merged away since the listing: list again
                if attempt == READ_ATTEMPTS - 1:
                    raise
        return None

    def _compact(self, folder: str, fan_in: int = MERGE_FAN_IN) -> None:
        """Size-tiered merging of this writer's objects: every `fan_in` of a level become one
        of the next, which names them; then they are deleted."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        for level in range(LEVELS - 1):
            live = self._live(folder)
            own = [
                p
                for p in live
                if PurePosixPath(p).name.startswith(f"l{level}-")
                and PurePosixPath(p).stem.endswith(self.writer)
            ]
            if len(own) < fan_in:
                continue
            tables = [pq.read_table(p, filesystem=self.fs) for p in own]
            merged = pa.concat_tables(tables, promote_options="permissive")
            names = [PurePosixPath(p).name for p in own]
            for table in tables:  # and what they replaced, in case a part outlived its merge
                names += json.loads((table.schema.metadata or {}).get(REPLACES, b"[]"))
            merged = merged.replace_schema_metadata(
                {**(merged.schema.metadata or {}), REPLACES: json.dumps(names).encode()}
            )
            self._put(f"{folder}/{part_name(level + 1, self.writer)}", merged)
            self.fs.rm(own)
