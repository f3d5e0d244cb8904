"""The exception tree of eg-bridge.

Every error the bridge raises on purpose derives from :class:`BridgeError`; driver and HTTP
library errors are mapped to one of these at the module boundary that sees them, so callers
never catch aiohttp, aiormq or ctypes errors::

    BridgeError
    ├── ConfigError                 bad configuration; ``.problems`` lists every bad field
    ├── ConversionError             a message cannot become a CloudEvent (permanent, dead-letter)
    ├── EventGridError              EG answered with an error body (status, error_code, ...)
    ├── TransportError              no answer from EG: network error or timeout (transient)
    ├── RegistrationError           the registered source cannot match the config
    └── ConsumerError               the broker consumer cannot start or run

:class:`ErrorKind` is the fate a failure decides for the messages it touches (design §7):
``TRANSIENT`` retries with backoff, ``PERMANENT`` dead-letters the one event, ``FATAL`` stops
intake until the configuration or the cloud side is fixed.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.StrEnum):
    """How a failure affects delivery (shared/design.md §7)."""

    TRANSIENT = "transient"
    """Retry later with backoff: network, timeout, 429, 5xx, throttling, server-error codes."""
    PERMANENT = "permanent"
    """This event can never be accepted: dead-letter it, ack nothing else because of it."""
    FATAL = "fatal"
    """Every event would fail (401, 403, 404): stop intake, report ERROR, retry slowly."""


class BridgeError(Exception):
    """Root of every error eg-bridge raises on purpose."""


class ConfigError(BridgeError, ValueError):
    """The configuration is invalid.

    Args:
        problems: one human-readable line per bad field or variable, never a secret value.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


class ConversionError(BridgeError, ValueError):
    """A broker message cannot be turned into a CloudEvent (design §6); dead-lettered as
    ``unconvertible``."""


class EventGridError(BridgeError):
    """EG answered a request with an error (shared/eg-api.md §6).

    Args:
        status: the HTTP status code.
        error_code: ``error_code`` of the body (e.g. ``EG.00513001``, ``APIGW.0301``), or ""
            when the body had none.
        error_msg: ``error_msg`` of the body, or a short text of the body.
        request_id: the ``X-Request-Id`` response header (or the body's ``request_id``).
        retry_after_s: the ``Retry-After`` header in seconds when it parsed and lies ahead,
            else None.
        operation: what was asked, e.g. ``"POST /sources at eg.example.com:443"`` (never
            credentials), so the message says where to look.
        hint: what an operator should check, appended to the message (``error_msg`` stays
            EG's own text).
    """

    def __init__(
        self,
        status: int,
        error_code: str = "",
        error_msg: str = "",
        request_id: str = "",
        retry_after_s: float | None = None,
        *,
        operation: str = "",
        hint: str = "",
    ) -> None:
        self.status = status
        self.error_code = error_code
        self.error_msg = error_msg
        self.request_id = request_id
        self.retry_after_s = retry_after_s
        self.operation = operation
        super().__init__(
            f"EG error {status} {error_code or '-'}: {error_msg or '-'}"
            + (f" [{operation}]" if operation else "")
            + (f" ({hint})" if hint else "")
            + (f" (request id {request_id})" if request_id else "")
        )

    @property
    def kind(self) -> ErrorKind:
        """Fate of the request's events by status and code (design §7).

        429, 5xx and APIG throttling (``APIG.0308``) are transient; 401, 403 and 404 are fatal
        for every event; any other 4xx is permanent for what the request carried.
        """
        code = self.error_code.upper()
        if self.status == 429 or self.status >= 500 or code.endswith(".0308"):
            return ErrorKind.TRANSIENT
        if self.status in (401, 403, 404):
            return ErrorKind.FATAL
        return ErrorKind.PERMANENT

    @property
    def reason(self) -> str:
        """The ``publish_failures_total{reason}`` label for this error (design §8)."""
        if self.status == 429 or self.error_code.upper().endswith(".0308"):
            return "throttled"
        if self.status >= 500:
            return "server_error"
        return {401: "auth", 403: "forbidden", 404: "not_found"}.get(self.status, "bad_request")


class TransportError(BridgeError):
    """No usable answer from EG: a connection error or a timeout. Always transient.

    Args:
        reason: ``"timeout"`` or ``"network"`` (the ``publish_failures_total`` label).
        message: what failed, without URLs that could hold credentials.
    """

    kind = ErrorKind.TRANSIENT

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class RegistrationError(BridgeError):
    """The EG source exists but cannot match the config (type or channel differ; both are
    immutable, shared/eg-api.md §3.1), or registration failed for a non-transient reason."""


class ConsumerError(BridgeError):
    """The broker consumer cannot start or keep running (connection refused, queue missing,
    access refused). The message never contains a password."""
