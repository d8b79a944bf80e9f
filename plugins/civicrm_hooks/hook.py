"""CiviCRMHook: CiviCRM APIv4 over HTTP, written to the portable subset of the contract (5.39 and later).

Every call is one POST of a form field `params` (JSON, sent as multipart/form-data) to the APIv4 AJAX route,
authenticated with `X-Civi-Auth: Bearer <api key>` (+ `X-Civi-Key` when a site key is configured). Answers are
mapped to three exception types the tasks can act on (contract §10.9):

* CiviCRMAuthError    credentials, permissions or the URL are wrong: the whole run stops, no retry.
* CiviCRMUnavailable  the site did not answer usably (network, timeout, 429/502/503/504) after retries.
* CiviCRMError        the API refused this one call (bad field, constraint, ...): the caller decides.

Connection (type civicrm, or http as before): host = site base URL with https:// or http://, password = API key (at most 32
characters, sent as is), extra = {"site_key": ...,
"api4_url": "https://site/civicrm/ajax/api4/{entity}/{action}", "verify": true}.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from transport.errors import ProvisioningError
from transport.hook import Endpoint, RestHook
from transport.policy import plain_text

DEFAULT_ROUTE = "/civicrm/ajax/api4/{entity}/{action}"
# Rate limits, maintenance and proxies: worth another try whatever the body says (JSON or an HTML page)
TRANSIENT_STATUSES = (429, 502, 503, 504)
MAX_API_KEY_LENGTH = 32  # civicrm_contact.api_key is varchar(32)


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


class CiviCRMError(ProvisioningError):
    """CiviCRM refused or failed a call. `str()` never contains the API key or site key."""

    def __init__(self, message: str, *, status: int | None = None, entity: str | None = None,
                 action: str | None = None, retryable: bool | None = None):
        super().__init__(message, status=status)
        self.entity = entity
        self.action = action
        if retryable is not None:
            self.retryable = retryable  # the hook marks what it may retry (idempotent calls only)

    def __str__(self) -> str:
        call = f"{self.entity}.{self.action}" if self.entity else "call"
        status = f" (HTTP {self.status})" if self.status else ""
        return f"CiviCRM {call} failed{status}: {self.message}"


class CiviCRMAuthError(CiviCRMError):
    """401 / 403 / a non-JSON answer (login or access-denied page) / unusable connection settings."""


class CiviCRMUnavailable(CiviCRMError):
    """No usable answer: connection error, timeout, 429/502/503/504 or a non-JSON 5xx, after the hook's retries."""

    retryable = True


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


# Values per `IN` query of get_in. A call's cost is mostly CiviCRM's bootstrap, not the list: on the real 5.76 a
# create batch's two reads of 5,000 contacts (links, journal) took 1.3-1.5 s as ten calls each of 500 and
# 0.15 s as one call each; the list is a few tens of kB of JSON, far inside PHP's post_max_size.
IN_CHUNK = 5000


def _form(name: str, value: Any) -> dict:
    """`value` as JSON in one form field, sent as multipart/form-data: PHP fills $_POST from it as from a
    URL-encoded body (contract §2.2), and the JSON goes as it is. Percent-encoding it is pure Python, about 40 ns a byte under
    the GIL: 4.5 ms for a wave's 100 kB journal write, against 0.1 ms this way, while the batch's CMS threads
    wait for the GIL."""
    return {name: (None, json.dumps(value, separators=(",", ":"), default=_json_default))}


