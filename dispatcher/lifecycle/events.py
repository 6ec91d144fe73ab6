"""The only thing the engine tells the publishing pipeline about a request: its id, state and time.

When a request reaches a final state (completed, rejected, expired) one :class:`RequestEvent` is added
to the Redis stream :data:`STREAM`, which the pipeline reads (``XREAD`` / a consumer group). The model
forbids any other field, so a count of residents or cameras, or anyone's identity, cannot be added by
mistake: agencies must not learn how many residents or cameras are in an area.

Delivery is at least once. The event is added inside the caller's database transaction, just before
it commits: if Redis fails, the transition rolls back and dramatiq retries the message; if the commit
fails after the event went out, the retry publishes the same (id, state) again. Consumers keep the
first event per id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import AwareDatetime, BaseModel, ConfigDict, field_validator

from dispatcher.lifecycle.states import FINAL_STATES, State
from dispatcher.ops.metrics import record_request_state
from dispatcher.redis_client import shared_redis

#: The Redis stream the publishing pipeline consumes.
STREAM = "dispatcher:request-events"
#: The stream keeps about this many events (older ones are trimmed; consumers read within days).
STREAM_MAX_LEN = 100_000


class RequestEvent(BaseModel):
    """A request reached a final state. Exactly these three fields, never more."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    state: State
    at: AwareDatetime

    @field_validator("state")
    @classmethod
    def _final(cls, state: State) -> State:
        if state not in FINAL_STATES:
            raise ValueError(f"only final states are events, not {state.value!r}")
        return state

    def to_fields(self) -> dict[str, str]:
        """The stream entry's fields."""
        return {"id": self.id, "state": self.state.value, "at": self.at.isoformat()}


def publish_request_event(request_id: str, state: str, *, at: datetime | None = None,
                          client: redis.Redis | None = None) -> RequestEvent:
    """Tell the pipeline that ``request_id`` reached the final ``state``."""
    event = RequestEvent.model_validate({"id": request_id, "state": state, "at": at or datetime.now(UTC)})
    (client or shared_redis()).xadd(STREAM, event.to_fields(), maxlen=STREAM_MAX_LEN, approximate=True)  # type: ignore[arg-type]
    return event


def read_request_events(*, after: str = "0", count: int = 1000,
                        client: redis.Redis | None = None) -> list[tuple[str, RequestEvent]]:
    """Events after stream id ``after``, as the pipeline sees them (entry id, event)."""
    entries: list[Any] = list((client or shared_redis()).xrange(
        STREAM, min=f"({after}" if after != "0" else "-", count=count) or [])
    events = []
    for entry_id, fields in entries:
        decoded = {_text(k): _text(v) for k, v in fields.items()}
        events.append((_text(entry_id), RequestEvent.model_validate(decoded)))
    return events


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def request_transitioned(request_id: str, state: State) -> None:
    """A request moved to ``state``: count it, and tell the pipeline if the state is final.

    Called by :func:`dispatcher.lifecycle.transition` after the row changed, inside its transaction.
    """
    record_request_state(state.value)
    if state in FINAL_STATES:
        publish_request_event(request_id, state)
