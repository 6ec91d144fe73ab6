"""``python -m dispatcher.sandbox``: serve the FCM, SendGrid and Twilio sandbox in the foreground."""

from __future__ import annotations

import argparse

from dispatcher.sandbox.faults import BENCHMARK_LATENCY, InvalidFaultPlan, startup_plans
from dispatcher.sandbox.server import run_sandbox


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dispatcher.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; beyond loopback the control API requires a token")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--records-dir", default=".dispatcher/sandbox")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--api-key", default=None, help="SendGrid API key to accept (default: generated)")
    parser.add_argument("--webhook-url", default=None, help="where to POST signed SendGrid events")
    parser.add_argument("--events-interval", type=float, default=None,
                        help="post events for accepted mail every N seconds (needs --webhook-url)")
    parser.add_argument("--control-token", default=None,
                        help="token the control API requires (default beyond loopback: generated, printed once)")
    parser.add_argument("--latency", action="store_true",
                        help=f"realistic latency: median {BENCHMARK_LATENCY[0]:g} ms, p99 {BENCHMARK_LATENCY[1]:g} ms")
    parser.add_argument("--latency-median-ms", type=float, default=None, help="latency median per call")
    parser.add_argument("--latency-p99-ms", type=float, default=None, help="latency 99th percentile per call")
    parser.add_argument("--fcm-quota", type=int, default=None,
                        help="FCM calls per quota window (default 600,000 a minute; 0 = unlimited)")
    parser.add_argument("--sendgrid-quota", type=int, default=None,
                        help="SendGrid calls per quota window (default unlimited)")
    parser.add_argument("--quota-window-seconds", type=float, default=60.0)
    parser.add_argument("--twilio-webhook-base", default=None,
                        help="base URL of the relay: inbound texts and calls are posted to <base>/relay/twilio/...")
    args = parser.parse_args(argv)
    median, p99 = BENCHMARK_LATENCY if args.latency else (0.0, 0.0)
    try:
        plans = startup_plans(
            latency_median_ms=median if args.latency_median_ms is None else args.latency_median_ms,
            latency_p99_ms=p99 if args.latency_p99_ms is None else args.latency_p99_ms,
            fcm_quota=args.fcm_quota, sendgrid_quota=args.sendgrid_quota,
            quota_window_seconds=args.quota_window_seconds)
    except InvalidFaultPlan as exc:
        parser.error(str(exc))
    run_sandbox(args.host, args.port, args.records_dir, args.workers, api_key=args.api_key,
                webhook_url=args.webhook_url, events_interval=args.events_interval,
                control_token=args.control_token, faults=plans, twilio_webhook_base=args.twilio_webhook_base)


if __name__ == "__main__":
    main()
