"""SQL lives behind the warehouse and the stores that own a table: a checked list, so a query written anywhere else
(a flow, the models, the training loop) fails here by file and line."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The modules that may talk SQL to DuckDB, and the tables each owns.
OWNERS = {
    "atft/warehouse.py": "raw_quotes, listed_info, rejected_rows, ingest_log, synthetic_oracle: the warehouse itself",
    "atft/features/store.py": "the feature tables and feature_builds: reads and the swap of a build",
    "atft/features/build.py": "the feature build: what it reads from raw_quotes and stages into the store",
    "atft/features/panel.py": "the adjusted price panel the features are computed from (raw_quotes, listed_info)",
    "atft/scoring.py": "predictions",
    "atft/monitoring.py": "performance (and its reads of predictions)",
}


def sql_calls(path: Path) -> list[int]:
    """Lines of ``path`` that call ``.execute(...)`` or ``.sql(...)`` on anything."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute) and node.func.attr in {"execute", "sql"}]  # fmt: skip


def test_only_the_owners_of_a_table_write_sql() -> None:
    found = {}
    for package in ("atft", "schemas", "flows"):
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = sql_calls(path)
            if lines:
                found[str(path.relative_to(ROOT))] = lines
    strays = {name: lines for name, lines in found.items() if name not in OWNERS}
    assert not strays, f"SQL outside the warehouse and the stores (file: lines): {strays}"
    assert set(found) == set(OWNERS), f"listed as owners but without SQL: {set(OWNERS) - set(found)}"


def test_the_check_sees_a_query_in_a_flow(tmp_path: Path) -> None:
    planted = tmp_path / "flow.py"
    planted.write_text("def f(wh):\n    return wh.con.execute('SELECT 1').fetchall()\n")
    assert sql_calls(planted) == [2]
