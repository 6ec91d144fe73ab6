"""One settings object, read from the environment in one place.

Every knob has a default that works on a developer's machine; production sets the environment.
With ``DATABASE_URL`` / ``REDIS_URL`` unset the engine starts embedded servers under ``DISPATCHER_HOME``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from dispatcher.errors import ConfigurationError

#: H3 resolution at which every resident's location is indexed (res 15 cells are ~0.9 m² wide).
RESIDENT_CELL_RESOLUTION = 15
#: Residents may respond to a request for this many days after publication.
RESPONSE_WINDOW_DAYS = 60
#: FCM keeps a message for at most four weeks.
FCM_MAX_TTL_SECONDS = 28 * 24 * 3600
#: firebase-admin refuses more than this many messages in one send_each call.
FCM_MAX_BATCH = 500
#: SendGrid v3 mail send accepts at most this many personalizations per call.
SENDGRID_MAX_PERSONALIZATIONS = 1000
#: Largest area accepted by default, in bytes of JSON: 200,000 vertices at full precision and some room.
MAX_AREA_BYTES = 12 * 1024 * 1024
#: Incident types that jump the queue and go out with high priority.
URGENT_INCIDENT_TYPES = frozenset({"missing_person", "threat_to_safety"})


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    """Everything the engine can be told; build it with :meth:`from_env`."""

    #: PostgreSQL DSN; ``None`` means "start the embedded server".
    database_url: str | None = None
    #: Redis URL for the dramatiq broker and shared rate limits; ``None`` means embedded.
    redis_url: str | None = None
    #: Where embedded servers, sandbox records and demo files live.
    home: Path = field(default_factory=lambda: Path(".dispatcher").resolve())

    #: Service-account JSON for firebase-admin (as ``GOOGLE_APPLICATION_CREDENTIALS``).
    fcm_credentials: str | None = None
    #: Base URL of the FCM HTTP v1 API; the sandbox sets its own.
    fcm_endpoint: str = "https://fcm.googleapis.com"
    #: Messages per firebase-admin batch (at most 500).
    push_batch_size: int = FCM_MAX_BATCH
    #: Shared FCM quota, messages per minute per project.
    push_rate_per_minute: int = 600_000

    #: SendGrid API key.
    sendgrid_api_key: str | None = None
    #: Base URL of the SendGrid v3 API.
    sendgrid_endpoint: str = "https://api.sendgrid.com"
    #: Personalizations per mail send call (at most 1,000).
    email_batch_size: int = SENDGRID_MAX_PERSONALIZATIONS
    #: Shared SendGrid rate, recipients per minute.
    email_rate_per_minute: int = 6_000_000
    #: Sender address and name of every email.
    email_from: str = "requests@dispatcher.invalid"
    email_from_name: str = "Community Requests"
    #: SendGrid unsubscribe group for Community Requests (0 means none).
    sendgrid_unsubscribe_group: int = 0
    #: SendGrid's Signed Event Webhook verification key (base64 DER, as SendGrid shows it, or PEM).
    sendgrid_webhook_public_key: str | None = None
    #: Base of the deep links and buttons in notifications.
    app_link_base: str = "https://app.dispatcher.invalid"
    #: Where one-click unsubscribe requests go (List-Unsubscribe).
    unsubscribe_url: str = "https://app.dispatcher.invalid/unsubscribe"

    #: How long a fan-out worker owns a claimed batch before another may take it.
    lease_seconds: int = 120
    #: Most PostgreSQL connections one process keeps (worker threads, sending threads and targeting share them).
    database_pool_size: int = 16
    #: Largest area accepted, in vertices and in km².
    max_area_vertices: int = 200_000
    max_area_km2: float = 20_000.0
    #: Largest area accepted in bytes of JSON, foreign members and a Feature's properties included.
    max_area_bytes: int = MAX_AREA_BYTES
    #: Budget of one area's targeting (memory in MB, seconds of CPU): an area no plan fits is refused.
    targeting_budget_mb: int = 256
    targeting_budget_seconds: float = 2.0
    #: How far a request's ``published_at`` may lie ahead of this machine's clock (clock skew).
    max_clock_skew_seconds: int = 300
    #: Key of the HMAC that signs unsubscribe links; unset: a random key kept in ``home``.
    unsubscribe_secret: str | None = None
    #: The key before the last rotation: links it signed are still honoured until they expire.
    unsubscribe_previous_secret: str | None = None
    #: Days an unsubscribe link stays valid.
    unsubscribe_link_days: int = 90

    #: How far (metres) a request's area may reach past its agency's jurisdiction: drawn areas wobble.
    jurisdiction_tolerance_m: float = 25.0
    #: Keys of the "Neighbor #" pseudonyms, ``id:secret`` separated by commas, current first; unset: a
    #: random key kept in ``home`` (one machine only: production sets it, see dispatcher/agencies/pseudonyms.py).
    pseudonym_keys: str | None = None
    #: Longest footage window a video request may ask for, in hours.
    video_max_window_hours: float = 12.0
    #: Largest area a video request may cover, in km².
    video_max_area_km2: float = 5.0
    #: Contact Me relay (dispatcher/relay/): the Twilio account, and where Twilio's REST API lives.
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_api_base: str = "https://api.twilio.com"
    #: The public base URL Twilio posts webhooks to (signatures are computed over it, not over the
    #: address a proxy in front of us forwards to).
    relay_public_base_url: str = "http://127.0.0.1:8900"
    #: Fernet keys for real phone numbers at rest, comma-separated, newest first (rotation: prepend a
    #: new key, run ``dispatcher relay rotate-keys``, then drop the old one); unset: one kept in ``home``.
    relay_number_keys: str | None = None
    #: Key of the HMAC that finds a phone by its number; unset: one kept in ``home``.
    relay_lookup_key: str | None = None
    #: Bearer token the relay's app-facing routes require (unset: those routes answer 401).
    relay_api_token: str | None = None
    #: Texts a second from one proxy number (Twilio long codes: 1), shared by every worker.
    relay_rate_per_number: float = 1.0
    #: Days the abuse metadata of relayed messages is kept.
    relay_abuse_retention_days: int = 30
    #: Seconds an outgoing text may wait in the outbox before it is dropped (with its body).
    relay_outbox_ttl_seconds: int = 3600

    #: Whether ``dispatcher worker`` applies pending migrations before it starts consuming.
    migrate_on_worker_start: bool = True
    #: Seconds between two reconciler sweeps in each worker process (0 switches the reconciler off).
    reconcile_seconds: float = 15.0
    #: A stage with no activity for this long is considered stuck and nudged by the reconciler.
    stale_seconds: float = 60.0
    #: Seconds between two samples of the queue and request gauges in each worker process (0: never).
    ops_sample_seconds: float = 15.0
    #: Whether residents' quiet hours hold non-urgent pushes (off: everything goes out at once).
    quiet_hours: bool = True
    #: Whether quiet hours hold email too (an email wakes no one, so by default it goes out at once).
    quiet_hours_email: bool = False

    #: Bearer token the main application presents to ``dispatcher api``; the API refuses to start without it.
    api_token: str | None = None
    #: Let ``dispatcher api`` start without a token, every caller accepted (a developer's machine only).
    api_insecure_dev: bool = False

    def with_(self, **changes: Any) -> Settings:
        """A copy with some settings changed (settings are immutable)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls) -> Settings:
        """Read every setting from the environment, falling back to the defaults above."""
        defaults = cls()
        home = Path(_env("DISPATCHER_HOME", str(defaults.home)) or ".").resolve()
        return cls(
            database_url=_env("DATABASE_URL"),
            redis_url=_env("REDIS_URL"),
            home=home,
            fcm_credentials=_env("FCM_CREDENTIALS", _env("GOOGLE_APPLICATION_CREDENTIALS")),
            fcm_endpoint=_env("FCM_ENDPOINT", defaults.fcm_endpoint) or defaults.fcm_endpoint,
            push_batch_size=min(_env_int("PUSH_BATCH_SIZE", defaults.push_batch_size), FCM_MAX_BATCH),
            push_rate_per_minute=_env_int("PUSH_RATE_PER_MINUTE", defaults.push_rate_per_minute),
            sendgrid_api_key=_env("SENDGRID_API_KEY"),
            sendgrid_endpoint=_env("SENDGRID_ENDPOINT", defaults.sendgrid_endpoint)
            or defaults.sendgrid_endpoint,
            email_batch_size=min(
                _env_int("EMAIL_BATCH_SIZE", defaults.email_batch_size), SENDGRID_MAX_PERSONALIZATIONS
            ),
            email_rate_per_minute=_env_int("EMAIL_RATE_PER_MINUTE", defaults.email_rate_per_minute),
            email_from=_env("EMAIL_FROM", defaults.email_from) or defaults.email_from,
            email_from_name=_env("EMAIL_FROM_NAME", defaults.email_from_name) or defaults.email_from_name,
            sendgrid_unsubscribe_group=_env_int("SENDGRID_UNSUBSCRIBE_GROUP", 0),
            sendgrid_webhook_public_key=_env("SENDGRID_WEBHOOK_PUBLIC_KEY"),
            app_link_base=_env("APP_LINK_BASE", defaults.app_link_base) or defaults.app_link_base,
            unsubscribe_url=_env("UNSUBSCRIBE_URL", defaults.unsubscribe_url) or defaults.unsubscribe_url,
            lease_seconds=_env_int("LEASE_SECONDS", defaults.lease_seconds),
            database_pool_size=_env_int("DATABASE_POOL_SIZE", defaults.database_pool_size),
            max_area_vertices=_env_int("MAX_AREA_VERTICES", defaults.max_area_vertices),
            max_area_km2=_env_float("MAX_AREA_KM2", defaults.max_area_km2),
            max_area_bytes=_env_int("MAX_AREA_BYTES", defaults.max_area_bytes),
            targeting_budget_mb=_env_int("TARGETING_BUDGET_MB", defaults.targeting_budget_mb),
            targeting_budget_seconds=_env_float("TARGETING_BUDGET_SECONDS", defaults.targeting_budget_seconds),
            max_clock_skew_seconds=_env_int("MAX_CLOCK_SKEW_SECONDS", defaults.max_clock_skew_seconds),
            unsubscribe_secret=_env("UNSUBSCRIBE_SECRET"),
            unsubscribe_previous_secret=_env("UNSUBSCRIBE_PREVIOUS_SECRET"),
            unsubscribe_link_days=_env_int("UNSUBSCRIBE_LINK_DAYS", defaults.unsubscribe_link_days),
            jurisdiction_tolerance_m=_env_float("JURISDICTION_TOLERANCE_M", defaults.jurisdiction_tolerance_m),
            pseudonym_keys=_env("PSEUDONYM_KEYS"),
            video_max_window_hours=_env_float("VIDEO_MAX_WINDOW_HOURS", defaults.video_max_window_hours),
            video_max_area_km2=_env_float("VIDEO_MAX_AREA_KM2", defaults.video_max_area_km2),
            twilio_account_sid=_env("TWILIO_ACCOUNT_SID"),
            twilio_auth_token=_env("TWILIO_AUTH_TOKEN"),
            twilio_api_base=_env("TWILIO_API_BASE", defaults.twilio_api_base) or defaults.twilio_api_base,
            relay_public_base_url=_env("RELAY_PUBLIC_BASE_URL", defaults.relay_public_base_url)
            or defaults.relay_public_base_url,
            relay_number_keys=_env("RELAY_NUMBER_KEYS"),
            relay_lookup_key=_env("RELAY_LOOKUP_KEY"),
            relay_api_token=_env("RELAY_API_TOKEN"),
            relay_rate_per_number=_env_float("RELAY_RATE_PER_NUMBER", defaults.relay_rate_per_number),
            relay_abuse_retention_days=_env_int("RELAY_ABUSE_RETENTION_DAYS", defaults.relay_abuse_retention_days),
            relay_outbox_ttl_seconds=_env_int("RELAY_OUTBOX_TTL_SECONDS", defaults.relay_outbox_ttl_seconds),
            migrate_on_worker_start=_env_bool("MIGRATE_ON_WORKER_START", defaults.migrate_on_worker_start),
            reconcile_seconds=_env_float("DISPATCHER_RECONCILE_SECONDS", defaults.reconcile_seconds),
            stale_seconds=_env_float("DISPATCHER_STALE_SECONDS", defaults.stale_seconds),
            ops_sample_seconds=_env_float("DISPATCHER_OPS_SAMPLE_SECONDS", defaults.ops_sample_seconds),
            quiet_hours=_env_bool("QUIET_HOURS", defaults.quiet_hours),
            quiet_hours_email=_env_bool("QUIET_HOURS_EMAIL", defaults.quiet_hours_email),
            api_token=_env("API_TOKEN"),
            api_insecure_dev=_env_bool("API_INSECURE_DEV", defaults.api_insecure_dev),
        )

    def describe(self) -> dict[str, str]:
        """Settings safe to print: secrets and credentials are masked."""
        secret = {"sendgrid_api_key", "fcm_credentials", "database_url", "redis_url",
                  "unsubscribe_secret", "unsubscribe_previous_secret", "api_token", "pseudonym_keys",
                  "twilio_auth_token", "relay_number_keys", "relay_lookup_key", "relay_api_token"}
        shown: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            shown[f.name] = "***" if f.name in secret and value else str(value)
        return shown


_current: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    global _current
    if _current is None:
        _current = Settings.from_env()
    return _current


def set_settings(settings: Settings | None) -> None:
    """Replace the process-wide settings (the CLI and tests do this after starting servers)."""
    global _current
    _current = settings
