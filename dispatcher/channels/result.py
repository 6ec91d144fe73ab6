"""What a channel did with one batch: the shape the fan-out reads, whichever provider sent it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from dispatcher.ledger import Outcome


@dataclass
class SendResult:
    """Outcomes to record, residents to hand back, and how long the provider asked us to wait."""

    outcomes: dict[int, Outcome] = field(default_factory=dict)
    #: residents none of whose messages got through because of a temporary failure.
    retry: list[int] = field(default_factory=list)
    #: seconds to wait before trying ``retry`` again (Retry-After, a reset time or a default).
    retry_after: float | None = None
    #: the provider said the whole fleet is over quota.
    quota_exceeded: bool = False
    #: HTTP calls made, inline retries included.
    calls: int = 0
    #: calls that were inline retries of a temporary failure.
    inline_retries: int = 0
    #: messages (push) or recipients (email) the provider accepted.
    accepted: int = 0
    #: failed calls by kind (an HTTP status or an exception's class name, nothing personal), for the
    #: operators' log line.
    problems: Counter[str] = field(default_factory=Counter)

    def absorb(self, other: SendResult) -> None:
        """Add another call's outcomes and counts to this batch's (a batch's calls may run side by side)."""
        self.outcomes.update(other.outcomes)
        self.retry.extend(other.retry)
        if other.retry_after is not None:
            self.retry_after = max(self.retry_after or 0.0, other.retry_after)
        self.quota_exceeded = self.quota_exceeded or other.quota_exceeded
        self.calls += other.calls
        self.inline_retries += other.inline_retries
        self.accepted += other.accepted
        self.problems.update(other.problems)
