"""A LightGBM booster's trees compiled to native code (lleaves, on LLVM) for batches.

The booster walks its trees as data: about 5 ms per 1,000-row Adult batch on one thread. The
same trees compiled take about 1 ms. Compiling 200 trees takes a few seconds, so it is done
once per model and CPU. It runs in a child process (LLVM would hold the GIL or, if it failed
badly, take the server down), after the first batch asks for it, not at load: a server that
only ever scores single rows never pays for it. Until it is ready, and if it fails or
disagrees with the booster, batches are scored by the booster.

The compiled code is kept in a cache folder under a key made of the model's text, lleaves'
version and the host CPU, so server restarts and sibling workers load it in milliseconds; a
file lock keeps two workers from compiling the same forest at once.

    python -m maestro.serving.forest MODEL_TXT OUTPUT   # what the child process runs
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from maestro.files import atomic_write, atomic_write_text

log = logging.getLogger("maestro.serving")
PARALLEL_ROWS = 10_000  # compiled, smaller batches are faster on one thread than on a pool


class CompiledForest:
    """The booster's forest compiled in the background; `predict` is None until it is ready."""

    def __init__(self, booster: Any, cache: Path, threads: int, label: str) -> None:
        self._booster, self._cache, self._threads, self._label = booster, cache, threads, label
        self._model = None
        self._lock = threading.Lock()
        self.state = "not compiled"  # then "compiling", "ready" or "failed: <why>"

    def predict(self, matrix: np.ndarray) -> np.ndarray | None:
        """Predictions of the compiled forest, or None while it is not ready: the first call
        starts compiling, checked on this matrix once it is built."""
        model = self._model
        if model is not None:
            return model.predict(
                matrix, n_jobs=self._threads if len(matrix) >= PARALLEL_ROWS else 1
            )
        with self._lock:
            if self.state == "not compiled":
                self.state = "compiling"
                sample = matrix.copy()
                threading.Thread(target=self._build, args=(sample,), daemon=True).start()
        return None

    def _build(self, sample: np.ndarray) -> None:
        started = time.monotonic()
        try:
            model = compiled(self._booster, self._cache)
            expected = self._booster.predict(sample, num_threads=1)
            if not np.allclose(model.predict(sample, n_jobs=1), expected, rtol=1e-9, atol=1e-12):
                raise ValueError("it disagrees with the booster on the first batch")
        except Exception as error:  # noqa: BLE001 - the booster keeps scoring; say why
            self.state = f"failed: {type(error).__name__}: {error}"
            log.warning(
                "%s: batches stay on the booster: compiled forest %s", self._label, self.state
            )
            return
        self._model, self.state = model, "ready"
        log.info("%s: compiled forest ready in %.1f s", self._label, time.monotonic() - started)


def compiled(booster: Any, cache: Path) -> Any:
    """The booster's forest as a compiled lleaves model: from the cache, or compiled into it by
    a child process (one at a time per forest, across processes)."""
    import lleaves
    import llvmlite.binding as llvm

    text = booster.model_to_string()  # the iterations Booster.predict uses (best, else all)
    host = f"{llvm.get_host_cpu_name()} {llvm.get_host_cpu_features().flatten()}"
    version = metadata.version("lleaves")
    key = hashlib.sha256(f"{version}\n{host}\n{text}".encode()).hexdigest()[:32]
    cache.mkdir(parents=True, exist_ok=True)
    model_file, binary = cache / f"{key}.txt", cache / f"{key}.o"
    if not binary.exists():
        with open(cache / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a sibling worker may be compiling it
            if not binary.exists():
                atomic_write_text(model_file, text)
                child = [
                    sys.executable,
                    "-m",
                    "maestro.serving.forest",
                    str(model_file),
                    str(binary),
                ]
                done = subprocess.run(child, capture_output=True, text=True, timeout=900)
                if done.returncode != 0:
                    raise RuntimeError(f"compiling failed: {done.stderr.strip()[-500:]}")
    model = lleaves.Model(model_file=str(model_file))
    model.compile(cache=str(binary))
    return model


def compile_to(model_file: str, output: str) -> None:
    """Compile a LightGBM model file to `output`, which appears whole or not at all."""
    import lleaves

    def write(tmp: Path) -> None:
        tmp.unlink()  # lleaves loads a cache file that exists instead of compiling into it
        lleaves.Model(model_file=model_file).compile(cache=str(tmp))

    atomic_write(Path(output), write)


if __name__ == "__main__":
    compile_to(*sys.argv[1:3])
