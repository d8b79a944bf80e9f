"""In-memory emulator of WordPress 6.1's REST users API and the lostpassword form.

Behaviour follows the contract (docs: shared/contracts/cms-users.md §2) and was compared
against a real WordPress 6.1.9 (sandbox/real_wordpress/start.sh) by the shared contract suite
in tests/contract/test_wordpress_contract.py. What it emulates:

* Basic auth with one application password (non-alphanumerics ignored); anything else is
  anonymous, and each route answers anonymous callers with its own 401 body.
* `GET /wp-json/` (index), `GET|POST|OPTIONS /wp/v2/users`, `GET|DELETE /wp/v2/users/{id}`,
  `GET /wp/v2/users/me`, also as `/?rest_route=/wp/v2/...`.
* Create validation in WordPress's order: JSON parse, missing params, schema validation
  (email format, locale enum), sanitising (username via strict sanitize_user, password),
  permission, `id`, roles, then wp_insert_user (login length, login exists, nicename length,
  email exists, url length) and the database column limits (email 100, display name 250)
  that surface as a 500 `internal_server_error` with nothing stored.
* Listing with context, search column choice, paging headers (X-WP-Total, X-WP-TotalPages,
  Link built the way WordPress builds it), include/exclude/roles/slug filters, ordering.
* `POST /wp-login.php?action=lostpassword`: 302 to `?checkemail=confirm` and a recorded mail,
  or 200 with the HTML error WordPress shows (unknown user, mail not working).
* Fault injection (`inject`) and a record of every call (`calls`).
"""

from __future__ import annotations

import argparse
import base64
import copy
import html
import json
import math
import re
import sys
import threading
import time
import traceback
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlsplit

from sandbox.cli import add_common_options, serve

CORE_ROLES = ("administrator", "editor", "author", "contributor", "subscriber")

# The user-management capabilities are what matters here; the rest is a representative subset.
_ROLE_CAPS: dict[str, dict[str, bool]] = {
    "administrator": {
        cap: True
        for cap in (
            "switch_themes", "edit_themes", "activate_plugins", "edit_plugins", "edit_users", "edit_files",
            "manage_options", "moderate_comments", "manage_categories", "upload_files", "unfiltered_html",
            "edit_posts", "edit_others_posts", "publish_posts", "edit_pages", "read", "level_10", "level_0",
            "delete_users", "create_users", "list_users", "remove_users", "promote_users", "export",
        )
    },
    "editor": {c: True for c in ("moderate_comments", "edit_posts", "edit_others_posts", "publish_posts",
                                 "edit_pages", "read", "level_7", "level_0", "upload_files")},
    "author": {c: True for c in ("upload_files", "edit_posts", "publish_posts", "read", "level_2", "level_0")},
    "contributor": {c: True for c in ("edit_posts", "read", "level_1", "level_0")},
    "subscriber": {"read": True, "level_0": True},
}
_DEFAULT_CUSTOM_ROLE_CAPS = {"read": True}

# Order of the create arguments as WordPress registers them (from the item schema); it decides
# the order of names in "Missing parameter(s): ..." and in validation errors.
_CREATE_ARG_ORDER = ("username", "name", "first_name", "last_name", "email", "url", "description",
                     "locale", "nickname", "slug", "roles", "password")
_REQUIRED_CREATE_ARGS = ("username", "email", "password")
_TEXT_FIELDS = ("name", "first_name", "last_name", "nickname")

_ARRAY_LIST_ARGS = ("exclude", "include", "slug", "roles", "capabilities")
_ORDERBY_COLUMNS = {
    "id": "id", "include": "include", "name": "name", "registered_date": "registered_date",
    "slug": "slug", "include_slugs": "include_slugs", "email": "email", "url": "url",
}

_CRITICAL_ERROR_MESSAGE = (
    '<p>There has been a critical error on this website.</p><p><a href="https://wordpress.org/support/'
    'article/faq-troubleshooting/">Learn more about troubleshooting WordPress.</a></p>'
)
_MAIL_FAILED_HTML = (
    "<strong>Error:</strong> The email could not be sent. Your site may not be correctly configured to "
    'send emails. <a href="https://wordpress.org/support/article/resetting-your-password/">Get support '
    "for resetting your password</a>."
)
_NO_ACCOUNT_HTML = "<strong>Error:</strong> There is no account with that username or email address."
_EMPTY_LOGIN_HTML = "<strong>Error:</strong> Please enter a username or email address."

# WordPress's remove_accents() transliterations that NFKD decomposition does not give.
_TRANSLITERATE = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
                                "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "ł": "l", "Ł": "L", "þ": "th",
                                "Þ": "TH", "ı": "i", "ħ": "h", "Ħ": "H", "ŧ": "t", "Ŧ": "T", "ĸ": "k"})
_TAG_RE = re.compile(r"<[^>]*>")
_SCRIPT_RE = re.compile(r"<(script|style)[^>]*?>.*?</\1>", re.I | re.S)
_OCTET_RE = re.compile(r"%[a-fA-F0-9]{2}")
_ENTITY_RE = re.compile(r"&.+?;")
_VALID_ENTITY_RE = re.compile(r"&(?:[A-Za-z][A-Za-z0-9]*|#[0-9]+|#x[0-9A-Fa-f]+);")


# --------------------------------------------------------------------------- WordPress text rules


def _php_empty(value: Any) -> bool:
    """PHP's empty(): '', '0', 0, None, [] and False are empty."""
    return value in (None, "", "0", 0, False) or value == [] or value == {}


def _remove_accents(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATE))
    return "".join(ch for ch in folded if not unicodedata.combining(ch))


def _strip_all_tags(text: str) -> str:
    return _TAG_RE.sub("", _SCRIPT_RE.sub("", text))


