"""Drupal7Backend: users of a Drupal 7 site (find, create, welcome mail) through Drupal7Hook's Services endpoint.

What the API user needs, found on a real Drupal 7.101 + Services 7.x-3.20 (the contract suite removes
each permission in turn and checks that pre-flight names it):

* `administer users`: create accounts (with `status`), read them with their email and roles, send the
  welcome mail; without it the create is 403 "Access denied for user <name>".
* `administer permissions`: without it Drupal 7's account form hides its roles element, and Services'
  create **drops the roles silently** (200, the account has none). Pre-flight proves it without changing
  anything: the site's own "Add user" form (`GET /admin/people/create`, the form Services submits) shows
  the role checkboxes only to a user who may administer permissions.
* `access user profiles`: the user index (`GET <endpoint>/user.json`); without it 403.
* The endpoint: REST server, session authentication, JSON parser and formatter; the user resource's
  create, retrieve and index operations, the login, logout and token actions and the targeted action
  `resend_welcome_email` (or `password_reset`, see below).

Roles: Services lists no roles. The role names and ids are read from that same "Add user" form (the
checkboxes `roles[<rid>]` and their labels are exactly what the create accepts); a name the site does
not have is a CmsConfigError naming it. A create sends `roles: {rid: rid}`; an id the form does not
offer would be 406 "An illegal choice has been detected".

Languages: the same form shows the language radios only on a multilingual site (module locale, more
than one enabled language): those are the enabled languages. A contact's language is sent as the
account's `language` only when it is one of them (Drupal answers 406 "illegal choice" otherwise).

User fields: Services' create can fill only the fields shown on the registration form ("Display on
user registration form" in the field's settings); the form shows which (`field_x[und][0][value]`).
Values are sent in Drupal 7's form shape `{"field_x": {"und": [{"value": ...}]}}`.

Passwords: the create requires one ("Password field is required."), so each account gets a random
password nobody sees; the person sets their own through the mail.

The mail: Drupal 7's own. With registration open to administrators only, `resend_welcome_email` sends
"An administrator created an account for you" with a one-time login link (register_admin_created), the
mail Drupal itself sends when an administrator ticks "Notify user of new account". On a site where
visitors may register, that action would send the visitor's welcome text ("pending approval" with
approval on), so `password_reset` ("Replacement login information", a one-time login link) is used
instead. Which is which is read from the site: `GET /user/register` as an anonymous visitor is 403
exactly when only administrators make accounts. Both actions answer `[true]` even when the site could
not send the mail (Drupal logs it in its own log only): a mail failure cannot be seen through Services.

Look-ups: `parameters[mail]` / `parameters[name]` / `parameters[uid]` are `IN` conditions
(comma-separated values), `fields=` limits the columns, pages of at most 20
(`services_user_index_page_size`) unless the role may "perform unlimited index queries", pages from 0,
no total. The comparison is the database's: case-insensitive on MySQL/MariaDB (general_ci), case-sensitive
on SQLite. Pre-flight asks the site which (the API user's own email in upper case); where it is
case-sensitive, emails and names are looked up one by one with `options[parameters_op][x]=LIKE`
(SQLite's LIKE ignores ASCII case; `_` and `%` act as wildcards, so every row is compared exactly here
again). Roles are not in the index: each account found is read with `GET <endpoint>/user/<uid>.json`.
"""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

from cms_operators.backend import (
    CmsAuthError,
    CmsConfigError,
    CmsDuplicateEmail,
    CmsDuplicateLogin,
    CmsError,
    CmsRejected,
    CmsUnavailable,
    CmsUser,
)
from cms_operators.drupal7.hook import Drupal7Hook, FormErrors
from cms_operators.drupal7.rules import ADMIN_ROLE, IMPLICIT_ROLES, MAX_EMAIL_LENGTH, RULES, username_problem
from provisioning.rules import collation_key

log = logging.getLogger(__name__)

PAGE_SIZE = 20            # services_user_index_page_size's default: the most a page holds without
                          # "perform unlimited index queries"
IN_CHUNK = 20             # values per IN condition
IN_CHUNK_CHARS = 1500     # ... and at most this many characters of values (the URL stays small)
FIELDS = "uid,name,mail,status,created"
CREATE_FORM = "admin/people/create"
REGISTER_PAGE = "user/register"
REQUIRED_PERMISSIONS = ("administer users", "administer permissions", "access user profiles")
_RESERVED = {"name", "mail", "pass", "status", "roles", "uid", "notify", "language", "init"}


