"""In-memory state of the EG emulator: projects, channels, sources and counters (no I/O).

Times are RFC 3339 UTC strings with microseconds
and ``Z`` (e.g. ``2024-01-01T12:00:00.123456Z``); eg-api.md §1 leaves the format open.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from bridge.emulator import errors
from bridge.emulator.errors import ApiError, JsonObject, invalid_params, not_found
from bridge.emulator.rules import ChannelSpec, ListQuery, SourceSpec, SourceUpdate

CHANNEL_QUOTA = 10
"""CUSTOM channels per project (eg-api §3.3 quotas); the OFFICIAL channel does not count."""
SOURCE_QUOTA = 100
MQ_SOURCE_QUOTA = {"RABBITMQ": 5, "ROCKETMQ": 5}
SOURCE_STATUSES = ("CREATE_FAILED", "RUNNING", "ERROR")
_FUZZY = {"fuzzy_name": "name", "fuzzy_label": "label"}
_seq = itertools.count()


def utc_now() -> str:
    """The current time as RFC 3339 UTC with microseconds, e.g. ``2024-01-01T00:00:00.000001Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_channel_id(project_id: str) -> str:
    """The id of a project's OFFICIAL ``default`` channel: a UUID derived from the project id,
    so it is stable across restarts."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"eg-emulator:{project_id}:default"))


class Listed(Protocol):
    """What a list endpoint pages over: a creation sequence number and a JSON form."""

    seq: int

    def to_json(self) -> JsonObject:
        """The object as the API returns it."""
        ...


@dataclass
class Channel:
    """A channel (``ChannelInfo``, eg-api §4); ``provider_type`` is OFFICIAL or CUSTOM."""

    id: str
    name: str
    provider_type: str
    description: str = ""
    enterprise_project_id: str = "0"
    created_time: str = field(default_factory=utc_now)
    updated_time: str = ""
    seq: int = field(default_factory=lambda: next(_seq))

    def __post_init__(self) -> None:
        self.updated_time = self.updated_time or self.created_time

    def to_json(self) -> JsonObject:
        """The channel object; the project field is sent as both spellings (eg-api §4)."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "provider_type": self.provider_type,
            "created_time": self.created_time,
            "updated_time": self.updated_time,
            "enterprise_project_id": self.enterprise_project_id,
            "eps_id": self.enterprise_project_id,
        }


@dataclass
class Source:
    """A custom event source (``CustomizeSourceInfo``, eg-api §3.2)."""

    name: str
    channel: Channel
    type: str
    description: str = ""
    detail: JsonObject = field(default_factory=dict)
    status: str = "RUNNING"
    error_info: JsonObject = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_time: str = field(default_factory=utc_now)
    updated_time: str = ""
    seq: int = field(default_factory=lambda: next(_seq))

    def __post_init__(self) -> None:
        self.updated_time = self.updated_time or self.created_time

    def to_json(self) -> JsonObject:
        """The source object; ``label`` equals ``name`` and ``detail`` is echoed as sent."""
        return {
            "id": self.id,
            "name": self.name,
            "label": self.name,
            "description": self.description,
            "provider_type": "CUSTOM",
            "created_time": self.created_time,
            "updated_time": self.updated_time,
            "channel_id": self.channel.id,
            "channel_name": self.channel.name,
            "type": self.type,
            "detail": self.detail,
            "status": self.status,
            "error_info": self.error_info,
        }


def _matches(item: JsonObject, filters: Mapping[str, str]) -> bool:
    for key, want in filters.items():
        if key in _FUZZY:
            if want.lower() not in str(item.get(_FUZZY[key], "")).lower():
                return False
        elif item.get(key) != want:
            return False
    return True


def page(objects: Iterable[Listed], query: ListQuery) -> JsonObject:
    """Filter, sort and cut one page: ``{"total", "size", "items"}`` (eg-api §3.4).

    ``name``/``channel_id``/``provider_type`` match exactly, ``fuzzy_*`` as case-insensitive
    substrings; ties in the sort field keep creation order.

    Raises:
        ApiError: 400 ``APIGW.0106`` for a non-zero offset >= total (eg-api §3.4, §8.2).
    """
    rows = [(obj.seq, obj.to_json()) for obj in objects]
    rows = [row for row in rows if _matches(row[1], query.filters)]
    rows.sort(key=lambda row: (row[1][query.sort_field], row[0]), reverse=query.descending)
    if query.offset and query.offset >= len(rows):
        detail = f"offset {query.offset} is past the end of the list (total {len(rows)})"
        raise ApiError(400, errors.PAGE_PAST_END, "Orchestration error", detail)
    items = [row[1] for row in rows[query.offset : query.offset + query.limit]]
    return {"total": len(rows), "size": len(items), "items": items}


