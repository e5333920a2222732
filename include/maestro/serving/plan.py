"""Serving plans: which versions of each model serve, and with what share of traffic.

One JSON file per server (a ConfigMap on Kubernetes), written atomically by deployments and
watched by the server, which applies a new plan without a restart:

    {"models": {"demo": {"routes": [{"ref": "3", "weight": 90}, {"ref": "4", "weight": 10}],
                         "shadow": "5"}}}

A route's `ref` is a version number or an alias (`champion`); weights are relative. A route
with weight 0 stays loaded without traffic (blue-green keeps the old version that way, for an
instant switch back). `shadow` scores every request too, after the answer, and is logged only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import ErrorDetails

from maestro.errors import BadInput
from maestro.files import atomic_write_text

STRICT = ConfigDict(extra="forbid")
MAX_WEIGHT = 1e6  # weights are relative: this is plenty, and no sum of them overflows


class PlanError(BadInput):
    pass


@dataclass(frozen=True, config=STRICT)
class Route:
    ref: str
    weight: float = 100.0

    @model_validator(mode="before")
    @classmethod
    def _a_route(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and ("ref" not in raw or set(raw) - {"ref", "weight"}):
            raise ValueError("a route is {'ref': ..., 'weight': ...}")
        return raw

    @field_validator("ref", mode="before")
    @classmethod
    def _one_form(cls, ref: Any) -> str:  # "3" and 3 are one version: equal plans, equal digests
        return str(ref)

    @field_validator("weight", mode="before")
    @classmethod
    def _weight(cls, weight: Any) -> float:
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not 0 <= weight <= MAX_WEIGHT  # NaN fails both comparisons
        ):
            raise ValueError(f"must be a number from 0 to {MAX_WEIGHT:g}, got {weight!r}")
        return float(weight)


@dataclass(frozen=True, config=STRICT)
class ModelPlan:
    routes: tuple[Route, ...]
    shadow: str | None = None

    @field_validator("routes")
    @classmethod
    def _routes(cls, routes: tuple[Route, ...]) -> tuple[Route, ...]:
        if not routes or sum(r.weight for r in routes) <= 0:
            raise ValueError("at least one route needs a weight above 0")
        if len({r.ref for r in routes}) != len(routes):
            raise ValueError("a version appears twice")
        return routes

    @field_validator("shadow", mode="before")
    @classmethod
    def _shadow(cls, shadow: Any) -> str | None:
        return None if shadow is None else str(shadow)

    @property
    def refs(self) -> set[str]:
        return {r.ref for r in self.routes} | ({self.shadow} if self.shadow else set())


@dataclass(frozen=True, config=STRICT)
class Plan:
    models: dict[str, ModelPlan] = field(default_factory=dict)

    def digest(self) -> str:
        """A short content hash: a server reports the digest of the plan it applies."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return {"models": {name: asdict(p) for name, p in self.models.items()}}

    def with_model(self, name: str, plan: ModelPlan) -> Plan:
        return Plan({**self.models, name: plan})


PLAN = TypeAdapter(Plan)


def champion_plan() -> ModelPlan:
    return ModelPlan((Route("champion", 100.0),))


def parse_plan(raw: Any, where: str) -> Plan:
    """A plan from its JSON form; PlanError names the file and the field."""
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
        raise PlanError(f"{where}: a plan is an object with a 'models' object")
    try:
        return PLAN.validate_python(raw)
    except ValidationError as error:
        raise PlanError(f"{where}: " + "; ".join(_describe(e) for e in error.errors())) from None


def _describe(error: ErrorDetails) -> str:
    """One validation error as `models.demo.routes[0].weight: message`."""
    loc = list(error["loc"])
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"{_path(loc[:-1])}: unknown field {loc[-1]!r}"
    return f"{_path(loc)}: {error['msg'].removeprefix('Value error, ')}"


def _path(loc: list) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def read_plan(path: Path) -> Plan:
    """The plan in `path`; an empty plan when the file does not exist yet."""
    if not path.exists():
        return Plan()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise PlanError(f"{path}: not a readable JSON plan: {error}") from None
    return parse_plan(raw, str(path))


def write_plan(path: Path, plan: Plan) -> None:
    """Replace the plan file in one step (a reader never sees half a plan)."""
    atomic_write_text(path, json.dumps(plan.to_dict(), indent=2, sort_keys=True))
