"""The chaos checker: what the providers received against who should have been notified.

Ground truth comes from the residents themselves (location tested against the area with shapely, their
settings, tokens and suppressions), never from the engine's own targeting. Per (request, resident,
channel) it counts:

* missed: should have been notified, the provider never got it (must be 0);
* wrongly notified: out of the area, opted out, channel off or suppressed, yet notified (must be 0);
* duplicates: notifications beyond the first (allowed up to the ledger rows in flight at the kills
  and connection drops, the window between a provider accepting and the ledger recording);

and it scans the private Redis (queues, delayed and dead letters), and the worker logs for any
resident email, device token or coordinate.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
import shapely

from dispatcher.sandbox.recorder import read_records

_EMAIL = re.compile(rb"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_TOKEN = re.compile(rb"chaos\d+:APA91b[0-9a-f]{32}")
_DECIMAL = re.compile(rb"-?\d{1,3}\.\d{4,}")


@dataclass
class ChannelReport:
    expected: int = 0
    notified: int = 0
    missed: int = 0
    out_of_area_notified: int = 0
    opted_out_notified: int = 0
    duplicates: int = 0
    ledger_sent_without_record: int = 0


@dataclass
class ChaosReport:
    """The checker's verdict for one run."""

    recipients: int = 0
    kills: int = 0
    redis_restarts: int = 0
    pg_drops: int = 0
    storms: int = 0
    in_flight_at_disruptions: int = 0
    seconds: float = 0.0
    finished: bool = False
    channels: dict[str, ChannelReport] = field(default_factory=dict)
    dead_letters: int = 0
    privacy_findings: list[str] = field(default_factory=list)
    ledger: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def missed(self) -> int:
        return sum(c.missed for c in self.channels.values())

    @property
    def wrongly_notified(self) -> int:
        return sum(c.out_of_area_notified + c.opted_out_notified for c in self.channels.values())

    @property
    def duplicates(self) -> int:
        return sum(c.duplicates for c in self.channels.values())

    def ok(self) -> bool:
        return (self.finished and self.missed == 0 and self.wrongly_notified == 0
                and self.duplicates <= self.in_flight_at_disruptions and not self.privacy_findings)

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw.update(missed=self.missed, wrongly_notified=self.wrongly_notified, duplicates=self.duplicates,
                   ok=self.ok())
        return raw

    def render(self) -> str:
        lines = [
            f"recipients (residents in the town): {self.recipients}",
            f"disruptions: {self.kills} worker SIGKILLs, {self.redis_restarts} Redis restarts (data lost), "
            f"{self.pg_drops} PostgreSQL connection drops, {self.storms} provider 429/5xx storms",
            f"finished: {self.finished} in {self.seconds:.1f}s",
        ]
        for name, c in self.channels.items():
            lines.append(f"{name:>5}: expected {c.expected}, notified {c.notified}, missed {c.missed}, "
                         f"out-of-area notified {c.out_of_area_notified}, opted-out notified "
                         f"{c.opted_out_notified}, duplicates {c.duplicates}, "
                         f"ledger 'sent' without a provider record {c.ledger_sent_without_record}")
        lines.append(f"duplicates {self.duplicates} (allowed: rows in flight at disruptions "
                     f"{self.in_flight_at_disruptions})")
        lines.append(f"dead letters: {self.dead_letters}; privacy findings: {len(self.privacy_findings)}")
        lines.append("VERDICT: " + ("ok" if self.ok() else "FAILED"))
        return "\n".join(lines)


def _area(conn: psycopg.Connection[Any], request_id: str) -> Any:
    row = conn.execute("SELECT payload->'area' FROM community_requests WHERE id = %s", (request_id,)).fetchone()
    assert row is not None
    area = row[0]
    return shapely.geometry.shape(area.get("geometry", area) if area.get("type") == "Feature" else area)


def _truth(conn: psycopg.Connection[Any], request_id: str) -> dict[str, Any]:
    area = _area(conn, request_id)
    rows = conn.execute(
        """
        SELECT r.id, r.lng, r.lat, r.email,
               coalesce(s.community_requests, TRUE), coalesce(s.push_enabled, TRUE), coalesce(s.email_enabled, TRUE),
               EXISTS (SELECT 1 FROM device_tokens d WHERE d.resident_id = r.id AND d.retired_at IS NULL),
               EXISTS (SELECT 1 FROM email_suppressions x WHERE x.email = lower(r.email))
        FROM residents r LEFT JOIN resident_settings s ON s.resident_id = r.id
        """
    ).fetchall()
    ids = [int(r[0]) for r in rows]
    inside = shapely.covers(area, shapely.points([float(r[1]) for r in rows], [float(r[2]) for r in rows]))
    in_area = {rid for rid, flag in zip(ids, inside, strict=True) if flag}
    push = {int(r[0]) for r in rows if int(r[0]) in in_area and r[4] and r[5] and r[7]}
    email = {int(r[0]) for r in rows if int(r[0]) in in_area and r[4] and r[6] and r[3] and not r[8]}
    return {"in_area": in_area, "push": push, "email": email}


