"""WordPressHook: WordPress's REST API (wp/v2/users) with an Application Password, on the shared transport.

The Airflow connection (default id `cms_default`, type wordpress, or http as before):

* host: the site's base URL, e.g. `https://www.example.org` (a path is kept for sites in a
  subdirectory; a host without a scheme needs the connection's schema field set to http or https);
* login: the API user's login (or email); password: an **Application Password** of that user
  (Users > Profile > Application Passwords; the account password itself is refused by WordPress);
* extra (all optional): `rest_url` (default `<host>/wp-json`; use `<host>/?rest_route=` on sites
  without pretty permalinks), `verify` (true/false, or a CA bundle path), `timeout` (seconds, default 30).
  Extras are settings only; none is ever sent as an HTTP header.

Facts relied on come from the contract (shared/contracts/cms-users.md §2, §7) and were checked
against a real WordPress 6.1 by tests/contract.
"""

from __future__ import annotations

from typing import Any

import requests

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

USERS_ROUTE = "/wp/v2/users"

# wp_insert_user() errors that are answered as HTTP 500 but are permanent (contract §1 rule 8).
_PERMANENT_500_CODES = {"user_login_too_long", "user_nicename_too_long", "user_url_too_long",
                        "invalid_username", "empty_user_login"}
_TRANSIENT_STATUSES = {429, 502, 503, 504}