def sanitize_user_strict(username: str) -> str:
    """wp-includes/formatting.php sanitize_user($username, true)."""
    text = _strip_all_tags(username)
    text = _remove_accents(text)
    text = _OCTET_RE.sub("", text)
    text = _ENTITY_RE.sub("", text)
    text = re.sub(r"[^a-z0-9 _.\-@]", "", text, flags=re.I)
    text = text.strip()
    return re.sub(r"\s+", " ", text)


def sanitize_text_field(value: Any) -> str:
    """wp-includes/formatting.php _sanitize_text_fields() without newline keeping."""
    if isinstance(value, dict | list):
        return ""
    text = "" if value is None else str(value)
    if "<" in text:
        # wp_pre_kses_less_than: a '<' that does not open a tag survives as an entity.
        text = re.sub(r"<(?![A-Za-z/!?])", "&lt;", text)
        text = _strip_all_tags(text)
    text = re.sub(r"[\r\n\t ]+", " ", text).strip()
    found = False
    while (match := _OCTET_RE.search(text)) is not None:
        text = text.replace(match.group(0), "")
        found = True
    if found:
        text = re.sub(r" +", " ", text).strip()
    return text


def _specialchars(text: str) -> str:
    """kses entity normalising + _wp_specialchars(ENT_NOQUOTES, no double encoding)."""
    out = []
    pos = 0
    for match in _VALID_ENTITY_RE.finditer(text):
        out.append(text[pos:match.start()].replace("&", "&amp;"))
        out.append(match.group(0))
        pos = match.end()
    out.append(text[pos:].replace("&", "&amp;"))
    return "".join(out).replace("<", "&lt;").replace(">", "&gt;")


def _pre_user_text(value: str) -> str:
    """The pre_user_{display_name,first_name,last_name,nickname} filters."""
    return _specialchars(sanitize_text_field(value))


def sanitize_title(title: str) -> str:
    """sanitize_title_with_dashes(..., 'save') for the characters a login can contain."""
    text = _remove_accents(_strip_all_tags(title)).lower()
    text = text.replace(".", "-")
    text = re.sub(r"[^%a-z0-9 _-]", "", text)
    text = re.sub(r"\s+", "-", text)
    text = re.sub(r"-+", "-", text)
    return text.strip("-")


def is_email(email: str) -> bool:
    """wp-includes/formatting.php is_email()."""
    if len(email) < 6 or email.find("@", 1) == -1:
        return False
    local, domain = email.split("@", 1)
    if not re.fullmatch(r"[a-zA-Z0-9!#$%&'*+/=?^_`{|}~.-]+", local):
        return False
    if re.search(r"\.{2,}", domain) or domain.strip(" \t\n\r\0\x0b.") != domain:
        return False
    subs = domain.split(".")
    if len(subs) < 2:
        return False
    return all(sub.strip(" \t\n\r\0\x0b-") == sub and re.fullmatch(r"[a-z0-9-]+", sub, re.I) for sub in subs)


def _php_urlencode(value: str) -> str:
    return quote_plus(value, safe="").replace("~", "%7E")


def _parse_list(value: Any) -> list:
    """wp_parse_list: arrays stay, strings split on commas/whitespace."""
    if isinstance(value, list):
        return value
    if value is None:
        return []
    return [part for part in re.split(r"[\s,]+", str(value)) if part]


