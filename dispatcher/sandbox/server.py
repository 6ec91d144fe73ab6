"""Running the sandbox: in a background thread for tests, or as a server process for the CLI.

Both use uvicorn with uvloop and httptools and no access log: the benchmarks push thousands of calls
a second through the sandbox on the same two cores as the worker.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import random
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from dispatcher.config import Settings
from dispatcher.errors import DispatcherError
from dispatcher.sandbox.app import SandboxApp
from dispatcher.sandbox.credentials import write_service_account
from dispatcher.sandbox.faults import Faults
from dispatcher.sandbox.recorder import MEMORY_LIMIT

#: Project id of the sandbox's own service account.
SANDBOX_PROJECT = "dispatcher-sandbox"
#: Seconds to wait for the server thread to start accepting.
START_TIMEOUT = 15.0

_ENV_PREFIX = "DISPATCHER_SANDBOX_"


class SandboxStartFailed(DispatcherError):
    """The sandbox server did not come up."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def control_token_for(host: str, token: str | None) -> str | None:
    """The control token a sandbox bound to ``host`` requires: the given one, else a new one beyond loopback."""
    if token:
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(24)


def _fail_some_handshakes(context: ssl.SSLContext, faults: Faults) -> None:
    """Refuse a fraction of TLS handshakes (``tls_failure_rate``) with a handshake_failure alert."""
    def on_client_hello(sock: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> int | None:
        rate = max(faults.fcm.tls_failure_rate, faults.sendgrid.tls_failure_rate)
        if rate > 0 and random.random() < rate:
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        return None

    context.sni_callback = on_client_hello


def _uvicorn_config(app: Any, host: str, port: int, **extra: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http="httptools", ws="none", lifespan="on",
        access_log=False, log_level="warning", server_header=False, date_header=False,
        proxy_headers=False, timeout_keep_alive=30, backlog=4096, **extra,
    )


def prepare_service_account(records_dir: Path, base_url: str, project_id: str = SANDBOX_PROJECT) -> Path:
    """The sandbox's own service-account file (``<records_dir>/service_account.json``), token_uri set."""
    path = records_dir / "service_account.json"
    return write_service_account(path, token_uri=f"{base_url}/token", project_id=project_id,
                                 keys_dir=records_dir / "state" / "keys")


class SandboxServer:
    """A sandbox in a background thread of this process; a context manager.

    >>> with SandboxServer(tmp_path) as sandbox:          # doctest: +SKIP
    ...     settings = sandbox.configure(settings)
    ...     sandbox.faults.update("fcm", error_rate=0.1, error_status=429)
    ...     sandbox.records("fcm")
    """

    def __init__(
        self,
        records_dir: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        project_id: str = SANDBOX_PROJECT,
        webhook_url: str | None = None,
        events_interval: float | None = None,
        memory_limit: int = MEMORY_LIMIT,
        ssl_certfile: str | Path | None = None,
        ssl_keyfile: str | Path | None = None,
        control_token: str | None = None,
    ) -> None:
        """``ssl_certfile``/``ssl_keyfile`` (PEM) serve over TLS, as FCM and SendGrid do: URLs become https.

        Bound beyond loopback, the control API requires ``control_token`` (generated when not given,
        see :attr:`control_token`).
        """
        if (ssl_certfile is None) != (ssl_keyfile is None):
            raise SandboxStartFailed("TLS needs both ssl_certfile and ssl_keyfile")
        self.records_dir = Path(records_dir).resolve()
        self.host = host
        self.port = port
        self.project_id = project_id
        self.ssl_certfile = str(ssl_certfile) if ssl_certfile is not None else None
        self.ssl_keyfile = str(ssl_keyfile) if ssl_keyfile is not None else None
        self.control_token = control_token_for(host, control_token)
        self.app = SandboxApp(self.records_dir, api_key=api_key, webhook_url=webhook_url,
                              events_interval=events_interval, memory_limit=memory_limit,
                              control_token=self.control_token)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.service_account_path: Path | None = None
        #: Port of FCM's own listener (set by :meth:`start`).
        self.fcm_port = 0

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> SandboxServer:
        sock = _bound(self.host, self.port)
        self.port = sock.getsockname()[1]
        fcm_sock = _bound(self.host, 0)
        self.fcm_port = fcm_sock.getsockname()[1]
        self.service_account_path = prepare_service_account(self.records_dir, self.base_url, self.project_id)
        self.app.info = self._info()
        tls = {"ssl_certfile": self.ssl_certfile, "ssl_keyfile": self.ssl_keyfile} if self.ssl_certfile else {}
        config = _uvicorn_config(self.app, self.host, self.port, **tls)
        if self.ssl_certfile:
            config.load()
            assert config.ssl is not None
            _fail_some_handshakes(config.ssl, self.app.faults)
        self.app.fcm_listener = (fcm_sock, config.ssl if self.ssl_certfile else None)
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                        name="dispatcher-sandbox", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise SandboxStartFailed(f"sandbox did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self.app.recorder.flush()
        self._server = None
        self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- where things are --------------------------------------------------------------------------
    def _url(self, port: int) -> str:
        return f"{'https' if self.ssl_certfile else 'http'}://{_address(self.host, port)}"

    @property
    def base_url(self) -> str:
        return self._url(self.port)

    @property
    def fcm_url(self) -> str:
        """Base URL of the FCM v1 API (``Settings.fcm_endpoint``): FCM's own listener (:mod:`.fcm_listener`)."""
        return self._url(self.fcm_port)

    @property
    def sendgrid_url(self) -> str:
        """Base URL of the SendGrid v3 API (``Settings.sendgrid_endpoint``, the sendgrid ``host``)."""
        return self.base_url

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @property
    def api_key(self) -> str:
        return self.app.api_key

    @property
    def webhook_public_key(self) -> str:
        """The event webhook verification key, as SendGrid shows it (base64 DER SubjectPublicKeyInfo)."""
        return self.app.webhook_public_key

    @property
    def faults(self) -> Faults:
        return self.app.faults

    def _info(self) -> dict[str, Any]:
        return {"bound_address": _address(self.host, self.port), "base_url": self.base_url,
                "fcm_url": self.fcm_url, "sendgrid_url": self.sendgrid_url,
                "token_uri": self.token_uri, "project_id": self.project_id,
                "service_account_path": str(self.service_account_path)}

    def configure(self, settings: Settings) -> Settings:
        """``settings`` pointed at this sandbox: endpoints, service account, API key and Twilio account."""
        return settings.with_(fcm_endpoint=self.fcm_url, fcm_credentials=str(self.service_account_path),
                              sendgrid_endpoint=self.sendgrid_url, sendgrid_api_key=self.api_key,
                              twilio_api_base=self.base_url, twilio_account_sid=self.app.twilio.account_sid,
                              twilio_auth_token=self.app.twilio.auth_token)

    def twilio_inbound(self, kind: str, from_: str, to: str, body: str = "", *, url: str | None = None,
                       signature: str | None = None, signed_url: str | None = None,
                       timeout: float = 30.0) -> dict[str, Any]:
        """A phone texts or calls ``to``: the signed webhook is posted and its TwiML acted on (see
        :meth:`dispatcher.sandbox.twilio.TwilioSandbox.inbound`)."""
        loop = self.app.loop
        if loop is None:
            raise SandboxStartFailed("the sandbox is not running")
        coroutine = self.app.twilio.inbound(kind, from_, to, body, url, signature, signed_url)
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)

    # -- records and events ------------------------------------------------------------------------
    def records(self, stream: str = "fcm") -> list[dict[str, Any]]:
        """Accepted calls of one stream: ``fcm``, ``sendgrid`` (per recipient), ``sendgrid_requests``,
        ``events`` (webhook events posted)."""
        return self.app.recorder.records(stream)

    def all_records(self, stream: str = "fcm") -> Iterator[dict[str, Any]]:
        """Every record of a stream from its JSON Lines file (not capped like :meth:`records`); flushes first."""
        self.flush()
        return self.app.recorder.iter_file(stream)

    def stats(self) -> dict[str, Any]:
        return self.app.recorder.summary()

    def flush(self) -> None:
        """Write buffered records to the JSON Lines files now."""
        self.app.recorder.flush()

    def clear(self) -> None:
        self.app.clear()

    def deliver_events(self, url: str | None = None, timeout: float = 60.0) -> int:
        """POST signed SendGrid events for the mail accepted so far; returns how many were posted."""
        loop = self.app.loop
        if loop is None:
            raise SandboxStartFailed("the sandbox is not running")
        future = asyncio.run_coroutine_threadsafe(self.app.deliver_events(url), loop)
        return future.result(timeout)


def _bound(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: any free port), not yet listening."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_sandbox(host: str = "127.0.0.1", port: int = 8025, records_dir: str | Path = ".dispatcher/sandbox",
                workers: int = 1, *, api_key: str | None = None, webhook_url: str | None = None,
                events_interval: float | None = None, memory_limit: int = MEMORY_LIMIT,
                control_token: str | None = None, faults: dict[str, Any] | None = None,
                twilio_webhook_base: str | None = None) -> None:
    """Serve the sandbox in the foreground until interrupted (the ``dispatcher sandbox`` command).

    Writes ``<records_dir>/service_account.json`` and ``<records_dir>/sandbox.json`` (URLs, the bound
    address, API key, webhook public key) first, so other processes can be configured from them. Bound
    beyond loopback, the control API requires a token: ``control_token``, or one generated and printed
    here once (it is written nowhere). ``faults`` is the initial fault plan per provider (latency,
    quota...), as ``PUT /_sandbox/faults`` takes it. With ``workers > 1`` each worker keeps its own
    in-memory records, counters and quota bucket, fault plans set through the control API reach every
    worker within a quarter second, and all workers append to the same record files.
    """
    root = Path(records_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    sock: socket.socket | None = None
    fcm_sock: socket.socket | None = None
    if workers == 1:
        # Bind first, so the address reported is the one bound (a port of 0 becomes the real port).
        sock = _bound(host, port)
        port = sock.getsockname()[1]
        fcm_sock = _bound(host, 0)  # FCM's own listener (.fcm_listener), on the same loop
    elif port == 0:
        raise SandboxStartFailed("several workers need a fixed port, not 0")
    wildcard = host in ("0.0.0.0", "::", "")
    local_host = "127.0.0.1" if wildcard else host
    base_url = f"http://{_address(local_host, port)}"
    fcm_url = f"http://{_address(local_host, fcm_sock.getsockname()[1])}" if fcm_sock is not None else base_url
    service_account = prepare_service_account(root, base_url)
    token = control_token_for(host, control_token)
    info = {"bound_address": _address(host or "0.0.0.0", port), "every_interface": wildcard,
            "base_url": base_url, "fcm_url": fcm_url, "sendgrid_url": base_url,
            "token_uri": f"{base_url}/token", "project_id": SANDBOX_PROJECT,
            "service_account_path": str(service_account), "control_token_required": token is not None}
    options: dict[str, Any] = {"records_dir": str(root), "api_key": api_key, "webhook_url": webhook_url,
               "events_interval": events_interval, "memory_limit": memory_limit,
               "shared_faults": workers > 1, "control_token": token, "info": info, "faults": faults or {},
               "twilio_webhook_base": twilio_webhook_base}
    os.environ[_ENV_PREFIX + "OPTIONS"] = json.dumps(options)
    app = create_app_from_env()
    (root / "sandbox.json").write_text(json.dumps(
        {**info, "api_key": app.api_key, "webhook_public_key": app.webhook_public_key,
         "twilio_account_sid": app.twilio.account_sid, "twilio_auth_token": app.twilio.auth_token,
         "records_dir": str(root)}, indent=2) + "\n")
    where = "every interface" if wildcard else "this address only"
    print(f"dispatcher sandbox listening on {info['bound_address']} ({where}); local URL {base_url}", flush=True)
    if token is not None and not control_token:
        print(f"control API token (shown once; send it as 'Authorization: Bearer <token>'): {token}", flush=True)
    if workers > 1:
        uvicorn.run("dispatcher.sandbox.server:create_app_from_env", factory=True, host=host, port=port,
                    workers=workers, loop="uvloop", http="httptools", ws="none", lifespan="on",
                    access_log=False, log_level="warning", server_header=False, date_header=False,
                    backlog=4096, proxy_headers=False)
    else:
        assert sock is not None and fcm_sock is not None
        app.fcm_listener = (fcm_sock, None)
        uvicorn.Server(_uvicorn_config(app, host, port)).run(sockets=[sock])


def create_app_from_env() -> SandboxApp:
    """Build the app from the options :func:`run_sandbox` put in the environment (one per worker)."""
    raw = os.environ.get(_ENV_PREFIX + "OPTIONS")
    if not raw:
        raise SandboxStartFailed(f"{_ENV_PREFIX}OPTIONS is not set; start the sandbox with run_sandbox()")
    options = json.loads(raw)
    info = options.pop("info", {})
    faults = options.pop("faults", {})
    app = SandboxApp(**options)
    app.info = info
    if faults:
        app.faults.load_dict(faults)
    return app
