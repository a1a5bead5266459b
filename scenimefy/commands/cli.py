"""The `scenimefy` command: Scenimefy's workloads, inference and cluster front doors.

One subcommand per workload (the same entry as `python jobs/<name>.py`), plus translate,
select, weights and the cluster commands (submit, jobs).

Each subcommand lives in its own module of scenimefy/commands/; this one only dispatches. Parsing
imports no torch, Ray or MLflow, so `--help` answers at once. User errors (bad config keys,
missing folders, wrong checkpoints, bad options) print one line and exit 2; tracebacks are for bugs.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Callable

from scenimefy.commands import cluster, export, jobs_runner, select, serve, translate, weights
from scenimefy.commands.options import OneLineParser
from scenimefy.config import ConfigError


@dataclass(frozen=True)
class Command:
    help: str
    description: str | None
    configure: Callable[[argparse.ArgumentParser], Any]  # adds the arguments; sets `func`, called with the args
    intermixed: bool = True  # options and positional overrides in any order (not for subcommands or REMAINDER)


def _workload(name: str) -> Command:
    w = jobs_runner.workload(name)
    return Command(w.help, w.command.__doc__, lambda p: jobs_runner.configure(name, p))


def _module(module: Any, intermixed: bool = True) -> Command:
    return Command(module.HELP, module.__doc__, module.add_arguments, intermixed)


COMMANDS: dict[str, Command] = {
    **{name: _workload(name) for name in jobs_runner.WORKLOADS},
    "select": _module(select),
    "translate": _module(translate),
    "export": _module(export),
    "serve": _module(serve),
    "weights": _module(weights, intermixed=False),
    "submit": Command(cluster.SUBMIT_HELP, cluster.__doc__, cluster.add_submit_arguments, intermixed=False),
    "jobs": Command(cluster.JOBS_HELP, cluster.JOBS_DESCRIPTION, cluster.add_jobs_arguments, intermixed=False),
}


def register(subparsers: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    """Add command `name` to another parser's subcommands, with the same arguments as `scenimefy <name>`."""
    c = COMMANDS[name]
    p = subparsers.add_parser(
        name, help=c.help, description=c.description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    c.configure(p)
    return p


def build_parser(name: str) -> argparse.ArgumentParser:
    """The parser of `scenimefy <name>`; for a workload, the one `jobs/<name>.py` builds (under another prog)."""
    if name in jobs_runner.WORKLOADS:
        return jobs_runner.build_parser(name, prog=f"scenimefy {name}")
    c = COMMANDS[name]
    p = OneLineParser(
        prog=f"scenimefy {name}", description=c.description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    c.configure(p)
    return p


def _overview() -> argparse.ArgumentParser:
    """`scenimefy --help`: the list of subcommands."""
    p = OneLineParser(prog="scenimefy", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, c in COMMANDS.items():
        sub.add_parser(name, help=c.help, add_help=False)
    p.epilog = "`scenimefy COMMAND --help` shows a command's options."
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    name = argv[0] if argv else ""
    prog = f"scenimefy {name}" if name in COMMANDS else "scenimefy"
    try:
        if name not in COMMANDS:
            overview = _overview()
            overview.parse_args(argv)  # --help exits here; an unknown command is a usage error
            overview.print_help(sys.stderr)
            return 2
        if name in jobs_runner.WORKLOADS:  # the entry of `python jobs/<name>.py`, under this prog
            return jobs_runner.main(name, argv[1:], prog=prog)
        c = COMMANDS[name]
        parser = build_parser(name)
        args = parser.parse_intermixed_args(argv[1:]) if c.intermixed else parser.parse_args(argv[1:])
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
