"""What a feed lookup can refuse; both are the caller's mistake, never retried."""

from __future__ import annotations

from dispatcher.errors import DispatcherError


class InvalidCursor(DispatcherError):
    """A page cursor was not made by this service (malformed, truncated or tampered with)."""


class InvalidLocation(DispatcherError):
    """A latitude or longitude is out of range or not a finite number."""
