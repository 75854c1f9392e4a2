"""The README documents every setting and every command the CLI has."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ganomaly.cli import build_parser
from ganomaly.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_has_a_row_in_the_flag_table():
    for field in dataclasses.fields(RunConfig):
        flag = "--" + field.name.replace("_", "-")
        assert f"| `{flag}" in README, flag


def test_every_command_is_documented():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands is not None
    for name in commands:
        assert f"ganomaly {name} " in README, name


def test_ci_runs_the_readme_test_command():
    assert "$ make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
