"""Lever search on real prices, on the walk-forward protocol's earlier windows only: settings are chosen there.

    .venv/bin/python benchmarks/bench_levers.py one-epoch --set train.epochs=1 --seeds 3
    .venv/bin/python benchmarks/bench_levers.py rank-gauss --set train.epochs=1 loss.label=rank_gauss --seeds 3
    .venv/bin/python benchmarks/bench_levers.py --report                      # the table of every lever so far
    .venv/bin/python benchmarks/bench_levers.py shuffled --set train.epochs=1 --seeds 1 --half all --control shuffled
    .venv/bin/python benchmarks/bench_levers.py untrained --seeds 10 --half all --control untrained   # the floor
    .venv/bin/python benchmarks/bench_levers.py --final one-epoch --apex apex --half all    # the chosen lever's record
    .venv/bin/python benchmarks/bench_levers.py --report --against one-epoch --loadings rv_60 beta_60   # paired, leans
    .venv/bin/python benchmarks/bench_levers.py ic-only --set loss.listnet_weight=0 --seeds 1 --windows 0-2   # a lean

The protocol is the walk-forward benchmark's (``bench_walkforward.py``): ``deployments/sp500.yaml``, as-of dates
every ``retrain.step_days`` sessions from 2016-01-04 to 2018-01-31, each retrain on its production windows, cold.
Its windows are cut in two as :func:`atft.backtest.selection_halves` cuts them; a lever is measured on the earlier
half, and the later half is left for the final replay of the chosen setting, which reports it on its own
(``--half later`` exists for that report and says so).

A lever is a named set of config overrides. Each window trains one model per seed (``train.seed`` 7, 8, ...) and
keeps its out-of-sample scores under ``--out/<lever>/``; the baselines (ridge, LightGBM, reversal) are fitted once
per window and kept under ``--out/baselines/``, each named by the training and validation days it was fitted on (a
config with other retrain windows fits its own), so levers cost their training only and every lever is scored on the
same stock-days against the same baselines. A lever's overrides apply to ``--config`` as it is when it runs, whose
own ``model.ensemble`` is set aside: each seed trains one model. ``lever.json`` records the settings the scores
were trained under, resolved; a lever whose kept windows were trained under other settings (the config changed
since) is refused more models rather than mixing two settings. A lever's score is its seeds' mean of per-day
ranks: exactly what a ``model.ensemble`` of that many members publishes (member i is the single model of seed
7 + i), so "one seed" and "an ensemble of three" are two readings of the same runs. ``--json`` writes the report's
figures. ``--against`` adds each lever's daily 5d RankIC minus another's on the same days, with a block-bootstrap
interval: paired, it resolves levers more finely than their own RankICs. ``--loadings`` adds what each lever's
scores lean on (their daily Spearman with named inputs), and ``--windows`` runs or reads a few windows only: enough
to read a lean, never a RankIC.

``--final`` reports one lever over ``--half`` as the walk-forward benchmark reports a replay (the same tables,
halves, bootstrap intervals, charts and skill targets), with an APEX lever beside it on the same stock-days, under
``--out/final-<lever>/``. ``--control shuffled`` trains a lever on labels permuted within each day: the honesty
control, read in the lever table against its fixed bound and against the untrained floor. ``--control untrained``
is that floor: each seed's network as a cold retrain would begin to fit it, never fitted (seconds per window, so
ten seeds are cheap). Its seeds' spread is also the noise band of the lever table: levers a few of these spreads
apart on the earlier half are not told apart by it (see :mod:`atft.controls`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import torch
from bench_walkforward import ENSEMBLE_MEMBERS, charts
from bench_walkforward import report as walkforward_report
from harness import finish

from atft.backtest import (
    LABEL,
    REPORTED_HORIZONS,
    SOURCES,
    BacktestWindow,
    _train_and_predict,
    add_rank_average,
    block_bootstrap_interval,
    daily_signal,
    load_window,
    plan_backtest,
    rank_ic_differences,
    score_baselines,
    stitch,
    summarise_backtest,
    untrained_predict,
)
from atft.config import PipelineConfig, load_config, parse_overrides
from atft.controls import UntrainedFloor, shuffle_labels, shuffled_verdict
from atft.data.arrays import FeatureArrays
from atft.evaluation import predictions_frame
from atft.features.build import build_features
from atft.features.store import feature_dates
from atft.ingest import ingest
from atft.metrics import daily_rank_ic
from atft.models.ensemble import day_ranks
from schemas.manifest import FeatureManifest

START, END = date(2016, 1, 4), date(2018, 1, 31)
FIRST_SEED = 7
LEVER_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


class Protocol:
    """The feature table of the config (ingested and built if needed), its sessions, and the halves of the replay."""

    def __init__(self, settings: PipelineConfig) -> None:
        ingest(settings, on_progress=lambda _: None)
        self.manifest = FeatureManifest.read(build_features(settings, on_progress=lambda _: None).manifest_path)
        with duckdb.connect(str(settings.warehouse.path), read_only=True) as con:
            self.dates = feature_dates(con, self.manifest.table_name)
        self.warm_up = self.manifest.warm_up
        count = len(self._plan(settings))
        cut = count // 2  # as selection_halves: the extra window of an odd count goes to the later half
        self.halves = {"earlier": list(range(cut)), "later": list(range(cut, count)), "all": list(range(count))}

    def restrict(self, first: int, last: int) -> None:
        """Keep windows ``first``..``last`` only, in every half: a quick reading of a lever, never a record."""
        self.halves = {half: [i for i in kept if first <= i <= last] for half, kept in self.halves.items()}

    def windows(self, settings: PipelineConfig, half: str = "all") -> list[BacktestWindow]:
        """The retrains of ``settings`` (its retrain windows) on the protocol's as-of dates, those of ``half``."""
        planned = self._plan(settings)
        return [planned[i] for i in self.halves[half]]

    def _plan(self, settings: PipelineConfig) -> list[BacktestWindow]:
        return plan_backtest(self.dates, START, END, settings.retrain.step_days, settings, self.warm_up)


