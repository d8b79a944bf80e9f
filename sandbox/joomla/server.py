"""In-memory emulator of Joomla 5.3's Web Services users API and the site's password-reset form.

Answers as the real Joomla 5.3.1 did (sandbox/real_joomla; the shared contract suite
tests/contract/test_joomla_contract.py runs the same assertions against both):

* `X-Joomla-Token` (or `Authorization: Bearer`) checked like the token plugin: HMAC-SHA256 of the
  user's seed with the site secret, token enabled, user in an allowed group with API Login, not
  blocked; else 401 `{"errors":[{"title":"Forbidden"}]}`. No Create permission: 403.
* `GET|POST /api/index.php/v1/users`, `GET /api/index.php/v1/users/{id}`,
  `GET /api/index.php/v1/users/groups`; create answers 200; errors as Joomla words them (en-GB or
  fr-FR), form errors without `code`, save failures with `"code": 400`; listing ordered by name
  with `filter[search]` (LIKE, `id:`, `username:`), `page[limit]`/`page[offset]`, `meta.total-pages`,
  `links`, 404 past the end, ListModel's pull-back of an offset near the end.
* `GET /index.php?option=com_users&view=reset` (a session cookie and a CSRF token),
  `POST /index.php?option=com_users&task=reset.request`: 303 to `...reset?layout=confirm` whatever
  happened, a mail only when Joomla would send one.
* `mail_to_user` on: each create mails "New User Details" with the password, as Joomla does.
* Fault injection (`inject`), a record of every call (`calls`, tokens redacted), `mails`.
"""

from __future__ import annotations

import copy
import json
import math
import re
import secrets
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from sandbox.httpserver import LoopbackServer
from sandbox.joomla.store import API_GROUP, SUPER_USERS, SaveRefused, Store, page_start

JSONAPI = "application/vnd.api+json; charset=utf-8"
API_PREFIX = "/api/index.php"


@dataclass
class Call:
    """One request the emulator received; the token and passwords are not kept."""

    method: str
    path: str
    query: dict
    body: Any
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
    body_contains: str | None

    def matches(self, method: str, path: str, body: bytes) -> bool:
        if self.method and self.method.upper() != method:
            return False
        if self.body_contains is not None and self.body_contains.encode() not in body:
            return False
        if self.path is None:
            return True
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path


