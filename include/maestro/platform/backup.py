"""`maestro backup` and `maestro restore`: one archive of everything needed to recover the
platform, and its return into an empty state.

The archive holds each store as it is configured: an SQLite database copied with SQLite's online
backup (consistent while the platform writes to it), a PostgreSQL database dumped by `pg_dump`
(one consistent snapshot), and folders (artifacts, Optuna journals, serving plans, training sets,
the Evidently workspace; with `--with-logs`, the prediction log, feedback and batch scores).
A manifest lists every file with its SHA-256: a restore checks the whole archive before it
writes anything, so a truncated or tampered archive is refused and nothing is overwritten.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from maestro.config import Settings
from maestro.errors import BadInput

FORMAT = 1
ROOT = "maestro-backup"
MANIFEST = "manifest.json"


class BackupError(BadInput):
    """An archive that cannot be restored, or a state that must not be overwritten."""


@dataclass(frozen=True)
class Store:
    """One thing to back up: a database (`url`) or a folder (`path`)."""

    name: str
    url: str | None = None
    path: Path | None = None


def airflow_database(settings: Settings) -> str:
    default = f"sqlite:///{settings.home / 'airflow' / 'airflow.db'}"
    return os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", default)


def _local(uri: str) -> Path | None:
    return Path(uri.removeprefix("file://")) if uri.startswith(("file://", "/")) else None


def stores(settings: Settings, with_logs: bool) -> list[Store]:
    """What a backup of these settings holds, store by store."""
    found = [
        Store("mlflow", url=settings.backend_store),
        Store("airflow", url=airflow_database(settings)),
        Store("serving", path=settings.plan_path.parent),
        Store("training_sets", path=settings.home / "training_sets"),
        Store("evidently", path=settings.evidently_dir),
    ]
    artifacts = _local(settings.artifact_root)
    if artifacts is not None:  # object storage is backed up where it lives
        found.append(Store("mlflow_artifacts", path=artifacts))
    if settings.optuna_storage:
        found.append(Store("optuna", url=settings.optuna_storage))
    else:
        found.append(Store("optuna", path=settings.home / "optuna"))
    registry = settings.feast_registry or str(settings.feast_dir / "registry.db")
    if "://" in registry:
        found.append(Store("feast", url=registry))
    else:
        found.append(Store("feast", path=Path(registry).parent))
    if with_logs:
        from maestro.logs.labels import labels_store
        from maestro.logs.parquet import ParquetStore
        from maestro.logs.predictions import prediction_store
        from maestro.logs.scores import scores_store

        logs = {
            "prediction_log": prediction_store(settings.prediction_log_location),
            "feedback": labels_store(settings),
            "batch_scores": scores_store(settings),
        }
        # a log in a database is copied with that database, not as files
        found += [
            Store(n, path=log.root) for n, log in logs.items() if isinstance(log, ParquetStore)
        ]
    return found


def _postgres(url: str) -> str:
    """A URL pg_dump and pg_restore understand (no SQLAlchemy driver name)."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith("postgresql") else url


def _sqlite_path(url: str) -> Path:
    return Path(url.split(":///", 1)[1])


def _dump(store: Store, target: Path) -> dict:
    """Copy one store into `target` (a folder); what the manifest says about it."""
    if store.url is not None and store.url.startswith("sqlite"):
        source = _sqlite_path(store.url)
        if not source.exists():
            return {"kind": "absent"}
        target.mkdir(parents=True)
        with sqlite3.connect(source) as src, sqlite3.connect(target / "db.sqlite") as dst:
            src.backup(dst)  # SQLite's online backup: consistent while others write
        return {"kind": "sqlite"}
    if store.url is not None:
        target.mkdir(parents=True)
        done = subprocess.run(
            [
                "pg_dump",
                "--format=custom",
                "--no-owner",
                f"--file={target / 'db.pgdump'}",
                _postgres(store.url),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BackupError(f"backup of {store.name}: pg_dump failed: {done.stderr.strip()}")
        return {"kind": "postgresql"}
    if store.path is None or not store.path.exists():
        return {"kind": "absent"}
    shutil.copytree(
        store.path,
        target,
        ignore=shutil.ignore_patterns("*.pid", ".lock", ".*.tmp", "*.journal.lock"),
    )
    return {"kind": "folder", "source": str(store.path)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def backup(settings: Settings, dest: Path, with_logs: bool = False) -> dict:
    """Write one archive at `dest` (`.tar.gz`); returns its manifest."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="maestro-backup-", dir=dest.parent) as tmp:
        staging = Path(tmp) / ROOT
        staging.mkdir()
        parts = {s.name: _dump(s, staging / s.name) for s in stores(settings, with_logs)}
        files = {
            str(p.relative_to(staging)): {"sha256": _sha256(p), "bytes": p.stat().st_size}
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "format": FORMAT,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "home": str(settings.home),
            "artifact_root": settings.artifact_root,
            "with_logs": with_logs,
            "stores": parts,
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        partial = Path(tmp) / "archive.tar.gz"
        with tarfile.open(partial, "w:gz") as archive:
            archive.add(staging, arcname=ROOT)
        os.replace(partial, dest)
    return manifest


def _verified(archive: Path, into: Path) -> dict:
    """Unpack into `into` and check every file against the manifest; raise on any mismatch."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise BackupError(f"{archive}: not a complete Maestro backup ({error})") from None
    root = into / ROOT
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        raise BackupError(f"{archive}: no readable {MANIFEST}: not a Maestro backup") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{archive}: backup format {manifest.get('format')!r}, expected {FORMAT}")
    present = {
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != MANIFEST
    }
    listed = set(manifest["files"]) - {MANIFEST}
    if present != listed:
        missing, extra = sorted(listed - present), sorted(present - listed)
        raise BackupError(
            f"{archive}: files missing {missing[:5]} or not in the manifest {extra[:5]}: "
            "truncated or tampered; nothing was restored"
        )
    for name in sorted(listed):
        if _sha256(root / name) != manifest["files"][name]["sha256"]:
            raise BackupError(
                f"{archive}: {name} does not match its checksum: tampered or corrupted; "
                "nothing was restored"
            )
    return manifest


def _occupied(store: Store) -> bool:
    if store.url is not None and store.url.startswith("sqlite"):
        path = _sqlite_path(store.url)
        return path.exists() and path.stat().st_size > 0
    if store.url is not None:
        from sqlalchemy import create_engine, inspect

        engine = create_engine(store.url.replace("postgresql://", "postgresql+psycopg2://", 1))
        try:
            return bool(inspect(engine).get_table_names())
        finally:
            engine.dispose()
    return store.path is not None and store.path.exists() and any(store.path.iterdir())


def _load(store: Store, source: Path, kind: str) -> None:
    if kind == "absent":
        return
    if kind == "sqlite":
        if store.url is None or not store.url.startswith("sqlite"):
            raise BackupError(
                f"{store.name}: the backup is SQLite, the target {store.url!r} is not"
            )
        target = _sqlite_path(store.url)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / "db.sqlite", target)
    elif kind == "postgresql":
        if store.url is None or not store.url.startswith("postgresql"):
            raise BackupError(f"{store.name}: the backup is PostgreSQL, the target is not")
        done = subprocess.run(
            [
                "pg_restore",
                "--clean",
                "--if-exists",
                "--no-owner",
                f"--dbname={_postgres(store.url)}",
                str(source / "db.pgdump"),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BackupError(f"restore of {store.name}: pg_restore failed: {done.stderr.strip()}")
    else:
        if store.path is None:
            raise BackupError(f"{store.name}: the backup is a folder, the target is a database")
        if store.path.exists():
            shutil.rmtree(store.path)
        shutil.copytree(source, store.path)


ARTIFACT_COLUMNS = {  # where MLflow keeps absolute artifact locations
    "experiments": ["artifact_location"],
    "runs": ["artifact_uri"],
    "model_versions": ["source", "storage_location"],
    "logged_models": ["artifact_location"],
}


def _move_artifact_uris(settings: Settings, old_root: str) -> None:
    """Point MLflow's records at the restored artifact folder when it moved."""
    new_root = settings.artifact_root
    if old_root == new_root:
        return
    from sqlalchemy import create_engine, inspect, text

    url = settings.backend_store.replace("postgresql://", "postgresql+psycopg2://", 1)
    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.begin() as conn:
            for table, columns in ARTIFACT_COLUMNS.items():
                if table not in tables:
                    continue
                for column in columns:
                    conn.execute(
                        # B608: table and column names are the constants above; values bound
                        text(f"UPDATE {table} SET {column} = replace({column}, :old, :new)"),  # nosec B608
                        {"old": old_root, "new": new_root},
                    )
    finally:
        engine.dispose()


def restore(settings: Settings, archive: Path, force: bool = False) -> dict:
    """Restore `archive` into these settings' stores; refuses stores that hold data unless
    `force`. The archive is verified whole before anything is written."""
    archive = Path(archive)
    if not archive.exists():
        raise BackupError(f"{archive}: no such archive")
    with tempfile.TemporaryDirectory(prefix="maestro-restore-") as tmp:
        manifest = _verified(archive, Path(tmp))
        targets = {s.name: s for s in stores(settings, manifest["with_logs"])}
        unknown = sorted(set(manifest["stores"]) - set(targets))
        if unknown:
            raise BackupError(f"{archive}: stores {unknown} have no place in these settings")
        busy = [
            name
            for name, part in manifest["stores"].items()
            if part["kind"] != "absent" and _occupied(targets[name])
        ]
        if busy and not force:
            raise BackupError(
                f"the target state is not empty ({', '.join(busy)} hold data): restore into an "
                "empty state, or pass --force to replace them"
            )
        root = Path(tmp) / ROOT
        for name, part in manifest["stores"].items():
            _load(targets[name], root / name, part["kind"])
        _move_artifact_uris(settings, manifest["artifact_root"])
    return manifest
