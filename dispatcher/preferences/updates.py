"""Incremental changes to the resident index, as the main application reports them.

Every function is idempotent and ordered by ``version``, a number the main application increases with
every change to a resident. Each part of a resident that can change on its own remembers the version
that last wrote it (profile, email, each setting, each token), so a late, older message is ignored and
never hides a newer one. A transaction-scoped advisory lock per resident serialises concurrent changes
to one resident, so a delete and a late create cannot interleave.

Each function returns ``True`` when it changed something, ``False`` when the message was a replay or
older than what the index already holds. A change for a resident the index does not know yet raises
:class:`UnknownResident` (its creation may still be in a queue: retry later), unless the resident was
deleted at a newer version, in which case the change is dropped.
"""

from __future__ import annotations

import h3
from psycopg import sql

from dispatcher import ledger
from dispatcher.config import RESIDENT_CELL_RESOLUTION
from dispatcher.db.types import Conn
from dispatcher.errors import InvalidResidentUpdate, UnknownResident
from dispatcher.preferences import eligibility, validation

#: First key of the two-key advisory locks that serialise changes to one resident ("resi").
_LOCK_CLASS = 0x72657369
#: First key of the advisory locks that serialise changes to one device token ("tokn").
_TOKEN_LOCK_CLASS = 0x746F6B6E

# Records that ``resident_id`` wrote ``token`` at ``version``; no row when it already had (a replay).
_CLAIM_TOKEN = """
INSERT INTO device_token_claims AS c (token, resident_id, version) VALUES (%(token)s, %(id)s, %(v)s)
ON CONFLICT (token, resident_id) DO UPDATE SET version = EXCLUDED.version WHERE c.version < EXCLUDED.version
"""
#: Why a token was retired when the resident (not the provider) removed it.
REMOVED_BY_RESIDENT = "removed"


def resident_cell(lat: float, lng: float) -> int:
    """The resident's H3 cell at the index resolution, as the BIGINT the index stores."""
    return int(h3.str_to_int(h3.latlng_to_cell(lat, lng, RESIDENT_CELL_RESOLUTION)))


def _check(*problems: str | None) -> None:
    for problem in problems:
        if problem is not None:
            raise InvalidResidentUpdate(problem)


def _lock_resident(conn: Conn, resident_id: int) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_CLASS, resident_id % 2**31))


def _claim_token(conn: Conn, resident_id: int, token: str, version: int) -> bool:
    """Serialise changes to ``token`` and tell whether this change is new for this resident.

    Versions are counted per resident, so they cannot order two residents' registrations of one token.
    What they can tell is a replay: a resident who already wrote this token at this version or later
    sends nothing new. So each (token, resident) remembers its newest version, and only a change newer
    than that may move or retire the token.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_TOKEN_LOCK_CLASS, token))
    return conn.execute(_CLAIM_TOKEN, {"token": token, "id": resident_id, "v": version}).rowcount > 0


def _tombstone_version(conn: Conn, resident_id: int) -> int | None:
    row = conn.execute("SELECT version FROM resident_tombstones WHERE id = %s", (resident_id,)).fetchone()
    return None if row is None else int(row[0])


def _require_resident(conn: Conn, resident_id: int, version: int) -> bool:
    """``True`` if the resident exists; ``False`` if deleted at ``version`` or later; else raise."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM residents WHERE id = %(id)s),"
        " (SELECT version FROM resident_tombstones WHERE id = %(id)s)",
        {"id": resident_id},
    ).fetchone()
    assert row is not None
    exists, tombstone = bool(row[0]), row[1]
    if exists:
        return True
    if tombstone is not None and version <= int(tombstone):
        return False
    raise UnknownResident(f"resident {resident_id} is not in the index (change version {version})")


