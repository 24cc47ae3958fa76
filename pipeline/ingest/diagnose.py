"""Why did an open fail? OpenCV only says "not opened"; the operator needs the cause.

Probes that talk to the source directly, with short timeouts and never with the credentials in a
message: a local file's header, a video device, an RTSP server's answer to DESCRIBE (with Basic or
Digest authentication when the URL carries credentials).
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from pipeline.core.config import local_path


@dataclass(frozen=True)
class Diagnosis:
    """Why an open failed, and whether retrying can help (see :class:`~pipeline.core.errors.SourceError`)."""

    reason: str
    permanent: bool = False


def diagnose_open_failure(url: str, timeout_s: float) -> Diagnosis:
    """A short, secret-free cause for a failed open, found by probing the source directly."""
    path = local_path(url)
    if path is not None:
        return Diagnosis(_diagnose_file(path), permanent=True)  # a file does not fix itself
    if url.startswith("/dev/video"):  # a device may be plugged in again, or freed
        return Diagnosis("no such video device" if not Path(url).exists() else "device busy or not a capture device")
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("rtsp", "rtsps"):
        reason = _diagnose_rtsp(url, timeout_s)
        return Diagnosis(reason, permanent=reason in _PERMANENT_RTSP)
    return Diagnosis("FFmpeg could not open the stream (unreachable host, wrong path, or not a video stream)")


def _diagnose_file(path: Path) -> str:
    if not path.exists():
        return "file does not exist"
    if not path.is_file():
        return "not a regular file"
    if path.stat().st_size == 0:
        return "file is empty"
    with path.open("rb") as f:
        head = f.read(12)
    if head[4:8] == b"ftyp":
        return "an MP4/MOV file FFmpeg cannot read: truncated or corrupted (its moov index is missing?)"
    return "not a video file FFmpeg recognises (or its header is corrupted)"


def _rtsp_request(host: str, port: int, uri: str, timeout_s: float, auth: str | None, *,
                  method: str = "DESCRIBE") -> tuple[int, str, str]:
    """One request on a fresh connection: (status, reason, WWW-Authenticate header)."""
    lines = [f"{method} {uri} RTSP/1.0", "CSeq: 1", "User-Agent: vigil-probe"]
    if method == "DESCRIBE":
        lines.append("Accept: application/sdp")
    if auth:
        lines.append(f"Authorization: {auth}")
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    m = re.match(r"RTSP/\d\.\d (\d{3}) ?(.*)", status_line)
    if not m:
        raise ValueError("not an RTSP reply")
    challenge = next((h.split(":", 1)[1].strip() for h in header_lines
                      if h.lower().startswith("www-authenticate:")), "")
    return int(m.group(1)), m.group(2), challenge


def _authorization(challenge: str, user: str, password: str, uri: str) -> str:
    if not challenge.lower().startswith("digest"):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))

    def md5(text: str) -> str:
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    response = md5(f"{md5(f'{user}:{realm}:{password}')}:{nonce}:{md5(f'DESCRIBE:{uri}')}")
    return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}"')


def _where(url: str) -> tuple[str, int, str]:
    """(host, port, request URI without credentials) of an RTSP URL."""
    parts = urlsplit(url)
    host, port = parts.hostname or "localhost", parts.port or (322 if parts.scheme == "rtsps" else 554)
    return host, port, urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, ""))


def rtsp_unreachable(url: str, timeout_s: float) -> str | None:
    """Why the RTSP server at ``url`` cannot be talked to at all (None when it answers, whatever it says)."""
    host, port, uri = _where(url)
    try:
        # OPTIONS, not DESCRIBE: every RTSP server answers it, and it makes none prepare the stream.
        _rtsp_request(host, port, uri, timeout_s, None, method="OPTIONS")
    except (OSError, ValueError) as exc:
        return _unreachable(exc, f"{host}:{port}", timeout_s)
    return None


def _unreachable(exc: OSError | ValueError, where: str, timeout_s: float) -> str:
    """Why a connection to the RTSP server at ``where`` failed, for an operator."""
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {where} (server down or wrong port)"
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} within {timeout_s:g} s (host down, firewalled, or server frozen)"
    return f"cannot talk RTSP to {where}: {getattr(exc, 'strerror', None) or exc}"


def _diagnose_rtsp(url: str, timeout_s: float) -> str:
    parts = urlsplit(url)
    host, port, uri = _where(url)
    where = f"{host}:{port}"
    if parts.scheme == "rtsps":
        return "FFmpeg could not open the TLS stream (unreachable, TLS/certificate or server problem)"
    try:
        status, reason, challenge = _rtsp_request(host, port, uri, timeout_s, None)
        if status == 401 and parts.username is not None:
            auth = _authorization(challenge, unquote(parts.username), unquote(parts.password or ""), uri)
            status, reason, challenge = _rtsp_request(host, port, uri, timeout_s, auth)
            if status == 401:
                return _CREDENTIALS_REJECTED
    except (OSError, ValueError) as exc:
        return _unreachable(exc, where, timeout_s)
    return _STATUS_REASONS.get(status, f"the server answered RTSP {status} {reason}".strip())


_CREDENTIALS_REJECTED = "credentials rejected by the server (RTSP 401 Unauthorized)"
_STATUS_REASONS = {
    401: "the server requires credentials (RTSP 401); put user:password in the URL",
    404: "no stream at this path on the server (RTSP 404 Not Found)",
    200: "the server offers the stream but FFmpeg could not open it (codec or transport problem)",
}

#: Answers that mean the URL or its credentials are wrong: the same request will get the same answer.
_PERMANENT_RTSP = frozenset({_CREDENTIALS_REJECTED, _STATUS_REASONS[401], _STATUS_REASONS[404]})
