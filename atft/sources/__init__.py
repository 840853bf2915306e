"""Market-data sources. Each yields canonical J-Quants-shaped quote chunks; see ``base``."""

from __future__ import annotations

from atft.calendar import TradingCalendar
from atft.config import FilesSourceConfig, JQuantsSourceConfig, SourceConfig, SyntheticSourceConfig
from atft.sources.base import MarketSource


def build_source(config: SourceConfig, calendar: TradingCalendar) -> MarketSource:
    """The source a pipeline config names. Modules are imported on use: each pulls its own dependencies."""
    if isinstance(config, SyntheticSourceConfig):
        from atft.sources.synthetic import SyntheticSource

        return SyntheticSource(config, calendar)
    if isinstance(config, FilesSourceConfig):
        from atft.sources.files import FilesSource

        return FilesSource(config, calendar)
    if isinstance(config, JQuantsSourceConfig):
        from atft.sources.jquants import JQuantsSource

        return JQuantsSource(config, calendar)
    raise TypeError(f"no source for config {type(config).__name__}")
