"""Judging a push batch: from each device's answer to one outcome per resident.

A resident is reached when any of their devices accepted the message. Otherwise, in this order: a
message written but never answered closes the row as sent but unconfirmed (FCM may have delivered it;
it is never sent twice); a temporary failure on any device hands them back to be tried later; a window that ended before
their messages went out expires the row; else the row fails with the first reason (a dead token's,
or the FCM error's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dispatcher.channels.push import errors
from dispatcher.channels.push.lanes import EXPIRED, UNCONFIRMED, Answer, BatchState
from dispatcher.channels.result import SendResult
from dispatcher.ledger import UNCONFIRMED_REASON, WINDOW_ENDED, Outcome, Status

#: Wait after a quota error when FCM gives no Retry-After (FCM asks for at least a minute).
QUOTA_DEFAULT_WAIT_SECONDS = 60.0
#: Wait after other temporary failures when FCM gives no Retry-After.
TEMPORARY_DEFAULT_WAIT_SECONDS = 5.0

_SENT = Outcome(Status.SENT)
_EXPIRED = Outcome(Status.EXPIRED, WINDOW_ENDED)
#: A message written but never answered may have reached the device: closed, never sent again.
_UNCONFIRMED = Outcome(Status.SENT, UNCONFIRMED_REASON)


@dataclass
class PushResult(SendResult):
    """What happened to one push batch; ``retry_after`` is set whenever ``retry`` is not empty."""

    #: token → reason, to retire: FCM says the token is dead.
    retired_tokens: dict[str, str] = field(default_factory=dict)
    #: messages (device tokens) in the batch.
    messages: int = 0


def expired(resident_ids: Sequence[int]) -> PushResult:
    """The result of a batch whose window ended before anything was sent."""
    return PushResult(outcomes=dict.fromkeys(resident_ids, _EXPIRED))


def judge(resident_ids: Sequence[int], pairs: Sequence[tuple[int, str]], answers: Sequence[Answer],
          state: BatchState) -> PushResult:
    """One outcome (or a hand-back) per resident of ``resident_ids``; ``pairs`` are (resident, token)."""
    result = PushResult(messages=len(pairs), calls=state.calls, inline_retries=state.inline_retries,
                        problems=state.problems)
    delivered: set[int] = set()
    temporary: set[int] = set()
    too_late: set[int] = set()
    unconfirmed: set[int] = set()
    failed: dict[int, str] = {}
    waits: list[float] = []
    for (resident_id, token), answer in zip(pairs, answers, strict=True):
        if answer.ok:
            result.accepted += 1
            delivered.add(resident_id)
            continue
        if answer is EXPIRED:
            too_late.add(resident_id)
            continue
        if answer is UNCONFIRMED:
            unconfirmed.add(resident_id)
            continue
        error = answer.error
        assert error is not None
        dead = errors.dead_token_reason(error)
        if dead:
            result.retired_tokens[token] = dead
            failed.setdefault(resident_id, f"token_{dead}")
        elif isinstance(error, errors.TEMPORARY):
            temporary.add(resident_id)
            result.quota_exceeded = result.quota_exceeded or isinstance(error, errors.QUOTA)
            if answer.retry_after is not None:
                waits.append(answer.retry_after)
        else:
            failed.setdefault(resident_id, errors.failure_reason(error))
    for rid in resident_ids:
        if rid in delivered:
            result.outcomes[rid] = _SENT
        elif rid in unconfirmed:
            result.outcomes[rid] = _UNCONFIRMED
        elif rid in temporary:
            result.retry.append(rid)
        elif rid in too_late:
            result.outcomes[rid] = _EXPIRED
        else:
            result.outcomes[rid] = Outcome(Status.FAILED, failed.get(rid, "no_token_accepted"))
    if result.retry:
        # Retry-After is a floor. After a quota error it is the wait; after other failures (already
        # retried inline) the residents wait at least the default too.
        if result.quota_exceeded:
            result.retry_after = max(waits) if waits else QUOTA_DEFAULT_WAIT_SECONDS
        else:
            result.retry_after = max([*waits, TEMPORARY_DEFAULT_WAIT_SECONDS])
    return result

