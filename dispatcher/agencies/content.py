"""What residents see of a safety alert or an agency's announcement: information, nothing to answer.

Rendered the way a Community Request is (:mod:`dispatcher.channels.content`): templates under
``templates/safety_alert/`` translated through the resident's catalogues, the agency's text escaped in
HTML and kept on one line in headers and titles, shortened for a push, one collapse id per request.
The agency's own words (name, details, contact) are shown as written; an announcement's text is the
engine's, so it is translated too. Nothing here depends on a camera or a time zone (an alert has no
footage window), so a batch renders these kinds once per language.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dispatcher.channels.content import (
    N_,
    PUSH_BODY_CHARS,
    SUBJECT_CHARS,
    EmailContent,
    PushContent,
    collapse_id,
    content_locale,
    incident_label,
    one_line,
    push_ttl_seconds,
    shorten,
)
from dispatcher.channels.i18n import DEFAULT_LOCALE, ContentLocale
from dispatcher.channels.rendering import gettext, render
from dispatcher.config import Settings
from dispatcher.contract import AgencyAnnouncement, PublishedRequest

#: The templates of these kinds (their folder under ``dispatcher/channels/templates/``).
KIND = "safety_alert"
#: The label every safety alert carries.
ALERT_LABEL = N_("Safety Alert")
VIEW_ALERT = N_("View alert")
#: The label of an agency's announcement, and its action.
ANNOUNCEMENT_LABEL = N_("New in your area")
VIEW_AGENCY = N_("See the map of agencies")
#: What an announcement's incident type (``agency_joined``) reads as.
AGENCY_JOINED = N_("Agency joined")


def alert_link(settings: Settings, alert_id: str) -> str:
    """Where a safety alert opens in the app."""
    return f"{settings.app_link_base}/alerts/{alert_id}"


def announcement_text(agency: str, locale: str | ContentLocale = DEFAULT_LOCALE) -> str:
    """What an announcement says of a joining agency (the engine's words, so translated)."""
    return render(KIND, "announcement.txt", content_locale(locale), {"agency": agency})


def _values(alert: PublishedRequest, settings: Settings, loc: ContentLocale) -> dict[str, Any]:
    """What the templates of an information-only kind show, in ``loc``'s language."""
    announcement = isinstance(alert, AgencyAnnouncement)
    if announcement:
        label, link, action = ANNOUNCEMENT_LABEL, f"{settings.app_link_base}/agencies", VIEW_AGENCY
        details = announcement_text(alert.agency.name, loc)
        incident = gettext(loc, AGENCY_JOINED)
    else:
        label, link, action = ALERT_LABEL, alert_link(settings, alert.id), VIEW_ALERT
        details = alert.details
        incident = incident_label(alert.incident_type, loc)
    return {
        "announcement": announcement,
        "lang": loc.name.replace("_", "-"),
        "label": gettext(loc, label),
        "agency": alert.agency.name,
        "incident": incident,
        "details": details,
        "details_lines": details.splitlines(),
        "investigator": alert.investigator,
        "link": link,
        "action": gettext(loc, action),
        "action_name": "view_agencies" if announcement else "view_alert",
    }


def safety_alert_push(alert: PublishedRequest, *, settings: Settings, respond_until: datetime,
                      now: datetime | None = None, locale: str | ContentLocale = DEFAULT_LOCALE) -> PushContent:
    """The push of a safety alert or an announcement in one locale (nothing to share: no camera variant)."""
    loc = content_locale(locale)
    values = _values(alert, settings, loc)
    return PushContent(
        title=one_line(render(KIND, "push_title.txt", loc, values)),
        body=shorten(render(KIND, "push_body.txt", loc, values), PUSH_BODY_CHARS),
        data={"type": alert.kind, "request_id": alert.id, "deep_link": values["link"],
              "action": values["action_name"], "action_label": values["action"]},
        action=values["action"],
        collapse_id=collapse_id(alert.id),
        urgent=alert.urgent,
        ttl_seconds=push_ttl_seconds(respond_until, now),
    )


def safety_alert_email(alert: PublishedRequest, *, settings: Settings,
                       locale: str | ContentLocale = DEFAULT_LOCALE) -> EmailContent:
    """The email of a safety alert in one locale: the agency's words and who to contact, no call to share."""
    loc = content_locale(locale)
    values = _values(alert, settings, loc)
    subject = one_line(render(KIND, "email_subject.txt", loc, values))[:SUBJECT_CHARS]
    return EmailContent(subject=subject, text=render(KIND, "email.txt", loc, values),
                        html=render(KIND, "email.html", loc, values))
