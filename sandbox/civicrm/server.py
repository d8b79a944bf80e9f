"""The HTTP side of the emulator: routing, AuthX, the CSRF and method checks, envelopes, fault injection.

Request handling follows CiviCRM's order: the CMS router finds the page, AuthX authenticates (401 text
/ anonymous 403 HTML), AJAX.php checks the method and CSRF header, then the API runs and its answer
or exception is wrapped in the JSON envelope.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sandbox.httpserver import KeptAliveHandler, OpenConnections

from .actions import Api, _Call, apply_index, delete_contact_hard
from .query import Engine
from .schema import CORE_OPTION_GROUPS, FIELDS, PERMISSION_IMPLIES
from .store import ApiError, Store

ROUTE_RE = re.compile(r"(?:^|/)civicrm/ajax/api4(?:/([^/?]*))?(?:/([^/?]*))?/?$")
CSRF_MESSAGE = "SECURITY ALERT: Ajax requests can only be issued by javascript clients, eg. CRM.api4()."
METHOD_MESSAGE = "SECURITY: All requests that modify the database must be http POST, not GET."
GENERIC_MESSAGE = "Sorry an error occurred and your request was not completed. (Error ID: {})"
ACCESS_DENIED_HTML = ("<!DOCTYPE html><html><head><title>Access denied | Sandbox</title></head><body>"
                      "<h1>Access denied</h1><p>You are not authorized to access this page.</p></body></html>")
NOT_FOUND_HTML = "<!DOCTYPE html><html><head><title>Page not found</title></head><body><h1>Not found</h1></body></html>"
GATEWAY_HTML = "<html><head><title>{code}</title></head><body><h1>{code} {reason}</h1><hr>nginx</body></html>"


@dataclass
class Call:
    """One request that reached the API route, as the emulator saw it."""

    entity: str
    action: str
    params: dict | None
    headers: dict
    status: int
    lost: bool = False          # performed, but the answer was dropped (fault injection)
    method: str = "POST"


@dataclass
class _Fault:
    entity: str | None
    action: str | None
    status: int | None
    times: int
    delay: float
    lose_answer: bool
    body: Any
    retry_after: Any
    headers: dict
    used: int = field(default=0)

    def matches(self, entity: str, action: str) -> bool:
        return (self.entity in (None, entity)) and (self.action in (None, action))


class _Reply(Exception):
    """Stop processing and answer with this status, content type and body."""

    def __init__(self, status: int, body: str | bytes, content_type: str = "application/json",
                 headers: dict | None = None):
        super().__init__(status)
        self.status, self.body, self.content_type = status, body, content_type
        self.headers = headers or {}


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


class CiviCRMEmulator:
    """In-memory CiviCRM APIv4 REST endpoint on a loopback port (see docs/design.md, contract §8).

    `site_key`: CIVICRM_SITE_KEY; None means the site-key guard cannot pass. `api_perm`: whether the API
    contact holds "authenticate with api key" (the `perm` guard); by default it does exactly when no site
    key is configured, so a configured site key is required, as the design doc promises.
    """

    def __init__(self, api_key: str = "sandbox-api-key", site_key: str | None = None, *, api_contact_id: int = 1,
                 guards=("site_key", "perm"), legacy_csrf: bool = False, email_primary: bool = True,
                 detailed_errors: bool = True, legacy_errors: bool = False, api_perm: bool | None = None):
        self.api_key = api_key
        self.site_key = site_key
        self.api_contact_id = api_contact_id
        self.guards = tuple(guards)
        self.legacy_csrf = legacy_csrf
        self.detailed_errors = detailed_errors
        self.legacy_errors = legacy_errors
        self.store = Store()
        self.api = Api(self.store, email_primary=email_primary)
        self.api_keys: dict[str, int] = {}
        self.api_perm_contacts: set[int] = set()
        self.calls: list[Call] = []
        self.internal_errors: list[Exception] = []  # exceptions the emulator itself raised (bugs)
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._calls_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections = OpenConnections()
        self.url = ""
        self._install_core_data()
        self.add_api_key(api_key, api_contact_id, api_perm=site_key is None if api_perm is None else api_perm)

    # --- set-up -----------------------------------------------------------------------------

    def _install_core_data(self) -> None:
        with self._lock:
            self.store.table("Domain").insert({"name": "Sandbox Domain", "description": None, "version": "5.81.0"}, 1)
            groups, values = self.store.table("OptionGroup"), self.store.table("OptionValue")
            for group in CORE_OPTION_GROUPS:
                groups.insert({"name": group["name"], "title": group["title"], "description": None,
                               "data_type": None, "is_reserved": True, "is_active": True, "is_locked": False},
                              group["id"])
                for weight, (value, name, label) in enumerate(group["values"], start=1):
                    values.insert({"option_group_id": group["id"], "label": label, "value": value, "name": name,
                                   "grouping": None, "filter": 0, "is_default": group["name"] == "activity_status"
                                   and value == "1", "weight": weight, "description": None,
                                   "is_optgroup": False, "is_reserved": True, "is_active": True,
                                   "component_id": None, "domain_id": None, "visibility_id": None,
                                   "icon": None, "color": None})
            self._writer("Contact").create({"contact_type": "Individual", "first_name": "Sandbox",
                                             "last_name": "API user"}, label="create", row_id=self.api_contact_id)
            self._api_contact_is_auto = True

    def add_api_key(self, api_key: str, contact_id: int, *, api_perm: bool = True) -> None:
        """Give a contact an API key (and, with api_perm, the "authenticate with api key" permission)."""
        self.api_keys[api_key] = contact_id
        if api_perm:
            self.api_perm_contacts.add(contact_id)
        else:
            self.api_perm_contacts.discard(contact_id)

    def deny(self, entity: str, action: str | None = None) -> None:
        """The API user loses the permission for entity.action (all actions when None): 403 Authorization failed."""
        self.api.denied.add((entity, action))

    def allow_all(self) -> None:
        self.api.denied.clear()
        self.api.permissions = None

    def set_permissions(self, permissions) -> None:
        """The API contact holds exactly these CiviCRM permissions (and what they imply)."""
        held = set(permissions)
        for name in list(held):
            held |= PERMISSION_IMPLIES.get(name, set())
        self.api.permissions = held
        for contact_id in self.api_keys.values():  # AuthX's perm guard reads the same list
            (self.api_perm_contacts.add if "authenticate with api key" in held else
             self.api_perm_contacts.discard)(contact_id)

    def set_smart_members(self, group_id: int, contact_ids) -> None:
        """Replace a smart group's cached members (as if its saved search now matched these contacts)."""
        with self._lock:
            self.store.smart_members[group_id] = set(contact_ids)
            self.store._bump()

    def _writer(self, entity: str, params: dict | None = None) -> _Call:
        engine = Engine(self.store, user_contact_id=self.api_contact_id, email_primary=self.api.email_primary)
        return _Call(self.api, engine, entity, "create", params or {}, self.api_contact_id)

    def seed(self, data: dict) -> None:
        """Load seed data (the `civicrm:` part of a seed file). Ids given are kept; others auto-increment."""
        if not data:
            return
        with self._lock:
            self._seed_writers: dict[str, _Call] = {}
            for item in data.get("option_groups", []) or []:
                self._seed_row("OptionGroup", item, "option_groups")
            for item in data.get("option_values", []) or []:
                self._seed_row("OptionValue", item, "option_values")
            for i, item in enumerate(data.get("contacts", []) or []):
                self._seed_contact(dict(item), f"contacts[{i}]")
            for item in data.get("emails", []) or []:
                self._seed_row("Email", item, "emails")
            for i, item in enumerate(data.get("groups", []) or []):
                item = dict(item)
                members, criteria = item.pop("members", None), item.pop("criteria", None)
                row = self._seed_row("Group", item, f"groups[{i}]")
                if members is not None:
                    self.store.smart_members[row["id"]] = set(members)
                if criteria is not None:
                    self.store.smart_criteria[row["id"]] = criteria
            for key, entity in (("group_contacts", "GroupContact"), ("tags", "Tag"), ("entity_tags", "EntityTag"),
                                ("uf_matches", "UFMatch"), ("activities", "Activity"),
                                ("activity_contacts", "ActivityContact")):
                for i, item in enumerate(data.get(key, []) or []):
                    self._seed_row(entity, item, f"{key}[{i}]")
            self.store._bump()

    def seed_file(self, path) -> None:
        """Seed from a YAML or JSON file; its top-level `civicrm:` key is used when present."""
        text = Path(path).read_text(encoding="utf-8")
        if str(path).endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
        data = data or {}
        self.seed(data.get("civicrm", data) if isinstance(data, dict) else {})

    def _seed_row(self, entity: str, item: dict, where: str) -> dict:
        item = dict(item)
        row_id = item.pop("id", None)
        writer = self._seed_writers.get(entity)
        if writer is None:
            writer = self._seed_writers[entity] = self._writer(
                entity, {"method": "Admin"} if entity == "GroupContact" else None)
        try:
            if row_id is not None and row_id in self.store.table(entity).rows:
                raise ApiError(f"id {row_id} is already taken")
            return writer.create(writer.resolve(item), label="create", row_id=row_id, output=False)
        except ApiError as exc:
            raise ValueError(f"CiviCRM seed {where}: {exc.message}") from None

    def _seed_contact(self, item: dict, where: str) -> None:
        email, emails = item.pop("email", None), item.pop("emails", None) or []
        api_key, api_perm = item.pop("api_key", None), item.pop("api_perm", True)
        row_id = item.get("id")
        if row_id == self.api_contact_id and getattr(self, "_api_contact_is_auto", False):
            delete_contact_hard(self.store, row_id)  # the seed's own API contact replaces the stand-in
            self._api_contact_is_auto = False
        row = self._seed_row("Contact", item, where)
        if email:
            emails = [{"email": email, "is_primary": True}, *emails]
        for j, extra in enumerate(emails):
            self._seed_row("Email", {**extra, "contact_id": row["id"]}, f"{where}.emails[{j}]")
        if api_key:
            self.add_api_key(api_key, row["id"], api_perm=api_perm)

    # --- assertions helpers -------------------------------------------------------------------

    def table(self, entity: str) -> list[dict]:
        """Copies of the live rows of an entity, in id order (computed Group.children included)."""
        if entity not in FIELDS:
            raise KeyError(f"unknown entity {entity!r}; known: {', '.join(sorted(FIELDS))}")
        with self._lock:
            table = self.store.table(entity)
            rows = [{k: (list(v) if isinstance(v, list) else v) for k, v in table.rows[i].items()} for i in table.ids]
            if entity == "Group":
                for row in rows:
                    row["children"] = self.store.group_children(row["id"])
            return rows

    def reset_calls(self) -> None:
        with self._calls_lock:
            self.calls.clear()

    def inject(self, *, entity: str | None = None, action: str | None = None, status: int | None = 500,
               times: int = 1, delay: float = 0.0, lose_answer: bool = False, body: Any = None,
               retry_after: Any = None, headers: dict | None = None) -> None:
        """Fault injection for the next `times` calls matching entity/action (None = any).

        Each sleeps `delay`, then: lose_answer=True performs the call and drops the connection unanswered;
        otherwise `status` is answered without performing the call (a JSON error for 500, the maintenance
        JSON for 503, a proxy HTML page for 502/504; `body` overrides). status=None only delays.
        `retry_after` / `headers` are added to the answer (injected or real), e.g. Location or Set-Cookie.
        """
        with self._calls_lock:
            self._faults.append(_Fault(entity, action, status, times, delay, lose_answer, body, retry_after,
                                       dict(headers or {})))

    def clear_faults(self) -> None:
        """Forget every injection not used up yet (as the WordPress emulator's clear_faults)."""
        with self._calls_lock:
            self._faults.clear()

    def _take_fault(self, entity: str, action: str) -> _Fault | None:
        with self._calls_lock:
            for fault in self._faults:
                if fault.matches(entity, action) and fault.used < fault.times:
                    fault.used += 1
                    if fault.used >= fault.times:
                        self._faults.remove(fault)
                    return fault
        return None

    # --- server lifecycle -----------------------------------------------------------------------

    @property
    def endpoint_template(self) -> str:
        return f"{self.url}/civicrm/ajax/api4/{{entity}}/{{action}}"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None:
            return self.url
        handler = type("CiviCRMHandler", (_Handler,), {"emulator": self, "connections": self._connections})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"civicrm-emulator-{self._server.server_address[1]}", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        self._connections.shut_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> CiviCRMEmulator:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"CiviCRMEmulator(url={self.url or 'not started'!r})"

    # --- request handling -----------------------------------------------------------------------

    def _record(self, call: Call) -> None:
        with self._calls_lock:
            self.calls.append(call)

    def handle(self, request: _Handler, method: str) -> None:
        url = urlsplit(request.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        form = _parse_form(request.headers.get("Content-Type") or "", body) if method == "POST" else {}
        fields = {**query, **form}  # $_REQUEST: POST values win over the query string
        headers = dict(request.headers.items())

        match = ROUTE_RE.search(url.path)
        if match is None:
            route_var = query.get("q") or query.get("task") or ""
            match = ROUTE_RE.search("/" + route_var.lstrip("/"))
        if match is None:
            request.reply(404, NOT_FOUND_HTML, "text/html; charset=utf-8")
            return
        entity, action = match.group(1) or "", match.group(2) or ""
        call = Call(entity, action, None, headers, 0, method=method)
        fault = None
        try:
            raw_params = fields.get("params")
            try:
                call.params = json.loads(raw_params) if raw_params else {}
            except ValueError:
                call.params = None
            fault = self._take_fault(entity, action)  # a multi-call (no entity) meets "any call" faults
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.status is not None and not fault.lose_answer:
                    raise self._fault_reply(fault)
            contact_id, flow = self._authenticate(headers, query if method == "GET" else form, fields)
            self._check_request(method, action, headers, flow)
            if not entity:
                reply = self._multi_call(fields, contact_id)
            else:
                if call.params is None:
                    # PHP: json_decode gives NULL, execute(array) throws a TypeError: a fatal, non-JSON page
                    raise _Reply(500, "<br />\n<b>Fatal error</b>:  Uncaught TypeError: execute(): Argument #3 "
                                      "($params) must be of type array, null given", "text/html; charset=UTF-8")
                reply = self._run(entity, action, call.params, contact_id, fields.get("index"))
        except _Reply as answer:
            reply = answer
        except Exception as exc:  # an emulator bug: answer like a PHP fatal, and keep it for the tests to see
            self.internal_errors.append(exc)
            reply = _Reply(500, f"Emulator internal error: {type(exc).__name__}: {exc}", "text/plain")
        call.status = reply.status
        if fault is not None and fault.headers:
            reply.headers = {**reply.headers, **fault.headers}
        if fault is not None and fault.lose_answer:
            call.lost = True
            self._record(call)
            request.drop()
            return
        self._record(call)
        request.reply(reply.status, reply.body, reply.content_type, reply.headers)

    def _fault_reply(self, fault: _Fault) -> _Reply:
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        status = fault.status
        if fault.body is not None:
            if isinstance(fault.body, dict | list):
                return _Reply(status, _json(fault.body), "application/json", headers)
            return _Reply(status, str(fault.body), "text/html; charset=utf-8", headers)
        if status == 503:
            return _Reply(503, _json({"status_code": 503, "status_message": "Temporarily unavailable for maintenance."}),
                          "application/json", headers)
        if status in (502, 504):
            reason = "Bad Gateway" if status == 502 else "Gateway Time-out"
            return _Reply(status, GATEWAY_HTML.format(code=status, reason=reason), "text/html", headers)
        return _Reply(status, _json(self._error_body("Injected failure", status)), "application/json", headers)

    def _authenticate(self, headers: dict, post_or_get: dict, fields: dict) -> tuple[int, str]:
        """AuthX: returns (contact id, flow) or raises the rejection reply."""
        lower = {k.lower(): v for k, v in headers.items()}
        site_key = lower.get("x-civi-key") or post_or_get.get("_authxSiteKey")
        if "x-civi-auth" in lower:
            flow, credential = "xheader", lower["x-civi-auth"]
        elif lower.get("authorization"):
            flow, credential = "header", lower["authorization"]
        elif post_or_get.get("_authx"):
            flow, credential = "param", post_or_get["_authx"]
        elif not self.legacy_csrf and (fields.get("api_key") or fields.get("key")):
            flow, credential = "legacyrest", f"Bearer {fields.get('api_key') or ''}"
            site_key = fields.get("key")
        else:
            # no credential: the anonymous visitor, who may read nothing and write nothing
            return 0, "anonymous"
        contact_id = None
        kind, _, token = credential.partition(" ")
        if kind == "Bearer" and token:
            contact_id = next((cid for key, cid in self.api_keys.items() if hmac.compare_digest(key, token)), None)
        if contact_id is None:
            raise self._reject(flow, "Invalid credential")
        if self.guards:
            passed = ("site_key" in self.guards and self.site_key is not None and site_key is not None
                      and hmac.compare_digest(str(site_key), self.site_key)) or \
                     ("perm" in self.guards and contact_id in self.api_perm_contacts)
            if not passed:
                raise self._reject(flow, f"Login not permitted. Must satisfy guard ({', '.join(self.guards)}).")
        return contact_id, flow

    @staticmethod
    def _reject(flow: str, message: str) -> _Reply:
        if flow == "legacyrest":
            return _Reply(200, _json({"error_message": f"FATAL: {message}", "is_error": 1}), "text/javascript")
        return _Reply(401, f"HTTP 401 {message}", "text/plain")

    def _check_request(self, method: str, action: str, headers: dict, flow: str) -> None:
        """AJAX.php::checkRequestMethod(): GET only for get*/autocomplete, and the CSRF header rule."""
        xhr = any(k.lower() == "x-requested-with" and v == "XMLHttpRequest" for k, v in headers.items())
        write_by_get = method == "GET" and not action.lower().startswith("get") and action != "autocomplete"
        if self.legacy_csrf:  # pre-5.47: header mandatory, both refusals answered as HTTP 200
            if not xhr:
                raise _Reply(200, _json({"error_code": 401, "error_message": CSRF_MESSAGE}))
            if write_by_get:
                raise _Reply(200, _json({"error_code": 400, "error_message": METHOD_MESSAGE}))
            return
        if write_by_get:
            raise _Reply(405, _json({"error_code": 405, "error_message": METHOD_MESSAGE}))
        if not (xhr or method == "OPTIONS" or flow in ("xheader", "param", "legacyrest")):
            raise _Reply(400, _json({"error_code": 400, "error_message": CSRF_MESSAGE}))

    def _error_body(self, message: str, status: int) -> Any:
        if self.legacy_errors:
            return []
        if self.detailed_errors:
            return {"error_code": 0, "error_message": message, "status": status}
        error_id = "-".join(secrets.token_hex(2).upper() for _ in range(3))
        return {"error_code": "1", "error_message": GENERIC_MESSAGE.format(error_id), "status": status}

    def _envelope(self, entity: str, action: str, params: Any, contact_id: int, index: Any) -> dict:
        with self._lock:
            result = self.api.run(entity, action, params, user_contact_id=contact_id)
        envelope = {"values": apply_index(result.values, index), "entity": result.entity, "action": result.action,
                    "debug": None, "version": 4, "count": result.count, "countFetched": result.count_fetched}
        if result.count_matched is not None:
            envelope["countMatched"] = result.count_matched
        return envelope

    def _run(self, entity: str, action: str, params: Any, contact_id: int, index: Any) -> _Reply:
        if contact_id == 0:  # anonymous, as 5.76 answers it: reads see nothing, writes are refused
            if action.startswith("get"):
                return _Reply(200, _json({"values": [], "entity": entity, "action": action, "debug": None,
                                          "version": 4, "count": 0, "countFetched": 0}))
            error_id = "-".join(secrets.token_hex(2).upper() for _ in range(3))
            return _Reply(403, _json({"error_code": "1", "error_message": GENERIC_MESSAGE.format(error_id),
                                      "status": 403}))
        try:
            return _Reply(200, _json(self._envelope(entity, action, params, contact_id, index)))
        except ApiError as exc:
            status = 500 if self.legacy_errors else exc.status
            return _Reply(status, _json(self._error_body(exc.message, status)))

    def _multi_call(self, fields: dict, contact_id: int) -> _Reply:
        try:
            calls = json.loads(fields.get("calls") or "")
        except ValueError:
            return _Reply(500, _json(self._error_body("Invalid calls parameter", 500)))
        if not isinstance(calls, dict):
            return _Reply(500, _json(self._error_body("Invalid calls parameter", 500)))
        response, statuses = {}, []
        for key, spec in calls.items():
            spec = list(spec) + [None] * (4 - len(spec))
            try:
                response[key] = self._envelope(spec[0], spec[1], spec[2] or {}, contact_id, spec[3])
                statuses.append(200)
            except ApiError as exc:
                response[key] = self._error_body(exc.message, exc.status)
                statuses.append(exc.status)
        status = 200 if 200 in statuses or not statuses else statuses[0]
        return _Reply(status, _json(response))


def _parse_form(content_type: str, body: bytes) -> dict:
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if kind == "multipart/form-data":
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        out = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name:
                out[name] = part.get_content() if part.get_content_maintype() == "text" else \
                    part.get_payload(decode=True).decode("utf-8", "replace")
        return out
    return {}  # PHP fills $_POST only from form encodings: a JSON body is ignored


class _Handler(KeptAliveHandler):
    server_version = "CiviCRM-Emulator"
    emulator: CiviCRMEmulator

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet: tests read emulator.calls instead
        return

    def do_GET(self) -> None:  # noqa: N802
        self.emulator.handle(self, "GET")

    def do_POST(self) -> None:  # noqa: N802
        self.emulator.handle(self, "POST")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self.emulator.handle(self, "OPTIONS")

    def reply(self, status: int, body: str | bytes, content_type: str, headers: dict | None = None) -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self._headers_buffer.append(b"\r\n")
            self._headers_buffer.append(data)
            self.wfile.write(b"".join(self._headers_buffer))
            self._headers_buffer = []
        except OSError:
            self.close_connection = True

    def drop(self) -> None:
        """Close the connection without an answer: the client sees the server disconnect."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
