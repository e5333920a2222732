"""The one way to wait for something: poll a check until it gives an answer or time runs out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T],
    *,
    timeout: float,
    interval: float,
    what: str,
    error: Callable[[str], Exception] = TimeoutError,
) -> T:
    """Call `check` every `interval` seconds until it returns something truthy, and return that.
    `check` may raise to give up early. After `timeout` seconds: `error("<what> after Ns")`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() >= deadline:
            raise error(f"{what} after {timeout:.0f}s")
        time.sleep(interval)
