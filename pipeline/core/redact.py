"""Keep secrets out of logs, metrics and error messages.

Camera and Redis URLs carry credentials (``rtsp://user:pass@host``). Anything that prints a URL
prints ``redact_url(url)`` instead.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^@/]*)@")
_QUERY_SECRET = re.compile(r"(?i)((?:password|passwd|pass|pwd|token|secret|key)=)[^&]*")


def redact_url(url: str) -> str:
    """Return ``url`` with the password (and any secret-looking query values) replaced by ``***``.

    The user name is kept: it helps an operator see which account failed, and is not a secret.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(lambda m: f"{m['scheme']}***@", url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    query = _QUERY_SECRET.sub(r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
