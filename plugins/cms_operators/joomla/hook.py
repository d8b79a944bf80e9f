"""JoomlaHook: Joomla 4/5's Web Services API (/api/index.php/v1/users) with an API token, on the shared transport.

The Airflow connection (default id `cms_default`, type joomla):

* host: the site's base URL, e.g. `https://www.example.org` (a path is kept for a site in a
  subfolder);
* password: the API user's **Joomla API token** (Users > Edit Profile > Joomla API Token); login
  is not used (the token names its user);
* extra (all optional): `api_url` (default `<host>/api/index.php`), `verify` (true/false or a CA
  bundle path), `timeout` (seconds, default 30). Extras are settings, never HTTP headers.

What the site needs (all checked by the backend's preflight, which names what is missing):
plugins "API Authentication - Web Services Joomla Token", "User - Joomla API Token" and "Web
Services - Users" enabled; the API user in a group listed in "User - Joomla API Token" >
Allowed User Groups (default Super Users only), with "API Login" (core.login.api) on the site
and "Create" (core.create) on Users; that is all it needs (reads ask for nothing more on 5.3);
"User - Joomla!" > "Notification Mail to User" (mail_to_user) set to No.

What the real site answered (Joomla 5.3.1, tests/contract/test_joomla_contract.py):

* auth: `X-Joomla-Token: <token>`; a wrong, disabled or missing token, a user outside the
  allowed groups or without API Login: **401** `{"errors":[{"title":"Forbidden"}]}`. No Create
  permission: **403** `{"errors":[{"title":"Access Denied","code":403}]}`.
* answers are `application/vnd.api+json`; a create answers **200** (never 201) with `data.id`
  and `data.attributes.groups` as a map `{"2": 2}`.
* errors are 400 `{"errors":[{"title": ...}]}`. Two kinds, told apart without reading the
  language: form validation (required fields, the password policy, the email format) has no
  `code` in the error; a failed save (`Table\\User::check()`, the group rules) carries
  `"code": 400` and a title "Save failed with the following error: <reason>" (French: "L'enregistrement
  a échoué avec l'erreur suivante : ..."). The reason for a taken username is checked before the
  email; both are compared case-insensitively (the username accent-insensitively too).
* messages follow the API application's language (configuration `$language`, else en-GB), so
  the classification here knows the English and French wordings and the backend confirms any
  save failure it cannot read with a look-up.
* a page offset past the end, an unknown user id and a disabled "Web Services - Users" plugin
  all answer 404 `{"errors":[{"title":"Resource not found"}]}`.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from typing import Any

import requests

from cms_operators.backend import (
    CmsAuthError,
    CmsConfigError,
    CmsDuplicateEmail,
    CmsDuplicateLogin,
    CmsError,
    CmsMailFailed,
    CmsRejected,
    CmsUnavailable,
)
from cms_operators.resthook import CmsRestHook
from transport.hook import Endpoint
from transport.policy import plain_text, retry_after_seconds

USERS_ROUTE = "/v1/users"
GROUPS_ROUTE = "/v1/users/groups"
JSONAPI = "application/vnd.api+json"
_TRANSIENT_STATUSES = {429, 502, 503, 504}

# Save-failure reasons (lib_joomla.ini, en-GB and fr-FR), compared without accents and case.
_LOGIN_TAKEN = (re.compile(r"\busername in use\b"), re.compile(r"\bnom d.utilisateur (deja )?utilise\b"),
                re.compile(r"\bidentifiant (deja )?utilise\b"))
_EMAIL_TAKEN = (re.compile(r"\bemail address you entered is already in use\b"),
                re.compile(r"\be-?mail (address )?(is )?already (in use|taken|registered)\b"),
                re.compile(r"\badresse e-?mail est deja utilisee?\b"))
_SAVE_FAILED = (re.compile(r"^save failed with the following error\s*:\s*"),
                re.compile(r"^l.enregistrement a echoue avec l.erreur suivante\s*:\s*"))
_FIELD_WORDS = {"password": ("password", "mot de passe"), "email": ("email", "e-mail", "courriel"),
                "username": ("username", "nom d'utilisateur", "identifiant", "login name"),
                "groups": ("group", "groupe"), "name": ("name", "nom")}


def folded(text: str) -> str:
    """Lower case without accents, entities or HTML: how messages are compared."""
    text = plain_text(text, limit=2000).replace("\xa0", " ")
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower().replace("\u2019", "'")


def save_reason(title: str) -> str | None:
    """The reason of a "Save failed with the following error: <reason>" title (any known language)."""
    text = folded(title)
    for pattern in _SAVE_FAILED:
        match = pattern.match(text)
        if match:
            return text[match.end():]
    return None


def says_login_taken(text: str) -> bool:
    return any(p.search(folded(text)) for p in _LOGIN_TAKEN)


def says_email_taken(text: str) -> bool:
    return any(p.search(folded(text)) for p in _EMAIL_TAKEN)


def field_of(text: str) -> str | None:
    """Which create field a validation message is about, where it says (for messages)."""
    low = folded(text)
    for name, words in _FIELD_WORDS.items():
        if any(word in low for word in words):
            return name
    return None


def token_user_id(token: str) -> int | None:
    """The user id a Joomla API token names: base64("<algo>:<user id>:<hmac>"); None if not that shape."""
    try:
        decoded = base64.b64decode(token.strip(), validate=False).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    parts = decoded.split(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return int(parts[1])


class JoomlaHook(CmsRestHook):
    """HTTP access to one Joomla site's Web Services API; the transport retries reads only."""

    conn_name_attr = "cms_conn_id"
    default_conn_name = "cms_default"
    conn_type = "joomla"
    hook_name = "Joomla"
    site = "the Joomla site"
    password_label = "password (the Joomla API token)"
    jitter = 0.5

    def __init__(self, cms_conn_id: str = default_conn_name, **kwargs: Any):
        super().__init__(cms_conn_id, **kwargs)

    # ------------------------------------------------------------------ connection

    def check_endpoint(self, endpoint: Endpoint) -> None:
        if not endpoint.base_url:
            raise CmsConfigError(None, "connection_incomplete",
                                 f"Airflow connection '{self.conn_id}' has no host: set it to the Joomla site "
                                 "URL, e.g. https://www.example.org")
        if not endpoint.password:
            raise CmsConfigError(None, "connection_incomplete",
                                 f"Airflow connection '{self.conn_id}' needs a password: the Joomla API token of "
                                 "the API user (Users > Edit Profile > Joomla API Token)")

    def configure_session(self, session: requests.Session) -> None:
        # No cookies (the base's default): the API needs none.
        session.headers.update({"X-Joomla-Token": self.endpoint.password, "Accept": JSONAPI})

    @property
    def site_url(self) -> str:
        return self.endpoint.base_url

    @property
    def api_url(self) -> str:
        return str(self.endpoint.extra.get("api_url") or f"{self.site_url}/api/index.php").rstrip("/")

    @property
    def token_user_id(self) -> int | None:
        return token_user_id(self.endpoint.password)

    # ------------------------------------------------------------------ requests

    def api(self, method: str, route: str, *, params: dict | None = None, json: Any = None,
            retry: bool | None = None, missing_ok: bool = False) -> Any:
        """One API call (route like "/v1/users"); the parsed JSON, or None for a 404 when `missing_ok`.
        GET is retried on transient errors (or anything with `retry=True`); raises a CmsError subclass."""
        method = method.upper()
        if retry is None:
            retry = method in ("GET", "HEAD", "OPTIONS")
        url = self.api_url + route
        what = f"{method} {requests.utils.urlparse(url).path}"

        def classify(response: requests.Response) -> Any:
            if missing_ok and response.status_code == 404:
                return None
            payload, error = self.classify(response, what)
            if error is not None:
                raise error
            return payload

        headers = {"Content-Type": "application/json"} if json is not None else None
        return self.send(method, url, classify, idempotent=retry, what=f"Joomla {what}", params=params,
                         json=json, headers=headers)

    def classify(self, response: requests.Response, what: str) -> tuple[Any, CmsError | None]:
        """The answer's JSON, or the CmsError it means (contract §6, §7 and the facts above)."""
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
            if not is_json:
                kind = response.headers.get("Content-Type", "unknown type")
                return None, CmsUnavailable(status, "not_json", f"Joomla answered {what} with something that is "
                                                                f"not JSON ({kind}); a proxy or maintenance page?")
            return payload, None
        error = first_error(payload)
        title = self.scrub(plain_text(error.get("title"), limit=400)) if error else ""
        code = error.get("code") if error else None
        said = f"HTTP {status}" + (f": {title}" if title else "")
        conn = f"connection '{self.cms_conn_id}'"
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if status == 401:
            return None, CmsAuthError(status, "forbidden", (
                f"Joomla refused the API token of {conn} ({said}): check the token, that the plugins "
                "'API Authentication - Web Services Joomla Token' and 'User - Joomla API Token' are enabled, that "
                "the token is enabled in the user's profile, that the user is in one of the token plugin's "
                "Allowed User Groups, has 'API Login' permission and is neither blocked nor asked to reset "
                "its password"))
        if status == 403:
            return None, CmsAuthError(status, "access_denied", (
                f"Joomla forbade {what} for the API user of {conn} ({said}); its group needs 'Create' "
                "permission on Users (System > Global Configuration > Permissions or Users > Options)"))
        if status in _TRANSIENT_STATUSES or (status >= 500 and not is_json):
            return None, CmsUnavailable(status, "unavailable", f"Joomla is unavailable for {what} ({said})",
                                        retry_after=retry_after)
        if status == 404:
            return None, CmsConfigError(status, "not_found", (
                f"Joomla answered {what} with {said}; check the site URL / api_url of {conn} and that the "
                "plugin 'Web Services - Users' is enabled"))
        if status in (405, 406, 415):
            return None, CmsConfigError(status, "not_acceptable", f"Joomla answered {what} with {said}; check the "
                                                                  f"api_url of {conn}")
        reason = save_reason(title) if title else None
        if reason is not None or code in (400, 500, "400", "500"):
            # a failed save (Table\User::check(), the group rules): read the reason
            text = reason if reason is not None else folded(title)
            if says_login_taken(text):
                return None, CmsDuplicateLogin(status, "username_in_use", f"Joomla already has that username ({said})")
            if says_email_taken(text):
                return None, CmsDuplicateEmail(status, "email_in_use",
                                               f"Joomla already has a user with that email ({said})")
            if status >= 500:
                return None, CmsUnavailable(status, "save_failed", f"Joomla failed to save ({said})")
            return None, CmsRejected(status, "save_failed", f"Joomla refused to save the user ({said})")
        if status >= 500:
            return None, CmsUnavailable(status, "server_error", f"Joomla failed on {what} ({said})")
        field = field_of(title)
        return None, CmsRejected(status, f"invalid_{field}" if field else "invalid",
                                 f"Joomla rejected {what}: {said}")

    # ------------------------------------------------------------------ Airflow UI

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's 'Test' button: read the user the token names."""
        try:
            user_id = self.token_user_id
            if user_id is None:
                return False, ("the password is not a Joomla API token (base64 of 'sha256:<user id>:<hmac>'); "
                               "copy it from the user's profile, tab Joomla API Token")
            body = self.api("GET", f"{USERS_ROUTE}/{user_id}")
        except CmsError as exc:
            return False, exc.message
        attributes = ((body or {}).get("data") or {}).get("attributes") or {}
        return True, f"Authenticated as '{attributes.get('username')}' (user {user_id}) at {self.api_url}"


