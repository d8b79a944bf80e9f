"""The answer every part of the emulator builds: status, body and headers, as JSON or HTML."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# What WordPress's fatal-error handler shows (a TypeError, or a bug in the emulator).
_CRITICAL_ERROR_MESSAGE = (
    '<p>There has been a critical error on this website.</p><p><a href="https://wordpress.org/support/'
    'article/faq-troubleshooting/">Learn more about troubleshooting WordPress.</a></p>'
)


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


def _json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> _Response:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return _Response(status, body, [("Content-Type", "application/json; charset=UTF-8"), *(headers or [])])


def _html_response(status: int, text: str) -> _Response:
    return _Response(status, text.encode("utf-8"), [("Content-Type", "text/html; charset=UTF-8")])