def _channel_report(expected: set[int], notified: Counter[int], in_area: set[int],
                    ledger_sent: set[int]) -> ChannelReport:
    got = set(notified)
    return ChannelReport(
        expected=len(expected), notified=len(got), missed=len(expected - got),
        out_of_area_notified=len(got - in_area), opted_out_notified=len((got & in_area) - expected),
        duplicates=sum(n - 1 for n in notified.values() if n > 1),
        ledger_sent_without_record=len(ledger_sent - got),
    )


def _scan(blob: bytes, emails: set[bytes], tokens: set[bytes], coordinates: set[bytes]) -> list[str]:
    found = []
    for match in _EMAIL.findall(blob):
        if match in emails:
            found.append("email")
    for match in _TOKEN.findall(blob):
        if match in tokens:
            found.append("token")
    for match in _DECIMAL.findall(blob):
        if match in coordinates:
            found.append("coordinate")
    return found


def _redis_values(client: redis.Redis) -> Iterable[tuple[str, bytes]]:
    for key in client.scan_iter("*", count=1000):
        name = key.decode(errors="replace")
        kind = client.type(key)
        if kind == b"string":
            yield name, client.get(key) or b""
        elif kind == b"hash":
            for field_name, value in client.hscan_iter(key, count=1000):
                yield name, field_name + b" " + value
        elif kind == b"list":
            yield name, b"\n".join(client.lrange(key, 0, -1))
        elif kind == b"set":
            yield name, b"\n".join(client.smembers(key))
        elif kind == b"zset":
            yield name, b"\n".join(m for m, _ in client.zscan_iter(key))
        yield name, key


def privacy_findings(conn: psycopg.Connection[Any], client: redis.Redis, logs: Iterable[Path]) -> list[str]:
    """Where a resident's email, token or coordinates appear in Redis or the logs (should be nowhere)."""
    emails, coordinates = set(), set()
    for rid_email, lat, lng in conn.execute("SELECT email, lat, lng FROM residents"):
        if rid_email:
            emails.add(str(rid_email).encode())
        coordinates.add(repr(float(lat)).encode())  # type: ignore[arg-type]
        coordinates.add(repr(float(lng)).encode())  # type: ignore[arg-type]
    tokens = {str(t[0]).encode() for t in conn.execute("SELECT token FROM device_tokens")}
    findings: list[str] = []
    for key, blob in _redis_values(client):
        findings += [f"redis {key}: {kind}" for kind in _scan(blob, emails, tokens, coordinates)]
    for path in logs:
        findings += [f"log {path.name}: {kind}" for kind in _scan(path.read_bytes(), emails, tokens, coordinates)]
    return findings


def _dead_letter_count(client: redis.Redis) -> int:
    return sum(int(client.zcard(key)) for key in client.scan_iter("dispatcher:*.XQ"))


def check(conn: psycopg.Connection[Any], records_dir: Path, client: redis.Redis, run: Any,
          residents: Any = None) -> ChaosReport:
    """Compare the sandbox records with the ground truth for every request of ``run``."""
    report = ChaosReport(
        recipients=run.config.recipients, seconds=run.seconds, finished=run.finished,
        kills=sum(d.kind == "kill" for d in run.disruptions),
        redis_restarts=sum(d.kind == "redis_restart" for d in run.disruptions),
        pg_drops=sum(d.kind == "pg_drop" for d in run.disruptions),
        storms=sum(d.kind == "storm" for d in run.disruptions),
        in_flight_at_disruptions=sum(d.in_flight for d in run.disruptions),
    )
    token_owner = {str(t): int(r) for t, r in conn.execute("SELECT token, resident_id FROM device_tokens")}  # type: ignore[call-overload]
    pushes: dict[str, Counter[int]] = {}
    for record in read_records(records_dir / "fcm.jsonl"):
        request_id = record["message"].get("data", {}).get("request_id")
        owner = token_owner.get(record.get("token") or "")
        pushes.setdefault(request_id, Counter())[owner if owner is not None else -1] += 1
    emails: dict[str, Counter[int]] = {}
    for record in read_records(records_dir / "sendgrid.jsonl"):
        args = record.get("custom_args") or {}
        emails.setdefault(args.get("request_id"), Counter())[int(args.get("resident_id", -1))] += 1
    for request_id in run.request_ids:
        truth = _truth(conn, request_id)
        for channel, notified in (("push", pushes.get(request_id, Counter())),
                                  ("email", emails.get(request_id, Counter()))):
            sent = {int(r[0]) for r in conn.execute(  # type: ignore[call-overload]
                "SELECT resident_id FROM deliveries WHERE request_id = %s AND channel = %s AND status = 'sent'",
                (request_id, channel))}
            report.channels[channel] = _channel_report(truth[channel], notified, truth["in_area"], sent)
        for channel, status, count in conn.execute(
                "SELECT channel, status, count(*) FROM deliveries WHERE request_id = %s GROUP BY 1, 2",
                (request_id,)):
            report.ledger.setdefault(str(channel), {})[str(status)] = int(count)  # type: ignore[call-overload]
    report.dead_letters = _dead_letter_count(client)
    report.privacy_findings = privacy_findings(conn, client, run.logs)
    return report
