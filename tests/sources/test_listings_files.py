"""Sector labels for the files source: a column of the quotes file, or a separate listings file.

Both routes must end in sector features and same-sector graph edges; a bad label fails with its file,
column, row and value; a stock without a label has no sector and nothing fails because of it.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from atft.calendar import TradingCalendar
from atft.config import (
    ConfigError,
    CSZConfig,
    FeaturesConfig,
    FilesSourceConfig,
    GraphConfig,
    PipelineConfig,
    UniverseConfig,
    ValidationConfig,
    WarehouseConfig,
    load_config,
)
from atft.data.arrays import load_arrays
from atft.data.dataset import DayDataset
from atft.features.build import build_features
from atft.ingest import ingest
from atft.sources.base import LISTED_INFO_COLUMNS, SourceError
from atft.sources.files import FilesSource
from atft.warehouse import Warehouse
from schemas.manifest import FeatureManifest

QUOTES = {"ticker": "Code", "date": "Date", "open": "Open", "high": "High", "low": "Low", "close": "Close",
          "volume": "Volume"}  # fmt: skip
SECTORS = {f"S{chr(65 + i)}": ("Tech", "Energy", "Retail")[i // 5] for i in range(15)}
UNLABELLED = ("UA", "UB", "UC")
FILL = {"AdjustmentFactor": 1.0}
START, END = date(2018, 1, 2), date(2018, 10, 31)


def market() -> pd.DataFrame:
    """Random-walk bars of 15 labelled stocks in 3 sectors (a sector factor each) and 3 unlabelled ones."""
    rng = np.random.default_rng(5)
    days = TradingCalendar("XNYS").sessions(START, END)
    factors = {s: rng.normal(0, 0.01, len(days)) for s in ("Tech", "Energy", "Retail", None)}
    frames = []
    for code in [*SECTORS, *UNLABELLED]:
        ret = factors[SECTORS.get(code)] + rng.normal(0, 0.004, len(days))
        close = 50 * np.exp(np.cumsum(ret))
        open_ = close * (1 + rng.normal(0, 0.003, len(days)))
        high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, len(days)))
        low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, len(days)))
        frames.append(
            pd.DataFrame(
                {
                    "ticker": code,
                    "date": days.strftime("%Y-%m-%d"),
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": rng.integers(1_000, 5_000, len(days)),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def pipeline(tmp_path: Path, source: FilesSourceConfig, **settings) -> PipelineConfig:
    return PipelineConfig(
        name="labels-test",
        source=source,
        calendar="XNYS",
        universe=UniverseConfig(code_pattern=r"^[A-Z]{1,5}$"),
        warehouse=WarehouseConfig(path=tmp_path / "w.duckdb"),
        features=FeaturesConfig(cs_z=CSZConfig(min_stocks=5), manifest_dir=tmp_path / "manifests"),
        **settings,
    )


def quotes_with_a_sector_column(tmp_path: Path) -> FilesSourceConfig:
    frame = market().assign(sector=lambda f: f["ticker"].map(SECTORS))  # unlabelled: an empty field
    frame.to_csv(tmp_path / "quotes.csv", index=False)
    columns = {**QUOTES, "sector": "Sector17Code"}
    return FilesSourceConfig(kind="files", path=tmp_path / "quotes.csv", columns=columns, fill=FILL)


def quotes_and_a_listings_file(tmp_path: Path) -> FilesSourceConfig:
    pq.write_table(pa.Table.from_pandas(market(), preserve_index=False), tmp_path / "quotes.parquet")
    # UA has a name but no sector; UB and UC are not listed at all.
    listings = pd.DataFrame({"symbol": [*SECTORS, "UA"], "industry": [*SECTORS.values(), None],
                             "name": [f"{c} Inc." for c in [*SECTORS, "UA"]]})  # fmt: skip
    listings.to_csv(tmp_path / "listings.csv", index=False)
    return FilesSourceConfig(
        kind="files",
        path=tmp_path / "quotes.parquet",
        columns=QUOTES,
        fill=FILL,
        listings={"path": tmp_path / "listings.csv",
                  "columns": {"symbol": "Code", "industry": "Sector17Code", "name": "CompanyName"}},
    )  # fmt: skip


@pytest.fixture(scope="module", params=["quotes-column", "listings-file"])
def built(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    make = quotes_with_a_sector_column if request.param == "quotes-column" else quotes_and_a_listings_file
    config = pipeline(tmp, make(tmp))
    report = ingest(config, on_progress=lambda _: None)
    return config, report, build_features(config, on_progress=lambda _: None)


# -- both routes: sector features and same-sector edges -------------------------------------------------


def test_labels_land_in_listed_info_and_unlabelled_stocks_have_no_sector(built):
    config, report, _ = built
    assert report.rows_rejected == 0
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        rows = wh.con.execute("SELECT Code, Sector17Code, ValidFrom, ValidTo FROM listed_info ORDER BY Code")
        listed = {code: (sector, valid_from, valid_to) for code, sector, valid_from, valid_to in rows.fetchall()}
    assert {c: s for c, (s, _, _) in listed.items() if s is not None} == SECTORS
    assert not {"UB", "UC"} & set(listed)
    assert listed.get("UA", (None,))[0] is None
    # No dates in the files: a label holds from the calendar's first session, with no end.
    assert {(f, t) for _, f, t in listed.values()} == {(date(2000, 1, 4), None)}


def test_sector_features_are_built_and_are_missing_only_for_unlabelled_stocks(built):
    config, _, features = built
    manifest = FeatureManifest.read(features.manifest_path)
    sector_features = [c.name for c in manifest.features if c.group == "sector"]
    assert features.groups.get("sector", 0) > 0 and "sec_ret_5d" in sector_features
    assert "rel_sec_ret_5d" in sector_features and "rel_sec_ret_5d_cs_z" in manifest.feature_names
    with duckdb.connect(str(config.warehouse.path), read_only=True) as con:
        day = con.execute(f"SELECT * FROM {features.table} WHERE Date = DATE '2018-10-31' ORDER BY Code").df()
    labelled = day["Code"].isin(list(SECTORS))
    assert labelled.sum() == 15 and len(day) == 18
    for name in ("sec_ret_5d", "rel_sec_ret_5d", "rel_sec_ret_5d_cs_z", "sec_vol_20"):
        assert day.loc[labelled, name].notna().all(), name
        assert day.loc[~labelled, name].isna().all(), name
    # Stocks of one sector share its mean return.
    tech = day[day["Code"].map(SECTORS) == "Tech"]
    assert np.allclose(tech["sec_ret_5d"], tech["sec_ret_5d"].iloc[0])
    # Unlabelled stocks still get every per-stock feature.
    assert day.loc[~labelled, "ret_5d"].notna().all()


def test_the_day_graph_has_same_sector_edges_and_none_for_unlabelled_stocks(built):
    config, _, features = built
    manifest = FeatureManifest.read(features.manifest_path)
    with duckdb.connect(str(config.warehouse.path), read_only=True) as con:
        arrays = load_arrays(con, manifest, date(2018, 9, 4), END, history=4)
    codes = list(arrays.codes)
    sector = {code: int(arrays.sector[-1, i]) for i, code in enumerate(codes)}
    assert all(sector[c] >= 0 for c in SECTORS) and all(sector[c] == -1 for c in UNLABELLED)
    # A correlation bar no pair reaches: every edge left is a same-sector peer edge.
    graph = GraphConfig(window=20, top_k=1, min_abs_corr=1.0, sector_peers=2)
    batch = DayDataset(arrays, list(range(4, len(arrays.dates))), 5, graph)[[len(arrays.dates) - 5]]
    source, target = batch.edge_index
    assert batch.edge_index.shape[1] == 15 * 2
    assert torch.all(batch.edge_attr[:, 1] == 1.0)
    for s, t in zip(source.tolist(), target.tolist(), strict=True):
        assert SECTORS[codes[s]] == SECTORS[codes[t]]


# -- reading labels -------------------------------------------------------------------------------------

ROWS = "ticker,date,open,high,low,close,volume,sector\n"


def source_of(tmp_path: Path, quotes: str, listings: str | None = None, **mapping) -> FilesSource:
    (tmp_path / "q.csv").write_text(quotes)
    settings: dict = {"columns": {**QUOTES, "sector": "Sector17Code"} if "sector" in quotes.split("\n")[0] else QUOTES}
    if listings is not None:
        (tmp_path / "l.csv").write_text(listings)
        settings["listings"] = {
            "path": tmp_path / "l.csv",
            "columns": mapping or {"sym": "Code", "sec": "Sector17Code"},
        }
    return FilesSource(FilesSourceConfig(kind="files", path=tmp_path / "q.csv", **settings), TradingCalendar("XNYS"))


def bars(*rows: str, header: str = ROWS) -> str:
    return header + "".join(f"{r}\n" for r in rows)


def test_the_sector_column_is_not_a_quote_column(tmp_path):
    source = source_of(tmp_path, bars("AAA,2018-01-02,10,11,9,10,5,Tech"))
    (chunk,) = source.quote_chunks(None, None)
    assert "Sector17Code" not in chunk.frame.columns and "sector" not in chunk.frame.columns
    listed = source.listed_info(date(2018, 1, 2))
    assert list(listed.columns) == list(LISTED_INFO_COLUMNS)
    assert listed[["Code", "Sector17Code"]].values.tolist() == [["AAA", "Tech"]]


def test_a_label_is_read_from_every_row_whatever_the_ingest_window(tmp_path):
    quotes = bars("AAA,2018-01-02,10,11,9,10,5,", "AAA,2018-01-03,10,11,9,10,5,Tech", "BBB,2018-01-02,1,1,1,1,1,")
    listed = source_of(tmp_path, quotes).listed_info(date(2018, 1, 2))
    # A blank row beside a labelled one is no conflict; a stock with blanks only is not listed.
    assert listed[["Code", "Sector17Code"]].values.tolist() == [["AAA", "Tech"]]


def test_a_sector_column_left_blank_everywhere_lists_nothing(tmp_path):
    listed = source_of(tmp_path, bars("AAA,2018-01-02,10,11,9,10,5,")).listed_info(date(2018, 1, 2))
    assert list(listed.columns) == list(LISTED_INFO_COLUMNS) and len(listed) == 0
    (tmp_path / "q.csv").write_text(ROWS)
    assert len(source_of(tmp_path, ROWS).listed_info(date(2018, 1, 2))) == 0


def test_one_stock_with_two_sectors_in_the_quotes_column_is_refused_with_the_rows(tmp_path):
    quotes = bars("AAA,2018-01-02,10,11,9,10,5,Tech", "AAA,2018-01-03,10,11,9,10,5,Energy",
                  "BBB,2018-01-02,1,1,1,1,1,Tech")  # fmt: skip
    source = source_of(tmp_path, quotes)
    path = tmp_path / "q.csv"
    expected = (
        f"column 'sector' (Sector17Code) gives 1 stock(s) more than one value, where a stock has one: "
        f"AAA: {path} row 1: 'Tech', {path} row 2: 'Energy'"
    )
    with pytest.raises(SourceError, match=re.escape(expected)):
        source.listed_info(date(2018, 1, 2))


def test_conflicting_sectors_across_per_stock_files_name_both_files(tmp_path):
    for name, sector in (("AAA_1.csv", "Tech"), ("AAA_2.csv", "Energy")):
        (tmp_path / name).write_text("date,open,high,low,close,volume,sector\n2018-01-02,1,1,1,1,1," + sector + "\n")
    columns = {k: v for k, v in QUOTES.items() if v != "Code"} | {"sector": "Sector17Code"}
    config = FilesSourceConfig(kind="files", path=tmp_path, columns=columns, code_from_filename=r"(?P<code>[A-Z]+)_")
    with pytest.raises(SourceError, match=re.escape(f"AAA: {tmp_path / 'AAA_1.csv'} row 1: 'Tech', {tmp_path}")):
        FilesSource(config, TradingCalendar("XNYS")).listed_info(date(2018, 1, 2))


def test_a_listings_file_adds_labels_names_and_markets(tmp_path):
    listings = "sym,sec,sec33,company,mkt\nAAA,Tech,T1,Triple A,NYSE\nBBB,,,,\n"
    mapping = {
        "sym": "Code",
        "sec": "Sector17Code",
        "sec33": "Sector33Code",
        "company": "CompanyName",
        "mkt": "MarketCode",
    }
    quotes = bars("AAA,2018-01-02,1,1,1,1,1", "BBB,2018-01-02,1,1,1,1,1", header=ROWS.replace(",sector", ""))
    listed = source_of(tmp_path, quotes, listings, **mapping).listed_info(date(2018, 1, 2))
    assert listed.iloc[0][["Code", "CompanyName", "Sector17Code", "Sector33Code", "MarketCode"]].tolist() == [
        "AAA", "Triple A", "Tech", "T1", "NYSE"
    ]  # fmt: skip
    assert listed.iloc[1][["Code", "Sector17Code"]].tolist() == ["BBB", None]


def test_numeric_sector_codes_in_parquet_are_read_as_text(tmp_path):
    pq.write_table(pa.table({"ticker": ["AAA", "BBB"], "date": ["2018-01-02"] * 2, "open": [1.0] * 2,
                             "high": [1.0] * 2, "low": [1.0] * 2, "close": [1.0] * 2, "volume": [1, 1],
                             "sector": pa.array([3, None], pa.int64())}), tmp_path / "q.parquet")  # fmt: skip
    config = FilesSourceConfig(kind="files", path=tmp_path / "q.parquet", columns={**QUOTES, "sector": "Sector17Code"})
    listed = FilesSource(config, TradingCalendar("XNYS")).listed_info(date(2018, 1, 2))
    assert listed[["Code", "Sector17Code"]].values.tolist() == [["AAA", "3"]]


QUOTED = bars("AAA,2018-01-02,1,1,1,1,1", "BBB,2018-01-02,1,1,1,1,1", header=ROWS.replace(",sector", ""))


def test_a_listing_of_a_stock_no_quotes_file_holds_is_refused_with_its_row(tmp_path):
    source = source_of(tmp_path, QUOTED, "sym,sec\nAAA,Tech\nZZZ,Energy\n")
    expected = (
        f"{tmp_path / 'l.csv'}: column 'sym' (Code) has 1 code(s) that no quotes file under {tmp_path / 'q.csv'} "
        "holds: row 2: 'ZZZ'"
    )
    with pytest.raises(SourceError, match=re.escape(expected)):
        source.listed_info(date(2018, 1, 2))


def test_a_stock_listed_twice_with_two_sectors_is_refused_and_twice_alike_is_one_listing(tmp_path):
    source = source_of(tmp_path, QUOTED, "sym,sec\nAAA,Tech\nBBB,Energy\nAAA,Retail\n")
    path = tmp_path / "l.csv"
    with pytest.raises(SourceError, match=re.escape(f"AAA: {path} row 1: 'Tech', {path} row 3: 'Retail'")):
        source.listed_info(date(2018, 1, 2))
    (tmp_path / "l.csv").write_text("sym,sec\nAAA,Tech\nBBB,Energy\nAAA,Tech\nBBB,\n")
    assert source.listed_info(date(2018, 1, 2))[["Code", "Sector17Code"]].values.tolist() == [
        ["AAA", "Tech"], ["BBB", "Energy"]
    ]  # fmt: skip


def test_a_listing_without_a_code_is_refused_with_its_row(tmp_path):
    source = source_of(tmp_path, QUOTED, "sym,sec\nAAA,Tech\n,Energy\n")
    with pytest.raises(SourceError, match=re.escape("column 'sym' (Code) is empty in row(s) 2")):
        source.listed_info(date(2018, 1, 2))


def test_a_missing_listings_file_is_refused_naming_it(tmp_path):
    source = source_of(tmp_path, QUOTED, "sym,sec\n")
    (tmp_path / "l.csv").unlink()
    with pytest.raises(SourceError, match=re.escape(f"{tmp_path / 'l.csv'}: no such listings file")):
        source.listed_info(date(2018, 1, 2))


def test_a_listings_file_without_a_mapped_column_is_refused_naming_file_and_column(tmp_path):
    source = source_of(tmp_path, QUOTED, "sym,industry\nAAA,Tech\n")
    with pytest.raises(SourceError, match=rf"^{re.escape(str(tmp_path / 'l.csv'))}: columns do not match.*'sec'"):
        source.listed_info(date(2018, 1, 2))


def test_an_unmapped_listings_column_must_be_ignored_explicitly(tmp_path):
    source = source_of(tmp_path, QUOTED, "sym,sec,notes\nAAA,Tech,x\n")
    with pytest.raises(SourceError, match=re.escape("list it in source.listings.ignore_columns")):
        source.listed_info(date(2018, 1, 2))


def test_a_source_without_labels_has_no_listings(tmp_path):
    assert source_of(tmp_path, QUOTED).listed_info(date(2018, 1, 2)) is None


# -- config ---------------------------------------------------------------------------------------------


def test_the_sector_may_not_come_from_both_places(tmp_path):
    with pytest.raises(ValueError, match=re.escape("['Sector17Code'] mapped both in columns and in listings")):
        FilesSourceConfig(
            kind="files",
            path=tmp_path,
            columns={**QUOTES, "sector": "Sector17Code"},
            listings={"path": tmp_path / "l.csv", "columns": {"s": "Code", "x": "Sector17Code"}},
        )


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"s": "Code", "x": "Sector"}, "maps to unknown listing column(s) ['Sector']"),
        ({"x": "Sector17Code"}, "must map a column to Code and at least one column to a label"),
        ({"s": "Code", "x": "Sector17Code", "y": "Sector17Code"}, "several source columns map to ['Sector17Code']"),
    ],
)
def test_a_listings_mapping_is_checked(tmp_path, columns, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FilesSourceConfig(kind="files", path=tmp_path, columns=QUOTES, listings={"path": "l.csv", "columns": columns})


def test_only_sector17code_joins_the_quote_columns(tmp_path):
    with pytest.raises(ValueError, match=re.escape("maps to unknown canonical column(s) ['CompanyName']")):
        FilesSourceConfig(kind="files", path=tmp_path, columns={**QUOTES, "name": "CompanyName"})


def test_the_sp500_config_reads_its_sectors_from_the_shared_listings_file():
    config = load_config(Path(__file__).resolve().parents[2] / "deployments" / "sp500.yaml")
    assert config.source.listings is not None
    assert config.source.listings.path == Path("../shared/data/sp500_sectors.csv")
    assert config.source.listings.columns == {"Name": "Code", "sector": "Sector17Code"}


def test_an_unknown_listings_key_is_named(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\nsource:\n  kind: files\n  path: q.csv\n  columns: {a: Code}\n"
        "  listings: {path: l.csv, columns: {s: Code, x: Sector17Code}, colums: {}}\n"
    )
    with pytest.raises(ConfigError, match=re.escape("unknown key 'source.listings.colums'")):
        load_config(path)


# -- ingest ---------------------------------------------------------------------------------------------


def test_a_code_outside_the_pattern_loses_its_label_with_its_quarantined_quotes(tmp_path):
    quotes = bars("AAA,2018-01-02,10,11,9,10,5,Tech", "bad1,2018-01-02,10,11,9,10,5,Energy")
    (tmp_path / "q.csv").write_text(quotes)
    columns = {**QUOTES, "sector": "Sector17Code"}
    source = FilesSourceConfig(kind="files", path=tmp_path / "q.csv", columns=columns, fill=FILL)
    config = pipeline(tmp_path, source, validation=ValidationConfig(max_rejected_fraction=1.0))
    messages: list[str] = []
    report = ingest(config, on_progress=messages.append)
    assert report.rows_rejected == 1 and report.listed_inserted == 1
    assert any("1 record(s) not stored" in m and "'bad1'" in m for m in messages)
    with Warehouse(config.warehouse.path, read_only=True) as wh:
        assert wh.con.execute("SELECT Code, Sector17Code FROM listed_info").fetchall() == [("AAA", "Tech")]
