"""Drupal7Hook: a Drupal 7 site's Services 3.x REST endpoint (session login, X-CSRF-Token) on the shared transport.

The Airflow connection (default id `cms_default`, type drupal7):

* host: the site's base URL, e.g. `https://www.example.org` (a path is kept for sites in a subfolder);
* login + password: the API user, logged in with `POST <endpoint>/user/login.json`;
* extra: `endpoint` (the Services endpoint's path, default `api`), `verify`, `timeout`.

What a real Drupal 7.101 with Services 7.x-3.20 answered (tests/contract/test_drupal7_contract.py runs
the same assertions against it and against sandbox/drupal7):

* Login: 200 `{"sessid", "session_name", "token", "user"}`; a wrong password 401 "Wrong username or
  password."; a blocked account 403. The session is the cookie `<session_name>=<sessid>`, sent here as
  a header of this hook's session only (never logged, never kept in a cookie jar); every write needs
  `X-CSRF-Token: <token>`, else 401 "CSRF validation failed". A session that ended on the site (logout,
  expiry, sessions table emptied) makes the caller anonymous: 403 "Access denied for user anonymous".
  Both are answered by logging in once more and sending the request again (it was refused before
  anything ran, so a create is not repeated after it happened).
* Errors: the message is in the status line (`406 Not Acceptable : The name x is already taken. ...`)
  and the body is a JSON list of messages, or for form errors `{"form_errors": {field: message}}`
  (406). A missing permission: 403 "Access denied for user <name>". A missing uid: 404 with a JSON body;
  a path the site does not know (wrong endpoint): Drupal's HTML 404 page.
* Services 7.x-3.20 under PHP 8 answers every successful create with a 500 HTML page unless its
  RESTServer.inc is fixed (a reversed join()): the account exists. Any 5xx is CmsUnavailable here, so
  the batch looks the account up by email before anything is sent again.
"""

from __future__ import annotations

import re
from typing import Any

import requests

from cms_operators.backend import CmsAuthError, CmsConfigError, CmsError, CmsRejected, CmsUnavailable
from cms_operators.resthook import CmsRestHook
from transport.hook import Endpoint
from transport.policy import plain_text, retry_after_seconds

DEFAULT_ENDPOINT = "api"
_TRANSIENT_STATUSES = {408, 429, 502, 503, 504}
_ACCESS_DENIED_RE = re.compile(r"Access denied for user (.+?)\s*$", re.S)
_TAGS_RE = re.compile(r"<[^>]+>")


class SessionExpired(CmsAuthError):
    """The site no longer knows our session (401 CSRF validation failed / 403 access denied for anonymous)."""


class FormErrors(CmsRejected):
    """406 with `form_errors`: field -> message (plain text). The backend decides what they mean."""

    def __init__(self, status: int | None, code: str | None, message: str, form_errors: dict[str, str]):
        super().__init__(status, code, message)
        self.form_errors = form_errors


def _messages(payload: Any) -> list[str]:
    if isinstance(payload, list):
        return [plain_text(_TAGS_RE.sub("", str(m))) for m in payload if isinstance(m, str | int | float)]
    if isinstance(payload, dict) and isinstance(payload.get("form_errors"), dict):
        return [plain_text(_TAGS_RE.sub("", str(m))) for m in payload["form_errors"].values()]
    return []


