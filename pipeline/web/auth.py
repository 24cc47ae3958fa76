"""The bearer token every Vigil HTTP app asks for: ``Authorization: Bearer <token>``.

One rule for every endpoint that takes a token: a change with no token configured is refused (403: the
app is read-only); otherwise a missing or wrong token is 401 with ``WWW-Authenticate: Bearer``. The
token is compared in constant time and never echoed. ``setting`` names the config key in the message.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Header, HTTPException
from pydantic import SecretStr


def check_bearer(token: SecretStr | None, authorization: str | None, *, change: bool, setting: str,
                 app: str) -> None:
    """Raise the :class:`HTTPException` (401/403) that refuses this request to ``app``, if any."""
    secret = token.get_secret_value() if token is not None else None
    if secret is None:
        if change:
            raise HTTPException(403, f"{app} is read-only: set {setting} (write ${{VAR}}) to allow changes")
        return
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise HTTPException(401, f"a valid token is needed: send Authorization: Bearer <{setting}>",
                            headers={"WWW-Authenticate": "Bearer"})


def bearer(token: SecretStr | None, *, change: bool, setting: str, app: str,
           required: bool = True) -> Callable[..., None]:
    """A FastAPI dependency (``dependencies=[Depends(...)]``) applying :func:`check_bearer`;
    ``required=False``: no check at all (e.g. reads, unless the app protects them too)."""

    def dependency(authorization: Annotated[str | None, Header()] = None) -> None:
        if required:
            check_bearer(token, authorization, change=change, setting=setting, app=app)

    return dependency