class JoomlaEmulator(LoopbackServer):
    """One Joomla site's users over HTTP on loopback. See the module docstring.

    The Super User (id 42, "admin") and the API user (id 43, "airflow_api", group "API clients" with
    API Login and Create on Users) are there from the start, each with a token (`api_token`,
    `admin_token`). Switches: `store.mail_to_user`, `store.language`, `set_api_can_create()`,
    `store.reset_count`.
    """

    server_version = "JoomlaEmulator/5.3"
    thread_name = "joomla-emulator"

    def __init__(self, *, language: str = "en-GB", mail_to_user: bool = False, site_name: str = "Joomla emulator"):
        self.store = Store(language=language, mail_to_user=mail_to_user, site_name=site_name)
        self.store.add_user({"id": 42, "name": "Site Administrator", "username": "admin",
                             "email": "admin@example.test", "groups": [SUPER_USERS], "sendEmail": 1})
        self.store.add_user({"id": 43, "name": "API client", "username": "airflow_api",
                             "email": "airflow-api@example.test", "groups": [API_GROUP]})
        self.admin_token = self.store.give_token(42)
        self.api_token = self.store.give_token(43)
        self.api_user_id = 43
        self.calls: list[Call] = []
        self._lock = threading.RLock()
        self._injections: list[_Injection] = []
        self._sessions: dict[str, str] = {}  # session cookie -> form token
        self.url = ""
        self._baseline = (copy.deepcopy(self.store.users), copy.deepcopy(self.store.groups))

    def __repr__(self) -> str:
        return f"JoomlaEmulator(url={self.url!r}, users={len(self.store.users)})"

    # ------------------------------------------------------------------ public API

    @property
    def api_url(self) -> str:
        return self.url + API_PREFIX

    @property
    def mails(self) -> list[dict]:
        return self.store.mails

    @property
    def users(self) -> list[dict]:
        with self._lock:
            return [{k: copy.deepcopy(v) for k, v in u.items() if k != "token_seed"}
                    for u in sorted(self.store.users.values(), key=lambda u: u["id"])]

    def seed(self, data: dict) -> None:
        """{"groups": [{id?, title, parent_id}], "users": [{id?, name, username, email, groups, block, ...}]}."""
        with self._lock:
            for group in (data or {}).get("groups", []) or []:
                self.store.add_group(group["title"], int(group.get("parent_id") or 1), group.get("id"))
            for user in (data or {}).get("users", []) or []:
                self.store.add_user(dict(user))

    def reset(self) -> None:
        """Back to the two users and core groups of the start; mails, calls and faults cleared."""
        with self._lock:
            users, groups = self._baseline
            self.store.users = copy.deepcopy(users)
            self.store.groups = copy.deepcopy(groups)
            self.store.next_id = 100
            self.store.mails.clear()
            self.store.mail_to_user = False
            self.store.language = "en-GB"
            self.set_api_can_create(True)
            self.calls.clear()
            self._injections.clear()

    def set_api_can_create(self, allowed: bool) -> None:
        (self.store.create_groups.add if allowed else self.store.create_groups.discard)(API_GROUP)

    def add_group(self, title: str, parent_id: int = 1) -> int:
        with self._lock:
            return self.store.add_group(title, parent_id)["id"]

    def inject(self, *, method: str | None = None, path: str | None = None, status: int | None = 503,
               times: int = 1, delay: float = 0.0, lose_answer: bool = False,
               retry_after: float | int | str | None = None, body: Any = None,
               body_contains: str | None = None) -> None:
        """For the next `times` calls matching method and path (like "/api/index.php/v1/users" or
        "/index.php"; a trailing "*" matches a prefix) and, when given, whose body contains
        `body_contains`: wait `delay` s, then answer `status` (None: normally) with `body`, or with
        lose_answer=True carry the request out and drop the connection unanswered."""
        with self._lock:
            self._injections.append(_Injection(method, path, status, times, delay, lose_answer, retry_after,
                                               body, body_contains))

    def clear_faults(self) -> None:
        with self._lock:
            self._injections.clear()

    def seed_file(self, path) -> None:
        """Seed from a YAML or JSON file; a top-level `joomla:` key is used when present."""
        from sandbox.cli import read_seed

        self.seed(read_seed(path, "joomla"))


    # ------------------------------------------------------------------ requests

    def answer(self, method: str, path: str, query: list, body: bytes, headers: dict) -> tuple:
        """One HTTP request, for sandbox.httpserver."""
        status, out_headers, payload, injection = self.handle(method, path, dict(query), body, headers)
        return status, out_headers, payload, bool(injection and injection.lose_answer)

    def handle(self, method: str, path: str, query: dict, body: bytes, headers: dict
               ) -> tuple[int, list[tuple[str, str]], bytes, _Injection | None]:
        injection = self._take_injection(method, path, body)
        call = Call(method, path, dict(query), _redacted(body, headers))
        with self._lock:
            self.calls.append(call)
        if injection is not None and injection.delay:
            time.sleep(injection.delay)
        if injection is not None and injection.status is not None and not injection.lose_answer:
            status, out_headers, payload = _injected(injection)
        else:
            try:
                with self._lock:
                    status, out_headers, payload = self._route(method, path, query, body, headers)
            except Exception:  # an emulator bug: answer like PHP's fatal error page
                traceback.print_exc()
                status, out_headers, payload = 500, [("Content-Type", "text/html")], b"<h1>Error</h1>"
        call.status = status
        call.lost = bool(injection and injection.lose_answer)
        return status, out_headers, payload, injection

    def _take_injection(self, method: str, path: str, body: bytes) -> _Injection | None:
        with self._lock:
            for injection in self._injections:
                if injection.times > 0 and injection.matches(method, path, body):
                    injection.times -= 1
                    if injection.times == 0:
                        self._injections.remove(injection)
                    return injection
        return None

    def _route(self, method: str, path: str, query: dict, body: bytes, headers: dict):
        if path.startswith(API_PREFIX + "/"):
            return self._api(method, path[len(API_PREFIX):], query, body, headers)
        if path in ("/index.php", "/"):
            return self._site(method, query, body, headers)
        return 404, [("Content-Type", "text/html")], b"<h1>404 Page not found</h1>"

    # ------------------------------------------------------------------ API

    def _api(self, method: str, route: str, query: dict, body: bytes, headers: dict):
        route = route.rstrip("/")
        known = route in ("/v1/users", "/v1/users/groups") or re.fullmatch(r"/v1/users/\d+", route)
        if not known:
            return _error(404, "Resource not found")
        token = headers.get("x-joomla-token", "")
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer "):
            token = auth[7:].strip()
        current = self.store.authenticate(token) if token else None
        if current is None:
            return _error(401, "Forbidden")
        accept = headers.get("accept", "")
        if accept and not any(t in accept for t in ("application/vnd.api+json", "application/json", "*/*")):
            return _error(406, "Not Acceptable", code=406)
        if route == "/v1/users/groups" and method == "GET":
            return self._list(query, [dict(g, type="groups") for g in self.store.ordered_groups()], groups=True)
        if route == "/v1/users" and method == "GET":
            filters = _bracketed(query, "filter")
            group = filters.get("groupid")
            rows = self.store.search(filters.get("search"), int(group) if group and group.isdigit() else None)
            return self._list(query, [self.store.list_row(u) for u in rows])
        if route == "/v1/users" and method == "POST":
            if not self.store.can_create(current):
                return _error(403, "Access Denied", code=403)
            try:
                data = json.loads(body.decode("utf-8") or "{}") if body else {}
            except (ValueError, UnicodeDecodeError):
                data = {}
            if not isinstance(data, dict):
                data = {}
            try:
                record, _ = self.store.create(data, current)
            except SaveRefused as refused:
                return _error(refused.status, refused.title, code=refused.status if refused.with_code else None)
            return _json(200, {"links": {"self": f"{self.api_url}/v1/users"}, "data": self.store.item(record)})
        match = re.fullmatch(r"/v1/users/(\d+)", route)
        if match and method == "GET":
            user = self.store.users.get(int(match.group(1)))
            if user is None:
                return _error(404, "Resource not found", code=404)
            return _json(200, {"links": {"self": f"{self.api_url}{route}"}, "data": self.store.item(user)})
        return _error(405, "Method not allowed", code=405)

    def _list(self, query: dict, rows: list[dict], *, groups: bool = False):
        page = _bracketed(query, "page")
        limit = _int(page.get("limit"), 20)
        offset = _int(page.get("offset"), None)
        total = len(rows)
        if offset is not None and offset > total:
            return _error(404, "Resource not found")
        start = page_start(offset or 0, limit, total)
        if groups:
            data = [{"type": "groups", "id": str(g["id"]),
                     "attributes": {"id": g["id"], "parent_id": g["parent_id"], "lft": g["lft"], "rgt": g["rgt"],
                                    "title": g["title"]}} for g in rows[start:start + limit]]
        else:
            data = rows[start:start + limit]
        base = f"{self.url}{API_PREFIX}{'/v1/users/groups' if groups else '/v1/users'}"
        self_query = urlencode(list(query.items()))
        links = {"self": base + (f"?{self_query}" if self_query else "")}
        pages = math.ceil(total / limit) if limit else 1
        others = {k: v for k, v in query.items() if k not in ("page[limit]", "page[offset]")}

        def link(at: int) -> str:
            return base + "?" + urlencode(list({**others, "page[limit]": limit, "page[offset]": at}.items()))

        if start > 0:
            links["first"] = link(0)
            links["previous"] = link(max(0, start - limit))
        if start + limit < total:
            links["next"] = link(start + limit)
            links["last"] = link((pages - 1) * limit)
        return _json(200, {"links": links, "data": data, "meta": {"total-pages": pages}})

    # ------------------------------------------------------------------ site (reset form)

    def _site(self, method: str, query: dict, body: bytes, headers: dict):
        cookie = _cookie(headers.get("cookie", ""), "joomla_emulator_session")
        if query.get("option") == "com_users" and query.get("view") == "reset" and method == "GET":
            if cookie not in self._sessions:
                cookie = secrets.token_hex(16)
                self._sessions[cookie] = secrets.token_hex(16)
            token = self._sessions[cookie]
            page = (f'<!DOCTYPE html><html><body><form id="user-registration" action="/index.php/component/users?'
                    f'task=reset.request" method="post"><input type="email" name="jform[email]" id="jform_email">'
                    f'<input type="hidden" name="{token}" value="1"></form></body></html>')
            return 200, [("Content-Type", "text/html; charset=utf-8"),
                         ("Set-Cookie", f"joomla_emulator_session={cookie}; path=/; HttpOnly")], page.encode()
        if query.get("option") == "com_users" and query.get("task") == "reset.request" and method == "POST":
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            token = self._sessions.get(cookie or "")
            if not token or form.get(token) != "1":
                # checkToken(): back to where the visitor came from, with "invalid token"
                return 303, [("Location", f"{self.url}/index.php/component/users?task=reset.request")], b""
            self.store.reset_request(form.get("jform[email]", ""))
            return 303, [("Location", f"{self.url}/index.php/component/users/reset?layout=confirm")], b""
        return 200, [("Content-Type", "text/html; charset=utf-8")], b"<!DOCTYPE html><html><body></body></html>"