def _norm_email(value: str | None) -> str:
    return (value or "").strip().lower()


def random_password() -> str:
    """40 random letters and digits (Drupal 7 has no strength rule; at most 512 bytes are hashed)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(40))


def langcode(locale: str | None) -> list[str]:
    """CiviCRM's preferred language ("pt_BR") as Drupal 7 language codes to try ("pt-br", "pt")."""
    code = (locale or "").strip().replace("_", "-").lower()
    if not code:
        return []
    return list(dict.fromkeys([code, code.split("-")[0]]))


def _utc(value: Any) -> str | None:
    try:
        return datetime.fromtimestamp(int(value), UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    except (TypeError, ValueError, OverflowError):
        return None


@dataclass
class SiteForm:
    """What the site's "Add user" form offers the API user: roles (rid -> name), languages, user fields."""

    roles: dict[int, str] = field(default_factory=dict)
    languages: list[str] = field(default_factory=list)
    fields: set[str] = field(default_factory=set)
    has_form: bool = False


class _FormParser(HTMLParser):
    """Reads the role checkboxes, language radios and field inputs of Drupal 7's user_register_form."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.form = SiteForm()
        self._label_for: str | None = None
        self._label_text: list[str] = []
        self._role_ids: dict[str, int] = {}     # element id -> rid
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id", "").startswith("user-register-form"):
            self._in_form = self.form.has_form = True
        if not self._in_form:
            return
        name = a.get("name", "")
        if tag == "input" and name.startswith("roles[") and name.endswith("]"):
            rid = name[6:-1]
            if rid.isdigit():
                self._role_ids[a.get("id", "")] = int(rid)
        elif tag == "input" and name == "language" and a.get("type") == "radio" and a.get("value"):
            self.form.languages.append(a["value"])
        elif tag in ("input", "select", "textarea") and name.startswith("field_"):
            self.form.fields.add(name.split("[", 1)[0])
        elif tag == "label" and a.get("for") in self._role_ids:
            self._label_for, self._label_text = a["for"], []

    def handle_data(self, data: str) -> None:
        if self._label_for is not None:
            self._label_text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self._label_for is not None:
            self.form.roles[self._role_ids[self._label_for]] = " ".join("".join(self._label_text).split())
            self._label_for = None
        elif tag == "form" and self._in_form:
            self._in_form = False


def parse_create_form(html: str) -> SiteForm:
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.form


class Drupal7Backend:
    """CmsBackend for Drupal 7 + Services 3.x (see cms_operators.backend for each method's contract).

    `admin_roles`: role names whose holders count as administrators besides uid 1: `settings.admin_roles`
    (or the dict key), else the standard profile's `administrator`.
    """

    name = "drupal7"
    rules = RULES

    def __init__(self, conn_id: str = Drupal7Hook.default_conn_name, *, hook: Drupal7Hook | None = None,
                 settings=None, admin_roles: Iterable[str] = ()):
        self.conn_id = conn_id
        self.hook = hook or Drupal7Hook(cms_conn_id=conn_id)
        from_settings = settings.get("admin_roles") if isinstance(settings, dict) else \
            getattr(settings, "admin_roles", None)
        names = [str(r).strip() for r in [*(from_settings or ()), *admin_roles] if str(r).strip()]
        self.admin_roles: frozenset[str] = frozenset(r.lower() for r in names) or frozenset({ADMIN_ROLE})
        self._form: SiteForm | None = None
        self._mail_action: str | None = None
        self._case_insensitive: bool | None = None

    def __repr__(self) -> str:
        return f"Drupal7Backend(conn_id={self.conn_id!r})"

    def close(self) -> None:
        """Log out and release the HTTP session."""
        self.hook.close()

    # ------------------------------------------------------------------ site facts (read once)

    def site_form(self, *, refresh: bool = False) -> SiteForm:
        """The "Add user" form as the API user sees it (roles, languages, user fields)."""
        if self._form is None or refresh:
            status, html = self.hook.page(CREATE_FORM)
            if status in (401, 403):
                raise CmsAuthError(status, "forbidden", f"Drupal 7 user '{self.hook.login_name}' of connection "
                                                        f"'{self.conn_id}' may not open {CREATE_FORM}: grant its "
                                                        "role 'administer users'")
            form = parse_create_form(html) if status == 200 else SiteForm()
            if not form.has_form:
                raise CmsConfigError(status, "no_create_form", f"{self.hook.site_url}/{CREATE_FORM} answered HTTP "
                                                               f"{status} without Drupal 7's user form (connection "
                                                               f"'{self.conn_id}'): is the host the site's URL?")
            self._form = form
        return self._form

    def mail_action(self) -> str:
        """resend_welcome_email where only administrators make accounts, else password_reset (see above)."""
        if self._mail_action is None:
            status, _ = self.hook.page(REGISTER_PAGE, anonymous=True)
            self._mail_action = "resend_welcome_email" if status in (403, 404) else "password_reset"
        return self._mail_action

    def case_insensitive(self) -> bool:
        """Whether the site's index compares emails without case (MySQL/MariaDB), asked with our own email."""
        if self._case_insensitive is None:
            me = self._me()
            mail = str(me.get("mail") or "")
            if not mail or mail.upper() == mail.lower():
                self._case_insensitive = True  # nothing to tell by: assume MySQL, Drupal 7's usual database
            else:
                rows = self._index({"parameters[mail]": mail.upper()}, pages=1)
                self._case_insensitive = any(int(r.get("uid") or 0) == int(me.get("uid") or -1) for r in rows)
        return self._case_insensitive

    def _me(self) -> dict:
        if not self.hook.me:
            self.hook.login()
        uid = int(self.hook.me.get("uid") or 0)
        if not self.hook.me.get("mail") and uid:
            self.hook.me = {**self.hook.me, **(self._retrieve(uid) or {})}
        return self.hook.me

    def user_field_names(self) -> set[str]:
        """The user fields a create can fill: those on the registration form."""
        return set(self.site_form().fields)

    # ------------------------------------------------------------------ preflight

    def preflight(self, roles: list[str]) -> str:
        wanted = [r for r in dict.fromkeys(str(r).strip() for r in roles or []) if r]
        me = self.hook.me if self.hook.me else self.hook.login()
        my_name = me.get("name") or self.hook.login_name
        problems: list[str] = []
        lacks = f"Drupal 7 user '{my_name}' of connection '{self.conn_id}' lacks the permission"
        try:
            form = self.site_form(refresh=True)
        except CmsAuthError:
            raise CmsConfigError(403, "preflight", f"{lacks} 'administer users': grant it to the user's role at "
                                                   "admin/people/permissions") from None
        if not form.roles:
            problems.append(f"{lacks} 'administer permissions': without it Drupal 7 drops the roles of every new "
                            "account silently; grant it to the user's role at admin/people/permissions")
        rids, role_problems = self.resolve_roles(wanted) if form.roles else ([], [])
        problems += role_problems
        try:
            self._index({"parameters[uid]": str(me.get("uid") or 0)}, pages=1)
        except CmsAuthError:
            problems.append(f"{lacks} 'access user profiles': without it the user index cannot be read; grant it "
                            "at admin/people/permissions")
        if not problems:
            problems += self._probe_create(rids)
        if problems:
            error = CmsConfigError(None, "preflight", "; ".join(problems))
            error.problems = problems
            raise error
        names = ", ".join(f"{form.roles[r]} ({r})" for r in rids) or "none"
        case = "case-insensitive" if self.case_insensitive() else "case-sensitive (look-ups one by one)"
        languages = ", ".join(form.languages) or "one language: none sent"
        return (f"Drupal 7 {self.hook.endpoint_url} as '{my_name}' (user {me.get('uid')}): may create users, roles "
                f"{names}; languages {languages}; mail by {self.mail_action()}; look-ups {case}")

    def resolve_roles(self, roles: Iterable[str]) -> tuple[list[int], list[str]]:
        """Role ids for role names (any case) or ids; and a problem for each missing or administrator role."""
        form = self.site_form()
        by_name = {name.lower(): rid for rid, name in form.roles.items()}
        rids: list[int] = []
        problems: list[str] = []
        for raw in roles:
            role = str(raw).strip()
            if not role or role.lower() in IMPLICIT_ROLES:
                continue
            rid = int(role) if role.isdigit() and int(role) in form.roles else by_name.get(role.lower())
            if rid is None:
                offered = ", ".join(f"{n} ({r})" for r, n in sorted(form.roles.items())) or "none"
                problems.append(f"role '{role}' does not exist on Drupal 7 {self.hook.site_url}; create it there or "
                                f"use one of: {offered}")
            elif form.roles[rid].lower() in self.admin_roles:
                problems.append(f"role '{form.roles[rid]}' administers Drupal 7 {self.hook.site_url}: remove it from "
                                "the roles setting")
            else:
                rids.append(rid)
        return list(dict.fromkeys(rids)), problems

    def _probe_create(self, rids: list[int]) -> list[str]:
        """Prove the create (and the role ids) with an account Drupal can only refuse: no name, no mail."""
        body = {"name": "", "mail": "", "pass": random_password(), "status": 1, "roles": {str(r): str(r) for r in rids}}
        try:
            self.hook.call("POST", "user.json", json=body, retry=True)  # cannot create anything: safe to repeat
        except FormErrors as exc:
            if "roles" in exc.form_errors:
                return [f"Drupal 7 {self.hook.site_url} refused the role ids {rids}: {exc.form_errors['roles']}"]
            return []
        except CmsAuthError:
            return [f"Drupal 7 user '{self.hook.login_name}' of connection '{self.conn_id}' may not create users "
                    "through the endpoint: grant its role 'administer users' and enable the user resource's create"]
        return [f"pre-flight's probe (no name, no mail) was not refused by Drupal 7 {self.hook.site_url}; check the "
                "site and report this"]

    # ------------------------------------------------------------------ look-ups

    def _index(self, params: dict, *, pages: int | None = None, first_page: int = 0) -> list[dict]:
        rows: list[dict] = []
        page = first_page
        while pages is None or page < first_page + pages:
            answer = self.hook.call("GET", "user.json", params={**params, "fields": FIELDS, "page": page,
                                                                "pagesize": PAGE_SIZE,
                                                                "options[orderby][uid]": "ASC"})
            batch = [r for r in answer or [] if isinstance(r, dict)] if isinstance(answer, list) else []
            rows += batch
            if len(batch) < PAGE_SIZE:
                break
            page += 1
        return [r for r in rows if int(r.get("uid") or 0) > 0]   # the anonymous user (uid 0) is listed

    def _retrieve(self, uid: int) -> dict | None:
        try:
            answer = self.hook.call("GET", f"user/{int(uid)}.json")
        except CmsRejected as exc:
            if exc.status == 404:
                return None
            raise
        return answer if isinstance(answer, dict) else None

    def _user(self, row: dict, roles: Iterable[str] = ()) -> CmsUser:
        return CmsUser(uf_id=int(row["uid"]), username=str(row.get("name") or ""), email=str(row.get("mail") or ""),
                       roles=tuple(roles), registered=_utc(row.get("created")))

    def _with_roles(self, rows: Iterable[dict]) -> list[CmsUser]:
        """Each row as a CmsUser with its role names (one GET user/<uid> each: the index has no roles)."""
        users = []
        for row in sorted({int(r["uid"]): r for r in rows}.values(), key=lambda r: int(r["uid"])):
            full = self._retrieve(int(row["uid"]))
            if full is None:
                continue
            names = [str(n) for rid, n in sorted((full.get("roles") or {}).items()) if str(n).lower() not in IMPLICIT_ROLES] \
                if isinstance(full.get("roles"), dict) else []
            users.append(self._user({**row, **{k: full.get(k, row.get(k)) for k in ("name", "mail", "created")}},
                                    names))
        return users

    @staticmethod
    def _chunks(values: list[str]) -> list[list[str]]:
        chunks: list[list[str]] = []
        current: list[str] = []
        size = 0
        for value in values:
            if current and (len(current) >= IN_CHUNK or size + len(value) > IN_CHUNK_CHARS):
                chunks.append(current)
                current, size = [], 0
            current.append(value)
            size += len(value) + 1
        if current:
            chunks.append(current)
        return chunks

    @staticmethod
    def _askable(values: list[str]) -> list[str]:
        """The values worth asking for: one Services' CSV split would break (a comma or a double quote) cannot
        be stored by Drupal's forms."""
        return [v for v in values if v and "," not in v and '"' not in v]

    def _lookup(self, column: str, values: list[str]) -> list[dict]:
        """Rows whose `column` is one of `values` (those `_askable`) as the database compares."""
        values = self._askable(values)
        rows: list[dict] = []
        if self.case_insensitive():
            for chunk in self._chunks(sorted(set(values))):
                rows += self._index({f"parameters[{column}]": ",".join(chunk)})
        else:
            for value in sorted(set(values)):
                rows += self._index({f"parameters[{column}]": value, f"options[parameters_op][{column}]": "LIKE"})
        return rows

    def _lookup_calls(self, values: list[str]) -> int:
        """The index calls `_lookup` makes for these values (at least; pages past the first add more)."""
        values = self._askable(values)
        return len(self._chunks(sorted(set(values)))) if self.case_insensitive() else len(set(values))

    def _fewer_users_than(self, count: int) -> bool:
        """Whether the site lists fewer than about `count` users: one index call for the page that starts there
        (the index gives no count; its anonymous row shifts the pages by one, which the choice can bear)."""
        return not self._index({}, first_page=count // PAGE_SIZE, pages=1)

    def find_users(self, emails: list[str], usernames: list[str]) -> list[CmsUser]:
        """Look-ups cost a call per chunk of 20 values (per value on a case-sensitive site), a listing a call per
        20 users: when more than two look-ups are due, one call at the page the look-ups would reach says
        whether the listing is shorter (a new site's first import: 2 calls instead of 100 for 1,000 contacts)."""
        wanted_emails = {e for e in (_norm_email(x) for x in emails or []) if e}
        wanted_logins = {collation_key(u): u.strip() for u in usernames or [] if collation_key(u)}
        if not wanted_emails and not wanted_logins:
            return []
        lookups = self._lookup_calls(sorted(wanted_emails)) + self._lookup_calls(sorted(wanted_logins.values()))
        if lookups > 2 and self._fewer_users_than((lookups - 1) * PAGE_SIZE):
            log.info("Drupal 7: listing all users to match %d emails and %d usernames", len(wanted_emails),
                     len(wanted_logins))
            rows = self._index({})
        else:
            log.info("Drupal 7: %d look-ups for %d emails and %d usernames", lookups, len(wanted_emails),
                     len(wanted_logins))
            rows = self._lookup("mail", sorted(wanted_emails)) + self._lookup("name", sorted(wanted_logins.values()))
        matching = [r for r in rows if _norm_email(r.get("mail")) in wanted_emails
                    or collation_key(r.get("name")) in wanted_logins]
        return self._with_roles(matching)

    def users_by_id(self, uf_ids: list[int]) -> list[CmsUser]:
        ids = sorted({int(i) for i in uf_ids or [] if int(i) > 0})
        rows: list[dict] = []
        for chunk in self._chunks([str(i) for i in ids]):
            rows += self._index({"parameters[uid]": ",".join(chunk)})
        return self._with_roles(rows)

    def find_by_email(self, email: str) -> CmsUser | None:
        wanted = _norm_email(email)
        if not wanted:
            return None
        rows = [r for r in self._lookup("mail", [wanted]) if _norm_email(r.get("mail")) == wanted]
        if not rows:
            return None
        first = min(rows, key=lambda r: int(r["uid"]))
        found = self._with_roles([first])
        return found[0] if found else None

    def _find_by_login(self, username: str) -> CmsUser | None:
        wanted = collation_key(username)
        rows = [r for r in self._lookup("name", [username.strip()]) if collation_key(r.get("name")) == wanted]
        return self._user(min(rows, key=lambda r: int(r["uid"]))) if rows else None

    def client_timeout(self) -> float:
        return self.hook.timeout

    def is_admin(self, user: CmsUser) -> bool:
        """uid 1, or an account holding a role of admin_roles (default: administrator)."""
        if int(user.uf_id) in RULES.admin_ids:
            return True
        return any(str(role).strip().lower() in self.admin_roles for role in user.roles)

    # ------------------------------------------------------------------ create

    def create_user(self, *, username: str, email: str, first_name: str, last_name: str, display_name: str,
                    roles: list[str], locale: str | None = None, fields: dict[str, str] | None = None) -> CmsUser:
        """POST <endpoint>/user.json once: active, a random password nobody sees, the roles as {rid: rid},
        `language` when the contact's is enabled on the site, `fields` in Drupal 7's form shape. Never
        repeated here: the caller looks up by email after any doubt. Drupal 7 has no core name fields:
        first/last/display name go through `fields` where the site has fields for them."""
        email = (email or "").strip()
        if not email:
            raise CmsRejected(None, "no_email", f"cannot create Drupal 7 user '{username}' without an email")
        if len(email) > MAX_EMAIL_LENGTH:
            raise CmsRejected(None, "email_too_long",
                              f"email has {len(email)} characters; Drupal 7 stores at most {MAX_EMAIL_LENGTH}")
        problem = username_problem(username)
        if problem:
            raise CmsRejected(None, "invalid_username", f"Drupal 7 would refuse the username '{username}': {problem}")
        form = self.site_form()
        rids, problems = self.resolve_roles(roles or [])
        if problems:
            raise CmsConfigError(None, "missing_role", "; ".join(problems))
        if rids and not form.roles:
            raise CmsConfigError(None, "roles_dropped", f"Drupal 7 user '{self.hook.login_name}' may not give roles "
                                                        "(permission 'administer permissions'): refusing to create "
                                                        "accounts without them")
        body: dict[str, Any] = {"name": username, "mail": email, "pass": random_password(), "status": 1}
        if rids:
            body["roles"] = {str(r): str(r) for r in rids}
        language = next((code for code in langcode(locale) if code in form.languages), None)
        if language:
            body["language"] = language
        for name, value in (fields or {}).items():
            if name in _RESERVED or not name.startswith("field_"):
                raise CmsConfigError(None, "reserved_field", f"user field '{name}' is not a Drupal 7 field the "
                                                             "pipeline may fill (field_...): fix the user_fields setting")
            body[name] = {"und": [{"value": value}]}
        try:
            answer = self.hook.call("POST", "user.json", json=body)
        except FormErrors as exc:
            raise self._settle_form_errors(exc, username, email) from None
        uid = answer.get("uid") if isinstance(answer, dict) else None
        if not str(uid or "").isdigit():
            raise CmsUnavailable(None, "no_id", "Drupal 7 answered the create without a user id")
        user = CmsUser(uf_id=int(uid), username=username, email=email,
                       roles=tuple(form.roles[r] for r in rids), registered=None)
        log.debug("Drupal 7: created user %s ('%s')", user.uf_id, user.username)
        return user

    def _settle_form_errors(self, exc: FormErrors, username: str, email: str) -> CmsError:
        """406: a taken mail or name is confirmed by looking it up (Drupal's texts are translated, so the
        fields and the look-up decide, not the words); anything else is a rejection naming the fields."""
        errors = exc.form_errors
        try:
            if "mail" in errors and self.find_by_email(email) is not None:
                return CmsDuplicateEmail(406, "mail_taken", f"Drupal 7 already has a user with that email "
                                                            f"({errors['mail']})")
            if "name" in errors and self._find_by_login(username) is not None:
                return CmsDuplicateLogin(406, "name_taken", f"Drupal 7 already has the username '{username}' "
                                                            f"({errors['name']})")
        except CmsUnavailable as lookup:
            return CmsUnavailable(lookup.status, lookup.code, f"{exc.message}; the look-up after it failed: "
                                                              f"{lookup.message}")
        fields = ", ".join(sorted(errors))
        details = "; ".join(f"{k}: {v}" for k, v in sorted(errors.items()))
        return CmsRejected(406, "invalid", f"Drupal 7 rejected the fields {fields} ({details}) [username '{username}']")

    # ------------------------------------------------------------------ mail

    def send_password_mail(self, user: CmsUser) -> None:
        """Drupal 7's own mail with a one-time login link (see the module docstring for which)."""
        self._mail(user, self.mail_action())

    def send_password_reset(self, user: CmsUser) -> None:
        """Drupal 7's "Replacement login information" mail (the user resource's password_reset action)."""
        self._mail(user, "password_reset")

    def _mail(self, user: CmsUser, action: str) -> None:
        try:
            self.hook.call("POST", f"user/{int(user.uf_id)}/{action}.json", json={})
        except CmsRejected as exc:
            if exc.status == 404:
                raise CmsRejected(404, "no_account", f"Drupal 7 has no user {user.uf_id} to mail") from None
            raise
