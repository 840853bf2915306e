"""Day-over-day jumps: a spike taken back the next day is quarantined as a bad tick, a one-way jump is flagged."""

from __future__ import annotations

from pathlib import Path

import pytest

from atft.config import (
    CANONICAL_QUOTE_COLUMNS,
    FilesSourceConfig,
    JumpsConfig,
    PipelineConfig,
    UniverseConfig,
    ValidationConfig,
    WarehouseConfig,
)
from atft.ingest import IngestAborted, ingest
from atft.warehouse import Warehouse

DAYS = ["2018-01-02", "2018-01-03", "2018-01-04", "2018-01-05", "2018-01-08", "2018-01-09"]
STEADY = [10.0, 10.1, 10.2, 10.1, 10.3, 10.2]


def bars(code: str, closes: list[float], volumes: list[float] | None = None, factors: list[float] | None = None):
    volumes = volumes or [1000.0] * len(closes)
    factors = factors or [1.0] * len(closes)
    return [
        f"{code},{day},{c},{c * 1.01:.4f},{c * 0.99:.4f},{c},{v},,{f}"
        for day, c, v, f in zip(DAYS, closes, volumes, factors, strict=False)
    ]


def write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([",".join(CANONICAL_QUOTE_COLUMNS), *rows]) + "\n")
    return path


def config(tmp_path: Path, quotes: Path, **jumps) -> PipelineConfig:
    return PipelineConfig(
        name="ticks",
        calendar="XNYS",
        source=FilesSourceConfig(kind="files", path=quotes, columns={c: c for c in CANONICAL_QUOTE_COLUMNS}),
        universe=UniverseConfig(code_pattern=r"^[A-Z]{1,5}$"),
        warehouse=WarehouseConfig(path=tmp_path / "w.duckdb"),
        validation=ValidationConfig(max_rejected_fraction=0.5, jumps=JumpsConfig(**jumps)),
    )


def stored(tmp_path: Path, sql: str) -> list[tuple]:
    with Warehouse(tmp_path / "w.duckdb", read_only=True) as wh:
        return wh.con.execute(sql).fetchall()


def test_a_100x_spike_that_reverts_is_quarantined_as_a_bad_tick(tmp_path):
    # Before the jump rule this row loaded silently: High and Low were raised with it, so no row check failed.
    spiked = STEADY.copy()
    spiked[2] = 1020.0
    quotes = write(tmp_path / "q.csv", bars("AAA", spiked) + bars("BBB", STEADY))
    report = ingest(config(tmp_path, quotes), on_progress=lambda _: None)
    assert report.rejected_by_rule == {"bad_tick": 1}
    (reason,) = stored(tmp_path, "SELECT reason FROM rejected_rows WHERE Code = 'AAA' AND Date = '2018-01-04'")[0]
    assert reason == (
        "suspected bad tick: Open 10.1 -> 1020 -> 10.1: a 101x move taken back the next day, beyond Open bound 0.4; "
        "Close 10.1 -> 1020 -> 10.1: a 101x move taken back the next day, beyond Close bound 0.4"
    )
    assert stored(tmp_path, "SELECT count(*) FROM raw_quotes WHERE Code = 'AAA'") == [(5,)]
    # The move back to the old level is the end of the bad tick, not news.
    assert report.jumps == []


def test_a_one_way_jump_is_kept_and_flagged(tmp_path):
    jumped = [10.0, 10.1, 16.0, 16.2, 16.1, 16.3]
    quotes = write(tmp_path / "q.csv", bars("AAA", jumped))
    report = ingest(config(tmp_path, quotes), on_progress=lambda _: None)
    assert report.rows_rejected == 0
    assert [(j["Code"], str(j["Date"]), j["column"], j["move"]) for j in report.jumps] == [
        ("AAA", "2018-01-04", "Close", "1.58x"),
        ("AAA", "2018-01-04", "Open", "1.58x"),
    ]
    assert "health     2 one-way jump(s) flagged and kept" in report.summary()
    assert stored(tmp_path, "SELECT count(*) FROM raw_quotes") == [(6,)]


def test_a_move_on_a_day_with_an_adjustment_factor_is_a_split_not_a_jump(tmp_path):
    split = [10.0, 10.1, 5.1, 10.2, 10.1, 10.3]
    factors = [1.0, 1.0, 0.5, 2.0, 1.0, 1.0]  # a split, then a reverse split: each move is explained by its factor
    quotes = write(tmp_path / "q.csv", bars("AAA", split, factors=factors))
    report = ingest(config(tmp_path, quotes), on_progress=lambda _: None)
    assert report.rows_rejected == 0 and report.jumps == []


def test_volume_has_its_own_bound_and_is_off_by_default(tmp_path):
    volumes = [1000.0, 1100.0, 900_000.0, 1050.0, 990.0, 1000.0]
    quotes = write(tmp_path / "q.csv", bars("AAA", STEADY, volumes=volumes))
    assert ingest(config(tmp_path, quotes), on_progress=lambda _: None).rows_rejected == 0
    (tmp_path / "w.duckdb").unlink()
    report = ingest(config(tmp_path, quotes, volume=100.0), on_progress=lambda _: None)
    assert report.rejected_by_rule == {"bad_tick": 1}
    assert "Volume 1100 -> 900000 -> 1050: a 818x move" in report.rejected_examples[0]


def test_a_spike_on_the_last_day_is_withdrawn_when_the_next_day_shows_it_reverted(tmp_path):
    spiked = STEADY.copy()
    spiked[4] = 40.0
    first = write(tmp_path / "q.csv", bars("AAA", spiked[:5]))
    settings = config(tmp_path, first)
    report = ingest(settings, on_progress=lambda _: None)
    assert report.rows_rejected == 0 and [j["column"] for j in report.jumps] == ["Close", "Open"]
    write(tmp_path / "q.csv", bars("AAA", spiked))  # the next day arrives; the incremental run re-reads the last
    again = ingest(settings, on_progress=lambda _: None)
    assert again.rejected_by_rule == {"bad_tick": 1} and again.bad_ticks_withdrawn == 1
    assert stored(tmp_path, "SELECT max(Close) FROM raw_quotes") == [(10.2,)]


def test_a_bad_tick_aborts_under_the_abort_policy_and_writes_nothing(tmp_path):
    spiked = STEADY.copy()
    spiked[2] = 1020.0
    quotes = write(tmp_path / "q.csv", bars("AAA", spiked))
    settings = config(tmp_path, quotes).model_copy(
        update={"validation": ValidationConfig(row_anomalies="abort", max_rejected_fraction=0.5)}
    )
    with pytest.raises(IngestAborted, match=r"1 suspected bad tick\(s\) and validation.row_anomalies is 'abort'"):
        ingest(settings, on_progress=lambda _: None)
    assert stored(tmp_path, "SELECT count(*) FROM raw_quotes") == [(0,)]
