"""What every emulator handler needs: the shared state and JSON request/response helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from bridge.emulator.auth import Authenticator, allow_all
from bridge.emulator.errors import bad_json
from bridge.emulator.eventlog import EventLog
from bridge.emulator.faults import FaultTable
from bridge.emulator.jsonio import dumps
from bridge.emulator.store import Project, Stats, Store
from bridge.emulator.tokens import TokenBook


@dataclass
class EmulatorState:
    """The emulator's state, one per application.

    Attributes:
        store: projects with their channels and sources.
        events: accepted events (and the optional JSON-lines file).
        faults: the active injected faults.
        stats: request and event counters.
        authenticate: the auth check of every ``/v1`` request.
        tokens: fixed and IAM-issued tokens (mode ``token``).
        iam_users: (domain, user) -> password for ``POST /v3/auth/tokens``.
    """

    store: Store
    events: EventLog
    faults: FaultTable = field(default_factory=FaultTable)
    stats: Stats = field(default_factory=Stats)
    authenticate: Authenticator = allow_all
    tokens: TokenBook = field(default_factory=lambda: TokenBook((), 86400))
    iam_users: dict[tuple[str, str], str] = field(default_factory=dict)


STATE = web.AppKey("eg_emulator_state", EmulatorState)


def state_of(request: web.Request) -> EmulatorState:
    """The :class:`EmulatorState` of the request's application."""
    return request.app[STATE]


def project_of(request: web.Request) -> Project:
    """The project named by the ``{project_id}`` path segment, else 404 ``EG.00014040``."""
    return state_of(request).store.project(request.match_info["project_id"])


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response serialised with orjson."""
    return web.Response(body=dumps(data), status=status, content_type="application/json")


def no_content() -> web.Response:
    """An empty 204 response."""
    return web.Response(status=204)


async def read_json(request: web.Request) -> Any:
    """The request body parsed as JSON.

    Raises:
        ApiError: 400 ``EG.00014000`` when the body is empty or not valid JSON.
    """
    return parse_json(await request.read())


def parse_json(raw: bytes) -> Any:
    """``raw`` parsed as JSON, else 400 ``EG.00014000``."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_json(str(exc)) from None


EXTRA_HEADERS: web.RequestKey[dict[str, str]] = web.RequestKey("eg_emulator_extra_headers")
"""Headers (e.g. a fault's ``Retry-After``) the middleware adds to the request's response."""


def extra_headers(request: web.Request) -> dict[str, str]:
    """The mutable extra response headers of ``request`` (set by the middleware)."""
    return request[EXTRA_HEADERS]