# ---------------------------------------------------------------------- helpers


def _json(status: int, payload: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("Content-Type", JSONAPI)], json.dumps(payload, separators=(",", ":")).encode()


def _error(status: int, title: str, *, code: int | None = None):
    error: dict[str, Any] = {"title": title}
    if code is not None:
        error["code"] = code
    return _json(status, {"errors": [error]})


def _injected(injection: _Injection):
    headers = [("Retry-After", str(injection.retry_after))] if injection.retry_after is not None else []
    if injection.body is None:
        reasons = {429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
        text = f"<html><body><h1>{injection.status} {reasons.get(injection.status, 'Error')}</h1></body></html>"
        return injection.status, [("Content-Type", "text/html"), *headers], text.encode()
    if isinstance(injection.body, dict | list):
        status, base, payload = _json(injection.status, injection.body)
        return status, base + headers, payload
    return injection.status, [("Content-Type", "text/html"), *headers], str(injection.body).encode()


def _bracketed(query: dict, name: str) -> dict:
    prefix = name + "["
    return {k[len(prefix):-1]: v for k, v in query.items() if k.startswith(prefix) and k.endswith("]")}


def _int(value: Any, default):
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _redacted(body: bytes, headers: dict) -> Any:
    if not body:
        return None
    text = body.decode("utf-8", "replace")
    if headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(text)
        except ValueError:
            return {"_raw": "<unparsed>"}
        if isinstance(data, dict):
            return {k: ("<redacted>" if k in ("password", "password2") else v) for k, v in data.items()}
        return data
    return dict(parse_qsl(text, keep_blank_values=True))

