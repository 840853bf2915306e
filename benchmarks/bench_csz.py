"""Cross-sectional z-score: 2,000 stocks x 1,250 days x 80 float32 features (2.5M stock-days, 800 MB).

The synthetic panel has ~5% NaN scattered and ~10% late-listed stocks (leading NaN); fixed seed.

- kernel:  ``cs_zscore`` on the ``[days, stocks, features]`` panel; warm median of --repeats calls. The
           first call in this process (numba cache load, or compile on a cache miss) and a cold compile in
           a fresh process with an empty cache are reported separately.
- pandas:  the baseline, on the equivalent long frame (Date, Code, 80 float32 columns; one row per listed
           stock-day): ``(df[cols] - g.transform("mean")) / g.transform("std")``, then clip.
- pivot:   long frame -> panel, the step a long-format caller pays before the kernel; reported on its own
           so that the end-to-end comparison (pivot + kernel vs pandas) is visible.

Data creation is not timed. Both z results are checked equal (allclose, same NaN) before the verdict.
Target: pandas / kernel >= 10x.

    python benchmarks/bench_csz.py [--stocks 2000 --days 1250 --features 80] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import pandas as pd
from harness import finish

from atft.features.cross_section import _cs_zscore_kernel, cs_zscore

TARGET_RATIO = 10.0
SEED = 20240104
CLIP = 5.0
KERNEL_ARGS = {"clip": CLIP, "min_stocks": 2, "min_std": 1e-8}  # the guards never fire on this data
RTOL = ATOL = 1e-5  # pandas does float32 arithmetic; the kernel rounds float64 z to float32 once


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _make_panel(days: int, stocks: int, features: int, nan_share: float, late_share: float) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    panel = np.empty((days, stocks, features), dtype=np.float32)
    scale = rng.uniform(0.01, 100, features).astype(np.float32)
    offset = rng.uniform(-50, 50, features).astype(np.float32)
    # By blocks of days so that the random draws never need a second 800 MB buffer.
    for start in range(0, days, 50):
        block = panel[start : start + 50]
        rng.standard_normal(block.shape, dtype=np.float32, out=block)
        block *= scale
        block += offset + rng.standard_normal((len(block), 1, features), dtype=np.float32) * scale
        block[rng.random(block.shape, dtype=np.float32) < nan_share] = np.nan
    late = np.flatnonzero(rng.random(stocks) < late_share)
    for stock, listed_on in zip(late, rng.integers(1, days, len(late)), strict=True):
        panel[:listed_on, stock] = np.nan
    return panel


def _long_frame(panel: np.ndarray, listed: np.ndarray) -> tuple[pd.DataFrame, list[str]]:
    days, stocks, features = panel.shape
    day_idx, stock_idx = np.nonzero(listed)  # row order: by date, then code, as the warehouse returns it
    cols = [f"f{i:02d}" for i in range(features)]
    frame = pd.DataFrame(panel[listed], columns=cols)
    frame.insert(0, "Date", pd.bdate_range("2019-01-04", periods=days)[day_idx])
    frame.insert(1, "Code", pd.Index([f"{1301 + i}" for i in range(stocks)])[stock_idx])
    return frame, cols


def _pivot(frame: pd.DataFrame, cols: list[str]) -> np.ndarray:
    day_idx, day_values = pd.factorize(frame["Date"], sort=True)
    stock_idx, stock_values = pd.factorize(frame["Code"], sort=True)
    panel = np.full((len(day_values), len(stock_values), len(cols)), np.nan, dtype=np.float32)
    panel[day_idx, stock_idx] = frame[cols].to_numpy()
    return panel


def _compare(z_kernel: np.ndarray, listed: np.ndarray, z_pandas: np.ndarray) -> float:
    """Max |difference| over the listed stock-days; raises if values or NaN positions disagree."""
    worst, row = 0.0, 0
    for start in range(0, len(z_kernel), 50):  # by blocks of days: no full-size temporaries
        kernel = z_kernel[start : start + 50][listed[start : start + 50]]
        pandas_ = z_pandas[row : row + len(kernel)]
        row += len(kernel)
        if not np.allclose(kernel, pandas_, rtol=RTOL, atol=ATOL, equal_nan=True):
            raise SystemExit(f"kernel and pandas z differ on days {start}..{start + 49}")
        worst = max(worst, float(np.nanmax(np.abs(kernel - pandas_))))
    assert row == len(z_pandas)
    return worst


def _cold_compile_s() -> dict[str, float]:
    """Time of the first call in a fresh process whose numba cache is empty: the full compile."""
    with tempfile.TemporaryDirectory(prefix="bench-csz-numba-") as cache:
        command = [sys.executable, __file__, "--phase", "cold-compile"]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "NUMBA_CACHE_DIR": cache})
    if done.returncode:
        raise SystemExit(f"cold-compile phase failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _first_call() -> dict[str, float | bool]:
    began = time.perf_counter()
    cs_zscore(np.ones((1, 3, 1), dtype=np.float32), **KERNEL_ARGS)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "cache_hit": bool(sum(_cs_zscore_kernel.stats.cache_hits.values()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stocks", type=int, default=2000)
    parser.add_argument("--days", type=int, default=1250)
    parser.add_argument("--features", type=int, default=80)
    parser.add_argument("--nan-share", type=float, default=0.05)
    parser.add_argument("--late-share", type=float, default=0.10)
    parser.add_argument("--repeats", type=int, default=5, help="warm kernel calls; the median is reported")
    parser.add_argument("--phase", choices=["cold-compile"], help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps({"compile_s": _first_call()["seconds"]}))
        return

    cold = _cold_compile_s()
    first = _first_call()
    panel = _make_panel(args.days, args.stocks, args.features, args.nan_share, args.late_share)
    listed = ~np.isnan(panel).all(axis=2)  # a listed stock-day has a row in the long frame

    kernel_runs = []
    for _ in range(args.repeats):
        z_kernel = None  # free the previous result first, so that peak RSS shows one output, not two
        began = time.perf_counter()
        z_kernel = cs_zscore(panel, **KERNEL_ARGS)
        kernel_runs.append(time.perf_counter() - began)
    kernel_s = statistics.median(kernel_runs)
    kernel_rss = _peak_rss_mib()

    frame, cols = _long_frame(panel, listed)
    began = time.perf_counter()
    g = frame.groupby("Date")[cols]
    z_pandas = ((frame[cols] - g.transform("mean")) / g.transform("std")).clip(-CLIP, CLIP)
    pandas_s = time.perf_counter() - began
    max_diff = _compare(z_kernel, listed, z_pandas.to_numpy())
    del g, z_pandas

    began = time.perf_counter()
    pivoted = _pivot(frame, cols)
    pivot_s = time.perf_counter() - began
    if not np.array_equal(pivoted, panel, equal_nan=True):
        raise SystemExit("the pivoted panel differs from the generated one")

    ratio = pandas_s / kernel_s
    end_to_end = pandas_s / (pivot_s + kernel_s)
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    results = {
        "shape": list(panel.shape),
        "stock_days": int(listed.sum()),
        "threads": numba.get_num_threads(),
        "pandas_s": pandas_s,
        "kernel_s": kernel_s,
        "kernel_runs_s": kernel_runs,
        "ratio": ratio,
        "first_call_s": first["seconds"],
        "first_call_cache_hit": first["cache_hit"],
        "cold_compile_s": cold["compile_s"],
        "pivot_s": pivot_s,
        "end_to_end_ratio": end_to_end,
        "max_abs_diff": max_diff,
        "peak_rss_after_kernel_mib": kernel_rss,
        "peak_rss_mib": _peak_rss_mib(),
    }
    days, stocks, features = panel.shape
    print(f"cs_zscore benchmark: {stocks:,} stocks x {days:,} days x {features} features float32, ", end="")
    print(f"{results['stock_days']:,} listed stock-days, {results['threads']} numba threads")
    print(f"  pandas groupby transform  {pandas_s:7.2f} s")
    print(f"  kernel (warm, median)     {kernel_s:7.3f} s   runs: {', '.join(f'{s:.3f}' for s in kernel_runs)}")
    how = "numba cache hit" if first["cache_hit"] else "compiled"
    print(f"  kernel first call         {first['seconds']:7.3f} s   ({how})")
    print(f"  kernel cold compile       {cold['compile_s']:7.2f} s   (fresh process, empty numba cache)")
    print(f"  pivot long -> panel       {pivot_s:7.2f} s   (pandas / (pivot + kernel): {end_to_end:.1f}x)")
    print(f"  max |kernel - pandas|     {max_diff:.2e}")
    print(f"  peak RSS                  {kernel_rss:,.0f} MiB after the kernel, {_peak_rss_mib():,.0f} MiB overall")
    print(f"  pandas / kernel = {ratio:.1f}x; target >= {TARGET_RATIO:.0f}x: {verdict}")
    finish(verdict != "FAIL", args.json, {"results": results, "target_ratio": TARGET_RATIO})


if __name__ == "__main__":
    main()
