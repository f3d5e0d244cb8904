"""aiohttp client for the EG API: custom sources and PutEvents (shared/eg-api.md §3, §5).

Every failure is mapped at this boundary: an error answer becomes
:class:`~bridge.errors.EventGridError` (status, error_code, error_msg, request id, Retry-After),
no answer becomes :class:`~bridge.errors.TransportError` (``timeout`` or ``network``). No
aiohttp exception escapes, and no message carries a header or credential.

Auth (:mod:`bridge.eventgrid.auth`) sees each request exactly as it goes out: the query is
the canonical query of eg-api.md §2.2 step 6 and is sent pre-encoded, the body bytes are sent
as they are (``data=bytes``, never re-serialised), so an AK/SK signature covers what EG
receives. A 401 gets one retry when the auth can fetch a fresh credential (IAM tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from yarl import URL

from bridge.errors import EventGridError, TransportError
from bridge.eventgrid.auth import Auth
from bridge.eventgrid.models import PutEventsResult, parse_retry_after
from bridge.eventgrid.signer import canonical_query

LIST_PAGE_SIZE = 100
_JSON = {"Content-Type": "application/json"}


def _error_from(status: int, body: bytes, headers: Mapping[str, str],
                operation: str = "") -> EventGridError:
    """Parse an EG error body (eg-api.md §6): ``error_code``/``error_msg``, else
    ``errorCode``/``errorMsg``, else ``code``/``message``, as the Python SDK does."""
    try:
        data = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    code = data.get("error_code") or data.get("errorCode") or data.get("code") or ""
    msg = data.get("error_msg") or data.get("errorMsg") or data.get("message") or ""
    if not msg and not data:
        msg = body[:200].decode("utf-8", "replace")
    request_id = headers.get("X-Request-Id") or str(data.get("request_id") or "")
    return EventGridError(
        status, str(code), str(msg), request_id, parse_retry_after(headers.get("Retry-After")),
        operation=operation,
    )


class EventGridClient:
    """The EG API for one project.

    Args:
        endpoint: base URL, e.g. ``https://eg.cn-north-4.myhuaweicloud.com`` or the emulator's
            ``http://127.0.0.1:8088``.
        project_id: the IAM project id (path prefix ``/v1/{project_id}``).
        auth: adds auth headers per request.
        timeout_s: total time for one request, in seconds.
        max_connections: pooled HTTP connections (enough for the in-flight batches).
    """

    def __init__(
        self,
        endpoint: str,
        project_id: str,
        auth: Auth,
        *,
        timeout_s: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        self._base = endpoint.rstrip("/") + f"/v1/{project_id}"
        self._auth = auth
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, json_serialize=lambda o: o
            )
        return self._session

    async def close(self) -> None:
        """Close pooled connections and the auth's own resources (an IAM session)."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._auth.close()

    def url(self, path: str, params: Mapping[str, str] | None = None) -> str:
        """The full URL of ``/v1/{project_id}{path}``; the query is the canonical query of
        ``params`` (eg-api.md §2.2 step 6), so the query sent is the query signed."""
        query = canonical_query(params.items()) if params else ""
        base = str(URL(self._base + path))
        return f"{base}?{query}" if query else base

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        params: Mapping[str, str] | None = None,
        ok_statuses: tuple[int, ...] = (200, 201, 202, 204),
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """Send one request to ``/v1/{project_id}{path}``; return (status, body, headers).

        The auth headers cover exactly the URL and body bytes sent. A 401 is retried once
        when the auth can get a fresh credential (``Auth.invalidate``, design §7: an IAM
        token is refreshed at once after a 401); a second 401 raises.

        Raises:
            EventGridError: the status is not in ``ok_statuses``; also an IAM failure
                (``IamError``) while a token was needed.
            TransportError: no answer (``network``) or no answer in time (``timeout``).
        """
        url = self.url(path, params)
        auth_headers = await self._auth.headers(method, url, body)
        status, data, resp_headers = await self._send(method, url, path, body, auth_headers)
        if status == 401 and self._auth.invalidate(auth_headers):
            auth_headers = await self._auth.headers(method, url, body)
            status, data, resp_headers = await self._send(method, url, path, body, auth_headers)
        if status not in ok_statuses:
            error = _error_from(status, data, resp_headers, self._operation(method, path))
            hint = getattr(self._auth, "hint_401", "") if status == 401 else ""
            if hint:
                error = EventGridError(
                    error.status, error.error_code, error.error_msg, error.request_id,
                    error.retry_after_s, operation=error.operation, hint=hint)
            raise error
        return status, data, resp_headers

    def _operation(self, method: str, path: str) -> str:
        """``"GET /sources at host:port"``: where a failed request went, without secrets."""
        where = URL(self._base)
        return f"{method} {path.split('?', 1)[0]} at {where.host}:{where.port}"

    async def _send(self, method: str, url: str, path: str, body: bytes,
                    auth_headers: Mapping[str, str]) -> tuple[int, bytes, Mapping[str, str]]:
        headers = {**_JSON, **auth_headers}
        try:
            async with self._http().request(
                method, URL(url, encoded=True), data=body or None, headers=headers
            ) as resp:
                return resp.status, await resp.read(), resp.headers
        except TimeoutError:
            raise TransportError(
                "timeout", f"{self._operation(method, path)}: no answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            detail = str(exc).split(" ssl:")[0] if isinstance(exc, aiohttp.ClientConnectorError) \
                else type(exc).__name__
            raise TransportError(
                "network", f"{self._operation(method, path)}: {detail}") from None

    async def _json(self, method: str, path: str, payload: Any = None,
                    params: Mapping[str, str] | None = None) -> Any:
        body = orjson.dumps(payload) if payload is not None else b""
        _, data, _ = await self.request(method, path, body=body, params=params)
        return orjson.loads(data) if data else None

    async def create_source(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /sources`` (200 + the source object, eg-api.md §3).

        Args:
            payload: ``name``, ``channel_id``, ``type``, optional ``description``/``detail``.
        """
        result: dict[str, Any] = await self._json("POST", "/sources", dict(payload))
        return result

    async def get_source(self, source_id: str) -> dict[str, Any]:
        """``GET /sources/{id}``; a deleted source raises EventGridError with status 404."""
        result: dict[str, Any] = await self._json("GET", f"/sources/{source_id}")
        return result

    async def update_source(self, source_id: str, description: str,
                            detail: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``PUT /sources/{id}``: only ``description`` and ``detail`` can change (§3.1)."""
        payload: dict[str, Any] = {"description": description}
        if detail is not None:
            payload["detail"] = dict(detail)
        result: dict[str, Any] = await self._json("PUT", f"/sources/{source_id}", payload)
        return result

    async def delete_source(self, source_id: str) -> None:
        """``DELETE /sources/{id}`` (204)."""
        await self.request("DELETE", f"/sources/{source_id}")

    async def list_sources(self, *, name: str | None = None, channel_id: str | None = None
                           ) -> list[dict[str, Any]]:
        """Every custom source matching the filters, paging with ``offset``/``limit``.

        ``name`` is an exact match. A page past the end answers 400 ``APIGW.0106``
        (eg-api.md §3.4), which ends the list like an empty page.
        """
        params = {"limit": str(LIST_PAGE_SIZE), "provider_type": "CUSTOM"}
        if name is not None:
            params["name"] = name
        if channel_id is not None:
            params["channel_id"] = channel_id
        items: list[dict[str, Any]] = []
        while True:
            params["offset"] = str(len(items))
            try:
                page = await self._json("GET", "/sources", params=params)
            except EventGridError as exc:
                if items and exc.status == 400 and exc.error_code.endswith(".0106"):
                    return items
                raise
            batch = page.get("items") or []
            items.extend(batch)
            if len(batch) < LIST_PAGE_SIZE or len(items) >= int(page.get("total", 0)):
                return items

    async def put_events(self, channel_id: str, body: bytes) -> PutEventsResult:
        """``POST /channels/{channel_id}/events`` with a ready body ``{"events":[...]}``.

        A 200, or a 400 in the per-event shape (eg-api.md §5 shows both), returns the
        per-event result; any other error raises.

        Raises:
            EventGridError: request-level error (``.kind`` says transient/permanent/fatal).
            TransportError: network error or timeout.
        """
        path = f"/channels/{channel_id}/events"
        status, data, headers = await self.request("POST", path, body=body, ok_statuses=(200, 400))
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
        per_event = isinstance(parsed, dict) and isinstance(parsed.get("events"), list)
        if status == 200 and per_event:
            return PutEventsResult.parse(parsed, headers.get("X-Request-Id", ""))
        if status == 400 and per_event and not parsed.get("error_code"):
            return PutEventsResult.parse(parsed, headers.get("X-Request-Id", ""))
        if status == 200:
            raise EventGridError(502, "", "unparsable PutEvents response",
                                 headers.get("X-Request-Id", ""))
        raise _error_from(status, data, headers, self._operation("POST", path))
