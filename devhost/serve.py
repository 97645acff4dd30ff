"""``python -m catalog serve``: host the function app locally where Core Tools are not installed.

Prints the base URL and the function list like ``func start``, logs one line per HTTP request
and per trigger invocation, and stops cleanly on Ctrl-C or SIGTERM (pollers stop, messages in
flight finish, the server closes). With ``--azurite DIR`` it also starts Azurite on the default
ports 10000-10002 (reusing one already listening there) and stops it on exit.
"""
from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from devhost.azurite import AzuriteError, start_or_reuse
from devhost.functions import AppLoadError
from devhost.host import DevHost
from devhost.settings import HostConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m catalog serve",
        description="Host the functions of function_app.py locally: HTTP routes, queue and timer triggers.")
    p.add_argument("--port", type=int, default=None,
                   help="HTTP port (default: local.settings.json Host.LocalHttpPort, else 7071; 0 = any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--app", default="function_app",
                   help="app module name, file or directory, optionally :attr (default: function_app "
                        "from the current directory)")
    p.add_argument("--settings", default=None,
                   help="local.settings.json path (default: next to the app; missing is fine)")
    p.add_argument("--no-queues", action="store_true", help="do not poll queue triggers")
    p.add_argument("--no-timers", action="store_true", help="do not run timer triggers")
    p.add_argument("--max-polling-interval", type=float, default=None, metavar="SECONDS",
                   help="cap the idle queue polling back-off (default: host.json maxPollingInterval)")
    p.add_argument("--azurite", default=None, metavar="DIR",
                   help="start Azurite with its data in DIR on ports 10000-10002 (reuse one already "
                        "running there) and stop it on exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter("[%(asctime)s.%(msecs)03dZ] %(message)s", "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        # The SDKs log every HTTP exchange at INFO.
        logging.getLogger("azure").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    azurite = None
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        if stop.is_set():  # a second Ctrl-C: stop waiting for work in flight
            raise SystemExit(130)
        print(f"\n{signal.Signals(signum).name}: stopping", file=sys.stderr, flush=True)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    host = DevHost(args.app, settings_file=args.settings, host=args.host, port=args.port,
                   queues=not args.no_queues, timers=not args.no_timers,
                   max_polling_interval=args.max_polling_interval)
    try:
        if args.azurite:
            location = Path(args.azurite)
            azurite = start_or_reuse(location, log=location / "azurite.log")
            print("Azurite: " + (f"started on 10000-10002, data in {location}" if azurite
                                 else "reusing the one listening on 10000-10002"), flush=True)
        try:
            host.start()
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                print(f"serve: port {host.requested_port} is in use; pass --port", file=sys.stderr)
                return 1
            raise
        print(f"\n{host.describe()}\nFunctions dev host listening on {host.base_url} "
              "(auth levels are not enforced locally). Ctrl-C to stop.\n", flush=True)
        while not stop.wait(0.5):
            pass
        return 0
    except (AppLoadError, HostConfigError, AzuriteError) as e:
        print(f"serve: {e}", file=sys.stderr)
        return 1
    finally:
        try:
            host.stop()
        finally:  # even when a second Ctrl-C cuts the host's shutdown short
            if azurite is not None:
                azurite.stop()
            for s, h in previous.items():
                signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
