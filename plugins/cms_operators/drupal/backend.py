"""DrupalBackend: users of a Drupal 8+ site (find, create, password mail) through DrupalHook's JSON:API.

What the API account needs, found on a real Drupal 10.5.5 (tests/contract/test_drupal_contract.py
removes each permission in turn and checks that pre-flight names it):

* `administer users`: create accounts, set `status` and `roles` on them, filter users by `mail`
  (without it the create answers 403 "The 'administer users' permission is required.", and a mail
  filter 403 "not authorized to filter by the `mail` field");
* `administer permissions`: read the roles (`/jsonapi/user_role/user_role`): their UUIDs (JSON:API
  names a role in a relationship by UUID only), `is_admin` and permissions. Without it the listing
  is 200 with no roles and `meta.omitted` naming the permission;
* optional, `administer languages`: read the enabled languages on a multilingual site (module
  language), so a new account gets the contact's preferred language. Without it no
  `preferred_langcode` is sent (Drupal answers 422 for a language the site does not have) and
  pre-flight says so.
* site configuration: modules `jsonapi`, `serialization`, `basic_auth` (or `simple_oauth` for a
  token); JSON:API writable (`jsonapi.settings:read_only` false, else 405). Nothing else: the
  password mail needs no `rest` module.

The password mail: Drupal sends no mail for an account created through JSON:API (no "notify" flag;
`status: true` at creation sends nothing either). What it honours is core's
`POST /user/password?_format=json` with `{"mail": ...}` (route `user.pass.http` of the user module,
open to anonymous visitors): one "Replacement login information" mail with a one-time login link,
in the account's preferred language; 200 with an empty body, also for an unknown or blocked account
(no mail then); 400 "Unable to send email..." when the site's mail system fails. It must be sent
**without** credentials: with Basic auth the route answers 403 "The used authentication method is
not allowed on this route."
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

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
from cms_operators.drupal.hook import LANGUAGES, ROLES, USERS, DrupalHook, required_permission
from cms_operators.drupal.rules import IMPLICIT_ROLES, MAX_EMAIL_LENGTH, RULES, username_problem
from provisioning.rules import collation_key

log = logging.getLogger(__name__)

PAGE_SIZE = 50           # JSON:API's most per page (page[limit] above it is cut to 50)
IN_CHUNK = 50            # values per `IN` condition (the URL stays a few KB)
IN_CHUNK_CHARS = 3000    # ... and at most this many characters of values
REQUIRED_PERMISSIONS = ("administer users", "administer permissions")
LANGUAGE_PERMISSION = "administer languages"


@dataclass(frozen=True)
class Role:
    """A Drupal role as JSON:API shows it (`drupal_internal__id` is the machine name)."""

    id: str
    uuid: str
    label: str
    is_admin: bool
    permissions: frozenset[str]


def _norm_email(value: str | None) -> str:
    return (value or "").strip().lower()


def drupal_langcode(locale: str | None) -> str | None:
    """CiviCRM's preferred language ("en_US", "pt_BR", "zh_TW") as Drupal's langcode ("en", "pt-br",
    "zh-hant"); candidates in order of preference."""
    text = (locale or "").strip().replace("_", "-").lower()
    return text or None


def _langcode_candidates(locale: str | None) -> list[str]:
    code = drupal_langcode(locale)
    if not code:
        return []
    special = {"zh-tw": "zh-hant", "zh-hk": "zh-hant", "zh-cn": "zh-hans", "zh-sg": "zh-hans"}
    candidates = [special.get(code, code), code, code.split("-")[0]]
    return list(dict.fromkeys(candidates))


def _utc(value: Any) -> str | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


class DrupalBackend:
    """CmsBackend for Drupal ≥ 8 through core JSON:API (see cms_operators.backend for each method's contract)."""

    name = "drupal"
    rules = RULES

    def __init__(self, conn_id: str = DrupalHook.default_conn_name, *, hook: DrupalHook | None = None,
                 settings=None):
        # `settings`: CMS-specific settings from the registry (Drupal reads none yet; `user_fields` will
        # be checked against user_field_names() by pre-flight once the settings carry it).
        self.settings = dict(settings) if isinstance(settings, dict) else {}
        self.conn_id = conn_id
        self.hook = hook or DrupalHook(cms_conn_id=conn_id)
        self._roles: dict[str, Role] | None = None
        self._roles_hidden: str | None = None     # why the roles could not be read
        self._languages: set[str] | None = None   # enabled langcodes; empty set: none sent
        self._languages_note = ""
        self._fields: set[str] | None = None
        self._types: set[str] | None = None
        self._me: dict | None = None

    def __repr__(self) -> str:
        return f"DrupalBackend(conn_id={self.conn_id!r})"

    # ------------------------------------------------------------------ site facts (read once)

    def _index(self) -> dict:
        try:
            index = self.hook.jsonapi("GET", "")
        except CmsUnavailable as exc:
            if exc.code == "not_json":
                raise CmsConfigError(exc.status, exc.code, f"{self.hook.jsonapi_url} is not Drupal's JSON:API "
                                                           f"(connection '{self.conn_id}'): enable the module "
                                                           "jsonapi, or set extra jsonapi_path") from None
            raise
        except CmsConfigError as exc:
            raise CmsConfigError(exc.status, exc.code, f"no JSON:API at {self.hook.jsonapi_url} (connection "
                                                       f"'{self.conn_id}'): enable the modules jsonapi and "
                                                       f"serialization, or set extra jsonapi_path ({exc.message})") from None
        if not isinstance(index, dict) or not isinstance(index.get("links"), dict):
            raise CmsConfigError(None, "bad_index", f"{self.hook.jsonapi_url} is not a JSON:API index "
                                                    f"(connection '{self.conn_id}')")
        self._types = set(index["links"])
        return index

    def _read_me(self) -> dict:
        index = self._index()
        if "user--user" not in (self._types or set()):
            raise CmsConfigError(None, "no_user_resource", f"JSON:API at {self.hook.jsonapi_url} offers no "
                                                           "user--user resource (connection "
                                                           f"'{self.conn_id}')")
        me = ((index.get("meta") or {}).get("links") or {}).get("me")
        if not isinstance(me, dict) or not me.get("href"):
            how = "the OAuth token" if self.hook.uses_token else "the login and password"
            raise CmsAuthError(401, "anonymous",
                               f"Drupal did not accept {how} of connection '{self.conn_id}' at {self.hook.site_url}: "
                               "JSON:API answered as to an anonymous visitor (Drupal treats wrong credentials that "
                               "way; after 5 failed logins in 6 hours it also locks the account for this address). "
                               "Check the credentials and that the module basic_auth is enabled")
        # our own URL, not the href: a proxy in front of the site would be bypassed
        uuid = (me.get("meta") or {}).get("id") or urlsplit(me["href"]).path.rstrip("/").rsplit("/", 1)[-1]
        document = self.hook.jsonapi("GET", f"{USERS}/{uuid}")
        data = (document or {}).get("data") or {}
        self._me = data
        attributes = data.get("attributes") or {}
        self._fields = set(attributes) | set(data.get("relationships") or {})
        return data

    def roles(self) -> dict[str, Role]:
        """The site's roles by machine name (read once); {} when the API user may not read them."""
        if self._roles is None:
            roles: dict[str, Role] = {}
            hidden = None
            for item, meta in self._documents(ROLES, {"sort": "weight"}):
                if item is None:
                    hidden = hidden or meta
                    continue
                attributes = item.get("attributes") or {}
                rid = str(attributes.get("drupal_internal__id") or "")
                if rid:
                    roles[rid] = Role(id=rid, uuid=str(item.get("id")), label=str(attributes.get("label") or rid),
                                      is_admin=bool(attributes.get("is_admin")),
                                      permissions=frozenset(attributes.get("permissions") or ()))
            self._roles = roles
            self._roles_hidden = hidden if not roles else None
            if roles:
                admins = {r.id.lower() for r in roles.values() if r.is_admin}
                self.rules = replace(RULES, admin_roles=frozenset(admins))
        return self._roles

    def admin_roles(self) -> frozenset[str]:
        """Roles whose holders administer the site: the site's is_admin roles, else core's default."""
        try:
            roles = self.roles()
        except CmsError as exc:
            log.warning("Drupal: could not read the roles (%s); counting '%s' holders as administrators",
                        exc.message, ", ".join(sorted(RULES.admin_roles)))
            return RULES.admin_roles
        return self.rules.admin_roles if roles else RULES.admin_roles

    def languages(self) -> set[str]:
        """Langcodes a new account may prefer (read once); empty when the site has one language or the
        API user may not read them (then no preferred_langcode is sent)."""
        if self._languages is None:
            if self._types is None:
                self._index()
            if "configurable_language--configurable_language" not in (self._types or set()):
                self._languages, self._languages_note = set(), "one language (module language off): none sent"
            else:
                found, hidden = set(), None
                for item, meta in self._documents(LANGUAGES, {}):
                    if item is None:
                        hidden = hidden or meta
                        continue
                    attributes = item.get("attributes") or {}
                    if not attributes.get("locked"):
                        found.add(str(attributes.get("drupal_internal__id") or ""))
                found.discard("")
                self._languages = found
                if found:
                    self._languages_note = f"languages {', '.join(sorted(found))}"
                else:
                    self._languages_note = (f"languages NOT readable (grant '{LANGUAGE_PERMISSION}' to send "
                                            "preferred languages): none sent")
        return self._languages

    def user_field_names(self) -> set[str]:
        """Names of the user fields the API user can see and set (JSON:API attributes and relationships),
        for checking the configured extra user fields."""
        if self._fields is None:
            self._read_me()
        return set(self._fields or ())

    # ------------------------------------------------------------------ preflight

    def preflight(self, roles: list[str]) -> str:
        wanted = [r for r in dict.fromkeys(str(r).strip() for r in roles or []) if r]
        me = self._read_me()
        attributes = me.get("attributes") or {}
        my_name = attributes.get("name") or self.hook.login or "?"
        my_roles = {str((rel.get("meta") or {}).get("drupal_internal__target_id") or "")
                    for rel in ((me.get("relationships") or {}).get("roles") or {}).get("data") or []}
        site_roles = self.roles()
        missing_permissions: list[str] = []
        if not site_roles:
            missing_permissions.append(required_permission(self._roles_hidden or "") or "administer permissions")
        else:
            mine = [site_roles[r] for r in my_roles | {"authenticated"} if r in site_roles]
            admin = any(r.is_admin for r in mine) or int(attributes.get("drupal_internal__uid") or 0) == 1
            granted = set().union(*(r.permissions for r in mine)) if mine else set()
            if not admin:
                missing_permissions += [p for p in REQUIRED_PERMISSIONS if p not in granted and
                                        p not in missing_permissions]
        # Creating is proven with a document Drupal can only refuse (an empty name and mail): it
        # answers 422 when JSON:API is writable and the user may create accounts with status and
        # roles, 403 or 405 otherwise. Nothing can be stored, so the call may be repeated.
        problems: list[str] = []
        role_uuids = []
        for role in wanted:
            found = site_roles.get(role)
            if role in IMPLICIT_ROLES:
                problems.append(f"role '{role}' is implicit in Drupal and cannot be given: remove it from the "
                                "roles setting")
            elif site_roles and found is None:
                problems.append(f"role '{role}' does not exist on Drupal {self.hook.site_url}; create it there "
                                "(machine name) or remove it from the roles setting")
            elif found is not None and found.is_admin:
                problems.append(f"role '{role}' is an administrator role on Drupal {self.hook.site_url}: remove it "
                                "from the roles setting")
            elif found is not None:
                role_uuids.append(found.uuid)
        try:
            self._probe_create(role_uuids)
        except CmsAuthError as exc:
            permission = required_permission(exc.message) or "administer users"
            if permission not in missing_permissions:
                missing_permissions.append(permission)
        if missing_permissions:
            problems_p = [f"Drupal user '{my_name}' of connection '{self.conn_id}' lacks the permission "
                          f"'{p}': grant it to the user's role at /admin/people/permissions" for p in missing_permissions]
            error = CmsAuthError(403, "missing_permission", "; ".join(problems_p))
            error.problems = problems_p
            raise error
        if problems:
            error = CmsConfigError(None, "roles", "; ".join(problems))
            error.problems = problems
            raise error
        self.languages()
        role_text = f"roles {', '.join(wanted)} exist" if wanted else "no extra roles"
        admins = ", ".join(sorted(self.rules.admin_roles)) or "none"
        return (f"Drupal {self.hook.site_url} as '{my_name}' (user {attributes.get('drupal_internal__uid')}): "
                f"{', '.join(REQUIRED_PERMISSIONS)} granted, JSON:API writable, {role_text}, administrator roles "
                f"{admins}, {self._languages_note}")

    def _probe_create(self, role_uuids: list[str]) -> None:
        body = self._document({"name": "", "mail": "", "status": True}, role_uuids)
        try:
            self.hook.jsonapi("POST", USERS, json=body, retry=True)
        except (CmsDuplicateLogin, CmsDuplicateEmail, CmsRejected) as exc:
            if exc.status == 422:
                return
            raise CmsConfigError(exc.status, exc.code, f"pre-flight could not check creating users on "
                                                       f"{self.hook.site_url}: {exc.message}") from None
        except CmsConfigError as exc:
            if exc.code == "missing_role":
                raise CmsConfigError(exc.status, exc.code, f"a configured role vanished while pre-flight ran: "
                                                           f"{exc.message}") from None
            raise
        raise CmsConfigError(201, "probe_created", f"pre-flight's probe (an empty name) was accepted by "
                                                   f"{self.hook.site_url}: delete the user without a name there")

    @staticmethod
    def _document(attributes: dict, role_uuids: list[str]) -> dict:
        data: dict[str, Any] = {"type": "user--user", "attributes": attributes}
        if role_uuids:
            data["relationships"] = {"roles": {"data": [{"type": "user_role--user_role", "id": uuid}
                                                        for uuid in role_uuids]}}
        return {"data": data}

    # ------------------------------------------------------------------ lookups

    def _documents(self, route: str, params: dict) -> Iterable[tuple[dict | None, str | None]]:
        """Every item of a listing, following links.next; (None, why) for items Drupal left out."""
        url = self.hook.jsonapi_url + route
        query: Any = {**params, "page[limit]": PAGE_SIZE}
        while url:
            document = self.hook.request("GET", url, params=query)[1] or {}
            for item in document.get("data") or []:
                yield item, None
            omitted = (document.get("meta") or {}).get("omitted")
            if isinstance(omitted, dict):
                details = [str((link.get("meta") or {}).get("detail") or "")
                           for link in (omitted.get("links") or {}).values() if isinstance(link, dict)]
                yield None, next((d for d in details if d), str(omitted.get("detail") or "omitted"))
            href = ((document.get("links") or {}).get("next") or {}).get("href")
            # the next link carries the whole query; its host is the site's own idea of itself, so
            # the query goes to our URL (a proxy in front of the site stays in the path)
            url = f"{self.hook.jsonapi_url}{route}?{urlsplit(href).query}" if href else None
            query = None

    def _users(self, params: dict) -> Iterable[CmsUser]:
        for item, _ in self._documents(USERS, {**params, "sort": "drupal_internal__uid"}):
            user = self._user(item) if item is not None else None
            if user is not None:
                yield user

    @staticmethod
    def _user(item: dict) -> CmsUser | None:
        attributes = item.get("attributes") or {}
        uid = attributes.get("drupal_internal__uid")
        if uid is None or int(uid) == 0:  # the anonymous user is listed with a display name only
            return None
        roles = tuple(str((rel.get("meta") or {}).get("drupal_internal__target_id") or "")
                      for rel in ((item.get("relationships") or {}).get("roles") or {}).get("data") or [])
        return CmsUser(uf_id=int(uid), username=str(attributes.get("name") or ""),
                       email=str(attributes.get("mail") or ""), roles=tuple(r for r in roles if r),
                       registered=_utc(attributes.get("created")))

    @staticmethod
    def _in_filter(path: str, values: list[str]) -> dict:
        params: dict[str, Any] = {"filter[v][condition][path]": path}
        if len(values) == 1:
            params["filter[v][condition][value]"] = values[0]
        else:
            params["filter[v][condition][operator]"] = "IN"
            params["filter[v][condition][value][]"] = values
        return params

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
            size += len(value)
        if current:
            chunks.append(current)
        return chunks

    def find_users(self, emails: list[str], usernames: list[str], *,
                   search_only: bool = False) -> list[CmsUser]:
        """Existing users whose email or login is given. `search_only`: look each up, without weighing a
        listing (the run has decided that already: user_listing)."""
        wanted_emails = sorted({e for e in (_norm_email(x) for x in emails or []) if e})
        wanted_logins = {collation_key(u): u.strip() for u in usernames or [] if collation_key(u)}
        if not wanted_emails and not wanted_logins:
            return []
        email_chunks = self._chunks(wanted_emails)
        login_chunks = self._chunks(sorted(wanted_logins.values()))
        lookups = len(email_chunks) + len(login_chunks)
        found: dict[int, CmsUser] = {}
        # Look-ups cost one call per chunk of 50; a listing one call per 50 users, and Drupal gives no
        # count: one call at offset (lookups-1)*50 says whether the listing is shorter.
        if lookups > 2 and not search_only and self._fewer_users_than((lookups - 1) * PAGE_SIZE):
            log.info("Drupal: listing all users to match %d emails and %d usernames", len(wanted_emails),
                     len(wanted_logins))
            candidates: Iterable[CmsUser] = self._users({})
        else:
            log.info("Drupal: %d look-ups for %d emails and %d usernames", lookups, len(wanted_emails),
                     len(wanted_logins))
            candidates = [user for chunk in email_chunks for user in self._users(self._in_filter("mail", chunk))]
            candidates += [user for chunk in login_chunks for user in self._users(self._in_filter("name", chunk))]
        email_set = set(wanted_emails)
        for user in candidates:
            if _norm_email(user.email) in email_set or collation_key(user.username) in wanted_logins:
                found[user.uf_id] = user
        return [found[k] for k in sorted(found)]

    def user_listing(self, *, lookups: int) -> UserListing | None:
        """Every user, listed once, when that costs fewer calls than looking up `lookups` emails and names (a
        run's, a chunk of contacts at a time) 50 a call; None when the look-ups cost less."""
        calls = -(-lookups // IN_CHUNK)
        if calls <= 2 or not self._fewer_users_than((calls - 1) * PAGE_SIZE):
            return None
        log.info("Drupal: listing all users once to match about %d emails and usernames", lookups)
        return UserListing(self._users({}), email_key=_norm_email, login_key=collation_key)

    def _fewer_users_than(self, count: int) -> bool:
        document = self.hook.jsonapi("GET", USERS, params={"page[limit]": 1, "page[offset]": count,
                                                            "sort": "drupal_internal__uid"}) or {}
        return not document.get("data")

    def users_by_id(self, uf_ids: list[int]) -> list[CmsUser]:
        ids = [str(i) for i in sorted({int(i) for i in uf_ids or []})]
        found: dict[int, CmsUser] = {}
        for chunk in self._chunks(ids):
            for user in self._users(self._in_filter("drupal_internal__uid", chunk)):
                found[user.uf_id] = user
        return [found[k] for k in sorted(found)]

    def find_by_email(self, email: str) -> CmsUser | None:
        wanted = _norm_email(email)
        if not wanted:
            return None
        matches = [u for u in self._users({"filter[mail]": wanted}) if _norm_email(u.email) == wanted]
        return min(matches, key=lambda u: u.uf_id) if matches else None

    def _find_by_login(self, username: str) -> CmsUser | None:
        wanted = collation_key(username)
        matches = [u for u in self._users({"filter[name]": username.strip()}) if collation_key(u.username) == wanted]
        return min(matches, key=lambda u: u.uf_id) if matches else None

    def client_timeout(self) -> float:
        return self.hook.timeout

    def is_admin(self, user: CmsUser) -> bool:
        """uid 1, or an account holding a role the site marks is_admin (core's 'administrator' when the
        roles cannot be read)."""
        if int(user.uf_id) in RULES.admin_ids:
            return True
        admins = self.admin_roles()
        return any(str(role).strip().lower() in admins for role in user.roles)

    # ------------------------------------------------------------------ create

    def create_user(self, *, username: str, email: str, first_name: str, last_name: str, display_name: str,
                    roles: list[str], locale: str | None = None, fields: dict[str, str] | None = None) -> CmsUser:
        """POST /jsonapi/user/user once, active (`status: true`), with the roles as UUID relationships,
        `preferred_langcode` when the contact's language is enabled on the site, and `fields` (user
        field name -> value) as attributes. No password is sent: the user sets one through the
        password mail. Never repeated here: the caller looks up by email after any doubt.

        first/last/display name have no core user field in Drupal; put them in `fields` when the site
        has fields for them.
        """
        email = (email or "").strip()
        if not email:
            raise CmsRejected(None, "no_email", f"cannot create Drupal user '{username}' without an email")
        if len(email) > MAX_EMAIL_LENGTH:
            raise CmsRejected(None, "email_too_long",
                              f"email has {len(email)} characters; Drupal stores at most {MAX_EMAIL_LENGTH}")
        problem = username_problem(username)
        if problem:
            raise CmsRejected(None, "invalid_username", f"Drupal would refuse the username '{username}': {problem}")
        role_uuids = self._role_uuids(roles)
        attributes: dict[str, Any] = {"name": username, "mail": email, "status": True}
        langcode = self._langcode(locale)
        if langcode:
            attributes["preferred_langcode"] = langcode
        for name, value in (fields or {}).items():
            if name in ("name", "mail", "status", "pass", "roles", "uid", "uuid"):
                raise CmsConfigError(None, "reserved_field", f"user field '{name}' is set by the pipeline itself: "
                                                             "remove it from the user fields setting")
            attributes[name] = value
        try:
            document = self.hook.jsonapi("POST", USERS, json=self._document(attributes, role_uuids))
        except (CmsDuplicateLogin, CmsDuplicateEmail) as exc:
            raise self._confirm_duplicate(exc, username, email) from None
        except CmsRejected as exc:
            raise CmsRejected(exc.status, exc.code, f"{exc.message} [username '{username}']") from None
        user = self._user(((document or {}).get("data")) or {}) if isinstance(document, dict) else None
        if user is None:
            raise CmsUnavailable(None, "no_id", "Drupal answered the create without a user id")
        log.debug("Drupal: created user %s ('%s')", user.uf_id, user.username)
        return user

    def _confirm_duplicate(self, exc: CmsError, username: str, email: str) -> CmsError:
        """A 422 on name or mail is a duplicate only when the account is there: an invalid name or a missing
        mail points at the same fields. Unconfirmable (look-up failed): the pointer decides."""
        try:
            if isinstance(exc, CmsDuplicateEmail):
                if self.find_by_email(email) is not None:
                    return exc
                if self._find_by_login(username) is not None:
                    return CmsDuplicateLogin(exc.status, "name_taken", f"Drupal already has the username '{username}'")
            elif self._find_by_login(username) is not None:
                return exc
        except CmsError as lookup:
            log.warning("Drupal: could not confirm the duplicate (%s): %s", lookup.message, exc.message)
            return exc
        if exc.code == "name_not_unique":
            return exc  # the database's own verdict (500): nothing to confirm
        return CmsRejected(exc.status, "invalid", f"{exc.message} [username '{username}'; no such account exists, "
                                                  "so the value itself was refused]")

    def _role_uuids(self, roles: list[str]) -> list[str]:
        wanted = [r for r in dict.fromkeys(str(r).strip() for r in roles or []) if r and r not in IMPLICIT_ROLES]
        if not wanted:
            return []
        site_roles = self.roles()
        if not site_roles:
            raise CmsAuthError(403, "missing_permission", f"cannot read Drupal's roles to give {wanted}: "
                                                          f"{self._roles_hidden or 'no roles listed'}")
        missing = [r for r in wanted if r not in site_roles]
        if missing:
            raise CmsConfigError(None, "missing_role", f"role(s) {', '.join(missing)} do not exist on Drupal "
                                                       f"{self.hook.site_url}; fix the roles setting")
        return [site_roles[r].uuid for r in wanted]

    def _langcode(self, locale: str | None) -> str | None:
        candidates = _langcode_candidates(locale)
        if not candidates:
            return None
        try:
            enabled = self.languages()
        except CmsError as exc:
            log.info("Drupal: could not read the site's languages (%s); sending none", exc.message)
            self._languages = set()
            return None
        return next((code for code in candidates if code in enabled), None)

    def send_password_reset(self, user: CmsUser) -> None:
        self.send_password_mail(user)  # Drupal's password mail is its /user/password reset mail already

    def close(self) -> None:
        self.hook.close()

    # ------------------------------------------------------------------ mail

    def send_password_mail(self, user: CmsUser) -> None:
        """Drupal's own password-reset mail: POST /user/password?_format=json (anonymous), one mail."""
        body = {"mail": user.email} if user.email else {"name": user.username}
        url = f"{self.hook.site_url}/user/password"
        try:
            self.hook.request("POST", url, params={"_format": "json"}, json=body, expect_json=False,
                              anonymous=True, retry=False)
        except CmsRejected as exc:
            if exc.status == 400:
                raise CmsMailFailed(400, "mail_failed", f"Drupal could not send the password mail for user "
                                                        f"{user.uf_id}: {exc.message}") from None
            raise
        except CmsAuthError as exc:
            raise CmsConfigError(exc.status, exc.code, f"Drupal refused the password mail request for user "
                                                       f"{user.uf_id} ({exc.message}); /user/password must be "
                                                       "open to anonymous visitors") from None
