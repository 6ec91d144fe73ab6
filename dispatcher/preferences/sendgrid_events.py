"""Which SendGrid events mean "do not mail this address again", following SendGrid's event semantics.

Decided when a post arrives, so an event that suppresses nothing is never stored (nor its address).

==================  ==========================================================  ==================  =========
event               condition                                                   recorded reason     how long
==================  ==========================================================  ==================  =========
bounce              ``type`` "bounce" (or absent): the server refused the       ``bounce``          permanent
                    recipient permanently
bounce              ``type`` "blocked": a temporary refusal (SendGrid's         not suppressed      —
                    "Blocked"); the next request tries again
dropped             ``reason`` about the address: "Bounced Address",            ``dropped``         permanent
                    "Unsubscribed Address", "Spam Reporting Address", "Invalid"
dropped             any other reason (about the message or the account:         not suppressed      —
                    "Spam Content", "Invalid SMTPAPI header", "Recipient List
                    over Package Quota") or none
spamreport          the recipient marked our mail as spam                       ``spam_report``     permanent
unsubscribe         the recipient opted out of all our email                    ``unsubscribe``     permanent
group_unsubscribe   ``asm_group_id`` is our unsubscribe group                   ``group_unsubscribe`` permanent
                    (``SENDGRID_UNSUBSCRIBE_GROUP``; with none set, no group is
                    ours)
group_unsubscribe   another group: the resident still wants our mail            not suppressed      —
anything else       processed, deferred, delivered, open, click,                not suppressed      —
                    group_resubscribe
==================  ==========================================================  ==================  =========

An event is kept only with an address we could have sent to (``validation.email_problem``: at most 254
characters, RFC 5321, no control characters); anything else cannot be a resident's address.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dispatcher.preferences import validation

#: The reason recorded for each event kind that can suppress (conditions in the module docstring).
SUPPRESSION_REASONS: Mapping[str, str] = {
    "bounce": "bounce",
    "dropped": "dropped",
    "spamreport": "spam_report",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "group_unsubscribe",
}

#: Bounce types that are temporary refusals, not about the address.
TEMPORARY_BOUNCE_TYPES = frozenset({"blocked"})

#: Drop reasons that are about the address (compared case-insensitively); other drops are about the message.
ADDRESS_DROP_REASONS = frozenset({"bounced address", "unsubscribed address", "spam reporting address", "invalid"})


def suppression_reason(event: Mapping[str, Any], unsubscribe_group: int) -> str | None:
    """The reason to suppress the event's address, or ``None`` when the event suppresses nothing."""
    kind = event.get("event")
    if not isinstance(kind, str) or kind not in SUPPRESSION_REASONS:
        return None
    email = event.get("email")
    if not isinstance(email, str) or validation.email_problem(email) is not None:
        return None
    if kind == "bounce" and event.get("type") in TEMPORARY_BOUNCE_TYPES:
        return None
    if kind == "dropped":
        reason = event.get("reason")
        if not isinstance(reason, str) or reason.strip().lower() not in ADDRESS_DROP_REASONS:
            return None
    if kind == "group_unsubscribe":
        group = event.get("asm_group_id")
        if not unsubscribe_group or isinstance(group, bool) or group != unsubscribe_group:
            return None
    return SUPPRESSION_REASONS[kind]
