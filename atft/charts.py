"""Pictures of a run, as PNG bytes (matplotlib's Agg backend: no display needed), and a standalone HTML page of them.

Each chart is a function of plain data (a training history, daily series, weights), so a flow can show it as an
artifact, keep it beside a registry version or a backtest, and a benchmark can write it to a file, all the same way.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

DPI = 110


def png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def data_url(image: bytes) -> str:
    """A PNG as a ``data:`` URL: an image the Prefect UI and an HTML page show without serving a file."""
    return "data:image/png;base64," + base64.b64encode(image).decode()


def training_curves(history: Sequence[Mapping[str, Any]]) -> bytes:
    """Training loss and validation RankIC per horizon, per epoch; one line per seed-ensemble member."""
    fig, (loss, ric) = plt.subplots(1, 2, figsize=(11, 3.8))
    members = sorted({int(r.get("member", 0)) for r in history})
    for member in members:
        rows = [r for r in history if int(r.get("member", 0)) == member]
        epochs = [r["epoch"] for r in rows]
        suffix = f" (member {member + 1})" if len(members) > 1 else ""
        loss.plot(epochs, [r["train_loss"] for r in rows], marker="o", label=f"train loss{suffix}")
        for h in sorted(rows[0]["valid_rank_ic"], key=int):
            ric.plot(epochs, [r["valid_rank_ic"][h] for r in rows], marker="o", label=f"{h}d{suffix}")
    loss.set_title("training loss per epoch")
    ric.set_title("validation RankIC per epoch")
    ric.axhline(0, color="grey", lw=0.8)
    for axis in (loss, ric):
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return png(fig)


def daily_rank_ic_and_equity(rank_ic: Mapping[str, pd.Series], equity: Mapping[str, pd.Series], title: str) -> bytes:
    """Cumulative daily RankIC and the long-short equity curve, one line per source (model, champion, baselines)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2))
    for name, series in rank_ic.items():
        left.plot(pd.to_datetime(series.index), series.fillna(0).cumsum(), label=name)
    for name, series in equity.items():
        right.plot(pd.to_datetime(series.index), series, label=name)
    left.set_title(f"cumulative daily RankIC, {title}")
    right.set_title(f"long-short equity, {title}")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.autofmt_xdate()
    return png(fig)


def rolling_rank_ic(daily: pd.Series, window: int, bound: float, evaluated: float | None, title: str) -> bytes:
    """Daily realised RankIC, its rolling mean over ``window`` judged days, the bound and the evaluation figure."""
    fig, axis = plt.subplots(figsize=(10, 3.8))
    when = pd.to_datetime(daily.index)
    axis.bar(when, daily.to_numpy(), color="#9ecae1", width=0.8, label="daily realised RankIC")
    axis.plot(when, daily.rolling(window, min_periods=window).mean(), color="#08519c", lw=2,
              label=f"rolling mean, {window} days")  # fmt: skip
    axis.axhline(bound, color="#cb181d", ls="--", label=f"bound {bound:g}")
    if evaluated is not None and np.isfinite(evaluated):
        axis.axhline(evaluated, color="#31a354", ls=":", label=f"evaluation window {evaluated:.3f}")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    fig.autofmt_xdate()
    return png(fig)


def input_weights(weights: pd.Series, groups: Mapping[str, str], shown: int = 20) -> bytes:
    """The largest mean variable-selection weights, coloured by input group, largest on top."""
    top = weights.sort_values(ascending=False).head(shown)[::-1]
    palette = plt.get_cmap("tab10")
    names = sorted(set(groups.values()))
    colours = [palette(names.index(groups[name]) % 10) for name in top.index]
    fig, axis = plt.subplots(figsize=(8, 0.28 * len(top) + 1.2))
    axis.barh(top.index, top.to_numpy(), color=colours)
    shown_groups = {groups[n] for n in top.index}
    handles = [Patch(color=palette(i % 10), label=name) for i, name in enumerate(names) if name in shown_groups]
    axis.set_title(f"variable selection: the top {len(top)} inputs (mean weight)")
    axis.grid(alpha=0.3, axis="x")
    axis.legend(handles=handles, fontsize=8, loc="lower right")
    return png(fig)


def html_page(title: str, sections: Sequence[tuple[str, str, Sequence[bytes]]]) -> str:
    """One standalone HTML page: per section a heading, preformatted text and its images, embedded (no files)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}img{max-width:100%;display:block;"
             "margin:1em 0}pre{background:#f6f8fa;padding:1em;overflow-x:auto}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]  # fmt: skip
    for heading, text, images in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if text:
            parts.append(f"<pre>{html.escape(text)}</pre>")
        parts += [f"<img alt='{html.escape(heading)}' src='{data_url(image)}'>" for image in images]
    parts.append("</body></html>")
    return "\n".join(parts)
