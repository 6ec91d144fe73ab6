"""The states a stored request moves through, and which of them are final: spelled here only."""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    """The states a stored request moves through."""

    ACCEPTED = "accepted"
    TARGETING = "targeting"
    SENDING = "sending"
    COMPLETED = "completed"
    REJECTED = "rejected"
    EXPIRED = "expired"


#: States in which nothing more will ever happen to a request (the pipeline hears about these).
FINAL_STATES = frozenset({State.COMPLETED, State.REJECTED, State.EXPIRED})
#: States in which a request still has work ahead of it.
ACTIVE_STATES = (State.ACCEPTED, State.TARGETING, State.SENDING)
