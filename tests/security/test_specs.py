"""Spec authors are trusted the way Airflow trusts DAG authors, but what a spec says must stay
data: its text reaches generated code (`feature_repo/<model>.py`, which `feast apply` imports)
only as literals, and names that become identifiers or comments are column names."""

from __future__ import annotations

import shutil

import pytest

from maestro.config import get_settings
from maestro.data import features, sources
from maestro.spec import SpecError, get_spec
from tests.support import PROJECT

pytestmark = pytest.mark.slow


def test_hostile_text_in_a_spec_stays_text_through_feast_apply(use_specs, tmp_path, monkeypatch):
    """The owner that ran `id` as root once, and a plain O'Brien that broke the file."""
    marker = tmp_path / "pwned"
    hostile = f'ml" + str(__import__("os").system("id > {marker}")) + "\'\n# """ \'\'\' \\'
    settings = use_specs(
        {
            "demo": {
                "owner": hostile,
                "description": 'O\'Brien\'s "model"\n"""',
                "source": {"rows": 500},
            },
            "adult_income": {"owner": "O'Brien"},
        }
    )
    repo = tmp_path / "feature_repo"
    repo.mkdir()
    shutil.copy(PROJECT / "feature_repo" / "feature_store.yaml", repo)
    monkeypatch.setenv("MAESTRO_FEATURE_REPO", str(repo))
    get_settings.cache_clear()
    settings = get_settings()
    for model in ("demo", "adult_income"):
        features.write_definitions(get_spec(model, settings), settings)
        compile((repo / f"{model}.py").read_text(), f"{model}.py", "exec")  # still Python

    spec = get_spec("demo", settings)
    snapshot = sources.load_snapshot(sources.ingest(spec, settings, None).to_dict(), settings)
    start = snapshot["event_timestamp"].min()
    end = snapshot["event_timestamp"].max()
    features.apply_and_materialize(snapshot, spec, settings, start, end)
    assert not marker.exists(), "text from the spec ran as code"
    view = features.feature_store(settings).get_feature_view(spec.feature_view)
    assert view.tags["owner"] == hostile


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("features.0.name", lambda r: r["features"][0].update(name='age"); os.system("id")  #')),
        ("entity.key", lambda r: r["entity"].update(key="id\nimport os")),
        ("timestamp.column", lambda r: r["timestamp"].update(column='ts"; import os; "')),
        ("target.name", lambda r: r["target"].update(name="churned'")),
    ],
)
def test_names_that_reach_generated_code_must_be_column_names(use_specs, field, change):
    import yaml

    settings = use_specs({})
    path = settings.specs_dir / "demo.yaml"
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as error:
        get_spec("demo", settings)
    assert f"{field}: " in str(error.value) and "is not a column name" in str(error.value)
    assert str(path) in str(error.value)  # the file named is the one read
