"""Pluggable authentication of the emulator's ``/v1`` API (shared/eg-api.md §2, design §9).

An :data:`Authenticator` looks at a request and returns None to let it pass, or the reason
the gateway gives after "Incorrect IAM authentication information: " (401 ``APIGW.0301``).
New modes (AK/SK signatures, IAM-issued tokens) are new factories in :func:`make_authenticator`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from bridge.emulator import errors
from bridge.emulator.errors import ApiError

Authenticator = Callable[[web.Request], Awaitable[str | None]]
AUTH_MODES = ("none", "token")
AUTH_MESSAGE = "Incorrect IAM authentication information: "


async def allow_all(request: web.Request) -> str | None:
    """Mode ``none``: every request passes."""
    return None


def token_authenticator(tokens: Iterable[str]) -> Authenticator:
    """Mode ``token``: ``X-Auth-Token`` must equal one of ``tokens`` (eg-api §2.1).

    The reasons mimic the gateway's: "x-auth-token not found", "decrypt token fail".
    """
    accepted = frozenset(tokens)

    async def check(request: web.Request) -> str | None:
        token = request.headers.get("X-Auth-Token")
        if not token:
            return "x-auth-token not found"
        return None if token in accepted else "decrypt token fail"

    return check


def make_authenticator(mode: str, tokens: Iterable[str]) -> Authenticator:
    """The authenticator for ``mode`` ("none" or "token"; ``tokens`` are accepted tokens).

    Raises:
        ValueError: for any other mode (``aksk`` is not implemented yet).
    """
    if mode == "none":
        return allow_all
    if mode == "token":
        return token_authenticator(tokens)
    raise ValueError(f"unsupported emulator auth mode {mode!r}; expected one of {AUTH_MODES}")


def auth_error(reason: str) -> ApiError:
    """401 ``APIGW.0301`` "Incorrect IAM authentication information: <reason>" (eg-api §2.1)."""
    return ApiError(401, errors.AUTH_FAILED, AUTH_MESSAGE + reason)
