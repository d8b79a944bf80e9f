"""Serving an emulator on loopback: start on a free port, stop, use as a context manager.

The CMS emulators share this; each sets `handler_class` (a BaseHTTPRequestHandler whose requests
go to the class attribute `emulator`) and `thread_name`.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LoopbackServer:
    handler_class: type[BaseHTTPRequestHandler]
    thread_name = "emulator"
    url = ""
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on `host`:`port` (0: a free port) in a thread; returns (and sets) `url`."""
        if self._server is not None:
            return self.url
        handler = type(self.handler_class.__name__, (self.handler_class,), {"emulator": self})
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
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
