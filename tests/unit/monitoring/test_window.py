"""The monitoring job reads a logged window one column at a time: the same verdicts as from
the whole window, and report rows that are whole logged rows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from maestro.data import synthetic
from maestro.logs import predictions
from maestro.logs.parquet import ParquetStore
from maestro.monitoring import drift, report, stages
from maestro.spec import get_spec


def test_a_window_read_column_by_column_is_judged_as_the_whole(settings):
    spec = get_spec("demo", settings)
    log = settings.prediction_log_location
    sink = predictions.ParquetSink(ParquetStore(log, predictions.TABLE))
    day = pd.Timestamp("2026-03-01 08:00", tz="UTC")
    for n in range(5):  # five handovers: the sample draws from several files
        rows = synthetic.generate(6_000, seed=n, drift=1.0)[spec.feature_names]
        size = len(rows)
        meta = {
            "ts": np.full(size, int((day + pd.Timedelta(minutes=n)).timestamp() * 1e6)),
            "request_id": np.array([f"r{n}-{i // 10}" for i in range(size)]),
            "model": np.full(size, "demo"),
            "version": np.full(size, "1"),
            "role": np.full(size, "shadow" if n == 4 else "primary"),
            "latency_ms": np.ones(size),
            "prediction": np.arange(size) + n * size,  # tells each row from the others
        }
        features = {c: rows[c].tolist() for c in rows.columns}
        sink.write("demo", predictions.arrow_table(predictions.Rows(meta, features)))
    end = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    start, meta = stages.current_window(spec, settings, end)
    assert len(meta) == 24_000  # primary rows only
    columns = stages.WindowColumns(spec, settings, (start, end), meta)
    whole = stages._named_features(
        predictions.read_log(log, "demo", start, end, role="primary"), spec
    )
    reference = synthetic.generate(5_000, seed=9)
    numeric = [f.name for f in spec.features if f.type != "category"]
    found = [
        drift.dataset_drift(
            reference, table, numeric, spec.categorical_features, spec.monitoring.drift
        )
        for table in (columns, whole)
    ]
    assert found[0] == found[1] and found[0].drifted_columns  # the demo's drift, found both ways
    sample = columns.sample()
    assert len(sample) == min(report.SAMPLE_ROWS, 24_000)
    rows = whole.set_index("prediction").loc[sample["prediction"], spec.feature_names]
    pd.testing.assert_frame_equal(
        sample[spec.feature_names].reset_index(drop=True), rows.reset_index(drop=True)
    )
