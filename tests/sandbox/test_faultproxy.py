"""sandbox.faultproxy: forwarding to a target, fault injection in front of it, and the call record.

The target is a tiny local http.server that records what reached it, so every test can tell what the
proxy forwarded from what it answered by itself.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from sandbox.faultproxy import FaultProxy, civicrm_route

TIMEOUT = 10


class Target:
    """A local server that records each request (method, path with query, headers, body) and answers:

    * /status/NNN          -> status NNN with a small JSON body
    * /redirect?to=URL     -> 302 with Location: URL ("{target}" replaced by the target's own URL)
    * /chunked             -> 200 sent with Transfer-Encoding: chunked
    * anything else        -> 200 (201 for POST) echoing what it received, two Set-Cookie headers
    """

    def __init__(self) -> None:
        self.received: list[dict] = []
        self._lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler API
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with target._lock:
                    target.received.append({"method": self.command, "path": self.path,
                                            "headers": dict(self.headers.items()), "body": body})
                parts = urlsplit(self.path)
                query = dict(parse_qsl(parts.query))
                if parts.path == "/chunked":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for chunk in (b"hello ", b"chunked ", b"world"):
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return
                headers = [("Content-Type", "application/json")]
                if parts.path.startswith("/status/"):
                    status = int(parts.path.rsplit("/", 1)[1])
                    payload = {"target_status": status}
                elif parts.path.endswith("/redirect"):
                    status = 302
                    payload = {}
                    headers.append(("Location", query["to"].replace("{target}", target.url)))
                    headers.append(("Link", f'<{target.url}/wp-json/>; rel="https://api.w.org/"'))
                else:
                    status = 201 if self.command == "POST" else 200
                    payload = {"method": self.command, "path": self.path, "body": body.decode()}
                    headers += [("X-Target", "yes"), ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/")]
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=lambda: self._server.serve_forever(poll_interval=0.05),
                                        daemon=True)
        self._thread.start()

    @property
    def netloc(self) -> str:
        return urlsplit(self.url).netloc

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def target():
    server = Target()
    yield server
    server.stop()


@pytest.fixture
def proxy(target):
    with FaultProxy(target.url) as running:
        yield running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- forwarding


def test_forwards_method_path_query_body_and_headers_and_relays_the_answer(proxy, target):
    response = requests.post(f"{proxy.url}/echo/x?a=1&b=two%20words", data=b'{"k": "v"}', timeout=TIMEOUT,
                             headers={"Content-Type": "application/json", "X-Custom": "kept",
                                      "Connection": "X-Drop-Me", "X-Drop-Me": "hop", "Keep-Alive": "300"})
    assert response.status_code == 201
    assert response.json() == {"method": "POST", "path": "/echo/x?a=1&b=two%20words", "body": '{"k": "v"}'}
    assert response.headers["X-Target"] == "yes"
    assert response.raw.headers.getlist("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert int(response.headers["Content-Length"]) == len(response.content)

    [seen] = target.received
    assert (seen["method"], seen["path"], seen["body"]) == ("POST", "/echo/x?a=1&b=two%20words", b'{"k": "v"}')
    assert seen["headers"]["X-Custom"] == "kept"
    assert seen["headers"]["Content-Type"] == "application/json"
    assert seen["headers"]["Host"] == target.netloc  # not the proxy's host:port
    assert "X-Drop-Me" not in seen["headers"] and "Keep-Alive" not in seen["headers"]  # hop-by-hop
    assert seen["headers"]["Connection"] == "close"

    [call] = proxy.calls
    assert (call.method, call.path, call.query) == ("POST", "/echo/x", "a=1&b=two%20words")
    assert (call.status, call.target_status, call.injected, call.forwarded) == (201, 201, False, True)


def test_other_methods_and_target_statuses_pass_through(proxy, target):
    assert requests.get(f"{proxy.url}/status/404", timeout=TIMEOUT).status_code == 404
    assert requests.delete(f"{proxy.url}/status/500", timeout=TIMEOUT).json() == {"target_status": 500}
    assert requests.put(f"{proxy.url}/p", data="x", timeout=TIMEOUT).json()["body"] == "x"
    head = requests.head(f"{proxy.url}/h", timeout=TIMEOUT)
    # HEAD keeps the target's Content-Length (the length of the GET body), not 0
    assert head.status_code == 200 and int(head.headers["Content-Length"]) > 0 and head.content == b""
    assert [(r["method"], r["path"]) for r in target.received] == [
        ("GET", "/status/404"), ("DELETE", "/status/500"), ("PUT", "/p"), ("HEAD", "/h")]
    assert [c.status for c in proxy.calls] == [404, 500, 200, 200]


def test_chunked_answer_is_relayed_buffered_with_a_content_length(proxy):
    response = requests.get(f"{proxy.url}/chunked", timeout=TIMEOUT)
    assert response.content == b"hello chunked world"
    assert "Transfer-Encoding" not in response.headers
    assert response.headers["Content-Length"] == str(len(b"hello chunked world"))


def test_chunked_request_body_is_forwarded_with_a_content_length(proxy, target):
    response = requests.post(f"{proxy.url}/echo", data=iter([b"part1-", b"part2"]), timeout=TIMEOUT)
    assert response.json()["body"] == "part1-part2"
    assert target.received[0]["headers"]["Content-Length"] == "11"
    assert "Transfer-Encoding" not in target.received[0]["headers"]


def test_target_base_path_is_prepended(target):
    with FaultProxy(target.url + "/site/") as proxy:
        response = requests.get(f"{proxy.url}/user/login?x=1", timeout=TIMEOUT)
    assert response.json()["path"] == "/site/user/login?x=1"


def test_unreachable_target_answers_502_and_records_the_error():
    with FaultProxy(f"http://127.0.0.1:{free_port()}") as proxy:
        response = requests.get(f"{proxy.url}/x", timeout=TIMEOUT)
        [call] = proxy.calls
    assert response.status_code == 502 and response.json()["error"] == "Bad Gateway"
    assert (call.status, call.forwarded, call.target_status) == (502, False, None)
    assert call.error


def test_start_stop_and_context_manager(target):
    proxy = FaultProxy(target.url)
    url = proxy.start()
    assert url == proxy.url and url.startswith("http://127.0.0.1:")
    assert proxy.start() == url  # idempotent
    assert requests.get(url + "/x", timeout=TIMEOUT).status_code == 200
    proxy.stop()
    proxy.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/x", timeout=TIMEOUT)
    with pytest.raises(ValueError):
        FaultProxy("ftp://example.test")


# ----------------------------------------------------------------------------- injection


def test_injected_503_does_not_reach_the_target(proxy, target):
    proxy.inject(method="POST", path="/users", status=503)
    response = requests.post(f"{proxy.url}/users", json={"name": "x"}, timeout=TIMEOUT)
    assert response.status_code == 503
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["status"] == 503
    assert target.received == []
    [call] = proxy.calls
    assert (call.status, call.injected, call.forwarded, call.target_status) == (503, True, False, None)


def test_times_counts_matching_requests_only(proxy, target):
    proxy.inject(path="/users", status=503, times=2)
    statuses = [requests.get(f"{proxy.url}{p}", timeout=TIMEOUT).status_code
                for p in ("/other", "/users", "/users", "/users")]
    assert statuses == [200, 503, 503, 200]
    assert [r["path"] for r in target.received] == ["/other", "/users"]
    assert proxy.pending_faults == 0
    assert [c.injected for c in proxy.calls] == [False, True, True, False]


def test_method_and_path_prefix_matching(proxy):
    proxy.inject(method="delete", path="/wp-json/wp/v2/*", status=500, times=None)
    assert requests.get(f"{proxy.url}/wp-json/wp/v2/users/3", timeout=TIMEOUT).status_code == 200
    assert requests.delete(f"{proxy.url}/wp-json/wp/v2/users/3", timeout=TIMEOUT).status_code == 500
    assert requests.delete(f"{proxy.url}/wp-json/wp/v2/users/4?force=true", timeout=TIMEOUT).status_code == 500
    assert requests.delete(f"{proxy.url}/wp-json/other", timeout=TIMEOUT).status_code == 200
    proxy.inject(path="/exact", status=500, times=None)
    assert requests.get(f"{proxy.url}/exact/more", timeout=TIMEOUT).status_code == 200
    assert requests.get(f"{proxy.url}/exact?x=1", timeout=TIMEOUT).status_code == 500


def test_times_none_lasts_until_clear_faults(proxy):
    proxy.inject(status=503, times=None)
    assert [requests.get(f"{proxy.url}/x", timeout=TIMEOUT).status_code for _ in range(3)] == [503] * 3
    assert proxy.pending_faults == 1
    proxy.clear_faults()
    assert proxy.pending_faults == 0
    assert requests.get(f"{proxy.url}/x", timeout=TIMEOUT).status_code == 200
    with pytest.raises(ValueError):
        proxy.inject(times=0)


def test_first_matching_fault_applies_in_order(proxy):
    proxy.inject(path="/x", status=500)
    proxy.inject(status=502)
    assert [requests.get(f"{proxy.url}/x", timeout=TIMEOUT).status_code for _ in range(3)] == [500, 502, 200]


def test_body_contains_matches_raw_and_form_encoded_bodies(proxy, target):
    proxy.inject(body_contains="jdoe@example.test", status=500, times=None)
    other = requests.post(f"{proxy.url}/c", json={"email": "other@example.test"}, timeout=TIMEOUT)
    raw = requests.post(f"{proxy.url}/c", json={"email": "jdoe@example.test"}, timeout=TIMEOUT)
    # a form body encodes "@" as %40 (CiviCRM's params=... field)
    form = requests.post(f"{proxy.url}/c", data={"params": json.dumps({"email": "jdoe@example.test"})},
                         timeout=TIMEOUT)
    assert "%40" in form.request.body and "jdoe@" not in form.request.body
    assert (other.status_code, raw.status_code, form.status_code) == (201, 500, 500)
    assert len(target.received) == 1
    proxy.clear_faults()
    proxy.inject(body_contains=b"\x00binary", status=500)
    assert requests.post(f"{proxy.url}/c", data=b"x\x00binary", timeout=TIMEOUT).status_code == 500


def test_query_contains_matches_the_raw_query(proxy, target):
    proxy.inject(query_contains="action=lostpassword", status=503)
    assert requests.post(f"{proxy.url}/wp-login.php", timeout=TIMEOUT).status_code == 201
    assert requests.post(f"{proxy.url}/wp-login.php?action=lostpassword", timeout=TIMEOUT).status_code == 503
    assert [r["path"] for r in target.received] == ["/wp-login.php"]


def test_civicrm_route_and_query_contains_on_the_q_form(proxy):
    assert civicrm_route("UFMatch", "save") == "civicrm/ajax/api4/UFMatch/save"
    proxy.inject(query_contains=civicrm_route("UFMatch", "save"), status=503, times=None)
    assert requests.post(f"{proxy.url}/?civiwp=CiviCRM&q=civicrm/ajax/api4/UFMatch/save",
                         timeout=TIMEOUT).status_code == 503
    assert requests.post(f"{proxy.url}/?q=civicrm/ajax/api4/UFMatch/get", timeout=TIMEOUT).status_code == 201


@pytest.mark.parametrize("url, injected", [
    ("/civicrm/ajax/api4/Contact/create", True),                           # Drupal/Standalone path form
    ("/wordpress/civicrm/ajax/api4/Contact/create/", True),                # under a site path
    ("/?civiwp=CiviCRM&q=civicrm/ajax/api4/Contact/create", True),         # WordPress query form
    ("/index.php?q=civicrm%2Fajax%2Fapi4%2FContact%2Fcreate", True),       # %2F-encoded
    ("/index.php?option=com_civicrm&task=civicrm/ajax/api4/Contact/create", True),  # Joomla
    ("/civicrm/ajax/api4/Contact/get", False),
    ("/civicrm/ajax/api4/ContactType/create", False),
    ("/?q=civicrm/ajax/api4/Contact/createX", False),
    ("/civicrm/ajax/api4", False),                                         # multi-call route
    ("/node/civicrm-ajax-api4-Contact-create", False),
])
def test_entity_action_match_both_routing_forms(proxy, target, url, injected):
    proxy.inject(entity="Contact", action="create", status=503)
    response = requests.post(proxy.url + url, timeout=TIMEOUT)
    assert response.status_code == (503 if injected else 201)  # the target answers POST with 201
    assert len(target.received) == (0 if injected else 1)


def test_entity_only_and_action_only(proxy):
    proxy.inject(entity="Group", status=500, times=None)
    proxy.inject(action="delete", status=502, times=None)
    codes = [requests.post(proxy.url + u, timeout=TIMEOUT).status_code for u in (
        "/civicrm/ajax/api4/Group/get", "/?q=civicrm/ajax/api4/Group/save",
        "/civicrm/ajax/api4/Contact/delete", "/civicrm/ajax/api4/Contact/get")]
    assert codes == [500, 500, 502, 201]


def test_lose_answer_performs_the_request_but_the_client_gets_no_answer(proxy, target):
    proxy.inject(path="/users", lose_answer=True)
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{proxy.url}/users", json={"name": "lost"}, timeout=TIMEOUT)
    [seen] = target.received
    assert (seen["method"], seen["body"]) == ("POST", b'{"name": "lost"}')
    [call] = proxy.calls
    assert (call.status, call.target_status, call.injected, call.forwarded, call.lost) == (
        None, 201, True, True, True)
    assert requests.post(f"{proxy.url}/users", json={}, timeout=TIMEOUT).status_code == 201  # used up


def test_delay_then_forward_or_answer(proxy, target):
    proxy.inject(path="/slow", status=None, delay=0.4)
    started = time.monotonic()
    forwarded = requests.get(f"{proxy.url}/slow", timeout=TIMEOUT)
    slow = time.monotonic() - started
    proxy.inject(path="/slow", status=504, delay=0.4)
    started = time.monotonic()
    answered = requests.get(f"{proxy.url}/slow", timeout=TIMEOUT)
    slow_injected = time.monotonic() - started
    assert (forwarded.status_code, answered.status_code) == (200, 504)
    assert slow >= 0.4 and slow_injected >= 0.4
    assert len(target.received) == 1
    assert [(c.injected, c.forwarded) for c in proxy.calls] == [(True, True), (True, False)]


def test_delay_longer_than_the_client_timeout_reads_as_a_timeout(proxy):
    proxy.inject(status=None, delay=1.0)
    with pytest.raises(requests.Timeout):
        requests.get(f"{proxy.url}/x", timeout=0.3)


def test_retry_after_and_headers_on_injected_and_real_answers(proxy):
    proxy.inject(status=429, retry_after=7)
    proxy.inject(status=None, retry_after="120", headers={"X-Extra": "1"})
    limited = requests.get(f"{proxy.url}/x", timeout=TIMEOUT)
    real = requests.get(f"{proxy.url}/x", timeout=TIMEOUT)
    plain = requests.get(f"{proxy.url}/x", timeout=TIMEOUT)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "7")
    assert (real.status_code, real.headers["Retry-After"], real.headers["X-Extra"]) == (200, "120", "1")
    assert "Retry-After" not in plain.headers


def test_injected_bodies_and_content_types(proxy):
    proxy.inject(status=500, body={"is_error": 1, "error_message": "boom"})
    proxy.inject(status=502, body="<html>Bad Gateway</html>")
    proxy.inject(status=200, body=b"%PDF", content_type="application/pdf")
    proxy.inject(status=403, body="denied", content_type="text/plain")
    proxy.inject(status=302, headers={"Location": "/elsewhere"})
    as_json = requests.get(f"{proxy.url}/x", timeout=TIMEOUT)
    as_html = requests.get(f"{proxy.url}/x", timeout=TIMEOUT)
    as_bytes = requests.get(f"{proxy.url}/x", timeout=TIMEOUT)
    as_text = requests.get(f"{proxy.url}/x", timeout=TIMEOUT)
    redirect = requests.get(f"{proxy.url}/x", timeout=TIMEOUT, allow_redirects=False)
    assert as_json.json() == {"is_error": 1, "error_message": "boom"}
    assert as_json.headers["Content-Type"] == "application/json"
    assert (as_html.text, as_html.headers["Content-Type"]) == ("<html>Bad Gateway</html>", "text/html; charset=utf-8")
    assert (as_bytes.status_code, as_bytes.content, as_bytes.headers["Content-Type"]) == (
        200, b"%PDF", "application/pdf")
    assert (as_text.status_code, as_text.text, as_text.headers["Content-Type"]) == (403, "denied", "text/plain")
    assert (redirect.status_code, redirect.headers["Location"], redirect.content) == (302, "/elsewhere", b"")


def test_faults_are_taken_exactly_times_under_concurrency(proxy, target):
    proxy.inject(status=503, times=5)
    with ThreadPoolExecutor(max_workers=10) as pool:
        codes = list(pool.map(lambda n: requests.get(f"{proxy.url}/n{n}", timeout=TIMEOUT).status_code,
                              range(20)))
    assert sorted(codes) == [200] * 15 + [503] * 5
    assert len(proxy.calls) == 20 and len(target.received) == 15


# ----------------------------------------------------------------------------- redirects and secrets


def test_location_and_link_pointing_at_the_target_are_rewritten(proxy, target):
    def location(to):
        response = requests.get(f"{proxy.url}/redirect", params={"to": to}, timeout=TIMEOUT,
                                allow_redirects=False)
        assert response.status_code == 302
        return response.headers["Location"]

    assert location("{target}/wp-login.php?checkemail=confirm") == f"{proxy.url}/wp-login.php?checkemail=confirm"
    assert location("{target}") == proxy.url
    assert location("{target}?x=1") == f"{proxy.url}?x=1"
    assert location("/relative/path") == "/relative/path"
    assert location("https://elsewhere.example/x") == "https://elsewhere.example/x"
    port = urlsplit(target.url).port
    assert location(f"http://127.0.0.1:{port}9/x") == f"http://127.0.0.1:{port}9/x"  # another port
    response = requests.get(f"{proxy.url}/redirect", params={"to": "/"}, timeout=TIMEOUT, allow_redirects=False)
    assert response.headers["Link"] == f'<{proxy.url}/wp-json/>; rel="https://api.w.org/"'
    # following the rewritten redirect stays on the proxy
    followed = requests.get(f"{proxy.url}/redirect", params={"to": "{target}/landing"}, timeout=TIMEOUT)
    assert followed.url == f"{proxy.url}/landing" and followed.status_code == 200


def test_location_rewriting_with_a_base_path_and_extra_origins(target):
    port = urlsplit(target.url).port
    with FaultProxy(target.url + "/site", rewrite_origins=[f"http://localhost:{port}/site"]) as proxy:
        def location(to):
            return requests.get(f"{proxy.url}/redirect", params={"to": to}, timeout=TIMEOUT,
                                allow_redirects=False).headers["Location"]

        assert location("{target}/site/user/1") == f"{proxy.url}/user/1"
        assert location(f"http://localhost:{port}/site/user/2") == f"{proxy.url}/user/2"
        assert location("{target}/sitemap") == f"{target.url}/sitemap"  # outside the base path: untouched
        assert location("{target}/other") == f"{target.url}/other"


def test_secrets_are_redacted_in_calls_but_forwarded(proxy, target):
    secrets = {"Authorization": "Bearer s3cret-bearer", "X-Civi-Auth": "Bearer s3cret-civi",
               "X-Civi-Key": "s3cret-sitekey", "X-Joomla-Token": "s3cret-joomla", "Cookie": "SESS=s3cret-cookie"}
    proxy.inject(path="/injected", status=503)
    requests.post(f"{proxy.url}/api?_authx=Bearer%20s3cret-param&api_key=s3cret-key&keep=1", headers=secrets,
                  timeout=TIMEOUT)
    requests.post(f"{proxy.url}/injected", headers=secrets, timeout=TIMEOUT)
    for name, value in secrets.items():
        assert target.received[0]["headers"][name] == value  # the target gets the real credentials
    assert "_authx=Bearer%20s3cret-param" in target.received[0]["path"]
    for call in proxy.calls:
        for name in secrets:
            assert call.headers[name] == "<redacted>"
    assert "keep=1" in proxy.calls[0].query
    assert "s3cret" not in repr(proxy.calls)
