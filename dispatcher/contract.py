"""The job contract: one approved Community Request, as the publishing pipeline sends it.

The pydantic model is the single source of truth; ``schemas/community_request.schema.json`` is
generated from it (``dispatcher contract schema``) and a test keeps the two identical.
:func:`validate_request` runs on the pipeline's side (:func:`dispatcher.publishing.publish`) so a bad
request never reaches the queue, and the worker validates again because a queue can carry anything.
This module is the model only: importing it builds no broker and opens no connection.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from dispatcher.config import URGENT_INCIDENT_TYPES
from dispatcher.errors import InvalidRequest

SCHEMA_RESOURCE = "community_request.schema.json"

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
    """A GeoJSON Polygon, MultiPolygon or a Feature holding one; geometry is checked by targeting."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["Polygon", "MultiPolygon", "Feature"]


class CommunityRequest(_Strict):
    """An approved Community Request, immutable once published."""

    id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")]
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


def _describe(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "request"
        problems.append(f"{where}: {item['msg']}")
    return problems


def parse_request(data: Any) -> CommunityRequest:
    """Validate a request (a model, a mapping or a JSON string), naming every bad field on failure."""
    if isinstance(data, CommunityRequest):
        return data
    try:
        if isinstance(data, str | bytes):
            return CommunityRequest.model_validate_json(data)
        if not isinstance(data, Mapping):
            raise InvalidRequest([f"request: expected a JSON object, got {type(data).__name__}"])
        return CommunityRequest.model_validate(dict(data))
    except ValidationError as error:
        raise InvalidRequest(_describe(error)) from None


def validate_request(data: Any) -> CommunityRequest:
    """Full validation: the contract and the area's geometry (the same checks the worker applies)."""
    from dispatcher.config import get_settings
    from dispatcher.targeting.area import parse_area

    request = parse_request(data)
    settings = get_settings()
    parse_area(
        request.area.model_dump(),
        max_vertices=settings.max_area_vertices,
        max_area_km2=settings.max_area_km2,
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
