"""HTTP routes for the main application: responses, a resident's own view, shares, the agencies' map.

An :class:`fastapi.APIRouter` the ``dispatcher api`` service mounts. The service sits behind the main
application, which authenticates residents and agencies and calls these routes on their behalf:
``/agencies/{agency_id}/...`` must only be called for the agency the caller is. The agency-facing
routes (shares, the map) return pseudonyms, consented contact details and jurisdictions, never a
resident id, a location, a decline or a count.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path

from dispatcher.agencies import registry, responses
from dispatcher.db import get_pool
from dispatcher.errors import InvalidResponse

router = APIRouter(tags=["agencies"])

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
AgencyId = Annotated[str, Path(min_length=1, max_length=64, pattern=_ID)]
RequestId = Annotated[str, Path(min_length=1, max_length=128, pattern=_ID)]
ResidentId = Annotated[int, Path(gt=0, le=2**63 - 1)]


def _refused(problem: InvalidResponse) -> HTTPException:
    return HTTPException(status_code=problem.status, detail=str(problem))


@router.post("/responses", status_code=202)
def post_response(body: Annotated[dict[str, Any], Body()]) -> dict[str, bool]:
    """A resident shared, declined, or opted out of all future requests."""
    unknown = sorted(set(body) - {"request_id", "resident_id", "response", "contact_consent", "contact"})
    if unknown:
        raise HTTPException(status_code=422, detail=f"unknown fields: {len(unknown)}")
    try:
        answer = responses.parse_response(body.get("request_id"), body.get("resident_id"), body.get("response"),
                                          body.get("contact_consent", False), body.get("contact"))
        with get_pool().connection() as conn:
            responses.record_response(conn, answer)
    except InvalidResponse as problem:
        raise _refused(problem) from None
    return {"recorded": True}


@router.get("/residents/{resident_id}/responses")
def get_resident_responses(resident_id: ResidentId) -> dict[str, Any]:
    """The resident's own answers (for their own view in the app only)."""
    with get_pool().connection() as conn:
        return responses.resident_responses(conn, resident_id)


@router.get("/agencies/{agency_id}/requests/{request_id}/shares")
def get_shares(agency_id: AgencyId, request_id: RequestId) -> dict[str, Any]:
    """Agency-facing: the shares of one of its requests, under "Neighbor #" pseudonyms."""
    try:
        with get_pool().connection() as conn:
            return {"request_id": request_id, "shares": responses.agency_shares(conn, agency_id, request_id)}
    except InvalidResponse as problem:
        raise _refused(problem) from None


@router.get("/agencies.geojson")
def get_agencies_map() -> dict[str, Any]:
    """Active agencies and their jurisdictions, for the app's map (nothing about residents)."""
    with get_pool().connection() as conn:
        return registry.active_agencies_geojson(conn)
