"""Platform operations: the CLI, local services, Airflow's environment and REST clients."""
