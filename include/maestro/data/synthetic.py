"""The demo's own data: a deterministic, seeded customer-churn table.

Knobs for later stages: `drift` shifts the feature distributions as time goes on, `bias`
makes the label depend on the protected attribute `group`, `noise` flips labels at random in
the history a run trains on (a worse model): the newest fifth, which holds a run's test rows,
keeps its true labels, so the worse model is measured against the truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REGIONS = ["north", "south", "east", "west"]
PLANS = ["basic", "plus", "premium"]
GROUPS = ["a", "b"]


def generate(
    rows: int, seed: int = 7, drift: float = 0.0, bias: float = 0.0, noise: float = 0.0
) -> pd.DataFrame:
    """One row per customer observation, evenly spread over 2025, in time order."""
    progress = np.linspace(0.0, 1.0, rows)  # 0 at the first row, 1 at the last
    stamps = pd.date_range("2025-01-01", "2026-01-01", periods=rows, tz="UTC").floor("s")
    return _customers(np.random.default_rng(seed), drift * progress, stamps, bias, noise, progress)


def traffic(rows: int, drift: float, seed: int = 11) -> pd.DataFrame:
    """Customers as they arrive after the history: every row shifted by the whole `drift`
    (0: the history's own distribution), stamped from now on, one a second."""
    stamps = pd.date_range(pd.Timestamp.now(tz="UTC").floor("s"), periods=rows, freq="s")
    shift = np.full(rows, float(drift))
    return _customers(np.random.default_rng(seed), shift, stamps, 0.0, 0.0, np.ones(rows))


def _customers(
    rng: np.random.Generator,
    shift: np.ndarray,
    stamps: pd.DatetimeIndex,
    bias: float,
    noise: float,
    progress: np.ndarray,
) -> pd.DataFrame:
    rows = len(shift)
    age = np.clip(rng.normal(42 + 8 * shift, 12, rows), 18, 90).round().astype(int)
    income = np.round(rng.lognormal(10.6 + 0.4 * shift, 0.45, rows), 2)
    tenure = rng.integers(0, 121, rows)
    products = rng.integers(1, 5, rows)
    balance = np.round(np.maximum(rng.normal(2_000 + 3_000 * shift, 1_500, rows), 0), 2)
    support_calls = rng.poisson(1.5 + 2 * shift, rows)
    region = rng.choice(REGIONS, rows, p=[0.3, 0.3, 0.2, 0.2])
    plan = rng.choice(PLANS, rows, p=[0.5, 0.3, 0.2])
    group = rng.choice(GROUPS, rows, p=[0.6, 0.4])

    logit = (
        -1.2
        + 0.45 * support_calls
        - 0.018 * tenure
        - 0.35 * (products - 1)
        - 0.5 * (income > 50_000)
        + 0.6 * (plan == "basic")
        - 0.4 * (plan == "premium")
        + 0.3 * (region == "south")
        + 0.01 * (age - 42)
    )
    logit = logit + 3.0 * bias * (group == "b")
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    flip = (rng.random(rows) < noise / 2) & (progress < 0.8)
    churned = np.where(flip, 1 - churned, churned)
    return pd.DataFrame(
        {
            "customer_id": np.arange(1, rows + 1),
            "event_timestamp": stamps,
            "age": age,
            "income": income,
            "tenure_months": tenure,
            "num_products": products,
            "balance": balance,
            "support_calls": support_calls,
            "region": region,
            "plan": plan,
            "group": group,
            "churned": churned,
        }
    )
