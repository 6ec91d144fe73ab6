"""The job contract: one approved request, as the publishing pipeline sends it.

Three kinds, a union discriminated by ``kind`` (absent: ``community_request``, so publishers from before
kinds existed keep working): :class:`CommunityRequest` (footage of a time window, asked of everyone in the
area who takes them), :class:`VideoRequest` (a case number, a short window, a small area, residents with
cameras only) and :class:`SafetyAlert` (information for everyone with safety alerts on; no window, no
response). Who each kind reaches lives in :mod:`dispatcher.preferences.eligibility`.

The pydantic models are the single source of truth; ``schemas/community_request.schema.json`` is
generated from it (``dispatcher contract schema``) and a test keeps the two identical.
:func:`validate_request` runs on the pipeline's side (:func:`dispatcher.publishing.publish`) so a bad
request never reaches the queue, and the worker validates again because a queue can carry anything.
This module is the model only: importing it builds no broker and opens no connection.

Some checks depend on when and where a request is checked, so they live beside the model, not in it
(a stored request must stay loadable whatever the clock says or a setting becomes): the area's size in
bytes (``MAX_AREA_BYTES``), whether ``published_at`` is plausible for an approval that just happened
(:func:`timestamp_problems`), and a video request's window and area (:func:`kind_problems`,
:func:`max_area_km2_for`). :func:`validate_request` (publishing) and :func:`receive_request` (the
worker) apply them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
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


class PublishedRequest(_Strict):
    """What every kind of published request has: who, what, where and when; immutable once published."""

    #: The request kind; each subclass fixes it (see :data:`REQUEST_KINDS`).
    kind: str
    id: Annotated[str, Field(min_length=1, max_length=REQUEST_ID_MAX_LENGTH, pattern=REQUEST_ID_PATTERN)]
    agency: Agency
    incident_type: Annotated[str, Field(min_length=2, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
    details: Annotated[str, Field(min_length=1, max_length=5000)]
    #: Who residents contact; every kind a publisher sends requires one (an announcement has none).
    investigator: Investigator | None = None
    area: GeoJSONArea
    approved_at: AwareDatetime
    published_at: AwareDatetime

    @model_validator(mode="after")
    def _published_after_approval(self) -> Self:
        if self.published_at < self.approved_at:
            raise ValueError("published_at must not be before approved_at")
        return self

    @property
    def takes_responses(self) -> bool:
        """Whether residents answer it (share, decline, opt out): requests do, safety alerts do not."""
        return True

    @property
    def urgent(self) -> bool:
        """Urgent incident types go first and with high push priority."""
        return self.incident_type in URGENT_INCIDENT_TYPES

    def to_json_dict(self) -> dict[str, Any]:
        """The request as plain JSON types, the form that travels in the queue and is stored.

        A Community Request leaves out its ``kind`` (the default), so it is stored, fingerprinted and
        sent exactly as before kinds existed.
        """
        data = self.model_dump(mode="json")
        if data.get("kind") == DEFAULT_KIND:
            del data["kind"]
        return data

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON: equal payloads give equal fingerprints."""
        canonical = json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class CommunityRequest(PublishedRequest):
    """An approved Community Request: footage of a time window, asked of everyone in the area who takes them.

    ``kind`` may be left out (publishers from before kinds existed).
    """

    kind: Literal["community_request"] = "community_request"
    investigator: Investigator
    footage_window: FootageWindow
    investigation_code: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$")]


class VideoRequest(CommunityRequest):
    """A video request: recordings of an active investigation, asked only of residents with cameras.

    It must name its case; its footage window and area are bounded by settings
    (``VIDEO_MAX_WINDOW_HOURS``, ``VIDEO_MAX_AREA_KM2``), checked by :func:`kind_problems`.
    """

    kind: Literal["video_request"]  # type: ignore[assignment]  # a video request is a kind of community request
    case_number: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$")]


class SafetyAlert(PublishedRequest):
    """A crime or safety alert: information for everyone in the area with safety alerts on; no footage
    window, nothing to answer."""

    kind: Literal["safety_alert"]
    investigator: Investigator

    @property
    def takes_responses(self) -> bool:
        """A safety alert asks nothing of residents."""
        return False


class AgencyAnnouncement(PublishedRequest):
    """An agency started using the service: residents inside its jurisdiction are told (push only).

    Made by the engine (:mod:`dispatcher.agencies.announcements`), never by a publisher: it is no branch
    of the published contract, only of what is stored.
    """

    kind: Literal["agency_announcement"]

    @property
    def takes_responses(self) -> bool:
        """An announcement asks nothing of residents."""
        return False


#: What a request without ``kind`` is.
DEFAULT_KIND = "community_request"
#: Every kind of request, by its ``kind``.
REQUEST_KINDS: dict[str, type[PublishedRequest]] = {
    "community_request": CommunityRequest, "video_request": VideoRequest, "safety_alert": SafetyAlert,
}


