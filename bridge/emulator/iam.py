"""The emulator's IAM endpoint: ``POST /v3/auth/tokens`` with password auth
(shared/eg-api.md §2.1, design §9).

Users come from ``--iam-user DOMAIN/USER:PASSWORD``. A valid request answers **201** with the
token in the ``X-Subject-Token`` header and ``{"token": {...}}`` in the body (``expires_at``,
``issued_at``, ``methods``, ``catalog`` [], ``roles``, ``project``, ``user``); the token then
works as ``X-Auth-Token`` in auth mode ``token`` until ``--token-ttl`` seconds have passed.

Choices where eg-api.md is silent (INFERENCE): errors use keystone's body
``{"error": {"code", "title", "message"}}``; a wrong domain, user or password is 401 "The
username or password is wrong."; a body that is not password auth with a user, a domain
name and a project scope is 400; ``scope.project.id`` must be a configured project (else
400); ``scope.project.name`` may be any name and scopes the token to the first configured
project. Requests to this endpoint are never authenticated; they count in the stats
(``iam_token_requests``, ``tokens_issued``) and take faults of path ``iam``.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from bridge.emulator.context import json_response, state_of
from bridge.emulator.tokens import iso_z

IAM_PATH = "/v3/auth/tokens"
WRONG_CREDENTIALS = "The username or password is wrong."


def parse_users(specs: dict[str, str]) -> dict[tuple[str, str], str]:
    """``{"DOMAIN/USER": PASSWORD}`` -> ``{(domain, user): password}``.

    Raises:
        ValueError: a key is not ``DOMAIN/USER`` with both parts non-empty.
    """
    users: dict[tuple[str, str], str] = {}
    for key, password in specs.items():
        domain, sep, user = key.partition("/")
        if not sep or not domain or not user:
            raise ValueError(f"iam user {key!r} must be DOMAIN/USER")
        users[(domain, user)] = password
    return users


def _error(status: int, title: str, message: str) -> web.Response:
    return json_response({"error": {"code": status, "title": title, "message": message}}, status)


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _credentials(body: Any) -> tuple[str, str, str, dict[str, Any]] | str:
    """(domain, user, password, project scope) of a password-auth body, or what is wrong."""
    methods = _dig(body, "auth", "identity", "methods")
    user = _dig(body, "auth", "identity", "password", "user")
    scope = _dig(body, "auth", "scope", "project")
    if not isinstance(methods, list) or "password" not in methods:
        return "auth.identity.methods must include 'password'"
    fields = [_dig(user, "domain", "name"), _dig(user, "name"), _dig(user, "password")]
    if not all(isinstance(f, str) and f for f in fields):
        return "auth.identity.password.user needs name, password and domain.name"
    if not isinstance(scope, dict) or not (scope.get("id") or scope.get("name")):
        return "auth.scope.project needs an id or a name"
    return fields[0], fields[1], fields[2], scope


async def create_token(request: web.Request) -> web.Response:
    """``POST /v3/auth/tokens``: 201 + ``X-Subject-Token`` for a configured user (module
    docstring); 400 for a malformed body; 401 for wrong credentials."""
    state = state_of(request)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _error(400, "Bad Request", "The request body is not valid JSON.")
    creds = _credentials(body)
    if isinstance(creds, str):
        return _error(400, "Bad Request", creds)
    domain, user, password, scope = creds
    if state.iam_users.get((domain, user)) != password:
        return _error(401, "Unauthorized", WRONG_CREDENTIALS)
    projects = list(state.store.projects)
    project_id = scope.get("id") or projects[0]
    if project_id not in state.store.projects:
        return _error(400, "Bad Request", f"project {project_id} does not exist")
    token = state.tokens.issue(project_id, user)
    state.stats.tokens_issued += 1
    named = {"domain": {"id": domain, "name": domain}}
    payload = {"token": {
        "expires_at": iso_z(token.expires_at),
        "issued_at": iso_z(token.issued_at),
        "methods": ["password"],
        "catalog": [],
        "roles": [{"id": "0", "name": "op_user"}],
        "project": {"id": project_id, "name": scope.get("name") or project_id, **named},
        "user": {"id": user, "name": user, "password_expires_at": "", **named},
    }}
    response = json_response(payload, status=201)
    response.headers["X-Subject-Token"] = token.value
    return response


def add_routes(app: web.Application) -> None:
    """Register ``POST /v3/auth/tokens``."""
    app.router.add_post(IAM_PATH, create_token)
