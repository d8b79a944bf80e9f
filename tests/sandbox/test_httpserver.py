"""The CMS emulators' HTTP server: connections kept alive, as a real CMS's web server keeps them, and all of
them ended by stop()."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

import requests

from sandbox.httpserver import LoopbackServer


class Echo(LoopbackServer):
    """Answers every request with the handler thread that served it."""

    def answer(self, method, path, query, body, headers):
        return 200, [("Content-Type", "text/plain")], str(threading.get_ident()).encode(), False


def test_a_session_sends_its_requests_over_one_kept_alive_connection():
    with Echo() as server, requests.Session() as session:
        answers = [session.get(f"{server.url}/n/{n}", timeout=5) for n in range(3)]
    assert all(a.status_code == 200 and a.headers.get("Connection", "").lower() != "close" for a in answers)
    assert len({a.text for a in answers}) == 1  # one connection, so one handler thread, for all three


def test_stop_ends_the_connections_still_open():
    server = Echo()
    server.start()
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as client:
        client.sendall(b"GET /x HTTP/1.1\r\nHost: emulator\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += client.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200")
        server.stop()
        rest = answer.split(b"\r\n\r\n", 1)[1]
        while chunk := client.recv(4096):  # the body, then the end of the stream (a timeout fails the test)
            rest += chunk
    assert rest.isdigit()
