"""Joomla 5.3 Web Services users emulator (server.py: HTTP and routing; store.py: users, groups,
tokens and Joomla's checks; testing.py: pytest fixtures, the real Joomla tier included)."""

from sandbox.joomla.cli import add_cli
from sandbox.joomla.server import Call, JoomlaEmulator
from sandbox.joomla.store import CORE_GROUPS, Store


def sandbox_site(secret: str) -> JoomlaEmulator:
    """A fresh site for the sandbox. Joomla makes its API user's token itself, so `secret` is not used."""
    return JoomlaEmulator()


def sandbox_connection(site: JoomlaEmulator) -> dict:
    """The CMS connection's fields for a started site: the API user's Joomla API token as password."""
    return {"host": site.url, "password": site.api_token}


__all__ = ["CORE_GROUPS", "Call", "JoomlaEmulator", "Store", "add_cli", "sandbox_connection", "sandbox_site"]
