"""The job contract: one approved Community Request, as the publishing pipeline sends it.

The pydantic model is the single source of truth; ``schemas/community_request.schema.json`` is
generated from it (``dispatcher contract schema``) and a test keeps the two identical.
:func:`validate_request` runs on the pipeline's side (:func:`dispatcher.publishing.publish`) so a bad
request never reaches the queue, and the worker validates again because a queue can carry anything.
This module is the model only: importing it builds no broker and opens no connection.

Some checks depend on when and where a request is checked, so they live beside the model, not in it
(a stored request must stay loadable whatever the clock says or a setting becomes): the area's size in
bytes (``MAX_AREA_BYTES``), and whether ``published_at`` is plausible for an approval that just happened
(:func:`timestamp_problems`). :func:`validate_request` (publishing) and :func:`receive_request` (the
worker) apply them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from dispatcher.config import RESPONSE_WINDOW_DAYS, URGENT_INCIDENT_TYPES
from dispatcher.errors import InvalidArea, InvalidRequest

SCHEMA_RESOURCE = "community_request.schema.json"

#: A request id: what the pipeline, the ledger and the event stream key on. Checked before an id is
#: recorded or announced anywhere, so a malformed message cannot put an arbitrary string in the stream.
REQUEST_ID_MAX_LENGTH = 128
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
#: Longest part of a field's path quoted in an error (an unexpected key may be megabytes, or an address).
_MAX_NAME_IN_ERROR = 64

Text = Annotated[str, Field(min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Agency(_Strict):
    """The publishing agency; its name is shown to residents."""

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
    name: Text


class FootageWindow(_Strict):
    """The date and time window of footage asked for, ISO 8601 with an offset."""

    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> FootageWindow:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class Investigator(_Strict):
    """Who residents contact about the request."""

    name: Text
    phone: Annotated[str, Field(min_length=3, max_length=32, pattern=r"^\+?[0-9][0-9 ().\-]{1,30}$")]
    email: Annotated[
        str, Field(min_length=3, max_length=254, pattern=r"^[^@\s<>\"\r\n]+@[^@\s<>\"\r\n]+\.[^@\s<>\"\r\n]+$")
    ]


class GeoJSONArea(BaseModel):
    """A GeoJSON (RFC 7946) Polygon, MultiPolygon or a Feature holding one.

    Its form is checked here, strictly (no ``crs``; positions of 2 or 3 finite numbers, never strings
    or booleans; bounded in bytes), whenever a request arrives through :func:`parse_request`; the
    geometry (closed rings, validity, limits) by targeting. A stored payload, which passed these checks
    on its way in, is loaded without them (a coastline costs a tenth of a second to check).
    """

    model_config = ConfigDict(extra="allow", frozen=True, json_schema_extra={"not": {"required": ["crs"]}})

    type: Literal["Polygon", "MultiPolygon", "Feature"]

    @model_validator(mode="before")
    @classmethod
    def _strict_geojson(cls, data: Any, info: ValidationInfo) -> Any:
        from dispatcher.targeting.area import check_geojson

        if isinstance(data, Mapping) and info.context is not None:
            try:
                check_geojson(data, max_bytes=info.context.get("max_area_bytes"))
            except InvalidArea as error:
                raise PydanticCustomError("invalid_area", "{problem}", {"problem": error.problem}) from None
        return data


class CommunityRequest(_Strict):
    """An approved Community Request, immutable once published."""

    id: Annotated[str, Field(min_length=1, max_length=REQUEST_ID_MAX_LENGTH, pattern=REQUEST_ID_PATTERN)]
    agency: Agency
    incident_type: Annotated[str, Field(min_length=2, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
    details: Annotated[str, Field(min_length=1, max_length=5000)]
    footage_window: FootageWindow
    investigator: Investigator
    area: GeoJSONArea
    investigation_code: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$")]
    approved_at: AwareDatetime
    published_at: AwareDatetime

    @model_validator(mode="after")
    def _published_after_approval(self) -> CommunityRequest:
        if self.published_at < self.approved_at:
            raise ValueError("published_at must not be before approved_at")
        return self

    @property
    def urgent(self) -> bool:
        """Urgent incident types go first and with high push priority."""
        return self.incident_type in URGENT_INCIDENT_TYPES

    def to_json_dict(self) -> dict[str, Any]:
        """The request as plain JSON types, the form that travels in the queue."""
        return self.model_dump(mode="json")

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON: equal payloads give equal fingerprints."""
        canonical = json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def is_request_id(value: object) -> bool:
    """Whether ``value`` is a well-formed request id (the contract's length and characters)."""
    return (isinstance(value, str) and 0 < len(value) <= REQUEST_ID_MAX_LENGTH
            and _REQUEST_ID.match(value) is not None)