def upsert_resident(
    conn: Conn,
    resident_id: int,
    *,
    version: int,
    lat: float,
    lng: float,
    email: str | None,
    locale: str = "en-US",
    time_zone: str = "UTC",
    has_camera: bool = False,
) -> bool:
    """A resident was created or changed (moved, new locale...); the H3 cell follows the location."""
    _check(
        validation.resident_id_problem(resident_id),
        validation.version_problem(version),
        validation.location_problem(lat, lng),
        None if email is None else validation.email_problem(email),
        validation.locale_problem(locale),
        validation.time_zone_problem(time_zone),
        validation.flag_problem("has_camera", has_camera),
    )
    cell = resident_cell(lat, lng)
    with conn.transaction():
        _lock_resident(conn, resident_id)
        tombstone = _tombstone_version(conn, resident_id)
        if tombstone is not None:
            if version <= tombstone:
                return False
            conn.execute("DELETE FROM resident_tombstones WHERE id = %s", (resident_id,))
        previous_zone = conn.execute("SELECT time_zone FROM residents WHERE id = %s", (resident_id,)).fetchone()
        cur = conn.execute(
            """
            INSERT INTO residents AS r
                (id, lat, lng, cell, email, email_version, locale, time_zone, has_camera, version)
            VALUES (%(id)s, %(lat)s, %(lng)s, %(cell)s, %(email)s, %(v)s, %(locale)s, %(tz)s,
                    %(camera)s, %(v)s)
            ON CONFLICT (id) DO UPDATE SET
                lat        = CASE WHEN r.version < EXCLUDED.version THEN EXCLUDED.lat ELSE r.lat END,
                lng        = CASE WHEN r.version < EXCLUDED.version THEN EXCLUDED.lng ELSE r.lng END,
                cell       = CASE WHEN r.version < EXCLUDED.version THEN EXCLUDED.cell ELSE r.cell END,
                locale     = CASE WHEN r.version < EXCLUDED.version THEN EXCLUDED.locale ELSE r.locale END,
                time_zone  = CASE WHEN r.version < EXCLUDED.version
                                  THEN EXCLUDED.time_zone ELSE r.time_zone END,
                has_camera = CASE WHEN r.version < EXCLUDED.version
                                  THEN EXCLUDED.has_camera ELSE r.has_camera END,
                email      = CASE WHEN r.email_version < EXCLUDED.version THEN EXCLUDED.email ELSE r.email END,
                version       = GREATEST(r.version, EXCLUDED.version),
                email_version = GREATEST(r.email_version, EXCLUDED.version),
                updated_at    = now()
            WHERE r.version < EXCLUDED.version OR r.email_version < EXCLUDED.version
            """,
            {"id": resident_id, "lat": float(lat), "lng": float(lng), "cell": cell, "email": email,
             "v": version, "locale": locale, "tz": time_zone, "camera": bool(has_camera)},
        )
        if cur.rowcount > 0 and previous_zone is not None and previous_zone[0] != time_zone:
            ledger.reconsider_holds(conn, resident_id)  # quiet hours follow the resident's clock
        return cur.rowcount > 0


def delete_resident(conn: Conn, resident_id: int, *, version: int) -> bool:
    """A resident left: their row, settings, tokens and personal data go, pending deliveries are skipped.

    Only ``resident_tombstones(id, version)`` stays, so that a late, older message cannot resurrect them.
    """
    _check(validation.resident_id_problem(resident_id), validation.version_problem(version))
    with conn.transaction():
        _lock_resident(conn, resident_id)
        tombstone = _tombstone_version(conn, resident_id)
        if tombstone is not None and version <= tombstone:
            return False
        row = conn.execute(
            "SELECT GREATEST(version, email_version) FROM residents WHERE id = %s", (resident_id,)
        ).fetchone()
        if row is not None and version <= int(row[0]):
            return False
        conn.execute(
            "INSERT INTO resident_tombstones (id, version) VALUES (%(id)s, %(v)s)"
            " ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, deleted_at = now()",
            {"id": resident_id, "v": version},
        )
        # Settings and tokens go with the row (ON DELETE CASCADE); token claims have no foreign key.
        conn.execute("DELETE FROM residents WHERE id = %s", (resident_id,))
        conn.execute("DELETE FROM device_token_claims WHERE resident_id = %s", (resident_id,))
        ledger.skip_resident_deliveries(conn, resident_id, eligibility.RESIDENT_DELETED)
        return True


