"""WordPressBackend: users of a WordPress site (find, create, password mail) through WordPressHook."""

from __future__ import annotations

import logging
import math
import re
import secrets
from collections.abc import Iterable
from typing import Any

from cms_operators.backend import (
    CmsAuthError,
    CmsConfigError,
    CmsDuplicateEmail,
    CmsDuplicateLogin,
    CmsError,
    CmsMailFailed,
    CmsRejected,
    CmsUnavailable,
    CmsUser,
    UserListing,
)
from cms_operators.wordpress.hook import USERS_ROUTE, WordPressHook
from cms_operators.wordpress.rules import MAX_EMAIL_LENGTH, MAX_USERNAME_LENGTH, RULES
from transport.policy import plain_text

log = logging.getLogger(__name__)

PAGE_SIZE = 100  # WordPress's maximum per_page; above it answers 400
MAX_DISPLAY_NAME_LENGTH = 250  # users.display_name varchar(250); longer gives an opaque 500
REQUIRED_CAPABILITIES = ("create_users", "list_users")
ROLE_CAPABILITY = "edit_users"
_LOGIN_ERROR_RE = re.compile(r'<div id="login_error"[^>]*>(.*?)</div>', re.S)


def _norm(value: str | None) -> str:
    return (value or "").strip().lower()


def _escaped_length(text: str) -> int:
    # WordPress stores names HTML-escaped (& -> &amp;, < -> &lt;, > -> &gt;); the column counts that.
    return len(text) + 4 * text.count("&") + 3 * (text.count("<") + text.count(">"))


def fit_display_name(name: str, limit: int = MAX_DISPLAY_NAME_LENGTH) -> str:
    """Cut a display name so WordPress's stored (escaped) form fits users.display_name."""
    name = re.sub(r"\s+", " ", name or "").strip()[:limit]
    while _escaped_length(name) > limit:
        name = name[:-1]
    return name.rstrip()


def login_search_term(login: str) -> str:
    """What to put in `search=` so WordPress looks at user_login for this login.

    WordPress picks the searched columns from the term: with '@' only user_email, with a
    leading http(s):// only user_url. For such logins search the longest piece without '@'
    (it is a substring of the login, so the login's row is among the results).
    """
    if "@" not in login and not re.match(r"https?://", login, re.I):
        return login
    pieces = [p for p in re.split(r"@|https?://", login, flags=re.I) if p.strip()]
    return max(pieces, key=len) if pieces else login