def _name(part: str | int) -> str:
    text = str(part)
    return text if len(text) <= _MAX_NAME_IN_ERROR else text[:_MAX_NAME_IN_ERROR] + "…"


def _describe(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        where = ".".join(_name(part) for part in item["loc"]) or "request"
        problems.append(f"{where}: {item['msg']}")
    return problems


def parse_request(data: Any, *, max_area_bytes: int | None = None) -> CommunityRequest:
    """Validate a request (a model, a mapping or a JSON string), naming every bad field on failure.

    ``max_area_bytes`` bounds the area's JSON (default: the ``MAX_AREA_BYTES`` setting).
    """
    if isinstance(data, CommunityRequest):
        return data
    if max_area_bytes is None:
        from dispatcher.config import get_settings

        max_area_bytes = get_settings().max_area_bytes
    context = {"max_area_bytes": max_area_bytes}
    try:
        if isinstance(data, str | bytes):
            return CommunityRequest.model_validate_json(data, context=context)
        if not isinstance(data, Mapping):
            raise InvalidRequest([f"request: expected a JSON object, got {type(data).__name__}"])
        return CommunityRequest.model_validate(dict(data), context=context)
    except ValidationError as error:
        raise InvalidRequest(_describe(error)) from None


def timestamp_problems(request: CommunityRequest, *, max_skew: timedelta, max_age: timedelta | None,
                       now: datetime | None = None) -> list[str]:
    """Why ``published_at`` is not plausible for an approval that just happened (empty if it is).

    Ahead of ``now`` by more than ``max_skew`` is refused (9999-12-31 would overflow the response
    window; 2099 would open a 73-year one). Older than ``max_age`` is refused at publication; the
    worker passes ``None``: an old request that waited in a queue is expired, not refused.
    """
    now = now or datetime.now(UTC)
    problems = []
    if request.published_at > now + max_skew:
        problems.append(f"published_at: lies in the future, more than {max_skew.total_seconds():.0f} seconds "
                        "after now; a request is published when it is approved")
    if max_age is not None and request.published_at < now - max_age:
        problems.append(f"published_at: more than {max_age.days} days ago, so its response window has "
                        "already ended")
    return problems


def receive_request(payload: Any, *, now: datetime | None = None) -> CommunityRequest:
    """The worker's check of a request message: the contract and a plausible ``published_at``."""
    from dispatcher.config import get_settings

    request = parse_request(payload)
    skew = timedelta(seconds=get_settings().max_clock_skew_seconds)
    problems = timestamp_problems(request, max_skew=skew, max_age=None, now=now)
    if problems:
        raise InvalidRequest(problems)
    return request


def validate_request(data: Any, *, now: datetime | None = None) -> CommunityRequest:
    """Full validation before publishing: the contract, a plausible ``published_at`` (not ahead of the
    clock by more than ``MAX_CLOCK_SKEW_SECONDS``, not older than the response window) and the area's
    geometry (the checks the worker applies).
    """
    from dispatcher.config import get_settings
    from dispatcher.targeting.area import parse_area

    settings = get_settings()
    request = parse_request(data, max_area_bytes=settings.max_area_bytes)
    problems = timestamp_problems(request, max_skew=timedelta(seconds=settings.max_clock_skew_seconds),
                                  max_age=timedelta(days=RESPONSE_WINDOW_DAYS), now=now)
    if problems:
        raise InvalidRequest(problems)
    parse_area(
        request.area.model_dump(),
        max_vertices=settings.max_area_vertices,
        max_area_km2=settings.max_area_km2,
        max_bytes=settings.max_area_bytes,
    )
    return request


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the contract, as published in the repository."""
    schema = CommunityRequest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://dispatcher.invalid/schemas/community_request.schema.json"
    return schema


def published_schema() -> dict[str, Any]:
    """The schema file shipped in the package."""
    text = resources.files("dispatcher.schemas").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded
