"""Writing files so that a reader never sees half of one: write beside, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any


def atomic_write(
    path: Path, write: Callable[[Path], object], *, keep_existing: bool = False
) -> bool:
    """Call `write(tmp)` on a temporary file in `path`'s folder (mode 600), then move it to
    `path` in one step. With `keep_existing`, a file already at `path` wins (of two processes
    racing to create it, exactly one succeeds) and False is returned. Folders are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if not keep_existing:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # fails if path exists: never replaces
            return True
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str, *, keep_existing: bool = False) -> bool:
    return atomic_write(path, lambda tmp: tmp.write_text(text), keep_existing=keep_existing)


def open_private(path: Path) -> Any:
    """`path` opened for appending, created readable by its owner only (a log may hold what
    a component prints of its configuration)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)  # an older file made readable by all before
    return os.fdopen(fd, "a")


def import_file(name: str, path: Path) -> ModuleType:
    """The Python file at `path`, imported as module `name` (a DAG file, a Feast definition)."""
    import importlib.util

    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"{path}: not a Python file that can be imported")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
