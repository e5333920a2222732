"""The Kubernetes target: manifests of a model's serving stack, the deployer that applies
them from inside the cluster (the deployer pod the `deploy_<model>` DAG starts), and the task
pod template of Airflow's KubernetesExecutor, for platforms that run their tasks as pods.

Per model: a ConfigMap holding the serving plan (mounted into the pods, which re-read it
without a restart), a Deployment of the model server with probes, resources and a
zero-downtime rolling update, a Service, and a HorizontalPodAutoscaler (CPU 70%, 1 to 3
replicas by default). Traffic between versions is the plan's business, so rolling,
blue-green and canary are the same strategies as on the local target, applied through the
ConfigMap against the Service.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from maestro.serving.plan import Plan, parse_plan
from maestro.vocabulary import LOG_DRAIN_SECONDS, SERVER_STOP_SECONDS
from maestro.waiting import wait_for

PORT = 8000
# B104: the server listens on every interface of its pod, where only the Service reaches it
ALL_INTERFACES = "0.0.0.0"  # nosec B104
PLAN_DIR = "/etc/maestro/plan"
PLAN_KEY = "plan.json"


@dataclass(frozen=True)
class ServingOptions:
    namespace: str = "maestro"
    image: str = "maestro-ml:latest"
    min_replicas: int = 1
    max_replicas: int = 3
    cpu_target: int = 70
    requests: tuple[str, str] = ("250m", "512Mi")  # cpu, memory
    limits: tuple[str, str] = ("1", "1Gi")
    env_secret: str = "maestro-serving"  # MLflow URI, bearer token: never in a manifest
    drain_seconds: float = LOG_DRAIN_SECONDS  # the prediction log's, at a pod's stop


def name_of(model: str) -> str:
    return f"maestro-serving-{model.replace('_', '-')}"


def cpu_count(quantity: str) -> int:
    """Whole CPUs in a Kubernetes CPU quantity ("2", "1500m", "0.5"), rounded up."""
    try:
        cores = int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
    except ValueError:
        raise ValueError(f"CPU limit {quantity!r} is not a Kubernetes CPU quantity") from None
    return max(1, math.ceil(cores))


def grace_seconds(options: ServingOptions) -> int:
    """A pod's termination grace period: requests in flight finish, the prediction log
    drains (what it cannot write by then is spilled to the pod's disk), and 10 s to spare."""
    return math.ceil(SERVER_STOP_SECONDS + options.drain_seconds + 10)


def render(model: str, plan: Plan, options: ServingOptions = ServingOptions()) -> list[dict]:
    """ConfigMap, Deployment, Service and HPA of `model`, as Kubernetes API objects."""
    name = name_of(model)
    labels = {
        "app.kubernetes.io/name": "maestro-serving",
        "app.kubernetes.io/instance": name,
        "maestro.ml/model": model,
    }
    meta = {"name": name, "namespace": options.namespace, "labels": labels}
    selector = {"app.kubernetes.io/instance": name}
    probe = {
        "httpGet": {"path": "/health", "port": PORT},
        "periodSeconds": 10,
        "failureThreshold": 3,
    }
    ready = {"httpGet": {"path": "/ready", "port": PORT}, "periodSeconds": 5, "failureThreshold": 2}
    container = {
        "name": "server",
        "image": options.image,
        "command": ["maestro", "serve", model, "--host", ALL_INTERFACES, "--port", str(PORT)],
        "ports": [{"name": "http", "containerPort": PORT}],
        "env": [
            {"name": "MAESTRO_SERVING_PLAN", "value": f"{PLAN_DIR}/{PLAN_KEY}"},
            # the node's CPU count is not the container's: one server process per CPU of the
            # limit, each scoring its batches on one thread
            {"name": "MAESTRO_SERVING_WORKERS", "value": str(cpu_count(options.limits[0]))},
            {"name": "MAESTRO_SERVING_THREADS", "value": "1"},
            # set with the termination grace period below: the pod is never killed mid-drain
            {"name": "MAESTRO_PREDICTION_LOG_DRAIN_SECONDS", "value": f"{options.drain_seconds:g}"},
        ],
        "envFrom": [{"secretRef": {"name": options.env_secret, "optional": True}}],
        "livenessProbe": {**probe, "initialDelaySeconds": 10},
        "readinessProbe": ready,
        "startupProbe": {
            "httpGet": {"path": "/ready", "port": PORT},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "resources": {
            "requests": {"cpu": options.requests[0], "memory": options.requests[1]},
            "limits": {"cpu": options.limits[0], "memory": options.limits[1]},
        },
        "volumeMounts": [{"name": "plan", "mountPath": PLAN_DIR, "readOnly": True}],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {**meta, "name": f"{name}-plan"},
            "data": {
                PLAN_KEY: json.dumps(
                    Plan({model: plan.models[model]}).to_dict(), indent=2, sort_keys=True
                )
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": options.min_replicas,
                "selector": {"matchLabels": selector},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": {
                            "prometheus.io/scrape": "true",
                            "prometheus.io/port": str(PORT),
                        },
                    },
                    "spec": {
                        "containers": [container],
                        "terminationGracePeriodSeconds": grace_seconds(options),
                        "volumes": [{"name": "plan", "configMap": {"name": f"{name}-plan"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "selector": selector,
                "ports": [{"name": "http", "port": 80, "targetPort": PORT}],
            },
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": meta,
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": options.min_replicas,
                "maxReplicas": options.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": options.cpu_target,
                            },
                        },
                    }
                ],
            },
        },
    ]


