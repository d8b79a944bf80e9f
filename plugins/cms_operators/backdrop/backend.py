"""BackdropBackend: users of a Backdrop site (find, create, password mail) through BeeHook's named operations.

Every call is one `bee eval` of bee_ops.php on the site's server (one SSH session per backend, so one
per batch): look-ups by emails and names, users by ids, many creates in one call, the password mails
of many accounts in one call, and the site's facts for pre-flight (roles, the administrator role,
user fields, languages, version). bee itself exits 0 on errors and prints text for people; the
program answers JSON between markers and exits with its own status, and usernames are checked here
(rules.username_problem) before anything is sent, and again by Backdrop's user_validate_name() in
the PHP.

What the SSH user needs on the site's server: a login by key, read access to the Backdrop folder and
its settings.php, write access to its files folder, and bee (extra bee_path). bee runs PHP with the
site's own database credentials: there is no Backdrop permission to grant, and so whoever holds the
key holds the site. Give the account nothing else.

The password mail: Backdrop sends none for an account made this way; the backend asks Backdrop for
its own "account created by an administrator" mail (`_user_mail_notify('register_admin_created')`,
what the people page sends with "Notify user of new account"): a one-time login link to set the
password, in the account's language, through the site's mail system.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cms_operators.backdrop.hook import BeeHook
from cms_operators.backdrop.rules import (
    IMPLICIT_ROLES,
    MAX_EMAIL_LENGTH,
    RULES,
    username_problem,
)
from cms_operators.backend import (
    CmsConfigError,
    CmsDuplicateEmail,
    CmsDuplicateLogin,
    CmsError,
    CmsMailFailed,
    CmsRejected,
    CmsUnavailable,
    CmsUser,
    NewUser,
)
from provisioning.rules import collation_key

log = logging.getLogger(__name__)

BULK_SIZE = 50            # accounts per bee call: one PHP start for all, well inside the call's timeout
LOOKUP_CHUNK = 500        # emails + names per look-up call
RESERVED_FIELDS = frozenset({"name", "mail", "init", "pass", "status", "roles", "uid", "language", "created"})


def backdrop_langcodes(locale: str | None) -> list[str]:
    """CiviCRM's preferred language (en_US, pt_BR, zh_TW) as Backdrop langcode candidates, best first."""
    code = (locale or "").strip().replace("_", "-").lower()
    if not code:
        return []
    special = {"zh-tw": "zh-hant", "zh-hk": "zh-hant", "zh-cn": "zh-hans", "zh-sg": "zh-hans"}
    return list(dict.fromkeys([special.get(code, code), code, code.split("-")[0]]))


def _utc(timestamp: Any) -> str | None:
    try:
        value = int(timestamp)
    except (TypeError, ValueError):
        return None
    if value <= 0:
        return None
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _user(row: dict) -> CmsUser:
    return CmsUser(uf_id=int(row["uid"]), username=str(row.get("name") or ""), email=str(row.get("mail") or ""),
                   roles=tuple(str(r) for r in row.get("roles") or ()), registered=_utc(row.get("created")))


