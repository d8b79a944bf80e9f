"""CiviCRM APIv4 REST emulator: in-memory, seedable, with fault injection (docs/design.md, contract §8)."""

from .cli import add_cli
from .server import Call, CiviCRMEmulator

__all__ = ["Call", "CiviCRMEmulator", "add_cli"]
