"""In-memory emulator of a Drupal 7.101 site with Services 7.x-3.20 (REST server, session authentication,
JSON), answering as the real site does (tests/contract/test_drupal7_contract.py runs the same assertions
against both).

* `POST /<endpoint>/user/login.json` (`username`/`password`): 200 with sessid, session_name, token and
  the user; 401 "Wrong username or password."; 406 "Already logged in as x." with a live session cookie.
  `POST .../user/logout.json`, `POST .../user/token.json`, `GET /services/session/token`.
* Writes need `X-CSRF-Token` of the session (401 "CSRF validation failed"); an unknown session is the
  anonymous visitor (403 "Access denied for user anonymous" where a permission is needed).
* `POST .../user.json`: core's user_register_form rules (406 `form_errors`, messages as Drupal 7.101
  words them); roles dropped silently without `administer permissions`; an unknown rid or language is
  "An illegal choice has been detected..."; fields only when on the registration form.
* `GET .../user.json` (index: `parameters[x]` IN with CSV values, `options[parameters_op][x]=LIKE`,
  `fields`, `page`, `pagesize` capped at 20, `options[orderby][uid]`), `GET .../user/<uid>.json`,
  `POST .../user/<uid>/resend_welcome_email.json` and `.../password_reset.json` (one recorded mail each).
* `GET /admin/people/create` (HTML: role checkboxes only with `administer permissions`, language radios
  on a multilingual site, the fields on the registration form), `GET /user/register` (403 when only
  administrators register accounts).
* `case_sensitive=True` compares like SQLite (IN exact, LIKE ASCII-case-insensitive); the default is
  MariaDB's general_ci. Fault injection (`inject`), `calls`, `mails`, `expire_sessions()`.
"""

from __future__ import annotations

import copy
import html
import json
import re
import secrets
import threading
import time
import traceback
import unicodedata
from dataclasses import dataclass
from typing import Any

from sandbox.httpserver import LoopbackServer

PAGE_MAX = 20
SITE_NAME = "cmsuser real Drupal 7"
_NAME_ASCII_RE = re.compile(r"[^\x80-\U0010ffff a-zA-Z0-9@+_.'-]")
_NAME_BAD_RE = re.compile("[\x80-\xa0\xad\u2000-\u200f\u2028-\u202f\u205f-\u206f\ufeff\uff01-\uff60\ufff9-\ufffd\x00-\x1f]")
_EMAIL_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                       r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
ILLEGAL = "An illegal choice has been detected. Please contact the site administrator."
DEFAULT_ROLES = {1: "anonymous user", 2: "authenticated user", 3: "administrator", 4: "member", 5: "volunteer",
                 6: "site boss", 7: "cmsuser api"}
API_PERMISSIONS = ("administer users", "administer permissions", "access user profiles")


def general_ci(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text or "")
    return "".join(ch for ch in folded if not unicodedata.combining(ch)).casefold().rstrip(" ")


@dataclass
class Call:
    method: str
    path: str
    query: list
    body: Any
    status: int | None = None


@dataclass
class _Injection:
    method: str | None
    path: str | None
    status: int | None
    times: int
    delay: float
    lose_answer: bool
    retry_after: Any
    body: Any

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        if self.path is None:
            return True
        return path.startswith(self.path[:-1]) if self.path.endswith("*") else path == self.path


class Drupal7Emulator(LoopbackServer):
    """A Drupal 7 + Services 3.x site's users on loopback. See the module docstring."""

    server_version = "Drupal7Emulator/7.101"
    thread_name = "drupal7-emulator"

    def __init__(self, login: str = "cmsuser_api", password: str = "api-password", *, endpoint: str = "api",
                 api_permissions: tuple[str, ...] = API_PERMISSIONS, languages: tuple[str, ...] = ("en", "fr"),
                 case_sensitive: bool = False, register: int = 0, admin_login: str = "admin"):
        self.login, self._password, self.endpoint = login, password, endpoint
        self.languages = list(languages)
        self.case_sensitive = case_sensitive
        self.register = register          # Drupal's user_register: 0 administrators only, 1 visitors, 2 with approval
        self.roles: dict[int, str] = dict(DEFAULT_ROLES)
        self.permissions: dict[int, set[str]] = {7: set(api_permissions)}
        self.user_fields: dict[str, bool] = {"field_member_number": True, "field_staff_note": False}
        self.calls: list[Call] = []
        self.mails: list[dict] = []
        self.internal_errors: list[str] = []
        self._sessions: dict[str, dict] = {}   # sessid -> {"uid", "token"}
        self._session_name = "SESS" + secrets.token_hex(16)
        self._lock = threading.RLock()
        self._injections: list[_Injection] = []
        self._users: dict[int, dict] = {}
        self._next_uid = 1
        self.url = ""
        self._store({"uid": 1, "name": admin_login, "mail": "admin@example.test", "roles": [3]})
        self._store({"uid": 2, "name": login, "mail": "cmsuser-api@example.test", "roles": [7]})

    def __repr__(self) -> str:
        return f"Drupal7Emulator(url={self.url!r}, users={len(self._users)})"

    # ------------------------------------------------------------------ public API

    @property
    def password(self) -> str:
        return self._password

    @property
    def users(self) -> list[dict]:
        with self._lock:
            return [copy.deepcopy(u) for _, u in sorted(self._users.items())]

    def set_permissions(self, permissions: list[str]) -> None:
        with self._lock:
            self.permissions[7] = set(permissions)

    def expire_sessions(self) -> None:
        """Forget every session, as a site whose sessions expired (or whose sessions table was emptied)."""
        with self._lock:
            self._sessions.clear()

    def seed(self, data: dict) -> None:
        """{"roles": {rid: name}, "users": [{uid?, name, mail, roles: [names or rids], status, language,
        fields}], "languages": [...], "user_fields": {name: on_register_form}}."""
        with self._lock:
            for rid, name in ((data or {}).get("roles") or {}).items():
                self.roles[int(rid)] = str(name)
            if (data or {}).get("languages") is not None:
                self.languages = list(data["languages"])
            self.user_fields.update((data or {}).get("user_fields") or {})
            for user in (data or {}).get("users") or []:
                self._store(dict(user))

    def seed_file(self, path) -> None:
        from sandbox.cli import read_seed

        self.seed(read_seed(path, "drupal7"))

    def inject(self, *, method: str | None = None, path: str | None = None, status: int | None = 503,
               times: int = 1, delay: float = 0.0, lose_answer: bool = False, retry_after: Any = None,
               body: Any = None) -> None:
        """For the next `times` calls matching method/path (e.g. "/api/user.json"; a trailing "*" matches a
        prefix): wait `delay` s, then answer `status` (None: normally), or with lose_answer=True carry the
        request out and drop the connection."""
        with self._lock:
            self._injections.append(_Injection(method, path, status, times, delay, lose_answer, retry_after, body))

    def clear_faults(self) -> None:
        with self._lock:
            self._injections.clear()

    # ------------------------------------------------------------------ store

    def _rid(self, role: Any) -> int:
        if isinstance(role, int) or str(role).isdigit():
            return int(role)
        return next(rid for rid, name in self.roles.items() if name.lower() == str(role).lower())

    def _store(self, entry: dict) -> dict:
        name = str(entry.get("name") or entry.get("username") or "")
        if not name or any(general_ci(u["name"]) == general_ci(name) for u in self._users.values()):
            raise ValueError(f"seed user {name!r}: missing or taken name")
        uid = int(entry.get("uid") or self._next_uid)
        record = {"uid": uid, "name": name, "mail": str(entry.get("mail") or entry.get("email") or ""),
                  "status": int(entry.get("status", 1)), "created": int(entry.get("created") or time.time()),
                  "language": str(entry.get("language") or ""),
                  "roles": sorted({self._rid(r) for r in entry.get("roles") or []} - {1, 2}),
                  "fields": dict(entry.get("fields") or {})}
        self._users[uid] = record
        self._next_uid = max(self._next_uid, uid + 1)
        return record

    def _may(self, uid: int, permission: str) -> bool:
        if uid == 1:
            return True
        user = self._users.get(uid)
        return bool(user) and any(permission in self.permissions.get(r, set()) for r in user["roles"])

    # ------------------------------------------------------------------ HTTP

    def answer(self, method: str, path: str, query: list, body: bytes, headers: dict) -> tuple:
        injection = None
        with self._lock:
            for item in self._injections:
                if item.times > 0 and item.matches(method, path):
                    item.times -= 1
                    injection = item
                    break
            call = Call(method, path, list(query), _recorded(body))
            self.calls.append(call)
        if injection is not None and injection.delay:
            time.sleep(injection.delay)
        if injection is not None and injection.status is not None and not injection.lose_answer:
            extra = [("Retry-After", str(injection.retry_after))] if injection.retry_after is not None else []
            payload = injection.body if injection.body is not None else f"<html><body>{injection.status}</body></html>"
            call.status = injection.status
            return injection.status, [("Content-Type", "text/html"), *extra], str(payload).encode(), False
        try:
            with self._lock:
                status, out_headers, payload = self._route(method, path, query, body, headers)[:3]
        except Exception:  # a bug in the emulator: answer like PHP's fatal error page, and remember it
            self.internal_errors.append(traceback.format_exc())
            status, out_headers, payload = 500, [("Content-Type", "text/html")], b"<html>Error</html>"
        call.status = status
        return status, out_headers, payload, bool(injection and injection.lose_answer)

    def _session(self, headers: dict) -> dict | None:
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self._session_name and value in self._sessions:
                return self._sessions[value]
        return None

    def _route(self, method: str, path: str, query: list, body: bytes, headers: dict):
        session = self._session(headers)
        uid = session["uid"] if session else 0
        if path == "/services/session/token":
            token = session["token"] if session else "anonymous-token"
            return 200, [("Content-Type", "text/plain;charset=UTF-8")], token.encode()
        if path == "/admin/people/create":
            return self._create_form(uid)
        if path == "/user/register":
            return (403 if self.register == 0 or uid else 200), [("Content-Type", "text/html")], b"<html></html>"
        prefix = f"/{self.endpoint}/"
        if not path.startswith(prefix):
            return 404, [("Content-Type", "text/html")], b"<html><title>Page not found</title></html>"
        route = path[len(prefix):]
        data: Any = None
        if method == "POST":
            if not headers.get("content-type", "").startswith("application/json"):
                return _fail(406, "Unsupported request content type " + headers.get("content-type", "application/x-www-form-urlencoded"))
            try:
                data = json.loads(body.decode("utf-8") or "null")
            except ValueError:
                return _fail(400, "Invalid JSON")
        if route == "user/login.json" and method == "POST":
            return self._login(session, data or {})
        if method == "POST" and session and headers.get("x-csrf-token") != session["token"]:
            return _fail(401, "CSRF validation failed")
        if route == "user/logout.json" and method == "POST":
            if not session:
                return _fail(406, "User is not logged in.")
            self._sessions = {k: v for k, v in self._sessions.items() if v is not session}
            return _ok([True])
        if route == "user/token.json" and method == "POST":
            return _ok({"token": session["token"] if session else "anonymous-token"})
        who = self._users[uid]["name"] if uid else "anonymous"
        if route == "user.json" and method == "GET":
            if not self._may(uid, "access user profiles"):
                return _fail(403, f"Access denied for user {who}")
            return self._index(query)
        if route == "user.json" and method == "POST":
            if not self._may(uid, "administer users"):
                return _fail(403, f"Access denied for user {who}")
            return self._create(uid, data if isinstance(data, dict) else {})
        match = re.fullmatch(r"user/(\d+)(?:/(resend_welcome_email|password_reset))?\.json", route)
        if match:
            target = self._users.get(int(match.group(1)))
            action = match.group(2)
            if action and method == "POST":
                if action == "resend_welcome_email" and not self._may(uid, "administer users"):
                    return _fail(403, f"Access denied for user {who}")
                if target is None:
                    return _fail(404, f"There is no user with ID {match.group(1)}.")
                self._mail(target, action)
                return _ok([True])
            if method == "GET" and not action:
                if target is None:
                    return _fail(404, f"There is no user with ID {match.group(1)}.")
                if not (uid == target["uid"] or self._may(uid, "administer users") or self._may(uid, "access user profiles")):
                    return _fail(403, f"Access denied for user {who}")
                return _ok(self._full(target))
        return 404, [("Content-Type", "text/html")], b"<html><title>Page not found</title></html>"

    def _login(self, session: dict | None, data: dict):
        if session:
            return _fail(406, f"Already logged in as {self._users[session['uid']]['name']}.")
        name, password = str(data.get("username") or ""), str(data.get("password") or "")
        user = next((u for u in self._users.values() if general_ci(u["name"]) == general_ci(name)), None)
        if user is not None and not user["status"]:
            return _fail(403, f"The username {name} has not been activated or is blocked.")
        if user is None or user["uid"] != 2 or password != self._password:
            return _fail(401, "Wrong username or password.")
        sessid, token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._sessions[sessid] = {"uid": user["uid"], "token": token}
        return _ok({"sessid": sessid, "session_name": self._session_name, "token": token,
                    "user": {**self._full(user, own=True)}},
                   extra=[("Set-Cookie", f"{self._session_name}={sessid}; path=/; HttpOnly")])

    def _full(self, user: dict, own: bool = False) -> dict:
        roles = {str(r): self.roles[r] for r in sorted({2, *user["roles"]}) if r in self.roles}
        fields = {name: ({"und": [{"value": user["fields"][name], "format": None}]} if name in user["fields"] else [])
                  for name in self.user_fields}
        return {"uid": str(user["uid"]), "name": user["name"], "mail": user["mail"], "created": str(user["created"]),
                "status": str(user["status"]), "language": user["language"], "roles": roles, **fields}

    def _matches(self, user: dict, column: str, values: list[str], like: bool) -> bool:
        have = str(user.get(column, ""))
        if column == "uid":
            return have in values
        if like:
            def fold(text: str) -> str:
                return text.lower() if self.case_sensitive else general_ci(text)
            return any(re.fullmatch("".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in fold(v)),
                                    fold(have), re.S) for v in values)
        if self.case_sensitive:
            return have in values
        return general_ci(have) in {general_ci(v) for v in values}

    def _index(self, query: list):
        params = dict(query)
        page = int(params.get("page") or 0)
        size = min(PAGE_MAX, int(params.get("pagesize") or PAGE_MAX))
        users = [u for _, u in sorted(self._users.items())]
        users.insert(0, {"uid": 0, "name": "", "mail": "", "status": 0, "created": 0})
        for key, value in query:
            m = re.fullmatch(r"parameters\[(\w+)\]", key)
            if m:
                like = params.get(f"options[parameters_op][{m.group(1)}]", "").upper() == "LIKE"
                values = [v.strip('"') for v in value.split(",")]
                users = [u for u in users if self._matches(u, m.group(1), values, like)]
        if params.get("options[orderby][uid]", "").upper() != "ASC":
            users.sort(key=lambda u: -u["created"])
        fields = (params.get("fields") or "uid,name,mail,status,created").split(",")
        rows = []
        for user in users[page * size:(page + 1) * size]:
            row = {f: str(user.get(f, "")) for f in fields if f in ("uid", "name", "mail", "status", "created")}
            row["uri"] = f"{self.url}/{self.endpoint}/user/{user['uid']}"
            rows.append(row)
        return _ok(rows)

    def _create(self, uid: int, data: dict):
        data = data.get("account", data) if isinstance(data.get("account"), dict) else data
        errors: dict[str, str] = {}
        name = str(data.get("name") or "")
        mail = str(data.get("mail") or "").strip()
        pw = data.get("pass")
        password = (pw.get("pass1") if isinstance(pw, dict) else pw) or ""
        if not name:
            errors["name"] = "Username field is required."
        if not mail:
            errors["mail"] = "E-mail address field is required."
        if not password:
            errors["pass"] = "Password field is required."
        may_roles = self._may(uid, "administer permissions")
        roles = data.get("roles") or {}
        role_ids = [str(k) for k, v in (roles.items() if isinstance(roles, dict) else enumerate(roles)) if v] \
            if isinstance(roles, dict) else [str(v) for v in roles]
        if may_roles and any(not r.isdigit() or int(r) not in self.roles or int(r) == 1 for r in role_ids):
            errors["roles"] = ILLEGAL
        language = data.get("language")
        multilingual = len(self.languages) > 1
        if multilingual and language is not None and language not in self.languages:
            errors["language"] = ILLEGAL
        if name and "name" not in errors:
            problem = _name_problem(name)
            if problem:
                errors["name"] = problem
            elif any(general_ci(u["name"]) == general_ci(name) for u in self._users.values()):
                errors["name"] = f"The name <em class=\"placeholder\">{html.escape(name)}</em> is already taken."
        if mail and "mail" not in errors:
            if len(mail) > 254 or not _EMAIL_RE.fullmatch(mail):
                errors["mail"] = f"The e-mail address <em class=\"placeholder\">{html.escape(mail)}</em> is not valid."
            elif any(general_ci(u["mail"]) == general_ci(mail) for u in self._users.values()):
                errors["mail"] = f"The e-mail address <em class=\"placeholder\">{html.escape(mail)}</em> is already taken."
        if errors:
            return 406, [("Content-Type", "application/json")], json.dumps({"form_errors": errors}).encode()
        fields = {}
        for key, value in data.items():
            if key in self.user_fields and self.user_fields[key] and isinstance(value, dict):
                items = value.get("und")
                first = items[0] if isinstance(items, list) and items else (items or {}).get("0") if isinstance(items, dict) else None
                if isinstance(first, dict) and first.get("value") not in (None, ""):
                    fields[key] = str(first["value"])
        user = self._store({"name": name, "mail": mail, "status": int(data.get("status", 1)),
                            "roles": [int(r) for r in role_ids if int(r) != 2] if may_roles else [],
                            "language": language if multilingual and language else "en", "fields": fields})
        return _ok({"uid": str(user["uid"]), "uri": f"{self.url}/{self.endpoint}/user/{user['uid']}"})

    def _mail(self, user: dict, action: str) -> None:
        if action == "resend_welcome_email" and self.register == 0:
            subject = f"An administrator created an account for you at {SITE_NAME}"
        elif action == "resend_welcome_email":
            subject = f"Account details for {user['name']} at {SITE_NAME}" + (" (pending admin approval)"
                                                                               if self.register == 2 else "")
        else:
            subject = f"Replacement login information for {user['name']} at {SITE_NAME}"
        self.mails.append({"to": user["mail"], "subject": subject, "uid": user["uid"],
                           "body": f"{self.url}/user/reset/{user['uid']}/{int(time.time())}/x"})

    def _create_form(self, uid: int):
        if not self._may(uid, "administer users"):
            return 403, [("Content-Type", "text/html")], b"<html><h1>Access denied</h1></html>"
        parts = ['<html><body><form action="/admin/people/create" method="post" id="user-register-form">',
                 '<input type="text" id="edit-name" name="name" value="" />']
        if self._may(uid, "administer permissions"):
            for rid, name in sorted(self.roles.items()):
                if rid == 1:
                    continue
                parts.append(f'<div class="form-item"><input type="checkbox" id="edit-roles-{rid}" name="roles[{rid}]" '
                             f'value="{rid}" class="form-checkbox" />  <label class="option" for="edit-roles-{rid}">'
                             f'{html.escape(name)} </label></div>')
        if len(self.languages) > 1:
            for code in self.languages:
                parts.append(f'<input type="radio" id="edit-language-{code}" name="language" value="{code}" '
                             f'class="form-radio" /><label class="option" for="edit-language-{code}">{code} </label>')
        for name, on_form in self.user_fields.items():
            if on_form:
                parts.append(f'<input type="text" id="edit-{name.replace("_", "-")}-und-0-value" '
                             f'name="{name}[und][0][value]" value="" />')
        parts.append("</form></body></html>")
        return 200, [("Content-Type", "text/html; charset=utf-8")], "".join(parts).encode()


def _name_problem(name: str) -> str | None:
    if name.startswith(" "):
        return "The username cannot begin with a space."
    if name.endswith(" "):
        return "The username cannot end with a space."
    if "  " in name:
        return "The username cannot contain multiple spaces in a row."
    if _NAME_ASCII_RE.search(name) or _NAME_BAD_RE.search(name):
        return "The username contains an illegal character."
    if len(name) > 60:
        return f"The username <em class=\"placeholder\">{html.escape(name)}</em> is too long: it must be 60 characters or less."
    return None


def _ok(payload: Any, extra: list | None = None):
    return 200, [("Content-Type", "application/json"), *(extra or [])], json.dumps(payload).encode()


def _fail(status: int, message: str):
    """Services' error: the message as a JSON list (the real site also puts it in the status line)."""
    return status, [("Content-Type", "application/json")], json.dumps([message]).encode()


def _recorded(body: bytes) -> Any:
    if not body:
        return None
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {"_raw": body.decode("utf-8", "replace")}
    if isinstance(data, dict):
        for key in ("pass", "password"):
            if key in data:
                data[key] = "<redacted>"
    return data


__all__ = ["Drupal7Emulator"]
