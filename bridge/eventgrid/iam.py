"""IAM password tokens for the EG API: fetched, cached, refreshed ahead of expiry
(shared/eg-api.md §2.1, design §7 "Tokens are refreshed before they expire").

:class:`IamTokenAuth` is an :class:`~bridge.eventgrid.auth.Auth`: every EG request carries
``X-Auth-Token``. A token is fetched with ``POST {endpoint}/v3/auth/tokens?nocatalog=true``
(201; the token is the ``X-Subject-Token`` response header; ``expires_at``/``issued_at`` come
from the body). Its lifetime L is ``expires_at - issued_at`` as IAM states them (so the
local clock's offset does not matter), counted from when the request was sent:

- from 50% of L, the first request that sees the token starts one background refresh and
  keeps using the current token; a failed background refresh is retried at most every
  ``min(60 s, L/20)``;
- from 80% of L (design §7: "at 80% of their lifetime at the latest") requests wait for a
  refresh, and its error is theirs;
- after a 401 the client hands the rejected headers to :meth:`IamTokenAuth.invalidate`: if
  they hold the current token it is dropped and the retry fetches a new one.

Concurrent requests share one refresh (one IAM request). IAM failures map to the bridge's
error types: no answer is a :class:`~bridge.errors.TransportError` (transient); an error
answer is an :class:`IamError` (429/5xx transient, any other status fatal for every event:
wrong password, user, domain or project is a configuration problem).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import structlog
from pydantic import SecretStr
from yarl import URL

from bridge.errors import ErrorKind, EventGridError, TransportError

log = structlog.get_logger("bridge.eventgrid.iam")

BACKGROUND_REFRESH_AT = 0.5
"""Fraction of a token's lifetime after which a background refresh starts."""
BLOCKING_REFRESH_AT = 0.8
"""Fraction of a token's lifetime after which requests wait for a new token (design §7)."""
MAX_BACKGROUND_RETRY_S = 60.0
_PROJECT_ID_LEN = 32


class IamError(EventGridError):
    """IAM answered the token request with an error (eg-api.md §2.1).

    Same attributes as :class:`EventGridError`; ``kind`` is TRANSIENT for 429 and 5xx and
    FATAL otherwise (a 401 means a wrong domain, user or password; 400/404 a wrong project),
    never PERMANENT: no event is at fault. ``reason`` is ``auth`` for the fatal ones.
    """

    @property
    def kind(self) -> ErrorKind:
        """TRANSIENT for 429/5xx, else FATAL."""
        return ErrorKind.TRANSIENT if self.status == 429 or self.status >= 500 else ErrorKind.FATAL

    @property
    def reason(self) -> str:
        """``publish_failures_total`` label: ``auth`` unless IAM itself failed."""
        return "auth" if self.kind is ErrorKind.FATAL else super().reason

    def __str__(self) -> str:
        code = "" if self.error_code in ("", str(self.status)) else f" {self.error_code}"
        return f"IAM error {self.status}{code}: {self.error_msg or '-'}"


@dataclass(frozen=True)
class _Token:
    value: str
    soft_at: float
    """Monotonic time from which a background refresh starts."""
    hard_at: float
    """Monotonic time from which requests wait for a new token."""
    lifetime_s: float


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def token_lifetime_s(body: Mapping[str, Any]) -> float:
    """Lifetime in seconds of the token in an IAM response body (eg-api.md §2.1):
    ``token.expires_at - token.issued_at``, or ``expires_at`` - now without ``issued_at``.

    Raises:
        IamError: 502 when ``expires_at`` is missing or unparsable, or the token has already
            expired (transient: IAM misbehaved).
    """
    token = body.get("token") if isinstance(body, Mapping) else None
    token = token if isinstance(token, Mapping) else {}
    expires = _parse_time(token.get("expires_at"))
    if expires is None:
        raise IamError(502, "", "IAM token response has no valid token.expires_at")
    issued = _parse_time(token.get("issued_at")) or datetime.now(UTC)
    lifetime = (expires - issued).total_seconds()
    if lifetime <= 0:
        raise IamError(502, "", "IAM issued a token that has already expired")
    return lifetime


def _error_of(status: int, raw: bytes) -> IamError:
    """IamError from an IAM error body: keystone's ``{"error": {"code", "message"}}`` or
    ``error_code``/``error_msg``; messages are cut to 200 characters."""
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        data = {}
    data = data if isinstance(data, dict) else {}
    nested = data.get("error")
    nested = nested if isinstance(nested, dict) else {}
    code = str(data.get("error_code") or nested.get("code") or "")
    text = raw[:200].decode("utf-8", "replace")
    msg = str(data.get("error_msg") or nested.get("message") or text)
    hint = " (check eventgrid.auth.iam domain, user and password)" if status == 401 else ""
    return IamError(status, code, f"IAM token request failed: {msg[:200]}{hint}")


def scope_of(project: str) -> dict[str, Any]:
    """The ``scope`` of the token request: a 32-hex-character ``project`` is a project id,
    anything else a project name such as ``cn-north-4`` (eg-api.md §2.1)."""
    is_id = len(project) == _PROJECT_ID_LEN and all(c in "0123456789abcdef" for c in project)
    return {"project": {"id": project} if is_id else {"name": project}}


