"""Market-data sources. Each yields canonical J-Quants-shaped quote chunks; see ``base``."""
