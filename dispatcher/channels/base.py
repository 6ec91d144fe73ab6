"""The Channel protocol: what the fan-out needs from any way of reaching residents.

Per batch of ledger rows the fan-out asks the channel who may still be reached (and why not, for the
rest), hands it those recipients to send to, records the outcomes, and then lets the channel do its
own bookkeeping (retiring dead push tokens). Push and email sit behind it; a third channel (SMS,
in-app) is one module implementing it plus one line in ``fanout.CHANNELS``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import psycopg

from dispatcher import ledger
from dispatcher.channels.result import SendResult
from dispatcher.contract import PublishedRequest

R = TypeVar("R")


@dataclass
class Eligible(Generic[R]):
    """A batch after the last-moment check: who may be reached (with what the send needs) and who not."""

    recipients: dict[int, R] = field(default_factory=dict)
    #: outcomes of residents not reached (preferences off, no token, suppressed...), with the reason.
    skipped: dict[int, ledger.Outcome] = field(default_factory=dict)


class Channel(Protocol[R]):
    """One way of reaching residents; an instance serves every worker thread of a process."""

    #: which ledger rows it serves.
    kind: ledger.Channel
    #: the provider's name in metrics (``fcm``, ``sendgrid``).
    provider: str

    def eligible(self, conn: psycopg.Connection[Any], request_id: str,
                 resident_ids: Sequence[int]) -> Eligible[R]:
        """Residents' choices read again right before sending."""

    def send(self, request: PublishedRequest, respond_until: datetime,
             recipients: Mapping[int, R]) -> SendResult:
        """Send to every recipient; nothing goes out once ``respond_until`` has passed (those rows expire)."""

    def after_recording(self, result: SendResult) -> None:
        """Bookkeeping once the batch's outcomes are in the ledger (may raise: the caller only logs)."""

    def warm_up(self) -> None:
        """Get ready to send before the first batch comes (credentials, clients); may raise."""

    def close(self) -> None:
        """Release connections and threads."""
