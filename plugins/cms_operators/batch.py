"""Create (or link) the accounts of one batch, safely under retries, clears and crashes.

The rules, from the CMS contract (§1, §7):
- a contact already linked in CiviCRM (by an earlier try of this task) is done: nothing is sent;
- before a retried create, and after any doubt (lost answer, duplicate email), the account is
  looked up by email and linked if it exists, so no contact ever gets two accounts;
- a username taken since planning gets the next numeric suffix, a bounded number of times;
- permanent errors are the contact's outcome; run-level errors (auth, config) stop the batch;
- transient errors (CMS unavailable) are retried by Airflow after the rest of the batch is done
  and its links are written; on the last try they become the contact's failure, unless nothing
  in the batch got through, in which case the CMS is down and the batch fails for an operator.

No Airflow import here: the task in `tasks.py` hands in the backend and the CiviCRM callables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from cms_operators.backend import (
    CmsAuthError,
    CmsBackend,
    CmsConfigError,
    CmsDuplicateEmail,
    CmsDuplicateLogin,
    CmsError,
    CmsRejected,
    CmsUnavailable,
    CmsUser,
)
from provisioning import outcomes
from provisioning.outcomes import Outcome
from provisioning.usernames import next_candidate

log = logging.getLogger(__name__)

USERNAME_TRIES = 5


class BatchIncomplete(Exception):
    """Some creates hit a transient CMS error; raised after the rest of the batch is done and linked."""


class MailLedger:
    """Which accounts got their password mail, kept where every try of the task can see it.

    Mails go out in small chunks: the chunk is recorded as "sending" before and as "sent" after,
    two writes per chunk instead of one per mail. A try that stopped mid-chunk leaves those
    accounts "unknown": they are not mailed again (a second mail would void the first link) and
    their outcome says so.
    """

    CHUNK = 20

    def __init__(self, load: Callable[[], dict | None] = dict, store: Callable[[dict], None] = lambda _: None):
        state = load() or {}
        self.sent: set[int] = set(state.get("sent", []))
        self.unknown: set[int] = set(state.get("sending", []))
        self._store = store

    def begin(self, uf_ids: list[int]) -> None:
        # accounts an earlier try left unknown stay in "sending", or a later try would mail them
        self._store({"sent": sorted(self.sent), "sending": sorted(self.unknown | set(uf_ids))})

    def done(self, uf_ids: list[int]) -> None:
        self.sent.update(uf_ids)
        self._store({"sent": sorted(self.sent), "sending": sorted(self.unknown)})


@dataclass
class BatchContext:
    backend: CmsBackend
    linked_accounts: Callable[[list[int]], dict[int, dict]]  # contact id -> UFMatch row (this domain)
    save_links: Callable[[list[dict]], dict[int, str]]  # UFMatch rows -> contact id -> error
    mail_ledger: MailLedger
    notify: bool
    retried: bool  # an earlier try of this task may have created accounts
    final_try: bool


def _result(row: dict, outcome: Outcome, reason: str, *, uf_id=None, username=None, mail=None) -> dict:
    return {"contact_id": row["contact_id"], "outcome": str(outcome), "reason": reason,
            "uf_id": uf_id, "username": username if username is not None else row.get("username"),
            "mail": mail}


class _Batch:
    def __init__(self, rows: list[dict], ctx: BatchContext):
        self.rows = rows
        self.ctx = ctx
        self.results: dict[int, dict] = {}
        self.links: list[dict] = []  # UFMatch rows to write: contact_id, uf_id, uf_name
        self.accounts: dict[int, CmsUser] = {}
        self.transient: dict[int, CmsUnavailable] = {}
        self.reached_cms = False

    def run(self) -> list[dict]:
        done = self.ctx.linked_accounts([r["contact_id"] for r in self.rows])
        for row in self.rows:
            link = done.get(row["contact_id"])
            if link:  # linked by an earlier try: its outcome follows from the plan
                user = self.account_made_earlier(row, int(link["uf_id"]))
                outcome = Outcome.CREATED if row["action"] == "create" else Outcome.LINKED_EXISTING
                self.results[row["contact_id"]] = _result(
                    row, outcome, outcomes.linked_by_earlier_try(), uf_id=user.uf_id, username=user.username)
                # its password mail may still be due if that try stopped before sending it
                self.accounts[row["contact_id"]] = user
        todo = [r for r in self.rows if r["contact_id"] not in self.results]
        try:
            for n, row in enumerate(todo, 1):
                self.one(row)
                if n % 50 == 0:
                    log.info("batch progress: %d/%d contacts handled", n, len(todo))
        finally:
            # Links first, whatever happened: an account is never left unlinked by a raise.
            self.write_links()
        self.mail()
        self.settle_transient()
        return [self.results[r["contact_id"]] for r in self.rows]

    def account_made_earlier(self, row: dict, uf_id: int) -> CmsUser:
        """The account an earlier try linked. Its login may carry a suffix the plan did not know
        (a name taken since planning), so a create is read back; a link row is as planned."""
        planned = CmsUser(uf_id=uf_id, username=row.get("username") or "", email=row["email"])
        if row["action"] != "create":
            return planned
        try:
            user = self.ctx.backend.find_by_email(row["email"])
        except CmsUnavailable:
            return planned
        return user if user is not None and user.uf_id == uf_id else planned

    def one(self, row: dict) -> None:
        if row["action"] == "link":
            user = CmsUser(uf_id=int(row["uf_id"]), username=row["username"], email=row["email"])
            self.linked(row, user, Outcome.LINKED_EXISTING, outcomes.reason_linked_existing())
            return
        try:
            user = self.ctx.backend.find_by_email(row["email"]) if self.ctx.retried else None
            if user is not None:
                self.reached_cms = True
                self.linked(row, user, Outcome.CREATED, outcomes.found_after_retry())
                return
            self.create(row)
        except CmsUnavailable as exc:
            self.transient[row["contact_id"]] = exc
        except (CmsAuthError, CmsConfigError):
            raise
        except CmsError as exc:
            self.reached_cms = True
            self.results[row["contact_id"]] = _result(row, Outcome.FAILED, outcomes.cms_rejected(exc.message))

    def create(self, row: dict) -> None:
        backend = self.ctx.backend
        username = row["username"]
        taken: set[str] = set()
        retried_500 = False
        for _ in range(USERNAME_TRIES):
            try:
                user = backend.create_user(
                    username=username, email=row["email"], first_name=row.get("first_name") or "",
                    last_name=row.get("last_name") or "", display_name=row.get("display_name") or "",
                    roles=list(row.get("roles") or []), locale=row.get("locale"))
                self.reached_cms = True
                self.linked(row, user, Outcome.CREATED, outcomes.reason_created())
                return
            except CmsDuplicateLogin:
                self.reached_cms = True
                taken.add(username.lower())
                # the next suffix of the planned name (jane.doe2, jane.doe3), not a suffix of a suffix
                username = next_candidate(row["username"], taken, backend.max_username_length)
            except (CmsDuplicateEmail, CmsUnavailable) as exc:
                # Doubt: the account may exist (ours, with a lost answer, or made since planning).
                user = backend.find_by_email(row["email"])
                if user is not None:
                    self.reached_cms = True
                    self.linked(row, user, Outcome.CREATED, outcomes.found_after_doubt())
                    return
                if isinstance(exc, CmsUnavailable):
                    raise
                self.reached_cms = True
                raise CmsRejected(
                    exc.status, exc.code, outcomes.duplicate_email_not_found()) from exc
            except CmsRejected as exc:
                self.reached_cms = True
                if exc.status != 500 or retried_500:
                    raise
                # An unexplained 500: look before trying once more (contract §7).
                retried_500 = True
                user = backend.find_by_email(row["email"])
                if user is not None:
                    self.linked(row, user, Outcome.CREATED, outcomes.found_after_doubt())
                    return
        self.results[row["contact_id"]] = _result(
            row, Outcome.FAILED, outcomes.username_taken(row["username"], USERNAME_TRIES))

    def linked(self, row: dict, user: CmsUser, outcome: Outcome, reason: str) -> None:
        self.accounts[row["contact_id"]] = user
        self.links.append({"contact_id": row["contact_id"], "uf_id": user.uf_id, "uf_name": row["email"]})
        self.results[row["contact_id"]] = _result(row, outcome, reason, uf_id=user.uf_id, username=user.username)

    def write_links(self) -> None:
        if not self.links:
            return
        errors = self.ctx.save_links(self.links)
        for contact_id, error in errors.items():
            result = self.results[contact_id]
            result.update(outcome=str(Outcome.FAILED), reason=outcomes.link_failed(result.get("username"), error))
            self.accounts.pop(contact_id, None)
        self.links = []

    def mail(self) -> None:
        """The CMS's password-set mail, once per account we created, after its link is safe."""
        if not self.ctx.notify:
            return
        rows = {r["contact_id"]: r for r in self.rows}
        ledger = self.ctx.mail_ledger
        due: list[tuple[int, CmsUser]] = []
        for contact_id, user in self.accounts.items():
            result = self.results[contact_id]
            if result["outcome"] != Outcome.CREATED or rows[contact_id].get("do_not_email"):
                continue
            if user.uf_id in ledger.sent:
                result["mail"] = outcomes.MAIL_SENT_EARLIER
            elif user.uf_id in ledger.unknown:
                result["mail"] = outcomes.MAIL_UNKNOWN
            else:
                due.append((contact_id, user))
        for start in range(0, len(due), ledger.CHUNK):
            chunk = due[start:start + ledger.CHUNK]
            ledger.begin([user.uf_id for _, user in chunk])
            sent = []
            for contact_id, user in chunk:
                try:
                    self.ctx.backend.send_password_mail(user)
                    sent.append(user.uf_id)
                    self.results[contact_id]["mail"] = outcomes.MAIL_SENT
                except CmsError as exc:
                    self.results[contact_id]["mail"] = outcomes.mail_failed(exc.message)
            ledger.done(sent)

    def settle_transient(self) -> None:
        if not self.transient:
            return
        first = next(iter(self.transient.values()))
        if not self.ctx.final_try or not self.reached_cms:
            raise BatchIncomplete(
                f"{len(self.transient)} of {len(self.rows)} contacts could not be created because the CMS "
                f"is unavailable ({first.message}); the rest of the batch is done and linked, and the task "
                "will retry them")
        rows = {r["contact_id"]: r for r in self.rows}
        for contact_id, exc in self.transient.items():
            self.results[contact_id] = _result(rows[contact_id], Outcome.FAILED,
                                               outcomes.cms_error_after_retries(exc.message))


def create_batch(rows: list[dict], ctx: BatchContext) -> list[dict]:
    """Create or link every contact of the batch; one result dict per row, in order."""
    return _Batch(rows, ctx).run()
