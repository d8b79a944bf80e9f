"""A fault-injecting HTTP reverse proxy, for putting the emulators' failure injection in front of real sites.

The emulators (sandbox.wordpress, sandbox.civicrm) can fail on demand with `inject(...)`; a real CiviCRM,
Drupal or Joomla cannot. `FaultProxy` sits between the code under test and such a site, forwards every
request, and applies the same kinds of faults::

    with FaultProxy("http://127.0.0.1:8080") as proxy:
        proxy.inject(entity="UFMatch", action="save", status=503, retry_after=5)
        proxy.inject(body_contains="jdoe@example.test", lose_answer=True)
        ... point the client at proxy.url ...
        assert [c.status for c in proxy.calls] == [...]

Forwarding: method, path and query, the body and every header except the hop-by-hop ones go to the target;
Host is rewritten to the target's. The answer is buffered, so Transfer-Encoding is dropped and
Content-Length set to the body relayed. Location / Content-Location (and URLs in Link) that point at the
target are rewritten to the proxy, since real CMSs bake their own URL into redirects. One request per
connection (Connection: close) on both sides.

Faults (`inject`) are taken in the order given, the first one matching a request applies, and each is used
up after `times` requests. A fault waits `delay` seconds, then either answers `status` without forwarding,
or (`lose_answer=True`) forwards the request, lets the target carry it out, and drops the client's
connection unanswered; `status=None` only delays (and adds `retry_after` / `headers` to the real answer).

`calls` records every request; credentials (Authorization, X-Civi-Auth, X-Civi-Key, X-Joomla-Token, Cookie,
Proxy-Authorization headers; `_authx`, `api_key`, `key`, `_authxSiteKey` query parameters) are redacted.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlsplit

__all__ = ["FaultProxy", "ProxyCall", "civicrm_route"]

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade",
})
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-civi-auth", "x-civi-key",
                            "x-joomla-token", "cookie"})
SECRET_QUERY_PARAMS = frozenset({"_authx", "_authxsitekey", "api_key", "key"})
REDACTED = "<redacted>"
API4_ROUTE_RE = re.compile(r"(?:^|/)civicrm/ajax/api4/([^/?&#]+)/([^/?&#]+)/?$")
_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
            408: "Request Timeout", 409: "Conflict", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}


def civicrm_route(entity: str, action: str) -> str:
    """The text naming one CiviCRM APIv4 call, e.g. "civicrm/ajax/api4/UFMatch/save".

    It is a substring of the path form (`/civicrm/ajax/api4/UFMatch/save`) and of the unencoded query
    form (`?q=civicrm/ajax/api4/UFMatch/save`), so it can be given as `path=` prefix material or as
    `query_contains=`; `inject(entity=..., action=...)` matches both forms and the %2F-encoded one too.
    """
    return f"civicrm/ajax/api4/{entity}/{action}"


def api4_call(path: str, query: str) -> tuple[str, str] | None:
    """(entity, action) of the CiviCRM APIv4 call a request makes, from its path or its q= / task= query
    parameter (Drupal/WordPress `?q=civicrm/...`, Joomla `?task=civicrm/...`), or None."""
    match = API4_ROUTE_RE.search(unquote(path))
    if match is None:
        params = dict(parse_qsl(query, keep_blank_values=True))
        for name in ("q", "task"):
            if params.get(name):
                match = API4_ROUTE_RE.search("/" + params[name].lstrip("/"))
                if match is not None:
                    break
    return (match.group(1), match.group(2)) if match is not None else None


@dataclass
class ProxyCall:
    """One request the proxy received.

    `status` is what the client was answered (None when the answer was lost on purpose);
    `target_status` what the target answered (None when not forwarded or the target was unreachable).
    `headers` are the request's headers with credentials redacted; `query` is the raw query string with
    credential parameters redacted.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int | None = None
    injected: bool = False
    forwarded: bool = False
    target_status: int | None = None
    lost: bool = False
    error: str | None = None