def run_lever(
    name: str, overrides: dict[str, Any], lever: PipelineConfig, seeds: int, half: str, settings: PipelineConfig,
    protocol: Protocol, out: Path, control: str = "none",
) -> None:  # fmt: skip
    """Train and keep every missing (window, seed) of the lever (``settings`` with ``overrides``, resolved as
    ``lever``) in ``half``, and every missing window's baselines (fitted on the windows of ``settings``).

    ``control="shuffled"`` trains the lever's models on labels permuted within each day, each (window, seed) with
    its own permutation; the baselines stay fitted on the real labels. ``"untrained"``
    keeps each seed's model as training would begin it, unfitted: the floor of the controls."""
    if any(key.split(".")[0] in ("source", "features", "warehouse", "calendar") for key in overrides):
        raise SystemExit(f"lever {name}: {sorted(overrides)} would change the feature table; give it its own --config")
    if lever.retrain.step_days != settings.retrain.step_days:
        raise SystemExit(f"lever {name}: retrain.step_days sets the protocol's as-of dates; it is not a lever")
    manifest = protocol.manifest
    (out / name).mkdir(parents=True, exist_ok=True)
    described = out / name / "lever.json"
    # Shuffled labels: each (window, seed) its own permutation, so that seeds are independent draws of the control.
    permutation = {"permutation": "window and seed"} if control == "shuffled" else {}
    if described.exists() and control == "shuffled" and "permutation" not in json.loads(described.read_text()):
        raise SystemExit(f"lever {name} shuffled one permutation per window, shared by its seeds: add seeds to a "
                         "lever of another name")  # fmt: skip
    began = time.perf_counter()
    pending = [
        (window, base)
        for window, base in zip(protocol.windows(lever, half), protocol.windows(settings, half), strict=True)
        if _missing_seeds(out, name, window, seeds) or not _baselines_path(out, base).exists()
    ]  # the ETA counts these only: windows kept from an earlier run cost nothing
    kept = any((out / name).glob("window-*.npz"))
    resolved = scored_settings(lever)
    if kept and any(_missing_seeds(out, name, window, seeds) for window, _ in pending):
        record = json.loads(described.read_text()) if described.exists() else {}
        _check_same_settings(name, record.get("settings"), resolved)
    if pending or not kept:  # a lever with nothing to add keeps its record as it is
        described.write_text(
            json.dumps({"set": overrides, "control": control} | permutation | {"settings": resolved}, default=str)
        )
    for done, (window, base) in enumerate(pending, start=1):
        todo = _missing_seeds(out, name, window, seeds)
        baselines = _baselines_path(out, base)
        with duckdb.connect(str(settings.warehouse.path), read_only=True) as con:
            data = load_window(con, manifest, lever, window)
        if not baselines.exists():
            baselines.parent.mkdir(parents=True, exist_ok=True)
            fitted_on = data
            if base != window:  # the lever trains on its own windows, the baselines on those of settings
                with duckdb.connect(str(settings.warehouse.path), read_only=True) as con:
                    fitted_on = load_window(con, manifest, settings, base)
            score_baselines(fitted_on, manifest, settings, base).to_parquet(baselines)
        labels = _labels(data.training.arrays) if control == "shuffled" else ()  # the real ones, as the baselines saw
        for seed in todo:
            tick = time.perf_counter()
            if control == "shuffled":
                _restore_labels(data.training.arrays, labels)
                shuffle_labels(data.training.arrays, seed=(window.index, seed))
            seeded = lever.model_copy(update={"train": lever.train.model_copy(update={"seed": seed})})
            if control == "untrained":
                pred, epochs, best_epoch = untrained_predict(data, manifest, seeded), 0, 0
            else:
                pred, result = _train_and_predict(data, manifest, seeded, None)
                epochs, best_epoch = len(result.history), result.best_epoch
            frame = predictions_frame(data.arrays, data.days, pred)
            np.savez(
                _scores_path(out, name, window, seed),
                scores=frame[[f"pred_{h}d" for h in data.arrays.horizons]].to_numpy(),
                rows=(frame["Date"].astype(str) + " " + frame["Code"]).to_numpy(dtype=str),  # not objects: no pickle
                seconds=time.perf_counter() - tick,
                epochs=epochs,
                best_epoch=best_epoch,
            )
        eta = (time.perf_counter() - began) / done * (len(pending) - done)
        print(f"  {name}: window {window.index} (as-of {window.as_of}) done, ETA {eta / 60:.0f} min", file=sys.stderr,
              flush=True)  # fmt: skip


