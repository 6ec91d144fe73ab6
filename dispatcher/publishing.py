"""The publishing pipeline's entry point: validate a Community Request, then enqueue it.

Importing this module builds the engine's broker (a publisher needs one); the contract it validates
against stays a pure model in :mod:`dispatcher.contract`.
"""

from __future__ import annotations

from typing import Any

from dispatcher.actors import enqueue_request
from dispatcher.contract import PublishedRequest, validate_request


def check_request_agency(request: PublishedRequest) -> None:
    """Refuse a request from an unknown agency, or reaching outside its agency's jurisdiction."""
    from dispatcher.agencies.jurisdiction import check_area_in_jurisdiction
    from dispatcher.config import get_settings
    from dispatcher.db import get_pool
    from dispatcher.targeting.area import parse_area

    settings = get_settings()
    area = parse_area(request.area.model_dump(), max_vertices=settings.max_area_vertices,
                      max_area_km2=settings.max_area_km2, max_bytes=settings.max_area_bytes)
    with get_pool().connection() as conn:
        check_area_in_jurisdiction(conn, request.agency.id, area, settings)


def publish(data: Any) -> str:
    """Validate a Community Request and enqueue it on its ``requests`` queue; return its id.

    Raises :class:`dispatcher.errors.InvalidRequest` (naming each bad field) before anything is enqueued,
    also when the agency is unknown or the area reaches outside its jurisdiction.
    """
    request = validate_request(data)
    check_request_agency(request)
    enqueue_request(request.to_json_dict())
    return request.id
