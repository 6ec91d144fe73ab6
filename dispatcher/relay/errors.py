"""The relay's errors: each names what went wrong, never whose number it was."""

from __future__ import annotations

from dispatcher.errors import DispatcherError


class RelayError(DispatcherError):
    """Root of the relay's errors."""


class InvalidPhoneNumber(RelayError):
    """A phone number is not in E.164 form (``+`` and 8 to 15 digits)."""


class UnknownPost(RelayError):
    """No post with this id has Contact Me set up."""


class PostNotContactable(RelayError):
    """The post's Contact Me is not on (pending confirmation, hidden, removed, switched off or closed)."""


class ProxyPoolExhausted(RelayError):
    """Every proxy number is already used by one of this person's conversations: no number can be given
    without making a (real number, proxy number) pair ambiguous. Add numbers to the pool."""


class InvalidRelayKey(RelayError):
    """A relay key (number encryption or lookup) is missing or malformed."""


class RelaySignatureRejected(RelayError):
    """A webhook did not carry a valid X-Twilio-Signature for the public URL it was sent to."""
