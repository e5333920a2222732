"""Training: model families, Optuna tuning, and the training DAG's stages (ingest to register)."""
