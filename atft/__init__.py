"""ATFT-GAT-FAN retraining platform: the library. Stages are importable and testable on their own.

This package must not import Prefect; orchestration lives in ``flows/``.
"""

import os
import sys

__version__ = "0.1.0"

# libgomp reads its spin count once, when torch loads it: set here, before any module of the library imports torch,
# so that a waiting thread sleeps soon instead of taking a core on a busy host (see ``atft.threads``). An explicit
# setting in the environment wins; a process that loaded torch first keeps whatever libgomp read then.
if "torch" not in sys.modules:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
GOMP_SPINCOUNT_AT_TORCH_LOAD: str | None = os.environ.get("GOMP_SPINCOUNT")
