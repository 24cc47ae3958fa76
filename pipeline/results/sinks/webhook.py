"""POST batches of records as a JSON array; retry with jittered backoff until the server takes them.

Delivery is at-least-once: a batch is retried until a 2xx answer, so the server may see a batch
twice when it took it but the answer was lost (timeout, connection reset). Each record carries
``stream`` + ``frame_id``, a unique key receivers can deduplicate on. 4xx answers other than 408/429
are not retried: the request itself is wrong, and retrying would block the sink forever. They raise
:class:`~pipeline.core.errors.SinkRejectedError` with the status; the sink runner then delivers the
batch's other records and sets aside those refused on their own (:mod:`pipeline.results.delivery`).
5xx, 408, 429, timeouts and connection errors are retried here, with backoff, until the sink closes.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

import httpx

from pipeline.core.backoff import Backoff
from pipeline.core.config import WebhookSinkConfig
from pipeline.core.errors import SinkError, SinkRejectedError
from pipeline.core.redact import redact_url
from pipeline.results.record import ResultRecord

log = logging.getLogger(__name__)


class WebhookPoster:
    """One HTTP client with the retry policy; shared by the webhook and events sinks."""

    def __init__(self, url: str, timeout_s: float, headers: dict[str, str] | None = None, *,
                 backoff: Backoff,
                 stop: threading.Event | None = None) -> None:
        self.url, self.timeout_s, self.headers = url, timeout_s, headers or {}
        self._backoff = backoff
        self.stop = stop or threading.Event()
        self._client: httpx.Client | None = None
        self.retries = 0

    def open(self) -> None:
        self._client = httpx.Client(timeout=self.timeout_s, headers=self.headers)

    def close(self) -> None:
        self.stop.set()
        if self._client is not None:
            self._client.close()
            self._client = None

    def post(self, payload: list[dict[str, Any]]) -> None:
        """POST until accepted. Raises SinkRejectedError when the receiver refuses the batch for good (a 4xx
        other than 408/429), SinkError only if the sink is closing."""
        if self._client is None:
            raise SinkError(f"webhook {redact_url(self.url)} is not open")
        self._backoff.reset()
        while True:
            try:
                resp = self._client.post(self.url, json=payload)
                if resp.is_success:
                    return
                if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                    reason = f"HTTP {resp.status_code} {resp.reason_phrase}".strip()
                    raise SinkRejectedError(f"webhook {redact_url(self.url)} rejected a batch of {len(payload)}: "
                                            f"{reason}", f"webhook {redact_url(self.url)}: {reason}",
                                            status=resp.status_code)
                why = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}"
            delay = self._backoff.next_delay_s()
            self.retries += 1
            log.warning("webhook %s: %s; retry %d in %.1fs", redact_url(self.url), why, self._backoff.attempt, delay)
            if self.stop.wait(delay):
                raise SinkError(f"webhook {redact_url(self.url)}: stopped while retrying ({why})")


class WebhookSink:
    def __init__(self, cfg: WebhookSinkConfig) -> None:
        self._poster = WebhookPoster(cfg.url, cfg.timeout_s, cfg.headers,
                                     backoff=Backoff(cfg.backoff_base_s, cfg.backoff_cap_s))

    def __enter__(self) -> WebhookSink:
        self._poster.open()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._poster.close()

    def write(self, records: list[ResultRecord]) -> None:
        self._poster.post([r.as_dict() for r in records])
