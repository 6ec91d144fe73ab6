"""What residents see of a safety alert: information, no footage window, nothing to answer.

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
from dispatcher.contract import PublishedRequest

#: The label every safety alert carries.
ALERT_LABEL = "Safety Alert"
VIEW_ALERT = "View alert"


def alert_link(settings: Settings, alert_id: str) -> str:
    """Where a safety alert opens in the app."""
    return f"{settings.app_link_base}/alerts/{alert_id}"


def safety_alert_push(alert: PublishedRequest, *, settings: Settings, respond_until: datetime,
                      now: datetime | None = None) -> PushContent:
    """The push of a safety alert (the same for every resident: there is nothing to share)."""
    link = alert_link(settings, alert.id)
    return PushContent(
        title=one_line(f"{alert.agency.name} · {ALERT_LABEL}"),
        body=shorten(f"{incident_label(alert.incident_type)}: {alert.details}", PUSH_BODY_CHARS),
        data={"type": "safety_alert", "request_id": alert.id, "deep_link": link, "action": "view_alert",
              "action_label": VIEW_ALERT},
        action=VIEW_ALERT,
        collapse_id=collapse_id(alert.id),
        urgent=alert.urgent,
        ttl_seconds=push_ttl_seconds(respond_until, now),
    )


def safety_alert_email(alert: PublishedRequest, *, settings: Settings) -> EmailContent:
    """The email of a safety alert: the agency's words and who to contact, no call to share."""
    agency = alert.agency.name
    incident = incident_label(alert.incident_type)
    inv = alert.investigator
    link = alert_link(settings, alert.id)
    subject = one_line(f"{ALERT_LABEL} from {agency}: {incident}")[:200]
    text = "\n".join([
        f"{ALERT_LABEL} from {agency}", "", f"Incident: {incident}", "", alert.details, "",
        f"Contact: {inv.name}", f"Phone: {inv.phone}", f"Email: {inv.email}", "", f"{VIEW_ALERT}: {link}",
        "", "This is information from your local agency; it asks nothing of you.",
    ])
    e = html.escape
    details_html = "<br>".join(e(line) for line in alert.details.splitlines())
    body = f"""<!doctype html>
<html><body style="font-family:Arial,Helvetica,sans-serif;color:#202124">
<p style="font-size:12px;text-transform:uppercase;letter-spacing:1px;color:#b3261e">{e(ALERT_LABEL)}</p>
<h1 style="font-size:20px">{e(agency)}: {e(incident)}</h1>
<p>{details_html}</p>
<table role="presentation">
<tr><td>Contact</td><td>{e(inv.name)}</td></tr>
<tr><td>Phone</td><td>{e(inv.phone)}</td></tr>
<tr><td>Email</td><td>{e(inv.email)}</td></tr>
</table>
<p><a href="{e(link)}">{e(VIEW_ALERT)}</a></p>
<p style="font-size:12px;color:#5f6368">This is information from your local agency; it asks nothing of you.</p>
</body></html>"""
    return EmailContent(subject=subject, text=text, html=body)