class WordPressBackend:
    """CmsBackend for WordPress ≥ 5.6 (see cms_operators.backend for the contract of each method)."""

    name = "wordpress"
    rules = RULES

    def __init__(self, conn_id: str = WordPressHook.default_conn_name, *, hook: WordPressHook | None = None,
                 settings=None):  # WordPress needs no CMS-specific settings
        self.conn_id = conn_id
        self.hook = hook or WordPressHook(cms_conn_id=conn_id)
        self._locales: set[str] | None = None

    def __repr__(self) -> str:
        return f"WordPressBackend(conn_id={self.conn_id!r})"

    # ------------------------------------------------------------------ preflight

    def preflight(self, roles: list[str]) -> str:
        roles = [r for r in dict.fromkeys(str(r).strip() for r in roles or []) if r]
        index = self._index()
        if "wp/v2" not in (index.get("namespaces") or []):
            raise CmsConfigError(None, "no_wp_v2", f"{self.hook.rest_url} is a REST API without wp/v2 "
                                                   f"(connection '{self.conn_id}'); check rest_url")
        auth = index.get("authentication")
        if not isinstance(auth, dict) or "application-passwords" not in auth:
            raise CmsConfigError(
                None, "application_passwords_unavailable",
                f"Application Passwords are not available on {self.hook.site_url} (connection "
                f"'{self.conn_id}'): WordPress offers them only over HTTPS, or with WP_ENVIRONMENT_TYPE=local, "
                "or when a plugin disables them")
        try:
            _, me = self.hook.rest("GET", USERS_ROUTE + "/me", params={"context": "edit"})
        except CmsAuthError as exc:
            raise CmsAuthError(exc.status, exc.code,
                               f"WordPress connection '{self.conn_id}' could not log in at {self.hook.site_url} "
                               f"({exc.message}); set its password to an application password of the "
                               "API user") from None
        caps = me.get("capabilities") or {}
        needed = [*REQUIRED_CAPABILITIES, *([ROLE_CAPABILITY] if roles else [])]
        missing = [cap for cap in needed if not caps.get(cap)]
        if missing:
            raise CmsAuthError(403, "missing_capability",
                               f"WordPress user '{me.get('username')}' of connection '{self.conn_id}' lacks "
                               f"{', '.join(missing)}; give it the administrator role")
        unverified = self._probe_roles(me, roles)
        role_text = f"roles {', '.join(roles)} exist" if roles else "default role"
        if unverified:
            role_text = f"roles NOT verified ({unverified})"
        return (f"WordPress {self.hook.site_url} as '{me.get('username')}' (user {me.get('id')}): "
                f"{', '.join(needed)} granted, {role_text}")

    def _index(self) -> dict:
        try:
            _, index = self.hook.rest("GET", "/")
        except CmsUnavailable as exc:
            if exc.code == "not_json":
                raise CmsConfigError(exc.status, exc.code,
                                     f"{self.hook.rest_url}/ is not a WordPress REST API (connection "
                                     f"'{self.conn_id}'); set extra rest_url, e.g. <site>/?rest_route=") from None
            raise
        if not isinstance(index, dict):
            raise CmsConfigError(None, "bad_index", f"{self.hook.rest_url}/ is not a WordPress REST API index "
                                                    f"(connection '{self.conn_id}')")
        self._locales = self._locales_from_index(index)
        return index

    @staticmethod
    def _locales_from_index(index: dict) -> set[str]:
        route = (index.get("routes") or {}).get(USERS_ROUTE) or {}
        for endpoint in route.get("endpoints") or []:
            if "POST" in (endpoint.get("methods") or []):
                enum = ((endpoint.get("args") or {}).get("locale") or {}).get("enum")
                if isinstance(enum, list):
                    return {str(x) for x in enum if x}
        return set()

    def _probe_roles(self, me: dict, roles: list[str]) -> str | None:
        """Prove the roles exist without creating anyone: WordPress checks roles (400
        rest_user_invalid_role) before the login (500 existing_user_login), so a create with the API
        user's own login fails on the login exactly when every role exists.

        Returns None when proven, or why it could not be checked: a create endpoint that is only
        unavailable (reads work) is left to the batches, which defer and retry per contact."""
        attempts = [me.get("username") or self.hook.login, "x" * (MAX_USERNAME_LENGTH + 1)]
        for username in attempts:
            body: dict[str, Any] = {"username": username, "email": me.get("email") or "",
                                    "password": secrets.token_urlsafe(24)}
            if roles:
                body["roles"] = roles
            try:
                # Safe to repeat: it cannot create anyone.
                _, created = self.hook.rest("POST", USERS_ROUTE, json=body, retry=True)
            except (CmsDuplicateLogin, CmsDuplicateEmail):
                return None
            except CmsUnavailable as exc:
                log.warning("WordPress preflight could not check the roles: %s; the batches will find out",
                            exc.message)
                return exc.message
            except CmsRejected as exc:
                if exc.code == "user_login_too_long":
                    return None  # the fallback probe: also after the role check
                if exc.status == 400 and username != attempts[-1]:
                    continue  # own login not accepted as a new login (e.g. accents): use a too-long one
                raise CmsConfigError(exc.status, exc.code, f"preflight could not check the roles on "
                                                           f"{self.hook.site_url}: {exc.message}") from None
            except CmsConfigError as exc:
                if exc.code == "rest_user_invalid_role":
                    raise self._missing_roles(me, username, roles) from None
                raise
            except CmsAuthError as exc:
                raise CmsAuthError(exc.status, exc.code, f"WordPress user of connection '{self.conn_id}' may "
                                                         f"not create users with roles {roles}: "
                                                         f"{exc.message}") from None
            # Cannot happen with an existing login; never leave a probe account behind.
            self._delete_probe(created)
            raise CmsConfigError(201, "probe_created", "preflight's probe unexpectedly created a user on "
                                                       f"{self.hook.site_url} and deleted it again")

    def _missing_roles(self, me: dict, username: str, roles: list[str]) -> CmsConfigError:
        """WordPress names only the first unknown role: probe each alone, so all are reported at once."""
        missing = []
        for role in roles:
            body = {"username": username, "email": me.get("email") or "", "password": secrets.token_urlsafe(24),
                    "roles": [role]}
            try:
                self.hook.rest("POST", USERS_ROUTE, json=body, retry=True)
            except CmsConfigError as exc:
                if exc.code == "rest_user_invalid_role":
                    missing.append(role)
            except CmsError:
                pass  # anything else (the login exists) means the role is there
        problems = [f"role '{role}' does not exist on WordPress {self.hook.site_url}; create it there or remove "
                    "it from the roles setting" for role in missing or roles]
        error = CmsConfigError(400, "rest_user_invalid_role", "; ".join(problems))
        error.problems = problems
        return error

    def _delete_probe(self, created: Any) -> None:
        user_id = created.get("id") if isinstance(created, dict) else None
        if user_id:
            try:
                self.hook.rest("DELETE", f"{USERS_ROUTE}/{int(user_id)}", params={"force": "true", "reassign": 1})
            except CmsError:
                log.warning("could not delete WordPress user %s made by the preflight probe; delete it by hand",
                            user_id)

    # ------------------------------------------------------------------ lookups

    def find_users(self, emails: list[str], usernames: list[str], *,
                   search_only: bool = False) -> list[CmsUser]:
        """Existing users whose email or login is given. `search_only`: look each up, without weighing a
        listing (the run has decided that already: user_listing)."""
        wanted_emails = {e for e in (_norm(x) for x in emails or []) if e}
        wanted_logins = {u for u in (_norm(x) for x in usernames or []) if u}
        lookups = len(wanted_emails) + len(wanted_logins)
        if lookups == 0:
            return []
        found: dict[int, CmsUser] = {}
        # Per-item searches cost one call each; listing costs one call per 100 users. With at most
        # two items a count call cannot pay off.
        pages = None
        if lookups > 2 and not search_only:
            pages = math.ceil(self._count_users() / PAGE_SIZE)
        if pages is not None and pages < lookups:
            log.info("WordPress: listing all users (%d pages) to match %d emails/usernames", pages, lookups)
            for user in self._pages({}):
                if _norm(user.email) in wanted_emails or _norm(user.username) in wanted_logins:
                    found[user.uf_id] = user
        else:
            log.info("WordPress: %d searches for %d emails and %d usernames", lookups, len(wanted_emails),
                     len(wanted_logins))
            for email in sorted(wanted_emails):
                for user in self._search(email):
                    if _norm(user.email) == email:
                        found[user.uf_id] = user
            for login in sorted(wanted_logins):
                for user in self._search(login_search_term(login)):
                    if _norm(user.username) == login:
                        found[user.uf_id] = user
        return [found[k] for k in sorted(found)]

    def user_listing(self, *, lookups: int) -> UserListing | None:
        """Every user, listed once, when that costs fewer calls than `lookups` searches (a run's emails and
        names, looked up a chunk of contacts at a time); None when the searches cost less."""
        if lookups <= 2:
            return None
        pages = math.ceil(self._count_users() / PAGE_SIZE)
        if pages >= lookups:
            return None
        log.info("WordPress: listing all users once (%d pages) to match about %d emails/usernames", pages, lookups)
        return UserListing(self._pages({}), email_key=_norm, login_key=_norm)

    def users_by_id(self, uf_ids: list[int]) -> list[CmsUser]:
        """The accounts with these ids (for the logins of contacts already linked), 100 per call."""
        ids = sorted({int(i) for i in uf_ids or []})
        found: list[CmsUser] = []
        for start in range(0, len(ids), PAGE_SIZE):
            part = ids[start:start + PAGE_SIZE]
            found += self._pages({"include": ",".join(map(str, part))})
        return found

    def client_timeout(self) -> float:
        """How long the hook waits for an answer: a create may still be running on the site after it."""
        return self.hook.timeout

    def find_by_email(self, email: str) -> CmsUser | None:
        wanted = _norm(email)
        if not wanted:
            return None
        matches = [u for u in self._search(wanted) if _norm(u.email) == wanted]
        return min(matches, key=lambda u: u.uf_id) if matches else None

    def _count_users(self) -> int:
        response, _ = self.hook.rest("GET", USERS_ROUTE, params={"context": "edit", "per_page": 1})
        try:
            return int(response.headers.get("X-WP-Total", ""))
        except ValueError:
            raise CmsUnavailable(response.status_code, "no_total",
                                 "WordPress sent no X-WP-Total header when counting users") from None

    def _search(self, term: str) -> list[CmsUser]:
        # requests encodes '+' as %2B; unencoded it would become a space (contract §1 rule 4).
        return list(self._pages({"search": term}))

    def _pages(self, params: dict) -> Iterable[CmsUser]:
        page = 1
        while True:
            response, rows = self.hook.rest("GET", USERS_ROUTE, params={
                **params, "context": "edit", "per_page": PAGE_SIZE, "page": page, "orderby": "id", "order": "asc"})
            for row in rows or []:
                yield self._user(row)
            try:
                total_pages = int(response.headers.get("X-WP-TotalPages") or 0)
            except ValueError:
                total_pages = 0
            if page >= total_pages or not rows:
                return
            page += 1

    @staticmethod
    def _user(row: dict) -> CmsUser:
        return CmsUser(uf_id=int(row["id"]), username=str(row.get("username") or ""),
                       email=str(row.get("email") or ""), roles=tuple(row.get("roles") or ()),
                       registered=row.get("registered_date") or None)

    def user_field_names(self) -> None:
        """WordPress users have no extra fields the REST API writes (user meta needs a plugin)."""
        return None

    def is_admin(self, user: CmsUser) -> bool:
        return self.rules.is_admin(user.uf_id, user.roles)

    # ------------------------------------------------------------------ create

    def create_user(self, *, username: str, email: str, first_name: str, last_name: str, display_name: str,
                    roles: list[str], locale: str | None = None, fields: dict[str, str] | None = None) -> CmsUser:
        """POST /wp/v2/users once (never repeated here: the caller looks up by email after any doubt).
        Empty `roles` means the site's default role. A locale the site does not have is left out."""
        if fields:  # pre-flight refuses user_fields for WordPress; never drop them silently
            raise CmsConfigError(None, "no_user_fields", "WordPress has no user fields; remove user_fields "
                                                         "from the settings")
        email = (email or "").strip()
        if not email:
            raise CmsRejected(None, "no_email", f"cannot create WordPress user '{username}' without an email")
        if len(email) > MAX_EMAIL_LENGTH:
            raise CmsRejected(None, "email_too_long",
                              f"email has {len(email)} characters; WordPress stores at most {MAX_EMAIL_LENGTH}")
        name = fit_display_name(display_name or f"{first_name or ''} {last_name or ''}".strip() or username)
        body: dict[str, Any] = {
            "username": username,
            "email": email,
            "password": secrets.token_urlsafe(24),  # nobody knows it; the user sets one via the mail link
            "first_name": first_name or "",
            "last_name": last_name or "",
            "name": name,
        }
        if roles:
            body["roles"] = list(roles)
        if locale and locale in self._site_locales():
            body["locale"] = locale
        try:
            _, created = self.hook.rest("POST", USERS_ROUTE, json=body)
        except CmsRejected as exc:
            raise type(exc)(exc.status, exc.code, f"{exc.message} [username '{username}']",
                            retry_after=exc.retry_after) from None
        if not isinstance(created, dict) or "id" not in created:
            raise CmsUnavailable(None, "no_id", "WordPress answered the create without a user id")
        user = self._user(created)
        log.debug("WordPress: created user %s ('%s')", user.uf_id, user.username)
        return user

    def _site_locales(self) -> set[str]:
        if self._locales is None:
            try:
                self._index()
            except CmsError as exc:
                log.info("WordPress: could not read the site's locales (%s); sending none", exc.message)
                self._locales = set()
        return self._locales or set()

    def send_password_reset(self, user: CmsUser) -> None:
        self.send_password_mail(user)  # WordPress's password mail is its lost-password mail already

    def close(self) -> None:
        self.hook.close()

    # ------------------------------------------------------------------ mail

    def send_password_mail(self, user: CmsUser) -> None:
        """WordPress's own password-reset mail via the lostpassword form (works on any site)."""
        # The email first: retrieve_password() looks an '@' value up by email, which is unique.
        who = user.email or user.username
        url = f"{self.hook.site_url}/wp-login.php?action=lostpassword"
        response, text = self.hook.request("POST", url, data={"user_login": who}, expect_json=False,
                                           allow_redirects=False, retry=False)
        if 300 <= response.status_code < 400:
            return
        match = _LOGIN_ERROR_RE.search(text or "")
        reason = plain_text(match.group(1)) if match else ""
        if "could not be sent" in reason:
            raise CmsMailFailed(response.status_code, "retrieve_password_email_failure",
                                f"WordPress could not send the password mail for user {user.uf_id}: {reason}")
        if "no account" in reason.lower():
            raise CmsRejected(response.status_code, "invalidcombo",
                              f"WordPress found no account for user {user.uf_id} when asked for its "
                              "password mail")
        raise CmsMailFailed(response.status_code, "not_confirmed",
                            f"WordPress did not confirm the password mail for user {user.uf_id}"
                            + (f": {reason}" if reason else " (no redirect to checkemail=confirm)"))
