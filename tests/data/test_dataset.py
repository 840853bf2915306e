"""Model data: arrays in manifest order, strided windows, the day graph, label purge, workers and memmaps."""

from __future__ import annotations

import dataclasses
import itertools
import pickle
from datetime import date

import duckdb
import numpy as np
import pytest
import torch

from atft.baselines import labelled_rows
from atft.config import (
    CSZConfig,
    FeaturesConfig,
    GraphConfig,
    PipelineConfig,
    SyntheticSourceConfig,
    UniverseConfig,
    WarehouseConfig,
)
from atft.data import graph as graph_module
from atft.data.arrays import load_arrays
from atft.data.dataset import DayBatchSampler, DayDataset, day_loader
from atft.data.graph import day_graph
from atft.features.build import build_features
from atft.ingest import ingest
from schemas.contract import ContractViolation
from schemas.manifest import FeatureManifest

LOOKBACK = 10


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data")
    config = PipelineConfig(
        name="data-test",
        source=SyntheticSourceConfig(kind="synthetic", seed=3, n_stocks=40, start=date(2023, 1, 4),
                                     end=date(2023, 9, 29), halt_probability=0.01),
        universe=UniverseConfig(code_pattern=r"^\d{4}$"),
        warehouse=WarehouseConfig(path=tmp / "w.duckdb"),
        features=FeaturesConfig(cs_z=CSZConfig(min_stocks=10), manifest_dir=tmp / "manifests"),
    )  # fmt: skip
    ingest(config, on_progress=lambda _: None)
    ref = build_features(config, on_progress=lambda _: None)
    return config, FeatureManifest.read(ref.manifest_path)


@pytest.fixture(scope="module")
def arrays(built):
    config, manifest = built
    with duckdb.connect(str(config.warehouse.path), read_only=True) as con:
        return load_arrays(con, manifest, date(2023, 3, 1), date(2023, 9, 29), history=LOOKBACK - 1)


def dataset(arrays, **kwargs) -> DayDataset:
    days = list(range(LOOKBACK - 1, len(arrays.dates)))
    return DayDataset(arrays, days, LOOKBACK, GraphConfig(window=10, top_k=3, min_abs_corr=0.2), **kwargs)


def test_arrays_follow_the_manifest_and_the_table(built, arrays):
    config, manifest = built
    assert arrays.x.shape[2] == manifest.width and arrays.horizons == [1, 5, 10, 20]
    with duckdb.connect(str(config.warehouse.path), read_only=True) as con:
        row = con.execute(f"SELECT * FROM {manifest.table_name} WHERE Date = DATE '2023-06-01' ORDER BY Code LIMIT 1")
        names = [c[0] for c in row.description]
        values = dict(zip(names, row.fetchall()[0], strict=True))
    d = arrays.dates.get_loc(np.datetime64("2023-06-01"))
    s = int(np.searchsorted(arrays.codes, values["Code"]))
    for j, name in enumerate(manifest.feature_names):
        expected = np.nan if values[name] is None else values[name]
        assert np.isclose(arrays.x[d, s, j], expected, equal_nan=True), name
    assert arrays.targets[d, s, 1] == pytest.approx(values["target_5d_cs_z"])


@pytest.mark.parametrize("positions", [[5, 6], [5, 9, 10]], ids=["consecutive", "two-runs"])
def test_windows_equal_a_naive_per_sample_construction(arrays, positions):
    ds = dataset(arrays)
    batch = ds[positions]
    expected, present = [], []
    for d in (ds.days[p] for p in positions):
        for s in range(len(arrays.codes)):
            expected.append(np.stack([arrays.x[d - LOOKBACK + 1 + k, s] for k in range(LOOKBACK)]))
            present.append(arrays.present[d, s])
    assert torch.equal(batch.x, torch.tensor(np.stack(expected)))
    assert batch.day.tolist() == sorted(batch.day.tolist()) and batch.n_days == len(positions)
    # Every stock has a row; the day's own step is unmasked exactly for the stocks trading that day.
    assert batch.x_mask[:, -1].tolist() == present
    assert not batch.y_mask[~batch.x_mask[:, -1]].any()


def test_a_batch_of_consecutive_days_is_a_view_of_the_cube(arrays):
    ds = dataset(arrays)
    batch = ds[[7, 8, 9]]
    assert batch.x.data_ptr() == arrays.x[ds.days[7] - LOOKBACK + 1].ctypes.data  # not a byte copied
    assert np.shares_memory(batch.x.numpy(), arrays.x)


