"""The CMS side of the pipeline, as an interface: users and errors. One implementation per CMS
package (cms_operators/<cms>/backend.py); `cms_operators.registry` says which.

No Airflow import here, so the batch logic and its tests use these without Airflow.

Error classes say what the caller should do (contract cms-users.md §1 and §7):

* CmsAuthError, CmsConfigError: the run cannot work (credentials, URL, roles); stop, never retry.
* CmsUnavailable: transient (network, timeouts, 429/502/503/504, answers that are not JSON);
  look up by email before any retry of a create; `retry_after` is the server's hint in seconds.
* CmsDuplicateLogin / CmsDuplicateEmail: the CMS already has that login / email.
* CmsRejected: permanent and about this contact (validation); the message names the field.
* CmsMailFailed: the CMS could not send its password mail (the account itself is fine).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from provisioning.rules import AccountRules
from transport.errors import ProvisioningError


@dataclass(frozen=True, slots=True)  # slots: a run may hold a site's listing of them
class CmsUser:
    """A CMS account as the pipeline sees it; uf_id is the CMS user id (CiviCRM UFMatch.uf_id)."""

    uf_id: int
    username: str
    email: str
    roles: tuple[str, ...] = ()
    registered: str | None = None  # when the CMS made it (ISO 8601, UTC), where the CMS says


class CmsError(ProvisioningError):
    """A CMS call failed. Carries the HTTP status and the CMS's error code; never a secret."""

    def __init__(self, status: int | None, code: str | None, message: str, *, retry_after: float | None = None):
        super().__init__(message, status=status, code=code, retry_after=retry_after)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class CmsAuthError(CmsError):
    """401/403: the credentials or the API user's capabilities are wrong. Run-level, never retried."""


class CmsConfigError(CmsError):
    """Wrong URL/route (404/405), a missing role, Application Passwords unavailable. Run-level."""


class CmsUnavailable(CmsError):
    """Transient: connect error, timeout, 429/502/503/504, or an answer that is not JSON."""

    retryable = True


class CmsDuplicateLogin(CmsError):
    """The login exists already (WordPress: 500 existing_user_login, compared case-insensitively)."""


class CmsDuplicateEmail(CmsError):
    """The email exists already (WordPress: 500 existing_user_email, compared case-insensitively)."""


class CmsRejected(CmsError):
    """Permanent, about this contact: validation (400), login too long/invalid, or an opaque 500."""


class CmsMailFailed(CmsError):
    """The CMS did not send its password mail (e.g. WordPress: 'The email could not be sent')."""


class UserListing:
    """Every user of a site, listed once for a run whose look-ups (email by email, name by name) would cost
    more calls: extract matches each chunk of contacts against it (`backend.user_listing`). It holds the
    site's users, not the run's contacts. `fill` looks up what the listing may have missed (a listing whose
    order is not stable): (emails, {login key: login}) -> {uf_id: user}."""

    def __init__(self, users: Iterable[CmsUser], *, email_key: Callable[[str | None], str],
                 login_key: Callable[[str | None], str],
                 fill: Callable[[set[str], dict[str, str]], dict[int, CmsUser]] | None = None) -> None:
        self.email_key, self.login_key, self.fill = email_key, login_key, fill
        self.by_email: dict[str, list[CmsUser]] = {}
        self.by_login: dict[str, list[CmsUser]] = {}
        self.count = 0
        for user in users:
            self.count += 1
            self.by_email.setdefault(email_key(user.email), []).append(user)
            self.by_login.setdefault(login_key(user.username), []).append(user)

    def match(self, emails: list[str], usernames: list[str]) -> list[CmsUser]:
        """What find_users(emails, usernames) gives, from the listing."""
        wanted_emails = {key for key in map(self.email_key, emails or []) if key}
        wanted_logins = {self.login_key(name): name.strip() for name in usernames or [] if self.login_key(name)}
        found: dict[int, CmsUser] = {}
        for key in wanted_emails:
            found.update((u.uf_id, u) for u in self.by_email.get(key, ()))
        for key in wanted_logins:
            found.update((u.uf_id, u) for u in self.by_login.get(key, ()))
        if self.fill is not None:
            missed_emails = wanted_emails - set(self.by_email)
            missed_logins = {k: v for k, v in wanted_logins.items() if k not in self.by_login}
            if missed_emails or missed_logins:
                found.update(self.fill(missed_emails, missed_logins))
        return [found[k] for k in sorted(found)]