def _is_php_numeric(text: str) -> bool:
    return re.fullmatch(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*", text) is not None


# --------------------------------------------------------------------------- records


@dataclass
class Call:
    """One request the emulator received. The Authorization header is kept without its secret."""

    method: str
    path: str
    query: dict
    body: dict | None
    headers: dict
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
    body_contains: str | None = None

    def matches(self, method: str, raw_path: str, route: str | None, body_bytes: bytes = b"") -> bool:
        if self.method and self.method.upper() != method:
            return False
        if self.body_contains is not None and self.body_contains.encode() not in body_bytes:
            return False
        if self.path is None:
            return True
        if self.path.endswith("*"):
            prefix = self.path[:-1]
            return raw_path.startswith(prefix) or (route or "").startswith(prefix)
        return self.path in (raw_path, route)


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


class _WpError(Exception):
    """A WP_Error on its way to becoming a REST error response."""

    def __init__(self, code: str, message: str, status: int, data: Any = "default", **extra: Any):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.data = {"status": status} if data == "default" else data
        self.extra = extra


def _insert_error(code: str, message: str) -> _WpError:
    """wp_insert_user() errors carry no status: the REST server answers 500 with data null."""
    return _WpError(code, message, 500, data=None)


# --------------------------------------------------------------------------- the emulator


class WordPressEmulator:
    """A WordPress 6.1 site's users, reachable over HTTP on loopback. See the module docstring."""

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
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self._store_user({"username": login, "email": admin_email, "roles": list(api_user_roles),
                          "has_published_posts": True, "url": ""})

    def __repr__(self) -> str:
        return f"WordPressEmulator(url={self.url!r}, login={self.login!r}, users={len(self._users)})"

    # ------------------------------------------------------------------ public API

    @property
    def rest_url(self) -> str:
        return self.url + "/wp-json"

    @property
    def users(self) -> list[dict]:
        with self._lock:
            return [self._public_record(u) for u in sorted(self._users.values(), key=lambda u: u["id"])]

    def seed(self, data: dict) -> None:
        """Add users directly (no REST validation): {"users": [{id?, username, email, roles, ...}]}."""
        with self._lock:
            for entry in (data or {}).get("users", []) or []:
                self._store_user(dict(entry))

    def seed_file(self, path: str | Path) -> None:
        """Seed from YAML or JSON; a top-level `wordpress:` key is used when present."""
        text = Path(path).read_text(encoding="utf-8")
        if str(path).endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
        if isinstance(data, dict) and "wordpress" in data:
            data = data["wordpress"]
        self.seed(data or {})

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def inject(self, *, method: str | None = None, path: str | None = None, status: int | None = 503,
               times: int = 1, delay: float = 0.0, lose_answer: bool = False,
               retry_after: float | int | str | None = None, body: Any = None,
               body_contains: str | None = None) -> None:
        """For the next `times` calls matching method/path (route like "/wp/v2/users" or raw path like
        "/wp-login.php"; a trailing "*" matches a prefix) and, when given, whose raw request body
        contains `body_contains` (e.g. one contact's email): wait `delay` seconds, then either answer
        `status` (None: answer normally), or with lose_answer=True perform the request for real and
        drop the connection without answering."""
        with self._lock:
            self._injections.append(_Injection(method, path, status, times, delay, lose_answer,
                                               retry_after, body, body_contains))

    def clear_faults(self) -> None:
        """Forget every injection not used up yet."""
        with self._lock:
            self._injections.clear()

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None:
            return self.url
        emulator = self

        class Handler(_Handler):
            pass

        Handler.emulator = emulator
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        bound_host, bound_port = self._server.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        server = self._server
        # A short poll interval keeps stop() quick (tests start and stop many emulators).
        self._thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05),
                                        name="wordpress-emulator", daemon=True)
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

    def __enter__(self) -> WordPressEmulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ store

    @staticmethod
    def _password_key(password: str) -> str:
        # wp_authenticate_application_password(): everything but [a-z0-9] (case-insensitive) is dropped.
        return re.sub(r"[^a-z\d]", "", password or "", flags=re.I)

    def _store_user(self, entry: dict) -> dict:
        username = str(entry.get("username") or entry.get("login") or "")
        email = str(entry.get("email") or "")
        if not username:
            raise ValueError(f"seed user without username: {entry!r}")
        if username.lower() in self._by_login:
            raise ValueError(f"seed user {username!r}: login already exists")
        if email and email.lower() in self._by_email:
            raise ValueError(f"seed user {username!r}: email {email!r} already exists")
        user_id = int(entry.get("id") or self._next_id)
        if user_id in self._users:
            raise ValueError(f"seed user {username!r}: id {user_id} already exists")
        first, last = str(entry.get("first_name") or ""), str(entry.get("last_name") or "")
        name = entry.get("name") or entry.get("display_name") or (f"{first} {last}".strip() or username)
        roles = entry.get("roles")
        slug = self._unique_slug(str(entry.get("slug") or sanitize_title(username[:50])) or str(user_id))
        record = {
            "id": user_id,
            "username": username,
            "email": email,
            "name": str(name),
            "first_name": first,
            "last_name": last,
            "nickname": str(entry.get("nickname") or username),
            "slug": slug,
            "url": str(entry.get("url") or ""),
            "description": str(entry.get("description") or ""),
            "locale": str(entry.get("locale") or ""),
            "roles": list(roles) if roles is not None else ["subscriber"],
            "registered_date": str(entry.get("registered_date")
                                   or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")),
            "has_published_posts": bool(entry.get("has_published_posts", False)),
        }
        self._users[user_id] = record
        self._by_login[username.lower()] = user_id
        if email:
            self._by_email.setdefault(email.lower(), user_id)
        self._slugs.add(slug)
        self._next_id = max(self._next_id, user_id + 1)
        return record

    def _unique_slug(self, slug: str) -> str:
        if slug not in self._slugs:
            return slug
        suffix = 2
        while True:
            candidate = f"{slug[:49 - len(str(suffix))]}-{suffix}"
            if candidate not in self._slugs:
                return candidate
            suffix += 1

    def _delete_user(self, user_id: int) -> dict:
        record = self._users.pop(user_id)
        self._by_login.pop(record["username"].lower(), None)
        if record["email"] and self._by_email.get(record["email"].lower()) == user_id:
            del self._by_email[record["email"].lower()]
        self._slugs.discard(record["slug"])
        return record

    @staticmethod
    def _public_record(record: dict) -> dict:
        return {k: copy.deepcopy(v) for k, v in record.items() if k != "has_published_posts"}

    def _caps(self, record: dict) -> dict[str, bool]:
        caps: dict[str, bool] = {}
        for role in record["roles"]:
            caps.update(_ROLE_CAPS.get(role, _DEFAULT_CUSTOM_ROLE_CAPS))
            caps[role] = True
        return caps

    def _can(self, user: dict | None, cap: str) -> bool:
        return user is not None and self._caps(user).get(cap, False)

    # ------------------------------------------------------------------ request handling

    def _authenticate(self, headers: dict) -> dict | None:
        if not self.app_passwords_available:
            return None
        value = headers.get("authorization", "")
        if not value.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        name, _, password = decoded.partition(":")
        user_id = self._by_login.get(name.lower())
        if user_id is None and "@" in name:
            user_id = self._by_email.get(name.lower())
        if user_id != 1 or not password:
            return None
        if self._password_key(password) != self._app_password_key:
            return None
        return self._users.get(1)

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

    def _take_injection(self, method: str, raw_path: str, route: str | None,
                        body_bytes: bytes = b"") -> _Injection | None:
        with self._lock:
            for injection in self._injections:
                if injection.times > 0 and injection.matches(method, raw_path, route, body_bytes):
                    injection.times -= 1
                    if injection.times == 0:
                        self._injections.remove(injection)
                    return injection
        return None

    @staticmethod
    def _rest_route(raw_path: str, query: dict) -> str | None:
        if raw_path == "/wp-json" or raw_path.startswith("/wp-json/"):
            route = raw_path[len("/wp-json"):]
        elif raw_path in ("/", "/index.php") and "rest_route" in query:
            route = query["rest_route"]
        else:
            return None
        route = route.rstrip("/")
        return route or "/"

    def _rest_headers(self) -> list[tuple[str, str]]:
        return [("Link", f'<{self.rest_url}/>; rel="https://api.w.org/"'),
                ("Access-Control-Expose-Headers", "X-WP-Total, X-WP-TotalPages, Link")]

    def _handle_rest(self, method: str, route: str, query: dict, body_bytes: bytes, headers: dict,
                     call: Call) -> _Response:
        current = self._authenticate(headers)
        try:
            params, body = self._request_params(method, query, body_bytes, headers)
            call.body = _redact_body(body)
            response = self._dispatch(method, route, params, query, current)
        except _WpError as err:
            payload = {"code": err.code, "message": err.message, "data": err.data, **err.extra}
            response = _json_response(err.status, payload)
        if not any(name == "Link" for name, _ in response.headers):
            response.headers.extend(self._rest_headers())
        else:
            response.headers.append(self._rest_headers()[1])
        return response

    @staticmethod
    def _request_params(method: str, query: dict, body_bytes: bytes, headers: dict) -> tuple[dict, dict | None]:
        """WordPress merges URL query, form body and JSON body; JSON wins, then the form, then the query."""
        params = {k: v for k, v in query.items() if k != "rest_route"}
        body: dict | None = None
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if body_bytes and method in ("POST", "PUT", "PATCH", "DELETE"):
            if content_type == "application/json":
                try:
                    parsed = json.loads(body_bytes.decode("utf-8"))
                except (ValueError, UnicodeDecodeError) as exc:
                    raise _WpError("rest_invalid_json", "Invalid JSON body passed.", 400,
                                   data={"status": 400, "json_error_code": 4,
                                         "json_error_message": "Syntax error"}) from exc
                body = parsed if isinstance(parsed, dict) else {}
            else:
                body = _parse_php_form(body_bytes.decode("utf-8", "replace"))
            params.update(body)
        return params, body

    def _dispatch(self, method: str, route: str, params: dict, query: dict, current: dict | None) -> _Response:
        if route == "/":
            if method in ("GET", "HEAD"):
                return _json_response(200, self._index())
        elif route == "/wp/v2/users":
            if method in ("GET", "HEAD"):
                return self._list_users(params, query, current)
            if method == "POST":
                return self._create_user(params, current)
            if method == "OPTIONS":
                return _json_response(200, self._users_route_description(with_schema=True))
        elif route == "/wp/v2/users/me":
            if method in ("GET", "HEAD"):
                return self._get_me(params, current)
        elif (match := re.fullmatch(r"/wp/v2/users/(\d+)", route)) is not None:
            user_id = int(match.group(1))
            if method in ("GET", "HEAD"):
                return self._get_user(user_id, params, current)
            if method == "DELETE":
                return self._delete(user_id, params, current)
            if method in ("POST", "PUT", "PATCH"):
                raise _WpError("emulator_not_implemented", "Updating users is not emulated.", 501)
        raise _WpError("rest_no_route", "No route was found matching the URL and request method.", 404)

    # ------------------------------------------------------------------ REST endpoints

    def _index(self) -> dict:
        authentication: dict | list = []
        if self.app_passwords_available:
            authentication = {"application-passwords": {"endpoints": {
                "authorization": f"{self.url}/wp-admin/authorize-application.php"}}}
        return {
            "name": self.site_name, "description": "", "url": self.url, "home": self.url,
            "gmt_offset": "0", "timezone_string": "",
            "namespaces": ["oembed/1.0", "wp/v2", "wp-site-health/v1", "wp-block-editor/v1"],
            "authentication": authentication,
            "routes": {
                "/": {"namespace": "", "methods": ["GET"], "endpoints": [{"methods": ["GET"], "args": {}}]},
                "/wp/v2/users": self._users_route_description(with_schema=False),
                "/wp/v2/users/(?P<id>[\\d]+)": {"namespace": "wp/v2", "methods": ["GET", "DELETE"],
                                                "endpoints": []},
                "/wp/v2/users/me": {"namespace": "wp/v2", "methods": ["GET"], "endpoints": []},
            },
            "_links": {"help": [{"href": "https://developer.wordpress.org/rest-api/"}]},
        }

    def _users_route_description(self, *, with_schema: bool) -> dict:
        locale = {"description": "Locale for the user.", "type": "string", "enum": list(self.locales),
                  "required": False}
        description: dict[str, Any] = {
            "namespace": "wp/v2",
            "methods": ["GET", "POST"],
            "endpoints": [
                {"methods": ["GET"], "args": {
                    "context": {"type": "string", "enum": ["view", "embed", "edit"], "default": "view",
                                "required": False},
                    "page": {"type": "integer", "default": 1, "minimum": 1, "required": False},
                    "per_page": {"type": "integer", "default": 10, "minimum": 1, "maximum": 100,
                                 "required": False},
                    "search": {"type": "string", "required": False},
                }},
                {"methods": ["POST"], "args": {
                    "username": {"type": "string", "required": True},
                    "email": {"type": "string", "format": "email", "required": True},
                    "password": {"type": "string", "required": True},
                    "locale": locale,
                    "roles": {"type": "array", "items": {"type": "string"}, "required": False},
                }},
            ],
        }
        if with_schema:
            description["schema"] = {"title": "user", "type": "object", "properties": {
                "locale": {**{k: v for k, v in locale.items() if k != "required"}, "context": ["edit"]}}}
        return description

    def _validate_list_params(self, params: dict) -> dict:
        """The collection args' schema validation (rest_validate_request_arg), all errors at once."""
        problems: dict[str, tuple[str, str, Any]] = {}
        values: dict[str, Any] = {}

        def integer(name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> None:
            raw = params.get(name)
            if raw is None:
                values[name] = default
                return
            text = str(raw).strip()
            if not re.fullmatch(r"[+-]?\d+", text):
                problems[name] = ("rest_invalid_type", f"{name} is not of type integer.", {"param": name})
                return
            number = int(text)
            if minimum is not None and maximum is not None and not minimum <= number <= maximum:
                message = f"{name} must be between {minimum} (inclusive) and {maximum} (inclusive)"
                problems[name] = ("rest_out_of_bounds", message, None)
            elif minimum is not None and number < minimum:
                problems[name] = ("rest_out_of_bounds", f"{name} must be greater than or equal to {minimum}", None)
            values[name] = number

        def enum(name: str, default: str, allowed: tuple[str, ...]) -> None:
            raw = params.get(name)
            if raw is None:
                values[name] = default
                return
            if str(raw) not in allowed:
                listed = ", ".join(allowed[:-1]) + f", and {allowed[-1]}" if len(allowed) > 2 else \
                    " and ".join(allowed)
                problems[name] = ("rest_not_in_enum", f"{name} is not one of {listed}.", None)
            values[name] = str(raw)

        def int_list(name: str) -> None:
            items = _parse_list(params.get(name))
            if any(not re.fullmatch(r"\d+", str(item)) for item in items):
                problems[name] = ("rest_invalid_type", f"{name}[0] is not of type integer.", {"param": f"{name}[0]"})
                return
            values[name] = [int(item) for item in items]

        enum("context", "view", ("view", "embed", "edit"))
        integer("page", 1, minimum=1)
        integer("per_page", 10, minimum=1, maximum=100)
        values["search"] = sanitize_text_field(params.get("search")) if params.get("search") is not None else ""
        int_list("exclude")
        int_list("include")
        if params.get("offset") is not None:
            integer("offset", 0)
        # Real WordPress 6.1 names orderby before order in this error (checked against it).
        enum("orderby", "name", tuple(_ORDERBY_COLUMNS))
        enum("order", "asc", ("asc", "desc"))
        values["slug"] = [str(s) for s in _parse_list(params.get("slug"))]
        values["roles"] = [str(r) for r in _parse_list(params.get("roles"))]
        if problems:
            raise _param_error(problems)
        return values

    def _auth_code(self, current: dict | None) -> int:
        # rest_authorization_required_code(): 401 for anonymous callers, 403 for logged-in ones.
        return 403 if current is not None else 401

    def _list_users(self, params: dict, query: dict, current: dict | None) -> _Response:
        args = self._validate_list_params(params)
        can_list = self._can(current, "list_users")
        if args["roles"] and not can_list:
            raise _WpError("rest_user_cannot_view", "Sorry, you are not allowed to filter users by role.",
                           self._auth_code(current))
        if args["context"] == "edit" and not can_list:
            raise _WpError("rest_forbidden_context", "Sorry, you are not allowed to edit users.",
                           self._auth_code(current))
        if args["orderby"] in ("email", "registered_date") and not can_list:
            raise _WpError("rest_forbidden_orderby",
                           "Sorry, you are not allowed to order users by this parameter.",
                           self._auth_code(current))
        with self._lock:
            matches = self._query_users(args, can_list)
            per_page = args["per_page"]
            offset = args["offset"] if args.get("offset") else (args["page"] - 1) * per_page
            page_rows = matches[offset:offset + per_page]
            items = [self._prepare(u, args["context"], current) for u in page_rows]
        total = len(matches)
        max_pages = math.ceil(total / per_page)
        page = math.ceil(offset / per_page + 1)
        headers = [("X-WP-Total", str(total)), ("X-WP-TotalPages", str(max_pages))]
        links = []
        if page > 1:
            links.append(f'<{self._page_link(query, min(page - 1, max_pages))}>; rel="prev"')
        if max_pages > page:
            links.append(f'<{self._page_link(query, page + 1)}>; rel="next"')
        if links:
            headers.append(("Link", ", ".join(links)))
        return _json_response(200, items, headers)

    def _page_link(self, query: dict, page: int) -> str:
        # add_query_arg('page', N, rest_url('wp/v2/users') + urlencoded request query), like WordPress.
        # Array arguments come back from WordPress's sanitising as PHP arrays: name[0]=..&name[1]=..
        pairs = []
        for key, value in query.items():
            if key in _ARRAY_LIST_ARGS:
                pairs.extend((f"{key}%5B{n}%5D", _php_urlencode(str(item)))
                             for n, item in enumerate(_parse_list(value)))
            else:
                pairs.append((key, _php_urlencode(str(value))))
        if any(k == "page" for k, _ in pairs):
            pairs = [(k, str(page) if k == "page" else v) for k, v in pairs]
        else:
            pairs.append(("page", str(page)))
        return f"{self.rest_url}/wp/v2/users?" + "&".join(f"{k}={v}" for k, v in pairs)

    def _query_users(self, args: dict, can_list: bool) -> list[dict]:
        """WP_User_Query as the users controller drives it."""
        if args["include"]:
            candidates = [self._users[i] for i in dict.fromkeys(args["include"]) if i in self._users]
        else:
            candidates = list(self._users.values())
        if args["exclude"]:
            excluded = set(args["exclude"])
            candidates = [u for u in candidates if u["id"] not in excluded]
        if not can_list:
            candidates = [u for u in candidates if u["has_published_posts"]]
        if args["roles"]:
            wanted = set(args["roles"])
            candidates = [u for u in candidates if wanted.intersection(u["roles"])]
        if args["slug"]:
            slugs = set(args["slug"])
            candidates = [u for u in candidates if u["slug"] in slugs]
        search = args["search"].strip()
        if search:
            candidates = self._search(candidates, search, can_list)
        return self._order(candidates, args)

    @staticmethod
    def _search(candidates: list[dict], term: str, can_list: bool) -> list[dict]:
        # The controller wraps the term as *term*; WP_User_Query picks the columns from the term.
        needle = term.strip("*").lower()
        if not needle:
            return candidates
        if not can_list:
            columns = ("id", "username", "slug", "name")
        elif "@" in needle:
            columns = ("email",)
        elif _is_php_numeric(needle):
            columns = ("username", "id")
        elif re.match(r"https?://", needle):
            columns = ("url",)
        else:
            columns = ("username", "url", "email", "slug", "name")
        found = []
        for user in candidates:
            for column in columns:
                if column == "id":
                    if str(user["id"]) == needle:
                        found.append(user)
                        break
                elif needle in user[column].lower():
                    found.append(user)
                    break
        return found

    @staticmethod
    def _order(users: list[dict], args: dict) -> list[dict]:
        orderby = args["orderby"]
        reverse = args["order"] == "desc"
        if orderby == "include" and args["include"]:
            position = {user_id: n for n, user_id in enumerate(args["include"])}
            return sorted(users, key=lambda u: position.get(u["id"], 0), reverse=reverse)
        column = {"id": "id", "name": "name", "registered_date": "registered_date", "slug": "slug",
                  "email": "email", "url": "url"}.get(orderby, "name")
        if column == "id":
            return sorted(users, key=lambda u: u["id"], reverse=reverse)
        return sorted(users, key=lambda u: (str(u[column]).lower(), u["id"]), reverse=reverse)

    def _prepare(self, user: dict, context: str, current: dict | None) -> dict:
        """prepare_item_for_response(): the fields of the user schema for the context."""
        link = f"{self.url}/author/{user['slug']}/"
        avatar_hash = f"{abs(hash(user['email'].lower())) % (1 << 64):032x}"
        avatars = {str(size): f"https://secure.gravatar.com/avatar/{avatar_hash}?s={size}&d=mm&r=g"
                   for size in (24, 48, 96)}
        links = {"self": [{"href": f"{self.rest_url}/wp/v2/users/{user['id']}"}],
                 "collection": [{"href": f"{self.rest_url}/wp/v2/users"}]}
        if context != "edit":
            data: dict[str, Any] = {"id": user["id"], "name": user["name"], "url": user["url"],
                                    "description": user["description"], "link": link, "slug": user["slug"],
                                    "avatar_urls": avatars}
            if context == "view":
                data["meta"] = []
            data["_links"] = links
            return data
        caps = self._caps(user)
        return {
            "id": user["id"], "username": user["username"], "name": user["name"],
            "first_name": user["first_name"], "last_name": user["last_name"], "email": user["email"],
            "url": user["url"], "description": user["description"], "link": link,
            "locale": user["locale"] or "en_US", "nickname": user["nickname"], "slug": user["slug"],
            "roles": list(user["roles"]), "registered_date": user["registered_date"],
            "capabilities": caps, "extra_capabilities": {r: True for r in user["roles"]},
            "avatar_urls": avatars, "meta": {"persisted_preferences": []}, "_links": links,
        }

    def _context(self, params: dict) -> str:
        context = str(params.get("context") or "view")
        if context not in ("view", "embed", "edit"):
            raise _WpError("rest_invalid_param", "Invalid parameter(s): context", 400, data={
                "status": 400, "params": {"context": "context is not one of view, embed, and edit."},
                "details": {"context": {"code": "rest_not_in_enum",
                                        "message": "context is not one of view, embed, and edit.",
                                        "data": None}}})
        return context

    def _get_me(self, params: dict, current: dict | None) -> _Response:
        context = self._context(params)
        if current is None:
            raise _WpError("rest_not_logged_in", "You are not currently logged in.", 401)
        with self._lock:
            return _json_response(200, self._prepare(current, context, current))

    def _get_user(self, user_id: int, params: dict, current: dict | None) -> _Response:
        context = self._context(params)
        with self._lock:
            user = self._users.get(user_id)
            if user is None:
                raise _WpError("rest_user_invalid_id", "Invalid user ID.", 404)
            is_self = current is not None and current["id"] == user_id
            if not is_self:
                if context == "edit" and not self._can(current, "edit_users"):
                    raise _WpError("rest_forbidden_context", "Sorry, you are not allowed to edit this user.",
                                   self._auth_code(current))
                if (not self._can(current, "edit_users") and not self._can(current, "list_users")
                        and not user["has_published_posts"]):
                    raise _WpError("rest_user_cannot_view", "Sorry, you are not allowed to list users.",
                                   self._auth_code(current))
            return _json_response(200, self._prepare(user, context, current))

    def _delete(self, user_id: int, params: dict, current: dict | None) -> _Response:
        if params.get("reassign") is None:
            raise _WpError("rest_missing_callback_param", "Missing parameter(s): reassign", 400,
                           data={"status": 400, "params": ["reassign"]})
        with self._lock:
            if user_id not in self._users:
                raise _WpError("rest_user_invalid_id", "Invalid user ID.", 404)
            if not self._can(current, "delete_users"):
                raise _WpError("rest_user_cannot_delete", "Sorry, you are not allowed to delete this user.",
                               self._auth_code(current))
            if str(params.get("force", "")).lower() not in ("1", "true"):
                raise _WpError("rest_trash_not_supported",
                               "Users do not support trashing. Set 'force=true' to delete.", 501)
            reassign = str(params.get("reassign"))
            if reassign not in ("", "false") and (not reassign.isdigit() or int(reassign) not in self._users
                                                  or int(reassign) == user_id):
                raise _WpError("rest_user_invalid_reassign", "Invalid user ID for reassignment.", 400)
            previous = self._prepare(self._users[user_id], "edit", current)
            self._delete_user(user_id)
        return _json_response(200, {"deleted": True, "previous": previous})

    # ------------------------------------------------------------------ create

    def _create_user(self, params: dict, current: dict | None) -> _Response:
        # 1. has_valid_params(): required arguments (null counts as missing).
        missing = [name for name in _REQUIRED_CREATE_ARGS if params.get(name) is None]
        if missing:
            raise _WpError("rest_missing_callback_param", "Missing parameter(s): " + ", ".join(missing), 400,
                           data={"status": 400, "params": missing})
        # 2. Schema validation of every argument, one error naming all bad ones.
        invalid: dict[str, tuple[str, str, Any]] = {}
        for name in _CREATE_ARG_ORDER:
            value = params.get(name)
            if value is None:
                continue
            if name == "roles":
                if not isinstance(value, list | str) or any(not isinstance(r, str) for r in _parse_list(value)):
                    invalid[name] = ("rest_invalid_type", "roles[0] is not of type string.", None)
                continue
            if not isinstance(value, str):
                invalid[name] = ("rest_invalid_type", f"{name} is not of type string.", {"param": name})
                continue
            if name == "email" and not is_email(value):
                invalid[name] = ("rest_invalid_email", "Invalid email address.", None)
            elif name == "locale" and value not in self.locales:
                listed = " and ".join(self.locales) if len(self.locales) <= 2 else \
                    ", ".join(self.locales[:-1]) + ", and " + self.locales[-1]
                invalid[name] = ("rest_not_in_enum", f"locale is not one of {listed}.", None)
        if invalid:
            raise _param_error(invalid)
        # 3. sanitize_params(): check_username, check_user_password, sanitize_text_field...
        problems: dict[str, tuple[str, str, Any]] = {}
        clean: dict[str, Any] = {}
        for name in params:
            value = params[name]
            if name == "username":
                username = str(value)
                if not username or sanitize_user_strict(username) != username:
                    problems[name] = ("rest_user_invalid_username", "This username is invalid because it "
                                      "uses illegal characters. Please enter a valid username.", {"status": 400})
                elif username.lower() in self.illegal_logins:
                    problems[name] = ("rest_user_invalid_username", "Sorry, that username is not allowed.",
                                      {"status": 400})
                clean[name] = username
            elif name == "password":
                password = str(value)
                if _php_empty(password):
                    problems[name] = ("rest_user_invalid_password", "Passwords cannot be empty.",
                                      {"status": 400})
                elif "\\" in password:
                    problems[name] = ("rest_user_invalid_password",
                                      'Passwords cannot contain the "\\" character.', {"status": 400})
                clean[name] = password
            elif name in _TEXT_FIELDS:
                clean[name] = sanitize_text_field(value)
            elif name == "slug":
                clean[name] = sanitize_title(str(value))
            elif name == "roles":
                clean[name] = [str(r) for r in _parse_list(value)]
            else:
                clean[name] = value
        if problems:
            raise _param_error(problems)
        # 4. permission_callback
        if not self._can(current, "create_users"):
            raise _WpError("rest_cannot_create_user", "Sorry, you are not allowed to create new users.",
                           self._auth_code(current))
        # 5. create_item()
        if not _php_empty(clean.get("id")):
            raise _WpError("rest_user_exists", "Cannot create existing user.", 400)
        roles = clean.get("roles")
        if roles:
            for role in roles:
                if role not in self.roles:
                    raise _WpError("rest_user_invalid_role", f"The role {role} does not exist.", 400)
        with self._lock:
            record = self._insert_user(clean)
            response = self._prepare(record, "edit", current)
        return _json_response(201, response, [("Location", f"{self.rest_url}/wp/v2/users/{record['id']}")])

    def _insert_user(self, data: dict) -> dict:
        """wp_insert_user() for a new user, then the database's column limits."""
        login = sanitize_user_strict(str(data["username"])).strip()
        if not login:
            raise _insert_error("empty_user_login", "Cannot create a user with an empty login name.")
        if len(login) > 60:
            raise _insert_error("user_login_too_long", "Username may not be longer than 60 characters.")
        if login.lower() in self._by_login:
            raise _insert_error("existing_user_login", "Sorry, that username already exists!")
        slug = sanitize_title(sanitize_user_strict(data["slug"]) if data.get("slug") else login[:50])
        if len(slug) > 50:
            raise _insert_error("user_nicename_too_long", "Nicename may not be longer than 50 characters.")
        email = str(data.get("email") or "").strip()
        if email and email.lower() in self._by_email:
            raise _insert_error("existing_user_email", "Sorry, that email address is already used!")
        url = str(data.get("url") or "")
        if len(url) > 100:
            raise _insert_error("user_url_too_long", "User URL may not be longer than 100 characters.")
        first = "" if _php_empty(data.get("first_name")) else _pre_user_text(data["first_name"])
        last = "" if _php_empty(data.get("last_name")) else _pre_user_text(data["last_name"])
        nickname = _pre_user_text(login if _php_empty(data.get("nickname")) else data["nickname"])
        if not _php_empty(data.get("name")):
            display_name = data["name"]
        elif first and last:
            display_name = f"{first} {last}"
        else:
            display_name = first or last or login
        display_name = _pre_user_text(display_name)
        # users.user_email is varchar(100), users.display_name varchar(250): the INSERT fails and
        # WordPress dies with a TypeError, answered as a critical error.
        if len(email) > 100 or len(display_name) > 250:
            raise _WpError("internal_server_error", _CRITICAL_ERROR_MESSAGE, 500, additional_errors=[])
        # "roles" given (even []): no default role, exactly those roles; absent: the default role.
        roles = list(dict.fromkeys(data["roles"])) if "roles" in data else ["subscriber"]
        return self._store_user({
            "username": login, "email": email, "name": display_name, "first_name": first, "last_name": last,
            "nickname": nickname, "slug": self._unique_slug(slug), "url": url,
            "description": str(data.get("description") or ""), "locale": str(data.get("locale") or ""),
            "roles": roles,
        })

    # ------------------------------------------------------------------ wp-login.php

    def _handle_site(self, method: str, raw_path: str, query: dict, body_bytes: bytes, headers: dict,
                     call: Call) -> _Response:
        if raw_path == "/wp-login.php":
            form = _parse_php_form(body_bytes.decode("utf-8", "replace")) if body_bytes else {}
            call.body = form or None
            action = query.get("action", "login")
            if action in ("lostpassword", "retrievepassword"):
                if method == "POST":
                    return self._lost_password(form)
                return _html_response(200, _login_page("Lost Password", None))
            return _html_response(200, _login_page("Log In", None))
        if raw_path in ("/", "/index.php"):
            return _html_response(200, f"<!DOCTYPE html><html><head><title>{html.escape(self.site_name)}"
                                       "</title></head><body></body></html>")
        return _html_response(404, "<!DOCTYPE html><html><body><h1>Page not found</h1></body></html>")

    def _lost_password(self, form: dict) -> _Response:
        """retrieve_password() + the wp-login.php lostpassword case."""
        login = str(form.get("user_login") or "").strip()
        user = None
        if not login:
            return _html_response(200, _login_page("Lost Password", _EMPTY_LOGIN_HTML))
        with self._lock:
            if login.find("@") > 0:
                user_id = self._by_email.get(login.lower()) or self._by_login.get(login.lower())
            else:
                user_id = self._by_login.get(login.lower())
            user = self._users.get(user_id) if user_id else None
            if user is None:
                return _html_response(200, _login_page("Lost Password", _NO_ACCOUNT_HTML))
            if not self.mail_works:
                return _html_response(200, _login_page("Lost Password", _MAIL_FAILED_HTML))
            self.mails.append({"user_login": user["username"], "to": user["email"], "user_id": user["id"],
                               "subject": f"[{self.site_name}] Password Reset"})
        response = _Response(302, b"", [("Location", "/wp-login.php?checkemail=confirm"),
                                        ("Set-Cookie", "wordpress_test_cookie=WP%20Cookie%20check; path=/"),
                                        ("Content-Type", "text/html; charset=UTF-8")])
        return response


# --------------------------------------------------------------------------- HTTP plumbing


def _param_error(problems: dict[str, tuple[str, str, Any]]) -> _WpError:
    return _WpError("rest_invalid_param", "Invalid parameter(s): " + ", ".join(problems), 400, data={
        "status": 400,
        "params": {name: message for name, (_, message, _) in problems.items()},
        "details": {name: {"code": code, "message": message, "data": data}
                    for name, (code, message, data) in problems.items()},
    })


def _parse_php_form(text: str) -> dict:
    """application/x-www-form-urlencoded the way PHP fills $_POST (name[]=a&name[]=b gives a list)."""
    result: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        match = re.fullmatch(r"([^\[\]]+)\[[^\[\]]*\]", key)
        if match:
            result.setdefault(match.group(1), [])
            if isinstance(result[match.group(1)], list):
                result[match.group(1)].append(value)
        else:
            result[key] = value
    return result


def _json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> _Response:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return _Response(status, body, [("Content-Type", "application/json; charset=UTF-8"), *(headers or [])])


def _html_response(status: int, text: str) -> _Response:
    return _Response(status, text.encode("utf-8"), [("Content-Type", "text/html; charset=UTF-8")])


def _login_page(title: str, error_html: str | None) -> str:
    error = f'<div id="login_error">\t{error_html}<br />\n</div>\n' if error_html else ""
    return (f"<!DOCTYPE html>\n<html><head><title>{title} &lsaquo; WordPress</title></head>"
            f'<body class="login"><div id="login">{error}<form name="lostpasswordform" '
            'id="lostpasswordform" action="/wp-login.php?action=lostpassword" method="post">'
            '<input type="text" name="user_login" id="user_login" /></form></div></body></html>\n')


def _injected_response(injection: _Injection) -> _Response:
    headers: list[tuple[str, str]] = []
    if injection.retry_after is not None:
        headers.append(("Retry-After", str(injection.retry_after)))
    if injection.body is None:
        reason = {429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable",
                  504: "Gateway Timeout"}.get(injection.status, "Error")
        response = _html_response(injection.status, f"<html><body><h1>{injection.status} {reason}</h1>"
                                                    "</body></html>")
    elif isinstance(injection.body, dict | list):
        response = _json_response(injection.status, injection.body)
    else:
        response = _html_response(injection.status, str(injection.body))
    response.headers.extend(headers)
    return response


def _redacted_headers(headers: dict) -> dict:
    redacted = dict(headers)
    for name in list(redacted):
        if name.lower() in ("authorization", "cookie"):
            scheme = str(redacted[name]).split(" ", 1)[0]
            redacted[name] = f"{scheme} <redacted>"
    return redacted


def _decode_body_for_record(body_bytes: bytes, headers: dict) -> dict | None:
    if not body_bytes:
        return None
    text = body_bytes.decode("utf-8", "replace")
    if headers.get("content-type", "").startswith("application/json"):
        try:
            parsed = json.loads(text)
            body = parsed if isinstance(parsed, dict) else {"_": parsed}
        except ValueError:
            return {"_raw": text}
    else:
        body = _parse_php_form(text)
    return _redact_body(body)


def _redact_body(body: dict | None) -> dict | None:
    """Passwords sent to the emulator are not kept in the call record."""
    if body is None:
        return None
    return {k: ("<redacted>" if k in ("password", "pass1", "pass2") else v) for k, v in body.items()}


class _Handler(BaseHTTPRequestHandler):
    emulator: WordPressEmulator
    server_version = "WordPressEmulator/6.1"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler API
        pass

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        response, _call, injection = self.emulator.handle(self.command, parts.path or "/", query, body, headers)
        if injection is not None and injection.lose_answer:
            # The request was carried out; the caller never hears about it.
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve


# --------------------------------------------------------------------------- CLI


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `python -m sandbox wordpress ...`."""
    parser = subparsers.add_parser("wordpress", help="run the WordPress REST users emulator",
                                   description="Serve the WordPress 6.1 REST users emulator until Ctrl-C.")
    add_common_options(parser, system="wordpress", port=8002)
    parser.add_argument("--login", default="admin", help="the API user's login (user 1)")
    parser.add_argument("--app-password", default="abcd EFGH 1234 ijkl MNOP 5678",
                        help="the application password the API user authenticates with")
    parser.add_argument("--mail-fails", action="store_true", help="make the lostpassword form fail to mail")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    emulator = WordPressEmulator(login=args.login, app_password=args.app_password,
                                 mail_works=not args.mail_fails)
    return serve(emulator, args, lambda e: (
        f"WordPress emulator on {e.url} (REST API {e.rest_url}, login {args.login!r}, {len(e.users)} users)"))
