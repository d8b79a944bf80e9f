"""WordPressEmulator: its settings and state, the request entry point (`handle`) and the HTTP server."""

from __future__ import annotations

import sys
import threading
import time
import traceback

from sandbox.httpserver import LoopbackServer

from .faults import (
    Call,
    FaultInjection,
    _decode_body_for_record,
    _injected_response,
    _Injection,
    _redacted_headers,
)
from .lostpassword import LoginPage
from .responses import _CRITICAL_ERROR_MESSAGE, _json_response, _Response
from .rest import RestApi
from .store import UserStore


class WordPressEmulator(UserStore, FaultInjection, RestApi, LoginPage, LoopbackServer):
    """A WordPress 6.1 site's users, reachable over HTTP on loopback. See the package docstring.

    Its parts: UserStore (users, seed, seed_file), FaultInjection (inject, clear_faults, calls,
    reset_calls), RestApi (the REST routes), LoginPage (wp-login.php and the site's pages).
    """

    server_version = "WordPressEmulator/6.1"
    thread_name = "wordpress-emulator"

    def __init__(
        self,
        login: str = "admin",
        app_password: str = "abcd EFGH 1234 ijkl MNOP 5678",
        *,
        admin_email: str = "admin@example.test",
        roles: tuple[str, ...] | list[str] = ("administrator", "editor", "author", "contributor",
                                              "subscriber", "member"),
        mail_works: bool = True,
        api_user_roles: tuple[str, ...] = ("administrator",),
        app_passwords_available: bool = True,
        locales: tuple[str, ...] = ("", "en_US"),
        site_name: str = "WordPress emulator",
        illegal_logins: tuple[str, ...] = (),
    ):
        self.login = login
        self.app_password = app_password  # what the sandbox puts in the CMS connection
        self._app_password_key = self._password_key(app_password)
        self.admin_email = admin_email
        self.roles = list(roles)
        self.mail_works = mail_works
        self.app_passwords_available = app_passwords_available
        self.locales = tuple(locales)
        self.site_name = site_name
        # The illegal_user_logins filter (security plugins often ban "admin").
        self.illegal_logins = {name.lower() for name in illegal_logins}
        self.calls: list[Call] = []
        self.mails: list[dict] = []
        self._lock = threading.RLock()
        self._injections: list[_Injection] = []
        self._users: dict[int, dict] = {}
        self._by_login: dict[str, int] = {}
        self._by_email: dict[str, int] = {}
        self._slugs: set[str] = set()
        self._next_id = 1
        self.url = ""
        self._store_user({"username": login, "email": admin_email, "roles": list(api_user_roles),
                          "has_published_posts": True, "url": ""})

    def __repr__(self) -> str:
        return f"WordPressEmulator(url={self.url!r}, login={self.login!r}, users={len(self._users)})"

    # ------------------------------------------------------------------ public API (more in the parts)

    @property
    def rest_url(self) -> str:
        return self.url + "/wp-json"


    # ------------------------------------------------------------------ request handling

    def answer(self, method: str, path: str, query: list, body: bytes, headers: dict) -> tuple:
        """One HTTP request, for sandbox.httpserver."""
        response, _call, injection = self.handle(method, path, dict(query), body, headers)
        return response.status, response.headers, response.body, bool(injection and injection.lose_answer)

    def handle(self, method: str, raw_path: str, query: dict, body_bytes: bytes,
               headers: dict) -> tuple[_Response, Call, _Injection | None]:
        """Route one request; returns the response, its call record and the injection that applies."""
        route = self._rest_route(raw_path, query)
        injection = self._take_injection(method, raw_path, route, body_bytes)
        call = Call(method=method, path=raw_path, query=dict(query), body=None,
                    headers=_redacted_headers(headers))
        with self._lock:
            self.calls.append(call)
        if injection is not None and injection.delay:
            time.sleep(injection.delay)
        if injection is not None and injection.status is not None and not injection.lose_answer:
            response = _injected_response(injection)
            call.body = _decode_body_for_record(body_bytes, headers)
            call.status = response.status
            return response, call, injection
        try:
            if route is not None:
                response = self._handle_rest(method, route, query, body_bytes, headers, call)
            else:
                response = self._handle_site(method, raw_path, query, body_bytes, headers, call)
        except Exception:  # a bug in the emulator: answer like WordPress's fatal-error handler
            traceback.print_exc(file=sys.stderr)
            response = _json_response(500, {"code": "internal_server_error",
                                            "message": _CRITICAL_ERROR_MESSAGE, "data": {"status": 500},
                                            "additional_errors": []})
        if call.body is None:
            call.body = _decode_body_for_record(body_bytes, headers)
        call.status = response.status
        call.lost = bool(injection and injection.lose_answer)
        return response, call, injection

