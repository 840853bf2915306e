"""Pandera schemas and column contracts. Everything here compares column names case-sensitively."""
