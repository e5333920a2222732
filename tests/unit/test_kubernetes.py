"""The Kubernetes target without a cluster: rendered manifests checked against the Kubernetes
API models, and the deployer pod the DAG would start."""

from __future__ import annotations

import json

import pytest

from maestro.deploy.kubernetes import (
    ServingOptions,
    as_api_models,
    cpu_count,
    name_of,
    render,
)
from maestro.serving.plan import ModelPlan, Plan, Route, parse_plan
from tests.conftest import DAGS

PLAN = Plan({"adult_income": ModelPlan((Route("7", 90), Route("8", 10)))})


def test_manifests_are_valid_kubernetes_objects_with_probes_resources_and_autoscaling():
    configmap, deployment, service, hpa = as_api_models(render("adult_income", PLAN))
    name = name_of("adult_income")
    assert name == "maestro-serving-adult-income"

    plan = parse_plan(json.loads(configmap.data["plan.json"]), "configmap")
    assert plan.digest() == PLAN.digest()

    pod = deployment.spec.template.spec
    server = pod.containers[0]
    assert server.command[:3] == ["maestro", "serve", "adult_income"]
    assert server.liveness_probe.http_get.path == "/health"
    assert server.readiness_probe.http_get.path == "/ready"
    assert server.resources.requests == {"cpu": "250m", "memory": "512Mi"}
    assert server.resources.limits == {"cpu": "1", "memory": "1Gi"}
    assert server.volume_mounts[0].mount_path == "/etc/maestro/plan"
    assert pod.volumes[0].config_map.name == f"{name}-plan"
    assert deployment.spec.strategy.rolling_update.max_unavailable == 0
    assert (
        deployment.spec.selector.match_labels.items()
        <= deployment.spec.template.metadata.labels.items()
    )
    assert server.env_from[0].secret_ref.name == "maestro-serving"
    assert not any("TOKEN" in (e.name or "") or "URI" in (e.name or "") for e in server.env)
    assert {e.name: e.value for e in server.env}["MAESTRO_SERVING_THREADS"] == "1"

    assert service.spec.selector == deployment.spec.selector.match_labels
    assert service.spec.ports[0].target_port == server.ports[0].container_port

    assert hpa.spec.scale_target_ref.name == name
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 3)
    assert hpa.spec.metrics[0].resource.target.average_utilization == 70


def test_options_change_replicas_image_and_namespace():
    objects = render(
        "demo",
        Plan({"demo": ModelPlan((Route("3"),))}),
        ServingOptions(namespace="ml", image="registry.example/maestro:1.2", max_replicas=6),
    )
    assert {o["metadata"]["namespace"] for o in objects} == {"ml"}
    deployment, hpa = objects[1], objects[3]
    assert (
        deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.example/maestro:1.2"
    )
    assert hpa["spec"]["maxReplicas"] == 6


def test_a_misspelt_field_fails_against_the_api_models():
    broken = render("demo", Plan({"demo": ModelPlan((Route("3"),))}))
    broken[3]["spec"]["minReplicas"] = None
    broken[3]["spec"]["scaleTargetRef"] = {"kind": "Deployment"}  # no name
    with pytest.raises(ValueError, match="name"):
        as_api_models(broken)


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: not-a-secret}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def test_the_deploy_dag_builds_the_deployer_pod_without_a_cluster(tmp_path, airflow_db):
    """The operator reads a kubeconfig to label the pod; this one points nowhere and nothing
    connects to it."""
    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "kubeconfig").write_text(KUBECONFIG)

    dag = DagBag(dag_folder=str(DAGS / "deploy.py")).get_dag("deploy_demo")
    task = dag.get_task("deploy_kubernetes")
    task.version, task.strategy = "4", "blue-green"  # as rendered from choose_version
    task.config_file = str(tmp_path / "kubeconfig")
    pod = task.pod_operator().build_pod_request_obj()
    container = pod.spec.containers[0]
    assert container.command == ["maestro", "deploy", "demo"]
    assert container.args == [
        "--version",
        "4",
        "--strategy",
        "blue-green",
        "--target",
        "kubernetes",
    ]
    assert container.image == "maestro-ml:latest"
    assert pod.spec.service_account_name == "maestro-deployer"
    assert container.env_from[0].secret_ref.name == "maestro-serving"
    assert pod.metadata.namespace == "maestro"


@pytest.mark.parametrize(("quantity", "cpus"), [("1", 1), ("2", 2), ("1500m", 2), ("0.5", 1)])
def test_batch_scoring_threads_follow_the_containers_cpu_limit(quantity, cpus):
    assert cpu_count(quantity) == cpus


def test_a_cpu_limit_that_is_no_quantity_is_named():
    with pytest.raises(ValueError, match="'two'"):
        cpu_count("two")
