"""Handlers of the emulator's source and channel APIs (shared/eg-api.md §3, §4).

Every handler answers JSON with the status codes EG documents: create and update 200, delete
204, errors through :class:`~bridge.emulator.errors.ApiError`.
"""

from __future__ import annotations

from aiohttp import web

from bridge.emulator import rules
from bridge.emulator.context import json_response, no_content, project_of, read_json
from bridge.emulator.store import page, utc_now

SOURCE_FILTERS = ("channel_id", "name", "fuzzy_name", "fuzzy_label", "provider_type")
CHANNEL_FILTERS = ("name", "fuzzy_name", "provider_type")


async def list_sources(request: web.Request) -> web.Response:
    """``GET /v1/{p}/sources``: 200 ``{total, size, items}`` (eg-api §3.4)."""
    project = project_of(request)
    query = rules.list_query(request.query, SOURCE_FILTERS)
    return json_response(page(project.sources.values(), query))


async def create_source(request: web.Request) -> web.Response:
    """``POST /v1/{p}/sources``: 200 + source object (eg-api §3.1, §3.5)."""
    project = project_of(request)
    spec = rules.source_spec(await read_json(request))
    return json_response(project.create_source(spec).to_json())


async def get_source(request: web.Request) -> web.Response:
    """``GET /v1/{p}/sources/{id}``: 200 + source object, or 404."""
    source = project_of(request).source(request.match_info["source_id"])
    return json_response(source.to_json())


async def update_source(request: web.Request) -> web.Response:
    """``PUT /v1/{p}/sources/{id}``: 200 + source object with the new description/detail."""
    project = project_of(request)
    source_id = request.match_info["source_id"]
    project.source(source_id)
    update = rules.source_update(await read_json(request))
    return json_response(project.update_source(source_id, update).to_json())


async def delete_source(request: web.Request) -> web.Response:
    """``DELETE /v1/{p}/sources/{id}``: 204, or 404 for an unknown id."""
    project = project_of(request)
    del project.sources[project.source(request.match_info["source_id"]).id]
    return no_content()


async def list_channels(request: web.Request) -> web.Response:
    """``GET /v1/{p}/channels``: 200 ``{total, size, items}`` (eg-api §4)."""
    project = project_of(request)
    query = rules.list_query(request.query, CHANNEL_FILTERS)
    return json_response(page(project.channels.values(), query))


async def create_channel(request: web.Request) -> web.Response:
    """``POST /v1/{p}/channels``: 200 + channel object (eg-api §4)."""
    project = project_of(request)
    spec = rules.channel_spec(await read_json(request))
    return json_response(project.create_channel(spec).to_json())


async def get_channel(request: web.Request) -> web.Response:
    """``GET /v1/{p}/channels/{id}``: 200 + channel object, or 404."""
    channel = project_of(request).channel(request.match_info["channel_id"])
    return json_response(channel.to_json())


async def update_channel(request: web.Request) -> web.Response:
    """``PUT /v1/{p}/channels/{id}``: 200; only ``description`` changes; the OFFICIAL
    channel is 403 ``EG.00514004``."""
    channel = project_of(request).modifiable_channel(request.match_info["channel_id"])
    description = rules.channel_update(await read_json(request))
    if description is not None:
        channel.description = description
    channel.updated_time = utc_now()
    return json_response(channel.to_json())


async def delete_channel(request: web.Request) -> web.Response:
    """``DELETE /v1/{p}/channels/{id}``: 204; 403 ``EG.00514004`` for the OFFICIAL channel
    or a channel sources still use; 404 for an unknown id."""
    project_of(request).delete_channel(request.match_info["channel_id"])
    return no_content()


def add_routes(app: web.Application) -> None:
    """Register the source and channel routes under ``/v1/{project_id}``."""
    base = "/v1/{project_id}"
    app.router.add_routes(
        [
            web.get(f"{base}/sources", list_sources),
            web.post(f"{base}/sources", create_source),
            web.get(f"{base}/sources/{{source_id}}", get_source),
            web.put(f"{base}/sources/{{source_id}}", update_source),
            web.delete(f"{base}/sources/{{source_id}}", delete_source),
            web.get(f"{base}/channels", list_channels),
            web.post(f"{base}/channels", create_channel),
            web.get(f"{base}/channels/{{channel_id}}", get_channel),
            web.put(f"{base}/channels/{{channel_id}}", update_channel),
            web.delete(f"{base}/channels/{{channel_id}}", delete_channel),
        ]
    )
