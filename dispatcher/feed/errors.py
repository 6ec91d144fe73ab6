"""What a feed lookup can refuse; each is the caller's mistake, never retried."""

from __future__ import annotations

from dispatcher.errors import DispatcherError


class InvalidCursor(DispatcherError):
    """A page cursor was not made by this service (malformed, truncated or tampered with)."""


class InvalidLocation(DispatcherError):
    """A latitude or longitude is out of range or not a finite number."""


class UnknownRequest(DispatcherError):
    """No published request has this id (never accepted, rejected, or not indexed for the feed)."""
