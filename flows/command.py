"""``atft``: one command for the platform. Each subcommand runs a flow to its final state, with the same options
everywhere (``--config``, ``--set KEY=VALUE``, ``--warehouse``; see ``flows.cli``), and exits non-zero when the run
failed. ``atft registry ...`` is the registry's own command (``python -m atft.registry``).

    atft demo --fresh
    atft retrain --config deployments/sp500.yaml --as-of 2018-01-31 --set train.epochs=1
    atft registry --config deployments/demo.yaml list
    atft serve                  # the Prefect server and UI, the work pool, every deployment and a worker
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from atft.registry.__main__ import main as registry_main
from flows import backtest, demo, features, ingest, monitor, replay, retrain, score
from flows.cli import add_common_arguments, execute
from flows.serve import serve

FLOWS = (demo, ingest, features, retrain, backtest, score, monitor, replay)
COMMANDS = {module.COMMAND.name: module.COMMAND for module in FLOWS}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="atft",
        description="Scheduled rolling retrains of a cross-sectional stock ranker: every stage of the pipeline, run "
        "as a Prefect flow with no server needed.",
        epilog="example: atft retrain --config deployments/demo.yaml --as-of 2024-12-27; atft <command> --help",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        sub = commands.add_parser(command.name, help=command.summary, description=command.summary,
                                  epilog=f"example: {command.example}")  # fmt: skip
        add_common_arguments(sub)
        command.add_arguments(sub)
    summary = "the local stack: Prefect server and UI, work pool, gpu limit, deployments, a worker; Ctrl-C stops it"
    serving = commands.add_parser("serve", help=summary, description=summary, epilog="example: atft serve --port 4200")
    serving.add_argument("--host", default="127.0.0.1", help="address of the API and UI (default 127.0.0.1)")
    serving.add_argument("--port", type=int, default=4200, help="port of the API and UI (default 4200)")
    commands.add_parser("registry", add_help=False, help="list, show, verify or roll back published versions "
                        "(atft registry --help)")  # fmt: skip
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["registry"]:
        return registry_main(argv[1:], prog="atft registry")  # its own options and subcommands
    args = parser().parse_args(argv)
    if args.command == "serve":
        return serve(args.host, args.port)
    return execute(COMMANDS[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
