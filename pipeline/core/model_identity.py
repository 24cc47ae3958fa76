"""Which model produced a result: its name and version, as every result record and /healthz say them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelIdentity:
    """A model's ``name`` (``model_name`` metadata, else the file's stem) and ``version`` (``model_version``
    metadata, else the first 12 hex digits of the file's SHA-256): :attr:`ModelRuntime.identity`."""

    name: str
    version: str

    def as_dict(self) -> dict[str, str]:
        """The ``model`` object of a result record: ``{"name": ..., "version": ...}``."""
        return {"name": self.name, "version": self.version}
