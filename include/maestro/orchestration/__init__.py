"""Orchestration: the only package outside `dags/` and `plugins/` that imports Airflow at module
level (operators, triggers, assets)."""