class BackdropBackend:
    """CmsBackend and BulkBackend for Backdrop through bee (see cms_operators.backend for the contracts)."""

    name = "backdrop"
    rules = RULES
    bulk_size = BULK_SIZE

    def __init__(self, conn_id: str = BeeHook.default_conn_name, *, hook: BeeHook | None = None, settings=None,
                 admin_roles: tuple[str, ...] | list[str] = ()):
        self.conn_id = conn_id
        self.hook = hook or BeeHook(cms_conn_id=conn_id)
        from_settings = settings.get("admin_roles") if isinstance(settings, dict) else \
            getattr(settings, "admin_roles", None)
        self.admin_role_names: tuple[str, ...] = tuple(dict.fromkeys(
            str(r).strip() for r in [*(from_settings or ()), *admin_roles] if str(r).strip()))
        self._facts: dict | None = None

    def __repr__(self) -> str:
        return f"BackdropBackend(conn_id={self.conn_id!r})"

    # ------------------------------------------------------------------ site facts (read once)

    def facts(self) -> dict:
        """version, roles (name -> label), admin_role, fields, languages, default_language, max_uid."""
        if self._facts is None:
            self._facts = dict(self.hook.call("facts").get("facts") or {})
            self.rules = replace(RULES, admin_roles=self.admin_roles())
        return self._facts

    def admin_roles(self) -> frozenset[str]:
        """The site's administrator role (config user_admin_role), plus the admin_roles setting (lower case)."""
        site = (self._facts or {}).get("admin_role") if self._facts is not None else None
        names = {str(site).strip().lower()} if site and str(site) != "0" else set()
        if self._facts is None:
            names |= set(RULES.admin_roles)  # not read yet: Backdrop's default
        names |= {r.lower() for r in self.admin_role_names}
        return frozenset(n for n in names if n)

    def user_field_names(self) -> set[str]:
        return set(self.facts().get("fields") or {})

    def languages(self) -> set[str]:
        return {str(code) for code in self.facts().get("languages") or ()}

    # ------------------------------------------------------------------ preflight

    def preflight(self, roles: list[str]) -> str:
        facts = self.facts()
        site_roles: dict[str, str] = dict(facts.get("roles") or {})
        admins = self.admin_roles()
        problems = []
        for role in [r for r in dict.fromkeys(str(r).strip() for r in roles or []) if r]:
            if role in IMPLICIT_ROLES:
                problems.append(f"role '{role}' is implicit in Backdrop and cannot be given: remove it from the "
                                "roles setting")
            elif role not in site_roles:
                problems.append(f"role '{role}' does not exist on Backdrop {self.hook.where}; create it there "
                                f"(machine name; the site has {', '.join(sorted(site_roles)) or 'none'}) or remove "
                                "it from the roles setting")
            elif role.lower() in admins:
                problems.append(f"role '{role}' is an administrator role on Backdrop {self.hook.where}: remove it "
                                "from the roles setting")
        for role in self.admin_role_names:
            if role not in site_roles:
                problems.append(f"admin_roles: role '{role}' does not exist on Backdrop {self.hook.where}; fix the "
                                "admin_roles setting")
        if problems:
            error = CmsConfigError(None, "roles", "; ".join(problems))
            error.problems = problems
            raise error
        wanted = ", ".join(r for r in roles or [] if r) or "no roles"
        languages = ", ".join(sorted(self.languages())) or "none"
        return (f"Backdrop {facts.get('version')} at {self.hook.where} through bee: roles {wanted} exist, "
                f"administrator roles {', '.join(sorted(admins)) or 'none'}, languages {languages}, "
                f"user fields {', '.join(sorted(self.user_field_names())) or 'none'}")

    # ------------------------------------------------------------------ lookups

    def client_timeout(self) -> float:
        return self.hook.timeout

    def is_admin(self, user: CmsUser) -> bool:
        """uid 1, or an account holding the site's administrator role or a role of the admin_roles setting."""
        if int(user.uf_id) in RULES.admin_ids:
            return True
        try:
            self.facts()
        except CmsError as exc:
            log.warning("Backdrop: could not read the site's administrator role (%s); counting %s", exc.message,
                        ", ".join(sorted(self.admin_roles())))
        admins = self.admin_roles()
        return any(str(role).strip().lower() in admins for role in user.roles)

    def find_users(self, emails: list[str], usernames: list[str]) -> list[CmsUser]:
        wanted_emails = sorted({e.strip() for e in emails or [] if e and e.strip()})
        wanted_names = sorted({u.strip() for u in usernames or [] if u and u.strip()})
        if not wanted_emails and not wanted_names:
            return []
        email_keys = {collation_key(e) for e in wanted_emails}
        name_keys = {collation_key(u) for u in wanted_names}
        found: dict[int, CmsUser] = {}
        values = [("e", e) for e in wanted_emails] + [("n", n) for n in wanted_names]
        for start in range(0, len(values), LOOKUP_CHUNK):
            chunk = values[start:start + LOOKUP_CHUNK]
            answer = self.hook.call("find_users", {"emails": [v for k, v in chunk if k == "e"],
                                                   "names": [v for k, v in chunk if k == "n"]})
            for row in answer.get("users") or []:
                user = _user(row)
                if collation_key(user.email) in email_keys or collation_key(user.username) in name_keys:
                    found[user.uf_id] = user
        log.info("Backdrop: %d accounts match %d emails and %d usernames", len(found), len(wanted_emails),
                 len(wanted_names))
        return [found[k] for k in sorted(found)]

    def users_by_id(self, uf_ids: list[int]) -> list[CmsUser]:
        ids = sorted({int(i) for i in uf_ids or []})
        found: list[CmsUser] = []
        for start in range(0, len(ids), LOOKUP_CHUNK):
            answer = self.hook.call("users_by_id", {"uids": ids[start:start + LOOKUP_CHUNK]})
            found += [_user(row) for row in answer.get("users") or []]
        return sorted(found, key=lambda u: u.uf_id)

    def find_by_email(self, email: str) -> CmsUser | None:
        wanted = (email or "").strip()
        if not wanted:
            return None
        matches = [u for u in self.find_users([wanted], []) if collation_key(u.email) == collation_key(wanted)]
        return min(matches, key=lambda u: u.uf_id) if matches else None

    # ------------------------------------------------------------------ create

    def create_user(self, *, username: str, email: str, first_name: str, last_name: str, display_name: str,
                    roles: list[str], locale: str | None = None, fields: dict[str, str] | None = None) -> CmsUser:
        """One account (a create_users call of one): active, with the roles, the contact's language where
        the site has it, and the user fields. No password is sent or shown: Backdrop makes a random one
        and the user sets theirs through the password mail. Never repeated here."""
        (answer,) = self.create_users([NewUser(username=username, email=email, first_name=first_name,
                                               last_name=last_name, display_name=display_name,
                                               roles=tuple(roles or ()), locale=locale, fields=fields)])
        if isinstance(answer, CmsError):
            raise answer
        return answer

    def create_users(self, requests: list[NewUser]) -> list[CmsUser | CmsError]:
        """Many accounts in one bee call; one answer per request, in order. Each account is saved on its
        own (user_save is one transaction), so a call that dies half-way leaves whole accounts, found by
        their email afterwards; a call without an answer raises CmsUnavailable (the batch looks up)."""
        if not requests:
            return []
        answers: list[CmsUser | CmsError | None] = [None] * len(requests)
        sent: list[tuple[int, dict]] = []
        for index, request in enumerate(requests):
            problem = self._refusal(request)
            if problem is not None:
                answers[index] = problem
            else:
                sent.append((index, self._payload(request)))
        if sent:
            result = self.hook.run("create_users", {"users": [payload for _, payload in sent]})
            answer = self.hook.checked("create_users", result)
            results = answer.get("results")
            if not isinstance(results, list) or len(results) != len(sent):
                raise CmsUnavailable(None, "bad_answer", f"bee on {self.hook.where} answered create_users with "
                                                         f"{len(results) if isinstance(results, list) else 'no'} "
                                                         f"results for {len(sent)} accounts")
            for (index, payload), item in zip(sent, results, strict=True):
                answers[index] = self._answer(item, payload["name"])
        made = [a for a in answers if isinstance(a, CmsUser)]
        log.info("Backdrop: created %d of %d accounts in one call (ids %s)", len(made), len(requests),
                 ", ".join(str(u.uf_id) for u in made) or "none")
        return [a if a is not None else CmsUnavailable(None, "no_answer", "no answer") for a in answers]

    def _refusal(self, request: NewUser) -> CmsError | None:
        """Why this request is refused before anything is sent (the contact's fault), or None; a
        configuration fault (roles, fields) raises for the whole call."""
        email = (request.email or "").strip()
        if not email:
            return CmsRejected(None, "no_email", f"cannot create Backdrop user '{request.username}' without an email")
        if len(email) > MAX_EMAIL_LENGTH:
            return CmsRejected(None, "email_too_long", f"email has {len(email)} characters; Backdrop stores at "
                                                       f"most {MAX_EMAIL_LENGTH}")
        problem = username_problem(request.username)
        if problem:
            return CmsRejected(None, "invalid_username",
                               f"Backdrop would refuse the username '{request.username}': {problem}")
        wanted = [r for r in request.roles or () if r and r not in IMPLICIT_ROLES]
        site_roles = self.facts().get("roles") or {}
        missing = [r for r in wanted if r not in site_roles]
        if missing:
            raise CmsConfigError(None, "missing_role", f"role(s) {', '.join(missing)} do not exist on Backdrop "
                                                       f"{self.hook.where}; fix the roles setting")
        for name in request.fields or {}:
            if name in RESERVED_FIELDS:
                raise CmsConfigError(None, "reserved_field", f"user field '{name}' is set by the pipeline itself: "
                                                             "remove it from the user fields setting")
            if name not in self.user_field_names():
                raise CmsConfigError(None, "unknown_field", f"Backdrop {self.hook.where} has no user field '{name}': "
                                                            "fix the user_fields setting")
        return None

    def _payload(self, request: NewUser) -> dict:
        payload: dict[str, Any] = {"name": request.username, "mail": request.email.strip(),
                                   "roles": [r for r in request.roles or () if r and r not in IMPLICIT_ROLES]}
        candidates = backdrop_langcodes(request.locale)
        if candidates:
            enabled = self.languages()
            code = next((c for c in candidates if c in enabled), None)
            if code:
                payload["language"] = code
        if request.fields:
            payload["fields"] = {str(k): str(v) for k, v in request.fields.items()}
        return payload

    def _answer(self, item: Any, username: str) -> CmsUser | CmsError:
        if not isinstance(item, dict):
            return CmsUnavailable(None, "bad_answer", "bee answered a create with no result")
        if isinstance(item.get("user"), dict):
            return _user(item["user"])
        code = str(item.get("error") or "unknown")
        message = str(item.get("message") or code)
        if code == "name_taken":
            return CmsDuplicateLogin(None, code, f"Backdrop already has the username '{username}'")
        if code == "mail_taken":
            return CmsDuplicateEmail(None, code, f"Backdrop already has an account with this email "
                                                 f"(user {item.get('uid')}) [username '{username}']")
        if code in ("invalid_name", "invalid_mail"):
            return CmsRejected(None, code, f"Backdrop refused the {item.get('field')}: {message} "
                                           f"[username '{username}']")
        if code in ("unknown_role", "unknown_field"):
            return CmsConfigError(None, code, f"Backdrop {self.hook.where}: {message}")
        # the save itself failed (database): the account may or may not be there, a look-up settles it
        return CmsRejected(500, code, f"Backdrop could not save the account '{username}': {message}")

    # ------------------------------------------------------------------ mail

    def send_password_mail(self, user: CmsUser) -> None:
        failed = self.send_password_mails([user])
        if user.uf_id in failed:
            raise failed[user.uf_id]

    def send_password_reset(self, user: CmsUser) -> None:
        failed = self.send_password_mails([user], reset=True)
        if user.uf_id in failed:
            raise failed[user.uf_id]

    def send_password_mails(self, users: list[CmsUser], *, reset: bool = False) -> dict[int, CmsError]:
        """Backdrop's own "account created by an administrator" mail for each account (`reset`: its
        "password reset" mail), in one call."""
        if not users:
            return {}
        mail = "password_reset" if reset else "register_admin_created"
        answer = self.hook.call("send_password_mails", {"uids": [int(u.uf_id) for u in users], "mail": mail})
        failed: dict[int, CmsError] = {}
        by_uid = {int(item.get("uid", 0)): item for item in answer.get("results") or [] if isinstance(item, dict)}
        for user in users:
            item = by_uid.get(int(user.uf_id))
            if item is None:
                failed[user.uf_id] = CmsMailFailed(None, "no_answer", f"bee gave no mail result for user {user.uf_id}")
            elif not item.get("sent"):
                code = str(item.get("error") or "mail_failed")
                hint = (": turn on 'Notify user when an administrator creates the account' in the site's account "
                        "settings" if code == "notify_off" else "")
                failed[user.uf_id] = CmsMailFailed(None, code, f"Backdrop did not send the password mail for user "
                                                               f"{user.uf_id}: {item.get('message') or code}{hint}")
        log.info("Backdrop: password mails for %d accounts, %d not sent", len(users), len(failed))
        return failed

    def close(self) -> None:
        self.hook.close()

