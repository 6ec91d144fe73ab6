"""What residents see: push notifications and emails built from a Community Request.

Camera owners get the "Choose Videos to Share" action; everyone else "View request" with the details
and the investigator's contact. Agency-provided text is data, never markup: every piece is escaped
for HTML, and stripped of line breaks where it lands in a header (the subject).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dispatcher.config import FCM_MAX_TTL_SECONDS, Settings
from dispatcher.contract import CommunityRequest, PublishedRequest

#: The label every notification carries, so residents know what kind of message this is.
LABEL = "Community Request"
CHOOSE_VIDEOS = "Choose Videos to Share"
VIEW_REQUEST = "View request"
#: Push body length before it is cut with an ellipsis (notification shades show about this much).
PUSH_BODY_CHARS = 178

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def one_line(text: str) -> str:
    """Text safe for a header or a title: control characters (CR, LF, ...) become spaces."""
    return _CONTROL.sub(" ", text).strip()


def incident_label(incident_type: str) -> str:
    """``missing_person`` → ``Missing person``."""
    words = incident_type.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def shorten(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters on a word boundary, with an ellipsis."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1].rsplit(" ", 1)[0]
    return cut + "…"


def deep_link(settings: Settings, request_id: str, has_camera: bool) -> str:
    """Where the notification's action leads in the app."""
    action = "share" if has_camera else "view"
    return f"{settings.app_link_base}/requests/{request_id}/{action}"


#: apns-collapse-id holds at most 64 bytes; the Android tag and collapse key get the same value.
COLLAPSE_ID_MAX_BYTES = 64
_READABLE_PREFIX = "cr-"
_HASHED_PREFIX = "cr_"


def collapse_id(request_id: str) -> str:
    """One id per request, so a duplicate push replaces the first on the device instead of showing twice.

    Distinct requests must never share one, or one request's push replaces another's. An id that fits
    (``cr-`` and the id within 64 bytes of ASCII) is used as it is, readable in device logs; a longer
    one becomes ``cr_`` and the unpadded base64url SHA-256 of the whole id (46 bytes). The third
    character (``-`` or ``_``) tells the two forms apart, so a readable id never equals a hashed one,
    and two hashed ids collide only if SHA-256 does (a plain hash: the id is no secret).

    FCM keeps at most four collapse keys per device while it is offline, with no say in which. Each
    request keeps its own key anyway: pooling requests into four shared keys would bring back the very
    fault this avoids (one request's push replacing another's). A resident offline through more than
    four requests may miss the notification of some of them; the ledger still records them as sent
    (FCM accepted them), and every open request stays in the app's feed until its window ends.
    """
    readable = f"{_READABLE_PREFIX}{request_id}"
    if readable.isascii() and readable.isprintable() and len(readable) <= COLLAPSE_ID_MAX_BYTES:
        return readable
    digest = hashlib.sha256(request_id.encode()).digest()
    return _HASHED_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def push_ttl_seconds(respond_until: datetime, now: datetime | None = None) -> int:
    """Seconds until the response window ends, capped at FCM's maximum; never negative."""
    now = now or datetime.now(UTC)
    remaining = int((respond_until - now).total_seconds())
    return max(0, min(remaining, FCM_MAX_TTL_SECONDS))


@dataclass(frozen=True)
class PushContent:
    """Everything in one push notification except the device token."""

    title: str
    body: str
    data: dict[str, str]
    action: str
    collapse_id: str
    urgent: bool
    ttl_seconds: int


def push_content(request: PublishedRequest, *, has_camera: bool, settings: Settings,
                 respond_until: datetime, now: datetime | None = None) -> PushContent:
    """The push for one request and one kind of resident (with or without a camera)."""
    if not isinstance(request, CommunityRequest):  # a safety alert: its own words (dispatcher.agencies)
        from dispatcher.agencies.content import safety_alert_push

        return safety_alert_push(request, settings=settings, respond_until=respond_until, now=now)
    action = CHOOSE_VIDEOS if has_camera else VIEW_REQUEST
    link = deep_link(settings, request.id, has_camera)
    return PushContent(
        title=one_line(f"{request.agency.name} · {LABEL}"),
        body=shorten(f"{incident_label(request.incident_type)}: {request.details}", PUSH_BODY_CHARS),
        data={
            "type": "community_request",
            "request_id": request.id,
            "deep_link": link,
            "action": "choose_videos" if has_camera else "view_request",
            "action_label": action,
        },
        action=action,
        collapse_id=collapse_id(request.id),
        urgent=request.urgent,
        ttl_seconds=push_ttl_seconds(respond_until, now),
    )


@dataclass(frozen=True)
class EmailContent:
    """Subject and bodies of one email; identical for every resident in one group."""

    subject: str
    text: str
    html: str


def _zone(name: str) -> ZoneInfo | timezone:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def format_window(start: datetime, end: datetime, time_zone: str) -> str:
    """The footage window in the resident's time zone, e.g. ``Mar 3, 2026 21:00 – Mar 4, 2026 02:00 (EST)``."""
    zone = _zone(time_zone)
    a, b = start.astimezone(zone), end.astimezone(zone)
    fmt = "%b %-d, %Y %H:%M"
    tail = b.strftime("%H:%M") if a.date() == b.date() else b.strftime(fmt)
    return f"{a.strftime(fmt)} – {tail} ({b.tzname() or time_zone})"


def email_content(request: PublishedRequest, *, has_camera: bool, time_zone: str,
                  settings: Settings) -> EmailContent:
    """The email for one request and one group of residents (camera or not, time zone)."""
    if not isinstance(request, CommunityRequest):  # a safety alert: its own words (dispatcher.agencies)
        from dispatcher.agencies.content import safety_alert_email

        return safety_alert_email(request, settings=settings)
    agency = request.agency.name
    incident = incident_label(request.incident_type)
    window = format_window(request.footage_window.start, request.footage_window.end, time_zone)
    inv = request.investigator
    link = deep_link(settings, request.id, has_camera)
    action = CHOOSE_VIDEOS if has_camera else VIEW_REQUEST
    subject = one_line(f"{LABEL} from {agency}: {incident}")[:200]
    text = "\n".join(
        [
            f"{LABEL} from {agency}",
            "",
            f"Incident: {incident}",
            f"Footage requested: {window}",
            "",
            request.details,
            "",
            f"Investigator: {inv.name}",
            f"Phone: {inv.phone}",
            f"Email: {inv.email}",
            f"Investigation code: {request.investigation_code}",
            "",
            f"{action}: {link}",
            "",
            "Sharing is voluntary and private: the agency never learns who received this request.",
        ]
    )
    e = html.escape
    button = (
        f'<p><a href="{e(link)}" style="display:inline-block;padding:12px 20px;background:#1a73e8;'
        f'color:#ffffff;text-decoration:none;border-radius:6px">{e(action)}</a></p>'
    )
    details_html = "<br>".join(e(line) for line in request.details.splitlines())
    body = f"""<!doctype html>
<html><body style="font-family:Arial,Helvetica,sans-serif;color:#202124">
<p style="font-size:12px;text-transform:uppercase;letter-spacing:1px;color:#5f6368">{e(LABEL)}</p>
<h1 style="font-size:20px">{e(agency)}: {e(incident)}</h1>
<p><strong>Footage requested:</strong> {e(window)}</p>
<p>{details_html}</p>
<table role="presentation">
<tr><td>Investigator</td><td>{e(inv.name)}</td></tr>
<tr><td>Phone</td><td>{e(inv.phone)}</td></tr>
<tr><td>Email</td><td>{e(inv.email)}</td></tr>
<tr><td>Investigation code</td><td>{e(request.investigation_code)}</td></tr>
</table>
{button}
<p style="font-size:12px;color:#5f6368">Sharing is voluntary and private: the agency never learns who
received this request.</p>
</body></html>"""
    return EmailContent(subject=subject, text=text, html=body)