# Parts of a lever's settings that its scores do not depend on: the seed (one per model), the ensemble (its seeds)
# and where or how fast it runs.
_UNSCORED = {"model": {"ensemble"}, "train": {"seed", "device", "compile", "num_workers", "threads", "timeout_s",
                                              "staging_dir"}}  # fmt: skip


_SCORED_SECTIONS = ("model", "loss", "train", "retrain")


def scored_settings(lever: PipelineConfig) -> dict[str, Any]:
    """The settings a lever's scores depend on, as JSON: its model, losses, training and retrain windows, resolved
    from ``--config`` and the lever's overrides as they are when it runs."""
    return _scored({name: getattr(lever, name) for name in _SCORED_SECTIONS})


def _scored(sections: dict[str, Any]) -> dict[str, Any]:
    dumped = {name: part.model_dump(mode="json", exclude=_UNSCORED.get(name)) for name, part in sections.items()}
    return json.loads(json.dumps(dumped))  # JSON's own keys (horizon weights' ints as text), as lever.json keeps them


def _check_same_settings(name: str, kept: dict[str, Any] | None, resolved: dict[str, Any]) -> None:
    """Refuse to add models to a lever whose kept windows were trained under other settings: the config it reads
    may have changed since (a new default), and one lever's windows would then mix two settings. An option that the
    record lacks was added to the library after it; at its default it is the setting the kept models had."""
    if kept is None:
        raise SystemExit(f"lever {name}: its windows predate lever.json's record of their settings, so adding to them "
                         "could mix two settings; run it under a new lever name")  # fmt: skip
    defaults = _scored({section: PipelineConfig.model_fields[section].default for section in _SCORED_SECTIONS})
    changed = [
        f"{section}.{key}: {kept.get(section, {}).get(key)!r} -> {value!r}"
        for section, values in resolved.items()
        for key, value in values.items()
        if kept.get(section, {}).get(key, defaults[section][key]) != value
    ]
    if changed:
        raise SystemExit(f"lever {name}: its kept windows were trained under other settings ({'; '.join(changed)}); "
                         "run it under a new lever name, or restore the config it ran with")  # fmt: skip


