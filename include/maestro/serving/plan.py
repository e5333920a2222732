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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from maestro.errors import BadInput
from maestro.files import atomic_write_text


class PlanError(BadInput):
    pass


@dataclass(frozen=True)
class Route:
    ref: str
    weight: float = 100.0

    def __post_init__(self) -> None:  # one form, so equal plans have equal digests
        object.__setattr__(self, "ref", str(self.ref))
        object.__setattr__(self, "weight", float(self.weight))


@dataclass(frozen=True)
class ModelPlan:
    routes: tuple[Route, ...]
    shadow: str | None = None

    @property
    def refs(self) -> set[str]:
        return {r.ref for r in self.routes} | ({self.shadow} if self.shadow else set())


@dataclass(frozen=True)
class Plan:
    models: dict[str, ModelPlan] = field(default_factory=dict)

    def digest(self) -> str:
        """A short content hash: a server reports the digest of the plan it applies."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return {"models": {name: asdict(p) for name, p in self.models.items()}}

    def with_model(self, name: str, plan: ModelPlan) -> Plan:
        return Plan({**self.models, name: plan})


def champion_plan() -> ModelPlan:
    return ModelPlan((Route("champion", 100.0),))


def parse_plan(raw: dict, where: str) -> Plan:
    """A plan from its JSON form; PlanError names the file and the field."""
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
        raise PlanError(f"{where}: a plan is an object with a 'models' object")
    models = {}
    for name, body in raw["models"].items():
        at = f"{where}: models.{name}"
        if not isinstance(body, dict) or not isinstance(body.get("routes"), list):
            raise PlanError(f"{at}: needs a list 'routes'")
        unknown = set(body) - {"routes", "shadow"}
        if unknown:
            raise PlanError(f"{at}: unknown field {min(unknown)!r}")
        routes = []
        for i, route in enumerate(body["routes"]):
            if not isinstance(route, dict) or set(route) - {"ref", "weight"} or "ref" not in route:
                raise PlanError(f"{at}.routes[{i}]: a route is {{'ref': ..., 'weight': ...}}")
            weight = route.get("weight", 100.0)
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
                raise PlanError(f"{at}.routes[{i}].weight: must be a number >= 0, got {weight!r}")
            routes.append(Route(str(route["ref"]), float(weight)))
        if not routes or sum(r.weight for r in routes) <= 0:
            raise PlanError(f"{at}.routes: at least one route needs a weight above 0")
        if len({r.ref for r in routes}) != len(routes):
            raise PlanError(f"{at}.routes: a version appears twice")
        shadow = body.get("shadow")
        models[name] = ModelPlan(tuple(routes), str(shadow) if shadow is not None else None)
    return Plan(models)


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
