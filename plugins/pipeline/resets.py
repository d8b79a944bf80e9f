"""Password resets (the seed's reset group and tag): each contact in a reset group or with a reset tag
gets the CMS's own password-reset email for its linked account, one "User Account Password Reset"
activity saying how it went (its own type: never an account-creation attempt), and is taken off.

Safe under retries, clears and kills, as the creation mails are. Every contact due a mail first gets
its activity, Scheduled, with the run's marker; a chunk's activities say "sending" before the CMS is
asked, and get their outcome after it answered and the contacts are off their reset groups and tags.
A later try of the run finds its activities by that marker, also of contacts already taken off: one
still "sending" may have had its email, so it is never asked for again (a second email voids the
first link in most CMSs) and is recorded as in doubt; one still only due is sent now.

No Airflow import: the task in `tasks.py` hands in the hooks.
"""

from __future__ import annotations

import logging
from collections import Counter

from civicrm_hooks import queries
from cms_operators.backend import CmsBackend, CmsError, CmsUnavailable, CmsUser, send_password_mails
from provisioning import journal, outcomes
from provisioning.settings import Settings
from provisioning.vocabulary import ResetOutcome, Source, parse_source

log = logging.getLogger(__name__)

CHUNK = 50  # mails asked for together: three CiviCRM writes and a take-off per chunk
SENDING = "sending"  # the details line of an activity whose mail is being asked for
_STATUS = {ResetOutcome.SENT: "Completed", ResetOutcome.FAILED: queries.FAILED_STATUS,
           ResetOutcome.DEFERRED: queries.FAILED_STATUS}
# the CMS answered without doing anything: safe to ask again in the next run
_NOT_PROCESSED = {429, 503}


def send_resets(civicrm, backend: CmsBackend, settings: Settings, resets: queries.Triggers, *, marker: str,
                stamp: str) -> list[dict]:
    """One result per contact in a reset group or tag: contact_id, outcome, reason, uf_id."""
    return _Resets(civicrm, backend, settings, resets, marker, stamp).run()