def _labels(arrays: FeatureArrays) -> tuple[np.ndarray, ...]:
    return tuple(values.copy() for values in (arrays.targets, arrays.target_valid, arrays.forward_returns))


def _restore_labels(arrays: FeatureArrays, labels: tuple[np.ndarray, ...]) -> None:
    for values, saved in zip((arrays.targets, arrays.target_valid, arrays.forward_returns), labels, strict=True):
        values[...] = saved


def _scores_path(out: Path, name: str, window: BacktestWindow, seed: int) -> Path:
    return out / name / f"window-{window.index:03d}-seed-{seed}.npz"


def _baselines_path(out: Path, window: BacktestWindow) -> Path:
    """A window's baselines, named by the training and validation days they were fitted on: a config whose retrain
    windows differ (a new default) fits its own beside them, rather than reading baselines fitted on other days."""
    r = window.retrain
    spans = f"train-{r.train_start:%Y%m%d}-{r.train_end:%Y%m%d}-valid-{r.valid_start:%Y%m%d}-{r.valid_end:%Y%m%d}"
    return out / "baselines" / f"window-{window.index:03d}-{spans}.parquet"


def _missing_seeds(out: Path, name: str, window: BacktestWindow, seeds: int) -> list[int]:
    return [s for s in range(FIRST_SEED, FIRST_SEED + seeds) if not _scores_path(out, name, window, s).exists()]


@dataclass
class StitchedLever:
    """A lever's out-of-sample record over some windows, on the baselines' stock-days: ``frame`` holds the
    baselines, ``pred_<h>d`` (the seeds' mean of per-day ranks) and ``seed<s>_<h>d`` (each seed alone); ``rows``
    are the windows, with the epochs and seconds of all seeds together."""

    frame: pd.DataFrame
    rows: list[dict[str, Any]]
    seeds: int
    seconds: list[float]
    epochs: list[int]


def stitch_lever(
    name: str, windows: list[BacktestWindow], settings: PipelineConfig, out: Path, seeds: int | None
) -> StitchedLever | None:
    """The lever's ensemble of its first ``seeds`` seeds (all it has when None) over ``windows``; None where a
    window, or a seed of one, is missing."""
    frames, rows, seconds, epochs, used = [], [], [], [], None
    for window in windows:
        baselines = _baselines_path(out, window)
        paths = sorted((out / name).glob(f"window-{window.index:03d}-seed-*.npz"), key=_seed)
        if seeds is not None:
            paths = [p for p in paths if _seed(p) < FIRST_SEED + seeds]
        if not baselines.exists() or not paths or (used is not None and len(paths) != used):
            return None
        used = len(paths)
        frame = pd.read_parquet(baselines)
        runs = [np.load(p) for p in paths]
        keys = (frame["Date"].astype(str) + " " + frame["Code"]).to_numpy()
        if any(not np.array_equal(r["rows"], keys) for r in runs):
            raise SystemExit(f"{name}: window {window.index}'s scores are not on the baselines' stock-days")
        seconds += [float(r["seconds"]) for r in runs]
        epochs += [int(r["epochs"]) for r in runs]
        rows.append(window.row() | {"epochs_run": max(int(r["epochs"]) for r in runs),
                                    "seconds": sum(float(r["seconds"]) for r in runs)})  # fmt: skip
        day = torch.as_tensor(pd.factorize(frame["Date"])[0])
        present = torch.ones(len(frame), dtype=torch.bool)
        for k, h in enumerate(settings.features.horizons):
            for seed, run in zip(map(_seed, paths), runs, strict=True):
                frame[f"seed{seed}_{h}d"] = run["scores"][:, k]
            members = [day_ranks(torch.as_tensor(r["scores"][:, k], dtype=torch.float64), day, present) for r in runs]
            frame[f"pred_{h}d"] = torch.stack(members).mean(0).numpy()
        frames.append(frame)
    return StitchedLever(stitch(frames), rows, used, seconds, epochs)


