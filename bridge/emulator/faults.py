"""Fault injection of the EG emulator (shared/design.md §9, ``POST /emulator/faults``).

A fault matches requests by ``path`` (the kind of ``/v1`` request: ``events`` = PutEvents,
``sources``, ``channels``, ``auth`` = the auth check of every ``/v1`` request, ``*`` = every
``/v1`` request at its path stage; and ``iam`` = the IAM endpoint ``POST /v3/auth/tokens``).
Matching faults apply in creation order: each adds its latency and ``Retry-After``; the first
with a ``status`` answers the request with that error. ``event_ids`` faults apply inside
PutEvents only to requests carrying one of their ids. Every match decrements ``count``; a
fault disappears when its count reaches 0.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from bridge.emulator import errors
from bridge.emulator.errors import ApiError, JsonObject, invalid_params

FAULT_PATHS = ("events", "sources", "channels", "auth", "iam", "*")
_FAULT_KEYS = ("path", "status", "error_code", "count", "retry_after", "latency_ms", "event_ids")


@dataclass
class Fault:
    """One injected fault; see :func:`parse_fault` for the field rules."""

    path: str = "events"
    status: int | None = None
    error_code: str | None = None
    count: int | None = None
    retry_after: int | str | None = None
    latency_ms: int = 0
    event_ids: frozenset[str] | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def error(self) -> ApiError | None:
        """The error this fault answers with, or None when it has no ``status``."""
        if self.status is None:
            return None
        code, msg = errors.status_default(self.status)
        return ApiError(self.status, self.error_code or code, msg, "injected by the emulator")

    def event_error(self) -> tuple[str, str]:
        """``(error_code, error_msg)`` for an event named in ``event_ids`` (default
        ``EG.00513000``, design §9)."""
        return self.error_code or errors.INVALID_PARAMS, "Injected event failure"

    def to_json(self) -> JsonObject:
        """The fault as listed by ``GET /emulator/faults`` (``count`` is what remains)."""
        ids = sorted(self.event_ids) if self.event_ids is not None else None
        return {**{k: getattr(self, k) for k in _FAULT_KEYS[:-1]}, "event_ids": ids, "id": self.id}


def _is_int(value: object, low: int, high: int | None = None) -> bool:
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    return low <= value and (high is None or value <= high)


def _problems(body: JsonObject) -> list[str]:
    problems = [f"{key}: unknown field" for key in body if key not in _FAULT_KEYS]
    checks: list[tuple[str, bool, str]] = [
        ("path", body.get("path", "events") in FAULT_PATHS, f"one of {', '.join(FAULT_PATHS)}"),
        ("status", body.get("status") is None or _is_int(body["status"], 400, 599), "400..599"),
        ("count", body.get("count") is None or _is_int(body["count"], 1), "an integer >= 1"),
        ("latency_ms", _is_int(body.get("latency_ms", 0), 0), "an integer >= 0"),
        ("error_code", _opt_text(body.get("error_code")), "a non-empty string"),
        ("retry_after", _retry_after_ok(body.get("retry_after")), "an integer >= 0 or a string"),
        ("event_ids", _ids_ok(body.get("event_ids")), "a non-empty list of strings"),
    ]
    problems += [f"{key}: must be {rule}" for key, ok, rule in checks if not ok]
    return problems


def _opt_text(value: object) -> bool:
    return value is None or (isinstance(value, str) and value != "")


def _retry_after_ok(value: object) -> bool:
    return _opt_text(value) or _is_int(value, 0)


def _ids_ok(value: object) -> bool:
    if value is None:
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def parse_fault(body: object) -> Fault:
    """Validate a ``POST /emulator/faults`` body (design §9) into a :class:`Fault`.

    Args:
        body: JSON object with optional keys ``path`` (default "events"), ``status``
            (400..599 or null), ``error_code`` (str; default by status, see
            :func:`bridge.emulator.errors.status_default`), ``count`` (int >= 1 or null =
            until deleted), ``retry_after`` (int >= 0 or str, sent verbatim as
            ``Retry-After``), ``latency_ms`` (int >= 0, milliseconds), ``event_ids``
            (non-empty list of event ids; needs path "events" and no status).

    Raises:
        ApiError: 400 ``EG.00513000`` naming every bad or unknown field, or a fault that
            would do nothing (no status, no latency, no event_ids).
    """
    if not isinstance(body, dict):
        raise invalid_params("body: must be a JSON object")
    problems = _problems(body)
    per_event = body.get("event_ids") is not None
    if per_event and (body.get("path", "events") != "events" or body.get("status") is not None):
        problems.append("event_ids: only with path 'events' and without status")
    if not problems and not (body.get("status") or body.get("latency_ms") or body.get("event_ids")):
        problems.append("fault has no effect: set status, latency_ms or event_ids")
    if problems:
        raise invalid_params(*problems)
    fields: dict[str, Any] = {k: body[k] for k in _FAULT_KEYS if body.get(k) is not None}
    if "event_ids" in fields:
        fields["event_ids"] = frozenset(fields["event_ids"])
    return Fault(**fields)


def _path_matches(fault_path: str, kind: str) -> bool:
    if kind in ("auth", "iam"):
        return fault_path == kind
    return fault_path in (kind, "*")


class FaultTable:
    """The active faults in creation order; not thread-safe (one event loop)."""

    def __init__(self) -> None:
        self._faults: dict[str, Fault] = {}

    def add(self, fault: Fault) -> None:
        """Activate ``fault`` after the existing ones."""
        self._faults[fault.id] = fault

    def remove(self, fault_id: str) -> bool:
        """Deactivate the fault ``fault_id``; False if there is none."""
        return self._faults.pop(fault_id, None) is not None

    def clear(self) -> None:
        """Deactivate every fault."""
        self._faults.clear()

    def to_json(self) -> list[JsonObject]:
        """The active faults, oldest first."""
        return [fault.to_json() for fault in self._faults.values()]

    def _consume(self, fault: Fault) -> None:
        if fault.count is not None:
            fault.count -= 1
            if fault.count <= 0:
                self._faults.pop(fault.id, None)

    def take(self, kind: str) -> list[Fault]:
        """Consume the request-level faults matching ``kind`` ("events", "sources",
        "channels", "auth", "iam" or "other"), up to and including the first with a status."""
        taken: list[Fault] = []
        for fault in list(self._faults.values()):
            if fault.event_ids is None and _path_matches(fault.path, kind):
                self._consume(fault)
                taken.append(fault)
                if fault.status is not None:
                    break
        return taken

    def take_for_events(self, event_ids: set[str]) -> dict[str, Fault]:
        """Consume the ``event_ids`` faults naming one of ``event_ids``; map each named id
        to the oldest such fault."""
        chosen: dict[str, Fault] = {}
        for fault in list(self._faults.values()):
            hits = (fault.event_ids or frozenset()) & event_ids
            if hits - chosen.keys():
                self._consume(fault)
                chosen.update({i: fault for i in hits if i not in chosen})
        return chosen


async def apply_faults(faults: list[Fault], headers: dict[str, str]) -> ApiError | None:
    """Wait the faults' summed latency (``asyncio.sleep``, so other requests proceed), put
    their ``Retry-After`` into ``headers`` and return the error of the one with a status."""
    delay_ms = sum(fault.latency_ms for fault in faults)
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
    for fault in faults:
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
    return next((err for fault in faults if (err := fault.error()) is not None), None)