def test_shuffled_batches_are_consecutive_blocks_covering_every_day_once():
    sampler = DayBatchSampler(23, 4, shuffle=True, seed=3)
    for _ in range(3):
        batches = list(sampler)
        assert len(batches) == len(sampler) == 6
        assert sorted(p for b in batches for p in b) == list(range(23))
        assert sum(any(b - a != 1 for a, b in itertools.pairwise(batch)) for batch in batches) <= 1
    assert list(DayBatchSampler(23, 4, shuffle=True, seed=3)) != list(DayBatchSampler(23, 4, shuffle=True, seed=4))


def test_edges_stay_inside_their_day_and_have_no_self_loops(arrays):
    batch = dataset(arrays)[[3, 4, 5]]
    source, target = batch.edge_index
    assert batch.edge_index.shape[1] > 0
    assert torch.equal(batch.day[source], batch.day[target])
    assert not (source == target).any()
    assert batch.edge_attr.shape == (batch.edge_index.shape[1], 2)


def test_the_graph_of_a_day_never_sees_later_returns(arrays):
    ds = dataset(arrays)
    d = ds.days[20]
    before = ds[[20]]
    changed = pickle.loads(pickle.dumps(arrays))
    changed.returns[d + 1 :] = np.random.default_rng(0).normal(size=changed.returns[d + 1 :].shape)
    changed.cube._array = changed.x.copy()
    changed.cube._array[d + 1 :] = 7.0
    after = DayDataset(changed, ds.days, LOOKBACK, ds.graph)[[20]]
    assert torch.equal(before.edge_index, after.edge_index) and torch.equal(before.edge_attr, after.edge_attr)
    assert torch.equal(before.x, after.x)


def test_day_graph_takes_the_top_k_above_the_threshold_and_sector_peers():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(20, 1))
    returns = np.hstack([base + 0.05 * rng.normal(size=(20, 3)), rng.normal(size=(20, 3))])
    sectors = np.array([0, 0, 1, 1, 2, 2])
    edges, attr = day_graph(returns, sectors, GraphConfig(window=20, top_k=2, min_abs_corr=0.9, sector_peers=1))
    pairs = {(int(s), int(t)) for s, t in edges.T}
    assert {(1, 0), (2, 0), (0, 1), (2, 1), (0, 2), (1, 2)} <= pairs  # the correlated trio
    assert (5, 4) in pairs and (4, 5) in pairs  # sector peers, though uncorrelated
    sector_edge = next(i for i, (s, t) in enumerate(edges.T) if (s, t) == (5, 4))
    assert attr[sector_edge, 1] == 1.0 and abs(attr[sector_edge, 0]) < 0.9


def test_no_correlation_edges_means_no_edges_and_no_correlation(monkeypatch):
    returns = np.tile(np.linspace(-0.02, 0.02, 20)[:, None], (1, 4))  # identical returns: |corr| = 1 for every pair
    sectors = np.array([0, 0, 1, 1])
    assert day_graph(returns, sectors, GraphConfig(window=20, top_k=1, min_abs_corr=1.0, sector_peers=0))[0].size

    def no_correlation(*_: object, **__: object) -> None:
        raise AssertionError("the correlation matrix was computed for a graph without correlation edges")

    monkeypatch.setattr(graph_module, "_correlation", no_correlation)
    edges, attr = day_graph(returns, sectors, GraphConfig(window=20, top_k=0, sector_peers=0))
    assert edges.shape == (2, 0) and edges.dtype == np.int64
    assert attr.shape == (0, 2) and attr.dtype == np.float32


def test_sector_peers_alone_link_only_within_a_sector():
    rng = np.random.default_rng(2)
    returns = rng.normal(size=(20, 6))
    sectors = np.array([0, 0, 0, 1, 1, -1])
    edges, attr = day_graph(returns, sectors, GraphConfig(window=20, top_k=0, sector_peers=1))
    assert edges.shape[1] == 5  # one peer for each of the five stocks with a known sector
    assert all(sectors[s] == sectors[t] >= 0 for s, t in edges.T)
    assert np.all(attr[:, 1] == 1.0)


def test_labels_are_purged_at_the_cutoff(arrays):
    cutoff = len(arrays.dates) - 15
    ds = dataset(arrays, label_cutoff=cutoff)
    position = ds.days.index(cutoff - 3)
    batch = ds[[position]]
    # 3 sessions before the cutoff: the 1-day label stays, the 5-, 10- and 20-day ones would cross it.
    assert batch.y_mask[:, 0].any() and not batch.y_mask[:, 1:].any()
    assert (batch.y[~batch.y_mask] == 0).all()


