"""The Kubernetes target's task: the platform's own image runs `maestro deploy` in a pod.

A thin operator that builds Airflow's KubernetesPodOperator only when it runs: importing the
cncf.kubernetes provider (and the kubernetes client) costs about 0.7 s, which the scheduler
would otherwise pay on every parse of the DAG file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator


class DeployerPodOperator(BaseOperator):
    template_fields: Sequence[str] = ("version", "strategy")

    def __init__(
        self,
        *,
        model: str,
        version: str,
        strategy: str,
        namespace: str | None = None,
        image: str | None = None,
        service_account: str = "maestro-deployer",
        env_secret: str = "maestro-serving",
        config_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model, self.version, self.strategy = model, version, strategy
        self.namespace, self.image = namespace, image
        self.service_account, self.env_secret = service_account, env_secret
        self.config_file = config_file

    def pod_operator(self) -> Any:
        """The KubernetesPodOperator this task runs; the namespace and image default to the
        settings of the worker that runs it (`MAESTRO_K8S_NAMESPACE`, `MAESTRO_SERVING_IMAGE`)."""
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
        from kubernetes.client import models as k8s

        from maestro.config import get_settings

        settings = get_settings()

        return KubernetesPodOperator(
            task_id=self.task_id,
            name=f"deploy-{self.model.replace('_', '-')}",
            namespace=self.namespace or settings.k8s_namespace,
            image=self.image or settings.serving_image,
            cmds=["maestro", "deploy", self.model],
            arguments=[
                "--version",
                self.version,
                "--strategy",
                self.strategy,
                "--target",
                "kubernetes",
            ],
            service_account_name=self.service_account,
            env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=self.env_secret))],
            config_file=self.config_file,
            get_logs=True,
            on_finish_action="delete_succeeded_pod",
            startup_timeout_seconds=300,
        )

    def execute(self, context: Any) -> Any:
        return self.pod_operator().execute(context)
