"""`python -m sandbox civicrm ...`: serve the emulator on its own until Ctrl-C."""

from __future__ import annotations

import argparse

from sandbox.cli import add_common_options, serve

from .server import CiviCRMEmulator


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register the `civicrm` subcommand (sandbox/__main__.py calls this)."""
    parser = subparsers.add_parser("civicrm", help="run the CiviCRM APIv4 emulator",
                                   description="Serve the CiviCRM APIv4 REST emulator until Ctrl-C.")
    add_common_options(parser, system="civicrm", port=8001)
    parser.add_argument("--api-key", default="sandbox-api-key", help="API key of the API contact (id 1)")
    parser.add_argument("--site-key", default=None, help="CIVICRM_SITE_KEY; when set, X-Civi-Key is required")
    parser.add_argument("--generic-errors", action="store_true",
                        help="answer errors with 'Sorry an error occurred' (user without 'view debug output')")
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    emulator = CiviCRMEmulator(api_key=args.api_key, site_key=args.site_key,
                               detailed_errors=not args.generic_errors)
    return serve(emulator, args, lambda e: (
        f"CiviCRM emulator on {e.url} (endpoint {e.endpoint_template}, "
        f"{len(e.store.table('Contact'))} contacts)"))
