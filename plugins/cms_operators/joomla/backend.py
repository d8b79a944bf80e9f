"""JoomlaBackend: users of a Joomla 4/5 site (find, create, password mail) through JoomlaHook.

What the real site (Joomla 5.3.1, sandbox/real_joomla) answered, and what this backend does about it:

* **No password in any mail.** With the "User - Joomla!" plugin's `mail_to_user` on (Joomla's
  default), every account created through the API is mailed "New User Details" with its username
  and its password in plain text, also the 32-character one Joomla makes up when none is sent.
  There is no per-request switch. Pre-flight therefore requires `mail_to_user` off and names the
  place to switch it off. It proves the setting without creating anything: with it off, Joomla
  makes the password a required field, so a create without a password is refused by the form
  ("Field required: Password", no `code`) before anything else; with it on, the same probe (with a
  one-character username Joomla's table check refuses) reaches the save and is refused there
  ("Save failed ...: Please enter a valid username", `code` 400). Accounts are then created with
  a random password nobody sees (Joomla's password policy: 12 characters by default, optional
  counts of digits, symbols, upper and lower case: ours has 8 of each and 48 in all).
* **The password mail** is Joomla's own password-reset mail, asked for through the site's reset
  form (GET `index.php?option=com_users&view=reset` for a session cookie and the form's CSRF
  token, POST `task=reset.request` with `jform[email]`). The form always redirects to
  `...reset?layout=confirm`, whether or not it mailed anyone (unless the site runs in debug
  mode), so success is confirmed through the API instead: the account's `resetCount` /
  `lastResetTime` change when Joomla accepts the request. It refuses (and mails nobody) for
  blocked users, Super Users and after `reset_count` requests within `reset_time` hours
  (com_users options, 10 per hour by default). The mail holds a verification code and a link,
  never a password. A refused CSRF token redirects elsewhere.
* **Groups** are Joomla's roles: `roles` may name group ids or titles (titles compare without
  case; this French build titles Registered "Enregistré"). At least one group is required
  ("You can't save a user account without selecting at least one user group."); with no `roles`
  the core Registered group (2) is used. **An unknown group id is accepted silently and the
  account is created without any group** (200, `groups: {}`), so every group is resolved
  against `GET /v1/users/groups` before a create, never sent blind. A user who is not a Super
  User cannot put anyone into a group with core.admin ("User not Super Administrator").
* **Administrators**: Super Users (8), Administrator (7), their child groups, and the groups of
  `admin_groups`. The list answer carries only `group_count` and `group_names` (titles joined by
  newlines); `GET /v1/users/{id}` and the create answer carry `groups` as a map of ids. Titles
  are mapped back to ids through the groups list; a title that is not there (after one refresh)
  counts as an administrator, so such an account is never linked.
* **Look-ups**: `filter[search]` is a LIKE `%term%` over name, username and email (`%`/`_` are
  wildcards), `username:<term>` limits it to usernames, `id:<n>` is an exact id. Results are
  matched exactly here: emails trimmed and case-insensitively, usernames as the collation
  utf8mb4_unicode_ci does (case and accents ignored). The list is ordered by name only, so a
  paged full listing can skip or repeat accounts with equal names: the listing is checked
  against the total and what it missed is looked up one by one. `page[limit]` has no maximum;
  an offset past the end answers 404.
* **Errors**: a taken username (checked first) or email is a 400 save failure; the wording
  follows the site language, so a save failure this code cannot read is settled by looking the
  email, then the username, up. A create is sent once; a lost answer is CmsUnavailable.
* Each create logs a PHP warning (`Undefined array key "block"`) on the site unless `block` is
  sent; it is.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import string
from collections.abc import Iterable
from datetime import UTC, datetime
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
from cms_operators.joomla.hook import GROUPS_ROUTE, USERS_ROUTE, JoomlaHook, JoomlaSiteForm, field_of, folded
from cms_operators.joomla.rules import (
    CORE_ADMIN_GROUPS,
    MAX_EMAIL_LENGTH,
    MAX_NAME_LENGTH,
    REGISTERED_GROUP,
    RULES,
    username_problem,
)
from provisioning.rules import collation_key

log = logging.getLogger(__name__)

PAGE_SIZE = 500          # users per page of a full listing (Joomla sets no maximum)
SEARCH_PAGE_SIZE = 100   # users per page of a search
GROUP_PAGE_SIZE = 1000
PROBE_USERNAME = "x"     # one character: Joomla's table check refuses it before anything is stored
PROBE_EMAIL = "cmsuser-preflight-probe@example.invalid"
MAIL_SETTING = ("System > Plugins > 'User - Joomla!' > 'Notification Mail to User' (mail_to_user): set it to No")
_SYMBOLS = "!#$%*+-=?@^_~."


def _norm(value: str | None) -> str:
    return (value or "").strip().lower()


def random_password() -> str:
    """48 characters with 8 each of upper case, lower case, digits and symbols: any policy Joomla
    offers by default is met; no whitespace, no backslash, no quote."""
    pick = secrets.SystemRandom()
    chars = [pick.choice(string.ascii_uppercase) for _ in range(8)] + \
            [pick.choice(string.ascii_lowercase) for _ in range(8)] + \
            [pick.choice(string.digits) for _ in range(8)] + [pick.choice(_SYMBOLS) for _ in range(8)] + \
            [pick.choice(string.ascii_letters + string.digits) for _ in range(16)]
    pick.shuffle(chars)
    return "".join(chars)


def fit_name(name: str) -> str:
    return re.sub(r"\s+", " ", name or "").strip()[:MAX_NAME_LENGTH].strip()


def _registered(value: Any) -> str | None:
    """Joomla's registerDate ('2026-12-04 12:34:01', UTC) as ISO 8601."""
    if not value:
        return None
    try:
        return datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).isoformat()
    except ValueError:
        return str(value)


