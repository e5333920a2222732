"""The Vault secrets backend the README configures (`ops/secrets/vault.env`) is what Airflow
builds from that configuration, ahead of the environment."""

from __future__ import annotations

from tests.support import PROJECT


def environment(path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_the_documented_vault_configuration_loads_as_airflows_secrets_backend(monkeypatch):
    from airflow.providers.hashicorp.secrets.vault import VaultBackend
    from airflow.sdk.configuration import clear_secrets_backends_cache, ensure_secrets_loaded
    from airflow.secrets.environment_variables import EnvironmentVariablesBackend

    for name, value in environment(PROJECT / "ops" / "secrets" / "vault.env").items():
        monkeypatch.setenv(name, value)
    clear_secrets_backends_cache()
    try:
        backends = ensure_secrets_loaded(
            default_backends=["airflow.secrets.environment_variables.EnvironmentVariablesBackend"]
        )
    finally:
        monkeypatch.undo()
        clear_secrets_backends_cache()
    vault, env = backends
    assert isinstance(vault, VaultBackend) and isinstance(env, EnvironmentVariablesBackend)
    assert vault.connections_path == ["connections"] and vault.variables_path == ["variables"]
    assert vault.config_path is None  # Airflow's own configuration stays out of Vault
    client = vault.vault_client
    assert (client.url, client.auth_type, client.kubernetes_role) == (
        "https://vault.example.internal:8200",
        "kubernetes",
        "maestro",
    )
    assert (client.mount_point, client.kv_engine_version) == ("airflow", 2)
