"""What can go wrong with a registry, by who has to act: the caller's request, a publish, or a stored version."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas-heavy; the CLI's list and show never need it
    from schemas.contract import ContractDiff


class RegistryError(Exception):
    """A request the registry cannot serve: unknown version, nothing published, no champion to roll back to."""


class EmptyRegistry(RegistryError):
    def __init__(self, location: str) -> None:
        super().__init__(f"the registry at {location} is empty: nothing has been published yet")


class PublishRefused(RegistryError):
    """A staged result that must not become a version: gates failed, wrong manifest, incomplete metadata."""


class CheckpointRefused(RegistryError):
    """A stored version that must not be loaded: modified files, a pickle, or a feature table it does not fit.

    ``diff`` is set when the refusal is a feature contract mismatch, and says which columns differ and how.
    """

    def __init__(self, message: str, diff: ContractDiff | None = None) -> None:
        super().__init__(message)
        self.diff = diff
