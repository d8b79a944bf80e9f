"""Serving an emulator on loopback: start on a free port, stop, use as a context manager.

The CMS emulators share this. Each sets `server_version` and `thread_name` and answers requests in
`answer(method, path, query_pairs, body, headers) -> (status, headers, body, lost)`, where `lost`
means the request was carried out but the answer is never sent (the connection is dropped).

Connections are kept alive (HTTP/1.1, `KeptAliveHandler`, which the CiviCRM emulator's handler builds on too),
as the web server in front of a real site keeps them: a client's session sends its requests over one
connection, not a new connection (and a new server thread) each.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit


class OpenConnections:
    """A server's kept-alive connections, so that stopping it ends them (each holds a handler thread)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._open: set[socket.socket] = set()

    def add(self, connection: socket.socket) -> None:
        with self._guard:
            self._open.add(connection)

    def discard(self, connection: socket.socket) -> None:
        with self._guard:
            self._open.discard(connection)

    def shut_all(self) -> None:
        with self._guard:
            still_open = list(self._open)
        for connection in still_open:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class KeptAliveHandler(BaseHTTPRequestHandler):
    """A request handler whose connections stay open for the client's next request (HTTP/1.1), as the web
    server in front of a real site keeps them. Its server hands it `connections` (OpenConnections)."""

    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle kept-alive connection ends eventually
    connections: OpenConnections

    def setup(self) -> None:
        super().setup()
        # Nagle off: an answer written in two parts (headers, body) leaves at once, with no delayed-ACK stall on
        # a kept-alive connection
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections.add(self.connection)

    def finish(self) -> None:
        self.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:  # the client has gone
            pass


class EmulatorHandler(KeptAliveHandler):
    """Hands every request to the emulator's `answer` and writes what it says (or drops the connection)."""

    emulator: Any
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler API
        pass

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, out_headers, payload, lost = self.emulator.answer(
            self.command, parts.path or "/", parse_qsl(parts.query, keep_blank_values=True), body, headers)
        if lost:  # the request was carried out; the caller never hears about it
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        self.send_response(status)
        for name, value in out_headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve


class LoopbackServer:
    server_version = "Emulator"
    thread_name = "emulator"
    url = ""
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _connections: OpenConnections | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host`:`port` (0: a free port) in a thread; returns (and sets) `url`."""
        if self._server is not None:
            return self.url
        self._connections = OpenConnections()
        handler = type(f"{type(self).__name__}Handler", (EmulatorHandler,),
                       {"emulator": self, "server_version": self.server_version, "connections": self._connections})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        bound_host, bound_port = self._server.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        server = self._server
        # A short poll interval keeps stop() quick (tests start and stop many emulators).
        self._thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05),
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        self._connections.shut_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
