"""The ``console:`` section: the web console and REST API."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator

from pipeline.core.config.base import Strict


class ConsoleConfig(Strict):
    """The web console and REST API (``vigil run``, ``vigil console``); see :mod:`pipeline.console`."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535, description="0 picks a free port.")] = 8080
    token: SecretStr | None = Field(default=None, description=(
        "Bearer token every change needs (write ${VAR}; at least 16 characters); unset or empty: the "
        "console is read-only."))
    token_for_reads: bool = Field(default=False, description="Ask for the token on reads too.")
    preview_width: Annotated[int, Field(ge=64, le=3840, description=(
        "Width of the camera pictures ingest keeps for the console (height follows the aspect)."))] = 640
    preview_fps: Annotated[float, Field(gt=0, le=10, description="Pictures per camera and second, at most.")] = 1.0
    preview_ttl_s: Annotated[float, Field(gt=0, description=(
        "How long a picture stays in Redis: a camera that stops delivering shows none after this."))] = 10.0


    @field_validator("token")
    @classmethod
    def _token_long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None or not token.get_secret_value():
            return None  # "${CONSOLE_TOKEN:-}" where the variable is unset: no token, a read-only console
        if len(token.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (use a random token: openssl rand -hex 24)")
        return token
