"""The alert rules and their promtool unit tests (`ops/prometheus/`): every rule is shown to
fire on a series made to trip it and to stay quiet on a healthy one beside it."""

from __future__ import annotations

import subprocess

import yaml

from tests.support import PROJECT

RULES = PROJECT / "ops" / "prometheus" / "rules" / "maestro.rules.yml"
TESTS = PROJECT / "ops" / "prometheus" / "tests" / "maestro.rules.test.yml"
WHO = ("model", "instance")  # the label that tells the firing series from the quiet one


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"]]


def test_the_rules_are_valid_and_their_promtool_tests_pass(prometheus_tools):
    check = subprocess.run(
        [prometheus_tools["promtool"], "check", "rules", RULES], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run(
        [prometheus_tools["promtool"], "test", "rules", TESTS.name],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_prometheus_and_alertmanager_configurations_load(prometheus_tools, tmp_path):
    import shutil

    config = tmp_path / "prometheus"
    shutil.copytree(PROJECT / "ops" / "prometheus", config)
    token = tmp_path / "serving_token"  # compose mounts the secret at /run/secrets/
    token.write_text("a-token")
    text = (config / "prometheus.yml").read_text()
    assert "credentials_file: /run/secrets/serving_token" in text
    (config / "prometheus.yml").write_text(text.replace("/run/secrets/serving_token", str(token)))
    prometheus = subprocess.run(
        [prometheus_tools["promtool"], "check", "config", "prometheus.yml"],
        cwd=config,
        capture_output=True,
        text=True,
    )
    assert prometheus.returncode == 0, prometheus.stdout + prometheus.stderr
    alertmanager = subprocess.run(
        [prometheus_tools["amtool"], "check-config", PROJECT / "ops/alertmanager/alertmanager.yml"],
        capture_output=True,
        text=True,
    )
    assert alertmanager.returncode == 0, alertmanager.stdout + alertmanager.stderr


def test_every_rule_is_seen_firing_and_quiet():
    names = alert_names()
    assert len(names) >= 15 and len(set(names)) == len(names)
    fired: set[str] = set()
    for case in yaml.safe_load(TESTS.read_text())["tests"]:
        sources = {
            label.split("=")[1].strip('"')
            for series in case["input_series"]
            for label in series["series"].split("{")[1].rstrip("}").split(",")
            if label.split("=")[0] in WHO
        }
        for check in case["alert_rule_test"]:
            firing = {
                value
                for alert in check["exp_alerts"]
                for key, value in alert["exp_labels"].items()
                if key in WHO
            }
            if firing:
                assert sources - firing, f"{check['alertname']}: no series stays quiet beside it"
                fired.add(check["alertname"])
    assert sorted(set(names) - fired) == [], "rules never shown firing"