@dataclass
class Fault:
    method: str | None
    path: str | None
    query_contains: str | None
    body_contains: str | bytes | None
    entity: str | None
    action: str | None
    status: int | None
    times: int | None
    delay: float
    lose_answer: bool
    retry_after: Any
    body: Any
    content_type: str | None
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, method: str, path: str, query: str, body: bytes) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path is not None:
            if self.path.endswith("*"):
                if not path.startswith(self.path[:-1]):
                    return False
            elif path != self.path:
                return False
        if self.query_contains is not None and not _contains(query, self.query_contains):
            return False
        if self.body_contains is not None:
            needle = self.body_contains
            if isinstance(needle, bytes):
                if needle not in body:
                    return False
            elif not _contains(body.decode("utf-8", "replace"), needle):
                return False
        if self.entity is not None or self.action is not None:
            call = api4_call(path, query)
            if call is None:
                return False
            if self.entity not in (None, call[0]) or self.action not in (None, call[1]):
                return False
        return True


def _contains(raw: str, needle: str) -> bool:
    """Substring of the raw text, or of its URL-decoded form (form bodies encode '@' as %40, '/' as %2F)."""
    if needle in raw:
        return True
    try:
        return needle in unquote_plus(raw)
    except Exception:  # pragma: no cover - unquote_plus is lenient; be safe anyway
        return False


def _redact_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    record: dict[str, str] = {}
    for name, value in headers:
        value = REDACTED if name.lower() in SECRET_HEADERS else value
        record[name] = f"{record[name]}, {value}" if name in record else value
    return record


def _redact_query(query: str) -> str:
    if not query:
        return query
    parts = []
    for item in query.split("&"):
        name = unquote_plus(item.split("=", 1)[0])
        parts.append(f"{item.split('=', 1)[0]}={quote(REDACTED)}" if name.lower() in SECRET_QUERY_PARAMS
                     else item)
    return "&".join(parts)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


