"""In-memory emulator of a Drupal 10.5 site's core JSON:API for users, roles and languages, and its
password-reset route, answering as the real site does (tests/contract/test_drupal_contract.py runs
the same assertions against both).

* Auth: HTTP Basic for the API user (a wrong password is the anonymous visitor; 5 failed logins
  lock the account, the right password included, like Drupal's flood control), or a bearer token
  (simple_oauth); no credentials where they are needed: 401.
* `GET /jsonapi` (index, `meta.links.me` for a known caller), `GET /jsonapi/user/user` (filters
  `filter[mail]`, `filter[name]`, `filter[x][condition][path|operator|value]` with `=`/`IN`,
  `page[limit]` cut to 50, `page[offset]`, `links.next`, the anonymous user listed with its display
  name only), `GET /jsonapi/user/user/{uuid}`, `POST /jsonapi/user/user` (415, 405 read-only, 403
  per permission, 404 for an unknown role UUID, 422 violations with `source.pointer` in Drupal's
  order, 500 for a name equal to another but for accents / non-ASCII case, 201 + Location),
  `GET /jsonapi/user_role/user_role` (`meta.omitted` without `administer permissions`),
  `GET /jsonapi/configurable_language/configurable_language` (with the module language).
* `POST /user/password?_format=json`: one recorded mail per request for an active account; 200 and
  no mail for unknown or blocked ones; 400 when the mail system fails; 403 with credentials.
* Fault injection (`inject`) and a record of every call (`calls`), as in sandbox.wordpress.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import sys
import threading
import time
import traceback
import unicodedata
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sandbox.httpserver import LoopbackServer

JSONAPI = "application/vnd.api+json"
PAGE_MAX = 50
FLOOD_LIMIT = 5
_JSONAPI_META = {"version": "1.0", "meta": {"links": {"self": {"href": "http://jsonapi.org/format/1.0/"}}}}
_ALL_ADMIN_PERMISSIONS = frozenset({"administer users", "administer permissions", "administer languages",
                                    "view user email addresses", "access user profiles"})
# UserNameConstraintValidator's two character checks (the first is byte-wise in PHP: every non-ASCII
# character passes it).
_NAME_ASCII_RE = re.compile(r"[^\x80-\U0010ffff a-zA-Z0-9@+_.'-]")
_NAME_BAD_RE = re.compile("[\x80-\xa0\xad\u2000-\u200f\u2028-\u202f\u205f-\u206f\ufeff\uff01-\uff60\ufff9-\ufffd\x00-\x1f]")
_EMAIL_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\U0010ffff-]+"  # egulias takes UTF-8 local parts
_EMAIL_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL_NEXT_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,60}[A-Za-z0-9])?"  # egulias counts the dot before a label
_EMAIL_RE = re.compile(rf"{_EMAIL_ATOM}(?:\.{_EMAIL_ATOM})*@{_EMAIL_LABEL}(?:\.{_EMAIL_NEXT_LABEL})+")
_WRITABLE_ATTRIBUTES = {"name", "mail", "status", "pass", "preferred_langcode", "preferred_admin_langcode",
                        "timezone", "langcode", "init"}

DEFAULT_ROLES: tuple[dict, ...] = (
    {"id": "anonymous", "label": "Anonymous user", "is_admin": False, "permissions": ["access content"]},
    {"id": "authenticated", "label": "Authenticated user", "is_admin": False, "permissions": ["access content"]},
    {"id": "content_editor", "label": "Content editor", "is_admin": False, "permissions": ["access content"]},
    {"id": "administrator", "label": "Administrator", "is_admin": True, "permissions": []},
    {"id": "member", "label": "Member", "is_admin": None, "permissions": ["access content"]},
    {"id": "volunteer", "label": "Volunteer", "is_admin": None, "permissions": ["access content"]},
    {"id": "site_boss", "label": "Site boss", "is_admin": True, "permissions": []},
)


def general_ci(text: str) -> str:
    """Equality as MariaDB's utf8mb4_general_ci sees it (case and accents ignored), approximately."""
    folded = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in folded if not unicodedata.combining(ch)).casefold().rstrip(" ")


def _ascii_lower(text: str) -> str:
    """PHP's strtolower(): ASCII letters only (Drupal's duplicate check compares with it)."""
    return text.translate({c: c + 32 for c in range(65, 91)})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


@dataclass
class Call:
    """One request the emulator received; credentials are not kept."""

    method: str
    path: str
    query: list
    body: Any
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
    retry_after: Any
    body: Any
    body_contains: str | None = None

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


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


class DrupalEmulator(LoopbackServer):
    """A Drupal 10.5 site's users over JSON:API on loopback. See the module docstring."""

    server_version = "DrupalEmulator/10.5"
    thread_name = "drupal-emulator"

    def __init__(self, login: str = "cmsuser_api", password: str = "api-password", *,
                 token: str | None = None, api_permissions: tuple[str, ...] = ("administer users",
                                                                               "administer permissions"),
                 languages: tuple[str, ...] | None = ("en", "fr"), read_only: bool = False, mail_works: bool = True,
                 site_name: str = "Drupal emulator", admin_login: str = "admin"):
        self.login, self._password, self._token = login, password, token
        self.languages = None if languages is None else list(languages)   # None: module language off
        self.read_only = read_only
        self.mail_works = mail_works
        self.site_name = site_name
        self.calls: list[Call] = []
        self.mails: list[dict] = []
        self.internal_errors: list[str] = []
        self._lock = threading.RLock()
        self._injections: list[_Injection] = []
        self._failed_logins: dict[str, int] = {}
        self.roles: dict[str, dict] = {}
        self._users: dict[int, dict] = {}
        self._next_uid = 1
        self.url = ""
        for role in DEFAULT_ROLES:
            self._store_role(dict(role))
        self._store_role({"id": "cmsuser_api", "label": "CiviCRM account provisioning",
                          "permissions": list(api_permissions)})
        self._users[0] = {"uid": 0, "uuid": str(uuidlib.uuid4()), "name": "", "mail": None, "status": False,
                          "roles": [], "preferred_langcode": "en", "created": _now(), "fields": {}}
        self._store_user({"uid": 1, "name": admin_login, "mail": "admin@example.test", "roles": ["administrator"]})
        self._store_user({"uid": 2, "name": login, "mail": "cmsuser-api@example.test", "roles": ["cmsuser_api"]})
        self.user_fields: dict[str, Any] = {"field_member_number": None}

    def __repr__(self) -> str:
        return f"DrupalEmulator(url={self.url!r}, users={len(self._users) - 1})"

    # ------------------------------------------------------------------ public API

    @property
    def users(self) -> list[dict]:
        with self._lock:
            return [copy.deepcopy(u) for uid, u in sorted(self._users.items()) if uid]

    @property
    def password(self) -> str:
        """The API user's password (for connections made by the sandbox; never printed)."""
        return self._password

    @property
    def jsonapi_url(self) -> str:
        return self.url + "/jsonapi"

    def set_permissions(self, permissions: list[str]) -> None:
        with self._lock:
            self.roles["cmsuser_api"]["permissions"] = list(permissions)

    def seed(self, data: dict) -> None:
        """{"roles": [{id, label, is_admin, permissions}], "users": [{uid?, name, mail, roles, status,
        preferred_langcode, fields}], "languages": [...], "user_fields": [...]} (no validation)."""
        with self._lock:
            for role in (data or {}).get("roles", []) or []:
                self._store_role(dict(role))
            for user in (data or {}).get("users", []) or []:
                self._store_user(dict(user))
            if (data or {}).get("languages") is not None:
                self.languages = list(data["languages"])
            for name in (data or {}).get("user_fields", []) or []:
                self.user_fields.setdefault(name, None)

    def seed_file(self, path: str | Path) -> None:
        text = Path(path).read_text(encoding="utf-8")
        if str(path).endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
        if isinstance(data, dict) and "drupal" in data:
            data = data["drupal"]
        self.seed(data or {})

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def inject(self, *, method: str | None = None, path: str | None = None, status: int | None = 503,
               times: int = 1, delay: float = 0.0, lose_answer: bool = False, retry_after: Any = None,
               body: Any = None, body_contains: str | None = None) -> None:
        """For the next `times` calls matching method/path (e.g. "/jsonapi/user/user"; a trailing "*"
        matches a prefix) and, when given, whose body contains `body_contains`: wait `delay` seconds, then
        answer `status` (None: answer normally), or with lose_answer=True carry the request out and drop
        the connection without an answer."""
        with self._lock:
            self._injections.append(_Injection(method, path, status, times, delay, lose_answer, retry_after,
                                               body, body_contains))

    def clear_faults(self) -> None:
        with self._lock:
            self._injections.clear()


    # ------------------------------------------------------------------ store

    def _store_role(self, role: dict) -> None:
        role.setdefault("uuid", str(uuidlib.uuid4()))
        role.setdefault("label", role["id"])
        role.setdefault("is_admin", None)
        role.setdefault("permissions", [])
        role.setdefault("weight", len(self.roles))
        self.roles[role["id"]] = role

    def _store_user(self, entry: dict) -> dict:
        name = str(entry.get("name") or entry.get("username") or "")
        if not name:
            raise ValueError(f"seed user without name: {entry!r}")
        if any(general_ci(u["name"]) == general_ci(name) for u in self._users.values()):
            raise ValueError(f"seed user {name!r}: name already exists")
        uid = int(entry.get("uid") or self._next_uid)
        if uid in self._users:
            raise ValueError(f"seed user {name!r}: uid {uid} already exists")
        record = {"uid": uid, "uuid": str(entry.get("uuid") or uuidlib.uuid4()), "name": name,
                  "mail": entry.get("mail", entry.get("email")), "status": bool(entry.get("status", True)),
                  "roles": [r for r in entry.get("roles") or [] if r not in ("authenticated", "anonymous")],
                  "preferred_langcode": entry.get("preferred_langcode") or "en",
                  "created": str(entry.get("created") or _now()), "fields": dict(entry.get("fields") or {})}
        self._users[uid] = record
        self._next_uid = max(self._next_uid, uid + 1)
        return record

    def _permissions(self, user: dict | None) -> set[str]:
        if user is None:
            return set(self.roles.get("anonymous", {}).get("permissions", []))
        roles = [self.roles[r] for r in [*user["roles"], "authenticated"] if r in self.roles]
        if user["uid"] == 1 or any(r.get("is_admin") for r in roles):
            return set(_ALL_ADMIN_PERMISSIONS)
        return set().union(*(set(r.get("permissions") or []) for r in roles))

    # ------------------------------------------------------------------ requests

    def _authenticate(self, headers: dict) -> tuple[dict | None, bool]:
        """(the caller, whether credentials were sent at all)."""
        value = headers.get("authorization", "")
        if not value:
            return None, False
        scheme, _, credentials = value.partition(" ")
        if scheme.lower() == "bearer":
            ok = self._token is not None and credentials.strip() == self._token
            return (self._users[2] if ok else None), True
        if scheme.lower() != "basic":
            return None, True
        try:
            name, _, password = base64.b64decode(credentials.strip()).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None, True
        user = next((u for u in self._users.values() if u["uid"] and general_ci(u["name"]) == general_ci(name)), None)
        if user is None or not user["status"]:
            return None, True
        key = general_ci(name)
        if self._failed_logins.get(key, 0) >= FLOOD_LIMIT:
            return None, True
        if user["uid"] == 2 and password == self._password:
            return user, True
        self._failed_logins[key] = self._failed_logins.get(key, 0) + 1
        return None, True

    def answer(self, method: str, path: str, query: list, body: bytes, headers: dict) -> tuple:
        """One HTTP request, for sandbox.httpserver."""
        response, _call, injection = self.handle(method, path, query, body, headers)
        return response.status, response.headers, response.body, bool(injection and injection.lose_answer)

    def handle(self, method: str, path: str, query: list[tuple[str, str]], body: bytes,
               headers: dict) -> tuple[_Response, Call, _Injection | None]:
        injection = self._take_injection(method, path, body)
        call = Call(method, path, list(query), _record_body(body), _redacted(headers))
        with self._lock:
            self.calls.append(call)
        if injection is not None and injection.delay:
            time.sleep(injection.delay)
        if injection is not None and injection.status is not None and not injection.lose_answer:
            response = _injected(injection)
        else:
            try:
                with self._lock:
                    response = self._route(method, path, query, body, headers)
            except Exception:  # a bug in the emulator: answer like Drupal's fatal-error handler
                self.internal_errors.append(traceback.format_exc())
                traceback.print_exc(file=sys.stderr)
                response = _Response(500, b"The website encountered an unexpected error. Try again later.",
                                     [("Content-Type", "text/plain; charset=UTF-8")])
        call.status = response.status
        call.lost = bool(injection and injection.lose_answer)
        return response, call, injection

    def _take_injection(self, method: str, path: str, body: bytes) -> _Injection | None:
        with self._lock:
            for injection in self._injections:
                if injection.times > 0 and injection.matches(method, path, body):
                    injection.times -= 1
                    if injection.times == 0:
                        self._injections.remove(injection)
                    return injection
        return None

    def _route(self, method: str, path: str, query: list, body: bytes, headers: dict) -> _Response:
        params = dict(query)
        if path == "/user/password":
            return self._password_reset(method, params, body, headers)
        if path != "/jsonapi" and not path.startswith("/jsonapi/"):
            return _Response(404, b"<html><body>Page not found</body></html>", [("Content-Type", "text/html")])
        current, sent = self._authenticate(headers)
        route = path[len("/jsonapi"):]
        if method == "GET" and route in ("", "/"):
            return self._index(current)
        if route == "/user/user" and method == "POST":
            return self._create(current, sent, body, headers)
        if route == "/user/user" and method == "GET":
            return self._list_users(current, sent, query, path)
        match = re.fullmatch(r"/user/user/([0-9a-f-]{36})", route)
        if match and method == "GET":
            user = next((u for u in self._users.values() if u["uuid"] == match.group(1)), None)
            if user is None:
                return _error(404, "Not Found", "The \"user\" parameter was not converted for the path \"/jsonapi/user/user/{entity}\" (route name: \"jsonapi.user--user.individual\")")
            if "administer users" not in self._permissions(current) and (current is None or current is not user):
                return _denied(sent, "The 'access user profiles' permission is required and the user must be active.")
            return _doc(200, {"data": self._resource(user, current)})
        if route == "/user_role/user_role" and method == "GET":
            return self._list_config(current, path, query, "user_role--user_role", "administer permissions",
                                     [self._role_resource(r) for r in sorted(self.roles.values(), key=lambda r: r["id"])])
        if route == "/configurable_language/configurable_language" and method == "GET" and self.languages is not None:
            langs = [*self.languages, "und", "zxx"]
            return self._list_config(current, path, query, "configurable_language--configurable_language",
                                     "administer languages", [self._language_resource(code) for code in langs])
        if method in ("POST", "PATCH", "DELETE") and self.read_only:
            return _error(405, "Method Not Allowed", "JSON:API is configured to accept only read operations.")
        return _error(404, "Not Found", f'No route found for "{method} {self.url}{path}"')

    # --- JSON:API -------------------------------------------------------------------------------

    def _index(self, current: dict | None) -> _Response:
        types = ["user--user", "user_role--user_role"]
        if self.languages is not None:
            types.append("configurable_language--configurable_language")
        links = {t: {"href": f"{self.jsonapi_url}/{t.replace('--', '/')}"} for t in types}
        links["self"] = {"href": self.jsonapi_url}
        document: dict[str, Any] = {"data": [], "links": links}
        if current is not None:
            document["meta"] = {"links": {"me": {"meta": {"id": current["uuid"]},
                                                 "href": f"{self.jsonapi_url}/user/user/{current['uuid']}"}}}
        return _doc(200, document)

    def _resource(self, user: dict, current: dict | None) -> dict:
        href = f"{self.jsonapi_url}/user/user/{user['uuid']}"
        if user["uid"] == 0:
            return {"type": "user--user", "id": user["uuid"], "links": {"self": {"href": href}},
                    "attributes": {"display_name": "Anonymous"}}
        attributes = {"display_name": user["name"], "drupal_internal__uid": user["uid"], "langcode": "en",
                      "preferred_langcode": user["preferred_langcode"], "preferred_admin_langcode": None,
                      "name": user["name"], "mail": user["mail"], "timezone": "UTC", "status": user["status"],
                      "created": user["created"], "changed": user["created"], "access": "1970-01-01T00:00:00+00:00",
                      "login": "1970-01-01T00:00:00+00:00", "init": None, "default_langcode": True}
        for name in self.user_fields:
            attributes[name] = user["fields"].get(name)
        if "administer users" not in self._permissions(current) and current is not user:
            attributes.pop("mail")
        roles = [{"type": "user_role--user_role", "id": self.roles[r]["uuid"],
                  "meta": {"drupal_internal__target_id": r}} for r in user["roles"] if r in self.roles]
        return {"type": "user--user", "id": user["uuid"], "links": {"self": {"href": href}},
                "attributes": attributes,
                "relationships": {"roles": {"data": roles, "links": {
                    "related": {"href": f"{href}/roles"}, "self": {"href": f"{href}/relationships/roles"}}},
                    "user_picture": {"data": None}}}

    def _role_resource(self, role: dict) -> dict:
        return {"type": "user_role--user_role", "id": role["uuid"],
                "links": {"self": {"href": f"{self.jsonapi_url}/user_role/user_role/{role['uuid']}"}},
                "attributes": {"langcode": "en", "status": True, "dependencies": [],
                               "drupal_internal__id": role["id"], "label": role["label"], "weight": role["weight"],
                               "is_admin": role["is_admin"], "permissions": list(role["permissions"])}}

    def _language_resource(self, code: str) -> dict:
        uid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"language:{code}"))
        return {"type": "configurable_language--configurable_language", "id": uid,
                "attributes": {"drupal_internal__id": code, "label": code, "locked": code in ("und", "zxx")}}

    def _list_config(self, current, path, query, kind, permission, items) -> _Response:
        if permission in self._permissions(current):
            return _doc(200, {"data": items, "links": {"self": {"href": self.url + path}}})
        detail = f"The current user is not allowed to GET the selected resource. The '{permission}' permission is required."
        links = {"help": {"href": "https://www.drupal.org/docs/8/modules/json-api/filtering#filters-access-control"}}
        for item in items:
            links[f"item--{item['id'][:7]}"] = {"href": f"{self.url}{path}/{item['id']}",
                                                "meta": {"rel": "item", "detail": detail}}
        return _doc(200, {"data": [], "meta": {"omitted": {
            "detail": "Some resources have been omitted because of insufficient authorization.", "links": links}},
            "links": {"self": {"href": self.url + path}}})

    def _list_users(self, current: dict | None, sent: bool, query: list, path: str) -> _Response:
        permissions = self._permissions(current)
        conditions: dict[str, dict] = {}
        offset, limit = 0, PAGE_MAX
        for key, value in query:
            if key == "page[offset]":
                offset = max(0, int(value))
            elif key == "page[limit]":
                limit = max(1, min(PAGE_MAX, int(value)))
            elif key.startswith("filter["):
                match = re.fullmatch(r"filter\[([^\]]+)\](?:\[condition\]\[(path|operator|value)\](\[\d*\])?)?", key)
                if not match:
                    continue
                name, part, multi = match.groups()
                condition = conditions.setdefault(name, {"path": name, "operator": "=", "value": None})
                if part is None:
                    condition["value"] = value
                elif part == "value" and multi is not None:
                    condition["value"] = [*(condition["value"] or []), value]
                else:
                    condition[part] = value
        for condition in conditions.values():
            if condition["path"] == "mail" and not ({"administer users", "view user email addresses"} & permissions):
                return _denied(sent, "The current user is not authorized to filter by the `mail` field, given in "
                                     "the path `mail`.", status=403)
        if "administer users" not in permissions and "access user profiles" not in permissions:
            return _doc(200, {"data": [], "links": {"self": {"href": self.url + path}}})
        users = sorted(self._users.values(), key=lambda u: u["uid"])
        for condition in conditions.values():
            users = [u for u in users if self._matches(u, condition)]
        page = users[offset:offset + limit]
        links: dict[str, Any] = {"self": {"href": self.url + path}}
        if offset + limit < len(users):
            rest = [(k, v) for k, v in query if k not in ("page[offset]", "page[limit]")]
            links["next"] = {"href": f"{self.url}{path}?" + urlencode(
                [("page[offset]", str(offset + limit)), ("page[limit]", str(limit)), *rest])}
        return _doc(200, {"data": [self._resource(u, current) for u in page], "links": links})

    @staticmethod
    def _matches(user: dict, condition: dict) -> bool:
        column = {"drupal_internal__uid": "uid", "mail": "mail", "name": "name", "status": "status"}.get(
            condition["path"], condition["path"])
        if user["uid"] == 0 and column != "uid":
            return False
        values = condition["value"] if isinstance(condition["value"], list) else [condition["value"]]
        have = user.get(column)
        if column == "status":
            return str(int(bool(have))) in [str(int(str(v).lower() in ("1", "true"))) for v in values]
        wanted = {general_ci(str(v)) for v in values}
        if condition["operator"] in ("=", "IN"):
            return have is not None and general_ci(str(have)) in wanted
        raise ValueError(f"operator {condition['operator']} is not emulated")

    def _create(self, current: dict | None, sent: bool, body: bytes, headers: dict) -> _Response:
        if self.read_only:
            return _error(405, "Method Not Allowed", "JSON:API is configured to accept only read operations. "
                                                     "Site administrators can configure this at "
                                                     f"{self.url}/admin/config/services/jsonapi.")
        if not headers.get("content-type", "").startswith(JSONAPI):
            return _error(415, "Unsupported Media Type",
                          f'No route found that matches "Content-Type: {headers.get("content-type", "")}"')
        if "administer users" not in self._permissions(current):
            return _denied(sent, "The 'administer users' permission is required.")
        try:
            document = json.loads(body.decode("utf-8"))
            data = document["data"]
            attributes = dict(data.get("attributes") or {})
        except (ValueError, KeyError, TypeError, AttributeError):
            return _error(400, "Bad Request", "Syntax error")
        if data.get("type") != "user--user":
            return _error(409, "Conflict", "The provided type does not match the destination resource types.")
        for name in attributes:
            if name not in _WRITABLE_ATTRIBUTES and name not in self.user_fields:
                return _error(422, "Unprocessable Content",
                              f"The attribute {name} does not exist on the user--user resource type.")
        roles = []
        for item in ((data.get("relationships") or {}).get("roles") or {}).get("data") or []:
            role = next((r for r in self.roles.values() if r["uuid"] == item.get("id")), None)
            if role is None:
                return _error(404, "Not Found", f"The resource identified by `user_role--user_role:{item.get('id')}` "
                                                "(given as a relationship item) could not be found.")
            if role["id"] not in ("authenticated", "anonymous"):
                roles.append(role["id"])
        violations = self._validate(attributes)
        if violations:
            return _doc(422, {"errors": [{"title": "Unprocessable Content", "status": "422", "detail": detail,
                                          "source": {"pointer": pointer}} for pointer, detail in violations]})
        name = str(attributes["name"])
        if any(general_ci(u["name"]) == general_ci(name) for u in self._users.values()):
            key = f"{general_ci(name)}-en"
            return _error(500, "Internal Server Error",
                          f"SQLSTATE[23000]: Integrity constraint violation: 1062 Duplicate entry '{key}' for key "
                          "'user__name': INSERT INTO \"users_field_data\" (...)")
        user = self._store_user({"name": name, "mail": attributes.get("mail"),
                                 "status": bool(attributes.get("status", False)), "roles": roles,
                                 "preferred_langcode": attributes.get("preferred_langcode") or "en",
                                 "fields": {k: v for k, v in attributes.items() if k in self.user_fields}})
        href = f"{self.jsonapi_url}/user/user/{user['uuid']}"
        response = _doc(201, {"data": self._resource(user, current), "links": {"self": {"href": f"{self.jsonapi_url}/user/user"}}})
        response.headers.append(("Location", href))
        return response

    def _validate(self, attributes: dict) -> list[tuple[str, str]]:
        """Drupal's violations for a new user, in its order: name, then mail, then the language."""
        found: list[tuple[str, str]] = []
        name = attributes.get("name")
        name = "" if name is None else str(name)
        pointer = "/data/attributes/name"
        others = [u for u in self._users.values()]
        if not name:
            found.append((pointer, "name: You must enter a username."))
        else:
            if name.startswith(" "):
                found.append((pointer, "name: The username cannot begin with a space."))
            if name.endswith(" "):
                found.append((pointer, "name: The username cannot end with a space."))
            if "  " in name:
                found.append((pointer, "name: The username cannot contain multiple spaces in a row."))
            if _NAME_ASCII_RE.search(name) or _NAME_BAD_RE.search(name):
                found.append((pointer, "name: The username contains an illegal character."))
            if len(name) > 60:
                found.append((pointer, f"name: The username {name} is too long: it must be 60 characters or less."))
        # UserNameUnique: LIKE (the collation), then PHP's ASCII-only strtolower() comparison
        if any(general_ci(u["name"]) == general_ci(name) and _ascii_lower(u["name"]) == _ascii_lower(name)
               for u in others):
            found.append((pointer, f"name: The username {name} is already taken."))
        if not name:
            found.append((pointer, "name: This value should not be null."))
        mail = attributes.get("mail")
        if mail is None or mail == "":
            found.append(("/data/attributes/mail", "mail: Email field is required."))
        else:
            mail = str(mail)
            if len(mail) > 254:
                found.append(("/data/attributes/mail/value",
                              "mail.0.value: Email: the email address can not be longer than 254 characters."))
            if len(mail) > 254 or not _EMAIL_RE.fullmatch(mail) or len(mail.split("@")[0]) > 64:
                found.append(("/data/attributes/mail/value", "mail.0.value: This value is not a valid email address."))
            elif any(u["mail"] and _ascii_lower(u["mail"]) == _ascii_lower(mail) for u in others):
                found.append(("/data/attributes/mail", f"mail: The email address {mail} is already taken."))
        langcode = attributes.get("preferred_langcode")
        if langcode is not None and langcode not in (self.languages or ["en"]):
            found += [("/data/attributes/preferred_langcode/value",
                       "preferred_langcode.0.value: The value you selected is not a valid choice."),
                      ("/data/attributes/preferred_langcode/0",
                       "preferred_langcode.0: The value you selected is not a valid choice.")]
        return found

    # --- /user/password ---------------------------------------------------------------------------

    def _password_reset(self, method: str, params: dict, body: bytes, headers: dict) -> _Response:
        if method != "POST" or params.get("_format") != "json":
            return _Response(200, b"<!DOCTYPE html><html><body><form id=\"user-pass\"></form></body></html>",
                             [("Content-Type", "text/html; charset=UTF-8")])
        if headers.get("authorization"):
            return _plain_json(403, {"message": "The used authentication method is not allowed on this route."})
        try:
            credentials = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return _Response(500, b"The website encountered an unexpected error. Try again later.",
                             [("Content-Type", "text/plain; charset=UTF-8")])
        if not isinstance(credentials, dict) or ("name" not in credentials and "mail" not in credentials):
            return _plain_json(400, {"message": "Missing credentials.name or credentials.mail"})
        column = "name" if "name" in credentials else "mail"
        wanted = general_ci(str(credentials[column]).strip())
        user = next((u for _, u in sorted(self._users.items())
                     if u["uid"] and u.get(column) and general_ci(str(u[column])) == wanted), None)
        if user is None or not user["status"]:
            return _Response(200, b"", [("Content-Type", "application/json")])
        if not self.mail_works:
            return _plain_json(400, {"message": "Unable to send email. Contact the site administrator if the "
                                                "problem persists."})
        prefix = "" if user["preferred_langcode"] == "en" else f"/{user['preferred_langcode']}"
        self.mails.append({"to": user["mail"], "uid": user["uid"], "name": user["name"],
                           "subject": f"Replacement login information for {user['name']} at {self.site_name}",
                           "link": f"{self.url}{prefix}/user/reset/{user['uid']}/{int(time.time())}/x",
                           "langcode": user["preferred_langcode"]})
        return _Response(200, b"", [("Content-Type", "application/json")])


# --------------------------------------------------------------------------- responses


def _doc(status: int, document: dict) -> _Response:
    body = json.dumps({"jsonapi": _JSONAPI_META, **document}).encode("utf-8")
    return _Response(status, body, [("Content-Type", JSONAPI)])


def _error(status: int, title: str, detail: str) -> _Response:
    return _doc(status, {"errors": [{"title": title, "status": str(status), "detail": detail}]})


def _denied(sent: bool, detail: str, status: int = 403) -> _Response:
    """Access denied: with no credentials at all Drupal challenges (401); a wrong password is anonymous (403)."""
    if not sent:
        response = _error(401, "Unauthorized", "No authentication credentials provided.")
        response.headers.append(("WWW-Authenticate", 'Basic realm="Drupal emulator"'))
        return response
    return _error(status, "Forbidden", detail)


def _plain_json(status: int, payload: dict) -> _Response:
    return _Response(status, json.dumps(payload).encode("utf-8"), [("Content-Type", "application/json")])


def _injected(injection: _Injection) -> _Response:
    headers: list[tuple[str, str]] = []
    if injection.retry_after is not None:
        headers.append(("Retry-After", str(injection.retry_after)))
    if injection.body is None:
        text = f"<html><body><h1>{injection.status}</h1></body></html>"
        response = _Response(injection.status, text.encode(), [("Content-Type", "text/html")])
    elif isinstance(injection.body, dict | list):
        response = _Response(injection.status, json.dumps(injection.body).encode(), [("Content-Type", JSONAPI)])
    else:
        response = _Response(injection.status, str(injection.body).encode(), [("Content-Type", "text/html")])
    response.headers.extend(headers)
    return response


def _redacted(headers: dict) -> dict:
    redacted = dict(headers)
    for name in list(redacted):
        if name.lower() in ("authorization", "cookie"):
            redacted[name] = f"{str(redacted[name]).split(' ', 1)[0]} <redacted>"
    return redacted


def _record_body(body: bytes) -> Any:
    if not body:
        return None
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {"_raw": body.decode("utf-8", "replace")}
    attributes = ((parsed.get("data") or {}).get("attributes") if isinstance(parsed, dict) and
                  isinstance(parsed.get("data"), dict) else None)
    if isinstance(attributes, dict) and "pass" in attributes:
        attributes["pass"] = "<redacted>"
    return parsed

