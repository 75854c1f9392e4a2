"""Every command's --help is readable by a new user: a description, examples that parse,
choices shown, each default said once and never as "None"."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

import pytest

from ganomaly.cli import build_parser, main
from ganomaly.config import RunConfig


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


COMMANDS = sorted(commands())


def help_text(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def examples(text: str) -> list[str]:
    """The example command lines under "examples:" (the lines after it that start with two
    spaces)."""
    assert "\nexamples:\n" in text
    block = text.split("\nexamples:\n", 1)[1].splitlines()
    return [line.strip() for line in block if line.startswith("  ")]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_a_description_examples_and_no_none_default(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_text(command, capsys)
    description = commands()[command].description
    assert description and len(description.split()) >= 8
    assert " ".join(description.split()[:6]) in " ".join(text.split())
    lines = examples(text)
    assert 2 <= len(lines) <= 4
    assert sum(line.startswith(f"ganomaly {command} ") for line in lines) >= 2
    assert "(default: None)" not in text and "default: None" not in text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_example_parses(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    for line in examples(help_text(command, capsys)):
        argv = shlex.split(line, comments=True)
        if argv[0] == "ganomaly":
            args = build_parser().parse_args(argv[1:])
            assert args.command == command, line


@pytest.mark.parametrize("command", COMMANDS)
def test_each_option_says_its_default_at_most_once(command: str) -> None:
    for action in commands()[command]._actions:
        text = (action.help or "").lower().replace("%(default)s", "the value")
        assert text.count("default") <= 1, (command, action.option_strings, action.help)


def test_train_shows_every_choice_and_what_flags_mean(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(help_text("train", capsys).split())
    with_choices = [f for f in dataclasses.fields(RunConfig) if f.metadata.get("choices")]
    assert {"model", "interpolation", "score_metric", "bn_mode"} <= {f.name for f in with_choices}
    for field in with_choices:
        flag = "--" + field.name.replace("_", "-")
        assert f"{flag} {{{','.join(field.metadata['choices'])}}}" in text, flag
    assert "re-initialise the discriminator's weights when its loss falls below this" in text
    assert "examples: ganomaly train --data-dir" in text


def test_evaluate_takes_the_runtime_flags_of_the_other_commands() -> None:
    args = build_parser().parse_args(
        ["evaluate", "RUN", "--no-progress", "--device", "cuda:1", "--threads", "3"]
    )
    assert (args.progress, args.device, args.threads) == (False, "cuda:1", 3)
    defaults = build_parser().parse_args(["evaluate", "RUN"])
    assert defaults.device == "cpu" and not hasattr(defaults, "threads")
