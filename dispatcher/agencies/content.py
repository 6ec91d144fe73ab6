"""What residents see of a safety alert or an agency's announcement: information, nothing to answer.

Built from :mod:`dispatcher.channels.content`'s helpers (escaping, one-line headers, shortening, the
per-request collapse id), so a safety alert is as safe to render as a request; only the words differ.
"""

from __future__ import annotations

import html
from datetime import datetime

from dispatcher.channels.content import (
    PUSH_BODY_CHARS,
    EmailContent,
    PushContent,
    collapse_id,
    incident_label,
    one_line,
    push_ttl_seconds,
    shorten,
)
from dispatcher.config import Settings
from dispatcher.contract import AgencyAnnouncement, PublishedRequest

#: The label every safety alert carries.
ALERT_LABEL = "Safety Alert"
VIEW_ALERT = "View alert"
#: The label of an agency's announcement, and its action.
ANNOUNCEMENT_LABEL = "New in your area"
VIEW_AGENCY = "See the map of agencies"


def alert_link(settings: Settings, alert_id: str) -> str:
    """Where a safety alert opens in the app."""
    return f"{settings.app_link_base}/alerts/{alert_id}"


def _label_link_action(alert: PublishedRequest, settings: Settings) -> tuple[str, str, str, str]:
    """(label, deep link, action label, action name) of an information-only kind."""
    if isinstance(alert, AgencyAnnouncement):
        return ANNOUNCEMENT_LABEL, f"{settings.app_link_base}/agencies", VIEW_AGENCY, "view_agencies"
    return ALERT_LABEL, alert_link(settings, alert.id), VIEW_ALERT, "view_alert"


def safety_alert_push(alert: PublishedRequest, *, settings: Settings, respond_until: datetime,
                      now: datetime | None = None) -> PushContent:
    """The push of a safety alert or an announcement (the same for every resident: nothing to share)."""
    label, link, action, action_name = _label_link_action(alert, settings)
    body = alert.details if isinstance(alert, AgencyAnnouncement) else (
        f"{incident_label(alert.incident_type)}: {alert.details}")
    return PushContent(
        title=one_line(f"{alert.agency.name} · {label}"),
        body=shorten(body, PUSH_BODY_CHARS),
        data={"type": alert.kind, "request_id": alert.id, "deep_link": link, "action": action_name,
              "action_label": action},
        action=action,
        collapse_id=collapse_id(alert.id),
        urgent=alert.urgent,
        ttl_seconds=push_ttl_seconds(respond_until, now),
    )


def safety_alert_email(alert: PublishedRequest, *, settings: Settings) -> EmailContent:
    """The email of a safety alert: the agency's words and who to contact, no call to share."""
    agency = alert.agency.name
    incident = incident_label(alert.incident_type)
    label, link, action, _ = _label_link_action(alert, settings)
    inv = alert.investigator
    contact = [f"Contact: {inv.name}", f"Phone: {inv.phone}", f"Email: {inv.email}", ""] if inv else []
    subject = one_line(f"{label} from {agency}: {incident}")[:200]
    text = "\n".join([
        f"{label} from {agency}", "", f"Incident: {incident}", "", alert.details, "", *contact,
        f"{action}: {link}", "", "This is information from your local agency; it asks nothing of you.",
    ])
    e = html.escape
    rows = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>\n" for k, v in (
        [("Contact", inv.name), ("Phone", inv.phone), ("Email", inv.email)] if inv else []))
    details_html = "<br>".join(e(line) for line in alert.details.splitlines())
    body = f"""<!doctype html>
<html><body style="font-family:Arial,Helvetica,sans-serif;color:#202124">
<p style="font-size:12px;text-transform:uppercase;letter-spacing:1px;color:#b3261e">{e(label)}</p>
<h1 style="font-size:20px">{e(agency)}: {e(incident)}</h1>
<p>{details_html}</p>
<table role="presentation">
{rows}</table>
<p><a href="{e(link)}">{e(action)}</a></p>
<p style="font-size:12px;color:#5f6368">This is information from your local agency; it asks nothing of you.</p>
</body></html>"""
    return EmailContent(subject=subject, text=text, html=body)
