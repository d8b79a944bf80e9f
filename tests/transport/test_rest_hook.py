"""RestHook, the one transport: what every hook gets from it, checked with a small hook against a local server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from transport.errors import ProvisioningError
from transport.hook import RestHook
from transport.policy import plain_text


class DemoError(ProvisioningError):
    pass


class DemoHook(RestHook):
    conn_name_attr = "demo_conn_id"
    default_conn_name = "demo_default"
    conn_type = "demo"
    hook_name = "Demo"
    site = "the demo site"
    secret_extras = ("site_key",)

    def connection_error(self, message):
        return DemoError(message)

    def unavailable(self, message, *, code):
        error = DemoError(message, code=code)
        error.retryable = True
        return error

    def get(self, path, *, idempotent=True, method="GET"):
        def classify(response):
            if response.status_code >= 400:
                error = DemoError(f"HTTP {response.status_code}: {plain_text(response.text)}",
                                  status=response.status_code)
                error.retryable = response.status_code == 503
                raise error
            return response.json()

        return self.send(method, self.endpoint.base_url + path, classify, idempotent=idempotent, what=f"demo {path}")


class Server:
    """Answers each request with the next scripted (status, body, headers, delay); records what it got."""

    def __init__(self):
        self.script: list[tuple] = []
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                server.requests.append({"method": self.command, "path": self.path,
                                        "headers": dict(self.headers), "body": self.rfile.read(length)})
                status, body, headers, delay = server.script.pop(0) if server.script else (200, "{}", {}, 0)
                time.sleep(delay)
                data = body.encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def then(self, status=200, body="{}", headers=None, delay=0.0):
        self.script.append((status, body, headers or {}, delay))
        return self


@pytest.fixture
def server():
    made = Server()
    yield made
    made.httpd.shutdown()


@pytest.fixture
def hook(server, monkeypatch):
    extra = {"site_key": "s1te-k3y", "verify": False, "timeout": 2, "X-Custom": "not-a-header"}
    monkeypatch.setenv("AIRFLOW_CONN_DEMO_DEFAULT", json.dumps({
        "conn_type": "demo", "host": server.url, "login": "api", "password": "pa55word", "extra": extra}))
    made = DemoHook()
    made.slept = []
    made._sleep = made.slept.append
    return made


def test_extras_are_settings_never_headers_and_no_secret_is_sent_as_one(hook, server):
    assert hook.get("/ping") == {}
    headers = server.requests[0]["headers"]
    assert "X-Custom" not in headers and "site_key" not in {h.lower() for h in headers}
    assert not [v for v in headers.values() if "s1te-k3y" in v or "pa55word" in v]
    assert (hook.endpoint.verify, hook.timeout) == (False, 2.0)


def test_idempotent_calls_are_retried_after_retry_after_and_others_are_sent_once(hook, server):
    server.then(503, "<html><body><h1>Down</h1></body></html>", {"Retry-After": "3"}).then(200, '{"ok": 1}')
    assert hook.get("/read") == {"ok": 1}
    assert hook.slept == [3.0] and len(server.requests) == 2

    server.then(503, "down")
    with pytest.raises(DemoError, match="HTTP 503: down"):
        hook.get("/write", idempotent=False, method="POST")
    assert len(server.requests) == 3 and hook.slept == [3.0]


def test_backoff_is_exponential_and_bounded_by_max_tries(hook, server):
    for _ in range(3):
        server.then(503, "busy")
    with pytest.raises(DemoError):
        hook.get("/read")
    assert hook.slept == [0.5, 1.0] and len(server.requests) == hook.max_tries


def test_a_retry_after_longer_than_the_bound_is_left_to_the_caller(hook, server):
    server.then(503, "later", {"Retry-After": "600"})
    with pytest.raises(DemoError) as caught:
        hook.get("/read")
    assert hook.slept == [] and caught.value.retry_after == 600.0


def test_html_is_cleaned_out_of_error_text(hook, server):
    server.then(400, "<html><head><style>p{}</style></head><body><p>Bad <b>input</b></p></body></html>")
    with pytest.raises(DemoError, match=r"^HTTP 400: Bad input$"):
        hook.get("/read")


def test_a_timeout_is_transient_and_retried_for_reads(hook, server):
    server.then(200, "{}", delay=2.5).then(200, '{"late": false}')
    assert hook.get("/slow") == {"late": False}
    assert len(hook.slept) == 1


def test_cookies_are_never_kept(hook, server):
    server.then(200, "{}", {"Set-Cookie": "SESS=abc; Path=/"})
    hook.get("/one")
    hook.get("/two")
    assert "Cookie" not in server.requests[1]["headers"]


def test_secrets_are_masked_as_soon_as_they_are_read(hook, monkeypatch):
    import airflow.sdk.log

    masked = []
    monkeypatch.setattr(airflow.sdk.log, "mask_secret", masked.append)
    _ = hook.endpoint
    assert {"pa55word", "s1te-k3y"} <= {value for value in masked if isinstance(value, str)}


def test_a_missing_connection_is_the_hooks_own_error_naming_it(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_DEMO_NOWHERE", raising=False)
    with pytest.raises(DemoError, match="'demo_nowhere' is not defined"):
        _ = DemoHook("demo_nowhere").endpoint


def test_a_secret_with_a_line_break_is_refused_without_showing_it(monkeypatch, server):
    monkeypatch.setenv("AIRFLOW_CONN_DEMO_DEFAULT", json.dumps({
        "conn_type": "demo", "host": server.url, "password": "pa55\nword"}))
    with pytest.raises(DemoError, match="password contains a line break") as caught:
        _ = DemoHook().endpoint
    assert "pa55" not in str(caught.value)


def _demo_connection(monkeypatch, host: str, **extra) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DEMO_DEFAULT", json.dumps({
        "conn_type": "demo", "host": host, "login": "api", "password": "pa55word", "extra": {"timeout": 2, **extra}}))


def test_the_environments_proxy_is_honoured_and_read_once_per_session(server, monkeypatch):
    import requests.sessions
    import requests.utils

    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)  # the test server plays the proxy
    _demo_connection(monkeypatch, "http://members.example.invalid")
    reads = []
    real = requests.utils.get_environ_proxies
    for module in (requests.utils, requests.sessions):
        monkeypatch.setattr(module, "get_environ_proxies", lambda *a, **k: reads.append(a) or real(*a, **k))
    hook = DemoHook()
    for _ in range(5):
        assert hook.get("/ping") == {}
    assert [r["path"] for r in server.requests] == ["http://members.example.invalid/ping"] * 5  # via the proxy
    assert len(reads) == 1  # not once per request: that walk of os.environ cost ~2 ms a request


def test_no_proxy_and_the_ca_bundle_of_the_environment_still_apply(server, monkeypatch, tmp_path):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    _demo_connection(monkeypatch, server.url)
    hook = DemoHook()
    assert hook.get("/ping") == {} and server.requests[0]["path"] == "/ping"  # straight to the site
    assert hook._verify == str(bundle)
    _demo_connection(monkeypatch, server.url, verify=False)
    unverified = DemoHook()
    unverified.get_conn()
    assert unverified._verify is False  # the connection's own `verify` wins