class Drupal7Hook(CmsRestHook):
    """HTTP access to one Drupal 7 Services endpoint: session, token, error mapping; reads are retried."""

    conn_name_attr = "cms_conn_id"
    default_conn_name = "cms_default"
    conn_type = "drupal7"
    hook_name = "Drupal 7"
    site = "the Drupal 7 site"
    jitter = 0.5

    def __init__(self, cms_conn_id: str = default_conn_name, **kwargs: Any):
        super().__init__(cms_conn_id, **kwargs)
        self._logged_in = False
        self.me: dict = {}          # the API user as the login answered (uid, name, roles)
        self.logins = 0             # how many times this hook logged in (tests read it)

    # ------------------------------------------------------------------ connection

    def check_endpoint(self, endpoint: Endpoint) -> None:
        if not endpoint.base_url:
            raise CmsConfigError(None, "connection_incomplete",
                                 f"Airflow connection '{self.conn_id}' has no host: set it to the Drupal 7 site "
                                 "URL, e.g. https://www.example.org")
        if not endpoint.login or not endpoint.password:
            raise CmsConfigError(None, "connection_incomplete",
                                 f"Airflow connection '{self.conn_id}' needs the API user's login and password")
        path = str(endpoint.extra.get("endpoint") or DEFAULT_ENDPOINT).strip().strip("/")
        if not re.fullmatch(r"[A-Za-z0-9_.~/-]+", path):
            raise CmsConfigError(None, "connection_invalid",
                                 f"Airflow connection '{self.conn_id}': extra.endpoint must be the Services "
                                 "endpoint's path, e.g. api")

    def configure_session(self, session: requests.Session) -> None:
        session.headers["Accept"] = "application/json"

    @property
    def site_url(self) -> str:
        return self.endpoint.base_url

    @property
    def endpoint_url(self) -> str:
        path = str(self.endpoint.extra.get("endpoint") or DEFAULT_ENDPOINT).strip().strip("/")
        return f"{self.site_url}/{path}"

    @property
    def login_name(self) -> str:
        return self.endpoint.login

    # ------------------------------------------------------------------ session

    def login(self) -> dict:
        """Log the API user in; the session cookie and the CSRF token go into this hook's session headers."""
        session = self.get_conn()
        self.logout()  # one session at a time: a second login would leave the first behind on the site
        session.headers.pop("Cookie", None)
        session.headers.pop("X-CSRF-Token", None)
        self._logged_in = False
        body = {"username": self.endpoint.login, "password": self.endpoint.password}
        try:
            answer = self._send("POST", f"{self.endpoint_url}/user/login.json", json=body, retry=True,
                                what="POST user/login")
        except SessionExpired as exc:
            raise CmsAuthError(exc.status, "login_refused", exc.message) from None
        except CmsRejected as exc:
            raise CmsAuthError(exc.status, "login_refused", f"Drupal 7 refused the login of connection "
                                                            f"'{self.conn_id}' ({exc.message})") from None
        if not isinstance(answer, dict) or not answer.get("sessid") or not answer.get("session_name"):
            raise CmsConfigError(None, "bad_login_answer", f"{self.endpoint_url}/user/login.json answered without "
                                                           f"a session (connection '{self.conn_id}'): is it a "
                                                           "Services endpoint with session authentication?")
        name, sessid = str(answer["session_name"]), str(answer["sessid"])
        from airflow.sdk.log import mask_secret

        mask_secret(sessid)
        token = str(answer.get("token") or "")
        if token:
            mask_secret(token)
        else:  # older Services answer no token: ask for it with the session
            session.headers["Cookie"] = f"{name}={sessid}"
            token = str(self._send("POST", f"{self.endpoint_url}/user/token.json", json={}, retry=True,
                                   what="POST user/token").get("token") or "")
            mask_secret(token)
        session.headers["Cookie"] = f"{name}={sessid}"
        session.headers["X-CSRF-Token"] = token
        self._secrets = (sessid, token)
        self.me = answer.get("user") if isinstance(answer.get("user"), dict) else {}
        self._logged_in = True
        self.logins += 1
        return self.me

    def logout(self) -> None:
        """End the session on the site (errors ignored: the site ends it anyway after a while)."""
        if not self._logged_in or self._session is None:
            return
        try:
            self._send("POST", f"{self.endpoint_url}/user/logout.json", json={}, retry=False, what="POST user/logout")
        except CmsError as exc:
            self.log.info("Drupal 7: logout failed (%s); the session ends on its own", exc.message)
        self._logged_in = False
        self._session.headers.pop("Cookie", None)
        self._session.headers.pop("X-CSRF-Token", None)

    def close(self) -> None:
        self.logout()
        super().close()

    def scrub(self, text: str) -> str:
        text = super().scrub(text)
        for secret in getattr(self, "_secrets", ()):
            if secret:
                text = text.replace(secret, "***")
        return text

    # ------------------------------------------------------------------ requests

    def call(self, method: str, route: str, *, params: Any = None, json: Any = None,
             retry: bool | None = None) -> Any:
        """One call to the endpoint (route like "user.json"), logged in first; a session the site forgot is
        renewed once and the call sent again. Raises a CmsError subclass for every failure."""
        if not self._logged_in:
            self.login()
        url = f"{self.endpoint_url}/{route}"
        what = f"{method} {route}"
        try:
            return self._send(method, url, params=params, json=json, retry=retry, what=what)
        except SessionExpired:
            self.log.info("Drupal 7: the session ended on the site; logging in again")
            self.login()
            try:
                return self._send(method, url, params=params, json=json, retry=retry, what=what)
            except SessionExpired as exc:
                raise CmsAuthError(exc.status, "session_refused", f"{exc.message} (also right after a new login)") \
                    from None

    def page(self, path: str, *, anonymous: bool = False) -> tuple[int, str]:
        """GET a page of the site itself (HTML), as the API user or as an anonymous visitor: (status, text)."""
        if not anonymous and not self._logged_in:
            self.login()
        headers: dict[str, Any] = {"Accept": "text/html"}
        if anonymous:  # None removes the session's header from this request only
            headers["Cookie"] = None
            headers["X-CSRF-Token"] = None

        def classify(response: requests.Response) -> tuple[int, str]:
            if response.status_code in _TRANSIENT_STATUSES or response.status_code >= 500:
                raise CmsUnavailable(response.status_code, "unavailable", f"Drupal 7 answered GET {path} with HTTP "
                                                                          f"{response.status_code}")
            return response.status_code, response.text

        return self.send("GET", f"{self.site_url}/{path.lstrip('/')}", classify, idempotent=True,
                         what=f"Drupal 7 GET {path}", headers=headers, allow_redirects=False)

    def _send(self, method: str, url: str, *, params: Any = None, json: Any = None, retry: bool | None = None,
              what: str) -> Any:
        method = method.upper()
        if retry is None:
            retry = method in ("GET", "HEAD", "OPTIONS")
        kwargs: dict[str, Any] = {"params": params}
        if json is not None:
            kwargs["json"] = json

        def classify(response: requests.Response) -> Any:
            payload, error = self.classify(response, what)
            if error is not None:
                raise error
            return payload

        return self.send(method, url, classify, idempotent=retry, what=f"Drupal 7 {what}", **kwargs)

    def classify(self, response: requests.Response, what: str) -> tuple[Any, CmsError | None]:
        """Parsed payload, or the CmsError this answer means (contract §4.1, §7)."""
        status = response.status_code
        payload: Any = None
        is_json = "json" in response.headers.get("Content-Type", "")
        if response.content and is_json:
            try:
                payload = response.json()
            except ValueError:
                is_json = False
        if 200 <= status < 300:
            if not is_json:
                kind = response.headers.get("Content-Type", "unknown type")
                return None, CmsUnavailable(status, "not_json", f"Drupal 7 answered {what} with something that is "
                                                                f"not JSON ({kind}); a proxy or maintenance page?")
            return payload, None
        reason = plain_text(_TAGS_RE.sub("", (response.reason or "").partition(":")[2] or ""))
        messages = _messages(payload) or ([reason] if reason else [])
        said = self.scrub(f"HTTP {status}" + (f": {' '.join(messages)}" if messages else ""))
        conn = f"connection '{self.conn_id}'"
        if status == 401:
            if any("CSRF validation failed" in m for m in messages):
                return None, SessionExpired(status, "csrf", f"Drupal 7 refused the session's token for {what} ({said})")
            return None, CmsAuthError(status, "unauthorized", f"Drupal 7 refused the login of {conn} ({said}); check "
                                                              "its login and password")
        if status == 403:
            denied = next((m for m in (_ACCESS_DENIED_RE.search(x) for x in messages) if m), None)
            if denied and denied.group(1).strip() == "anonymous":
                return None, SessionExpired(status, "anonymous", f"Drupal 7 treated {what} as an anonymous visitor's "
                                                                 f"({said})")
            return None, CmsAuthError(status, "forbidden", f"Drupal 7 forbade {what} for {conn} ({said}); the API "
                                                           "user's role lacks a permission (see the README)")
        if status == 406 and isinstance(payload, dict) and isinstance(payload.get("form_errors"), dict):
            errors = {str(k): plain_text(_TAGS_RE.sub("", str(v))) for k, v in payload["form_errors"].items()}
            fields = ", ".join(sorted(errors))
            return None, FormErrors(status, "form_errors", f"Drupal 7 refused the fields {fields} ({said})", errors)
        if status == 404:
            if is_json:
                return None, CmsRejected(status, "not_found", f"Drupal 7 answered {what} with {said}")
            return None, CmsConfigError(status, "no_endpoint", f"Drupal 7 has no {what} ({said}): check extra.endpoint "
                                                               f"of {conn} and that the endpoint offers the user "
                                                               "resource")
        if status in _TRANSIENT_STATUSES or status >= 500:
            return None, CmsUnavailable(status, "unavailable", f"Drupal 7 is unavailable for {what} ({said})",
                                        retry_after=retry_after_seconds(response.headers.get("Retry-After")))
        if status in (405, 415):
            return None, CmsConfigError(status, f"http_{status}", f"Drupal 7 answered {what} with {said}; the "
                                                                  "endpoint needs the JSON parser and formatter")
        return None, CmsRejected(status, f"http_{status}", f"Drupal 7 rejected {what} ({said})")

    # ------------------------------------------------------------------ Airflow UI

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's 'Test' button: log in and out."""
        try:
            me = self.login()
        except CmsError as exc:
            return False, exc.message
        finally:
            self.close()
        return True, f"Logged in as '{me.get('name')}' (user {me.get('uid')}) at {self.endpoint_url}"
