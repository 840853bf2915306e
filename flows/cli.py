"""The command-line end of every flow: one set of options, a run to its final state, and an exit code.

Each flow module declares a :class:`Command` (its own options and how to run it). ``atft <name>`` (``flows.command``)
and ``python -m flows.<name>`` (the older spelling, kept as an alias) both parse the same options: ``--config``,
``--set KEY=VALUE`` and ``--warehouse``, which is ``--set warehouse.path=...``. With any override the config is
resolved once into a frozen file (:func:`atft.config.freeze_config`) and the flow runs on that file, so every task of
the run reads the same settings. Cron and CI read only the exit code, so a run that failed must not exit 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prefect import Flow
from prefect.states import State

from atft.config import ConfigError, freeze_config, parse_overrides

DEFAULT_CONFIG = "deployments/demo.yaml"


@dataclass(frozen=True)
class Command:
    """A flow as a command: ``run(config_path, args)`` returns the exit code; ``add_arguments`` adds its own options."""

    name: str
    summary: str
    example: str
    run: Callable[[str, argparse.Namespace], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda _: None


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command takes."""
    parser.add_argument("--config", metavar="YAML", help=f"pipeline config (default {DEFAULT_CONFIG})")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, its value read as YAML, e.g. --set train.epochs=1 (repeatable)",
    )
    parser.add_argument("--warehouse", metavar="DUCKDB", help="DuckDB file: the same as --set warehouse.path=DUCKDB")


def execute(command: Command, args: argparse.Namespace) -> int:
    """Resolve the config of ``args`` (frozen when anything overrides it) and run ``command``; a bad config or
    override is a clear message and exit code 2, before anything runs."""
    config = args.config or DEFAULT_CONFIG
    try:
        overrides = parse_overrides(args.set) | ({"warehouse.path": args.warehouse} if args.warehouse else {})
        if overrides:
            config = str(freeze_config(config, overrides))
            print(f"config {args.config or DEFAULT_CONFIG} with {overrides} resolved into {config}")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return command.run(config, args)


def alias_main(command: Command, argv: Sequence[str] | None) -> int:
    """``python -m flows.<name> [CONFIG] [options]``: the command's options, the config also as a positional."""
    parser = argparse.ArgumentParser(prog=f"python -m flows.{command.name}", description=command.summary,
                                     epilog=f"example: {command.example}")  # fmt: skip
    parser.add_argument("config_path", nargs="?", metavar="CONFIG", help="pipeline config (or --config)")
    add_common_arguments(parser)
    command.add_arguments(parser)
    args = parser.parse_args(argv)
    args.config = args.config or args.config_path
    return execute(command, args)


def exit_code(state: State) -> int:
    """0 for any completed state (``Completed``, ``Published``, ``GateRejected``, ``Skipped``), 1 for the rest:
    ``Failed``, ``Crashed``, ``Cancelled``, or a run that did not finish."""
    return 0 if state.is_completed() else 1


def run_flow(flow: Flow[..., Any], /, **parameters: Any) -> tuple[State, int]:
    """Run ``flow`` and print ``<state name>: <message>``; returns the final state and its exit code."""
    state = flow(**parameters, return_state=True)
    print(f"{state.name}: {state.message}" if state.message else state.name)
    return state, exit_code(state)
