"""Governance: evaluation gates, explanations, the serving check, model cards and decisions
(the registry's aliases they move are `maestro.registry`)."""
