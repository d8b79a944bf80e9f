"""The REST API: authentication, routing, `/` (index) and wp/v2/users (list, get, me, create, delete).

Each endpoint validates and answers in WordPress 6.1's order and words (see the package docstring).
"""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import time
from typing import Any

from .faults import Call, _redact_body
from .php import (
    _is_php_numeric,
    _parse_list,
    _parse_php_form,
    _php_empty,
    _php_urlencode,
    _pre_user_text,
    is_email,
    sanitize_text_field,
    sanitize_title,
    sanitize_user_strict,
)
from .responses import _CRITICAL_ERROR_MESSAGE, _json_response, _Response

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


def _param_error(problems: dict[str, tuple[str, str, Any]]) -> _WpError:
    return _WpError("rest_invalid_param", "Invalid parameter(s): " + ", ".join(problems), 400, data={
        "status": 400,
        "params": {name: message for name, (_, message, _) in problems.items()},
        "details": {name: {"code": code, "message": message, "data": data}
                    for name, (code, message, data) in problems.items()},
    })


class RestApi:
    """WordPressEmulator's REST routes (its __init__ in server.py sets the state; UserStore keeps the users)."""

    _lock: threading.RLock
    duplicate_check_gap: float  # FaultInjection.widen_duplicate_check
    _users: dict[int, dict]
    _by_login: dict[str, int]
    _by_email: dict[str, int]
    _app_password_key: str
    app_passwords_available: bool
    url: str
    rest_url: str
    site_name: str
    roles: list[str]
    locales: tuple[str, ...]
    illegal_logins: set[str]

    @staticmethod
    def _password_key(password: str) -> str:
        # wp_authenticate_application_password(): everything but [a-z0-9] (case-insensitive) is dropped.
        return re.sub(r"[^a-z\d]", "", password or "", flags=re.I)

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
        if self.duplicate_check_gap:  # failure injection: the checks above and the INSERT below are not atomic
            self._lock.release()
            try:
                time.sleep(self.duplicate_check_gap)
            finally:
                self._lock.acquire()
        return self._store_user({
            "username": login, "email": email, "name": display_name, "first_name": first, "last_name": last,
            "nickname": nickname, "slug": self._unique_slug(slug), "url": url,
            "description": str(data.get("description") or ""), "locale": str(data.get("locale") or ""),
            "roles": roles,
        }, checked=True)
