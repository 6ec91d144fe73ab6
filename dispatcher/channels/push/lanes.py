"""The lane engine: one batch's messages over lanes, each one call at a time, as many as Little's law says.

Long-lived lanes instead of a task per message: less scheduling per message, and a lane looks at the
batch before each message, so a quota error or the end of the response window stops the rest at once.
Every lane of every batch on the loop holds a slot of one
:class:`~dispatcher.channels.concurrency.AdaptiveLimit` while it sends: the calls in flight per
process follow the target rate times the observed call latency (each accepted call is timed from the
moment its lane wrote it), so a provider answering in a hundred milliseconds gets ten times the calls
in flight of one answering in ten. A message whose first call fails gets the rest of its life in
:meth:`LaneEngine._send_one`: a fresh access token after a 401, inline retries with backoff
(honouring Retry-After while the wait is short), or its final answer.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from firebase_admin import exceptions

from dispatcher.channels.concurrency import AdaptiveLimit
from dispatcher.channels.push import errors
from dispatcher.channels.push.access_token import AccessToken
from dispatcher.channels.push.transport import (
    ConnectionFailed,
    HttpAnswer,
    NotWritten,
    PushConnection,
    PushTransport,
    Stop,
)

#: Attempts per message inside one batch for temporary failures (5xx, UNAVAILABLE, INTERNAL, network).
INLINE_ATTEMPTS = 3
#: Longest wait spent retrying inside a batch; a longer Retry-After hands the resident back instead.
INLINE_WAIT_MAX_SECONDS = 2.0
#: First inline backoff step (then doubled), before jitter.
INLINE_BACKOFF_SECONDS = 0.25
#: Seconds for one HTTP call to FCM.
REQUEST_TIMEOUT_SECONDS = 30.0


@dataclass
class Answer:
    """How one message ended: accepted, or the error (with FCM's Retry-After) that ended it."""

    ok: bool
    error: exceptions.FirebaseError | None = None
    retry_after: float | None = None


ACCEPTED = Answer(True)
#: Not sent: the response window ended first (compared by identity).
EXPIRED = Answer(False)
#: Written but never answered (the connection dropped, the call timed out, the batch deadline came): FCM
#: may have delivered it, so it is never sent again (compared by identity). Sending again would be at
#: least once; the ledger promises at most once, and records such rows as unconfirmed.
UNCONFIRMED = Answer(False)
#: What :meth:`LaneEngine._post` returns for a call written but never answered.
_UNANSWERED = object()


@dataclass
class BatchState:
    """Shared by the messages of one batch: a quota error stops the ones not yet sent."""

    stop: bool = False
    calls: int = 0
    inline_retries: int = 0
    #: failed calls by kind (FCM error class or network failure), counts only.
    problems: Counter[str] = field(default_factory=Counter)


class _Lane:
    """One lane of a batch: the connection it holds (reopened when it breaks) and its authorization."""

    __slots__ = ("_held", "authorization", "transport")

    def __init__(self, transport: PushTransport, authorization: str) -> None:
        self.transport = transport
        self.authorization = authorization
        self._held: PushConnection | None = None

    async def connection(self) -> PushConnection:
        held = self._held
        if held is not None and not held.closed:
            return held
        self.release()
        self._held = await self.transport.acquire()
        return self._held

    def release(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self.transport.release(held)


async def _pumped(connection: PushConnection, pumping: Awaitable[Stop | None]) -> Stop | None:
    """Wait for a pump; if the wait is cancelled (batch deadline) a late answer must not reach the next user."""
    try:
        return await pumping
    except BaseException:
        connection.close()
        raise


def _ignore(index: int) -> None:
    return None


def _unanswered(problem: HttpAnswer | Exception) -> bool:
    """Whether a pump stopped on a call that was written and never answered (not an error answer, not a
    call that never reached the wire)."""
    return isinstance(problem, Exception) and not isinstance(problem, NotWritten)


class _Pending:
    """The batch's messages not yet taken by a lane; those left when the batch stopped get their answer here."""

    __slots__ = ("_answers", "_count", "_cutoff", "_loop", "_next", "_state")

    def __init__(self, answers: list[Answer | None], state: BatchState, cutoff: float,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._answers, self._state, self._cutoff, self._loop = answers, state, cutoff, loop
        self._count = len(answers)
        self._next = 0

    @property
    def empty(self) -> bool:
        return self._next >= self._count

    def taken(self, index: int) -> bool:
        """Whether a lane took message ``index`` (and so wrote it, or is about to)."""
        return index < self._next

    def __iter__(self) -> _Pending:
        return self

    def __next__(self) -> int:
        while self._next < self._count:
            index = self._next
            self._next += 1
            if self._state.stop:
                self._answers[index] = Answer(False, errors.not_sent())
                continue
            if self._loop.time() >= self._cutoff:
                self._answers[index] = EXPIRED
                continue
            self._state.calls += 1
            return index
        raise StopIteration


class LaneEngine:
    """Sends the bodies of a batch through a transport; lives on the loop thread."""

    def __init__(self, transport: PushTransport, token: AccessToken,
                 to_error: Callable[[HttpAnswer], exceptions.FirebaseError], *, limit: AdaptiveLimit,
                 batch_deadline_seconds: float) -> None:
        self.transport = transport
        self.token = token
        self.to_error = to_error
        self.limit = limit
        self.batch_deadline_seconds = batch_deadline_seconds
        #: Batches being sent on the loop now (each gets its share of the limit in lanes).
        self.batches = 0

    def _error(self, problem: HttpAnswer | Exception) -> exceptions.FirebaseError:
        return errors.unreachable(problem) if isinstance(problem, Exception) else self.to_error(problem)

    async def send_all(self, bodies: list[bytes], state: BatchState, cutoff: float,
                       urgent: bool = False) -> list[Answer]:
        """An answer for every body; none is sent once the loop's clock reaches ``cutoff`` (window end).
        An urgent batch's lanes take the next free slots of the limit, before other batches' lanes."""
        loop = asyncio.get_running_loop()
        authorization = await self.token.authorization()
        answers: list[Answer | None] = [None] * len(bodies)
        pending = _Pending(answers, state, cutoff, loop)
        limit = self.limit

        async def lane() -> None:
            if pending.empty:
                return
            await limit.acquire(urgent)
            caller = _Lane(self.transport, authorization)
            started = 0.0

            def accepted(index: int) -> None:
                """A 200: the call took the time since this lane wrote it (the previous answer, or the pump)."""
                nonlocal started
                answers[index] = ACCEPTED
                now = loop.time()
                limit.observe(now - started)
                started = now

            try:
                while not pending.empty:
                    try:
                        connection = await caller.connection()
                    except ConnectionFailed as error:
                        index = next(pending, -1)
                        if index < 0:
                            return
                        answers[index] = await self._send_one(caller, bodies[index], state, cutoff,
                                                              errors.unreachable(error))
                        continue
                    started = loop.time()
                    stop = await _pumped(connection, connection.pump(
                        pending, bodies.__getitem__, caller.authorization, accepted, REQUEST_TIMEOUT_SECONDS))
                    if stop is None:
                        return
                    index, problem = stop
                    if index >= 0 and _unanswered(problem):
                        state.problems[type(problem).__name__] += 1
                        answers[index] = UNCONFIRMED
                    elif index >= 0:
                        answers[index] = await self._send_one(caller, bodies[index], state, cutoff,
                                                              self._error(problem))
            finally:
                caller.release()
                limit.release()

        # The batch's share of the limit in lanes (a lane pumps several messages in turn): the batches in
        # flight together fill the limit without a waiting task per message; lanes beyond the free slots
        # wait for one in turn.
        self.batches += 1
        try:
            share = math.ceil(limit.limit / self.batches)
            lanes = [asyncio.ensure_future(lane()) for _ in range(min(len(bodies), share))]
            await self._finish(lanes)
        finally:
            self.batches -= 1
        # Cut off by the batch deadline: a message a lane had taken may have reached the device (never
        # again); one no lane took goes back for a later batch.
        final: list[Answer] = []
        for index, answer in enumerate(answers):
            if answer is None:
                state.problems["batch_deadline"] += 1
                answer = UNCONFIRMED if pending.taken(index) else Answer(False, errors.overdue())
            final.append(answer)
        return final

    async def _finish(self, lanes: Sequence[asyncio.Future[None]]) -> None:
        """Wait for the lanes until the batch deadline; cancel the late ones; raise a lane's own failure."""
        if lanes:
            _, late = await asyncio.wait(lanes, timeout=self.batch_deadline_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            for task in lanes:
                if not task.cancelled() and (problem := task.exception()) is not None:
                    raise problem

    async def _send_one(self, caller: _Lane, body: bytes, state: BatchState, cutoff: float,
                        first: exceptions.FirebaseError) -> Answer:
        """The rest of one message's life after its first call failed with ``first``: retries and all."""
        loop = asyncio.get_running_loop()
        refreshed = False
        attempt = 0
        error: exceptions.FirebaseError | None = first
        while True:
            if attempt > 0:
                if state.stop:
                    return Answer(False, errors.not_sent())
                if loop.time() >= cutoff:
                    return EXPIRED
                state.calls += 1
                posted = await self._post(caller, body)
                if posted is _UNANSWERED:
                    return UNCONFIRMED
                error = posted if isinstance(posted, exceptions.FirebaseError) else None
            attempt += 1
            if error is None:
                return ACCEPTED
            state.problems[type(error.cause).__name__ if error.cause is not None else type(error).__name__] += 1
            if isinstance(error, exceptions.UnauthenticatedError) and not refreshed:
                # The access token was revoked or expired early: one fresh token, then try again.
                refreshed = True
                caller.authorization = await self.token.authorization(rejected=caller.authorization)
                continue
            wait = errors.retry_after(error)
            if isinstance(error, errors.QUOTA):
                state.stop = True
                return Answer(False, error, wait)
            if not isinstance(error, errors.TEMPORARY) or attempt >= INLINE_ATTEMPTS:
                return Answer(False, error, wait)
            backoff = INLINE_BACKOFF_SECONDS * 2 ** (attempt - 1) * (0.5 + random.random() / 2)
            delay = max(backoff, wait or 0.0)
            if delay > INLINE_WAIT_MAX_SECONDS:
                return Answer(False, error, wait)
            state.inline_retries += 1
            await asyncio.sleep(delay)

    async def _post(self, caller: _Lane, body: bytes) -> exceptions.FirebaseError | object | None:
        """One HTTP call; None when FCM accepted the message, firebase-admin's exception for its error
        answer or for a connection that could not be opened, :data:`_UNANSWERED` when it was written but
        never answered."""
        while True:
            try:
                connection = await caller.connection()
            except ConnectionFailed as error:
                return errors.unreachable(error)
            stop = await _pumped(connection, connection.pump(iter((0,)), lambda _: body, caller.authorization,
                                                             _ignore, REQUEST_TIMEOUT_SECONDS))
            if stop is None:
                return None
            index, problem = stop
            if index >= 0 and _unanswered(problem):
                return _UNANSWERED
            if index >= 0:
                return self._error(problem)