class FaultProxy:
    """A reverse proxy in front of `target_base_url` that can fail on demand (see the module docstring).

    `target_base_url` may carry a path: with "http://site/drupal", a request for /user/login goes to
    http://site/drupal/user/login. `rewrite_origins` lists further URLs the site knows itself by (its
    configured base URL when that differs from the address used to reach it); redirects to them are
    rewritten to the proxy as well. `timeout` bounds each forwarded request; `verify=False` accepts any
    certificate from an https target.
    """

    def __init__(self, target_base_url: str, *, timeout: float = 60.0, verify: bool = True,
                 rewrite_origins: list[str] | tuple[str, ...] = ()):
        parts = urlsplit(target_base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"target_base_url must be an http(s) URL, got {target_base_url!r}")
        self.target_base_url = target_base_url.rstrip("/")
        self.timeout = timeout
        self.verify = verify
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or _default_port(parts.scheme)
        self._host_header = parts.netloc.rpartition("@")[2]
        self._base_path = parts.path.rstrip("/")
        self._target_prefixes = self._prefixes([target_base_url, *rewrite_origins])
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._calls: list[ProxyCall] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    def __repr__(self) -> str:
        return f"FaultProxy({self.target_base_url!r}, url={self.url!r})"

    @staticmethod
    def _prefixes(urls: list[str] | tuple[str, ...]) -> list[str]:
        """Every spelling of each URL's origin + base path that a Location may use, longest first."""
        prefixes: set[str] = set()
        for url in urls:
            parts = urlsplit(url)
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            port = parts.port or _default_port(parts.scheme)
            path = parts.path.rstrip("/")
            authorities = {f"{host}:{port}"}
            if port == _default_port(parts.scheme):
                authorities.add(host)
            for authority in authorities:
                prefixes.add(f"{parts.scheme}://{authority}{path}")
                prefixes.add(f"//{authority}{path}")
        return sorted(prefixes, key=len, reverse=True)

    # ------------------------------------------------------------------ faults and records

    def inject(self, *, method: str | None = None, path: str | None = None, query_contains: str | None = None,
               body_contains: str | bytes | None = None, entity: str | None = None, action: str | None = None,
               status: int | None = 503, times: int | None = 1, delay: float = 0.0, lose_answer: bool = False,
               retry_after: Any = None, body: Any = None, content_type: str | None = None,
               headers: dict[str, str] | None = None) -> None:
        """For the next `times` requests (None: every one until clear_faults) matching all the criteria
        given — `method`; `path` (the path the client asked the proxy for, without query; exact, or a prefix
        with a trailing "*"); `query_contains` / `body_contains` (substring of the raw query string / request
        body, or of its URL-decoded form); `entity` / `action` (a CiviCRM APIv4 call, in the path form
        /civicrm/ajax/api4/E/a or the ?q= / ?task= query form, %2F-encoded or not) — wait `delay` seconds,
        then:

        * lose_answer=True: forward the request (the target performs it) and drop the client's connection
          without an answer;
        * status=None: forward it and relay the real answer;
        * otherwise answer `status` without forwarding: `body` (dict/list as JSON, str or bytes) or, by
          default, a short JSON error for 4xx/5xx and nothing for other statuses; `content_type` overrides
          the content type.

        `retry_after` adds a Retry-After header and `headers` further headers, to the injected or real answer.
        """
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for every matching request)")
        fault = Fault(method, path, query_contains, body_contains, entity, action, status, times, delay,
                      lose_answer, retry_after, body, content_type, dict(headers or {}))
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Forget every fault not used up yet."""
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        """How many injected faults are not used up yet."""
        with self._lock:
            return len(self._faults)

    @property
    def calls(self) -> list[ProxyCall]:
        """A snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._calls)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def _take_fault(self, method: str, path: str, query: str, body: bytes) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path, query, body):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _record(self, call: ProxyCall) -> None:
        with self._lock:
            self._calls.append(call)

    # ------------------------------------------------------------------ lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None:
            return self.url  # type: ignore[return-value]
        handler = type("FaultProxyHandler", (_Handler,), {"proxy": self})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        bound_host, bound_port = self._server.server_address[:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        self.url = f"http://{shown}:{bound_port}"
        server = self._server
        self._thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05),
                                        name=f"faultproxy-{bound_port}", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ forwarding

    def _forward(self, method: str, target: str, headers: list[tuple[str, str]],
                 body: bytes | None) -> tuple[int, str, list[tuple[str, str]], bytes]:
        if self._scheme == "https":
            context = ssl.create_default_context()
            if not self.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=context)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", self._host_header)
            for name, value in headers:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.putheader("Connection", "close")
            conn.endheaders(body if body else None)
            response = conn.getresponse()
            data = b"" if method == "HEAD" else response.read()
            return response.status, response.reason, list(response.getheaders()), data
        finally:
            conn.close()

    def _rewrite_url(self, value: str) -> str:
        for prefix in self._target_prefixes:
            if value == prefix or (value.startswith(prefix) and value[len(prefix)] in "/?#"):
                return f"{self.url}{value[len(prefix):]}"
        return value

    def _rewrite_link(self, value: str) -> str:
        return re.sub(r"<([^>]*)>", lambda m: f"<{self._rewrite_url(m.group(1))}>", value)

    def _relay_headers(self, headers: list[tuple[str, str]], *, keep_length: bool = False) -> list[tuple[str, str]]:
        """The target's headers to pass on: no hop-by-hop ones, no Content-Length (the body is buffered and
        measured again) unless `keep_length` (HEAD), redirects to the target pointed at the proxy."""
        connection_tokens = {token.strip().lower() for name, value in headers if name.lower() == "connection"
                             for token in value.split(",")}
        relayed = []
        for name, value in headers:
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in connection_tokens or (lower == "content-length" and not keep_length):
                continue
            if lower in ("location", "content-location"):
                value = self._rewrite_url(value)
            elif lower == "link":
                value = self._rewrite_link(value)
            relayed.append((name, value))
        return relayed


