"""`python -m sandbox civicrm ...`: serve the emulator on its own until Ctrl-C."""

from __future__ import annotations

import argparse
import time

from .server import CiviCRMEmulator


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the `civicrm` subcommand (sandbox/__main__.py calls this)."""
    parser = subparsers.add_parser("civicrm", help="run the CiviCRM APIv4 emulator",
                                   description="Serve the CiviCRM APIv4 REST emulator until Ctrl-C.")
    parser.add_argument("--seed", help="YAML/JSON seed file (its `civicrm:` part, when present)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--api-key", default="sandbox-api-key", help="API key of the API contact (id 1)")
    parser.add_argument("--site-key", default=None, help="CIVICRM_SITE_KEY; when set, X-Civi-Key is required")
    parser.add_argument("--generic-errors", action="store_true",
                        help="answer errors with 'Sorry an error occurred' (user without 'view debug output')")
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    emulator = CiviCRMEmulator(api_key=args.api_key, site_key=args.site_key,
                               detailed_errors=not args.generic_errors)
    if args.seed:
        emulator.seed_file(args.seed)
    emulator.start(args.host, args.port)
    print(f"CiviCRM emulator on {emulator.url} (endpoint {emulator.endpoint_template}, "
          f"{len(emulator.store.table('Contact'))} contacts); Ctrl-C stops it", flush=True)
    return serve_forever(emulator)


def serve_forever(emulator) -> int:
    """Block until Ctrl-C, then stop the emulator."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0