def lever_record(
    name: str, windows: list[BacktestWindow], settings: PipelineConfig, out: Path, seeds: int | None,
    inputs: pd.DataFrame | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """The lever's figures over ``windows``: its ensemble of the first ``seeds`` seeds (all it has when None), each
    seed alone, and the baselines, all from :func:`atft.backtest.summarise_backtest`; None where a window is missing.
    With ``inputs`` (``Date``, ``Code`` and input columns), also its 5d scores' :func:`loadings` on them, and the
    baselines' and the label's."""
    lever = stitch_lever(name, windows, settings, out, seeds)
    if lever is None:
        return None
    horizons, portfolio = settings.features.horizons, settings.evaluation.portfolio
    summary = summarise_backtest(lever.frame, lever.rows, horizons, portfolio, real_prices=True)
    single = []
    for seed in range(FIRST_SEED, FIRST_SEED + lever.seeds):
        alone = lever.frame.assign(**{f"pred_{h}d": lever.frame[f"seed{seed}_{h}d"] for h in horizons})
        single.append(summarise_backtest(alone, lever.rows, horizons, portfolio, real_prices=True)["metrics"]["model"])
    return {
        "lever": name,
        "control": "none",
        **json.loads((out / name / "lever.json").read_text()),
        "seeds": lever.seeds,
        "windows": [w.index for w in windows],
        "metrics": summary["metrics"],
        "wins_rank_ic_5d": summary["wins_rank_ic_5d"],
        "per_window_rank_ic_5d": {
            source: [row.get(f"{source}_rank_ic_5d") for row in summary["windows"]]
            for source in ("model", "ridge", "lightgbm")
        },
        "single_seed_rank_ic": {f"{h}d": [m[f"rank_ic_{h}d"] for m in single] for h in REPORTED_HORIZONS},
        "daily_rank_ic_5d": {row["Date"]: row["model_rank_ic_5d"] for row in summary["daily"]},
        "loadings": {} if inputs is None else loadings(lever.frame, inputs),
        "seconds_per_model": float(np.mean(lever.seconds)),
        "epochs_per_model": float(np.mean(lever.epochs)),
        "warnings": summary["warnings"],
    }


def final_record(
    name: str, apex: str | None, windows: list[BacktestWindow], settings: PipelineConfig, out: Path, config: str
) -> dict[str, Any]:
    """The walk-forward benchmark's record of the chosen lever (and of an APEX lever beside it, on the same
    stock-days), summarised, charted and reported as ``bench_walkforward.py`` does, skill targets included; its
    report, charts and figures are written under ``--out/final-<lever>/``."""
    lever = stitch_lever(name, windows, settings, out, None)
    if lever is None:
        raise SystemExit(f"lever {name} lacks some of windows {windows[0].index}..{windows[-1].index}: run it first")
    described = json.loads((out / name / "lever.json").read_text())
    if described.get("control", "none") != "none":
        raise SystemExit(f"lever {name} is a {described['control']}-label control: read it in the lever table")
    horizons, frame = settings.features.horizons, lever.frame
    if apex is not None:
        other = stitch_lever(apex, windows, settings, out, None)
        if other is None:
            raise SystemExit(f"APEX lever {apex} lacks some of the windows: run it first")
        for h in horizons:
            frame[f"apex_{h}d"] = other.frame[f"pred_{h}d"]
    members = [m for m in ENSEMBLE_MEMBERS if f"{SOURCES[m]}_{horizons[0]}d" in frame]
    frame = add_rank_average(frame, members, horizons)
    summary = summarise_backtest(frame, lever.rows, horizons, settings.evaluation.portfolio, real_prices=True)
    summary["differences"] = rank_ic_differences(daily_signal(frame, horizons), horizons)
    folder = out / f"final-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"lag{settings.features.execution_lag}"
    overrides = described["set"] | {"model.ensemble": lever.seeds} | ({"apex": apex} if apex else {})
    results = {
        "config": config, "start": str(START), "end": str(END), "step": settings.retrain.step_days,
        "epochs": overrides.get("train.epochs", settings.train.epochs), "warm_start": settings.train.warm_start,
        "control": "none", "seconds": sum(lever.seconds), "set": overrides,
        "lags": {tag: {"summary": summary, "charts": charts(frame, summary, settings, folder, tag)}},
    }  # fmt: skip
    (folder / "report.md").write_text(walkforward_report(results))
    (folder / "summary.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def read_loading_inputs(
    settings: PipelineConfig, table: str, columns: list[str], start: date, end: date
) -> pd.DataFrame:
    """``Date``, ``Code`` and ``columns`` of the feature table over [start, end]; an unknown column is a usage error."""
    with duckdb.connect(str(settings.warehouse.path), read_only=True) as con:
        known = {name for (name, *_) in con.execute(f"DESCRIBE {table}").fetchall()}
        if unknown := [c for c in columns if c not in known]:
            raise SystemExit(f"--loadings: {unknown} are not columns of {table}; e.g. rv_60, beta_60, ret_5d")
        selected = ", ".join(f'"{c}"' for c in columns)
        frame = con.execute(f"SELECT Date, Code, {selected} FROM {table} WHERE Date BETWEEN ? AND ?", [start, end]).df()
    frame["Date"] = pd.to_datetime(frame["Date"])
    return frame


def loadings(frame: pd.DataFrame, inputs: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per source (the lever's ensemble, ridge, LightGBM, and the 5d label itself), the mean over days of the daily
    Spearman correlation of its 5d column with each input: what a source's ranking leans on. The label's row is each
    input's own 5d RankIC on these days, what a lean on it earned."""
    sources = {"model": "pred_5d", "ridge": "ridge_5d", "lightgbm": "lightgbm_5d", "label": f"{LABEL}_5d"}
    merged = frame.assign(Date=pd.to_datetime(frame["Date"])).merge(inputs, on=["Date", "Code"], how="left")
    columns = [c for c in inputs if c not in ("Date", "Code")]
    wide = merged.pivot(index="Date", columns="Code", values=[*sources.values(), *columns])  # [days, stocks] each
    out = {}
    for source, column in sources.items():
        scores = wide[column].to_numpy(dtype=float)
        out[source] = {
            c: float(np.nanmean(daily_rank_ic(scores, values := wide[c].to_numpy(dtype=float), np.isfinite(values))))
            for c in columns
        }  # daily_rank_ic leaves out a stock-day missing either side
    return out


def _seed(path: Path) -> int:
    return int(re.search(r"seed-(\d+)", path.name).group(1))


def report(records: list[dict[str, Any]], half: str, against: str | None = None) -> str:
    """A markdown table: each lever's ensemble RankIC, RankICIR, Sharpe and wins, its seeds alone, its cost; with
    ``against``, each lever's daily 5d RankIC minus that lever's on the same days, with its interval."""
    reference = next((r for r in records if r["lever"] == against), None)
    if against is not None and reference is None:
        raise SystemExit(f"--against {against}: no such lever with every window of the {half} half")
    paired = [f"minus {against} [90%]"] if reference else []
    lines = [f"Levers on the protocol's {half} windows (5-day label; the long-short book after costs):", "",
             "| lever | settings | seeds | RankIC 5d | " + "".join(f"{c} | " for c in paired)
             + "RankICIR 5d | LS Sharpe 5d | turnover 5d | beats ridge | each seed alone | s per model |",
             "|---" * (10 + len(paired)) + "|"]  # fmt: skip
    if records:
        first = records[0]
        for source, label in (("ridge", "ridge (baseline)"), ("lightgbm", "LightGBM (baseline)")):
            m = first["metrics"][source]
            lines.append(
                f"| {label} | | | {m['rank_ic_5d']:.4f} | "
                + "| " * len(paired)
                + f"{m['rank_icir_5d']:.3f} | {m['ls_sharpe_5d']:.2f} | {m['turnover_5d']:.2f} | | | |"
            )
    for r in records:
        m, n = r["metrics"]["model"], len(r["windows"])
        control = {"none": [], "shuffled": ["labels shuffled"], "untrained": ["never trained"]}[r["control"]]
        settings = ", ".join([f"{k}={v}" for k, v in r["set"].items()] + control)
        alone = ", ".join(f"{v:.4f}" for v in r["single_seed_rank_ic"]["5d"])
        versus = [paired_difference(r, reference)] if reference else []
        lines.append(f"| {r['lever']} | {settings} | {r['seeds']} | {m['rank_ic_5d']:.4f} | "
                     + "".join(f"{v} | " for v in versus) + f"{m['rank_icir_5d']:.3f} | "
                     f"{m['ls_sharpe_5d']:.2f} | {m['turnover_5d']:.2f} | {r['wins_rank_ic_5d']['model']['ridge']} of "
                     f"{n} | {alone} | {r['seconds_per_model']:.0f} |")  # fmt: skip
    lines += loadings_table(records)
    floors = untrained_floors(records)
    for h, floor in floors.items():
        lines += ["", f"Untrained floor, {h}: {len(floor.rank_ics)} networks that never saw a label, each seed's "
                  f"stitched RankIC spread {floor.spread:.4f} about zero: one seed of a lever, or of a control, is "
                  "one draw of skill plus this much chance"]  # fmt: skip
    for r in (r for r in records if r["control"] == "shuffled"):
        lines += ["", f"Shuffled-label control {r['lever']}, each seed alone:"]
        for h in REPORTED_HORIZONS:
            for seed, value in enumerate(r["single_seed_rank_ic"][f"{h}d"], start=FIRST_SEED):
                lines.append(f"- seed {seed}, {shuffled_verdict(value, h, floors.get(f'{h}d'))}")
    return "\n".join(lines)


def paired_difference(record: dict[str, Any], reference: dict[str, Any]) -> str:
    """The lever's daily 5d RankIC minus the reference lever's on the same days, with a 90% block-bootstrap interval.

    Paired, the two share each day's market, and with the same seeds their networks start from the same weights, so
    the random tilts both carry cancel in part: the difference is read more finely than either lever's own RankIC,
    whose chance spread (the untrained floor) is the width of the whole lever table."""
    if record is reference:
        return ""
    days = sorted(set(record["daily_rank_ic_5d"]) & set(reference["daily_rank_ic_5d"]))
    # A day without a complete 5d label (the record's last days) holds None: it is left out.
    diff = np.array([record["daily_rank_ic_5d"][d] for d in days], dtype=float) - np.array(
        [reference["daily_rank_ic_5d"][d] for d in days], dtype=float
    )
    mean, low, high = block_bootstrap_interval(diff[np.isfinite(diff)], 5)
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"


def loadings_table(records: list[dict[str, Any]]) -> list[str]:
    """The levers' :func:`loadings`, with ridge's, LightGBM's and the label's from the first record (the same days)."""
    measured = [r for r in records if r["loadings"]]
    if not measured:
        return []
    columns = list(measured[0]["loadings"]["model"])
    title = "Loadings: each source's 5d scores, mean daily Spearman with the input (the label's row: its own 5d RankIC)"
    lines = ["", title, "", "| source | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    rows = [(r["lever"], r["loadings"]["model"]) for r in measured]
    rows += [(source, measured[0]["loadings"][source]) for source in ("ridge", "lightgbm", "label")]
    lines += [f"| {name} | " + " | ".join(f"{row[c]:+.3f}" for c in columns) + " |" for name, row in rows]
    return lines


def untrained_floors(records: list[dict[str, Any]]) -> dict[str, UntrainedFloor]:
    """Per reported horizon, the floor of the untrained record with the most seeds (none when there is none)."""
    untrained = [r for r in records if r["control"] == "untrained"]
    if not untrained:
        return {}
    widest = max(untrained, key=lambda r: r["seeds"])
    return {f"{h}d": UntrainedFloor(tuple(widest["single_seed_rank_ic"][f"{h}d"])) for h in REPORTED_HORIZONS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lever", nargs="?", help="the lever's name (its folder under --out)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides of the lever")
    parser.add_argument("--seeds", type=int, default=3, help="models per window, seeds 7, 8, ... (default 3)")
    parser.add_argument("--half", choices=("earlier", "later", "all"), default="earlier",
                        help="windows to run or report; choose levers on the earlier half only")  # fmt: skip
    parser.add_argument(
        "--control",
        choices=("none", "shuffled", "untrained"),
        default="none",
        help="train the lever's models on labels shuffled within each day, or not at all (honesty controls)",
    )
    parser.add_argument("--report", action="store_true", help="print the table of every lever measured so far")
    parser.add_argument(
        "--final",
        metavar="LEVER",
        help="report LEVER's record as the walk-forward benchmark does, skill targets included",
    )
    parser.add_argument("--apex", metavar="LEVER", help="with --final: the APEX lever to report beside it")
    parser.add_argument(
        "--loadings",
        nargs="*",
        default=[],
        metavar="INPUT",
        help="with --report: each lever's 5d scores' mean daily Spearman with these inputs",
    )
    parser.add_argument("--against", metavar="LEVER", help="with --report: each lever's 5d RankIC, day by day, "
                        "minus LEVER's, with a 90%% block-bootstrap interval")  # fmt: skip
    parser.add_argument("--windows", metavar="FIRST-LAST", help="only these windows of --half, e.g. 0-2: for "
                        "quick readings of a lever's loadings, not for its RankIC")  # fmt: skip
    parser.add_argument("--config", default="deployments/sp500.yaml")
    parser.add_argument("--warehouse", help="override warehouse.path")
    parser.add_argument("--out", type=Path, default=Path("data/bench/levers"))
    parser.add_argument("--json", type=Path, help="also write the report's figures here")
    args = parser.parse_args(argv)
    if not (args.report or args.lever or args.final):
        parser.error("name a lever to run, or ask for --report or --final")
    if args.apex and not args.final:
        parser.error("--apex goes with --final")
    if args.lever and not LEVER_NAME.match(args.lever):
        parser.error(f"a lever name is lowercase letters, digits, '.', '_' and '-'; got {args.lever!r}")
    if args.half != "earlier":
        print(f"reporting the {args.half} windows: figures to report, never to choose a setting by",
              file=sys.stderr)  # fmt: skip
    base = {"warehouse.path": args.warehouse} if args.warehouse else {}
    settings = load_config(args.config, base)
    replay = Protocol(settings)
    if args.windows:
        first, _, last = args.windows.partition("-")
        if not (first.isdigit() and last.isdigit()):
            parser.error(f"--windows is FIRST-LAST, e.g. 0-2; got {args.windows!r}")
        replay.restrict(int(first), int(last))
    if args.lever:
        overrides = parse_overrides(args.set)
        if "model.ensemble" in overrides:
            parser.error("a lever's seeds are its ensemble: give --seeds, not model.ensemble")
        lever = load_config(args.config, {**base, **overrides, "model.ensemble": 1})  # one model per seed
        run_lever(args.lever, overrides, lever, args.seeds, args.half, settings, replay, args.out, args.control)
    chosen = replay.windows(settings, args.half)
    if args.final:
        results = final_record(args.final, args.apex, chosen, settings, args.out, args.config)
        print(walkforward_report(results))
        finish(True, args.json, results)
        return 0
    names = [args.lever] if args.lever and not args.report else sorted(
        p.name for p in args.out.iterdir() if (p / "lever.json").exists())  # fmt: skip
    inputs = None
    if args.loadings:
        start, end = chosen[0].oos_start, chosen[-1].oos_end
        inputs = read_loading_inputs(settings, replay.manifest.table_name, args.loadings, start, end)
    records = [r for n in names if (r := lever_record(n, chosen, settings, args.out, None, inputs)) is not None]
    print(report(records, args.half, args.against))
    for r in records:
        for warning in r["warnings"]:
            print(f"{r['lever']}: {warning}")
    finish(True, args.json, {"half": args.half, "windows": replay.halves[args.half], "levers": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
