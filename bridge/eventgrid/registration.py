"""Create or reconcile the custom event source (shared/design.md §5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import EventGridError, RegistrationError
from bridge.eventgrid.client import EventGridClient

MASKABLE_DETAIL_KEYS = frozenset({"password", "secret_key"})
"""Keys EG may mask in what it returns, so they never count as a difference (design §5)."""
DUPLICATE_NAME = "00513001"
"""400 ``EG.00513001``: a source of that name exists (eg-api.md §3.5)."""


@dataclass(frozen=True)
class SourceSpec:
    """What the source must look like.

    Attributes:
        name: the source name (validated by settings, eg-api.md §3.1).
        description: at most 255 characters.
        channel_id: a CUSTOM channel.
        register_type: ``APPLICATION`` (the bridge delivers) or ``RABBITMQ``/``ROCKETMQ``
            (EG consumes a DMS instance itself; only then is ``detail`` sent).
        detail: the broker detail with real secrets; sent only for MQ register types.
    """

    name: str
    channel_id: str
    description: str = ""
    register_type: str = "APPLICATION"
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sends_detail(self) -> bool:
        """True when ``detail`` is part of the registration (MQ register types)."""
        return self.register_type != "APPLICATION"

    def create_payload(self) -> dict[str, Any]:
        """The ``POST /sources`` body."""
        payload: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "channel_id": self.channel_id,
            "type": self.register_type,
        }
        if self.sends_detail:
            payload["detail"] = dict(self.detail)
        return payload


def _detail_differs(spec: SourceSpec, current: Mapping[str, Any]) -> bool:
    if not spec.sends_detail:
        return False
    have = {k: v for k, v in (current.get("detail") or {}).items() if k not in MASKABLE_DETAIL_KEYS}
    want = {k: v for k, v in spec.detail.items() if k not in MASKABLE_DETAIL_KEYS}
    return have != want


async def reconcile(client: EventGridClient, spec: SourceSpec, current: dict[str, Any]
                    ) -> tuple[dict[str, Any], str]:
    """Bring an existing source in line with ``spec``.

    Returns:
        (source object, action) with action ``"unchanged"`` or ``"updated"``.

    Raises:
        RegistrationError: ``type`` or ``channel_id`` differ (both immutable, eg-api.md §3.1).
    """
    if current.get("type", "APPLICATION") != spec.register_type:
        raise RegistrationError(
            f"source {spec.name!r} is registered with type {current.get('type')!r}, the config "
            f"wants {spec.register_type!r}; the type cannot change: delete the source or rename"
        )
    if current.get("channel_id") != spec.channel_id:
        raise RegistrationError(
            f"source {spec.name!r} is registered on channel {current.get('channel_id')!r}, the "
            f"config names {spec.channel_id!r}; the channel cannot change: delete the source "
            "or rename"
        )
    if (current.get("description") or "") != spec.description or _detail_differs(spec, current):
        detail = dict(spec.detail) if spec.sends_detail else None
        return await client.update_source(current["id"], spec.description, detail), "updated"
    return current, "unchanged"


async def ensure_source(client: EventGridClient, spec: SourceSpec) -> tuple[dict[str, Any], str]:
    """Make sure the source exists and matches ``spec`` (design §5).

    Lists by exact name; absent -> create; present -> :func:`reconcile`. A create that loses a
    race with another replica (400 ``EG.00513001``) falls back to list + reconcile.

    Returns:
        (source object, action) with action ``"created"``, ``"updated"`` or ``"unchanged"``.

    Raises:
        RegistrationError: type or channel mismatch.
        EventGridError, TransportError: the API failed (callers retry transient ones).
    """
    found = [s for s in await client.list_sources(name=spec.name) if s.get("name") == spec.name]
    if found:
        return await reconcile(client, spec, found[0])
    try:
        return await client.create_source(spec.create_payload()), "created"
    except EventGridError as exc:
        if exc.status != 400 or not exc.error_code.endswith(DUPLICATE_NAME):
            raise
    found = [s for s in await client.list_sources(name=spec.name) if s.get("name") == spec.name]
    if not found:
        raise RegistrationError(f"source {spec.name!r} is reported as duplicate but not listed")
    return await reconcile(client, spec, found[0])
