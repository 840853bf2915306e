"""Model data: dense date-major arrays from a feature table, lookback windows, day graphs and day batches."""