class JoomlaBackend:
    """CmsBackend for Joomla 4/5 (see cms_operators.backend for the contract of each method).

    `admin_groups`: more groups (ids or titles) whose members administer the site, beyond Super
    Users, Administrator and their child groups: read from `settings.admin_groups` (the registry
    passes the run's settings), or given here, or later with `configure(admin_groups=...)`.
    """

    name = "joomla"
    rules = RULES
    page_size = PAGE_SIZE
    search_page_size = SEARCH_PAGE_SIZE

    def __init__(self, conn_id: str = JoomlaHook.default_conn_name, *, hook: JoomlaHook | None = None,
                 settings=None, admin_groups: Iterable[str | int] = (), site_form: JoomlaSiteForm | None = None):
        self.conn_id = conn_id
        self.hook = hook or JoomlaHook(cms_conn_id=conn_id)
        self._site_form = site_form
        self.admin_groups: tuple[str, ...] = ()
        from_settings = settings.get("admin_groups") if isinstance(settings, dict) else \
            getattr(settings, "admin_groups", None)
        self.configure(admin_groups=[*(from_settings or ()), *admin_groups])
        self._group_rows: dict[int, dict] | None = None

    def __repr__(self) -> str:
        return f"JoomlaBackend(conn_id={self.conn_id!r})"

    def configure(self, *, admin_groups: Iterable[str | int] | None = None) -> JoomlaBackend:
        """Name more administrator groups (ids or titles); returns the backend."""
        if admin_groups is not None:
            self.admin_groups = tuple(dict.fromkeys(str(g).strip() for g in admin_groups if str(g).strip()))
        return self

    @property
    def site_form(self) -> JoomlaSiteForm:
        if self._site_form is None:
            self._site_form = JoomlaSiteForm(cms_conn_id=self.conn_id)
        return self._site_form

    # ------------------------------------------------------------------ groups

    def groups(self, *, refresh: bool = False) -> dict[int, dict]:
        """Every user group: id -> {"id", "parent_id", "title"} (GET /v1/users/groups, all pages)."""
        if self._group_rows is None or refresh:
            rows: dict[int, dict] = {}
            offset = 0
            while True:
                body = self.hook.api("GET", GROUPS_ROUTE, params={"page[limit]": GROUP_PAGE_SIZE,
                                                                  "page[offset]": offset}, missing_ok=offset > 0)
                data = (body or {}).get("data") or []
                for item in data:
                    attributes = item.get("attributes") or {}
                    group_id = int(attributes.get("id") or item.get("id"))
                    rows[group_id] = {"id": group_id, "parent_id": int(attributes.get("parent_id") or 0),
                                      "title": str(attributes.get("title") or "")}
                if not data or not ((body or {}).get("links") or {}).get("next"):
                    break
                offset += len(data)
            self._group_rows = rows
        return self._group_rows

    def resolve_groups(self, names: Iterable[str | int]) -> tuple[list[int], list[str]]:
        """Group ids for ids or titles; and a problem for each name that is missing or ambiguous."""
        groups = self.groups()
        ids: list[int] = []
        problems: list[str] = []
        for raw in names:
            name = str(raw).strip()
            if not name:
                continue
            if name.isdigit():
                if int(name) in groups:
                    ids.append(int(name))
                else:
                    problems.append(f"group id {name} does not exist on Joomla {self.hook.site_url}; create it or fix "
                                    "the setting")
                continue
            matches = [g["id"] for g in groups.values() if g["title"] == name] or \
                      [g["id"] for g in groups.values() if folded(g["title"]) == folded(name)]
            if len(matches) == 1:
                ids.append(matches[0])
            elif matches:
                problems.append(f"group title '{name}' names {len(matches)} groups on Joomla {self.hook.site_url} "
                                f"(ids {', '.join(map(str, sorted(matches)))}); give the id instead")
            else:
                titles = ", ".join(f"{g['title']} ({g['id']})" for g in sorted(groups.values(), key=lambda g: g["id"]))
                problems.append(f"group '{name}' does not exist on Joomla {self.hook.site_url}; create it or use one "
                                f"of: {titles}")
        return list(dict.fromkeys(ids)), problems

    def admin_group_ids(self) -> set[int]:
        """Super Users, Administrator, the configured admin_groups, and every group below them."""
        groups = self.groups()
        roots = set(CORE_ADMIN_GROUPS)
        extra, _ = self.resolve_groups(self.admin_groups)
        roots |= set(extra)
        # configured titles that name several groups: all of them count
        for name in self.admin_groups:
            roots |= {g["id"] for g in groups.values() if not name.isdigit() and folded(g["title"]) == folded(name)}
        admin: set[int] = set()
        for group_id in groups:
            seen: set[int] = set()
            current: int | None = group_id
            while current and current not in seen:
                if current in roots:
                    admin.add(group_id)
                    break
                seen.add(current)
                current = groups.get(current, {}).get("parent_id")
        return admin | (roots & set(groups)) | set(CORE_ADMIN_GROUPS)

    # ------------------------------------------------------------------ preflight

    def preflight(self, roles: list[str]) -> str:
        roles = [r for r in dict.fromkeys(str(r).strip() for r in roles or []) if r]
        try:
            self.groups(refresh=True)
        except CmsAuthError as exc:
            raise CmsAuthError(exc.status, exc.code, exc.message) from None
        problems: list[str] = []
        me = self._me()
        group_ids, role_problems = self.resolve_groups(roles)
        problems += role_problems
        _, admin_problems = self.resolve_groups(self.admin_groups)
        problems += [f"admin_groups: {p}" for p in admin_problems]
        admin = self.admin_group_ids()
        groups = self.groups()
        for group_id in group_ids:
            if group_id in admin:
                problems.append(f"group '{groups[group_id]['title']}' ({group_id}) administers Joomla "
                                f"{self.hook.site_url}: remove it from the roles setting")
        if not roles and REGISTERED_GROUP not in groups:
            problems.append(f"no roles are set and Joomla {self.hook.site_url} has no Registered group "
                            f"({REGISTERED_GROUP}): set roles to the group(s) new accounts get")
        probe_groups = [g for g in group_ids if g not in admin] or [REGISTERED_GROUP]
        problems += self._probe_create(probe_groups)
        if problems:
            error = CmsConfigError(None, "preflight", "; ".join(problems))
            error.problems = problems
            raise error
        who = f"'{me.get('username')}' (user {me.get('id')})" if me else "the token's user"
        names = ", ".join(f"{groups[g]['title']} ({g})" for g in group_ids) if group_ids else \
            f"default group {groups[REGISTERED_GROUP]['title']} ({REGISTERED_GROUP})"
        return (f"Joomla {self.hook.site_url} as {who}: may create users, mail_to_user off, groups {names}; "
                f"{len(admin)} administrator groups")

    def _me(self) -> dict | None:
        user_id = self.hook.token_user_id
        if user_id is None:
            return None
        body = self.hook.api("GET", f"{USERS_ROUTE}/{user_id}", missing_ok=True)
        return ((body or {}).get("data") or {}).get("attributes") if body else None

    def _probe_create(self, group_ids: list[int]) -> list[str]:
        """Prove 'Create' on Users and mail_to_user off without creating anyone (see the module docstring)."""
        body = {"name": "Pre-flight probe", "username": PROBE_USERNAME, "email": PROBE_EMAIL,
                "groups": [str(g) for g in group_ids], "block": "0", "requireReset": "0", "sendEmail": "0"}
        try:
            created = self.hook.api("POST", USERS_ROUTE, json=body, retry=True)  # cannot create: safe to repeat
        except CmsAuthError as exc:
            if exc.status == 403:
                return [f"the API user of connection '{self.conn_id}' may not create users on Joomla "
                        f"{self.hook.site_url}: give its group 'Create' permission on Users (Users > Options > "
                        "Permissions)"]
            raise
        except CmsRejected as exc:
            if exc.code == "save_failed":
                return [f"Joomla {self.hook.site_url} would mail every new account its password in plain text: "
                        f"{MAIL_SETTING}"]
            if field_of(exc.message) == "password":
                return []
            return [f"pre-flight could not check mail_to_user on Joomla {self.hook.site_url}: {exc.message}"]
        except (CmsDuplicateLogin, CmsDuplicateEmail):
            return [f"Joomla {self.hook.site_url} would mail every new account its password in plain text: "
                    f"{MAIL_SETTING}"]
        user_id = ((created or {}).get("data") or {}).get("id")
        return [f"pre-flight's probe unexpectedly created Joomla user {user_id} ('{PROBE_USERNAME}') on "
                f"{self.hook.site_url}; delete it there and report this"]

    # ------------------------------------------------------------------ lookups

    def find_users(self, emails: list[str], usernames: list[str], *,
                   search_only: bool = False) -> list[CmsUser]:
        """Existing users whose email or login is given. `search_only`: look each up, without weighing a
        listing (the run has decided that already: user_listing)."""
        wanted_emails = {e for e in (_norm(x) for x in emails or []) if e}
        wanted_logins = {collation_key(u.strip()): u.strip() for u in usernames or [] if u and u.strip()}
        lookups = len(wanted_emails) + len(wanted_logins)
        if lookups == 0:
            return []
        found: dict[int, CmsUser] = {}
        total = self._count_users() if lookups > 2 and not search_only else None
        pages = math.ceil(total / self.page_size) if total is not None else None
        if pages is not None and pages < lookups:
            log.info("Joomla: listing all %d users (%d pages) to match %d emails/usernames", total, pages, lookups)
            seen: set[int] = set()
            for user in self._pages({}, self.page_size):
                seen.add(user.uf_id)
                if _norm(user.email) in wanted_emails or collation_key(user.username) in wanted_logins:
                    found[user.uf_id] = user
            if len(seen) < total:
                # ordered by name only: equal names may have moved between pages; look the rest up
                missed_emails = wanted_emails - {_norm(u.email) for u in found.values()}
                missed_logins = {k: v for k, v in wanted_logins.items()
                                 if k not in {collation_key(u.username) for u in found.values()}}
                log.info("Joomla: the listing showed %d of %d users; looking up %d items one by one",
                         len(seen), total, len(missed_emails) + len(missed_logins))
                found.update(self._search_each(missed_emails, missed_logins))
        else:
            log.info("Joomla: %d searches for %d emails and %d usernames", lookups, len(wanted_emails),
                     len(wanted_logins))
            found.update(self._search_each(wanted_emails, wanted_logins))
        return [found[k] for k in sorted(found)]

    def user_listing(self, *, lookups: int) -> UserListing | None:
        """Every user, listed once, when that costs fewer calls than `lookups` searches (a run's emails and
        names, looked up a chunk of contacts at a time); None when the searches cost less."""
        if lookups <= 2:
            return None
        total = self._count_users()
        pages = math.ceil(total / self.page_size)
        if pages >= lookups:
            return None
        log.info("Joomla: listing all %d users once (%d pages) to match about %d emails/usernames", total, pages,
                 lookups)
        listing = UserListing(self._pages({}, self.page_size), email_key=_norm,
                              login_key=lambda name: collation_key((name or "").strip()))
        if listing.count < total:  # ordered by name only: equal names may have moved between pages
            log.info("Joomla: the listing showed %d of %d users; what it lacks is looked up one by one",
                     listing.count, total)
            listing.fill = self._search_each
        return listing

    def _search_each(self, emails: set[str], logins: dict[str, str]) -> dict[int, CmsUser]:
        found: dict[int, CmsUser] = {}
        for email in sorted(emails):
            for user in self._search(email):
                if _norm(user.email) == email:
                    found[user.uf_id] = user
        for key, login in sorted(logins.items()):
            for user in self._search(f"username:{login}"):
                if collation_key(user.username) == key:
                    found[user.uf_id] = user
        return found

    def users_by_id(self, uf_ids: list[int]) -> list[CmsUser]:
        """The accounts with these ids: one GET each, or one listing when that costs fewer calls."""
        ids = sorted({int(i) for i in uf_ids or []})
        if not ids:
            return []
        if len(ids) > 2:
            total = self._count_users()
            if math.ceil(total / self.page_size) < len(ids):
                wanted = set(ids)
                found = {u.uf_id: u for u in self._pages({}, self.page_size) if u.uf_id in wanted}
                for missing in sorted(wanted - set(found)):  # equal names may have moved between pages
                    user = self._get_user(missing)
                    if user is not None:
                        found[missing] = user
                return [found[k] for k in sorted(found)]
        return [u for u in (self._get_user(i) for i in ids) if u is not None]

    def find_by_email(self, email: str) -> CmsUser | None:
        wanted = _norm(email)
        if not wanted:
            return None
        matches = [u for u in self._search(wanted) if _norm(u.email) == wanted]
        return min(matches, key=lambda u: u.uf_id) if matches else None

    def client_timeout(self) -> float:
        """How long the hook waits for an answer: a create may still be running on the site after it."""
        return self.hook.timeout

    def _get_user(self, user_id: int) -> CmsUser | None:
        body = self.hook.api("GET", f"{USERS_ROUTE}/{int(user_id)}", missing_ok=True)
        data = (body or {}).get("data")
        return self._user(data) if data else None

    def _count_users(self) -> int:
        body = self.hook.api("GET", USERS_ROUTE, params={"page[limit]": 1})
        try:
            return int(((body or {}).get("meta") or {})["total-pages"])  # one user per page: the count
        except (KeyError, TypeError, ValueError):
            raise CmsUnavailable(None, "no_total", "Joomla sent no meta.total-pages when counting users") from None

    def _search(self, term: str) -> list[CmsUser]:
        return list(self._pages({"filter[search]": term}, self.search_page_size))

    def _pages(self, params: dict, size: int) -> Iterable[CmsUser]:
        offset = 0
        while True:
            body = self.hook.api("GET", USERS_ROUTE, params={**params, "page[limit]": size, "page[offset]": offset},
                                 missing_ok=offset > 0)  # an offset past the end is a 404
            rows = (body or {}).get("data") or []
            for row in rows:
                yield self._user(row)
            if not rows or not ((body or {}).get("links") or {}).get("next"):
                return
            offset += len(rows)

    def _user(self, row: dict) -> CmsUser:
        attributes = row.get("attributes") or {}
        groups = attributes.get("groups")
        if isinstance(groups, dict):
            roles = [str(g) for g in groups.values()]
        elif isinstance(groups, list):
            roles = [str(g) for g in groups]
        else:
            roles = self._roles_from_titles(str(attributes.get("group_names") or ""))
        return CmsUser(uf_id=int(attributes.get("id") or row.get("id")), username=str(attributes.get("username") or ""),
                       email=str(attributes.get("email") or ""), roles=tuple(sorted(set(roles), key=_role_order)),
                       registered=_registered(attributes.get("registerDate")))

    def _roles_from_titles(self, names: str) -> list[str]:
        titles = [t for t in names.split("\n") if t.strip()]
        if not titles:
            return []
        roles: list[str] = []
        for attempt in range(2):
            groups = self.groups(refresh=attempt > 0)
            roles = []
            unknown = False
            for title in titles:
                ids = [str(g["id"]) for g in groups.values() if g["title"] == title]
                roles += ids or [title]
                unknown = unknown or not ids
            if not unknown:
                break
        return roles

    def is_admin(self, user: CmsUser) -> bool:
        admin = self.admin_group_ids()
        for role in user.roles:
            if not str(role).isdigit():
                return True  # a group title the groups list does not know: never linked
            if int(role) in admin:
                return True
        return False

    # ------------------------------------------------------------------ create

    def user_field_names(self) -> None:
        """Not offered for Joomla: its custom user fields (com_fields) cannot be listed with the API
        user's permissions, so pre-flight could not prove them."""
        return None

    def create_user(self, *, username: str, email: str, first_name: str, last_name: str, display_name: str,
                    roles: list[str], locale: str | None = None, fields: dict[str, str] | None = None) -> CmsUser:
        """POST /v1/users once, with a random password and block 0 (never repeated here: the caller
        looks up by email after any doubt). `roles` are group ids or titles; none gives Registered.
        `locale` is not sent: the reset mail is in the site's language."""
        if fields:  # pre-flight refuses user_fields where user_field_names() is None; never drop them silently
            raise CmsConfigError(None, "no_user_fields", "user_fields are not supported for Joomla; remove "
                                                         "user_fields from the settings")
        email = (email or "").strip()
        if not email:
            raise CmsRejected(None, "no_email", f"cannot create Joomla user '{username}' without an email")
        if len(email) > MAX_EMAIL_LENGTH:
            raise CmsRejected(None, "email_too_long",
                              f"email has {len(email)} characters; Joomla stores at most {MAX_EMAIL_LENGTH}")
        problem = username_problem(username)
        if problem:
            raise CmsRejected(None, "invalid_username", f"username '{username}': {problem}")
        group_ids, problems = self.resolve_groups(roles or [str(REGISTERED_GROUP)])
        if problems:
            raise CmsConfigError(None, "unknown_group", "; ".join(problems))
        admin = self.admin_group_ids()
        if any(g in admin for g in group_ids):
            raise CmsConfigError(None, "admin_group", f"roles {roles} include an administrator group of Joomla "
                                                      f"{self.hook.site_url}; refusing to create '{username}'")
        password = random_password()  # nobody knows it; the member sets one through the reset mail
        body = {
            "name": fit_name(display_name or f"{first_name or ''} {last_name or ''}".strip() or username),
            "username": username,
            "email": email,
            "password": password,
            "password2": password,
            "groups": [str(g) for g in group_ids],
            "block": "0",
            "requireReset": "0",
            "sendEmail": "0",
        }
        try:
            created = self.hook.api("POST", USERS_ROUTE, json=body)
        except CmsRejected as exc:
            if exc.code == "save_failed":
                raise self._settle_save_failure(exc, username, email) from None
            raise CmsRejected(exc.status, exc.code, f"{exc.message} [username '{username}']") from None
        data = (created or {}).get("data") if isinstance(created, dict) else None
        if not isinstance(data, dict) or not data.get("id"):
            raise CmsUnavailable(None, "no_id", "Joomla answered the create without a user id")
        user = self._user(data)
        log.debug("Joomla: created user %s ('%s')", user.uf_id, user.username)
        return user

    def _settle_save_failure(self, exc: CmsRejected, username: str, email: str) -> CmsError:
        """A save failure whose reason the hook could not read (another language): look the email,
        then the username, up; only when neither exists is it a rejection of this contact."""
        try:
            if self.find_by_email(email) is not None:
                return CmsDuplicateEmail(exc.status, "email_in_use", f"Joomla already has a user with that email "
                                                                     f"(found by look-up after: {exc.message})")
            key = collation_key(username)
            if any(collation_key(u.username) == key for u in self._search(f"username:{username}")):
                return CmsDuplicateLogin(exc.status, "username_in_use", f"Joomla already has that username "
                                                                        f"(found by look-up after: {exc.message})")
        except CmsUnavailable as lookup:
            return CmsUnavailable(lookup.status, lookup.code, f"{exc.message}; the look-up after it failed: "
                                                              f"{lookup.message}")
        return CmsRejected(exc.status, exc.code, f"{exc.message} [username '{username}']")

    def send_password_reset(self, user: CmsUser) -> None:
        self.send_password_mail(user)  # Joomla's password mail is its reset form's mail already

    def close(self) -> None:
        self.hook.close()
        if self._site_form is not None:
            self._site_form.close()

    # ------------------------------------------------------------------ mail

    def send_password_mail(self, user: CmsUser) -> None:
        """Joomla's own password-reset mail through the site's reset form, confirmed through the API."""
        before = self._reset_state(user.uf_id)
        if before is None:
            raise CmsRejected(404, "no_account", f"Joomla has no user {user.uf_id} to send a password mail to")
        if before["block"]:
            raise CmsRejected(None, "blocked", f"Joomla user {user.uf_id} is blocked: Joomla sends it no reset mail")
        address = before["email"] or user.email
        self.site_form.request_reset(address)
        try:
            after = self._reset_state(user.uf_id)
        except CmsError as exc:
            log.warning("Joomla took the reset request for user %s but could not be asked whether it mailed (%s)",
                        user.uf_id, exc.message)
            return
        if after is None or (after["resetCount"], after["lastResetTime"]) == (before["resetCount"],
                                                                           before["lastResetTime"]):
            raise CmsMailFailed(None, "not_taken", (
                f"Joomla did not take the password-reset request for user {user.uf_id} (its reset count did not "
                "change): it refuses Super Users, blocked users, and more than 'reset_count' requests within "
                "'reset_time' hours (Users > Options > Password Options)"))

    def _reset_state(self, user_id: int) -> dict | None:
        body = self.hook.api("GET", f"{USERS_ROUTE}/{int(user_id)}", missing_ok=True)
        attributes = (((body or {}).get("data") or {}).get("attributes") or {}) if body else None
        if not attributes:
            return None
        return {"email": str(attributes.get("email") or ""), "block": bool(int(attributes.get("block") or 0)),
                "resetCount": attributes.get("resetCount"), "lastResetTime": attributes.get("lastResetTime")}


def _role_order(role: str) -> tuple[int, str]:
    return (int(role), "") if role.isdigit() else (1 << 30, role)
