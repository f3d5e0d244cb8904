"""Validation rules of the EG emulator for request bodies and list queries.

Pure functions: each takes the parsed JSON body (or the query mapping) and returns a typed,
cleaned value or raises :class:`~bridge.emulator.errors.ApiError` 400 ``EG.00513000`` naming
every bad field at once. The rules come from shared/eg-api.md §3 (sources) and §4 (channels).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.emulator.errors import JsonObject, invalid_params

SOURCE_NAME_RE = re.compile(r"^(?!hc\.)[a-z0-9][a-z0-9._-]{0,127}$")
"""eg-api §3.1 (INFERENCE regex): lowercase, digits, ``._-``, 1-128, not ``hc.``."""
CHANNEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""eg-api §4: letters of either case, digits, ``._-``, 1-128, starting with letter/digit."""
SOURCE_TYPES = ("APPLICATION", "RABBITMQ", "ROCKETMQ")
PROVIDER_TYPES = ("OFFICIAL", "CUSTOM", "PARTNER")
MAX_DESCRIPTION = 255
MAX_LIMIT = 1000
DEFAULT_LIMIT = 15
SORT_FIELDS = ("created_time", "updated_time", "name")
IMMUTABLE_SOURCE_FIELDS = ("name", "type", "channel_id")


@dataclass(frozen=True)
class SourceSpec:
    """A valid create-source body (eg-api §3.1); ``detail`` is None when absent."""

    name: str
    channel_id: str
    description: str = ""
    type: str = "APPLICATION"
    detail: JsonObject | None = None


@dataclass(frozen=True)
class SourceUpdate:
    """A valid update-source body (eg-api §3.1): None means "leave unchanged".

    ``fixed`` holds the immutable keys (name, type, channel_id) the body carried; the store
    rejects them when they differ from the source.
    """

    description: str | None = None
    detail: JsonObject | None = None
    fixed: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChannelSpec:
    """A valid create-channel body (eg-api §4)."""

    name: str
    description: str = ""
    enterprise_project_id: str = "0"


@dataclass(frozen=True)
class ListQuery:
    """Paging, sorting and filters of a list request (eg-api §3.4).

    Attributes:
        offset: items to skip, >= 0.
        limit: page size, 1..1000 (default 15).
        sort_field: one of created_time, updated_time, name.
        descending: True for ``:DESC`` (the default ``created_time:DESC``).
        filters: the non-empty filter parameters the endpoint knows.
    """

    offset: int = 0
    limit: int = DEFAULT_LIMIT
    sort_field: str = "created_time"
    descending: bool = True
    filters: dict[str, str] = field(default_factory=dict)


def require_object(body: object) -> JsonObject:
    """Return ``body`` if it is a JSON object, else raise 400 ``EG.00513000``."""
    if not isinstance(body, dict):
        raise invalid_params("body: must be a JSON object")
    return body


def _description(body: JsonObject, problems: list[str]) -> str | None:
    value = body.get("description")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        problems.append(f"description: must be a string of at most {MAX_DESCRIPTION} characters")
        return None
    return value


def _detail(body: JsonObject, problems: list[str]) -> JsonObject | None:
    value = body.get("detail")
    if value is not None and not isinstance(value, dict):
        problems.append("detail: must be a JSON object")
        return None
    return value


def _name(body: JsonObject, pattern: re.Pattern[str], problems: list[str]) -> str:
    value = body.get("name")
    if not isinstance(value, str) or not pattern.fullmatch(value):
        problems.append(f"name: required, must match {pattern.pattern}")
        return ""
    return value


def source_spec(body: object) -> SourceSpec:
    """Validate a create-source body (eg-api §3.1); unknown keys are ignored.

    Raises:
        ApiError: 400 ``EG.00513000`` naming name, description, type, detail, channel_id.
    """
    obj, problems = require_object(body), list[str]()
    name = _name(obj, SOURCE_NAME_RE, problems)
    description = _description(obj, problems)
    detail = _detail(obj, problems)
    source_type = obj.get("type") or "APPLICATION"
    if source_type not in SOURCE_TYPES:
        problems.append(f"type: must be one of {', '.join(SOURCE_TYPES)}")
    channel_id = obj.get("channel_id")
    if not isinstance(channel_id, str) or not channel_id:
        problems.append("channel_id: required, a channel id string")
    if problems:
        raise invalid_params(*problems)
    return SourceSpec(name, str(channel_id), description or "", str(source_type), detail)


def source_update(body: object) -> SourceUpdate:
    """Validate an update-source body: only description and detail change (eg-api §3.1).

    Other keys are ignored, except name/type/channel_id, which are returned in ``fixed``.

    Raises:
        ApiError: 400 ``EG.00513000`` for a bad description or detail.
    """
    obj, problems = require_object(body), list[str]()
    description, detail = _description(obj, problems), _detail(obj, problems)
    if problems:
        raise invalid_params(*problems)
    fixed = {key: obj[key] for key in IMMUTABLE_SOURCE_FIELDS if key in obj}
    return SourceUpdate(description, detail, fixed)


def channel_spec(body: object) -> ChannelSpec:
    """Validate a create-channel body (eg-api §4); ``eps_id`` is read as the project field.

    Raises:
        ApiError: 400 ``EG.00513000`` for a bad name (``default`` is reserved) or description.
    """
    obj, problems = require_object(body), list[str]()
    name = _name(obj, CHANNEL_NAME_RE, problems)
    if name == "default":
        problems.append("name: 'default' is reserved for the OFFICIAL channel")
    description = _description(obj, problems)
    eps = obj.get("enterprise_project_id", obj.get("eps_id")) or "0"
    if not isinstance(eps, str):
        problems.append("enterprise_project_id: must be a string")
    if problems:
        raise invalid_params(*problems)
    return ChannelSpec(name, description or "", str(eps))


def channel_update(body: object) -> str | None:
    """Validate an update-channel body: only ``description`` changes (eg-api §4)."""
    problems: list[str] = []
    description = _description(require_object(body), problems)
    if problems:
        raise invalid_params(*problems)
    return description


def int_param(query: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    """Parse the integer query parameter ``key`` within ``[low, high]``.

    Raises:
        ApiError: 400 ``EG.00513000`` naming the parameter and its range.
    """
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise invalid_params(f"{key}: must be an integer from {low} to {high}")
    return value


def _sort(raw: str) -> tuple[str, bool]:
    sort_field, _, direction = raw.partition(":")
    direction = direction.upper() or "ASC"
    if sort_field not in SORT_FIELDS or direction not in ("ASC", "DESC"):
        raise invalid_params(f"sort: must be <{'|'.join(SORT_FIELDS)}>:<ASC|DESC>")
    return sort_field, direction == "DESC"


def list_query(query: Mapping[str, str], filter_keys: tuple[str, ...]) -> ListQuery:
    """Parse offset (>= 0), limit (1..1000, default 15), sort and filters (eg-api §3.4).

    The documented offset maximum of 100 is not enforced (design §5 pages past it).

    Raises:
        ApiError: 400 ``EG.00513000`` for a bad offset, limit, sort or provider_type.
    """
    offset = int_param(query, "offset", 0, 0, 2**31 - 1)
    limit = int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    sort_field, descending = _sort(query.get("sort") or "created_time:DESC")
    filters = {key: query[key] for key in filter_keys if query.get(key)}
    if filters.get("provider_type", "CUSTOM") not in PROVIDER_TYPES:
        raise invalid_params(f"provider_type: must be one of {', '.join(PROVIDER_TYPES)}")
    return ListQuery(offset, limit, sort_field, descending, filters)