class CiviCRMHook(RestHook):
    """CiviCRM APIv4 REST client with keyset paging and retries for idempotent calls."""

    conn_name_attr = "civicrm_conn_id"
    default_conn_name = "civicrm_default"
    conn_type = "civicrm"
    hook_name = "CiviCRM APIv4"
    site = "the CiviCRM site"
    secret_extras = ("site_key",)
    password_label = "password (the API key)"
    default_timeout = 60.0
    user_agent = "cmsuser-airflow CiviCRMHook"

    def __init__(self, civicrm_conn_id: str = default_conn_name, *, timeout: float | None = None,
                 page_size: int = 1000, retries: int = 3, backoff: float = 0.5):
        super().__init__(civicrm_conn_id, timeout=timeout)
        self.page_size = page_size
        self.max_tries = max(1, int(retries))
        self.backoff_seconds = backoff
        self._settings: _Settings | None = None

    # --- connection -------------------------------------------------------------------------

    def connection_error(self, message: str) -> CiviCRMError:
        return CiviCRMAuthError(message)

    def unavailable(self, message: str, *, code: str) -> CiviCRMError:
        return CiviCRMUnavailable(message)

    def uses_host(self, extra: dict) -> bool:
        return not str(extra.get("api4_url") or "").strip()  # the host only matters when it makes the URL

    def check_endpoint(self, endpoint: Endpoint) -> None:
        conn_id = endpoint.conn_id
        if not endpoint.password:
            raise CiviCRMAuthError(f"Connection '{conn_id}' has no API key. Put the API contact's CiviCRM API key "
                                   "in the connection's Password field.")
        template = str(endpoint.extra.get("api4_url") or "").strip()
        if not template:
            if not endpoint.base_url:
                raise CiviCRMAuthError(f"Connection '{conn_id}' has no host. Set Host to the CiviCRM site's base "
                                       "URL (e.g. https://crm.example.org), or set extra.api4_url.")
            template = endpoint.base_url + DEFAULT_ROUTE
        if "{entity}" not in template or "{action}" not in template:
            raise CiviCRMAuthError(f"Connection '{conn_id}': extra.api4_url must contain {{entity}} and {{action}}, "
                                   "e.g. https://crm.example.org/civicrm/ajax/api4/{entity}/{action}.")
        parts = urlsplit(template)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CiviCRMAuthError(f"Connection '{conn_id}': the APIv4 URL must start with https:// (or http://). "
                                   "Check Host / extra.api4_url.")
        site_key = str(endpoint.extra.get("site_key") or "") or None
        self._settings = _Settings(template, f"{parts.scheme}://{parts.netloc}", endpoint.password, site_key,
                                   endpoint.verify)

    def _config(self) -> _Settings:
        _ = self.endpoint
        assert self._settings is not None
        return self._settings

    def configure_session(self, session: requests.Session) -> None:
        session.headers["X-Requested-With"] = "XMLHttpRequest"

    def _error(self, cls: type[CiviCRMError], message: str, *, status: int | None, entity: str, action: str,
               retryable: bool = False) -> CiviCRMError:
        return cls(self.scrub(message), status=status, entity=entity, action=action, retryable=retryable)

    # --- calls ------------------------------------------------------------------------------

    def call(self, entity: str, action: str, params: dict | None = None) -> list[dict]:
        """One APIv4 call; returns `values`."""
        return self.call_full(entity, action, params)["values"]

    def call_full(self, entity: str, action: str, params: dict | None = None) -> dict:
        """One APIv4 call; returns the whole envelope (values, count, countFetched, countMatched ...)."""
        settings = self._config()
        url = settings.url_template.replace("{entity}", entity).replace("{action}", action)
        body = _form("params", params or {})
        headers = {"X-Civi-Auth": f"Bearer {settings.api_key}"}
        if settings.site_key:
            headers["X-Civi-Key"] = settings.site_key

        def classify(response: requests.Response) -> dict:
            try:
                return self._parse(response, entity, action)
            except CiviCRMError as exc:
                exc.entity, exc.action = entity, action
                raise

        return self.send("POST", url, classify, idempotent=self.is_idempotent(action, params or {}),
                         what=f"CiviCRM {entity}.{action}", files=body, headers=headers, allow_redirects=False)

    def call_many(self, calls: dict[str, tuple[str, str, dict]]) -> dict[str, list[dict]]:
        """Several reads in one request (APIv4's multi-call form, `civicrm/ajax/api4` with `calls`):
        name -> (entity, action, params) in, name -> `values` out. Reads only: CiviCRM runs the calls one
        after another and answers 200 when any succeeded, so a write among them could be half done."""
        if not all(action.startswith("get") for _, action, _ in calls.values()):
            raise ValueError("call_many takes reads only (get actions)")
        settings = self._config()
        url = settings.url_template.replace("/{entity}/{action}", "")
        body = _form("calls", {name: [entity, action, params] for name, (entity, action, params) in calls.items()})
        headers = {"X-Civi-Auth": f"Bearer {settings.api_key}"}
        if settings.site_key:
            headers["X-Civi-Key"] = settings.site_key
        what = "+".join(f"{entity}.{action}" for entity, action, _ in calls.values())

        def classify(response: requests.Response) -> dict[str, list[dict]]:
            answers = self._parse(response, what, "calls", multi=True)
            values = {}
            for name, (entity, action, _) in calls.items():
                answer = answers.get(name)
                if not isinstance(answer, dict) or "values" not in answer:
                    message = answer.get("error_message") if isinstance(answer, dict) else None
                    raise self._error(CiviCRMError, str(message or f"no answer for {name}"), status=response.status_code,
                                      entity=entity, action=action)
                values[name] = answer["values"]
            return values

        return self.send("POST", url, classify, idempotent=True, what=f"CiviCRM {what}", files=body, headers=headers,
                         allow_redirects=False)

    def gave_up(self, error, *, tries: int, idempotent: bool, too_long: bool):
        if too_long:
            asked = f"{error.retry_after:.1f}".removesuffix(".0")
            error.message = (f"{error.message}; the server asked to wait {asked} s before another try, "
                             f"longer than the {self.max_retry_after:g} s this hook waits, so it gave up after "
                             f"{tries} {'try' if tries == 1 else 'tries'}. Try again later.")
        elif idempotent:
            error.message = f"{error.message}; gave up after {tries} tries. Check that the site is up."
        elif isinstance(error, CiviCRMUnavailable):
            error.message = (f"{error.message}. {error.action or 'This call'} is not retried because repeating it "
                             "could write twice: it may or may not have been applied in CiviCRM.")
        return error

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

    def _parse(self, response: requests.Response, entity: str, action: str, *, multi: bool = False) -> dict:
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
            site_key_hint = " and extra.site_key (CIVICRM_SITE_KEY)" if self._config().site_key else \
                ", or set extra.site_key (CIVICRM_SITE_KEY) if the site's AuthX guard requires it"
            length_hint = ""
            if len(self._config().api_key) > MAX_API_KEY_LENGTH:
                # a longer key was cut when it was saved in CiviCRM, so the full one sent here never matches
                length_hint = (f" The API key of connection '{conn_id}' has {len(self._config().api_key)} "
                               f"characters, but CiviCRM stores API keys of at most {MAX_API_KEY_LENGTH} "
                               "characters and cuts longer ones silently: set a key of "
                               f"{MAX_API_KEY_LENGTH} characters or fewer on the API contact and in the "
                               "connection's password.")
            raise self._error(CiviCRMAuthError, f"CiviCRM refused the credentials of connection '{conn_id}' "
                              f"({plain_text(response.text) or 'HTTP 401'}). Check the connection's password (the "
                              f"API key of the API contact){site_key_hint}; the AuthX extension must be enabled "
                              "and the API contact must hold 'authenticate with api key' unless the site key is sent."
                              f"{length_hint}", status=401, entity=entity, action=action)
        if status in TRANSIENT_STATUSES:
            said = "rate limited the call (HTTP 429)" if status == 429 else f"answered HTTP {status}"
            raise self._error(CiviCRMUnavailable, f"{self._config().site} {said} "
                              f"({plain_text(response.text) or response.reason})", status=status, entity=entity,
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
        if multi and isinstance(data, dict) and data and all(
                isinstance(v, dict) and ("values" in v or "error_message" in v) for v in data.values()):
            return data  # one answer per named call, each with `values` or its own error
        if isinstance(data, dict) and data.get("is_error"):  # the legacy REST authenticator's refusal
            raise self._error(CiviCRMAuthError, f"CiviCRM refused connection '{conn_id}': "
                              f"{plain_text(str(data.get('error_message')))}", status=status, entity=entity,
                              action=action)
        if isinstance(data, dict) and data.get("error_message") is not None:
            message = str(data["error_message"])
        elif data == []:
            message = ("error details hidden by CiviCRM (answer `[]`); see the CiviCRM log, or give the API "
                       "contact 'view debug output'")
        else:
            message = f"unexpected answer: {plain_text(json.dumps(data))}"
        # the generic "Sorry an error occurred" hides the cause (maybe a deadlock): worth another try
        generic = status >= 500 and (data == [] or message.startswith("Sorry an error occurred"))
        raise self._error(CiviCRMError, message, status=status, entity=entity, action=action, retryable=generic)

    def _non_json(self, response: requests.Response, entity: str, action: str) -> None:
        status, conn_id = response.status_code, self.civicrm_conn_id
        where = "Check the connection's Host / extra.api4_url"
        if status >= 500:
            raise self._error(CiviCRMUnavailable, f"{self._config().site} answered HTTP {status} without JSON "
                              f"({plain_text(response.text) or response.reason})", status=status, entity=entity,
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
                          f"{plain_text(response.text)[:120]}), probably a login page. {where} and the API key.",
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
               chunk: int = IN_CHUNK) -> Iterator[dict]:
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
            return False, self.scrub(f"{type(exc).__name__}: {exc}")
        if not rows:
            return False, ("Authenticated, but the API contact cannot read its own contact record: give its CMS "
                           "role 'view all contacts' (or 'view my contact').")
        return True, f"Connected to CiviCRM as contact {rows[0]['id']} ({rows[0].get('display_name') or 'no name'})."
