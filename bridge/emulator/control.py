"""The emulator's own API under ``/emulator/`` (shared/design.md §9); never authenticated.

- ``GET /emulator/events?channel_id=&source=&limit=&offset=`` -> ``{"total", "events"}``;
  ``DELETE /emulator/events`` -> 204 (the JSON-lines file is kept).
- ``POST /emulator/faults`` -> 201 ``{"id"}``; ``GET`` lists; ``DELETE`` clears -> 204;
  ``DELETE /emulator/faults/{id}`` -> 204 or 404.
- ``GET /emulator/stats`` -> counters; ``DELETE /emulator/stats`` resets them -> 204.
- ``POST /emulator/sources/{source_id}/status`` ``{"status", "error_info"}`` -> 200 + source.
- ``DELETE /emulator/tokens`` revokes every token the IAM endpoint issued -> 200
  ``{"revoked": n}`` (fixed ``--token`` values stay valid).
- ``GET /emulator/health`` -> 200 ``{"ok": true}`` (for container health checks).
"""

from __future__ import annotations

from aiohttp import web

from bridge.emulator import rules
from bridge.emulator.context import json_response, no_content, read_json, state_of
from bridge.emulator.errors import invalid_params, not_found
from bridge.emulator.faults import parse_fault
from bridge.emulator.store import SOURCE_STATUSES, Stats

DEFAULT_EVENTS_LIMIT = 1000
MAX_EVENTS_LIMIT = 1_000_000


async def list_events(request: web.Request) -> web.Response:
    """Accepted events, oldest first; ``total`` counts every match (design §9).

    Query: ``channel_id`` and ``source`` (exact, optional), ``limit`` 0..1,000,000 (default
    1000), ``offset`` >= 0 (past the end: an empty list). Bad numbers: 400 ``EG.00513000``.
    """
    query = request.query
    limit = rules.int_param(query, "limit", DEFAULT_EVENTS_LIMIT, 0, MAX_EVENTS_LIMIT)
    offset = rules.int_param(query, "offset", 0, 0, 2**62)
    events = state_of(request).events
    total, rows = events.query(query.get("channel_id"), query.get("source"), offset, limit)
    return json_response({"total": total, "events": rows})


async def clear_events(request: web.Request) -> web.Response:
    """Forget every stored event (the JSON-lines file is not truncated)."""
    state_of(request).events.records.clear()
    return no_content()


async def add_fault(request: web.Request) -> web.Response:
    """Activate a fault (:func:`bridge.emulator.faults.parse_fault`); 201 ``{"id"}``."""
    fault = parse_fault(await read_json(request))
    state_of(request).faults.add(fault)
    return json_response({"id": fault.id}, status=201)


async def list_faults(request: web.Request) -> web.Response:
    """The active faults, oldest first: ``{"faults": [...]}``."""
    return json_response({"faults": state_of(request).faults.to_json()})


async def clear_faults(request: web.Request) -> web.Response:
    """Deactivate every fault."""
    state_of(request).faults.clear()
    return no_content()


async def delete_fault(request: web.Request) -> web.Response:
    """Deactivate one fault; 404 ``EG.00014040`` if it is not active."""
    fault_id = request.match_info["fault_id"]
    if not state_of(request).faults.remove(fault_id):
        raise not_found(f"fault {fault_id}")
    return no_content()


async def get_stats(request: web.Request) -> web.Response:
    """The counters of :class:`bridge.emulator.store.Stats`, e.g. ``put_events_requests``."""
    return json_response(state_of(request).stats.to_json())


async def reset_stats(request: web.Request) -> web.Response:
    """Reset every counter to 0."""
    state_of(request).stats = Stats()
    return no_content()


async def set_source_status(request: web.Request) -> web.Response:
    """Set a source's ``status`` (CREATE_FAILED|RUNNING|ERROR) and ``error_info`` (an
    object, default ``{}``) as EG would report them (eg-api §3.2); 404 unknown source."""
    source = state_of(request).store.find_source(request.match_info["source_id"])
    body = rules.require_object(await read_json(request))
    status, error_info = body.get("status"), body.get("error_info") or {}
    problems = [] if status in SOURCE_STATUSES else [f"status: one of {SOURCE_STATUSES}"]
    if not isinstance(error_info, dict):
        problems.append("error_info: must be a JSON object")
    if problems:
        raise invalid_params(*problems)
    source.status, source.error_info = str(status), error_info
    return json_response(source.to_json())


async def revoke_tokens(request: web.Request) -> web.Response:
    """Revoke every issued token, as a password change does on IAM (eg-api §2.1); later
    requests with them get 401 ``APIGW.0301`` "decrypt token fail"."""
    return json_response({"revoked": state_of(request).tokens.revoke_issued()})


async def health(request: web.Request) -> web.Response:
    """200 ``{"ok": true}`` while the emulator serves."""
    return json_response({"ok": True})


def add_routes(app: web.Application) -> None:
    """Register the ``/emulator/`` routes."""
    app.router.add_routes(
        [
            web.get("/emulator/events", list_events),
            web.delete("/emulator/events", clear_events),
            web.post("/emulator/faults", add_fault),
            web.get("/emulator/faults", list_faults),
            web.delete("/emulator/faults", clear_faults),
            web.delete("/emulator/faults/{fault_id}", delete_fault),
            web.get("/emulator/stats", get_stats),
            web.delete("/emulator/stats", reset_stats),
            web.post("/emulator/sources/{source_id}/status", set_source_status),
            web.delete("/emulator/tokens", revoke_tokens),
            web.get("/emulator/health", health),
        ]
    )
