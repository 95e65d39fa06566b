"""``python -m bot.slack_emulator --port 3999``: the emulator on its own, for the local sandbox."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading

from bot.slack_emulator.server import SlackEmulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bot.slack_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3999)
    parser.add_argument("--token", help="the only bot token accepted (default: any xoxb-)")
    parser.add_argument(
        "--usergroup",
        action="append",
        default=[],
        metavar="S0ID=U1,U2",
        help="seed a user group (repeatable)",
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with SlackEmulator(host=args.host, port=args.port, token=args.token) as slack:
        for spec in args.usergroup:
            group_id, _, members = spec.partition("=")
            slack.add_usergroup(group_id, [m for m in members.split(",") if m])
        print(f"Slack emulator listening: STEPUP_SLACK_API_URL={slack.api_url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


if __name__ == "__main__":
    main()
