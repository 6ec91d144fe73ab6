"""``python -m dispatcher.sandbox``: serve the FCM and SendGrid sandbox in the foreground."""

from __future__ import annotations

import argparse

from dispatcher.sandbox.server import run_sandbox


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dispatcher.sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--records-dir", default=".dispatcher/sandbox")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--api-key", default=None, help="SendGrid API key to accept (default: generated)")
    parser.add_argument("--webhook-url", default=None, help="where to POST signed SendGrid events")
    parser.add_argument("--events-interval", type=float, default=None,
                        help="post events for accepted mail every N seconds (needs --webhook-url)")
    args = parser.parse_args(argv)
    run_sandbox(args.host, args.port, args.records_dir, args.workers, api_key=args.api_key,
                webhook_url=args.webhook_url, events_interval=args.events_interval)


if __name__ == "__main__":
    main()
