"""Every error the engine raises on purpose is a :class:`DispatcherError`.

Each subclass names the problem, so a caller can catch exactly what it can handle and an operator can
read the class name in a log line and know what went wrong.
"""

from __future__ import annotations


class DispatcherError(Exception):
    """Root of all errors raised by the engine."""


class ConfigurationError(DispatcherError):
    """A setting is missing or malformed."""


class InvalidRequest(DispatcherError):
    """A Community Request does not follow the contract; ``problems`` names each bad field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid Community Request: " + "; ".join(problems))


class InvalidArea(InvalidRequest):
    """A request's area is not a usable GeoJSON polygon or multipolygon."""

    def __init__(self, problem: str) -> None:
        super().__init__([f"area: {problem}"])
        self.problem = problem


class RequestConflict(DispatcherError):
    """The same request id arrived with a different payload: published requests are immutable."""


class ImportProblem(DispatcherError):
    """A row of a resident import could not be loaded; carries its line number."""

    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line}: {problem}")


class InvalidResidentUpdate(DispatcherError):
    """A change to the resident index is malformed (a value out of range, a bad email); never retried."""


class UnknownResident(DispatcherError):
    """A change names a resident the index does not hold yet (its creation may still be on its way)."""


class WebhookRejected(DispatcherError):
    """An event webhook POST is unsigned, tampered with, stale or malformed; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class ResidentUpdateFailed(DispatcherError):
    """A change to the resident index failed in a way worth retrying; the message names ids only."""


class InvalidUnsubscribeLink(DispatcherError):
    """An unsubscribe link is malformed, not signed by our key, or expired; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class UnknownAgency(InvalidRequest):
    """A request names an agency the registry does not hold (or holds as inactive)."""

    def __init__(self, agency_id: str) -> None:
        super().__init__([f"agency.id: unknown or inactive agency {agency_id[:64]!r}"])


class OutsideJurisdiction(InvalidRequest):
    """A request's area reaches outside its agency's jurisdiction (beyond the configured tolerance)."""

    def __init__(self, problem: str) -> None:
        super().__init__([f"area: {problem}"])


class InvalidAgency(DispatcherError):
    """An agency record (from an import file or an update message) is malformed; names the problem."""


class InvalidResponse(InvalidResidentUpdate):
    """A resident's response is malformed or answers something it cannot (``status`` is the HTTP answer).

    A kind of :class:`InvalidResidentUpdate`: a message from the main application that is never retried.
    """

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status
