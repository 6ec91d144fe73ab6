"""The engine's dramatiq middleware for operations: request ids in logs, metrics, sampled gauges.

:func:`install_ops_middleware` adds, to any broker:

* :class:`RequestContext`: puts the id of the request a message is about into
  :data:`dispatcher.ops.logging.request_id_var` while the message runs;
* :class:`WorkerPrometheus`: dramatiq's own Prometheus middleware, switched on only in processes the
  dramatiq CLI boots (it needs the ``process_boot`` hook to create its series; an in-process
  ``dramatiq.Worker`` in tests or the demo leaves it inert). At boot it also turns on multiprocess mode
  for the engine's series, JSON logging, and the sampler of queue and request gauges.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware
from dramatiq.middleware.prometheus import DB_PATH, Prometheus

from dispatcher.config import get_settings
from dispatcher.ops.logging import configure_logging, request_id_var

log = logging.getLogger(__name__)


def request_id_of(message: dramatiq.Message[Any] | MessageProxy) -> str | None:
    """The request a message is about: the first argument (an id, or a payload with an ``id``)."""
    kwargs = message.kwargs
    value = message.args[0] if message.args else kwargs.get("request_id") or kwargs.get("payload")
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else None


class RequestContext(Middleware):
    """Expose the current message's request id to the logs of the thread processing it."""

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        request_id_var.set(request_id_of(message))

    def after_process_message(self, broker: dramatiq.Broker, message: MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        request_id_var.set(None)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self.after_process_message(broker, message)


class WorkerPrometheus(Prometheus):
    """dramatiq's Prometheus middleware, active only in worker processes booted by the dramatiq CLI."""

    def __init__(self) -> None:
        super().__init__()
        self.booted = False
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._sample_seconds = 0.0

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        from dispatcher.ops.metrics import enable_multiprocess

        configure_logging(level=None)
        enable_multiprocess(DB_PATH)
        super().after_process_boot(broker)
        self.booted = True

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        # Read at boot: a worker process takes its settings from the environment it was started with.
        self._sample_seconds = get_settings().ops_sample_seconds
        if self.booted and self._sample_seconds > 0:
            self._sampler = threading.Thread(target=self._sample_forever, name="ops-sampler", daemon=True)
            self._sampler.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.booted:
            super().after_worker_shutdown(broker, worker)

    def _sample_forever(self) -> None:
        from dispatcher.ops.sampler import sample_once

        self._stop.wait(random.uniform(0, min(self._sample_seconds, 2.0)))
        while not self._stop.is_set():
            try:
                sample_once(self._sample_seconds)
            except Exception:
                log.exception("ops sample failed")
            self._stop.wait(self._sample_seconds)

    def after_nack(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if self.booted:
            super().after_nack(broker, message)

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int) -> None:
        if self.booted:
            super().after_enqueue(broker, message, delay)

    def before_delay_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if self.booted:
            super().before_delay_message(broker, message)

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if self.booted:
            super().before_process_message(broker, message)

    def after_process_message(self, broker: dramatiq.Broker, message: MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        if self.booted:
            super().after_process_message(broker, message, result=result, exception=exception)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy, *,
                           result: Any = None, exception: BaseException | None = None) -> None:
        self.after_process_message(broker, message)


def install_ops_middleware(broker: dramatiq.Broker) -> None:
    """Add the request context and the worker metrics to ``broker``.

    The request context goes first: it sets the id before any other middleware runs and, since
    dramatiq calls ``after_*`` hooks in reverse, clears it after all of them (retries log too).
    """
    first = type(broker.middleware[0]) if broker.middleware else None
    broker.add_middleware(RequestContext(), before=first)
    broker.add_middleware(WorkerPrometheus())
