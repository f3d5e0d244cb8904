"""PutEvents of the emulator: ``POST /v1/{project_id}/channels/{channel_id}/events``.

Request-level problems fail the whole request; per-event problems fail only that event
(200 with per-event results, in request order). Limits and codes: shared/eg-api.md §5, §8.
"""

from __future__ import annotations

from aiohttp import web

from bridge.emulator import errors
from bridge.emulator.context import (
    extra_headers,
    json_response,
    parse_json,
    project_of,
    state_of,
)
from bridge.emulator.errors import ApiError, JsonObject, invalid_params
from bridge.emulator.faults import apply_faults
from bridge.emulator.jsonio import dumps

MAX_EVENTS = 20
"""EG limit: 20 events per request (eg-api §5)."""
MAX_REQUEST_BYTES = 256 * 1024
"""EG limit: 256 KiB per request, measured on the raw body (eg-api §5, design §6)."""
MAX_EVENT_BYTES = 64 * 1024
"""EG limit: 64 KiB per event, measured on its compact JSON encoding (eg-api §5, design §6)."""
REQUIRED_ATTRIBUTES = ("id", "source", "specversion", "type")

EventResult = tuple[str, str] | None
"""``(error_code, error_msg)`` of a failed event, None for an accepted one."""


async def _read_body(request: web.Request) -> bytes:
    too_large = ApiError(
        400,
        errors.REQUEST_TOO_LARGE,
        "The total size of a request's all events is too large.",
        f"the request body exceeds {MAX_REQUEST_BYTES} bytes",
    )
    if (request.content_length or 0) > MAX_REQUEST_BYTES:
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    if len(raw) > MAX_REQUEST_BYTES:
        raise too_large
    return raw


def _events_of(body: object) -> list[object]:
    """The ``events`` list: 400 ``EG.00513000`` if missing, empty or not a list; 400
    ``EG.00533013`` beyond 20 events."""
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list) or not events:
        raise invalid_params("events: required, a non-empty list of CloudEvents")
    if len(events) > MAX_EVENTS:
        detail = f"{len(events)} events in one request, the limit is {MAX_EVENTS}"
        raise ApiError(400, errors.TOO_MANY_EVENTS, "Too many events for a request.", detail)
    return events


def check_event(event: object) -> EventResult:
    """Per-event checks: a JSON object of at most 64 KiB (``EG.00533012``) with non-empty
    string ``id``/``source``/``specversion``/``type``, ``data`` absent, null or an object,
    and no ``data_base64`` (``EG.00513000``, naming each bad attribute). Unknown keys pass."""
    if not isinstance(event, dict):
        return errors.INVALID_PARAMS, "Invalid event: must be a JSON object"
    size = len(dumps(event))
    if size > MAX_EVENT_BYTES:
        return errors.EVENT_TOO_LARGE, f"An event is too large: {size} > {MAX_EVENT_BYTES} bytes"
    bad = [f"{k}: required, a non-empty string" for k in REQUIRED_ATTRIBUTES if not _text(event, k)]
    if event.get("data") is not None and not isinstance(event["data"], dict):
        bad.append("data: must be a JSON object")
    if "data_base64" in event:
        bad.append("data_base64: not supported, send data as a JSON object")
    return (errors.INVALID_PARAMS, "Invalid event: " + "; ".join(bad)) if bad else None


def _text(event: JsonObject, key: str) -> bool:
    value = event.get(key)
    return isinstance(value, str) and value != ""


def _valid(events: list[object], results: list[EventResult]) -> list[tuple[int, JsonObject]]:
    """``(index, event)`` of every event that passed its checks so far."""
    pairs = zip(events, results, strict=True)
    return [(i, e) for i, (e, r) in enumerate(pairs) if r is None and isinstance(e, dict)]


def _check_sources(valid: list[tuple[int, JsonObject]], known: set[str], channel_id: str) -> None:
    """404 ``EG.00014040`` for the whole request when a valid event's ``source`` is not a
    custom source of the channel (eg-api §5 NOT FOUND; design §7 treats it as fatal)."""
    unknown = sorted({str(event["source"]) for _, event in valid} - known)
    if unknown:
        msg = f"Not request resource found: event source {unknown[0]!r} is not a custom source"
        detail = f"sources {unknown} are not custom sources of channel {channel_id}"
        raise ApiError(404, errors.NOT_FOUND, f"{msg} of channel {channel_id}", detail)


def _event_id(event: object) -> str | None:
    value = event.get("id") if isinstance(event, dict) else None
    return value if isinstance(value, str) else None


async def _inject(
    request: web.Request, valid: list[tuple[int, JsonObject]], results: list[EventResult]
) -> None:
    """Fail the valid events named by ``event_ids`` faults, applying those faults' latency
    and ``Retry-After``."""
    chosen = state_of(request).faults.take_for_events({str(e["id"]) for _, e in valid})
    if not chosen:
        return
    await apply_faults(list({f.id: f for f in chosen.values()}.values()), extra_headers(request))
    for index, event in valid:
        fault = chosen.get(str(event["id"]))
        if fault is not None:
            results[index] = fault.event_error()


async def put_events(request: web.Request) -> web.Response:
    """``POST /v1/{p}/channels/{channel_id}/events`` (eg-api §5).

    Returns 200 ``{"failed_count": n, "events": [{"event_id", "error_code", "error_msg"}]}``
    in request order; accepted events are stored (no de-duplication).

    Raises:
        ApiError: 404 unknown project/channel or event source; 400 ``EG.00533007`` body over
            256 KiB; 400 ``EG.00014000`` invalid JSON; 400 ``EG.00513000`` bad ``events``;
            400 ``EG.00533013`` more than 20 events.
    """
    state, project = state_of(request), project_of(request)
    channel_id = project.channel(request.match_info["channel_id"]).id
    events = _events_of(parse_json(await _read_body(request)))
    results = [check_event(event) for event in events]
    _check_sources(_valid(events, results), project.source_names(channel_id), channel_id)
    await _inject(request, _valid(events, results), results)
    accepted = [event for _, event in _valid(events, results)]
    state.events.append(channel_id, accepted)
    state.stats.events_accepted += len(accepted)
    state.stats.events_failed += len(events) - len(accepted)
    entries = [
        {"event_id": _event_id(e), "error_code": r and r[0], "error_msg": r and r[1]}
        for e, r in zip(events, results, strict=True)
    ]
    return json_response({"failed_count": len(events) - len(accepted), "events": entries})


def add_routes(app: web.Application) -> None:
    """Register the PutEvents route."""
    app.router.add_post("/v1/{project_id}/channels/{channel_id}/events", put_events)
