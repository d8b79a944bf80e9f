"""DrupalHook: Drupal's core JSON:API (users, roles, languages) on the shared transport.

The Airflow connection (default id `cms_default`, type drupal):

* host: the site's base URL, e.g. `https://www.example.org` (a path is kept for sites in a subfolder);
* login + password: an account for HTTP Basic auth (core module `basic_auth`); or an **empty login
  and an OAuth access token in the password** (contrib `simple_oauth`), sent as
  `Authorization: Bearer <token>`;
* extra (all optional): `jsonapi_path` (default `/jsonapi`), `verify`, `timeout` (seconds, default 30).

What the site needs: modules `jsonapi` (+ `serialization`) and `basic_auth`; JSON:API writable
(`jsonapi.settings:read_only` false, /admin/config/services/jsonapi); the API account's role with
`administer users` and `administer permissions`.

What a real Drupal 10.5.5 answered (tests/contract/test_drupal_contract.py runs the same assertions
against it and against sandbox/drupal):

* Wrong credentials are not refused: Basic auth falls back to the anonymous visitor. Reads then
  answer 200 with less (no `meta.links.me` in the index, no users), a mail filter 403, a create 403
  "The 'administer users' permission is required."; no credentials at all: 401. Each failed
  Basic login counts towards Drupal's flood control (5 per account and IP in 6 hours), after which
  even the right password is anonymous: never retry a 401/403.
* `POST /jsonapi/user/user` (Content-Type `application/vnd.api+json`, else 415) answers 201 with
  `data.id` (UUID) and `data.attributes.drupal_internal__uid`. Validation errors are 422, one error
  per violation with `source.pointer`: a taken name is `/data/attributes/name` ("name: The username
  X is already taken."), a taken mail `/data/attributes/mail`; an invalid mail points at
  `/data/attributes/mail/value`; an unknown language at `/data/attributes/preferred_langcode/value`;
  an illegal or too long name also at `/data/attributes/name`; an unknown attribute is a 422 with no
  pointer. A role UUID that does not exist: 404 "... (given as a relationship item) could not be
  found.". A name equal to an existing one but for accents or non-ASCII case passes Drupal's
  check and fails the database's unique key: 500 "Integrity constraint violation ... user__name"
  (nothing stored). Read-only JSON:API: 405.
* Listings: `filter[mail]`, `filter[name]` and `IN` conditions compare as MariaDB's
  utf8mb4_general_ci does (case- and accent-insensitive); `page[limit]` at most 50, `links.next`
  while more pages exist, no count; the anonymous user (uid 0) is listed with only `display_name`.
  Items the caller may not see are left out, with `meta.omitted` saying why (roles without
  `administer permissions`: "The 'administer permissions' permission is required.").
"""

from __future__ import annotations

import re
from typing import Any

import requests
from requests.auth import AuthBase

from cms_operators.backend import (
    CmsAuthError,
    CmsConfigError,
    CmsDuplicateEmail,
    CmsDuplicateLogin,
    CmsError,
    CmsRejected,
    CmsUnavailable,
)
from cms_operators.resthook import CmsRestHook
from transport.hook import Endpoint
from transport.policy import plain_text, retry_after_seconds

JSONAPI_TYPE = "application/vnd.api+json"
USERS = "/user/user"
ROLES = "/user_role/user_role"
LANGUAGES = "/configurable_language/configurable_language"
NAME_POINTER = "/data/attributes/name"
MAIL_POINTER = "/data/attributes/mail"
_TRANSIENT_STATUSES = {408, 429, 502, 503, 504}
_UNIQUE_NAME_RE = re.compile(r"Integrity constraint violation.*user__name", re.S)
_PERMISSION_RE = re.compile(r"The '([^']+)' permission is required")


class _Bearer(AuthBase):
    def __init__(self, token: str):
        self._token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_Bearer(***)"


class _Anonymous(AuthBase):
    """No credentials on this request (Drupal refuses Basic auth on routes that do not allow it)."""

    def __call__(self, request):
        request.headers.pop("Authorization", None)
        return request


def field_of(pointer: str | None) -> str | None:
    """'/data/attributes/mail/value' -> 'mail'; None for pointers outside attributes/relationships."""
    parts = (pointer or "").strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "data" and parts[1] in ("attributes", "relationships"):
        return parts[2]
    return None