class IamTokenAuth:
    """``X-Auth-Token`` from IAM password auth, scoped to a project (module docstring).

    Args:
        endpoint: the IAM base URL, e.g. ``https://iam.cn-north-4.myhuaweicloud.com`` or the
            emulator's URL.
        domain: the account (domain) name.
        user: the IAM user name.
        password: the user's password; never printed.
        project: the project name (``cn-north-4``) or its 32-hex id.
        timeout_s: total time for one token request, seconds.
        session: an aiohttp session to use; None creates one on first use (closed by
            :meth:`close`; a given session is left open).
        clock: monotonic seconds (a parameter for tests).
    """

    def __init__(
        self,
        endpoint: str,
        domain: str,
        user: str,
        password: SecretStr,
        project: str,
        *,
        timeout_s: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = endpoint.rstrip("/") + "/v3/auth/tokens?nocatalog=true"
        self._domain, self._user, self._project = domain, user, project
        self._password = password
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session, self._own_session = session, session is None
        self._clock = clock
        self._token: _Token | None = None
        self._refresh: asyncio.Task[_Token] | None = None
        self._next_background = 0.0

    def __repr__(self) -> str:
        return (f"IamTokenAuth(url={self._url!r}, domain={self._domain!r}, user={self._user!r}, "
                f"project={self._project!r}, password='**********')")

    async def headers(self, method: str, url: str, body: bytes) -> Mapping[str, str]:
        """``{"X-Auth-Token": token}`` with a token refreshed per the module docstring.

        Raises:
            IamError: IAM refused (fatal) or failed (transient) while a new token was needed.
            TransportError: IAM did not answer (in time) while a new token was needed.
        """
        return {"X-Auth-Token": await self.token()}

    async def token(self) -> str:
        """The token to use now (see :meth:`headers` for the errors)."""
        now, current = self._clock(), self._token
        if current is None or now >= current.hard_at:
            return (await self._refreshed()).value
        if now >= current.soft_at and self._refresh is None and now >= self._next_background:
            self._start_refresh()
        return current.value

    def invalidate(self, rejected: Mapping[str, str]) -> bool:
        """After a 401: drop the cached token if ``rejected`` carried it. True when the retry
        will use a different token (this one dropped, or already replaced)."""
        value = rejected.get("X-Auth-Token")
        if value is None:
            return False
        if self._token is not None and self._token.value == value:
            self._token = None
        return True

    async def close(self) -> None:
        """Cancel a running refresh and close the session this object created."""
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refresh
            self._refresh = None
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _refreshed(self) -> _Token:
        task = self._refresh or self._start_refresh()
        return await asyncio.shield(task)

    def _start_refresh(self) -> asyncio.Task[_Token]:
        task = asyncio.get_running_loop().create_task(self._fetch())
        self._refresh = task
        task.add_done_callback(self._refresh_done)
        return task

    def _refresh_done(self, task: asyncio.Task[_Token]) -> None:
        if self._refresh is task:
            self._refresh = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._token = task.result()
            return
        lifetime = 0.0 if self._token is None else self._token.lifetime_s
        self._next_background = self._clock() + min(MAX_BACKGROUND_RETRY_S, lifetime / 20)
        log.warning("IAM token refresh failed", error=str(exc)[:300])

    def _request_body(self) -> bytes:
        user = {"name": self._user, "password": self._password.get_secret_value(),
                "domain": {"name": self._domain}}
        identity = {"methods": ["password"], "password": {"user": user}}
        return orjson.dumps({"auth": {"identity": identity, "scope": scope_of(self._project)}})

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def _where(self) -> str:
        """``host:port`` of the IAM endpoint (never credentials)."""
        url = URL(self._url)
        return f"{url.host}:{url.port}"

    async def _fetch(self) -> _Token:
        """One ``POST /v3/auth/tokens`` (eg-api.md §2.1) -> a scheduled :class:`_Token`."""
        sent_at = self._clock()
        headers = {"Content-Type": "application/json;charset=utf8"}
        try:
            async with self._http().post(self._url, data=self._request_body(), headers=headers,
                                         timeout=self._timeout) as resp:
                raw, status = await resp.read(), resp.status
                subject = resp.headers.get("X-Subject-Token", "")
        except TimeoutError:
            raise TransportError(
                "timeout", f"IAM token request to {self._where()}: no answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            detail = str(exc).split(" ssl:", 1)[0] if isinstance(
                exc, aiohttp.ClientConnectorError) else type(exc).__name__
            raise TransportError(
                "network", f"IAM token request to {self._where()}: {detail}") from None
        if status != 201:
            raise _error_of(status, raw)
        if not subject:
            raise IamError(502, "", "IAM answered 201 without an X-Subject-Token header")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = {}
        lifetime = token_lifetime_s(body)
        log.info("IAM token obtained", lifetime_s=round(lifetime, 3), user=self._user)
        return _Token(subject, sent_at + BACKGROUND_REFRESH_AT * lifetime,
                      sent_at + BLOCKING_REFRESH_AT * lifetime, lifetime)
