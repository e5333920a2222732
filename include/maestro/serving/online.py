"""Requests that carry only entity keys, completed from Feast's online store."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from maestro.config import Settings
from maestro.data.features import OnlineFeatures
from maestro.serving.records import RequestError
from maestro.spec import ModelSpec


class OnlineLookup:
    """Each model's feature-service lookup, made at its first entity request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._by_model: dict[str, OnlineFeatures] = {}

    async def complete(self, spec: ModelSpec, records: list[Any]) -> list[Any]:
        """A request that carries only entity keys (`{"customer_id": 17}`, or a list of them),
        completed through the spec's feature service (the log holds the values used). Other
        requests pass unchanged."""
        key = spec.entity.key
        if key in spec.feature_names or not all(
            type(r) is dict and r.keys() == {key} for r in records
        ):
            return records
        kind = int if spec.entity.type == "int" else str
        keys = [r[key] for r in records]
        for i, value in enumerate(keys):
            if type(value) is not kind:
                raise RequestError(
                    422, f"record {i}: field {key!r} must be {kind.__name__}, not {value!r}", key
                )
        if spec.name not in self._by_model:
            self._by_model[spec.name] = await run_in_threadpool(OnlineFeatures, spec, self.settings)
        try:
            rows: list[Any] = await run_in_threadpool(self._by_model[spec.name].rows, keys)
        except LookupError as error:
            raise RequestError(404, str(error), key) from None
        except TimeoutError as error:  # stale: refused (see OnlineFeatures)
            raise RequestError(409, str(error), key) from None
        return rows
