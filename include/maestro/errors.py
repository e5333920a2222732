"""Errors about what users give the platform (specs, data), as opposed to failures of it.

Bad input is deterministic: retrying cannot fix it, so DAG tasks fail at once on a `BadInput`
instead of spending their retries, and its message is the one line a user needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class BadInput(ValueError):
    """A spec, a source file or its data cannot be used; the message names which and why."""


class DataError(BadInput):
    """Source data that cannot be used; the message names the file or column and the problem."""


@contextmanager
def fail_fast() -> Iterator[None]:
    """In an Airflow task: turn `BadInput` into a failure without retries."""
    try:
        yield
    except BadInput as error:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(error)) from error
