"""CiviCRMHook: CiviCRM APIv4 over HTTP, written to the portable subset of the contract (5.39 and later).

Every call is one POST of a form field `params` (JSON) to the APIv4 AJAX route, authenticated with
`X-Civi-Auth: Bearer <api key>` (+ `X-Civi-Key` when a site key is configured). Answers are mapped to
three exception types the tasks can act on (contract §10.9):

* CiviCRMAuthError    credentials, permissions or the URL are wrong: the whole run stops, no retry.
* CiviCRMUnavailable  the site did not answer usably (network, timeout, 429/502/503/504) after retries.
* CiviCRMError        the API refused this one call (bad field, constraint, ...): the caller decides.

Connection (type http): host = site base URL with https:// or http://, password = API key (at most 32
characters, sent as is), extra = {"site_key": ...,
"api4_url": "https://site/civicrm/ajax/api4/{entity}/{action}", "verify": true}.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urlsplit

import requests
from airflow.sdk import BaseHook

from hook_support import check_secret, parse_verify, retry_after_seconds, site_base_url

DEFAULT_ROUTE = "/civicrm/ajax/api4/{entity}/{action}"
# Rate limits, maintenance and proxies: worth another try whatever the body says (JSON or an HTML page)
TRANSIENT_STATUSES = (429, 502, 503, 504)
MAX_RETRY_AFTER = 30.0
MAX_API_KEY_LENGTH = 32  # civicrm_contact.api_key is varchar(32)
MESSAGE_LIMIT = 300


#: The CiviCRM permissions the API contact's role needs (none implies another; see the README).
REQUIRED_PERMISSIONS = ("authenticate with api key", "edit all contacts", "view all activities",
                        "administer CiviCRM")
REQUIRED_TEXT = ", ".join(f"'{name}'" for name in REQUIRED_PERMISSIONS)
PERMISSION_HINTS = {"UFMatch": "'administer CiviCRM'", "OptionValue": "'administer CiviCRM'",
                    "Activity": "'view all activities'", "ActivityContact": "'view all activities'",
                    "Contact": "'edit all contacts'", "GroupContact": "'edit all contacts'",
                    "EntityTag": "'edit all contacts'", "Email": "'edit all contacts'"}


def _status_of(http_status: int, data: Any) -> int:
    """The call's real status: an error body's `status` (or `error_code`) when the HTTP status says 200.

    Behind servers that lose status codes (WordPress under `php -S` sends 200 first), CiviCRM's
    errors arrive as 200 with the error in the body; retries and messages must not be fooled.
    """
    if http_status >= 400 or not isinstance(data, dict) or "values" in data:
        return http_status
    if "error_message" not in data and "error_code" not in data:
        return http_status
    for key in ("status", "error_code"):
        try:
            code = int(data.get(key))
        except (TypeError, ValueError):
            continue
        if 400 <= code < 600:
            return code
    return 500


class CiviCRMError(Exception):
    """CiviCRM refused or failed a call. `str()` never contains the API key or site key."""

    retryable = False  # set on instances the hook may retry (idempotent calls only)

    def __init__(self, message: str, *, status: int | None = None, entity: str | None = None,
                 action: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.entity = entity
        self.action = action

    def __str__(self) -> str:
        call = f"{self.entity}.{self.action}" if self.entity else "call"
        status = f" (HTTP {self.status})" if self.status else ""
        return f"CiviCRM {call} failed{status}: {self.message}"

    def __reduce__(self):
        return (_rebuild_error, (type(self), self.message, self.status, self.entity, self.action))


class CiviCRMAuthError(CiviCRMError):
    """401 / 403 / a non-JSON answer (login or access-denied page) / unusable connection settings."""


class CiviCRMUnavailable(CiviCRMError):
    """No usable answer: connection error, timeout, 429/502/503/504 or a non-JSON 5xx, after the hook's retries."""


def _rebuild_error(cls, message, status, entity, action):
    return cls(message, status=status, entity=entity, action=action)


@dataclass(frozen=True)
class _Settings:
    url_template: str
    site: str                 # scheme://host[:port], for messages
    api_key: str
    site_key: str | None
    verify: bool | str

    def __repr__(self) -> str:  # the keys stay out of reprs
        return f"_Settings(url_template={self.url_template!r}, verify={self.verify!r})"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _snippet(text: str) -> str:
    """A short, tag-free excerpt of a server answer for an error message."""
    text = re.sub(r"<[^>]+>", " ", text or "")
    text = re.sub(r"\s+", " ", text).strip()
    return text[:MESSAGE_LIMIT] + ("…" if len(text) > MESSAGE_LIMIT else "")


