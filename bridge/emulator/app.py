"""The EG emulator as an aiohttp application (shared/design.md §9, shared/eg-api.md).

Routes: sources and channels (:mod:`.resources`), PutEvents (:mod:`.publish`) under
``/v1/{project_id}``; IAM ``POST /v3/auth/tokens`` (:mod:`.iam`); the unauthenticated control
API under ``/emulator/`` (:mod:`.control`). Auth modes ``none``/``token``/``aksk``:
:mod:`.auth`.

Every response carries ``X-Request-Id`` (``<uuid hex>-<epoch ms>-<hostname>``, eg-api §1);
every error carries ``{"error_code", "error_msg", "error_details", "request_id"}`` (§6).
A ``/v1`` request passes, in order: auth faults, the auth check (401 ``APIGW.0301``), the
faults of its path, then the handler (which answers 404 ``EG.00014040`` for an unknown
project). Bodies that are not JSON are 400 ``EG.00014000``; an unexpected exception is
logged and answered 500 ``EG.00015000``. Nothing is logged per request.

Choices where eg-api.md is silent (INFERENCE / NOT FOUND there):

- Times: ``created_time``/``updated_time``/``received_at`` are RFC 3339 UTC with
  microseconds and ``Z``. The OFFICIAL ``default`` channel's id is a UUID5 of the project
  id (stable across restarts); ``--channel`` channels exist in every project with the same id.
- Quotas: 10 CUSTOM channels (the OFFICIAL one does not count), 100 sources of which 5
  RABBITMQ and 5 ROCKETMQ -> 403 ``EG.00514003``.
- The OFFICIAL channel cannot be updated or deleted, and a channel still used by sources
  cannot be deleted: 403 ``EG.00514004`` ("resource may not be modified").
- Source create ignores unknown keys; ``detail`` absent is returned as ``{}``. Source update
  changes only ``description``/``detail`` (absent or null = unchanged, ``""`` clears); other
  keys are ignored, except ``name``/``type``/``channel_id`` differing from the source's:
  400 ``EG.00513000`` (immutable) rather than a silent no-op.
- Lists: default sort ``created_time:DESC`` (``sort=field:ASC|DESC`` over created_time,
  updated_time, name); ``fuzzy_name``/``fuzzy_label`` are case-insensitive substrings;
  ``offset`` has no maximum (the documented 100 is not enforced).
- PutEvents checks, in order: channel (404), body > 256 KiB (400 ``EG.00533007``), JSON
  (400 ``EG.00014000``), ``events`` a non-empty list (400 ``EG.00513000``), <= 20 events (400
  ``EG.00533013``), per-event checks, then any valid event whose ``source`` names no custom
  source of the channel fails the whole request (404 ``EG.00014040``). Per event: over 64 KiB
  compact JSON -> ``EG.00533012``; ``id``/``source``/``specversion``/``type`` must be
  non-empty strings, ``data`` absent/null/object, no ``data_base64`` -> ``EG.00513000``.
  ``event_id`` echoes a string id, else null. Request-level errors use the error body shape.
- Channel create ignores unknown keys (``cross_account``, ``policy``); ``eps_id`` is read
  as ``enterprise_project_id`` and both are returned. Auth runs before the project lookup,
  so an unknown project answers 401 to an unauthenticated request. Mode ``token`` with no
  tokens and no IAM users rejects every ``/v1`` request. Each mode accepts only its own
  credential (mode ``aksk`` ignores ``X-Auth-Token``, mode ``token`` ignores signatures),
  and a token works for every configured project, whatever project it was scoped to. The
  IAM endpoint's and the AK/SK verifier's own choices are listed in :mod:`.iam` and
  :mod:`.auth`.
- Fault defaults by status: 400 ``EG.00014000``, 401 ``APIGW.0301``, 403 ``EG.00014030``,
  404 ``EG.00014040``, 429 ``APIG.0308``, every 5xx ``EG.00015000``; event_ids faults
  ``EG.00513000``. ``path: "*"`` matches every ``/v1`` request once (not its auth stage).
  A fault's ``count`` is used up when a request matches (before its latency), so concurrent
  requests each take one. Faults with a 4xx/5xx ``status`` answer before the body is read.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler

from bridge.emulator import control, iam, publish, resources, rules
from bridge.emulator.auth import AUTH_MODES, auth_error, make_authenticator
from bridge.emulator.context import (
    EXTRA_HEADERS,
    STATE,
    EmulatorState,
    extra_headers,
    json_response,
    state_of,
)
from bridge.emulator.errors import INTERNAL, NOT_FOUND, ApiError, status_default
from bridge.emulator.eventlog import EventLog
from bridge.emulator.faults import apply_faults
from bridge.emulator.iam import parse_users
from bridge.emulator.store import Store
from bridge.emulator.tokens import TokenBook
from bridge.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_PROJECT_ID = "0123456789abcdef0123456789abcdef"
CLIENT_MAX_SIZE = 12 * 1024 * 1024
"""Largest body read at all (the AK/SK limit, eg-api §2.2); PutEvents stops at 256 KiB."""
_HOSTNAME = socket.gethostname()


@dataclass
class EmulatorConfig:
    """Settings of one emulator (design §4 ``eg-bridge emulator`` options).

    Attributes:
        host: interface to listen on.
        port: TCP port; 0 picks a free one (read it from ``EmulatorServer.url``).
        project_ids: the known projects; any other project id is 404 ``EG.00014040``.
        channels: NAME -> ID of CUSTOM channels created in every project (``--channel``).
        auth: "none" (everything allowed), "token" (``X-Auth-Token`` in ``tokens`` or issued
            by the IAM endpoint) or "aksk" (SDK-HMAC-SHA256 signatures by ``access_keys``).
        tokens: the accepted fixed ``X-Auth-Token`` values (``--token``).
        token_ttl_s: lifetime of tokens the IAM endpoint issues, seconds (``--token-ttl``).
        iam_users: ``"DOMAIN/USER"`` -> password, for ``POST /v3/auth/tokens``
            (``--iam-user DOMAIN/USER:PASSWORD``).
        access_keys: AK -> SK pairs accepted in mode ``aksk`` (``--ak``/``--sk``).
        data_dir: if set, accepted events are appended to ``DATA_DIR/events.jsonl``.
    """

    host: str = "127.0.0.1"
    port: int = 8088
    project_ids: list[str] = field(default_factory=lambda: [DEFAULT_PROJECT_ID])
    channels: dict[str, str] = field(default_factory=dict)
    auth: str = "none"
    tokens: list[str] = field(default_factory=list)
    token_ttl_s: float = 86400
    iam_users: dict[str, str] = field(default_factory=dict)
    access_keys: dict[str, str] = field(default_factory=dict)
    data_dir: str | None = None


def _config_problems(config: EmulatorConfig) -> list[str]:
    problems = [
        f"project id {p!r} must be non-empty, without '/'" for p in config.project_ids if _bad_id(p)
    ]
    if not config.project_ids:
        problems.append("at least one project id is required")
    for name, channel_id in config.channels.items():
        if not rules.CHANNEL_NAME_RE.fullmatch(name) or name == "default":
            problems.append(f"channel name {name!r} must match {rules.CHANNEL_NAME_RE.pattern}")
        if _bad_id(channel_id):
            problems.append(f"channel {name!r}: id {channel_id!r} must be non-empty, without '/'")
    if len(set(config.channels.values())) < len(config.channels):
        problems.append("channel ids must be distinct")
    if config.auth not in AUTH_MODES:
        problems.append(f"auth {config.auth!r} must be one of {', '.join(AUTH_MODES)}")
    if config.auth == "aksk" and not config.access_keys:
        problems.append("auth aksk needs at least one access key pair (--ak/--sk)")
    if not config.token_ttl_s > 0:
        problems.append(f"token ttl must be > 0 seconds, got {config.token_ttl_s}")
    try:
        parse_users(config.iam_users)
    except ValueError as exc:
        problems.append(str(exc))
    return problems


def _bad_id(value: str) -> bool:
    return not value or "/" in value


def create_app(config: EmulatorConfig) -> web.Application:
    """Build the emulator application for ``config`` (no socket is opened).

    Raises:
        ConfigError: listing every bad project id, channel NAME=ID or auth mode.
    """
    problems = _config_problems(config)
    if problems:
        raise ConfigError(problems)
    app = web.Application(middlewares=[_envelope], client_max_size=CLIENT_MAX_SIZE)
    tokens = TokenBook(config.tokens, config.token_ttl_s)
    app[STATE] = EmulatorState(
        store=Store(config.project_ids, config.channels),
        events=EventLog(config.data_dir),
        authenticate=make_authenticator(config.auth, tokens, config.access_keys),
        tokens=tokens,
        iam_users=parse_users(config.iam_users),
    )
    app.on_startup.append(_open_event_log)
    app.on_cleanup.append(_close_event_log)
    for module in (publish, resources, control, iam):
        module.add_routes(app)
    return app


async def _open_event_log(app: web.Application) -> None:
    app[STATE].events.open()


async def _close_event_log(app: web.Application) -> None:
    app[STATE].events.close()


def new_request_id() -> str:
    """A request id shaped like EG's ``request_uuid-timestamp-hostname`` (eg-api §1)."""
    return f"{uuid.uuid4().hex}-{int(time.time() * 1000)}-{_HOSTNAME}"[:128]