class WordPressHook(CmsRestHook):
    """HTTP access to one WordPress site: auth, error mapping; the transport retries reads only."""

    conn_name_attr = "cms_conn_id"
    default_conn_name = "cms_default"
    conn_type = "wordpress"
    hook_name = "WordPress"
    site = "the WordPress site"
    password_label = "password (the application password)"
    jitter = 0.5

    def __init__(self, cms_conn_id: str = default_conn_name, **kwargs: Any):
        super().__init__(cms_conn_id, **kwargs)

    # ------------------------------------------------------------------ connection

    def check_endpoint(self, endpoint: Endpoint) -> None:
        if not endpoint.base_url:
            raise CmsConfigError(None, "connection_incomplete",
                                 f"Airflow connection '{self.conn_id}' has no host: set it to the "
                                 "WordPress site URL, e.g. https://www.example.org")
        if not endpoint.login or not endpoint.password:
            raise CmsConfigError(None, "connection_incomplete",
                                 f"Airflow connection '{self.conn_id}' needs a login (the WordPress API "
                                 "user) and a password (an application password of that user)")

    def configure_session(self, session: requests.Session) -> None:
        # Basic auth with the application password, as UTF-8 bytes: requests would encode str
        # credentials as Latin-1. No cookies (the base's default): they would switch on WordPress's
        # nonce checks (contract §1 rule 7).
        session.auth = (self.endpoint.login.encode("utf-8"), self.endpoint.password.encode("utf-8"))

    @property
    def site_url(self) -> str:
        return self.endpoint.base_url

    @property
    def rest_url(self) -> str:
        return str(self.endpoint.extra.get("rest_url") or f"{self.site_url}/wp-json").rstrip("/")

    @property
    def login(self) -> str:
        return self.endpoint.login

    # ------------------------------------------------------------------ requests

    def rest(self, method: str, route: str, **kwargs: Any) -> tuple[requests.Response, Any]:
        """A REST call (route like "/wp/v2/users"); returns the response and its parsed JSON."""
        return self.request(method, self.rest_url + route, **kwargs)

    def request(self, method: str, url: str, *, params: dict | None = None, json: Any = None,
                data: dict | None = None, retry: bool | None = None, expect_json: bool = True,
                allow_redirects: bool = True) -> tuple[requests.Response, Any]:
        """Send one request; GET/HEAD/OPTIONS (or `retry=True`) are retried on transient errors.
        Raises a CmsError subclass for every failure."""
        method = method.upper()
        if retry is None:
            retry = method in ("GET", "HEAD", "OPTIONS")
        what = f"{method} {requests.utils.urlparse(url).path}"

        def classify(response: requests.Response) -> tuple[requests.Response, Any]:
            payload, error = self._classify(response, what, expect_json)
            if error is not None:
                raise error
            return response, payload

        return self.send(method, url, classify, idempotent=retry, what=f"WordPress {what}", params=params,
                         json=json, data=data, allow_redirects=allow_redirects)

    def _classify(self, response: requests.Response, what: str, expect_json: bool) -> tuple[Any, CmsError | None]:
        """Parsed payload, or the CmsError this answer means (contract §7)."""
        status = response.status_code
        payload: Any = None
        is_json = False
        if response.content:
            try:
                payload = response.json()
                is_json = True
            except ValueError:
                payload = None
        if 200 <= status < 400:
            if expect_json and not is_json:
                kind = response.headers.get("Content-Type", "unknown type")
                return None, CmsUnavailable(status, "not_json",
                                            f"WordPress answered {what} with something that is not JSON "
                                            f"({kind}); a proxy or maintenance page?")
            return payload if expect_json else response.text, None
        code = payload.get("code") if isinstance(payload, dict) else None
        wp_message = plain_text(payload.get("message")) if isinstance(payload, dict) else ""
        said = f"HTTP {status}" + (f" {code}" if code else "") + (f": {wp_message}" if wp_message else "")
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        conn = f"connection '{self.cms_conn_id}'"
        if status == 401:
            return None, CmsAuthError(status, code, f"WordPress refused the credentials of {conn} ({said}); "
                                                    "check its login and application password")
        if status == 403:
            return None, CmsAuthError(status, code, f"WordPress forbade {what} for the user of {conn} "
                                                    f"({said}); the API user needs the administrator role")
        if status == 400 and code == "rest_user_invalid_role":
            return None, CmsConfigError(status, code, f"WordPress has no such role ({said}); create the role "
                                                      "or fix the roles setting")
        if status in (404, 405, 409, 501):
            return None, CmsConfigError(status, code, f"WordPress answered {what} with {said}; check the "
                                                      f"site URL / rest_url of {conn}")
        if status in _TRANSIENT_STATUSES or (status >= 500 and not is_json):
            return None, CmsUnavailable(status, code or "unavailable",
                                        f"WordPress is unavailable for {what} ({said or f'HTTP {status}'})",
                                        retry_after=retry_after)
        if status == 500 and code == "existing_user_login":
            return None, CmsDuplicateLogin(status, code, f"WordPress already has that username ({said})")
        if status == 500 and code == "existing_user_email":
            return None, CmsDuplicateEmail(status, code, f"WordPress already has a user with that email ({said})")
        if status == 500 and code in _PERMANENT_500_CODES:
            return None, CmsRejected(status, code, f"WordPress rejected the user ({said})")
        if status >= 500:
            return None, CmsRejected(status, code or "internal_server_error",
                                     f"WordPress failed with {said or f'HTTP {status}'} (seen for emails over "
                                     "100 characters, display names over 250, or a broken plugin)")
        return None, CmsRejected(status, code, f"WordPress rejected {what}: {self._describe_invalid(payload, said)}")

    @staticmethod
    def _describe_invalid(payload: Any, said: str) -> str:
        """'Invalid parameter(s): email' plus each field's own reason."""
        data = payload.get("data") if isinstance(payload, dict) else None
        params = data.get("params") if isinstance(data, dict) else None
        if isinstance(params, dict) and params:
            reasons = "; ".join(f"{field}: {plain_text(reason)}" for field, reason in params.items())
            return f"{said} ({reasons})"
        return said

    # ------------------------------------------------------------------ Airflow UI

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's 'Test' button: authenticate and read the API user."""
        try:
            _, me = self.rest("GET", USERS_ROUTE + "/me", params={"context": "edit"})
        except CmsError as exc:
            return False, exc.message
        return True, f"Authenticated as '{me.get('username')}' at {self.rest_url}"
