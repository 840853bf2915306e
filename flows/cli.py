"""The command-line end of every flow: run it to its final state, say which, and turn that into an exit code.

Cron and CI read only the exit code, so a run that failed must not exit 0.
"""

from __future__ import annotations

from typing import Any

from prefect import Flow
from prefect.states import State


def exit_code(state: State) -> int:
    """0 for any completed state (``Completed``, ``Published``, ``GateRejected``, ``Skipped``), 1 for the rest:
    ``Failed``, ``Crashed``, ``Cancelled``, or a run that did not finish."""
    return 0 if state.is_completed() else 1


def run_flow(flow: Flow[..., Any], /, **parameters: Any) -> tuple[State, int]:
    """Run ``flow`` and print ``<state name>: <message>``; returns the final state and its exit code."""
    state = flow(**parameters, return_state=True)
    print(f"{state.name}: {state.message}" if state.message else state.name)
    return state, exit_code(state)
