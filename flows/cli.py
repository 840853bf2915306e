"""The command-line end of every flow: one set of options, a run to its final state, and an exit code.

Each flow module declares a :class:`Command` (its own options and how to run it). ``atft <name>`` (``flows.command``)
and ``python -m flows.<name>`` (the older spelling, kept as an alias) both parse the same options: ``--config``,
``--set KEY=VALUE`` and ``--warehouse``, which is ``--set warehouse.path=...``. The config and its overrides are
resolved once into a :class:`~flows.references.RunConfig` (a frozen file and its settings) and the flow runs on it,
so every task of the run reads the same settings. Cron and CI read only the exit code, so a run that failed must not
exit 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from prefect import Flow
from prefect.states import State
from pydantic import BaseModel, ValidationError

from atft.config import ConfigError, parse_overrides
from flows.references import RunConfig, resolve

DEFAULT_CONFIG = "deployments/demo.yaml"
R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class Command:
    """A flow as a command: ``run(config, args)`` returns the exit code; ``add_arguments`` adds its own options."""

    name: str
    summary: str
    example: str
    run: Callable[[RunConfig, argparse.Namespace], int]
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
    """Resolve the config of ``args`` once and run ``command`` on it; a bad config or override is a clear message and
    exit code 2, before anything runs."""
    given = args.config or DEFAULT_CONFIG
    try:
        overrides = parse_overrides(args.set) | ({"warehouse.path": args.warehouse} if args.warehouse else {})
        config = resolve(given, overrides=overrides)
        if overrides:
            print(f"config {given} with {overrides} resolved into {config.path}")
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


def reference(kind: type[R]) -> Callable[[str], R]:
    """An argparse ``type`` reading a reference (say a :class:`~flows.references.StagedModel`) from its JSON; a bad
    one is a usage error, exit code 2, with pydantic's list of what is wrong."""

    def read(text: str) -> R:
        try:
            return kind.model_validate_json(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__} (JSON): {exc}") from None

    return read


def exit_code(state: State) -> int:
    """0 for any completed state (``Completed``, ``Published``, ``GateRejected``, ``Skipped``), 1 for the rest:
    ``Failed``, ``Crashed``, ``Cancelled``, or a run that did not finish."""
    return 0 if state.is_completed() else 1


def run_flow(flow: Flow[..., Any], /, **parameters: Any) -> tuple[State, int]:
    """Run ``flow`` and print ``<state name>: <message>``; returns the final state and its exit code."""
    state = flow(**parameters, return_state=True)
    print(f"{state.name}: {state.message}" if state.message else state.name)
    return state, exit_code(state)
