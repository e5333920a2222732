"""Batch scores: each partition (a day) of a model's scores, with the model version on every
row, as `<model>/date=<day>/predictions.parquet` under the output folder or the table
`batch_predictions` in a PostgreSQL database."""

from __future__ import annotations

import pandas as pd

from maestro.config import Settings
from maestro.logs.store import Store, open_store

TABLE = "batch_predictions"


def scores_store(settings: Settings) -> Store:
    location = settings.batch_output or str(settings.home / "batch_scores")
    return open_store(location, TABLE, model_folder="{model}", whole_file="predictions.parquet")


def write_scores(settings: Settings, model: str, day: str, scores: pd.DataFrame) -> str:
    """Replace the partition's scores in one step: a re-run never leaves two copies."""
    return scores_store(settings).replace(model, day, scores)


def read_scores(settings: Settings, model: str) -> pd.DataFrame:
    """Every batch score of `model` (entity key, event timestamp, prediction, version)."""
    return scores_store(settings).read(model)