@dataclass(frozen=True)
class WorkerOptions:
    """A task pod of Airflow's KubernetesExecutor (one pod per task instance)."""

    namespace: str = "maestro"
    image: str = "maestro-ml:latest"
    requests: tuple[str, str] = ("500m", "1Gi")  # cpu, memory
    limits: tuple[str, str] = ("2", "4Gi")
    # Airflow's metadata and MLflow URLs, Airflow's keys: from the secret, never in a manifest
    env_secret: str = "maestro-platform"
    state_claim: str = "maestro-state"  # the shared state volume (snapshots, training sets)


def worker_pod_template(options: WorkerOptions = WorkerOptions()) -> dict:
    """The KubernetesExecutor's `pod_template_file`: the container Airflow runs each task in
    (it must be named `base`; Airflow sets its command), non-root, with the platform's
    settings from a secret and the state volume mounted where `MAESTRO_HOME` points."""
    state = "/opt/maestro/state"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "maestro-task",
            "namespace": options.namespace,
            "labels": {"app.kubernetes.io/name": "maestro-task"},
        },
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 50000, "fsGroup": 0},
            "containers": [
                {
                    "name": "base",
                    "image": options.image,
                    "env": [
                        {"name": "MAESTRO_HOME", "value": state},
                        {"name": "AIRFLOW__CORE__EXECUTOR", "value": "KubernetesExecutor"},
                        # LightGBM and BLAS on the cores the limit gives, not the node's
                        {"name": "OMP_NUM_THREADS", "value": str(cpu_count(options.limits[0]))},
                    ],
                    "envFrom": [{"secretRef": {"name": options.env_secret}}],
                    "resources": {
                        "requests": {"cpu": options.requests[0], "memory": options.requests[1]},
                        "limits": {"cpu": options.limits[0], "memory": options.limits[1]},
                    },
                    "volumeMounts": [{"name": "state", "mountPath": state}],
                }
            ],
            "volumes": [
                {"name": "state", "persistentVolumeClaim": {"claimName": options.state_claim}}
            ],
        },
    }


KINDS = {
    "Pod": "V1Pod",
    "ConfigMap": "V1ConfigMap",
    "Deployment": "V1Deployment",
    "Service": "V1Service",
    "HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler",
}


def as_api_models(objects: list[dict]) -> list:
    """The manifests as `kubernetes` client models: a field of the wrong name or type fails."""
    from kubernetes.client import ApiClient

    client = ApiClient()
    return [client._ApiClient__deserialize(obj, KINDS[obj["kind"]]) for obj in objects]


@dataclass
class ConfigMapPlanStore:
    """The plan of one model's servers, kept in its ConfigMap."""

    model: str
    namespace: str

    def _api(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api()

    def read(self) -> Plan:
        cm = self._api().read_namespaced_config_map(f"{name_of(self.model)}-plan", self.namespace)
        return parse_plan(json.loads(cm.data[PLAN_KEY]), f"configmap/{name_of(self.model)}-plan")

    def write(self, plan: Plan) -> None:
        body = {"data": {PLAN_KEY: json.dumps(plan.to_dict(), indent=2, sort_keys=True)}}
        self._api().patch_namespaced_config_map(f"{name_of(self.model)}-plan", self.namespace, body)


def apply_stack(model: str, plan: Plan, options: ServingOptions, timeout: float = 600) -> None:
    """Server-side apply of the model's stack (the existing plan ConfigMap is kept: the
    strategy moves traffic), then wait until the Deployment's rollout is complete."""
    from kubernetes import client, config, dynamic

    config.load_incluster_config()
    api = dynamic.DynamicClient(client.ApiClient())
    for obj in render(model, plan, options):
        resource = api.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        if obj["kind"] == "ConfigMap" and _exists(resource, obj):
            continue
        resource.server_side_apply(
            body=obj,
            name=obj["metadata"]["name"],
            namespace=options.namespace,
            field_manager="maestro",
            force_conflicts=True,
        )
    apps = client.AppsV1Api()
    wait_for(
        lambda: rolled_out(
            apps.read_namespaced_deployment_status(name_of(model), options.namespace)
        ),
        timeout=timeout,
        interval=2,
        what=f"deployment {name_of(model)} not rolled out",
    )


def rolled_out(deployment: Any) -> bool:
    """Whether a Deployment's status says its rollout is complete (as `kubectl rollout status`)."""
    want = deployment.spec.replicas or 1
    status = deployment.status
    return (
        (status.updated_replicas or 0) >= want
        and (status.available_replicas or 0) >= want
        and (status.observed_generation or 0) >= deployment.metadata.generation
    )


def _exists(resource: Any, obj: dict) -> bool:
    from kubernetes.dynamic.exceptions import NotFoundError

    try:
        resource.get(name=obj["metadata"]["name"], namespace=obj["metadata"]["namespace"])
    except NotFoundError:
        return False
    return True


def service_url(model: str, namespace: str) -> str:
    return f"http://{name_of(model)}.{namespace}.svc.cluster.local"