@runtime_checkable
class CmsBackend(Protocol):
    """What the tasks need from a CMS. One implementation per CMS type."""

    name: str
    rules: AccountRules  # usernames, email limits, administrators: what the planner is told


    def preflight(self, roles: list[str]) -> str:
        """Prove credentials, capabilities and roles without changing anything; one-line description."""
        ...

    def client_timeout(self) -> float:
        """Seconds the client waits for an answer; a create may still be running after that."""
        ...

    def is_admin(self, user: CmsUser) -> bool:
        """Whether the account administers the site: never linked to a contact automatically."""
        ...

    def find_users(self, emails: list[str], usernames: list[str]) -> list[CmsUser]:
        """Existing users whose email (trimmed, case-insensitive) or login (case-insensitive) is given."""
        ...

    def users_by_id(self, uf_ids: list[int]) -> list[CmsUser]:
        """The accounts with these CMS user ids (those that still exist)."""
        ...

    def find_by_email(self, email: str) -> CmsUser | None:
        """The user with exactly this email (case-insensitive), or None."""
        ...

    def create_user(self, *, username: str, email: str, first_name: str, last_name: str,
                    display_name: str, roles: list[str], locale: str | None = None,
                    fields: dict[str, str] | None = None) -> CmsUser:
        """Create one account with a random password nobody sees. Never retried here.

        `locale` is the contact's preferred language (e.g. en_US), set where the site has it;
        `fields` are extra user fields (CMS field name -> value), for CMSs that have them."""
        ...

    def user_field_names(self) -> set[str] | None:
        """The extra user fields the site has (for the `user_fields` setting); None: this CMS has none."""
        ...

    def send_password_mail(self, user: CmsUser) -> None:
        """Ask the CMS to mail the user of a new account a link to set their password."""
        ...

    def send_password_reset(self, user: CmsUser) -> None:
        """Ask the CMS for its own password-reset mail to an existing account (the reset group and tag)."""
        ...

    def close(self) -> None:
        """Release what the backend holds open (HTTP session, SSH session); the tasks call it at the end."""
        ...


@dataclass(frozen=True)
class NewUser:
    """One account to create: the arguments of CmsBackend.create_user, for the bulk path."""

    username: str
    email: str
    first_name: str = ""
    last_name: str = ""
    display_name: str = ""
    roles: tuple[str, ...] = ()
    locale: str | None = None
    fields: dict[str, str] | None = None


@runtime_checkable
class BulkBackend(Protocol):
    """Optional, for CMSs where one call per account is dear (Backdrop: a PHP start per bee call).

    The batch sends `bulk_size` creates at a time. Each create in a call stands alone (made whole, or
    not at all) and can be found by email afterwards, so a call that dies half-way leaves nothing the
    next try cannot find and link.
    """

    bulk_size: int

    def create_users(self, requests: list[NewUser]) -> list[CmsUser | CmsError]:
        """One answer per request, in order: the account made, or why not (a CmsError of the request).

        Raises CmsUnavailable, CmsAuthError or CmsConfigError only when the whole call failed."""
        ...

    def send_password_mails(self, users: list[CmsUser], *, reset: bool = False) -> dict[int, CmsError]:
        """The password-set mail for each account (`reset`: the password-reset mail instead); returns
        uf_id -> error for those not sent."""
        ...


def send_password_mails(backend: CmsBackend, users: list[CmsUser], *, reset: bool = False) -> dict[int, CmsError]:
    """Each account's password mail (`reset`: the password-reset mail), many per call where the backend
    can; uf_id -> why not, for those the CMS did not send. A bulk call that broke off raises (which of
    its mails went out is unknown)."""
    if isinstance(backend, BulkBackend):
        return backend.send_password_mails(users, reset=reset)
    send = backend.send_password_reset if reset else backend.send_password_mail
    failed = {}
    for user in users:
        try:
            send(user)
        except CmsError as exc:
            failed[user.uf_id] = exc
    return failed
