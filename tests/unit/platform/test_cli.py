"""`maestro`'s argument handling: help generated from the parser, choices from the shared
vocabulary, and bad input answered with one line and exit status 2."""

from __future__ import annotations

import pytest

from maestro.platform.cli import main, parser
from maestro.vocabulary import STRATEGIES, TARGETS

COMMANDS = [
    "demo",
    "train",
    "up",
    "serve",
    "deploy",
    "validate",
    "features",
    "show",
    "approve",
    "reject",
    "promote",
    "rollback",
    "env",
]


def test_help_lists_every_command_with_its_one_line(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert f"\n    {command} " in text, command


def test_every_command_parses_to_its_handler_with_documented_defaults():
    deploy = parser().parse_args(["deploy", "demo"])
    assert (deploy.strategy, deploy.target, deploy.version) == ("canary", "local", "")
    train = parser().parse_args(["train", "adult_income", "--trials", "20", "--workers", "2"])
    assert (train.model, train.trials, train.workers) == ("adult_income", 20, 2)
    approve = parser().parse_args(["approve", "demo", "3", "--by", "admin"])
    assert approve.func.__name__ == "cmd_decide" and approve.version == "3"
    for command in COMMANDS:
        args = {"deploy": ["m"], "train": ["m"], "show": ["m"], "rollback": ["m"]}.get(command, [])
        args = ["m", "1"] if command in ("approve", "reject", "promote") else args
        args = ["generate"] if command == "features" else args
        assert callable(parser().parse_args([command, *args]).func)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["deploy", "demo", "--strategy", "big-bang"], "invalid choice: 'big-bang'"),
        (["deploy", "demo", "--target", "mars"], "invalid choice: 'mars'"),
        (["train", "demo", "--trials", "many"], "invalid int value: 'many'"),
        (["approve", "demo"], "the following arguments are required: version"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert message in capsys.readouterr().err


def test_the_choices_are_the_platforms_vocabulary(capsys):
    with pytest.raises(SystemExit):
        main(["deploy", "demo", "--strategy", "x"])
    err = capsys.readouterr().err
    assert all(f"'{s}'" in err for s in STRATEGIES)
    with pytest.raises(SystemExit):
        main(["deploy", "demo", "--target", "x"])
    err = capsys.readouterr().err
    assert all(f"'{t}'" in err for t in TARGETS)


def test_a_decision_by_someone_not_an_approver_is_refused_in_one_line(settings, capsys):
    assert main(["approve", "demo", "1", "--by", "mallory"]) == 2
    out = capsys.readouterr().out
    assert out == "error: 'mallory' may not decide on demo: approvers are ['admin']\n"


def test_an_unknown_model_names_the_spec_that_is_missing(settings, capsys):
    assert main(["train", "no_such_model"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("error: ") and "no_such_model" in out


def test_trigger_conf_pairs_read_json_values_and_refuse_a_missing_value():
    from maestro.platform.trigger import parse_conf

    assert parse_conf(["trials=20", "workers=2", "note=retrain me", "flag=true"]) == {
        "trials": 20,
        "workers": 2,
        "note": "retrain me",
        "flag": True,
    }
    with pytest.raises(ValueError, match="--conf 'trials': expected KEY=VALUE"):
        parse_conf(["trials"])
