"""Sorting FCM's answers: a dead token, a temporary failure, a quota error or a permanent one.

A dead token is retired and never used again; a temporary failure is tried again (inline while the
wait is short, else the resident is handed back); a quota error stops the batch and pauses the fleet;
anything else fails the row with a reason that names the FCM error and nothing personal.
"""

from __future__ import annotations

from firebase_admin import exceptions, messaging

from dispatcher.channels.retry_after import retry_after_seconds

#: Errors worth another try later: FCM or the network, not the message or the token.
TEMPORARY = (
    messaging.QuotaExceededError,
    exceptions.UnavailableError,
    exceptions.InternalError,
    exceptions.ResourceExhaustedError,
    exceptions.DeadlineExceededError,
    exceptions.UnknownError,
)
#: Errors that mean the whole fleet is over FCM's quota.
QUOTA = (messaging.QuotaExceededError, exceptions.ResourceExhaustedError)


def retry_after(error: exceptions.FirebaseError) -> float | None:
    """The wait FCM asked for in Retry-After (seconds or an HTTP-date, clamped), if any."""
    response = getattr(error, "http_response", None)
    return None if response is None else retry_after_seconds(response.headers.get("Retry-After"))


def _field_violations(error: exceptions.FirebaseError) -> set[str]:
    response = getattr(error, "http_response", None)
    if response is None:
        return set()
    try:
        details = response.json().get("error", {}).get("details", [])
    except (ValueError, AttributeError):
        return set()
    found: set[str] = set()
    for detail in details if isinstance(details, list) else []:
        for violation in detail.get("fieldViolations", []) if isinstance(detail, dict) else []:
            if isinstance(violation, dict) and isinstance(violation.get("field"), str):
                found.add(violation["field"])
    return found


def dead_token_reason(error: exceptions.FirebaseError) -> str | None:
    """Why FCM says this token will never work again, or None if the token is not to blame."""
    if isinstance(error, messaging.UnregisteredError):
        return "unregistered"
    if isinstance(error, messaging.SenderIdMismatchError):
        return "sender_id_mismatch"
    if isinstance(error, exceptions.InvalidArgumentError) and (
        "message.token" in _field_violations(error) or "registration token" in str(error).lower()
    ):
        return "invalid_token"
    return None


def failure_reason(error: exceptions.FirebaseError) -> str:
    """A short reason for the ledger, naming the FCM error (no tokens, no personal data)."""
    code = getattr(error, "code", None) or "error"
    return f"fcm_{type(error).__name__}_{code}".lower()


def not_sent() -> exceptions.FirebaseError:
    """The answer for a message left unsent because its batch hit FCM's quota."""
    return messaging.QuotaExceededError("not sent: the batch hit FCM's quota", cause=None, http_response=None)


def unreachable(error: Exception) -> exceptions.FirebaseError:
    """A network failure, as the temporary FCM error it amounts to."""
    return exceptions.UnavailableError(f"FCM could not be reached: {type(error).__name__}: {error}", cause=error)


def overdue() -> exceptions.FirebaseError:
    """The answer for a message not answered by the batch deadline (it may have reached the device)."""
    return exceptions.DeadlineExceededError("not answered before the batch deadline")