def _kind_of(data: Any) -> str:
    kind = data.get("kind", DEFAULT_KIND) if isinstance(data, Mapping) else getattr(data, "kind", DEFAULT_KIND)
    return kind if isinstance(kind, str) and kind in REQUEST_KINDS else "unknown"


#: A published request of any kind: a union discriminated by ``kind`` (absent: a Community Request).
AnyRequest = Annotated[
    Annotated[CommunityRequest, Tag("community_request")]
    | Annotated[VideoRequest, Tag("video_request")]
    | Annotated[SafetyAlert, Tag("safety_alert")],
    Discriminator(
        _kind_of,
        custom_error_type="unknown_kind",
        custom_error_message="kind must be one of " + ", ".join(REQUEST_KINDS),
    ),
]
_ADAPTER: TypeAdapter[PublishedRequest] = TypeAdapter(AnyRequest)
_STORED_KINDS: dict[str, type[PublishedRequest]] = {**REQUEST_KINDS, "agency_announcement": AgencyAnnouncement}


def load_stored(payload: Any) -> PublishedRequest:
    """A stored payload (already checked on its way in) as its request model, announcements included."""
    kind = payload.get("kind", DEFAULT_KIND) if isinstance(payload, Mapping) else DEFAULT_KIND
    return _STORED_KINDS.get(kind, CommunityRequest).model_validate(payload)


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
        loc = item["loc"]
        if loc and loc[0] in REQUEST_KINDS:  # the union's branch: named by the request's kind already
            loc = loc[1:]
        where = ".".join(_name(part) for part in loc) or "request"
        problems.append(f"{where}: {item['msg']}")
    return problems


def parse_request(data: Any, *, max_area_bytes: int | None = None) -> PublishedRequest:
    """Validate a request of any kind (a model, a mapping or a JSON string), naming every bad field.

    ``max_area_bytes`` bounds the area's JSON (default: the ``MAX_AREA_BYTES`` setting).
    """
    if isinstance(data, PublishedRequest):
        return data
    if max_area_bytes is None:
        from dispatcher.config import get_settings

        max_area_bytes = get_settings().max_area_bytes
    context = {"max_area_bytes": max_area_bytes}
    try:
        if isinstance(data, str | bytes):
            return _ADAPTER.validate_json(data, context=context)
        if not isinstance(data, Mapping):
            raise InvalidRequest([f"request: expected a JSON object, got {type(data).__name__}"])
        return _ADAPTER.validate_python(dict(data), context=context)
    except ValidationError as error:
        raise InvalidRequest(_describe(error)) from None


def kind_problems(request: PublishedRequest, *, max_window: timedelta) -> list[str]:
    """Why a request breaks its kind's limits that depend on settings (empty if it does not).

    Only a video request has such limits: its footage window at most ``max_window``; its area's size
    is bounded through :func:`max_area_km2_for` where the area is measured.
    """
    if isinstance(request, VideoRequest):
        span = request.footage_window.end - request.footage_window.start
        if span > max_window:
            return [f"footage_window: spans {span.total_seconds() / 3600:g} hours, more than the "
                    f"{max_window.total_seconds() / 3600:g} hours a video request may ask for"]
    return []


def max_area_km2_for(request: PublishedRequest, *, max_area_km2: float, video_max_area_km2: float) -> float:
    """The largest area the request's kind may cover: a video request's limit is smaller."""
    return min(max_area_km2, video_max_area_km2) if isinstance(request, VideoRequest) else max_area_km2


def timestamp_problems(request: PublishedRequest, *, max_skew: timedelta, max_age: timedelta | None,
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


def receive_request(payload: Any, *, now: datetime | None = None) -> PublishedRequest:
    """The worker's check of a request message: the contract, a plausible ``published_at``, the kind's limits."""
    from dispatcher.config import get_settings

    settings = get_settings()
    request = parse_request(payload)
    skew = timedelta(seconds=settings.max_clock_skew_seconds)
    problems = timestamp_problems(request, max_skew=skew, max_age=None, now=now)
    problems += kind_problems(request, max_window=timedelta(hours=settings.video_max_window_hours))
    if problems:
        raise InvalidRequest(problems)
    return request


def validate_request(data: Any, *, now: datetime | None = None) -> PublishedRequest:
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
    problems += kind_problems(request, max_window=timedelta(hours=settings.video_max_window_hours))
    if problems:
        raise InvalidRequest(problems)
    parse_area(
        request.area.model_dump(),
        max_vertices=settings.max_area_vertices,
        max_area_km2=max_area_km2_for(request, max_area_km2=settings.max_area_km2,
                                      video_max_area_km2=settings.video_max_area_km2),
        max_bytes=settings.max_area_bytes,
    )
    return request


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the contract, as published in the repository."""
    schema = _ADAPTER.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://dispatcher.invalid/schemas/community_request.schema.json"
    return schema


def published_schema() -> dict[str, Any]:
    """The schema file shipped in the package."""
    text = resources.files("dispatcher.schemas").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded
