"""What residents see: push notifications and emails built from a Community Request, in their language.

Camera owners get the "Choose Videos to Share" action; everyone else "View request" with the details
and the investigator's contact. The words come from templates (``templates/community_request/``)
translated through the resident's catalogues (:mod:`.i18n`), the footage window is written the way the
resident's locale writes dates, in their time zone. Agency-provided text is data, never markup and
never translated: the HTML template escapes every piece, and it is stripped of line breaks where it
lands in a header (the subject) or a title.

Everything here is rendered once per group of residents who read the same message (request, camera
or not, locale, and for email the time zone), never per resident.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from dispatcher.channels.i18n import DEFAULT_LOCALE, ContentLocale, format_window, resolve_locale
from dispatcher.channels.rendering import gettext, render
from dispatcher.config import FCM_MAX_TTL_SECONDS, Settings
from dispatcher.contract import CommunityRequest, PublishedRequest

#: The kind of message these templates render (their folder under ``templates/``).
KIND = "community_request"


def N_(message: str) -> str:
    """Marks ``message`` for the catalogues (Babel's extractor looks for ``N_``); translated where shown."""
    return message


#: The label every notification carries, so residents know what kind of message this is.
LABEL = N_("Community Request")
CHOOSE_VIDEOS = N_("Choose Videos to Share")
VIEW_REQUEST = N_("View request")
#: Labels of the incident types agencies use most; any other type is shown as its words, untranslated.
INCIDENT_LABELS = {
    "missing_person": N_("Missing person"),
    "threat_to_safety": N_("Threat to safety"),
    "vehicle_break_in": N_("Vehicle break in"),
    "burglary": N_("Burglary"),
    "theft": N_("Theft"),
    "package_theft": N_("Package theft"),
    "vandalism": N_("Vandalism"),
    "robbery": N_("Robbery"),
    "assault": N_("Assault"),
    "hit_and_run": N_("Hit and run"),
}
#: Push body length before it is cut with an ellipsis (notification shades show about this much).
PUSH_BODY_CHARS = 178

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def one_line(text: str) -> str:
    """Text safe for a header or a title: control characters (CR, LF, ...) become spaces."""
    return _CONTROL.sub(" ", text).strip()


def incident_label(incident_type: str, locale: ContentLocale | None = None) -> str:
    """``missing_person`` → ``Missing person`` (``Personne disparue`` in French); an unlisted type as its words."""
    known = INCIDENT_LABELS.get(incident_type)
    if known is not None:
        return gettext(locale or resolve_locale(DEFAULT_LOCALE), known)
    words = incident_type.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def content_locale(locale: str | ContentLocale) -> ContentLocale:
    """A resident's locale tag resolved for rendering (fallbacks included); a resolved one as it is."""
    if isinstance(locale, ContentLocale):
        return locale
    found = _RESOLVED.get(locale) if isinstance(locale, str) else None
    if found is None:
        found = resolve_locale(locale)
        if isinstance(locale, str) and len(_RESOLVED) < _RESOLVED_MAX:
            _RESOLVED[locale] = found
    return found


#: Tags already resolved: a batch asks once per resident, and millions of residents share a few tags
#: (one dictionary probe instead of the tag's validation; bounded, so hostile tags cannot grow it).
_RESOLVED: dict[str, ContentLocale] = {}
_RESOLVED_MAX = 4096


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


class Readers(NamedTuple):
    """One group of residents who read the same message: what a batch renders once and sends to many."""

    has_camera: bool
    time_zone: str
    locale: ContentLocale


#: The zone of a group whose message shows no time.
NO_ZONE = "UTC"


def readers(request: PublishedRequest, *, has_camera: bool, locale: str | ContentLocale,
            time_zone: str = NO_ZONE) -> Readers:
    """The group a resident's message is rendered for: only what changes the message for this kind.

    A Community Request differs by camera (the action), language and, in an email, time zone (the
    footage window); a safety alert or an announcement by language alone, so a batch renders it once
    per language whoever has a camera and wherever they live.
    """
    if isinstance(request, CommunityRequest):
        return Readers(has_camera, time_zone, content_locale(locale))
    return Readers(False, NO_ZONE, content_locale(locale))


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
                 respond_until: datetime, now: datetime | None = None,
                 locale: str | ContentLocale = DEFAULT_LOCALE) -> PushContent:
    """The push for one request, one kind of resident (with or without a camera) and one locale."""
    if not isinstance(request, CommunityRequest):  # a safety alert: its own words (dispatcher.agencies)
        from dispatcher.agencies.content import safety_alert_push

        return safety_alert_push(request, settings=settings, respond_until=respond_until, now=now, locale=locale)
    loc = content_locale(locale)
    action = gettext(loc, CHOOSE_VIDEOS if has_camera else VIEW_REQUEST)
    link = deep_link(settings, request.id, has_camera)
    title = render(KIND, "push_title.txt", loc, {"agency": request.agency.name, "label": gettext(loc, LABEL)})
    body = render(KIND, "push_body.txt", loc,
                  {"incident": incident_label(request.incident_type, loc), "details": request.details})
    return PushContent(
        title=one_line(title),
        body=shorten(body, PUSH_BODY_CHARS),
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


#: Longest subject, in characters (mail clients cut long ones anyway; SendGrid refuses none this short).
SUBJECT_CHARS = 200


def email_content(request: PublishedRequest, *, has_camera: bool, time_zone: str, settings: Settings,
                  locale: str | ContentLocale = DEFAULT_LOCALE) -> EmailContent:
    """The email for one request and one group of residents (camera or not, time zone, locale)."""
    if not isinstance(request, CommunityRequest):  # a safety alert: its own words (dispatcher.agencies)
        from dispatcher.agencies.content import safety_alert_email

        return safety_alert_email(request, settings=settings, locale=locale)
    loc = content_locale(locale)
    window = format_window(request.footage_window.start, request.footage_window.end, time_zone, loc.babel)
    values = {
        "lang": loc.name.replace("_", "-"),
        "label": gettext(loc, LABEL),
        "agency": request.agency.name,
        "incident": incident_label(request.incident_type, loc),
        "window": window,
        "details": request.details,
        "details_lines": request.details.splitlines(),
        "investigator": request.investigator,
        "investigation_code": request.investigation_code,
        "link": deep_link(settings, request.id, has_camera),
        "action": gettext(loc, CHOOSE_VIDEOS if has_camera else VIEW_REQUEST),
    }
    subject = one_line(render(KIND, "email_subject.txt", loc, values))[:SUBJECT_CHARS]
    return EmailContent(subject=subject, text=render(KIND, "email.txt", loc, values),
                        html=render(KIND, "email.html", loc, values))