class Project:
    """One project's channels and sources, with EG's uniqueness and quota rules.

    Args:
        project_id: the IAM project id of the URL path.
        custom_channels: NAME -> ID of CUSTOM channels to pre-seed (``--channel``).
    """

    def __init__(self, project_id: str, custom_channels: Mapping[str, str]) -> None:
        self.id = project_id
        self.channels: dict[str, Channel] = {}
        self.sources: dict[str, Source] = {}
        official = Channel(default_channel_id(project_id), "default", "OFFICIAL")
        official.description = "Default channel for cloud service events"
        for channel in (official, *(Channel(i, n, "CUSTOM") for n, i in custom_channels.items())):
            self.channels[channel.id] = channel

    def channel(self, channel_id: str) -> Channel:
        """The channel ``channel_id``, else 404 ``EG.00014040``."""
        if channel_id not in self.channels:
            raise not_found(f"channel {channel_id}")
        return self.channels[channel_id]

    def create_channel(self, spec: ChannelSpec) -> Channel:
        """Add a CUSTOM channel; 400 ``EG.00513001`` for a duplicate name, 403
        ``EG.00514003`` beyond 10 CUSTOM channels (eg-api §3.3, §4)."""
        if any(c.name == spec.name for c in self.channels.values()):
            raise ApiError(400, errors.NAME_DUPLICATED, f"Name duplicated: {spec.name}")
        if sum(c.provider_type == "CUSTOM" for c in self.channels.values()) >= CHANNEL_QUOTA:
            raise ApiError(403, errors.QUOTA_EXCEEDED, f"Quota of {CHANNEL_QUOTA} channels used")
        channel = Channel(str(uuid.uuid4()), spec.name, "CUSTOM", spec.description)
        channel.enterprise_project_id = spec.enterprise_project_id
        self.channels[channel.id] = channel
        return channel

    def modifiable_channel(self, channel_id: str) -> Channel:
        """The CUSTOM channel ``channel_id``; 404 if unknown, 403 ``EG.00514004`` for the
        OFFICIAL channel."""
        channel = self.channel(channel_id)
        if channel.provider_type != "CUSTOM":
            raise ApiError(403, errors.NOT_MODIFIABLE, "The OFFICIAL channel cannot be changed")
        return channel

    def delete_channel(self, channel_id: str) -> None:
        """Remove a CUSTOM channel; 403 ``EG.00514004`` while sources use it."""
        channel = self.modifiable_channel(channel_id)
        users = [s.name for s in self.sources.values() if s.channel is channel]
        if users:
            msg = f"Channel {channel.name} is used by sources: {', '.join(users)}"
            raise ApiError(403, errors.NOT_MODIFIABLE, msg)
        del self.channels[channel_id]

    def source(self, source_id: str) -> Source:
        """The source ``source_id``, else 404 ``EG.00014040`` (eg-api §3.5)."""
        if source_id not in self.sources:
            raise not_found(f"source {source_id}")
        return self.sources[source_id]

    def create_source(self, spec: SourceSpec) -> Source:
        """Add a custom source (eg-api §3.1, §3.5).

        Raises:
            ApiError: 400 ``EG.00513005`` unknown or OFFICIAL channel; 400 ``EG.00513001``
                duplicate name in the project; 403 ``EG.00514003`` quota (100 sources, 5
                RABBITMQ, 5 ROCKETMQ).
        """
        channel = self.channels.get(spec.channel_id)
        if channel is None or channel.provider_type != "CUSTOM":
            msg = f"Invalid channel: {spec.channel_id} is not a CUSTOM channel of the project"
            raise ApiError(400, errors.INVALID_CHANNEL, msg)
        if any(s.name == spec.name for s in self.sources.values()):
            raise ApiError(400, errors.NAME_DUPLICATED, f"Name duplicated: {spec.name}")
        self._check_quota(spec.type)
        source = Source(spec.name, channel, spec.type, spec.description, spec.detail or {})
        self.sources[source.id] = source
        return source

    def _check_quota(self, source_type: str) -> None:
        if len(self.sources) >= SOURCE_QUOTA:
            raise ApiError(403, errors.QUOTA_EXCEEDED, f"Quota of {SOURCE_QUOTA} sources used")
        limit = MQ_SOURCE_QUOTA.get(source_type)
        if limit is not None and sum(s.type == source_type for s in self.sources.values()) >= limit:
            msg = f"Quota of {limit} {source_type} sources used"
            raise ApiError(403, errors.QUOTA_EXCEEDED, msg)

    def update_source(self, source_id: str, update: SourceUpdate) -> Source:
        """Change description/detail; 400 ``EG.00513000`` if name, type or channel_id in the
        body differ from the source (immutable, eg-api §3.1)."""
        source = self.source(source_id)
        current = {"name": source.name, "type": source.type, "channel_id": source.channel.id}
        changed = [key for key, value in update.fixed.items() if value != current[key]]
        if changed:
            raise invalid_params(*(f"{key}: cannot be changed" for key in changed))
        if update.description is not None:
            source.description = update.description
        if update.detail is not None:
            source.detail = update.detail
        source.updated_time = utc_now()
        return source

    def source_names(self, channel_id: str) -> set[str]:
        """Names of the custom sources attached to ``channel_id`` (PutEvents, eg-api §5)."""
        return {s.name for s in self.sources.values() if s.channel.id == channel_id}


class Store:
    """Every configured project; other project ids are 404 (design §4)."""

    def __init__(self, project_ids: Iterable[str], custom_channels: Mapping[str, str]) -> None:
        self.projects = {p: Project(p, custom_channels) for p in project_ids}

    def project(self, project_id: str) -> Project:
        """The project ``project_id``, else 404 ``EG.00014040``."""
        if project_id not in self.projects:
            raise not_found(f"project {project_id}")
        return self.projects[project_id]

    def find_source(self, source_id: str) -> Source:
        """The source ``source_id`` in any project, else 404 ``EG.00014040``."""
        for project in self.projects.values():
            if source_id in project.sources:
                return project.sources[source_id]
        raise not_found(f"source {source_id}")


@dataclass
class Stats:
    """Counters exposed at ``GET /emulator/stats``."""

    api_requests: int = 0
    """Every ``/v1/...`` request received, answered or not."""
    put_events_requests: int = 0
    """Every PutEvents request received, including failed and fault-injected ones."""
    events_accepted: int = 0
    events_failed: int = 0
    """Events answered with a per-event error."""
    auth_failures: int = 0
    faults_applied: int = 0
    iam_token_requests: int = 0
    """Every ``POST /v3/auth/tokens`` received, answered or not."""
    tokens_issued: int = 0

    def to_json(self) -> JsonObject:
        """The counters as a JSON object."""
        return asdict(self)