def _from_http(exc: web.HTTPException) -> ApiError:
    if exc.status == 404:
        return ApiError(404, NOT_FOUND, "Not request resource found", "no such route")
    return ApiError(exc.status, status_default(exc.status)[0], exc.reason)


@web.middleware
async def _envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Add ``X-Request-Id`` (and fault headers) to every response; turn every error into
    an EG error body."""
    request_id = new_request_id()
    request[EXTRA_HEADERS] = {}
    try:
        response = await _gate(request, handler)
    except ApiError as exc:
        response = json_response(exc.body(request_id), exc.status)
    except web.HTTPException as exc:
        error = _from_http(exc)
        response = json_response(error.body(request_id), error.status)
    except Exception:
        logger.exception("emulator: unexpected error in %s %s", request.method, request.path)
        error = ApiError(500, INTERNAL, "Internal Server Error")
        response = json_response(error.body(request_id), 500)
    response.headers.update(extra_headers(request))
    response.headers["X-Request-Id"] = request_id
    return response


def request_kind(path: str) -> str | None:
    """The fault ``path`` a request matches: "events" (PutEvents), "sources", "channels" or
    "other" for ``/v1/...``; "iam" for the IAM endpoint (faults, no auth); None for the
    rest (no auth, no counters, no faults)."""
    if path == iam.IAM_PATH:
        return "iam"
    parts = path.strip("/").split("/")
    if parts[0] != "v1":
        return None
    if len(parts) == 5 and parts[2] == "channels" and parts[4] == "events":
        return "events"
    return parts[2] if len(parts) >= 3 and parts[2] in ("sources", "channels") else "other"


async def _gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    kind = request_kind(request.path)
    if kind is None:
        return await handler(request)
    state = state_of(request)
    if kind == "iam":
        state.stats.iam_token_requests += 1
        await _stage(request, state, kind)
        return await handler(request)
    state.stats.api_requests += 1
    if kind == "events" and request.method == "POST":
        state.stats.put_events_requests += 1
    await _stage(request, state, "auth")
    failure = await state.authenticate(request)
    if failure is not None:
        state.stats.auth_failures += 1
        raise auth_error(failure)
    await _stage(request, state, kind)
    return await handler(request)


async def _stage(request: web.Request, state: EmulatorState, kind: str) -> None:
    """Apply the faults of ``kind``; raise the error of the one with a status."""
    faults = state.faults.take(kind)
    state.stats.faults_applied += len(faults)
    error = await apply_faults(faults, extra_headers(request))
    if error is not None:
        if kind == "auth":
            state.stats.auth_failures += 1
        raise error
