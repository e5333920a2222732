"""The model card's Markdown and HTML, rendered from a card's facts without a registry."""

from __future__ import annotations

import copy
import itertools
import re

from maestro.governance.model_card import cell, summary, to_html, to_markdown

FACTS = {
    "model": "demo",
    "version": "3",
    "family": "lightgbm",
    "intended_use": "Ranks customers by churn risk.",
    "primary_metric": "roc_auc",
    "features": ["age", "region"],
    "metrics": {"roc_auc": 0.81234, "f1": 0.4},
    "champion_metrics": {"roc_auc": 0.8},
    "champion_version": "2",
    "slices": {"group": [{"group": "a", "n": 10, "roc_auc": 0.8}, {"group": "b", "n": 12}]},
    "checks": [
        {"name": "min:roc_auc", "passed": True, "value": 0.81, "limit": ">= 0.65", "detail": ""},
        {
            "name": "fairness:group:demographic_parity_difference",
            "passed": False,
            "value": 0.2,
            "limit": "<= 0.1",
            "detail": "selection rates a|b",
        },
    ],
    "serving": {"loaded": True, "load_seconds": 1.2, "latency_p95_ms": 3.1},
    "importance": [
        {"feature": "age", "importance": 0.3, "method": "mean |SHAP|"},
        {"feature": "region", "importance": 0.1, "method": "mean |SHAP|"},
    ],
    "test_rows": 100,
    "slice_rows": 100,
    "lineage": {"data_version": "abc", "training_window_start": "s", "training_window_end": "e"},
    "verdict": {"status": "failed", "failed": ["fairness:group:demographic_parity_difference"]},
    "approval": None,
}


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_every_table_row_has_as_many_cells_as_its_header():
    lines = to_markdown(FACTS).splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            header = unescaped_pipes(lines[i - 1])
            rows = itertools.takewhile(lambda row: row.startswith("|"), lines[i + 1 :])
            assert all(unescaped_pipes(row) == header for row in rows), lines[i - 1]


def test_a_pipe_in_a_sentence_or_cell_stays_inside_it_in_html():
    html = to_html(to_markdown(FACTS), "demo v3")
    assert "<p>Computed as mean |SHAP|.</p>" in html  # the importance method, once
    assert "<td>selection rates a|b</td>" in html


def test_cells_round_numbers_and_keep_to_one_line():
    assert cell(0.812345) == "0.8123"
    assert cell(float("nan")) == "n/a"
    assert cell("two\nlines | here") == "two lines \\| here"


def test_summary_and_sections_follow_the_verdict_and_the_decision():
    text = to_markdown(FACTS)
    assert text.startswith("# Model card: demo version 3\n\n" + summary(FACTS))
    assert "Not requested: the version failed validation." in text
    assert "Champion compared: version 2, on the same test rows." in text
    passed = copy.deepcopy(FACTS) | {"verdict": {"status": "passed", "failed": []}}
    assert "Not decided yet." in to_markdown(passed)
    decided = passed | {
        "approval": {"decision": "approved", "by": "admin", "at": "t", "via": "cli", "comment": ""}
    }
    assert "| approved | admin | t | cli |  |" in to_markdown(decided)
    assert summary(decided).endswith("Approval: approved by admin at t.")
    assert "fixed random sample" not in text
    sampled = to_markdown(FACTS | {"test_rows": 60_000, "slice_rows": 50_000})
    assert "on a fixed random sample of 50000 of the 60000 test rows" in sampled
    unloaded = passed | {"serving": {"loaded": False, "error": "no module named x"}}
    assert "Not loadable: no module named x" in to_markdown(unloaded)
