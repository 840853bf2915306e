"""Feature engineering: per-date transforms over the stock cross-section."""