def lagged(arrays, lag: int):
    """The same arrays, read as if their manifest said the labels enter ``lag`` sessions after each day."""
    return dataclasses.replace(arrays, manifest=dataclasses.replace(arrays.manifest, execution_lag=lag))


@pytest.mark.parametrize("lag", [1, 2])
def test_the_label_purge_grows_by_the_manifests_execution_lag(arrays, lag):
    cutoff = len(arrays.dates) - 15
    at_lag = dataset(lagged(arrays, lag), label_cutoff=cutoff)
    at_zero = dataset(arrays, label_cutoff=cutoff)
    for before in range(0, 25):
        position = at_zero.days.index(cutoff - before)
        # The label of day d at horizon h ends at d + lag + h: it stays only if that is on or before the cutoff.
        kept = np.array([lag + h <= before for h in arrays.horizons])
        zero_kept = np.array([h <= before for h in arrays.horizons])
        lag_mask, zero_mask = at_lag[[position]].y_mask.numpy(), at_zero[[position]].y_mask.numpy()
        assert np.array_equal(lag_mask, zero_mask & kept), before
        assert (zero_mask.any(0) == zero_kept).all(), before
    # The day the cutoff falls h sessions after: at lag 0 its h-day label is the last one kept, at lag 1 it is gone.
    position = at_zero.days.index(cutoff - 5)
    assert at_zero[[position]].y_mask[:, 1].any() and not at_lag[[position]].y_mask[:, 1].any()


@pytest.mark.parametrize("lag", [0, 1, 2])
def test_the_baselines_training_rows_are_purged_like_the_dataset(arrays, lag):
    source = lagged(arrays, lag)
    days = list(range(LOOKBACK - 1, len(arrays.dates) - 30))  # labels past the window's end are realised
    batch = dataset(source, label_cutoff=days[-1])[list(range(len(days)))]
    labelled = source.target_valid[days] & source.present[days][..., None]
    for k, h in enumerate(arrays.horizons):
        _, y = labelled_rows(source, days, [0], h)
        # Exactly the dataset's rows: the labels that end, lag + h sessions on, by the window's last day.
        kept = len(days) - lag - h
        assert len(y) == int(batch.y_mask[:, k].sum()) == int(labelled[:kept, :, k].sum()) > 0
        assert labelled[kept:, :, k].any()  # there were later labels to purge
        assert np.allclose(y, batch.y[:, k][batch.y_mask[:, k]].numpy())


def test_dataset_pickles_and_loads_with_two_workers(arrays):
    ds = dataset(arrays)
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(copy[[0, 1]].x, ds[[0, 1]].x)
    serial = list(day_loader(ds, 4, shuffle=False))
    parallel = list(day_loader(ds, 4, shuffle=False, num_workers=2))
    assert len(serial) == len(parallel) == -(-len(ds) // 4)
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index) and torch.equal(a.y, b.y)


def test_memory_mapped_float16_cube_pickles_by_path(built, tmp_path):
    config, manifest = built
    with duckdb.connect(str(config.warehouse.path), read_only=True) as con:
        mapped = load_arrays(con, manifest, date(2023, 3, 1), date(2023, 9, 29), history=LOOKBACK - 1,
                             cache_dir=tmp_path, float16=True)  # fmt: skip
        plain = load_arrays(con, manifest, date(2023, 3, 1), date(2023, 9, 29), history=LOOKBACK - 1)
    assert isinstance(mapped.x, np.memmap) and mapped.x.dtype == np.float16
    assert np.allclose(mapped.x, plain.x, rtol=2e-3, atol=2e-3, equal_nan=True)
    payload = pickle.dumps(mapped)
    assert len(payload) < plain.x.nbytes / 4  # the cube travels as a path, not as data
    assert np.array_equal(pickle.loads(payload).x, mapped.x, equal_nan=True)


def test_a_drifted_table_is_refused_before_any_row_is_read(built, tmp_path):
    config, manifest = built
    copy = tmp_path / "drifted.duckdb"
    copy.write_bytes(config.warehouse.path.read_bytes())
    with duckdb.connect(str(copy)) as con:
        con.execute(f'ALTER TABLE {manifest.table_name} RENAME COLUMN "Code" TO "code"')
        with pytest.raises(ContractViolation, match="'code' found where 'Code' was expected"):
            load_arrays(con, manifest, date(2023, 3, 1), date(2023, 9, 29))