def required_permission(text: str) -> str | None:
    """The permission a Drupal 403 names ("The 'administer users' permission is required.")."""
    match = _PERMISSION_RE.search(text or "")
    return match.group(1) if match else None


class DrupalHook(CmsRestHook):
    """HTTP access to one Drupal site's JSON:API: auth, error mapping; the transport retries reads only."""

    conn_name_attr = "cms_conn_id"
    default_conn_name = "cms_default"
    conn_type = "drupal"
    hook_name = "Drupal"
    site = "the Drupal site"
    password_label = "password (or OAuth token)"
    jitter = 0.5

    def __init__(self, cms_conn_id: str = default_conn_name, **kwargs: Any):
        super().__init__(cms_conn_id, **kwargs)

    # ------------------------------------------------------------------ connection

    def check_endpoint(self, endpoint: Endpoint) -> None:
        if not endpoint.base_url:
            raise CmsConfigError(None, "connection_incomplete",
                                 f"Airflow connection '{self.conn_id}' has no host: set it to the Drupal site "
                                 "URL, e.g. https://www.example.org")
        if not endpoint.password:
            raise CmsConfigError(None, "connection_incomplete",
                                 f"Airflow connection '{self.conn_id}' needs a login and password (HTTP Basic, "
                                 "module basic_auth), or an empty login and an OAuth access token as password")

    @property
    def uses_token(self) -> bool:
        return not self.endpoint.login

    def configure_session(self, session: requests.Session) -> None:
        # UTF-8 bytes: requests would encode str credentials as Latin-1. No cookies (the base's
        # default): a session cookie would make Drupal ask for an X-CSRF-Token on writes.
        endpoint = self.endpoint
        if endpoint.login:
            session.auth = (endpoint.login.encode("utf-8"), endpoint.password.encode("utf-8"))
        else:
            session.auth = _Bearer(endpoint.password)
        session.headers["Accept"] = JSONAPI_TYPE

    @property
    def site_url(self) -> str:
        return self.endpoint.base_url

    @property
    def jsonapi_url(self) -> str:
        path = str(self.endpoint.extra.get("jsonapi_path") or "/jsonapi").strip()
        return f"{self.site_url}/{path.strip('/')}"

    @property
    def login(self) -> str:
        return self.endpoint.login

    # ------------------------------------------------------------------ requests

    def jsonapi(self, method: str, route: str, **kwargs: Any) -> Any:
        """A JSON:API call (route like "/user/user"); returns the parsed document."""
        return self.request(method, self.jsonapi_url + route, **kwargs)[1]

    def request(self, method: str, url: str, *, params: Any = None, json: Any = None, retry: bool | None = None,
                expect_json: bool = True, anonymous: bool = False) -> tuple[requests.Response, Any]:
        """Send one request; GET/HEAD/OPTIONS (or `retry=True`) are retried on transient errors.
        Raises a CmsError subclass for every failure."""
        method = method.upper()
        if retry is None:
            retry = method in ("GET", "HEAD", "OPTIONS")
        what = f"{method} {requests.utils.urlparse(url).path}"
        kwargs: dict[str, Any] = {"params": params}
        if json is not None:
            kwargs["json"] = json
            kwargs["headers"] = {"Content-Type": "application/json" if anonymous else JSONAPI_TYPE}
        if anonymous:
            kwargs["auth"] = _Anonymous()

        def classify(response: requests.Response) -> tuple[requests.Response, Any]:
            payload, error = self.classify(response, what, expect_json)
            if error is not None:
                raise error
            return response, payload

        return self.send(method, url, classify, idempotent=retry, what=f"Drupal {what}", **kwargs)

    def classify(self, response: requests.Response, what: str, expect_json: bool = True) -> tuple[Any, CmsError | None]:
        """Parsed payload, or the CmsError this answer means (contract §3, §7)."""
        status = response.status_code
        payload: Any = None
        is_json = False
        if response.content:
            try:
                payload = response.json()
                is_json = True
            except ValueError:
                payload = None
        if 200 <= status < 300:
            if expect_json and not is_json:
                kind = response.headers.get("Content-Type", "unknown type")
                return None, CmsUnavailable(status, "not_json", f"Drupal answered {what} with something that is "
                                                                f"not JSON ({kind}); a proxy or maintenance page?")
            return payload if expect_json else response.text, None
        errors = self.errors_of(payload)
        said = f"HTTP {status}" + (f": {'; '.join(e['detail'] for e in errors if e['detail'])}" if errors else "")
        if not errors and isinstance(payload, dict) and payload.get("message"):
            said = f"HTTP {status}: {plain_text(payload['message'])}"
        said = self.scrub(said)
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        conn = f"connection '{self.conn_id}'"
        if status == 401:
            return None, CmsAuthError(status, "unauthorized", f"Drupal refused the credentials of {conn} ({said}); "
                                                              "check its login and password (or token)")
        if status == 403:
            permission = required_permission(said)
            code = "missing_permission" if permission else "forbidden"
            advice = (f"the API user needs the permission '{permission}' (or the credentials are wrong: "
                      "Drupal treats a wrong password as an anonymous visitor)") if permission else \
                "check the API user's permissions and the credentials"
            return None, CmsAuthError(status, code, f"Drupal forbade {what} for {conn} ({said}); {advice}")
        if status == 404 and "relationship item" in said:
            return None, CmsConfigError(status, "missing_role", f"Drupal has no such role ({said}); create the role "
                                                                "or fix the roles setting")
        if status == 405:
            return None, CmsConfigError(status, "read_only", f"Drupal answered {what} with {said}: JSON:API accepts "
                                                             "only reads; untick 'Accept only JSON:API read "
                                                             "operations' at /admin/config/services/jsonapi")
        if status in (404, 406, 409, 415, 501):
            return None, CmsConfigError(status, "not_found" if status == 404 else f"http_{status}",
                                        f"Drupal answered {what} with {said}; check the site URL / jsonapi_path of "
                                        f"{conn} and that the modules jsonapi and serialization are enabled")
        if status == 500 and _UNIQUE_NAME_RE.search(said):
            return None, CmsDuplicateLogin(status, "name_not_unique",
                                           "Drupal's database already has that username (it differs from an "
                                           "existing one only in accents or non-ASCII case)")
        if status in _TRANSIENT_STATUSES or status >= 500:
            return None, CmsUnavailable(status, "unavailable", f"Drupal is unavailable for {what} ({said})",
                                        retry_after=retry_after)
        if status == 422:
            return None, self._unprocessable(errors, said)
        return None, CmsRejected(status, f"http_{status}", f"Drupal rejected {what} ({said})")

    @staticmethod
    def errors_of(payload: Any) -> list[dict]:
        """JSON:API error objects as {status, detail, pointer, field}."""
        found = []
        for error in (payload.get("errors") if isinstance(payload, dict) else None) or []:
            if not isinstance(error, dict):
                continue
            pointer = (error.get("source") or {}).get("pointer") if isinstance(error.get("source"), dict) else None
            found.append({"status": str(error.get("status") or ""), "detail": plain_text(error.get("detail")),
                          "pointer": pointer, "field": field_of(pointer)})
        return found

    @staticmethod
    def _unprocessable(errors: list[dict], said: str) -> CmsError:
        """422: a taken mail (pointer exactly /data/attributes/mail) before a taken name, else CmsRejected
        naming the fields. Drupal's texts are translated, so pointers decide, not words."""
        pointers = {e["pointer"] for e in errors}
        fields = sorted({e["field"] or "(no field)" for e in errors})
        if MAIL_POINTER in pointers:
            return CmsDuplicateEmail(422, "mail_taken", f"Drupal already has a user with that email ({said})")
        if NAME_POINTER in pointers:
            return CmsDuplicateLogin(422, "name_taken", f"Drupal already has that username ({said})")
        return CmsRejected(422, "invalid", f"Drupal rejected the fields {', '.join(fields)} ({said})")

    # ------------------------------------------------------------------ Airflow UI

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's 'Test' button: authenticate and read the API user."""
        try:
            index = self.jsonapi("GET", "")
            me = ((index.get("meta") or {}).get("links") or {}).get("me") if isinstance(index, dict) else None
            if not me:
                return False, (f"Drupal at {self.jsonapi_url} answered as to an anonymous visitor: the credentials "
                               f"of connection '{self.conn_id}' were not accepted")
            user = self.request("GET", me["href"])[1]
        except CmsError as exc:
            return False, exc.message
        name = ((user or {}).get("data") or {}).get("attributes", {}).get("name")
        return True, f"Authenticated as '{name}' at {self.jsonapi_url}"
