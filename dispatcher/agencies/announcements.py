"""Agencies joining: residents inside a new agency's jurisdiction are told, by the same pipeline.

An announcement is stored as a request of kind ``agency_announcement`` whose area is the agency's
jurisdiction, so it goes through the same acceptance, targeting, ledger, reconciler and channels as any
request: the app's feed shows it, and residents with announcements on (a setting per resident) get one
push. It never goes by email and takes no response. It is made once per joining (``announced_at``),
however often the agency is imported or updated.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dispatcher import lifecycle
from dispatcher.agencies.content import announcement_text
from dispatcher.contract import AgencyAnnouncement
from dispatcher.db.types import Conn

#: The incident type of every announcement.
ANNOUNCEMENT_TYPE = "agency_joined"


def announcement_for(agency_id: str, name: str, jurisdiction: dict[str, object], joined_at: datetime,
                     now: datetime | None = None) -> AgencyAnnouncement:
    """The announcement of one agency's joining (its id is fixed by the agency and the time it joined)."""
    now = now or datetime.now(UTC)
    return AgencyAnnouncement.model_validate({
        "kind": "agency_announcement",
        "id": f"agency-joined.{agency_id}.{int(joined_at.timestamp())}",
        "agency": {"id": agency_id, "name": name},
        "incident_type": ANNOUNCEMENT_TYPE,
        "details": announcement_text(name),  # in English as stored; each resident's push says it in theirs
        "area": jurisdiction,
        "approved_at": now.isoformat(),
        "published_at": now.isoformat(),
    })


def store_announcement(conn: Conn, agency_id: str) -> str | None:
    """Store the announcement of an agency that joined and has not been announced; return its request id.

    ``None`` when the agency is unknown, inactive or already announced (so running twice is harmless).
    """
    with conn.transaction():
        row = conn.execute(
            "SELECT name, jurisdiction, joined_at FROM agencies"
            " WHERE id = %s AND active AND announced_at IS NULL FOR UPDATE", (agency_id,)).fetchone()
        if row is None:
            return None
        announcement = announcement_for(agency_id, str(row[0]), dict(row[1]), row[2])
        lifecycle.accept(conn, announcement)
        conn.execute("UPDATE agencies SET announced_at = now() WHERE id = %s", (agency_id,))
    return announcement.id
