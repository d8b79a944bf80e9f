"""Serving an emulator on loopback: start on a free port, stop, use as a context manager.

The CMS emulators share this. Each sets `server_version` and `thread_name` and answers requests in
`answer(method, path, query_pairs, body, headers) -> (status, headers, body, lost)`, where `lost`
means the request was carried out but the answer is never sent (the connection is dropped).

Connections are kept alive (HTTP/1.1), as the web server in front of a real CMS keeps them: a client's
session sends its requests over one connection, not a new connection (and a new server thread) each.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit


class EmulatorHandler(BaseHTTPRequestHandler):
    """Hands every request to the emulator's `answer` and writes what it says (or drops the connection)."""

    emulator: Any
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection ends eventually

    def setup(self) -> None:
        super().setup()
        # Nagle off: an answer's headers and body (two writes) leave at once, with no delayed-ACK stall on a
        # kept-alive connection
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.emulator._connections(add=self.connection)

    def finish(self) -> None:
        self.emulator._connections(discard=self.connection)
        try:
            super().finish()
        except OSError:  # the client has gone
            pass

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


_OPEN_GUARD = threading.Lock()


class LoopbackServer:
    server_version = "Emulator"
    thread_name = "emulator"
    url = ""
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _open: set | None = None  # the kept-alive connections, shut at stop() (each holds a handler thread)

    def _connections(self, *, add: socket.socket | None = None, discard: socket.socket | None = None) -> list:
        with _OPEN_GUARD:
            if self._open is None:
                self._open = set()
            if add is not None:
                self._open.add(add)
            if discard is not None:
                self._open.discard(discard)
            return list(self._open)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host`:`port` (0: a free port) in a thread; returns (and sets) `url`."""
        if self._server is not None:
            return self.url
        handler = type(f"{type(self).__name__}Handler", (EmulatorHandler,),
                       {"emulator": self, "server_version": self.server_version})
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
        for sock in self._connections():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
