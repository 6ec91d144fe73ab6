"""Recipients as the channels get them from the eligibility check: ``(resident id, what the send needs)``."""

from __future__ import annotations

from collections.abc import Sequence

from dispatcher.preferences.eligibility import EmailTarget, PushRecipient


def device(resident_id: int, tokens: Sequence[str], has_camera: bool,
           locale: str = "en") -> tuple[int, PushRecipient]:
    """A resident with these device tokens."""
    return resident_id, PushRecipient(list(tokens), locale, "UTC", has_camera)


def mailbox(resident_id: int, address: str, time_zone: str, has_camera: bool,
            locale: str = "en") -> tuple[int, EmailTarget]:
    """A resident with this address, in this time zone."""
    return resident_id, EmailTarget(address, locale, time_zone, has_camera)
