"""EG API shapes and limits shared by the client and the emulator (shared/eg-api.md)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import ErrorKind

MAX_EVENTS_PER_REQUEST = 20
"""EG limit: 20 events per PutEvents request (shared/eg-api.md §5)."""
MAX_EVENT_BYTES = 64 * 1024
"""EG limit: 64 KiB per event, its compact JSON encoding (eg-api.md §5, design §6)."""
MAX_REQUEST_BYTES = 256 * 1024
"""EG limit: 256 KiB per PutEvents request body, ``{"events":[...]}`` included (eg-api.md §5)."""

SERVER_ERROR_CODES = frozenset({"00015000"})
"""Per-event codes that mean "EG failed, try again" (design §7); compared without ``EG.``."""


def normalise_code(code: str) -> str:
    """``"EG.00015000"`` and ``"00015000"`` both become ``"00015000"`` (eg-api.md §5 shows
    both spellings)."""
    return code[3:] if code[:3].upper() == "EG." else code


def classify_event_code(code: str) -> ErrorKind:
    """Fate of one event from its PutEvents ``error_code`` (design §7): server-error codes are
    transient, every other code (known or not) is permanent for that event."""
    if normalise_code(code) in SERVER_ERROR_CODES:
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


@dataclass(frozen=True, slots=True)
class EventFailure:
    """One rejected event of a PutEvents response."""

    error_code: str
    error_msg: str

    @property
    def kind(self) -> ErrorKind:
        """Transient or permanent, per :func:`classify_event_code`."""
        return classify_event_code(self.error_code)


@dataclass(frozen=True, slots=True)
class PutEventsResult:
    """Per-event outcome of one PutEvents call, keyed by ``event_id`` (never by position:
    eg-api.md §5 and §8.6).

    Attributes:
        accepted: ids whose entry has an empty ``error_code``.
        failed: id -> failure for entries with a non-empty ``error_code``.
        request_id: the ``X-Request-Id`` response header.
    """

    accepted: frozenset[str]
    failed: Mapping[str, EventFailure] = field(default_factory=dict)
    request_id: str = ""

    @classmethod
    def parse(cls, body: Mapping[str, Any], request_id: str = "") -> PutEventsResult:
        """Build from a response body ``{"failed_count": n, "events": [{"event_id",
        "error_code", "error_msg"}...]}``; ``failed_count`` is ignored (it can disagree with
        the entries, eg-api.md §8.6)."""
        accepted: set[str] = set()
        failed: dict[str, EventFailure] = {}
        for entry in body.get("events") or ():
            if not isinstance(entry, Mapping) or not isinstance(entry.get("event_id"), str):
                continue
            code = entry.get("error_code")
            if code:
                msg = str(entry.get("error_msg") or "")
                failed[entry["event_id"]] = EventFailure(str(code), msg)
            else:
                accepted.add(entry["event_id"])
        return cls(frozenset(accepted), failed, request_id)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date, RFC 9110
    §10.2.3); None when absent, unparsable or already past."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value) if int(value) > 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    delta = when.timestamp() - (time.time() if now is None else now)
    return delta if delta > 0 else None
