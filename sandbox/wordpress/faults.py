"""Fault injection (`inject`) and the record of every call (`calls`), passwords and secrets left out."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from .php import _parse_php_form
from .responses import _html_response, _json_response, _Response


@dataclass
class Call:
    """One request the emulator received. The Authorization header is kept without its secret."""

    method: str
    path: str
    query: dict
    body: dict | None
    headers: dict
    status: int | None = None
    lost: bool = False


@dataclass
class _Injection:
    method: str | None
    path: str | None
    status: int | None
    times: int
    delay: float
    lose_answer: bool
    retry_after: float | int | str | None
    body: Any
    body_contains: str | None = None

    def matches(self, method: str, raw_path: str, route: str | None, body_bytes: bytes = b"") -> bool:
        if self.method and self.method.upper() != method:
            return False
        if self.body_contains is not None and self.body_contains.encode() not in body_bytes:
            return False
        if self.path is None:
            return True
        if self.path.endswith("*"):
            prefix = self.path[:-1]
            return raw_path.startswith(prefix) or (route or "").startswith(prefix)
        return self.path in (raw_path, route)


class FaultInjection:
    """WordPressEmulator's injections and call record (its __init__ in server.py sets the state)."""

    _lock: threading.RLock
    calls: list[Call]
    _injections: list[_Injection]
    duplicate_check_gap: float = 0.0  # seconds between wp_insert_user's duplicate checks and its INSERT

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def inject(self, *, method: str | None = None, path: str | None = None, status: int | None = 503,
               times: int = 1, delay: float = 0.0, lose_answer: bool = False,
               retry_after: float | int | str | None = None, body: Any = None,
               body_contains: str | None = None) -> None:
        """For the next `times` calls matching method/path (route like "/wp/v2/users" or raw path like
        "/wp-login.php"; a trailing "*" matches a prefix) and, when given, whose raw request body
        contains `body_contains` (e.g. one contact's email): wait `delay` seconds, then either answer
        `status` (None: answer normally), or with lose_answer=True perform the request for real and
        drop the connection without answering."""
        with self._lock:
            self._injections.append(_Injection(method, path, status, times, delay, lose_answer,
                                               retry_after, body, body_contains))

    def widen_duplicate_check(self, seconds: float) -> None:
        """WordPress checks for a taken login and email and then INSERTs, with no lock in between (and no
        unique key on either column): keep that gap open `seconds` (0 closes it), so creates that arrive
        together all pass the checks and each makes an account, as they can on a busy real site."""
        with self._lock:
            self.duplicate_check_gap = max(0.0, float(seconds))

    def clear_faults(self) -> None:
        """Forget every injection not used up yet."""
        with self._lock:
            self._injections.clear()

    def _take_injection(self, method: str, raw_path: str, route: str | None,
                        body_bytes: bytes = b"") -> _Injection | None:
        with self._lock:
            for injection in self._injections:
                if injection.times > 0 and injection.matches(method, raw_path, route, body_bytes):
                    injection.times -= 1
                    if injection.times == 0:
                        self._injections.remove(injection)
                    return injection
        return None


def _injected_response(injection: _Injection) -> _Response:
    headers: list[tuple[str, str]] = []
    if injection.retry_after is not None:
        headers.append(("Retry-After", str(injection.retry_after)))
    if injection.body is None:
        reason = {429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable",
                  504: "Gateway Timeout"}.get(injection.status, "Error")
        response = _html_response(injection.status, f"<html><body><h1>{injection.status} {reason}</h1>"
                                                    "</body></html>")
    elif isinstance(injection.body, dict | list):
        response = _json_response(injection.status, injection.body)
    else:
        response = _html_response(injection.status, str(injection.body))
    response.headers.extend(headers)
    return response


def _redacted_headers(headers: dict) -> dict:
    redacted = dict(headers)
    for name in list(redacted):
        if name.lower() in ("authorization", "cookie"):
            scheme = str(redacted[name]).split(" ", 1)[0]
            redacted[name] = f"{scheme} <redacted>"
    return redacted


def _decode_body_for_record(body_bytes: bytes, headers: dict) -> dict | None:
    if not body_bytes:
        return None
    text = body_bytes.decode("utf-8", "replace")
    if headers.get("content-type", "").startswith("application/json"):
        try:
            parsed = json.loads(text)
            body = parsed if isinstance(parsed, dict) else {"_": parsed}
        except ValueError:
            return {"_raw": text}
    else:
        body = _parse_php_form(text)
    return _redact_body(body)


def _redact_body(body: dict | None) -> dict | None:
    """Passwords sent to the emulator are not kept in the call record."""
    if body is None:
        return None
    return {k: ("<redacted>" if k in ("password", "pass1", "pass2") else v) for k, v in body.items()}

