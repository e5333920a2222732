"""The Kubernetes target without a cluster: rendered manifests checked against the Kubernetes
API models, and the deployer pod the DAG would start."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import yaml

from maestro.deploy.kubernetes import (
    ServingOptions,
    as_api_models,
    cpu_count,
    name_of,
    render,
)
from maestro.serving.plan import ModelPlan, Plan, Route, parse_plan
from tests.support import DAGS

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
    env = {e.name: e.value for e in server.env}  # one process per CPU of the limit
    assert env["MAESTRO_SERVING_WORKERS"] == "1" and env["MAESTRO_SERVING_THREADS"] == "1"
    # the pod is given the time to finish its requests and drain its prediction log, and more
    drain = float(env["MAESTRO_PREDICTION_LOG_DRAIN_SECONDS"])
    assert pod.termination_grace_period_seconds >= 5 + drain + 10

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


def test_the_kubernetes_executor_builds_task_pods_from_the_template(tmp_path):
    """`maestro pod-template` is a template Airflow's own pod generator loads and turns into a
    task's pod: its `base` container runs the task's command, non-root, with the settings from
    the secret and the state volume mounted."""
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

    from maestro.platform.cli import main

    path = tmp_path / "pod_template.yaml"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["pod-template", "--namespace", "ml", "--image", "reg.example/m:2"]) == 0
    path.write_text(out.getvalue())
    (template,) = as_api_models([yaml.safe_load(path.read_text())])
    base = PodGenerator.deserialize_model_file(str(path))
    assert base.to_dict() == template.to_dict()
    command = ["airflow", "tasks", "run", "train_demo", "tune", "manual__1", "--map-index", "1"]
    pod = PodGenerator.construct_pod(
        dag_id="train_demo",
        task_id="tune",
        pod_id="train-demo-tune",
        try_number=1,
        kube_image="reg.example/m:2",
        date=None,
        args=command,
        pod_override_object=None,
        base_worker_pod=base,
        namespace="ml",
        scheduler_job_id="1",
        run_id="manual__1",
        map_index=1,
    )
    (container,) = pod.spec.containers
    assert container.name == "base" and container.args == command
    assert container.image == "reg.example/m:2" and pod.metadata.namespace == "ml"
    assert pod.metadata.labels["task_id"] == "tune" and pod.metadata.labels["map_index"] == "1"
    assert pod.spec.security_context.run_as_non_root
    env = {e.name: e.value for e in container.env}
    assert env["MAESTRO_HOME"] == container.volume_mounts[0].mount_path
    assert env["OMP_NUM_THREADS"] == "2"  # the limit's cores, not the node's
    assert container.env_from[0].secret_ref.name == "maestro-platform"
    assert not any(k.endswith(("PASSWORD", "SECRET", "KEY", "CONN")) for k in env)


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
