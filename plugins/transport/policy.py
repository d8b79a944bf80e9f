"""Transport policies with no Airflow import: connection checks, Retry-After, back-off, error text.

The hooks (transport.hook.RestHook) and any asynchronous trigger follow these same rules.
"""


from __future__ import annotations

import logging
import os
import random
import re
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

ErrorFactory = Callable[[str], Exception]
log = logging.getLogger(__name__)

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_SECONDS_RE = re.compile(r"\d+(\.\d+)?")
# str.splitlines() breaks on these; an HTTP header must not contain any of them
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def parse_verify(value: Any, *, conn_id: str, error_cls: ErrorFactory) -> bool | str:
    """`extra.verify` as requests wants it: True/False, or the path of a CA bundle (file or directory)."""
    if isinstance(value, bool):
        return value
    if value is None:
        return True
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:  # a blank field in the UI: the default, like a missing one
            return True
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        if os.path.isfile(text) or os.path.isdir(text):
            return text
        shown = f"'{text[:200]}', which is not an existing file on this machine"
    else:
        shown = f"a value of type {type(value).__name__}"
    raise error_cls(f"Connection '{conn_id}': extra.verify is {shown}. Use true (check TLS certificates, the "
                    "default), false (do not check them; test sites only) or the path of a CA bundle file "
                    "that exists where the tasks run.")


def check_secret(value: str | None, *, field: str, conn_id: str, error_cls: ErrorFactory) -> str | None:
    """The credential unchanged, or an error when it cannot go into an HTTP header as it is.

    Nothing is stripped: a key pasted with a line break or a space is refused, not silently altered.
    None and "" pass (the hooks report a missing credential themselves).
    """
    if not value:
        return value
    problem = None
    if any(ch in _LINE_BREAKS for ch in value):
        problem = "contains a line break"
    elif any(unicodedata.category(ch) == "Cc" for ch in value):
        problem = "contains a control character (e.g. a tab)"
    elif value != value.strip():
        problem = "starts or ends with whitespace"
    if problem:
        raise error_cls(f"Connection '{conn_id}': the {field} {problem}, so it cannot be sent in an HTTP "
                        "header. Enter it again as one line without surrounding spaces (it is not shown here).")
    return value


def site_base_url(host: str | None, schema: str | None, port: int | None, *, conn_id: str,
                  error_cls: ErrorFactory, what: str) -> str:
    """scheme://host[:port][/path] without a trailing slash, from a connection's host, schema and port.

    `what` names the site in messages (e.g. "the CiviCRM site"). An empty host gives "" (the caller decides
    whether it needs one). A host without a scheme takes the schema field only when that is http or https:
    guessing https made SSL failures against http sites.
    """
    host = (host or "").strip()
    if not host:
        return ""
    scheme = (schema or "").strip().lower()
    if "://" not in host:
        if scheme not in ("http", "https"):
            shown = host.rpartition("@")[2]  # never repeat a user:password@ prefix
            raise error_cls(f"Connection '{conn_id}': the host '{shown}' has no scheme. Add https:// (or "
                            f"http:// if {what} has no TLS) in front of it, e.g. https://{shown}.")
        host = f"{scheme}://{host}"
    parts = urlsplit(host)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise error_cls(f"Connection '{conn_id}': the host must be the URL of {what}, starting with "
                        "https:// (or http://), e.g. https://www.example.org.")
    try:
        has_port = parts.port is not None
    except ValueError:
        raise error_cls(f"Connection '{conn_id}': the port in the host is not a number; fix the host "
                        "(e.g. https://www.example.org:8443).") from None
    netloc = parts.netloc
    if port and not has_port:
        netloc = f"{netloc}:{port}"
    return f"{parts.scheme.lower()}://{netloc}{parts.path}".rstrip("/")


def retry_after_seconds(header_value: str | None, *, now: datetime | float | None = None) -> float | None:
    """A `Retry-After` header (delay-seconds or an HTTP date) as seconds from `now` (>= 0), or None.

    `now` is a datetime or a POSIX timestamp (default: the current time); dates in the past give 0.
    """
    if header_value is None:
        return None
    text = str(header_value).strip()
    if not text:
        return None
    if _SECONDS_RE.fullmatch(text):
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC without a claim about the sender's zone
        moment = moment.replace(tzinfo=UTC)
    if now is None:
        reference = time.time()
    elif isinstance(now, datetime):
        reference = (now if now.tzinfo else now.replace(tzinfo=UTC)).timestamp()
    else:
        reference = float(now)
    return max(0.0, moment.timestamp() - reference)


_TAG_RE = re.compile(r"<[^>]+>")
_SCRIPT_RE = re.compile(r"<(script|style)[^>]*>.*?</\1>", re.I | re.S)


def plain_text(text: Any, limit: int = 300) -> str:
    """A server's answer or message as one line of plain text for an error: tags, scripts and runs of
    whitespace removed, cut to `limit` characters."""
    cleaned = _SCRIPT_RE.sub(" ", str(text or ""))
    cleaned = re.sub(r"\s+", " ", _TAG_RE.sub(" ", cleaned)).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def retry_wait(attempt: int, *, backoff: float, jitter: float = 0.0, retry_after: float | None = None) -> float:
    """Seconds to wait before try `attempt + 1`: the server's Retry-After, else exponential back-off."""
    if retry_after is not None:
        return retry_after
    return backoff * (2 ** (attempt - 1)) * (1 + random.random() * jitter)


