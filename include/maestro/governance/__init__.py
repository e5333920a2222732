"""Governance: evaluation gates, explanations, the serving check, model cards, decisions, and
the registry's aliases (promotion and rollback)."""
