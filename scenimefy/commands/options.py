"""What every command's parser shares: the `--config` option, options that stand for config keys,
and usage errors as one line.

Nothing here imports torch, Ray or MLflow: `--help` must stay fast.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

DEFAULT_CONFIG = "paper"  # every command that takes --config; the demo builds its own settings instead


class UsageError(ValueError):
    """A command line argparse rejects (unknown option, missing argument), printed as one line."""


class OneLineParser(argparse.ArgumentParser):
    """Usage errors raise UsageError instead of printing the usage text and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


class SetsConfig(argparse.Action):
    """An option that is a shorthand for config overrides, e.g. `--space F` for `tune.space=F`.

    `keys(value)` gives the `section.key=value` items; they are collected in `args.option_overrides`
    and applied after the positional overrides, so the option wins.
    """

    def __init__(self, option_strings: list[str], dest: str, keys: Callable[[Any], list[str]], **kwargs: Any):
        self.keys = keys
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        setattr(namespace, self.dest, values)
        namespace.option_overrides = [*getattr(namespace, "option_overrides", []), *self.keys(values)]


def add_config_option(p: argparse.ArgumentParser, what: str = "") -> None:
    """`--config PRESET|FILE` with the one default every command shares."""
    from scenimefy.config import preset_names  # yaml and the package's preset files only

    p.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        metavar="PRESET|FILE",
        help=f"preset ({', '.join(preset_names())}) or a YAML file{what} (default: %(default)s)",
    )


def add_set_option(p: argparse.ArgumentParser, section: str, example: str) -> None:
    """`--set section.key=value`, repeatable: config overrides for the commands whose arguments are options."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar=f"{section}.key=value",
        help=f"config override (repeatable), e.g. --set {example} (default: none)",
    )


def add_overrides(p: argparse.ArgumentParser, example: str, metavar: str = "section.key=value") -> None:
    """Positional `section.key=value` config overrides."""
    p.add_argument("overrides", nargs="*", metavar=metavar, help=f"config overrides, applied in order, e.g. {example}")


def add_workload_options(p: argparse.ArgumentParser, example: str, *, config: bool = True) -> None:
    """The options every workload takes (see `scenimefy.commands.jobs_runner`)."""
    if config:
        add_config_option(p, " (for `scenimefy submit`: a file inside the working dir)")
    add_overrides(p, example)
    p.add_argument(
        "--allow-autoscale",
        action="store_true",
        help="skip the check that the Ray cluster has the GPUs a run.use_gpu=true run needs (GPU nodes join on demand)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the plan, then exit")


def add_verbose_option(p: argparse.ArgumentParser) -> None:
    """`--verbose`: Ray's and the libraries' own output on the terminal, instead of the run's log file."""
    p.add_argument(
        "--verbose",
        action="store_true",
        help="print Ray's and the libraries' own output too (default: they go to the run's logs/run.log)",
    )