class CiviCRMHook(BaseHook):
    """CiviCRM APIv4 REST client with keyset paging and retries for idempotent calls."""

    conn_name_attr = "civicrm_conn_id"
    default_conn_name = "civicrm_default"
    conn_type = "http"
    hook_name = "CiviCRM APIv4"

    def __init__(self, civicrm_conn_id: str = default_conn_name, *, timeout: float = 60, page_size: int = 1000,
                 retries: int = 3, backoff: float = 0.5):
        super().__init__()
        self.civicrm_conn_id = civicrm_conn_id
        self.timeout = timeout
        self.page_size = page_size
        self.retries = max(1, int(retries))
        self.backoff = backoff
        self._sleep = time.sleep  # tests swap this to observe backoff without waiting
        self._settings: _Settings | None = None
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        return f"CiviCRMHook(civicrm_conn_id={self.civicrm_conn_id!r})"

    # --- connection -------------------------------------------------------------------------

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["login", "schema"],
            "relabeling": {"host": "CiviCRM site URL", "password": "API key"},
            "placeholders": {
                "host": "https://crm.example.org",
                "extra": json.dumps({"site_key": "CIVICRM_SITE_KEY (optional)",
                                     "api4_url": "https://crm.example.org/civicrm/ajax/api4/{entity}/{action}",
                                     "verify": True}),
            },
        }

    def _config(self) -> _Settings:
        if self._settings is not None:
            return self._settings
        conn_id = self.civicrm_conn_id
        conn = self.get_connection(conn_id)
        extra = conn.extra_dejson or {}
        api_key = conn.password or ""
        site_key = str(extra.get("site_key") or "") or None
        # masked as soon as read, so no log line of this process can show them
        from airflow.sdk.log import mask_secret

        if api_key:
            mask_secret(api_key)
        if site_key:
            mask_secret(site_key)
        # not stripped: a key that differs from what is stored would only fail later, as a vague 401
        check_secret(api_key, field="password (the API key)", conn_id=conn_id, error_cls=CiviCRMAuthError)
        check_secret(site_key, field="extra.site_key", conn_id=conn_id, error_cls=CiviCRMAuthError)
        if not api_key:
            raise CiviCRMAuthError(f"Connection '{conn_id}' has no API key. Put the API contact's CiviCRM API key "
                                   "in the connection's Password field.")
        verify = parse_verify(extra.get("verify", True), conn_id=conn_id, error_cls=CiviCRMAuthError)
        template = str(extra.get("api4_url") or "").strip()
        if not template:
            # the host only matters when it makes the APIv4 URL
            host = site_base_url(conn.host, conn.schema, conn.port, conn_id=conn_id, error_cls=CiviCRMAuthError,
                                 what="the CiviCRM site")
            if not host:
                raise CiviCRMAuthError(f"Connection '{conn_id}' has no host. Set Host to the CiviCRM site's base "
                                       "URL (e.g. https://crm.example.org), or set extra.api4_url.")
            template = host + DEFAULT_ROUTE
        if "{entity}" not in template or "{action}" not in template:
            raise CiviCRMAuthError(f"Connection '{conn_id}': extra.api4_url must contain {{entity}} and {{action}}, "
                                   "e.g. https://crm.example.org/civicrm/ajax/api4/{entity}/{action}.")
        parts = urlsplit(template)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CiviCRMAuthError(f"Connection '{conn_id}': the APIv4 URL must start with https:// (or http://). "
                                   "Check Host / extra.api4_url.")
        self._settings = _Settings(template, f"{parts.scheme}://{parts.netloc}", api_key, site_key, verify)
        return self._settings

    def get_conn(self) -> requests.Session:
        """The hook's HTTP session (one per hook; it never keeps cookies)."""
        if self._session is None:
            session = requests.Session()
            # a stateless API client: a CMS session cookie would switch CiviCRM to the cookie flow
            session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            session.headers.update({"X-Requested-With": "XMLHttpRequest", "Accept": "application/json",
                                    "User-Agent": "cmsuser-airflow CiviCRMHook"})
            self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _scrub(self, text: str) -> str:
        settings = self._settings
        if settings is not None:
            for secret in (settings.api_key, settings.site_key):
                if secret:
                    text = text.replace(secret, "***")
        return text

    def _error(self, cls: type[CiviCRMError], message: str, *, status: int | None, entity: str, action: str,
               retryable: bool = False) -> CiviCRMError:
        error = cls(self._scrub(message), status=status, entity=entity, action=action)
        error.retryable = retryable
        return error

    # --- calls ------------------------------------------------------------------------------

    def call(self, entity: str, action: str, params: dict | None = None) -> list[dict]:
        """One APIv4 call; returns `values`."""
        return self.call_full(entity, action, params)["values"]

    def call_full(self, entity: str, action: str, params: dict | None = None) -> dict:
        """One APIv4 call; returns the whole envelope (values, count, countFetched, countMatched ...)."""
        settings = self._config()
        session = self.get_conn()
        url = settings.url_template.replace("{entity}", entity).replace("{action}", action)
        body = {"params": json.dumps(params or {}, separators=(",", ":"), default=_json_default)}
        headers = {"X-Civi-Auth": f"Bearer {settings.api_key}"}
        if settings.site_key:
            headers["X-Civi-Key"] = settings.site_key
        idempotent = self.is_idempotent(action, params or {})
        attempts = self.retries if idempotent else 1
        error: CiviCRMError | None = None
        too_long = False
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            wait = self.backoff * (2 ** (attempt - 1))
            retry_after = None
            try:
                response = session.post(url, data=body, headers=headers, timeout=self.timeout,
                                        verify=settings.verify, allow_redirects=False)
            except requests.exceptions.Timeout:
                error = self._error(CiviCRMUnavailable, f"no answer from {settings.site} within {self.timeout} s",
                                    status=None, entity=entity, action=action, retryable=True)
            except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                error = self._error(CiviCRMUnavailable, f"could not reach {settings.site} "
                                    f"({type(exc).__name__}: the connection failed or was dropped)",
                                    status=None, entity=entity, action=action, retryable=True)
            else:
                session.cookies.clear()
                self.log.debug("CiviCRM %s.%s -> HTTP %s in %d ms", entity, action, response.status_code,
                               (time.monotonic() - started) * 1000)
                try:
                    return self._parse(response, entity, action)
                except CiviCRMError as exc:
                    if not exc.retryable:
                        raise
                    error = exc
                    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if attempt < attempts:
                if retry_after is not None and retry_after > MAX_RETRY_AFTER:
                    too_long = True  # sleeping that long would hold the worker: leave the wait to the caller
                    break
                if retry_after is not None:
                    wait = retry_after
                self.log.debug("CiviCRM %s.%s: retrying in %.1f s (try %d of %d)", entity, action, wait,
                               attempt + 1, attempts)
                self._sleep(wait)
        assert error is not None
        if too_long:
            asked = f"{retry_after:.1f}".removesuffix(".0")
            error.message = (f"{error.message}; the server asked to wait {asked} s before another try, "
                             f"longer than the {MAX_RETRY_AFTER:g} s this hook waits, so it gave up after "
                             f"{attempt} {'try' if attempt == 1 else 'tries'}. Try again later.")
        elif idempotent:
            error.message = f"{error.message}; gave up after {attempts} tries. Check that the site is up."
        elif isinstance(error, CiviCRMUnavailable):
            error.message = (f"{error.message}. {action} is not retried because repeating it could write twice: "
                             "it may or may not have been applied in CiviCRM.")
        raise error

    @staticmethod
    def is_idempotent(action: str, params: dict) -> bool:
        """Safe to repeat: reads, update/delete by where or id, and save with `match` (or ids on every record)."""
        if action.startswith("get") or action == "autocomplete":
            return True
        if action in ("update", "delete"):
            return True
        if action == "save":
            records = params.get("records") or []
            return bool(params.get("match")) or bool(records) and all(
                isinstance(r, dict) and r.get("id") for r in records)
        return False

    def _parse(self, response: requests.Response, entity: str, action: str) -> dict:
        conn_id = self.civicrm_conn_id
        content_type = response.headers.get("Content-Type", "")
        data: Any = None
        if "json" in content_type or "javascript" in content_type:
            try:
                data = response.json()
            except ValueError:
                data = None
        status = _status_of(response.status_code, data)
        if status == 401:
            site_key_hint = " and extra.site_key (CIVICRM_SITE_KEY)" if self._settings.site_key else \
                ", or set extra.site_key (CIVICRM_SITE_KEY) if the site's AuthX guard requires it"
            length_hint = ""
            if len(self._settings.api_key) > MAX_API_KEY_LENGTH:
                # a longer key was cut when it was saved in CiviCRM, so the full one sent here never matches
                length_hint = (f" The API key of connection '{conn_id}' has {len(self._settings.api_key)} "
                               f"characters, but CiviCRM stores API keys of at most {MAX_API_KEY_LENGTH} "
                               "characters and cuts longer ones silently: set a key of "
                               f"{MAX_API_KEY_LENGTH} characters or fewer on the API contact and in the "
                               "connection's password.")
            raise self._error(CiviCRMAuthError, f"CiviCRM refused the credentials of connection '{conn_id}' "
                              f"({_snippet(response.text) or 'HTTP 401'}). Check the connection's password (the "
                              f"API key of the API contact){site_key_hint}; the AuthX extension must be enabled "
                              "and the API contact must hold 'authenticate with api key' unless the site key is sent."
                              f"{length_hint}", status=401, entity=entity, action=action)
        if status in TRANSIENT_STATUSES:
            said = "rate limited the call (HTTP 429)" if status == 429 else f"answered HTTP {status}"
            raise self._error(CiviCRMUnavailable, f"{self._config().site} {said} "
                              f"({_snippet(response.text) or response.reason})", status=status, entity=entity,
                              action=action, retryable=True)
        if data is None:
            self._non_json(response, entity, action)
        if status == 403:
            message = data.get("error_message") if isinstance(data, dict) else None
            raise self._error(CiviCRMAuthError, f"CiviCRM denied {entity}.{action} to the API contact of connection "
                              f"'{conn_id}' ({message or 'Authorization failed'}). Give the API contact's CMS role "
                              f"the CiviCRM permission this call needs ({PERMISSION_HINTS.get(entity, REQUIRED_TEXT)}).",
                              status=403, entity=entity, action=action)
        if isinstance(data, dict) and "values" in data and status < 400:
            return data
        if isinstance(data, dict) and data.get("is_error"):  # the legacy REST authenticator's refusal
            raise self._error(CiviCRMAuthError, f"CiviCRM refused connection '{conn_id}': "
                              f"{_snippet(str(data.get('error_message')))}", status=status, entity=entity,
                              action=action)
        if isinstance(data, dict) and data.get("error_message") is not None:
            message = str(data["error_message"])
        elif data == []:
            message = ("error details hidden by CiviCRM (answer `[]`); see the CiviCRM log, or give the API "
                       "contact 'view debug output'")
        else:
            message = f"unexpected answer: {_snippet(json.dumps(data))}"
        # the generic "Sorry an error occurred" hides the cause (maybe a deadlock): worth another try
        generic = status >= 500 and (data == [] or message.startswith("Sorry an error occurred"))
        raise self._error(CiviCRMError, message, status=status, entity=entity, action=action, retryable=generic)

    def _non_json(self, response: requests.Response, entity: str, action: str) -> None:
        status, conn_id = response.status_code, self.civicrm_conn_id
        where = "Check the connection's Host / extra.api4_url"
        if status >= 500:
            raise self._error(CiviCRMUnavailable, f"{self._config().site} answered HTTP {status} without JSON "
                              f"({_snippet(response.text) or response.reason})", status=status, entity=entity,
                              action=action, retryable=True)
        if 300 <= status < 400:
            target = urlsplit(response.headers.get("Location", ""))
            raise self._error(CiviCRMAuthError, f"CiviCRM redirected {entity}.{action} to "
                              f"{target.scheme}://{target.netloc}{target.path} instead of answering: the URL of "
                              f"connection '{conn_id}' is not the APIv4 REST route (use the front-end URL, e.g. "
                              "https://site/civicrm/ajax/api4/{entity}/{action}) or a login page answered. "
                              f"{where}.", status=status, entity=entity, action=action)
        if status == 403:
            raise self._error(CiviCRMAuthError, f"CiviCRM answered 403 with an access-denied page: the request from "
                              f"connection '{conn_id}' was treated as anonymous. Check that the AuthX extension is "
                              "enabled and that the API key belongs to a contact with a CMS user.",
                              status=status, entity=entity, action=action)
        if status == 404:
            raise self._error(CiviCRMAuthError, f"no CiviCRM APIv4 endpoint at the URL of connection '{conn_id}' "
                              f"(HTTP 404). {where}.", status=status, entity=entity, action=action)
        raise self._error(CiviCRMAuthError, f"CiviCRM answered HTTP {status} with a non-JSON page "
                          f"({response.headers.get('Content-Type') or 'no content type'}: "
                          f"{_snippet(response.text)[:120]}), probably a login page. {where} and the API key.",
                          status=status, entity=entity, action=action)

    # --- paging -----------------------------------------------------------------------------

    def get_all(self, entity: str, params: dict | None = None, page_size: int | None = None) -> Iterator[dict]:
        """Every row of a `get`, keyset-paged on id (`id > last`, `orderBy id ASC`, `limit`).

        The caller's `where`, `select`, `join` ... are kept; a `limit` caps the total. Offsets and other
        orders cannot be combined with keyset paging and raise ValueError.
        """
        size = int(page_size or self.page_size)
        base = dict(params or {})
        if base.pop("offset", 0):
            raise ValueError("get_all pages by id; it cannot take an offset")
        order = base.pop("orderBy", None)
        if order not in (None, {}, [], {"id": "ASC"}):
            raise ValueError(f"get_all returns rows in id order; it cannot take orderBy {order!r}")
        cap = base.pop("limit", 0) or None
        where = list(base.pop("where", None) or [])
        select = base.get("select")
        if select and "id" not in select:
            base["select"] = ["id", *select]
        last, yielded = 0, 0
        while True:
            want = size if cap is None else min(size, cap - yielded)
            if want <= 0:
                return
            rows = self.call(entity, "get", {**base, "where": [*where, ["id", ">", last]],
                                             "orderBy": {"id": "ASC"}, "limit": want})
            ids = [row.get("id") for row in rows]
            if len(set(ids)) != len(ids):
                raise ValueError(f"{entity}.get returned the same id twice in one page: a join multiplies rows, "
                                 "so keyset paging would skip some. Add groupBy ['id'] or make the join one-to-one.")
            if any(not isinstance(i, int) or i <= last for i in ids) or ids != sorted(ids):
                raise self._error(CiviCRMError, "rows did not come back in ascending id order after the last page; "
                                  "keyset paging cannot continue", status=None, entity=entity, action="get")
            yield from rows
            yielded += len(rows)
            if len(rows) < want:
                return
            last = ids[-1]

    def get_in(self, entity: str, field: str, values: Iterable, params: dict | None = None,
               chunk: int = 500) -> Iterator[dict]:
        """Rows whose `field` is in `values`: one `IN` query per chunk of values, each keyset-paged.

        Values are de-duplicated; no values means no call (CiviCRM refuses `IN []`). A row is yielded once
        even if several chunks find it (e.g. Contact's `groups` filter).
        """
        unique = list(dict.fromkeys(v for v in values if v is not None))
        base = dict(params or {})
        where = list(base.pop("where", None) or [])
        seen: set[int] = set()
        for start in range(0, len(unique), chunk):
            part = unique[start:start + chunk]
            for row in self.get_all(entity, {**base, "where": [*where, [field, "IN", part]]}):
                if row["id"] not in seen:
                    seen.add(row["id"])
                    yield row

    # --- Airflow's "Test connection" ------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Read the API contact's own record (`user_contact_id`): proves URL, key, guard and permission."""
        try:
            rows = self.call("Contact", "get", {"select": ["id", "display_name"],
                                                "where": [["id", "=", "user_contact_id"]], "limit": 1})
        except CiviCRMError as exc:
            return False, str(exc)
        except Exception as exc:  # e.g. the connection does not exist
            return False, self._scrub(f"{type(exc).__name__}: {exc}")
        if not rows:
            return False, ("Authenticated, but the API contact cannot read its own contact record: give its CMS "
                           "role 'view all contacts' (or 'view my contact').")
        return True, f"Connected to CiviCRM as contact {rows[0]['id']} ({rows[0].get('display_name') or 'no name'})."
