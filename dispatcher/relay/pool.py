"""The pool of proxy numbers and the allocation that keeps every (real number, proxy number) pair unambiguous.

Two people put in touch form a *pair*; each of them sees the other through one proxy number (the same
number for both when it is free for both). ``relay_participants`` has (phone, proxy) as its primary key,
so a real number and a proxy number lead to at most one pair, and a pair has at most one active session:
whoever texts a proxy number reaches exactly one person. A proxy number serves many people at once, as
long as it is unambiguous for each of them.

A pair keeps its numbers after its sessions end: when the same two people are put in touch again the
author hears from the same proxy number, so blocking that number on the phone keeps the person out.

Allocation locks the two phone rows (in id order) first, so concurrent contacts involving the same person
are serialized and two of them can never take the same number for that person.
"""

from __future__ import annotations

import logging

from dispatcher.db.types import Conn
from dispatcher.relay.errors import PostNotContactable, ProxyPoolExhausted
from dispatcher.relay.metrics import relay_metrics
from dispatcher.relay.phones import normalize_number

log = logging.getLogger(__name__)

_FREE_FOR = """
SELECT p.id FROM relay_proxy_numbers p
WHERE p.active AND NOT EXISTS (
    SELECT 1 FROM relay_participants e WHERE e.proxy_id = p.id AND e.phone_id = ANY(%s))
ORDER BY random() LIMIT 1
"""


def add_proxy_numbers(conn: Conn, numbers: list[str]) -> int:
    """Put our own numbers into the pool (again active if they were retired); returns how many are new."""
    added = 0
    for raw in numbers:
        number = normalize_number(raw)
        row = conn.execute(
            "INSERT INTO relay_proxy_numbers (number) VALUES (%s) ON CONFLICT (number)"
            " DO UPDATE SET active = true RETURNING (xmax = 0)", (number,)).fetchone()
        added += bool(row and row[0])
    return added


def proxy_number(conn: Conn, proxy_id: int) -> str:
    row = conn.execute("SELECT number FROM relay_proxy_numbers WHERE id = %s", (proxy_id,)).fetchone()
    assert row is not None
    return str(row[0])


def find_proxy(conn: Conn, number: str) -> int | None:
    row = conn.execute("SELECT id FROM relay_proxy_numbers WHERE number = %s", (number,)).fetchone()
    return int(row[0]) if row else None


def _free_proxy(conn: Conn, phones: list[int]) -> int | None:
    row = conn.execute(_FREE_FOR, (phones,)).fetchone()
    return int(row[0]) if row else None


def pair_for(conn: Conn, phone_x: int, phone_y: int) -> int:
    """The pair of two phones, allocating their proxy numbers the first time; call inside a transaction.

    Raises :class:`ProxyPoolExhausted` (and counts it) when no number is free for one of them.
    """
    if phone_x == phone_y:
        raise PostNotContactable("the author cannot contact their own post")
    low, high = sorted((phone_x, phone_y))
    conn.execute("SELECT id FROM relay_phones WHERE id = ANY(%s) ORDER BY id FOR UPDATE", ([low, high],))
    row = conn.execute("SELECT id FROM relay_pairs WHERE low_phone = %s AND high_phone = %s",
                       (low, high)).fetchone()
    if row is not None:
        conn.execute("UPDATE relay_pairs SET last_used_at = now() WHERE id = %s", (row[0],))
        return int(row[0])
    shared = _free_proxy(conn, [low, high])
    proxies = {low: shared, high: shared} if shared is not None else {
        low: _free_proxy(conn, [low]), high: _free_proxy(conn, [high])}
    if None in proxies.values():
        relay_metrics().pool_exhausted.inc()
        log.warning("relay proxy pool exhausted")
        raise ProxyPoolExhausted("no proxy number is free for one of the two people; add numbers to the pool")
    pair = conn.execute("INSERT INTO relay_pairs (low_phone, high_phone) VALUES (%s, %s) RETURNING id",
                        (low, high)).fetchone()
    assert pair is not None
    for phone, proxy in proxies.items():
        conn.execute("INSERT INTO relay_participants (phone_id, proxy_id, pair_id) VALUES (%s, %s, %s)",
                     (phone, proxy, pair[0]))
    return int(pair[0])


def participant_proxy(conn: Conn, pair_id: int, phone_id: int) -> int:
    """The proxy number through which ``phone_id`` sees the other person of the pair."""
    row = conn.execute("SELECT proxy_id FROM relay_participants WHERE pair_id = %s AND phone_id = %s",
                       (pair_id, phone_id)).fetchone()
    assert row is not None
    return int(row[0])
