"""A client of the control API, for a sandbox running in another process (CLI, demo, benchmarks)."""

from __future__ import annotations

from typing import Any

import httpx

from dispatcher.errors import DispatcherError


class SandboxControlError(DispatcherError):
    """The sandbox refused a control request (the message carries its explanation)."""


class SandboxClient:
    """Set faults, read records and stats, and trigger webhook events on a running sandbox.

    >>> sandbox = SandboxClient("http://127.0.0.1:8025")          # doctest: +SKIP
    >>> sandbox.update_faults("fcm", error_rate=0.05, error_status=429)
    """

    def __init__(self, base_url: str, timeout: float = 30.0, *, token: str | None = None) -> None:
        """``token``: the control token a sandbox bound beyond loopback printed when it started."""
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url + "/_sandbox", timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SandboxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise SandboxControlError(f"sandbox answered {response.status_code} to {method} {path}: "
                                      f"{response.text[:500]}")
        return response.json()

    def faults(self) -> dict[str, Any]:
        return dict(self._call("GET", "/faults"))

    def set_faults(self, provider: str, **plan: Any) -> dict[str, Any]:
        """Replace one provider's fault plan (fields not given go back to "no fault")."""
        return dict(self._call("PUT", "/faults", json={provider: plan}))

    def update_faults(self, provider: str, **changes: Any) -> dict[str, Any]:
        """Change some fields of one provider's fault plan."""
        return dict(self._call("PATCH", "/faults", json={provider: changes}))

    def reset_faults(self) -> None:
        self._call("DELETE", "/faults")

    def records(self, stream: str = "fcm", offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"stream": stream, "offset": offset}
        if limit is not None:
            params["limit"] = limit
        return list(self._call("GET", "/records", params=params)["records"])

    def clear(self) -> None:
        self._call("DELETE", "/records")

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/stats"))

    def info(self) -> dict[str, Any]:
        """URLs, project, service-account path, API key and webhook public key of the sandbox."""
        return dict(self._call("GET", "/info"))

    def deliver_events(self, url: str | None = None) -> int:
        """Have the sandbox POST signed SendGrid events for the mail it accepted; returns the count."""
        return int(self._call("POST", "/events", json={"url": url} if url else {})["posted"])