class _Resets:
    def __init__(self, civicrm, backend, settings, resets, marker, stamp):
        self.civicrm, self.backend, self.settings, self.resets = civicrm, backend, settings, resets
        self.marker, self.stamp = marker, stamp
        self.results: dict[int, dict] = {}
        self.activities: dict[int, dict] = {}  # contact id -> this run's activity (id, status, details)
        self.sources: dict[int, list[str]] = {}
        self.links: dict[int, dict] = {}

    def run(self) -> list[dict]:
        self.sources = queries.reset_members(self.civicrm, self.resets)
        mine = queries.run_activities(self.civicrm, None, self.marker, queries.PASSWORD_RESET_TYPE)
        self.activities = {cid: rows[0] for cid, rows in mine.items()}
        ids = sorted(set(self.sources) | set(self.activities))
        if not ids:
            log.info("password resets: nobody in the reset groups or tags")
            return []
        log.info("password resets: %d contacts in the reset groups and tags", len(ids))
        due = self.settle_known(ids)
        accounts = self.accounts(due)
        self.begin([cid for cid in due if cid in accounts], accounts)
        waiting = [cid for cid in ids if cid not in self.results]
        for start in range(0, len(waiting), CHUNK):
            self.send([(cid, accounts[cid]) for cid in waiting[start:start + CHUNK]])
        self.finish([cid for cid in ids if cid in self.results and self.needs_record(cid)])
        counts = Counter(r["outcome"] for r in self.results.values())
        log.info("password resets done: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        for cid in ids:
            result = self.results[cid]
            log.info("contact=%s reset=%s uf_id=%s", cid, result["outcome"], result["uf_id"])
        return [self.results[cid] for cid in ids]

    # ------------------------------------------------------------------ deciding

    def settle_known(self, ids: list[int]) -> list[int]:
        """Outcomes known without the CMS (earlier tries, no link); returns the contacts due a mail."""
        links = queries.linked_accounts(self.civicrm, ids, self.settings.domain_id)
        due = []
        self.links = links
        for cid in ids:
            activity = self.activities.get(cid)
            uf_id = links.get(cid, {}).get("uf_id")
            if activity is not None and activity["status"] != queries.JOURNAL_STATUS:
                # recorded by an earlier try; a failure still in a reset group was deferred (taken off first)
                outcome = ResetOutcome.SENT if activity["status"] == "Completed" else \
                    ResetOutcome.DEFERRED if cid in self.sources else ResetOutcome.FAILED
                self.result(cid, outcome, _first_line(activity["details"]), uf_id)
            elif activity is not None and SENDING in activity["details"].split("\n"):
                self.result(cid, ResetOutcome.FAILED, outcomes.RESET_STOPPED, uf_id)
            elif uf_id is None:
                self.result(cid, ResetOutcome.FAILED, outcomes.reset_no_account(self.settings.domain_id), None)
            else:
                due.append(cid)
        return due

    def accounts(self, due: list[int]) -> dict[int, CmsUser]:
        """The linked accounts that still exist (the mail goes to the CMS's own address for them)."""
        wanted = {int(self.links[cid]["uf_id"]): cid for cid in due}
        found = {user.uf_id: user for user in self.backend.users_by_id(sorted(wanted))} if wanted else {}
        accounts = {}
        for uf_id, cid in wanted.items():
            if uf_id in found:
                accounts[cid] = found[uf_id]
            else:
                self.result(cid, ResetOutcome.FAILED, outcomes.reset_account_gone(uf_id), uf_id)
        return accounts

    def result(self, cid: int, outcome: ResetOutcome, reason: str, uf_id) -> None:
        self.results[cid] = {"contact_id": cid, "outcome": str(outcome), "reason": reason,
                             "uf_id": int(uf_id) if uf_id is not None else None}

    # ------------------------------------------------------------------ the ledger and the mails

    def begin(self, due: list[int], accounts: dict[int, CmsUser]) -> None:
        """A Scheduled activity for every contact due a mail that has none of this run yet."""
        new = [cid for cid in due if cid not in self.activities]
        self.write({cid: self.record(cid, queries.JOURNAL_STATUS, outcomes.password_reset_subject(
            queries.JOURNAL_STATUS, accounts[cid].uf_id), outcomes.RESET_SENDING) for cid in new})
        if new:
            found = queries.run_activities(self.civicrm, new, self.marker, queries.PASSWORD_RESET_TYPE)
            self.activities.update({cid: rows[0] for cid, rows in found.items()})
            for cid in new:
                if cid not in self.activities:  # CiviCRM refused it: no mail without its record
                    self.result(cid, ResetOutcome.DEFERRED, outcomes.reset_deferred(
                        "CiviCRM did not record the activity"), accounts[cid].uf_id)

    def send(self, chunk: list[tuple[int, CmsUser]]) -> None:
        self.write({cid: self.record(cid, queries.JOURNAL_STATUS, None, outcomes.RESET_SENDING, SENDING)
                    for cid, _ in chunk})
        try:
            failed = send_password_mails(self.backend, [user for _, user in chunk], reset=True)
        except CmsError as exc:  # a bulk call that broke off: which mails went out is unknown
            failed = {user.uf_id: CmsUnavailable(None, "in_doubt", exc.message) for _, user in chunk}
        for cid, user in chunk:
            error = failed.get(user.uf_id)
            if error is None:
                self.result(cid, ResetOutcome.SENT, outcomes.RESET_SENT, user.uf_id)
            elif isinstance(error, CmsUnavailable) and error.status in _NOT_PROCESSED:
                self.result(cid, ResetOutcome.DEFERRED, outcomes.reset_deferred(error.message), user.uf_id)
            elif isinstance(error, CmsUnavailable):
                self.result(cid, ResetOutcome.FAILED, outcomes.reset_in_doubt(error.message), user.uf_id)
            else:
                self.result(cid, ResetOutcome.FAILED, outcomes.reset_refused(error.message), user.uf_id)
        self.finish([cid for cid, _ in chunk])

    def needs_record(self, cid: int) -> bool:
        activity = self.activities.get(cid)
        return activity is None or activity["status"] == queries.JOURNAL_STATUS

    def finish(self, cids: list[int]) -> None:
        """Off the reset groups and tags first (a kill after it leaves no second email), then the outcome."""
        off = [cid for cid in cids if self.results[cid]["outcome"] != ResetOutcome.DEFERRED]
        smart = [(cid, number) for cid in off for kind, number in map(parse_source, self.sources.get(cid, []))
                 if kind == Source.SMART]
        if off:
            queries.take_off_triggers(self.civicrm, self.resets, off, smart)
        records = {}
        for cid in cids:
            result = self.results[cid]
            status = _STATUS[ResetOutcome(result["outcome"])]
            records[cid] = self.record(cid, status, outcomes.password_reset_subject(status, result["uf_id"]),
                                       result["reason"])
        self.write(records)

    def record(self, cid: int, status: str, subject: str | None, details: str, *flags: str) -> dict:
        """The activity's `save` record: an update of this run's one, or a new one."""
        lines = [details, *flags]
        existing = self.activities.get(cid)
        if existing is not None:
            record = {"id": existing["id"], "status_id:name": status,
                      "details": journal.details_text("\n".join(lines), None, [self.marker])}
            existing.update(status=status, details=record["details"])
        else:
            record = {"activity_type_id:name": queries.PASSWORD_RESET_TYPE, "status_id:name": status,
                      "details": journal.details_text("\n".join(lines), None, [self.marker]),
                      "activity_date_time": self.stamp,
                      "source_contact_id": int(self.settings.activity_source_contact_id or cid),
                      "target_contact_id": [int(cid)]}
        if subject is not None:
            record["subject"] = subject
        return {**record, "_contact_id": cid}

    def write(self, records: dict[int, dict]) -> None:
        if not records:
            return
        refused = queries.write_activities(self.civicrm, list(records.values()))
        for cid, message in refused.items():
            log.warning("contact=%s: CiviCRM refused its password-reset activity", cid)
            if cid in self.results:
                self.results[cid]["reason"] += f"; {outcomes.record_refused(message)}"


def _first_line(details: str) -> str:
    return (details or "").split("\n", 1)[0]
