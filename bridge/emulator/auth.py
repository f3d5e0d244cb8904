"""Authentication of the emulator's ``/v1`` API (shared/eg-api.md §2, design §4 ``--auth``, §9).

An :data:`Authenticator` looks at a request and returns None to let it pass, or an
:class:`AuthFailure`, answered as 401 ``APIGW.0301`` "Incorrect IAM authentication
information: <reason>" with the cause in ``error_details``. Modes:

- ``none``: everything passes.
- ``token``: ``X-Auth-Token`` must be a fixed ``--token`` or a live token of the emulator's
  IAM endpoint (:class:`~bridge.emulator.tokens.TokenBook`). Reasons are the gateway's
  documented ones: "x-auth-token not found", "decrypt token fail" (unknown or revoked),
  "token expires, expires_at: ...".
- ``aksk``: an ``SDK-HMAC-SHA256`` signature by a configured AK (``--ak``/``--sk``),
  recomputed with :mod:`bridge.eventgrid.signer` from the request as received: the method,
  the raw path and query, the headers its ``SignedHeaders`` lists (which must include
  ``x-sdk-date``, eg-api §2.2 step 1) and the SHA-256 of the raw body bytes (or the value of
  ``X-Sdk-Content-Sha256``, step 8). ``X-Sdk-Date`` more than 15 minutes from the server's
  clock fails. Every failure has the documented reason "verify aksk signature fail"; a
  request without ``Authorization`` gets "x-auth-token not found" (INFERENCE: what the
  gateway says for a request with no credential at all). Unknown AKs fail the same way
  (INFERENCE); the 5-failure AK lock of eg-api §2.2 is not emulated.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from aiohttp import web

from bridge.emulator import errors
from bridge.emulator.errors import ApiError
from bridge.emulator.tokens import TokenBook, utc_now
from bridge.eventgrid import signer


class AuthFailure(NamedTuple):
    """Why a request was refused: the gateway's ``reason`` and a ``detail`` for humans."""

    reason: str
    detail: str = ""


Authenticator = Callable[[web.Request], Awaitable[AuthFailure | None]]
AUTH_MODES = ("none", "token", "aksk")
AUTH_MESSAGE = "Incorrect IAM authentication information: "
MAX_SKEW = timedelta(minutes=15)
"""Largest accepted difference between ``X-Sdk-Date`` and server time (eg-api §2.2 step 1)."""
SIGNATURE_FAIL = "verify aksk signature fail"


async def allow_all(request: web.Request) -> AuthFailure | None:
    """Mode ``none``: every request passes."""
    return None


def token_authenticator(tokens: TokenBook) -> Authenticator:
    """Mode ``token``: ``X-Auth-Token`` must be accepted by ``tokens`` (eg-api §2.1)."""

    async def check(request: web.Request) -> AuthFailure | None:
        reason = tokens.check(request.headers.get("X-Auth-Token"))
        return None if reason is None else AuthFailure(reason)

    return check


def _sdk_date(value: str, now: datetime) -> str | None:
    """What is wrong with an ``X-Sdk-Date`` value at server time ``now``, or None."""
    try:
        signed_at = datetime.strptime(value, signer.DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return f"X-Sdk-Date {value!r} is not in the format YYYYMMDDTHHMMSSZ"
    if abs(now - signed_at) > MAX_SKEW:
        return f"X-Sdk-Date {value} is more than 15 minutes from the server time"
    return None


def _header_problem(
    request: web.Request, auth: signer.Authorization, keys: Mapping[str, str], now: datetime
) -> str | None:
    """What makes the signature unverifiable before hashing anything, or None."""
    if auth.access_key not in keys:
        return "unknown access key"
    if "x-sdk-date" not in auth.signed_headers:
        return "x-sdk-date must be a signed header"
    missing = [h for h in auth.signed_headers if h not in request.headers]
    if missing:
        return f"signed headers missing from the request: {', '.join(missing)}"
    return _sdk_date(request.headers["X-Sdk-Date"], now)


async def verify_signature(
    request: web.Request, keys: Mapping[str, str], now: datetime
) -> str | None:
    """Check the request's SDK-HMAC-SHA256 signature (eg-api §2.2) at server time ``now``;
    None when valid, else the cause (never a key or the expected signature)."""
    try:
        auth = signer.parse_authorization(request.headers.get("Authorization", ""))
    except ValueError:
        return "the Authorization header is not SDK-HMAC-SHA256 Access=, SignedHeaders=, " \
               "Signature="
    problem = _header_problem(request, auth, keys, now)
    if problem:
        return problem
    secret = keys[auth.access_key]
    body = await request.read()
    canonical = signer.canonical_request(
        request.method, request.raw_path, request.headers, auth.signed_headers,
        signer.payload_hash(body, request.headers),
    )
    to_sign = signer.string_to_sign(canonical, request.headers["X-Sdk-Date"])
    if not hmac.compare_digest(signer.signature(secret, to_sign), auth.signature):
        return "the signature does not match the request"
    return None


def aksk_authenticator(
    keys: Mapping[str, str], clock: Callable[[], datetime] = utc_now
) -> Authenticator:
    """Mode ``aksk``: a valid signature by one of ``keys`` (AK -> SK); see the module
    docstring for the rules."""
    accepted = dict(keys)

    async def check(request: web.Request) -> AuthFailure | None:
        if "Authorization" not in request.headers:
            return AuthFailure("x-auth-token not found", "no Authorization header")
        problem = await verify_signature(request, accepted, clock())
        return None if problem is None else AuthFailure(SIGNATURE_FAIL, problem)

    return check


def make_authenticator(mode: str, tokens: TokenBook, keys: Mapping[str, str]) -> Authenticator:
    """The authenticator for ``mode``: "none", "token" (``tokens``) or "aksk" (``keys``,
    AK -> SK).

    Raises:
        ValueError: for any other mode.
    """
    if mode == "none":
        return allow_all
    if mode == "token":
        return token_authenticator(tokens)
    if mode == "aksk":
        return aksk_authenticator(keys)
    raise ValueError(f"unsupported emulator auth mode {mode!r}; expected one of {AUTH_MODES}")


def auth_error(failure: AuthFailure) -> ApiError:
    """401 ``APIGW.0301`` "Incorrect IAM authentication information: <reason>" with the
    detail in ``error_details`` (eg-api §2.1, §2.2)."""
    message = AUTH_MESSAGE + failure.reason
    return ApiError(401, errors.AUTH_FAILED, message, f"{message}: {failure.detail}"
                    if failure.detail else "")