def change_settings(
    conn: Conn,
    resident_id: int,
    *,
    version: int,
    community_requests: bool | None = None,
    push: bool | None = None,
    email: bool | None = None,
    quiet_hours: bool | None = None,
    quiet_start: str | None = None,
    quiet_end: str | None = None,
) -> bool:
    """A resident switched Community Requests, push, email or quiet hours, or moved their quiet hours
    (``"HH:MM"`` on their own clock); ``None``: left as it was.

    A change to quiet hours makes the resident's held deliveries be decided again at their next claim.
    """
    _check(
        validation.resident_id_problem(resident_id),
        validation.version_problem(version),
        validation.flag_problem("community_requests", community_requests, optional=True),
        validation.flag_problem("push", push, optional=True),
        validation.flag_problem("email", email, optional=True),
        validation.flag_problem("quiet_hours", quiet_hours, optional=True),
        validation.clock_problem("quiet_start", quiet_start, optional=True),
        validation.clock_problem("quiet_end", quiet_end, optional=True),
    )
    changes = {"cr": community_requests, "push": push, "email": email, "quiet": quiet_hours,
               "qstart": quiet_start, "qend": quiet_end}
    if all(value is None for value in changes.values()):
        return False
    with conn.transaction():
        _lock_resident(conn, resident_id)
        if not _require_resident(conn, resident_id, version):
            return False
        cur = conn.execute(_CHANGE_SETTINGS, {"id": resident_id, "v": version, **changes})
        changed = cur.rowcount > 0
        if changed and (quiet_hours, quiet_start, quiet_end) != (None, None, None):
            ledger.reconsider_holds(conn, resident_id)
        return changed


#: Each setting: its column, the column remembering the version that last wrote it, its parameter in
#: :func:`change_settings`, its SQL type, and its value on a first row whose change leaves it unset.
_SETTINGS = (
    ("community_requests", "community_requests_version", "cr", "boolean", "TRUE"),
    ("push_enabled", "push_version", "push", "boolean", "TRUE"),
    ("email_enabled", "email_enabled_version", "email", "boolean", "TRUE"),
    ("quiet_hours", "quiet_hours_version", "quiet", "boolean", "TRUE"),
    ("quiet_start", "quiet_start_version", "qstart", "time", "NULL"),  # NULL: the engine's default
    ("quiet_end", "quiet_end_version", "qend", "time", "NULL"),
)


def _change_settings_sql() -> str:
    """One upsert for every setting: each written only by a change newer than the one that last wrote it."""
    columns = ", ".join(f"{column}, {version}" for column, version, *_ in _SETTINGS)
    values = ", ".join(f"COALESCE(%({p})s::{kind}, {unset}), CASE WHEN %({p})s::{kind} IS NULL THEN 0 ELSE %(v)s END"
                       for _, _, p, kind, unset in _SETTINGS)
    newest = ",\n    ".join(
        f"{column} = CASE WHEN EXCLUDED.{version} > s.{version} THEN EXCLUDED.{column} ELSE s.{column} END,"
        f" {version} = GREATEST(s.{version}, EXCLUDED.{version})" for column, version, *_ in _SETTINGS)
    newer = " OR ".join(f"EXCLUDED.{version} > s.{version}" for _, version, *_ in _SETTINGS)
    return f"""
INSERT INTO resident_settings AS s (resident_id, {columns}, version)
VALUES (%(id)s, {values}, %(v)s)
ON CONFLICT (resident_id) DO UPDATE SET
    {newest},
    version = GREATEST(s.version, EXCLUDED.version), updated_at = now()
WHERE {newer}
"""


_CHANGE_SETTINGS = _change_settings_sql()


def register_token(conn: Conn, resident_id: int, token: str, *, version: int) -> bool:
    """A device of the resident registered for push.

    A token the resident removed earlier comes back with a newer registration; a token FCM declared
    dead stays retired (FCM never revives a token). A token registered by another resident moves to
    them: a device changes hands by signing in again. A registration this resident already made (a
    redelivered message, or an older one) changes nothing, so it never takes the device back from the
    resident who signed in on it since (see :func:`_claim_token`).
    """
    _check(
        validation.resident_id_problem(resident_id),
        validation.version_problem(version),
        validation.token_problem(token),
    )
    with conn.transaction():
        _lock_resident(conn, resident_id)
        if not _require_resident(conn, resident_id, version):
            return False
        if not _claim_token(conn, resident_id, token, version):
            return False
        cur = conn.execute(
            """
            INSERT INTO device_tokens AS t (token, resident_id, version)
            VALUES (%(token)s, %(id)s, %(v)s)
            ON CONFLICT (token) DO UPDATE SET
                resident_id    = EXCLUDED.resident_id,
                version        = EXCLUDED.version,
                registered_at  = now(),
                retired_at     = CASE WHEN t.retired_reason = %(removed)s THEN NULL ELSE t.retired_at END,
                retired_reason = CASE WHEN t.retired_reason = %(removed)s THEN NULL ELSE t.retired_reason END
            WHERE t.resident_id <> EXCLUDED.resident_id OR t.version < EXCLUDED.version
            """,
            {"token": token, "id": resident_id, "v": version, "removed": REMOVED_BY_RESIDENT},
        )
        return cur.rowcount > 0


