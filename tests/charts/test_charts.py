"""Pictures: each chart is a real PNG with something drawn on it, and the HTML page carries its images inline."""

from __future__ import annotations

import base64
import io
import re

import matplotlib.image
import numpy as np
import pandas as pd

from atft import charts


def _pixels(image: bytes) -> np.ndarray:
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    return matplotlib.image.imread(io.BytesIO(image), format="png")


def _drawn(image: bytes) -> float:
    """The share of pixels that are not the white background."""
    pixels = _pixels(image)[..., :3]
    return float((pixels < 0.95).any(axis=-1).mean())


def test_every_chart_is_a_png_with_lines_on_it() -> None:
    days = pd.Index(pd.bdate_range("2024-01-01", periods=40).date, name="Date")
    rng = np.random.default_rng(0)
    history = [{"epoch": e, "member": m, "train_loss": 1.0 / e, "valid_rank_ic": {"1": 0.01 * e, "5": 0.02 * e}}
               for m in (0, 1) for e in (1, 2, 3)]  # fmt: skip
    series = pd.Series(rng.normal(0.05, 0.1, len(days)), index=days)
    images = [
        charts.training_curves(history),
        charts.daily_rank_ic_and_equity({"model": series}, {"model": (1 + series / 100).cumprod()}, "5d"),
        charts.rolling_rank_ic(series, 10, 0.0, 0.08, "realised"),
        charts.input_weights(pd.Series(rng.random(30), index=[f"x{i}" for i in range(30)]),
                             {f"x{i}": ("returns", "volume")[i % 2] for i in range(30)}, shown=12),
    ]  # fmt: skip
    for image in images:
        assert _pixels(image).shape[0] > 200 and 0.02 < _drawn(image) < 0.9


def test_the_html_page_embeds_its_images_and_escapes_its_text() -> None:
    image = charts.rolling_rank_ic(pd.Series([0.1, -0.1, 0.2]), 2, 0.0, None, "t")
    page = charts.html_page("A <report>", [("Record", "RankIC < 0.1 & more", [image])])
    assert "A &lt;report&gt;" in page and "RankIC &lt; 0.1 &amp; more" in page
    (embedded,) = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert base64.b64decode(embedded) == image
