"""Fault plans: which calls the sandbox answers with an error instead of accepting them.

One :class:`FaultPlan` per provider. A plan is plain data (JSON in, JSON out), so the same plan can be set
from Python in-process or through ``PUT /_sandbox/faults`` on a running sandbox. Choosing the fault for a
call is a few attribute reads and at most one ``random()``: the sandbox has to stay cheaper than what
it measures.
"""

from __future__ import annotations

import math
import random
import threading
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dispatcher.errors import DispatcherError
from dispatcher.sandbox.webhook import EVENT_TYPES

#: FCM's default quota per project — firebase.google.com/docs/cloud-messaging/scale-fcm ("600,000 messages
#: per minute").
FCM_DEFAULT_QUOTA_PER_MINUTE = 600_000
#: The latency the benchmarks and the chaos suite run with: (median, p99) in milliseconds.
BENCHMARK_LATENCY = (60.0, 400.0)
#: Longest single latency draw (the lognormal tail is unbounded).
MAX_LATENCY_MS = 30_000.0
#: The standard normal's 99th percentile: p99 = median * exp(_Z99 * sigma) for a lognormal.
_Z99 = 2.3263478740408408

#: Statuses a plan may inject; each provider renders them in its own error format.
INJECTABLE_STATUSES = frozenset({400, 401, 403, 404, 429, 500, 502, 503, 504})


class InvalidFaultPlan(DispatcherError):
    """A fault plan names an unknown setting or an out-of-range value."""


def _fraction_hit(key: str, rate: float) -> bool:
    """Deterministic per key: the same token or address always gets the same answer."""
    return rate > 0 and (zlib.crc32(key.encode()) % 1_000_000) < rate * 1_000_000


