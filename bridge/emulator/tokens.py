"""Tokens the emulator accepts: fixed ``--token`` values and tokens its IAM endpoint issued
(shared/eg-api.md §2.1, design §4 ``--token``, ``--token-ttl``).

Issued tokens expire ``ttl_s`` after issue (24 h on real IAM; seconds in tests, so a client's
refresh can be watched). Fixed tokens never expire. ``DELETE /emulator/tokens`` revokes every
issued token, as a password change does on real IAM (there with up to 30 min lag).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


def utc_now() -> datetime:
    """The current UTC time (the default clock)."""
    return datetime.now(UTC)


def iso_z(moment: datetime) -> str:
    """``2020-01-04T09:05:22.701000Z``: ISO-8601 UTC with microseconds, as IAM writes
    ``expires_at``/``issued_at`` (eg-api.md §2.1)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class IssuedToken:
    """One token issued by the emulator's IAM endpoint."""

    value: str
    project_id: str
    user: str
    issued_at: datetime
    expires_at: datetime


class TokenBook:
    """The accepted tokens.

    Args:
        fixed: tokens accepted forever (``--token``).
        ttl_s: lifetime of issued tokens in seconds (``--token-ttl``), > 0.
        clock: returns the current UTC time.
    """

    def __init__(
        self, fixed: Iterable[str], ttl_s: float, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.fixed = frozenset(fixed)
        self.ttl = timedelta(seconds=ttl_s)
        self._clock = clock
        self._issued: dict[str, IssuedToken] = {}

    def issue(self, project_id: str, user: str) -> IssuedToken:
        """A new token for ``user`` scoped to ``project_id``, valid for ``ttl_s``; tokens
        that expired more than one lifetime (at least a minute) ago are forgotten."""
        now = self._clock()
        horizon = now - max(self.ttl, timedelta(minutes=1))
        self._issued = {k: t for k, t in self._issued.items() if t.expires_at > horizon}
        token = IssuedToken("MII" + secrets.token_urlsafe(48), project_id, user, now,
                            now + self.ttl)
        self._issued[token.value] = token
        return token

    def check(self, token: str | None) -> str | None:
        """None when ``token`` is accepted, else the gateway's reason (eg-api.md §2.1):
        "x-auth-token not found", "token expires, expires_at: <time>" or "decrypt token
        fail" (unknown or revoked)."""
        if not token:
            return "x-auth-token not found"
        if token in self.fixed:
            return None
        issued = self._issued.get(token)
        if issued is None:
            return "decrypt token fail"
        if self._clock() >= issued.expires_at:
            return f"token expires, expires_at: {iso_z(issued.expires_at)}"
        return None

    def revoke_issued(self) -> int:
        """Forget every issued token (fixed ones stay); returns how many were forgotten."""
        count = len(self._issued)
        self._issued.clear()
        return count
