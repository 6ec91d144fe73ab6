"""Which transport carries the push calls: many HTTP/1.1 keep-alive connections, or HTTP/2 streams over few.

    python benchmarks/transport.py                    # writes benchmarks/results/transport.{md,json}
    python benchmarks/transport.py --messages 4000    # a smoke run

Both clients meet the same server: the sandbox app served by hypercorn, which speaks HTTP/1.1 and
HTTP/2 (prior knowledge over plain TCP, at most 100 concurrent streams a connection, as Google's front
ends) on one port, with a fixed latency per call. Each row is a fresh worker process sending through
``PushChannel.send`` with the engine's own sizing (the fan-out's batch gate, the channel's adaptive
limit on calls in flight), over:

* ``lean HTTP/1.1``: the engine's default client (``channels/push/fcm_http.py``), one call per connection;
* ``httpx HTTP/1.1``: the reference transport, the client firebase-admin's async path uses;
* ``httpx HTTP/2``: the same client with ``http2=True`` (the h2 library), streams multiplexed.

The figure that decides is the worker's CPU per message at the same throughput: with hundreds of calls
in flight, concurrency is no longer what bounds a worker, its CPU is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fanout  # the benchmark helpers next to this file

ROOT = fanout.ROOT
RESULTS = fanout.RESULTS
CLIENTS = ("lean HTTP/1.1", "httpx HTTP/1.1", "httpx HTTP/2")


def serve(records: Path, port: int, latency_ms: float) -> None:
    """The sandbox app under hypercorn (HTTP/1.1 and h2c on one port), in the foreground."""
    import asyncio

    import uvloop
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    from dispatcher.sandbox.app import SandboxApp
    from dispatcher.sandbox.server import prepare_service_account

    base_url = f"http://127.0.0.1:{port}"
    app = SandboxApp(records)
    account = prepare_service_account(records.resolve(), base_url)
    app.faults.update("fcm", latency_ms=latency_ms)
    info = {"base_url": base_url, "fcm_url": base_url, "sendgrid_url": base_url, "api_key": app.api_key,
            "service_account_path": str(account)}
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.h2_max_concurrent_streams = 100
    config.keep_alive_timeout = 60
    config.backlog = 4096
    (records / "sandbox.json").write_text(json.dumps(info))

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)  # a clean end on terminate()
        await hypercorn_serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]  # ASGI app

    # hypercorn cancels kept-alive connections' tasks when it stops; asyncio would log each as an error.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(run())


def phase(info: dict[str, Any], client: str, messages: int) -> dict[str, Any]:
    """One client's row, sent the way ``benchmarks/fanout.py``'s push rows are (the engine's sizing)."""
    from dispatcher.channels.push.httpx_transport import httpx_transport

    transport = None if client == "lean HTTP/1.1" else httpx_transport(http2=client.endswith("2"))
    return fanout.phase_push(info, messages, 0, transport=transport)


def _start_server(records: Path, latency_ms: float) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    port = fanout._free_port()
    return fanout.started_server([sys.executable, __file__, "--serve", str(records), "--port", str(port),
                                  "--latency-ms", str(latency_ms)], port, records)


def orchestrate(messages: int, latencies: list[float]) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    before = os.getloadavg()
    for latency in latencies:
        records = Path(tempfile.mkdtemp(prefix="dispatcher-transport-"))
        server, _ = _start_server(records, latency)
        try:
            for client in CLIENTS:
                count = messages if client == "lean HTTP/1.1" else max(1_000, messages // 5)
                server_cpu = fanout.process_tree_cpu_seconds(server.pid)
                command = [sys.executable, __file__, "--phase", client, "--info", str(records / "sandbox.json"),
                           "--messages", str(count)]
                output = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
                row = json.loads(output.strip().splitlines()[-1])
                row.update({"client": client, "latency_ms": latency, "server_cpu_us_per_message": round(
                    (fanout.process_tree_cpu_seconds(server.pid) - server_cpu) / row["count"] * 1e6, 1)})
                print(f"  {client:15} {latency:5.0f} ms {row['count']:>8,} {row['per_second']:>9,.0f}/s "
                      f"{row['cpu_us_per_message']:>8.1f} µs CPU each (server {row['server_cpu_us_per_message']:.0f})"
                      f"  calls in flight {row['calls_in_flight_peak']}  failures {row['failures']}", flush=True)
                rows.append(row)
        finally:
            fanout.stop_server(server, records)
    return {**fanout.run_stamp(before), "messages": messages, "rows": rows}


def report(data: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.1f}" for x in data["load_average_before"])
    lines = [
        "# Push transport: HTTP/1.1 over many connections or HTTP/2 streams",
        "",
        f"Generated {data['generated_at']} by `python benchmarks/transport.py --messages {data['messages']}` on"
        f" {data['cores']} cores (load average {load} before). Server: the sandbox app under hypercorn"
        " (HTTP/1.1 and h2c, 100 streams a connection), fixed latency per call; each row a fresh worker"
        " process with the engine's sizing. The httpx rows send a fifth of the messages.",
        "",
        "| client | latency | messages | per second | worker CPU µs / message | server CPU µs / message"
        " | calls in flight (peak) | peak RSS MB | failures |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        lines.append(f"| {r['client']} | {r['latency_ms']:.0f} ms | {r['count']:,} | {r['per_second']:,.0f}"
                     f" | {r['cpu_us_per_message']:.0f} | {r['server_cpu_us_per_message']:.0f}"
                     f" | {r['calls_in_flight_peak']} | {r['peak_rss_mb']:.0f} | {r['failures']} |")
    lines += ["", DECISION]
    return "\n".join(lines)


DECISION = """## The choice, and why

**HTTP/1.1 over many keep-alive connections, with the lean client, sized by Little's law.**

* What bounded the push channel was calls in flight (64 connections ÷ latency), not the protocol. With
  the adaptive limit a worker process keeps rate × latency calls in flight (625 at 50 ms, up to 1,024)
  over as many connections; a connection costs a socket and a few kilobytes, opened once and kept.
* Per message, the worker's CPU decides how many cores reach FCM's 10,000 a second. HTTP/2 through a
  well-kept Python client (httpx with h2) costs several times the lean client's CPU per message (the
  table): h2's pure-Python framing, HPACK and flow control, plus httpx's request and response objects,
  for every call; HTTP/2 saves the connection count, which is not what is scarce here.
* httpx's HTTP/1.1 pool with hundreds of connections is worse still: it looks for a free connection
  among all of them on every request, so its cost grows with the calls in flight.
* Where HTTP/2 would win: a front end that limits connections per client (Google allows many) or a
  native multiplexing client (libcurl's multi interface through pycurl, a Rust client) whose per-call
  cost is below the lean client's; the transport seam (`channels/push/transport.py`) takes one such
  client as one module, and this benchmark measures it beside the others.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000, help="messages for the lean client's rows")
    parser.add_argument("--latency-ms", type=float, action="append", default=None,
                        help="sandbox latency per call (repeatable; default 50 and 100)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--info", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve), args.port, (args.latency_ms or [50.0])[0])
        return
    if args.phase:
        print(json.dumps(phase(json.loads(Path(args.info).read_text()), args.phase, args.messages)))
        return
    data = orchestrate(args.messages, args.latency_ms or [50.0, 100.0])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "transport.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / "transport.md").write_text(report(data))
    print(report(data))


if __name__ == "__main__":
    main()
