"""The `ganomaly` command. Flags are generated from the config dataclasses, so `--w-con` is the
field `w_con` in config.yaml and in `GANomalyDetector(w_con=...)`.

    ganomaly train --data mnist --normal-class 1 --epochs 15 --seed 42 --out runs/demo
    ganomaly evaluate runs/demo [--batch-size 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ganomaly import __version__
from ganomaly.config import ConfigError, RunConfig, from_dict, read_settings
from ganomaly.process import one_line_warnings, set_openmp_defaults

EXIT_ERROR = 2
# Settings `evaluate` takes to score a saved model on other data.
EVALUATE_DATA_FLAGS = ("data", "data_dir", "category", "source", "protocol", "target_class")
# Modules that add a sub-command: each has `register(subparsers)` setting `handler=`.
COMMAND_MODULES: tuple[str, ...] = (
    "ganomaly.benchmark",
    "ganomaly.predict",
    "ganomaly.export",
    "ganomaly.server",
)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, cls: type = RunConfig) -> None:
    """One flag per config field; defaults are SUPPRESSed so we know what the user gave."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group("settings (also valid as keys in --config YAML)")
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        help_text = f"{field.metadata.get('help', '')} (default: {field.default})"
        kwargs: dict[str, Any] = {
            "dest": field.name,
            "default": argparse.SUPPRESS,
            "help": help_text,
        }
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = base if base in (int, float) else str
            kwargs["metavar"] = field.name.upper()
            if field.metadata.get("choices"):
                kwargs["choices"] = field.metadata["choices"]
        group.add_argument(_flag(field.name), **kwargs)


def add_class_shorthands(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--normal-class K / --anomaly-class K: shorthands for --protocol ... --target-class K."""
    for protocol in ("normal-class", "anomaly-class"):
        parser.add_argument(
            f"--{protocol}", type=int, metavar="K", help=f"= --protocol {protocol} --target-class K"
        )


def build_config(args: argparse.Namespace) -> RunConfig:
    """defaults < --config YAML < flags; shorthands --normal-class / --anomaly-class."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise ConfigError(f"--config {args.config}: no such file")
        values.update(read_settings(path, f"--config {args.config}"))
    names = {f.name for f in dataclasses.fields(RunConfig)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    for shorthand, protocol in (
        ("normal_class", "normal-class"),
        ("anomaly_class", "anomaly-class"),
    ):
        value = getattr(args, shorthand, None)
        if value is not None:
            values["protocol"], values["target_class"] = protocol, value
    config = from_dict(RunConfig, values)
    config.validate()
    return config


def cmd_train(args: argparse.Namespace) -> int:
    from ganomaly.run import read_config, say, summary_line, train_run

    if args.resume:
        config = read_config(Path(args.resume))
        config.out = args.resume
        metrics = train_run(config, resume=True)
    else:
        config = build_config(args)
        metrics = train_run(config)
    if not metrics:  # a torchrun rank other than 0: rank 0 reports (ganomaly/distributed.py)
        return 0
    assert config.out is not None
    say(f"wrote {config.out}/report.html")
    print(summary_line(metrics, Path(config.out)))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ganomaly.run import evaluate_run, summary_line

    if args.batch_size < 1:
        raise ConfigError("--batch-size must be >= 1")
    run_dir = Path(args.run_dir)
    data = {
        name: getattr(args, name) for name in EVALUATE_DATA_FLAGS if getattr(args, name) is not None
    }
    if args.normal_class is not None or args.anomaly_class is not None:
        data["protocol"] = "normal-class" if args.normal_class is not None else "anomaly-class"
        data["target_class"] = (
            args.normal_class if args.normal_class is not None else args.anomaly_class
        )
    metrics = evaluate_run(
        run_dir, batch_size=args.batch_size, data=data, out=args.out, overwrite=args.overwrite
    )
    print(summary_line(metrics, Path(args.out) if data else run_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ganomaly",
        description="GANomaly anomaly detection: train on normal images, score, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"ganomaly {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train on a dataset's normal images, then evaluate")
    train.add_argument("--config", metavar="FILE.yaml", help="settings file (flags override it)")
    add_class_shorthands(train)
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoints"
    )
    add_config_flags(train)
    train.set_defaults(handler=cmd_train)

    evaluate = sub.add_parser(
        "evaluate", help="re-score a run's test split; rewrite metrics and figures"
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="scoring batch size (scores do not depend on it)",
    )
    other = evaluate.add_argument_group(
        "score the saved model on another labelled set (report goes to --out)"
    )
    for name in EVALUATE_DATA_FLAGS:
        other.add_argument(
            _flag(name), metavar=name.upper(), type=int if name == "target_class" else str
        )
    add_class_shorthands(other)
    other.add_argument(
        "--out", metavar="DIR", help="where the new report goes (the run directory is left alone)"
    )
    other.add_argument("--overwrite", action="store_true", help="allow --out to hold files already")
    evaluate.set_defaults(handler=cmd_evaluate)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def known_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's input, reported in one line (anything else is a bug)."""
    from ganomaly.data import DataError
    from ganomaly.images import ImageError
    from ganomaly.modelfile import ModelFileError
    from ganomaly.training import TrainingError

    return (ConfigError, DataError, ImageError, ModelFileError, TrainingError, OSError)


def entry_point() -> None:
    """The `ganomaly` console script (and `python -m ganomaly`): the process owner's settings
    first — the OpenMP wait defaults must be in the environment before torch is imported,
    which is why no module that builds the parser imports torch — then `main`."""
    set_openmp_defaults()
    if importlib.util.find_spec("torch") is None:
        print(
            "ganomaly: error: this command needs PyTorch (pip install torch); to score with an "
            "exported ONNX model without it, use ganomaly-onnx",
            file=sys.stderr,
        )
        sys.exit(EXIT_ERROR)
    sys.exit(main())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 2 bad input, 130 interrupted).

    Callable in-process (tests, notebooks): it changes no process-wide setting, and prints
    warnings as one `ganomaly: warning:` line only while it runs.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    with one_line_warnings():
        return _run(handler, args)


def _run(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from ganomaly.training import TrainingInterrupted

    try:
        return handler(args)
    except known_errors() as error:
        print(f"ganomaly: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except TrainingInterrupted as stop:
        print(
            f"ganomaly: {stop}; checkpoint saved, continue with: ganomaly train --resume RUN_DIR",
            file=sys.stderr,
        )
        return 130
    except KeyboardInterrupt:
        print("ganomaly: interrupted", file=sys.stderr)
        return 130
