"""Request authentication for the EG API (shared/eg-api.md §2).

An :class:`Auth` adds the headers one request needs. This release has ``none`` and ``token``
(a static ``X-Auth-Token``); IAM password tokens and AK/SK signing plug in behind the same
protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from pydantic import SecretStr


class Auth(Protocol):
    """Adds authentication headers to one EG request."""

    async def headers(self, method: str, url: str, body: bytes) -> Mapping[str, str]:
        """Headers to add for ``method`` ``url`` with exactly these body bytes."""
        ...

    def invalidate(self) -> bool:
        """Forget a cached credential after a 401; True when a retry may now succeed."""
        ...


class NoAuth:
    """No credentials (the emulator with ``--auth none``)."""

    async def headers(self, method: str, url: str, body: bytes) -> Mapping[str, str]:
        """No headers."""
        return {}

    def invalidate(self) -> bool:
        """Nothing to refresh: a 401 stays a 401."""
        return False


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

    def invalidate(self) -> bool:
        """A static token cannot be refreshed: a 401 is fatal (design §7)."""
        return False

    def __repr__(self) -> str:
        return "TokenAuth(token='**********')"
