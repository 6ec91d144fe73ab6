"""The relay's periodic sweep, run by the reconciler in every worker (one at a time, by advisory lock).

Time rules are enforced here from the database alone, never by a message that could be lost:
sessions past their seven days become ``expired``; posts past their thirty days go ``off``; texts older
than the outbox TTL are dropped with their body; abuse metadata older than its retention is deleted;
texts whose queue message was lost are enqueued again. (Inbound texts also check ``expires_at``
themselves, so a late sweep never lets a message through.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from dispatcher.config import get_settings
from dispatcher.db.types import Conn
from dispatcher.relay import outbox
from dispatcher.relay.sessions import expire_sessions

log = logging.getLogger(__name__)

_LOCK_KEY = 0x726C6179  # "rlay"
#: A text still in the outbox after this long lost its queue message (sends take well under a second).
STRANDED_SECONDS = 120.0


@dataclass
class RelaySweepReport:
    expired_sessions: int = 0
    switched_off_posts: int = 0
    dropped_texts: int = 0
    deleted_abuse_rows: int = 0
    requeued: list[int] = field(default_factory=list)


def sweep_relay(conn: Conn, *, stranded_seconds: float = STRANDED_SECONDS) -> RelaySweepReport | None:
    """One pass; ``None`` when another process is sweeping the relay right now."""
    report = RelaySweepReport()
    with conn.transaction():
        locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,)).fetchone()
        if not locked or not locked[0]:
            return None
        report.expired_sessions = expire_sessions(conn)
        report.switched_off_posts = conn.execute(
            "UPDATE relay_posts SET state = 'off', off_reason = 'expired', updated_at = now()"
            " WHERE state IN ('on', 'hidden') AND contact_until <= now()").rowcount
        report.dropped_texts = outbox.purge_expired(conn)
        report.deleted_abuse_rows = conn.execute(
            "DELETE FROM relay_abuse_log WHERE at < now() - make_interval(days => %s)",
            (get_settings().relay_abuse_retention_days,)).rowcount
        report.requeued = outbox.stranded(conn, stranded_seconds)
    if report.requeued:
        outbox.dispatch(report.requeued)
    if any((report.expired_sessions, report.switched_off_posts, report.dropped_texts, report.deleted_abuse_rows,
            report.requeued)):
        log.info("relay sweep", extra={"expired_sessions": report.expired_sessions,
                                       "switched_off_posts": report.switched_off_posts,
                                       "dropped_texts": report.dropped_texts,
                                       "deleted_abuse_rows": report.deleted_abuse_rows,
                                       "requeued": len(report.requeued)})
    return report