@dataclass
class FaultPlan:
    """What to break for one provider; every field defaults to "nothing"."""

    #: Fraction of calls (0..1) answered with ``error_status`` instead of being accepted.
    error_rate: float = 0.0
    #: Status for ``error_rate`` failures: 429 (quota, with Retry-After), 500 (INTERNAL), 503 (UNAVAILABLE)...
    error_status: int = 503
    #: The next ``burst_count`` calls fail with ``burst_status``, then calls succeed again.
    burst_count: int = 0
    burst_status: int = 503
    #: Seconds sent in Retry-After (FCM) / used for X-RateLimit-Reset (SendGrid) on 429 and 503.
    retry_after: int = 1
    #: Delay added to every call, in milliseconds.
    latency_ms: float = 0.0
    #: Latency as a distribution (lognormal) given by its median and 99th percentile, in milliseconds,
    #: drawn per call and added to ``latency_ms``; 0 = off. Benchmarks and the chaos suite use
    #: :data:`BENCHMARK_LATENCY` (60 ms median, 400 ms p99).
    latency_median_ms: float = 0.0
    latency_p99_ms: float = 0.0
    #: Calls allowed per ``quota_window_seconds`` (a token bucket holding one window's worth); over it
    #: FCM answers 429 RESOURCE_EXHAUSTED with Retry-After, SendGrid 429 with X-RateLimit-* headers.
    #: None = the provider's default (FCM :data:`FCM_DEFAULT_QUOTA_PER_MINUTE` a minute, SendGrid none),
    #: 0 = unlimited. Counted per sandbox process.
    quota: int | None = None
    quota_window_seconds: float = 60.0
    #: Connection-level faults. ``reset_rate``: fraction of calls whose connection is closed after the
    #: response headers and part of the body. ``slow_headers_rate``/``slow_headers_ms``: fraction of
    #: calls whose response headers come only after that delay (a stalled front end). ``tls_failure_rate``:
    #: fraction of TLS handshakes refused with a handshake_failure alert (a sandbox serving TLS; the port
    #: is shared, so the larger of the two providers' rates applies to every new connection).
    reset_rate: float = 0.0
    slow_headers_rate: float = 0.0
    slow_headers_ms: float = 0.0
    tls_failure_rate: float = 0.0
    #: FCM: these tokens answer 404 UNREGISTERED; SendGrid: these addresses bounce (webhook events).
    unregistered: set[str] = field(default_factory=set)
    #: FCM: fraction of all tokens (chosen by hash, stable) that are UNREGISTERED; SendGrid: bounce.
    unregistered_rate: float = 0.0
    #: FCM: these tokens (and tokens starting with a listed prefix) are malformed: 400 INVALID_ARGUMENT.
    invalid: set[str] = field(default_factory=set)
    invalid_prefixes: tuple[str, ...] = ()
    #: SendGrid: webhook event type per address ("dropped", "spamreport", "unsubscribe"...).
    events: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name in ("error_rate", "unregistered_rate", "reset_rate", "slow_headers_rate", "tls_failure_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidFaultPlan(f"{name} must be between 0 and 1, got {value!r}")
        for name in ("error_status", "burst_status"):
            if getattr(self, name) not in INJECTABLE_STATUSES:
                raise InvalidFaultPlan(
                    f"{name} must be one of {sorted(INJECTABLE_STATUSES)}, got {getattr(self, name)!r}"
                )
        if min(self.burst_count, self.latency_ms, self.retry_after, self.slow_headers_ms) < 0:
            raise InvalidFaultPlan("burst_count, latency_ms, slow_headers_ms and retry_after must not be negative")
        if (self.latency_median_ms > 0) != (self.latency_p99_ms > 0) or self.latency_p99_ms < self.latency_median_ms:
            raise InvalidFaultPlan("latency_median_ms and latency_p99_ms go together, with p99 >= median > 0 "
                                   f"(got {self.latency_median_ms!r} and {self.latency_p99_ms!r})")
        if (self.quota is not None and self.quota < 0) or self.quota_window_seconds <= 0:
            raise InvalidFaultPlan("quota must not be negative and quota_window_seconds must be positive")
        unknown_events = set(self.events.values()) - EVENT_TYPES
        if unknown_events:
            raise InvalidFaultPlan(f"unknown webhook event types {sorted(unknown_events)}; "
                                   f"known: {sorted(EVENT_TYPES)}")

    # -- decisions on the hot path -----------------------------------------------------------------
    def call_fault(self) -> int | None:
        """The status to fail this call with, or None to go on (consumes one burst call)."""
        if self.burst_count > 0:
            self.burst_count -= 1
            return self.burst_status
        if self.error_rate > 0 and random.random() < self.error_rate:
            return self.error_status
        return None

    def latency_seconds(self) -> float:
        """The delay for one call: ``latency_ms`` plus a draw of the latency distribution (if on)."""
        delay = self.latency_ms
        if self.latency_median_ms > 0:
            sigma = math.log(self.latency_p99_ms / self.latency_median_ms) / _Z99
            delay += min(random.lognormvariate(math.log(self.latency_median_ms), sigma), MAX_LATENCY_MS)
        return delay / 1000.0

    def slow_headers_seconds(self) -> float:
        """The stall before this call's response headers (0 for most calls)."""
        if self.slow_headers_rate > 0 and random.random() < self.slow_headers_rate:
            return self.slow_headers_ms / 1000.0
        return 0.0

    def resets(self) -> bool:
        """Whether this call's connection is to be cut mid-response."""
        return self.reset_rate > 0 and random.random() < self.reset_rate

    def is_unregistered(self, key: str) -> bool:
        return key in self.unregistered or _fraction_hit(key, self.unregistered_rate)

    def is_invalid(self, key: str) -> bool:
        return key in self.invalid or (bool(self.invalid_prefixes) and key.startswith(self.invalid_prefixes))

    # -- JSON --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["unregistered"] = sorted(self.unregistered)
        raw["invalid"] = sorted(self.invalid)
        raw["invalid_prefixes"] = list(self.invalid_prefixes)
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FaultPlan:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise InvalidFaultPlan(f"unknown fault settings: {sorted(unknown)}; known: {sorted(known)}")
        values = dict(raw)
        try:
            for name in ("unregistered", "invalid"):
                if name in values:
                    values[name] = set(_strings(values[name], name))
            if "invalid_prefixes" in values:
                values["invalid_prefixes"] = tuple(_strings(values["invalid_prefixes"], "invalid_prefixes"))
            if "events" in values:
                values["events"] = {str(k): str(v) for k, v in dict(values["events"]).items()}
            for name in _FLOAT_FIELDS:
                if name in values:
                    values[name] = float(values[name])
            for name in ("error_status", "burst_count", "burst_status", "retry_after"):
                if name in values:
                    values[name] = int(values[name])
            if values.get("quota") is not None:
                values["quota"] = int(values["quota"])
        except (TypeError, ValueError) as exc:
            raise InvalidFaultPlan(f"malformed fault plan: {exc}") from None
        return cls(**values)


_FLOAT_FIELDS = ("error_rate", "unregistered_rate", "latency_ms", "latency_median_ms", "latency_p99_ms",
                 "quota_window_seconds", "reset_rate", "slow_headers_rate", "slow_headers_ms", "tls_failure_rate")


def _strings(value: Any, name: str) -> Iterable[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidFaultPlan(f"{name} must be a list of strings")
    return (str(item) for item in value)


class Faults:
    """The fault plans of one sandbox: ``faults.fcm``, ``faults.sendgrid`` and ``faults.twilio``.

    Change them with :meth:`set` (replace a provider's plan), :meth:`update` (change some fields) or
    :meth:`reset` (no faults). Safe to call from a test thread while the server runs in another.
    """

    PROVIDERS = ("fcm", "sendgrid", "twilio")

    def __init__(self) -> None:
        self.fcm = FaultPlan()
        self.sendgrid = FaultPlan()
        self.twilio = FaultPlan(quota=0)
        self._lock = threading.Lock()
        #: Bumped on every change, so other workers can tell the plan file changed.
        self.version = 0

    def _check_provider(self, provider: str) -> None:
        if provider not in self.PROVIDERS:
            raise InvalidFaultPlan(f"unknown provider {provider!r}; known: {list(self.PROVIDERS)}")

    def set(self, provider: str, plan: FaultPlan) -> None:
        self._check_provider(provider)
        plan.validate()
        with self._lock:
            setattr(self, provider, plan)
            self.version += 1

    def update(self, provider: str, **changes: Any) -> FaultPlan:
        """Change some fields of a provider's plan, keeping the others."""
        self._check_provider(provider)
        with self._lock:
            merged = {**getattr(self, provider).to_dict(), **changes}
            plan = FaultPlan.from_dict(merged)
            setattr(self, provider, plan)
            self.version += 1
        return plan

    def reset(self) -> None:
        with self._lock:
            self.fcm = FaultPlan()
            self.sendgrid = FaultPlan()
            self.twilio = FaultPlan(quota=0)
            self.version += 1

    def to_dict(self) -> dict[str, Any]:
        return {"fcm": self.fcm.to_dict(), "sendgrid": self.sendgrid.to_dict(), "twilio": self.twilio.to_dict()}

    def load_dict(self, raw: dict[str, Any]) -> None:
        """Replace the plans of the providers named in ``raw`` (others stay as they are)."""
        unknown = set(raw) - set(self.PROVIDERS)
        if unknown:
            raise InvalidFaultPlan(f"unknown providers: {sorted(unknown)}; known: {list(self.PROVIDERS)}")
        plans = {name: FaultPlan.from_dict(dict(value or {})) for name, value in raw.items()}
        with self._lock:
            for name, plan in plans.items():
                setattr(self, name, plan)
            self.version += 1


def startup_plans(*, latency_median_ms: float = 0.0, latency_p99_ms: float = 0.0, fcm_quota: int | None = None,
                  sendgrid_quota: int | None = None, quota_window_seconds: float = 60.0) -> dict[str, Any]:
    """The initial fault plans of a sandbox started from the command line (its latency and quota flags)."""
    common: dict[str, Any] = {"latency_median_ms": latency_median_ms, "latency_p99_ms": latency_p99_ms,
                              "quota_window_seconds": quota_window_seconds}
    plans = {"fcm": {**common, "quota": fcm_quota}, "sendgrid": {**common, "quota": sendgrid_quota}}
    for plan in plans.values():
        FaultPlan.from_dict(plan)  # refuse a bad flag before the server starts
    return plans
