"""The checkpoint registry: immutable, checksummed versions of trained models, a champion, one-call rollback.

``Registry(path).publish(...)`` turns a staged training result into a version; ``load()`` returns the
champion's model after verifying every file and, given a connection, the feature table's columns.
``python -m atft.registry`` lists, shows, verifies and rolls back from the command line.
"""

from __future__ import annotations

from atft.registry.errors import CheckpointRefused, EmptyRegistry, PublishRefused, RegistryError
from atft.registry.registry import WINDOW_KEYS, ChampionState, LoadedCheckpoint, Registry, VersionRecord
from atft.registry.storage import LocalStorage, Storage

__all__ = [
    "WINDOW_KEYS",
    "ChampionState",
    "CheckpointRefused",
    "EmptyRegistry",
    "LoadedCheckpoint",
    "LocalStorage",
    "PublishRefused",
    "Registry",
    "RegistryError",
    "Storage",
    "VersionRecord",
]
