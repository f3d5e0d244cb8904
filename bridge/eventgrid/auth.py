"""Request authentication for the EG API (shared/eg-api.md §2, design §3 ``eventgrid.auth``).

An :class:`Auth` adds the headers one request needs. Modes: ``none`` (:class:`NoAuth`),
``token`` (:class:`TokenAuth`, a static ``X-Auth-Token``), ``iam`` (IAM password tokens,
:class:`bridge.eventgrid.iam.IamTokenAuth`) and ``aksk`` (:class:`AkSkAuth`, SDK-HMAC-SHA256
signatures). No credential appears in a repr, a log line or an exception text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol

from pydantic import SecretStr

from bridge.eventgrid import signer


class Auth(Protocol):
    """Adds authentication headers to one EG request.

    The client calls :meth:`headers` for every request, sends exactly the URL and body bytes
    it passed, and after a 401 calls :meth:`invalidate` with the headers that were rejected;
    when that returns True it asks for headers again and retries the request once.
    """

    async def headers(self, method: str, url: str, body: bytes) -> Mapping[str, str]:
        """Headers to add for ``method`` ``url`` (full URL with the query exactly as sent)
        with exactly these body bytes.

        Raises:
            EventGridError, TransportError: the credential could not be obtained (IAM).
        """
        ...

    def invalidate(self, rejected: Mapping[str, str]) -> bool:
        """Forget the credential in ``rejected`` (headers this object returned) after a 401;
        True when a retry with fresh headers may succeed."""
        ...

    async def close(self) -> None:
        """Release connections or tasks the auth holds (called by the client's close)."""
        ...


class NoAuth:
    """No credentials (the emulator with ``--auth none``)."""

    async def headers(self, method: str, url: str, body: bytes) -> Mapping[str, str]:
        """No headers."""
        return {}

    def invalidate(self, rejected: Mapping[str, str]) -> bool:
        """Nothing to refresh: a 401 stays a 401."""
        return False

    async def close(self) -> None:
        """Nothing to release."""


class TokenAuth:
    """A static IAM token sent as ``X-Auth-Token`` (eg-api.md §1; tokens live 24 h, §2.1).

    Args:
        token: the token; kept as SecretStr so it never prints.
    """

    def __init__(self, token: SecretStr) -> None:
        self._headers = {"X-Auth-Token": token.get_secret_value()}

    async def headers(self, method: str, url: str, body: bytes) -> Mapping[str, str]:
        """``{"X-Auth-Token": token}``."""
        return self._headers

    def invalidate(self, rejected: Mapping[str, str]) -> bool:
        """A static token cannot be refreshed: a 401 is fatal (design §7)."""
        return False

    async def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return "TokenAuth(token='**********')"


def utc_now() -> datetime:
    """The current time in UTC (the default clock of :class:`AkSkAuth`)."""
    return datetime.now(UTC)


class AkSkAuth:
    """AK/SK request signing, SDK-HMAC-SHA256 (eg-api.md §2.2, via :mod:`.signer`).

    Every request gets ``X-Sdk-Date`` (UTC, step 1), ``Host`` (step 2), ``X-Project-Id``
    (step 3, as ``BasicCredentials(ak, sk, project_id)`` does) and ``Authorization`` signing
    those three headers and the SHA-256 of the exact body bytes. ``Content-Type`` is not
    signed (the Go SDK does not sign it either, §2.2 step 4; verifiers honour
    ``SignedHeaders``).

    Args:
        access_key: the AK.
        secret_key: the SK; used only as the HMAC key, never printed.
        project_id: the IAM project id sent as ``X-Project-Id``; None sends none.
        clock: returns the current UTC time (a parameter so a test can sign with a skewed
            clock).
    """

    hint_401 = ("check eventgrid.auth.aksk access_key/secret_key and this machine's clock: "
                "EG rejects a signature dated more than 15 minutes off (eg-api.md §2.2)")
    """Added to a 401's message: what an operator should check."""

    def __init__(
        self,
        access_key: SecretStr,
        secret_key: SecretStr,
        project_id: str | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._ak = access_key
        self._sk = secret_key
        self._project_id = project_id
        self._clock = clock

    async def headers(self, method: str, url: str, body: bytes) -> Mapping[str, str]:
        """``X-Sdk-Date``, ``Host``, ``X-Project-Id`` and ``Authorization`` for this request;
        ``url`` must be the full URL with the query exactly as sent."""
        headers = {
            signer.DATE_HEADER: self._clock().astimezone(UTC).strftime(signer.DATE_FORMAT),
            "Host": signer.host_of(url),
        }
        if self._project_id:
            headers["X-Project-Id"] = self._project_id
        headers["Authorization"] = signer.sign(
            method, url, headers, body,
            access_key=self._ak.get_secret_value(), secret_key=self._sk.get_secret_value(),
        )
        return headers

    def invalidate(self, rejected: Mapping[str, str]) -> bool:
        """A rejected signature (wrong key, clock skew over 15 min) does not get better by
        signing again: a 401 is fatal (design §7)."""
        return False

    async def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"AkSkAuth(access_key='**********', project_id={self._project_id!r})"
