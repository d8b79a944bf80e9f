"""Drupal 7 + Services 3.x users emulator (server.py), its command line and its pytest fixtures (testing.py)."""

from __future__ import annotations

import argparse

from sandbox.cli import add_common_options, serve
from sandbox.drupal7.server import Drupal7Emulator

__all__ = ["Drupal7Emulator", "add_cli", "sandbox_connection", "sandbox_site"]


def sandbox_site(secret: str, login: str = "cmsuser_api") -> Drupal7Emulator:
    """A fresh site for the sandbox (sandbox/emulators.py): its API user `login` has the password `secret`."""
    return Drupal7Emulator(login=login, password=secret)


def sandbox_connection(site: Drupal7Emulator) -> dict:
    """The CMS connection's fields for a started site: the API user and the endpoint's path."""
    return {"host": site.url, "login": site.login, "password": site.password, "extra": {"endpoint": site.endpoint}}


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `python -m sandbox drupal7 ...`."""
    parser = subparsers.add_parser("drupal7", help="run the Drupal 7 + Services users emulator",
                                   description="Serve the Drupal 7 + Services 3.x users emulator until Ctrl-C.")
    add_common_options(parser, system="drupal7", port=8007)
    parser.add_argument("--login", default="cmsuser_api", help="the API user's name (uid 2)")
    parser.add_argument("--password", default="api-password", help="the API user's password")
    parser.add_argument("--endpoint", default="api", help="the Services endpoint's path")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    emulator = Drupal7Emulator(login=args.login, password=args.password, endpoint=args.endpoint)
    return serve(emulator, args, lambda e: f"Drupal 7 emulator on {e.url} (endpoint /{e.endpoint}, API user "
                                           f"{args.login!r}, {len(e.users)} users)")