def remove_token(conn: Conn, resident_id: int, token: str, *, version: int) -> bool:
    """A device of the resident signed out: the token is retired (kept only to order late messages)."""
    _check(
        validation.resident_id_problem(resident_id),
        validation.version_problem(version),
        validation.token_problem(token),
    )
    with conn.transaction():
        _lock_resident(conn, resident_id)
        if not _require_resident(conn, resident_id, version):
            return False
        if not _claim_token(conn, resident_id, token, version):
            return False
        cur = conn.execute(
            """
            INSERT INTO device_tokens AS t (token, resident_id, version, retired_at, retired_reason)
            VALUES (%(token)s, %(id)s, %(v)s, now(), %(removed)s)
            ON CONFLICT (token) DO UPDATE SET
                version        = EXCLUDED.version,
                retired_at     = COALESCE(t.retired_at, now()),
                retired_reason = COALESCE(t.retired_reason, EXCLUDED.retired_reason)
            WHERE t.resident_id = EXCLUDED.resident_id AND t.version < EXCLUDED.version
            """,
            {"token": token, "id": resident_id, "v": version, "removed": REMOVED_BY_RESIDENT},
        )
        return cur.rowcount > 0


def change_email(conn: Conn, resident_id: int, *, version: int, email: str | None) -> bool:
    """The resident's email address changed (``None``: they no longer have one)."""
    _check(
        validation.resident_id_problem(resident_id),
        validation.version_problem(version),
        None if email is None else validation.email_problem(email),
    )
    with conn.transaction():
        _lock_resident(conn, resident_id)
        if not _require_resident(conn, resident_id, version):
            return False
        cur = conn.execute(
            "UPDATE residents SET email = %(email)s, email_version = %(v)s, updated_at = now()"
            " WHERE id = %(id)s AND email_version < %(v)s",
            {"email": email, "v": version, "id": resident_id},
        )
        return cur.rowcount > 0


#: Settings per request kind, each a column of ``resident_settings`` versioned on its own.
KIND_SETTINGS = ("video_requests", "safety_alerts", "announcements")


def change_kind_settings(conn: Conn, resident_id: int, *, version: int, **switches: bool | None) -> bool:
    """A resident switched video requests, safety alerts or agency announcements on or off (``None``: unchanged).

    Each switch is ordered by its own version, like the other settings, so a late older message never
    undoes a newer choice.
    """
    unknown = sorted(set(switches) - set(KIND_SETTINGS))
    if unknown:
        raise InvalidResidentUpdate(f"unknown settings: {', '.join(unknown)}")
    _check(
        validation.resident_id_problem(resident_id),
        validation.version_problem(version),
        *(validation.flag_problem(name, value, optional=True) for name, value in switches.items()),
    )
    changed = {name: value for name, value in switches.items() if value is not None}
    if not changed:
        return False
    applied = False
    with conn.transaction():
        _lock_resident(conn, resident_id)
        if not _require_resident(conn, resident_id, version):
            return False
        for name, value in changed.items():
            column, column_version = sql.Identifier(name), sql.Identifier(f"{name}_version")
            cur = conn.execute(sql.SQL(
                """
                INSERT INTO resident_settings AS s (resident_id, {col}, {ver}, version)
                VALUES (%(id)s, %(value)s, %(v)s, %(v)s)
                ON CONFLICT (resident_id) DO UPDATE SET
                    {col} = EXCLUDED.{col}, {ver} = EXCLUDED.{ver},
                    version = GREATEST(s.version, EXCLUDED.version), updated_at = now()
                WHERE EXCLUDED.{ver} > s.{ver}
                """).format(col=column, ver=column_version), {"id": resident_id, "value": value, "v": version})
            applied = applied or cur.rowcount > 0
    return applied