def _injected_answer(fault: Fault) -> tuple[bytes, str | None]:
    status = fault.status or 200
    body = fault.body
    if body is None:
        if status < 400:
            return b"", fault.content_type
        payload = {"error": _REASONS.get(status, "Error"), "status": status, "injected_by": "FaultProxy"}
        return json.dumps(payload).encode(), fault.content_type or "application/json"
    if isinstance(body, dict | list):
        return json.dumps(body).encode(), fault.content_type or "application/json"
    if isinstance(body, bytes):
        return body, fault.content_type or "application/octet-stream"
    return str(body).encode(), fault.content_type or "text/html; charset=utf-8"


class _Handler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    server_version = "FaultProxy"
    sys_version = ""
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler API
        pass

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        return self.rfile.read(int(length)) if int(length) > 0 else b""

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _answer(self, status: int, reason: str | None, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status, reason or _REASONS.get(status))
        names = {name.lower() for name, _ in headers}
        for name, value in headers:
            self.send_header(name, value)
        if "date" not in names:
            self.send_header("Date", self.date_time_string())
        if self.command != "HEAD" or "content-length" not in names:
            if not (status in (204, 304) or 100 <= status < 200):
                self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.close_connection = True

    def _serve(self) -> None:
        proxy = self.proxy
        method = self.command
        parts = urlsplit(self.path)
        path, query = parts.path or "/", parts.query
        raw_headers = list(self.headers.items())
        call = ProxyCall(method=method, path=path, query=_redact_query(query),
                         headers=_redact_headers(raw_headers))
        try:
            body = self._read_body()
        except (ValueError, OSError) as exc:
            call.error = f"could not read the request body: {exc}"
            call.status = 400
            proxy._record(call)
            self._answer(400, None, [("Content-Type", "text/plain")], b"bad request body\n")
            return
        fault = proxy._take_fault(method, path, query, body or b"")
        call.injected = fault is not None
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        extra: list[tuple[str, str]] = []
        if fault is not None:
            if fault.retry_after is not None:
                extra.append(("Retry-After", str(fault.retry_after)))
            extra.extend(fault.headers.items())

        if fault is not None and fault.status is not None and not fault.lose_answer:
            data, content_type = _injected_answer(fault)
            headers = [("Content-Type", content_type)] if content_type else []
            call.status = fault.status
            proxy._record(call)
            self._answer(fault.status, None, headers + extra, data)
            return

        connection_tokens = {token.strip().lower() for name, value in raw_headers
                             if name.lower() == "connection" for token in value.split(",")}
        forward_headers = [(name, value) for name, value in raw_headers
                           if name.lower() not in HOP_BY_HOP and name.lower() not in connection_tokens
                           and name.lower() not in ("host", "content-length")]
        target = proxy._base_path + path + (f"?{query}" if query else "")
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        try:
            status, reason, headers, data = proxy._forward(method, target, forward_headers, body)
        except (OSError, http.client.HTTPException) as exc:
            call.error = f"{type(exc).__name__}: {exc}"
            call.status = 502
            proxy._record(call)
            payload = json.dumps({"error": "Bad Gateway", "status": 502, "detail": call.error,
                                  "proxy": "FaultProxy"}).encode()
            self._answer(502, None, [("Content-Type", "application/json")], payload)
            return
        call.forwarded = True
        call.target_status = status
        if fault is not None and fault.lose_answer:
            call.lost = True
            proxy._record(call)
            self._drop()
            return
        call.status = status
        proxy._record(call)
        relayed = proxy._relay_headers(headers, keep_length=method == "HEAD")
        if extra:
            replaced = {name.lower() for name, _ in extra}
            relayed = [(n, v) for n, v in relayed if n.lower() not in replaced] + extra
        self._answer(status, reason, relayed, data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve
