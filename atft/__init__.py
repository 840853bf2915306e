"""ATFT-GAT-FAN retraining platform: the library. Stages are importable and testable on their own.

This package must not import Prefect; orchestration lives in ``flows/``.
"""

__version__ = "0.1.0"