def first_error(payload: Any) -> dict:
    """errors[0] of a JSON:API error document, or {}."""
    if isinstance(payload, dict):
        errors = payload.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return errors[0]
    return {}


RESET_FORM = "index.php?option=com_users&view=reset"
RESET_REQUEST = "index.php?option=com_users&task=reset.request"
_FORM_TOKEN_RE = re.compile(r'<input[^>]*\btype="hidden"[^>]*\bname="([0-9a-f]{32})"[^>]*\bvalue="1"', re.I)


class JoomlaSiteForm(JoomlaHook):
    """The site's password-reset form (com_users), the way a visitor uses it: a session cookie and
    the form's CSRF token. It sends no API token (the form needs none), and starts a fresh session
    for every request, so nothing of one member's request carries over to the next."""

    keep_cookies = True

    def configure_session(self, session: requests.Session) -> None:
        session.headers.update({"Accept": "text/html,application/xhtml+xml"})

    def request_reset(self, email: str) -> None:
        """Ask for Joomla's password-reset mail for `email`. Raises CmsMailFailed when the site does
        not take the request (no form, CSRF refused), CmsUnavailable on transient errors."""
        self.close()  # a new visitor: a new session cookie and token
        try:
            form_url = f"{self.site_url}/{RESET_FORM}"
            page = self.send("GET", form_url, self._html, idempotent=True, what="Joomla reset form")
            match = _FORM_TOKEN_RE.search(page)
            if not match:
                raise CmsMailFailed(None, "no_reset_form", (
                    f"Joomla's password-reset form at {form_url} shows no form token; is the site offline, or the "
                    "reset view disabled or overridden?"))
            response = self.send("POST", f"{self.site_url}/{RESET_REQUEST}", lambda r: r, idempotent=False,
                                 what="Joomla reset request", allow_redirects=False,
                                 data={"jform[email]": email, match.group(1): "1"})
        finally:
            self.close()
        location = response.headers.get("Location", "")
        if response.status_code in (301, 302, 303) and "layout=confirm" in location:
            return
        if response.status_code in _TRANSIENT_STATUSES or response.status_code >= 500:
            raise CmsUnavailable(response.status_code, "unavailable",
                                 f"Joomla's password-reset form failed with HTTP {response.status_code}")
        raise CmsMailFailed(response.status_code, "reset_refused", (
            f"Joomla's password-reset form did not take the request (HTTP {response.status_code}"
            + (f", sent to {requests.utils.urlparse(location).path}" if location else "")
            + "): its CSRF check failed or the form changed"))

    def _html(self, response: requests.Response) -> str:
        if response.status_code in _TRANSIENT_STATUSES or response.status_code >= 500:
            raise CmsUnavailable(response.status_code, "unavailable",
                                 f"Joomla's password-reset form answered HTTP {response.status_code}",
                                 retry_after=retry_after_seconds(response.headers.get("Retry-After")))
        if response.status_code != 200:
            raise CmsMailFailed(response.status_code, "no_reset_form",
                                f"Joomla's password-reset form answered HTTP {response.status_code}")
        return response.text
