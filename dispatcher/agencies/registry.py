"""The agency registry: which agencies publish, and the jurisdiction each may publish in.

Records come from a GeoJSON FeatureCollection (one Feature per agency: ``properties`` ``id``, ``name``,
``kind``, optional ``active``; a Polygon or MultiPolygon geometry) read by :func:`read_feature_collection`,
or one at a time from the main application through the ``update_agencies`` actor. Every record is
checked whole before anything is written, and an import is one transaction: a bad feature loads nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from dispatcher.config import get_settings
from dispatcher.db.types import Conn
from dispatcher.errors import InvalidAgency, InvalidArea
from dispatcher.targeting.area import parse_area

#: Largest jurisdiction accepted, km²: unbounded in practice (a national agency), the request's own limit
#: (``MAX_AREA_KM2``) bounds what one request reaches.
JURISDICTION_MAX_KM2 = 600_000_000.0
#: Largest import file read, bytes.
MAX_IMPORT_BYTES = 256 * 1024 * 1024
#: An agency id: what the registry, requests and pseudonyms key on.
AGENCY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_MAX_NAME = 200


@dataclass(frozen=True)
class AgencyRecord:
    """One agency as the registry keeps it; ``jurisdiction`` is the GeoJSON geometry as given."""

    id: str
    name: str
    kind: str
    jurisdiction: Mapping[str, Any]
    active: bool = True


def parse_agency(feature: object, where: str = "agency") -> AgencyRecord:
    """A checked :class:`AgencyRecord` from one GeoJSON Feature; :class:`InvalidAgency` names the problem."""
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise InvalidAgency(f"{where}: expected a GeoJSON Feature")
    props = feature.get("properties")
    if not isinstance(props, Mapping):
        raise InvalidAgency(f"{where}: properties must be an object with id, name and kind")
    agency_id, name, kind = props.get("id"), props.get("name"), props.get("kind")
    if not isinstance(agency_id, str) or not AGENCY_ID.fullmatch(agency_id):
        raise InvalidAgency(f"{where}: properties.id must be 1-64 letters, digits or . _ : -")
    if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME:
        raise InvalidAgency(f"{where}: properties.name must be a non-empty string of at most {_MAX_NAME} characters")
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise InvalidAgency(f"{where}: properties.kind must be a lower-case word such as police or sheriff")
    active = props.get("active", True)
    if not isinstance(active, bool):
        raise InvalidAgency(f"{where}: properties.active must be true or false")
    geometry = feature.get("geometry")
    settings = get_settings()
    try:
        parse_area(geometry, max_vertices=settings.max_area_vertices, max_area_km2=JURISDICTION_MAX_KM2,
                   max_bytes=settings.max_area_bytes)
    except InvalidArea as error:
        raise InvalidAgency(f"{where} ({agency_id}): jurisdiction: {error.problem}") from None
    assert isinstance(geometry, Mapping)  # parse_area accepted it
    return AgencyRecord(agency_id, name.strip(), kind, dict(geometry), active)


def parse_feature_collection(data: object) -> list[AgencyRecord]:
    """Every agency of a FeatureCollection, checked; ids must be unique within the file."""
    if not isinstance(data, Mapping) or data.get("type") != "FeatureCollection":
        raise InvalidAgency("expected a GeoJSON FeatureCollection of agencies")
    features = data.get("features")
    if not isinstance(features, list):
        raise InvalidAgency("features must be an array")
    records = [parse_agency(feature, f"features[{index}]") for index, feature in enumerate(features)]
    seen: set[str] = set()
    for index, record in enumerate(records):
        if record.id in seen:
            raise InvalidAgency(f"features[{index}]: agency id {record.id!r} appears twice")
        seen.add(record.id)
    return records


def read_feature_collection(path: Path) -> list[AgencyRecord]:
    """The agencies in a GeoJSON file (UTF-8 JSON, bounded in size)."""
    with path.open("rb") as source:
        raw = source.read(MAX_IMPORT_BYTES + 1)
    if len(raw) > MAX_IMPORT_BYTES:
        raise InvalidAgency(f"{path.name}: larger than {MAX_IMPORT_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidAgency(f"{path.name}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise InvalidAgency(f"{path.name}: not JSON ({error.msg} at line {error.lineno})") from None
    except RecursionError:
        raise InvalidAgency(f"{path.name}: nested too deeply") from None
    return parse_feature_collection(data)


_UPSERT = """
INSERT INTO agencies AS a (id, name, kind, jurisdiction, active)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE
SET name = excluded.name, kind = excluded.kind, jurisdiction = excluded.jurisdiction,
    active = excluded.active, updated_at = now(),
    joined_at = CASE WHEN excluded.active AND NOT a.active THEN now() ELSE a.joined_at END,
    announced_at = CASE WHEN excluded.active AND NOT a.active THEN NULL ELSE a.announced_at END
RETURNING id, a.active AND a.joined_at = now() AS joined
"""


def upsert_agencies(conn: Conn, records: Iterable[AgencyRecord]) -> list[str]:
    """Insert or update agencies in one transaction; return the ids that joined (their announcement is due).

    An agency that becomes active again joins again; an agency imported as inactive has not joined.
    """
    new: list[str] = []
    with conn.transaction():
        for record in records:
            row = conn.execute(_UPSERT, (record.id, record.name, record.kind, Jsonb(dict(record.jurisdiction)),
                                         record.active)).fetchone()
            if row is not None and row[1]:
                new.append(str(row[0]))
    return new


def active_jurisdiction(conn: Conn, agency_id: str) -> Mapping[str, Any] | None:
    """The GeoJSON jurisdiction of an active agency, or ``None`` when it is unknown or inactive."""
    row = conn.execute("SELECT jurisdiction FROM agencies WHERE id = %s AND active", (agency_id,)).fetchone()
    return None if row is None else dict(row[0])


def active_agencies_geojson(conn: Conn) -> dict[str, Any]:
    """Active agencies and their jurisdictions as a FeatureCollection (nothing about residents)."""
    features: list[dict[str, Any]] = [
        {"type": "Feature", "id": agency_id, "geometry": jurisdiction,
         "properties": {"id": agency_id, "name": name, "kind": kind, "joined_at": joined_at.isoformat()}}
        for agency_id, name, kind, jurisdiction, joined_at in conn.execute(
            "SELECT id, name, kind, jurisdiction, joined_at FROM agencies WHERE active ORDER BY id"
        )
    ]
    return {"type": "FeatureCollection", "features": features}

