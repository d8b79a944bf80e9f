"""Create (or link) the accounts of one batch, safely under retries, clears, kills and slow CMSs.

The rules (CMS contract §1, §7, and docs/design.md "State that survives"):
- a contact already linked in CiviCRM (by an earlier try) is done: nothing is sent;
- before any create is posted, the account journal (provisioning.journal, kept in CiviCRM) records
  the username about to be sent; a contact whose journal shows a create with no known answer (a
  killed try, a timeout, a lost answer) is looked up by email before anything else is sent, after
  waiting out the CMS's slowest answer;
- an account found by a look-up is ours only if the journal names it: then the outcome is
  `created` and its password mail is due once; otherwise it is somebody's existing account and
  gets the same checks as in the plan (never an administrator, never one linked to another
  contact, `on_existing_email`);
- a username taken since planning gets the next numeric suffix of its base, a bounded number of
  times, each recorded in the journal before it is sent;
- permanent errors are the contact's outcome; run-level errors (auth, config) stop the batch;
- transient errors (CMS unavailable) are retried by Airflow after the rest of the batch is done
  and its links are written; a 429 pauses the batch first. On the last try they become the
  contact's failure, unless nothing got through, in which case the batch fails for an operator;
- creating is exclusive per email across runs, DAGs and workers (pipeline/locks.py): the batch holds
  the locks of the emails it creates for from before it reads anything until its links are written;
  a contact whose email another run holds is left for the next try (on the last, `deferred`).

No Airflow import here: the task in `tasks.py` hands in the backend and the CiviCRM callables.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from cms_operators.backend import (
    BulkBackend,
    CmsAuthError,
    CmsBackend,
    CmsConfigError,
    CmsDuplicateEmail,
    CmsDuplicateLogin,
    CmsError,
    CmsRejected,
    CmsUnavailable,
    CmsUser,
    NewUser,
    send_password_mails,
)
from pipeline.locks import Held, process_locks
from pipeline.pacing import Pacer
from provisioning import journal, outcomes
from provisioning.journal import JournalEntry
from provisioning.outcomes import Outcome
from provisioning.usernames import next_candidate
from provisioning.vocabulary import Action, OnExistingEmail

log = logging.getLogger(__name__)

USERNAME_TRIES = 5
# Mails are recorded as "sending" a chunk at a time: two journal writes per chunk, not per mail. The first
# chunk is MAIL_CHUNK per thread; later ones hold about MAIL_CHUNK_SECONDS of mails at the pace measured,
# which bounds what a crash can leave in doubt (never resent) by time rather than by count.
MAIL_CHUNK = 20
MAIL_CHUNK_SECONDS = 2.0
MAX_MAIL_CHUNK = 500


def next_mail_chunk(sent: int, seconds: float) -> int:
    """The size of the next chunk of mails after `sent` took `seconds` (journal writes included)."""
    if sent <= 0 or seconds <= 0:
        return MAX_MAIL_CHUNK
    return max(MAIL_CHUNK, min(MAX_MAIL_CHUNK, int(MAIL_CHUNK_SECONDS * sent / seconds)))
# How often the creating batch writes its new links and journal entries and hands out their mails: what a
# kill can leave unlinked (found again by the journal) or in doubt (never mailed twice) is this much work.
WAVE_SECONDS = 2.0
# Once the creates left would all be answered within a wave, waves come this often, so the mails of the last
# creates wait a fraction of a wave instead of going out alone after the last create (with _Work.take's
# spreading of the mails: 33 instead of about 300 mails left at a batch of 5,000's last create, 0.07 s
# instead of 0.48 s from there to the batch's end, at 4 threads).
CLOSING_WAVE_SECONDS = 0.5


def wave_interval(made: int, creates: int, elapsed: float) -> float:
    """Seconds to the next wave when `made` of `creates` were answered in `elapsed` seconds: WAVE_SECONDS, or
    CLOSING_WAVE_SECONDS once the creates left would all be answered within a wave at that pace."""
    if made and elapsed > 0 and (creates - made) * elapsed / made <= WAVE_SECONDS:
        return CLOSING_WAVE_SECONDS
    return WAVE_SECONDS


# Creates are recorded as `sending` a slice at a time, each just before the threads may send it: the first
# slice is FIRST_SLICE per thread, each next one up to twice the last (at most MAX_SLICE), written when the
# threads have less than half a slice left. So the first create goes out after a small write, not one for the
# whole batch, and a kill leaves about a slice in doubt (looked up by the next try), not every create unsent.
FIRST_SLICE = 25
MAX_SLICE = 500
MAX_PAUSE = 120.0  # longest pause a 429's Retry-After may impose on a batch
DEFAULT_PAUSE = 5.0  # a 429 without Retry-After


class BatchIncomplete(Exception):
    """Some creates hit a transient CMS error; raised after the rest of the batch is done and linked."""


class _Work:
    """The CMS work of one batch's threads: creates and mails (whose accounts are linked and waiting), each
    thread taking them in turn; what the threads have sent since the last wave; the first error, which stops
    them all."""

    def __init__(self, creates: int):
        self._creates: deque[dict] = deque()  # released: their `sending` entries are written
        self._mails: deque[tuple[int, CmsUser]] = deque()
        self._open = creates  # creates not yet answered, released or not
        self._sent: list[tuple[int, CmsUser, CmsError | None]] = []
        self._closed = False
        self._ready = threading.Condition()
        self.all_made = threading.Event()  # every create answered (or the batch stopped)
        self.wake = threading.Event()  # the batch's own thread is wanted: creates run low, all made, or an error
        self.low_water = 0  # at most this many released creates left: more are wanted
        self.error: BaseException | None = None
        self.made = self.mailed = 0
        if not creates:
            self.all_made.set()

    def take(self, after_create: bool = False) -> tuple[str, object] | None:
        """The next job, waiting for one while the batch is open; None when the thread is done. A thread whose
        last job was a create takes a waiting mail next, else a create: each thread alternates, as one sending
        an account's create and then its mail would, so creates stay in flight (waiting on the CMS) while mails
        are sent, instead of every thread sending the wave's mails at once while no create is under way. Only
        when more mails wait than creates are left does a thread take a mail after a mail: so the mails of
        the batch's last waves go out beside its last creates, not alone after them."""
        with self._ready:
            while True:
                if self.error is not None:
                    return None
                if self._mails and (after_create or not self._creates or len(self._mails) > self._open):
                    return "mail", self._mails.popleft()
                if self._creates:
                    if len(self._creates) <= self.low_water:
                        self.wake.set()
                    return "create", self._creates.popleft()
                if self._closed:
                    return None
                self._ready.wait()

    def created(self) -> None:
        with self._ready:
            self.made += 1
            self._open -= 1
            if self._open == 0:
                self.all_made.set()
                self.wake.set()

    def sent(self, contact_id: int, user: CmsUser, error: CmsError | None) -> None:
        with self._ready:
            self.mailed += error is None
            self._sent.append((contact_id, user, error))

    def release(self, creates: list[dict], low_water: int) -> None:
        with self._ready:
            self._creates.extend(creates)
            self.low_water = low_water
            self._ready.notify_all()

    def released(self) -> int:
        with self._ready:
            return len(self._creates)

    def add_mails(self, mails: list[tuple[int, CmsUser]]) -> None:
        if mails:
            with self._ready:
                self._mails.extend(mails)
                self._ready.notify_all()

    def take_sent(self) -> list[tuple[int, CmsUser, CmsError | None]]:
        with self._ready:
            sent, self._sent = self._sent, []
            return sent

    def take_unsent(self) -> list[tuple[int, CmsUser]]:
        with self._ready:
            unsent = list(self._mails)
            self._mails.clear()
            return unsent

    def fail(self, error: BaseException) -> None:
        with self._ready:
            if self.error is None:
                self.error = error
            self._ready.notify_all()
        self.all_made.set()
        self.wake.set()

    def close(self) -> None:
        """No more jobs will come: the threads finish the mails handed out and stop."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()


@dataclass
class BatchContext:
    backend: CmsBackend
    linked_accounts: Callable[[list[int]], dict[int, dict]]  # contact id -> UFMatch row (this domain)
    save_links: Callable[[list[dict]], dict[int, str]]  # UFMatch rows -> contact id -> error
    read_journal: Callable[[list[int]], dict[int, list[JournalEntry]]]  # every run's entries
    # entries to write, with the activity subject for new ones -> contact id -> entry as written
    write_journal: Callable[[list[JournalEntry], dict[int, str]], dict[int, JournalEntry]]
    links_for: Callable[[list[int]], list[dict]] = lambda uf_ids: []  # UFMatch rows naming these accounts
    marker: str = ""  # this run's activity marker: tells this run's journal entries from earlier runs'
    notify: bool = True
    on_existing_email: str = OnExistingEmail.LINK
    final_try: bool = False
    client_timeout: float = 30.0  # the CMS hook's read timeout
    retry_delay: float = 0.0  # the task's retry delay, as configured
    # when a create of this task last timed out (UTC text), kept across tries by the task
    load_timed_out: Callable[[], str | None] = lambda: None
    store_timed_out: Callable[[str], None] = lambda when: None
    sleep: Callable[[float], None] = time.sleep
    # creation exclusive per email: `with lock(emails) as held` (pipeline.locks.EmailLocks); the default
    # holds within this process only, so the tasks pass the store of the lock connection
    lock: Callable = field(default_factory=process_locks)
    # creates sent side by side (`max_concurrency`), each thread with its own CMS session from open_backend
    # (None: they share `backend`); every thread keeps the pacer's rate and pauses
    concurrency: int = 1
    open_backend: Callable[[], CmsBackend] | None = None
    pacer: Pacer | None = None
    # The attempts the batch's waves complete (account linked, its mail sent or not due) are recorded there and
    # then, while the creates go on: (entry, outcome activity) pairs are written as the entries' last journal
    # write, with their outcome; then history and the trigger take-off. Returns the contacts whose records all
    # landed: finalize leaves those alone. None: finalize records every contact.
    record_done: Callable[[list[tuple[JournalEntry, dict]]], set[int]] | None = None


def _creating(rows: list[dict]) -> list[str]:
    """The emails the rows create accounts for: the creation lock's keys."""
    return [r["email"] for r in rows if r["action"] == Action.CREATE]


def _new_user(row: dict, username: str | None = None) -> NewUser:
    return NewUser(username=username or row["username"], email=row["email"], first_name=row.get("first_name") or "",
                   last_name=row.get("last_name") or "", display_name=row.get("display_name") or "",
                   roles=tuple(row.get("roles") or ()), locale=row.get("locale"),
                   fields=row.get("user_fields") or None)


def _result(row: dict, outcome: Outcome, reason: str, *, uf_id=None, username=None, mail=None) -> dict:
    return {"contact_id": row["contact_id"], "outcome": str(outcome), "reason": reason,
            "uf_id": uf_id, "username": username if username is not None else row.get("username"),
            "mail": mail, "journal_activity_id": None, "recorded": False}


@dataclass
class _State:
    results: dict[int, dict] = field(default_factory=dict)
    links: list[dict] = field(default_factory=list)  # UFMatch rows to write: contact_id, uf_id, uf_name
    accounts: dict[int, CmsUser] = field(default_factory=dict)
    transient: dict[int, CmsUnavailable] = field(default_factory=dict)
    entries: dict[int, JournalEntry] = field(default_factory=dict)  # the entry holding each account
    ours: set[int] = field(default_factory=set)  # contacts whose account this try made or recognised
    locked: set[int] = field(default_factory=set)  # contacts whose email another run holds: left alone
    landed: set[int] = field(default_factory=set)  # contacts whose timed-out create was waited out under the lock
    reached_cms: bool = False


class _Batch:
    def __init__(self, rows: list[dict], ctx: BatchContext):
        self.rows = rows
        self.by_id = {r["contact_id"]: r for r in rows}
        self.ctx = ctx
        self.s = _State()
        self.journal: dict[int, list[JournalEntry]] = {}
        self.held = Held(frozenset())
        self.pacer = ctx.pacer or Pacer(sleep=ctx.sleep)
        self.pacer.threads = max(1, ctx.concurrency)
        self.threaded = False
        self._pool: ThreadPoolExecutor | None = None  # the batch's threads, started at the first use
        self._opened: list[CmsBackend] = []  # their own CMS sessions
        self._local = threading.local()  # a thread's own backend
        # CiviCRM and the task state store: one call at a time (re-entrant: a wave's writes nest)
        self._serial = threading.RLock()
        self._links_guard = threading.Lock()  # the links waiting to be written, appended to by the CMS threads
        self._journaled: set[int] = set()  # contacts whose account entry this try has written
        self._mail_decided: set[int] = set()  # contacts whose mail a wave has sent or settled

    # ------------------------------------------------------------------ the whole batch

    def run(self) -> list[dict]:
        if not self.rows:
            return []
        try:
            return self.run_all()
        finally:
            self.stop_threads()

    def run_all(self) -> list[dict]:
        # The emails' locks are held from before anything is read until the links are written: what a pass
        # reads (UFMatch, the journal) and the CMS's duplicate-email answer then show what another run made.
        # First the emails no other run holds, at once; then those it held, after a bounded wait.
        with self.ctx.lock(_creating(self.rows), wait=False) as held:
            self.held = held
            self.create_and_link(self.rows)
            self.let_slow_creates_land()
        if self.s.locked:
            later = [r for r in self.rows if r["contact_id"] in self.s.locked]
            with self.ctx.lock(_creating(later)) as held:
                self.held = held
                self.create_and_link(later)
                self.let_slow_creates_land()
        self.mail()
        self.settle_transient()
        return [self.s.results[r["contact_id"]] for r in self.rows]

    def create_and_link(self, rows: list[dict]) -> None:
        """One pass over `rows` under `self.held`; a contact whose email is not held is left in `s.locked`."""
        self.s.locked = {r["contact_id"] for r in rows if r["action"] == Action.CREATE and r["email"] not in self.held}
        rows = [r for r in rows if r["contact_id"] not in self.s.locked]
        ids = [r["contact_id"] for r in rows]
        if not ids:
            return
        done = self.ctx.linked_accounts(ids)
        self.journal.update(self.ctx.read_journal(ids))
        for row in rows:
            link = done.get(row["contact_id"])
            if link:  # linked by an earlier try: its outcome follows from the plan
                self.made_earlier(row, int(link["uf_id"]))
        todo = [r for r in rows if r["contact_id"] not in self.s.results]
        try:
            for row in todo:
                if row["action"] == Action.LINK:
                    user = CmsUser(uf_id=int(row["uf_id"]), username=row["username"], email=row["email"])
                    adopted = next((e for e in self.journal.get(row["contact_id"], [])
                                    if e.activity_id and e.activity_id == row.get("journal_activity_id")), None)
                    if adopted is not None:  # an account an earlier run made (the plan read its journal)
                        self.s.entries[row["contact_id"]] = adopted.created(user.uf_id, user.username)
                        self.s.ours.add(row["contact_id"])
                    self.linked(row, user, Outcome(row["outcome"]), row["reason"])
            creates = [r for r in todo if r["action"] == Action.CREATE]
            doubtful = [r for r in creates if any(e.pending for e in self.journal.get(r["contact_id"], []))]
            if doubtful:
                self.wait_for_slow_creates(doubtful)
            for row in doubtful:
                self.look_up_first(row)
            self.create_all([r for r in creates if r["contact_id"] not in self.s.results
                             and r["contact_id"] not in self.s.transient])
        finally:
            # Links first, whatever happened: an account is never left unlinked by a raise.
            self.write_links()

    def let_slow_creates_land(self) -> None:
        """A create that timed out may still be running in the CMS: its email stays locked until the slowest
        answer has passed, so no other run's create for it can slip in beside it (once per contact)."""
        fresh = {cid for cid, exc in self.s.transient.items() if exc.code == "timeout"} - self.s.landed
        if fresh:
            log.info("%d creates timed out; keeping their emails locked for %g s (the client timeout) so that no "
                     "other run creates beside them", len(fresh), self.ctx.client_timeout)
            self.ctx.sleep(self.ctx.client_timeout)
            self.s.landed |= fresh

    def made_earlier(self, row: dict, uf_id: int) -> None:
        """A contact an earlier try (or run) linked. The journal knows the account's real login
        (a name taken since planning may have given it a suffix)."""
        entries = self.journal.get(row["contact_id"], [])
        entry = next((e for e in entries if e.uf_id == uf_id), None)
        if entry is None:  # the try died after the link and before the journal heard of the account
            pending = [e for e in entries if e.pending]
            entry = max(pending, key=lambda e: e.activity_id or 0).created(uf_id, pending[-1].usernames[-1]) \
                if pending else None
        username = (entry.username if entry else None) or row.get("username") or ""
        user = CmsUser(uf_id=uf_id, username=username, email=row["email"])
        outcome = Outcome.CREATED if Outcome(row["outcome"]) is Outcome.CREATED else Outcome.LINKED_EXISTING
        self.s.results[row["contact_id"]] = _result(row, outcome, outcomes.linked_by_earlier_try(),
                                                    uf_id=uf_id, username=username)
        self.s.accounts[row["contact_id"]] = user  # its password mail may still be due
        if entry is not None:
            self.s.entries[row["contact_id"]] = entry

    # ------------------------------------------------------------------ doubts from earlier tries

    def wait_for_slow_creates(self, rows: list[dict]) -> None:
        """A CMS may still be storing an account after our client gave up on its create (or after
        the worker that sent it was killed): let the slowest answer pass before the look-up, so a
        second create is never posted beside it."""
        timeout, retry_delay = self.ctx.client_timeout, self.ctx.retry_delay
        timed_out = self.ctx.load_timed_out()
        if timed_out:
            delay = journal.seconds_until(timed_out, max(retry_delay, timeout))
        elif self.ctx.marker and any(self.ctx.marker in e.markers for r in rows
                                     for e in self.journal.get(r["contact_id"], []) if e.pending):
            # a try of this run died with creates in flight; Airflow has waited its retry delay since
            delay = max(0.0, timeout - retry_delay)
        else:
            # another run's: ended long ago, unless it was sent within the slowest answer (runs may overlap, and
            # a worker killed mid-create lost its creation lock at once)
            delay = max((journal.seconds_until(e.sent, timeout) for r in rows
                         for e in self.journal.get(r["contact_id"], []) if e.pending), default=0.0)
        count = len(rows)
        log.info("%d contacts have a create whose answer was never seen; looking them up first%s", count,
                 f" after waiting {delay:.1f} s (client timeout {self.ctx.client_timeout:g} s, retry delay "
                 f"{self.ctx.retry_delay:g} s)" if delay else "")
        if delay:
            self.ctx.sleep(delay)

    def look_up_first(self, row: dict) -> None:
        try:
            user = self.ctx.backend.find_by_email(row["email"])
        except CmsUnavailable as exc:
            self.s.transient[row["contact_id"]] = exc
            return
        if user is not None:
            self.s.reached_cms = True
            self.found(row, user, outcomes.found_after_retry())

    def found(self, row: dict, user: CmsUser, reason_ours: str) -> None:
        """An account with the contact's email: ours (the journal names it) or somebody's."""
        cid = row["contact_id"]
        entry = journal.owner_entry(self.entries_of(cid), user.uf_id, user.username, user.registered)
        if self.ctx.backend.is_admin(user):
            self.s.results[cid] = _result(row, Outcome.FAILED,
                                          outcomes.account_is_administrator(user.username, user.uf_id))
        elif entry is not None:
            self.s.entries[cid] = entry.created(user.uf_id, user.username)
            self.s.ours.add(cid)
            self.linked(row, user, Outcome.CREATED, reason_ours)
        elif self.ctx.on_existing_email == OnExistingEmail.FAIL:
            self.s.results[cid] = _result(row, Outcome.FAILED,
                                          outcomes.existing_email_not_linked(user.username, user.uf_id))
        else:
            self.linked(row, user, Outcome.LINKED_EXISTING, outcomes.EXISTING_ACCOUNT_SAME_EMAIL)

    # ------------------------------------------------------------------ creates

    def create_all(self, rows: list[dict]) -> None:
        if not rows:
            return
        if not isinstance(self.ctx.backend, BulkBackend):
            self.stream(rows)  # records each slice as sending just before its creates may go
            return
        self.write_entries(*self.sending(rows))
        rows = self.create_in_bulk(rows)
        workers = min(max(1, self.ctx.concurrency), len(rows))
        if workers <= 1:
            for n, row in enumerate(rows, 1):
                self.paced_one(row)
                if n % 50 == 0:
                    log.info("batch progress: %d/%d creates", n, len(rows))
        else:
            # the emails are all held already, so no two creates for one email overlap
            self.in_threads(rows, self.paced_one, "creates")

    def sending(self, rows: list[dict]) -> tuple[list[JournalEntry], dict[int, str]]:
        """The journal entries that record these creates as about to be sent, with the subjects of new ones.
        Written before any of them is posted: from then on a kill leaves a trace the next try reads."""
        now = journal.now_utc()
        entries = [self.this_run_entry(row["contact_id"]).sending([row["username"]], now) for row in rows]
        return entries, {row["contact_id"]: outcomes.journal_subject(row["username"]) for row in rows}

    def paced_one(self, row: dict) -> None:
        self.pacer.wait()
        started = self.pacer.clock()
        self.one(row)
        self.pacer.answered(self.pacer.clock() - started)

    # ------------------------------------------------------------------ creates and mails in waves

    def stream(self, rows: list[dict]) -> None:
        """The creates on the CMS threads (`max_concurrency`, one at least) while this thread, every
        WAVE_SECONDS, writes what they made to CiviCRM (links, then the journal with the mails about to go)
        and hands those mails to the threads, which send them before further creates. So the CMS is never
        idle while CiviCRM is written, and a mail still goes only to an account whose link is saved and
        whose mail the journal records as sending. Creates are handed out a slice at a time (FIRST_SLICE),
        each slice recorded as sending in the same journal write, or in one of its own when the threads run
        low before the next wave."""
        work = _Work(len(rows))
        waiting = deque(rows)  # creates not yet recorded as sending
        workers = min(max(1, self.ctx.concurrency), len(rows))
        size = min(MAX_SLICE, FIRST_SLICE * workers)  # released creates the threads are kept supplied with
        self.supply(work, waiting, size)
        threads = [threading.Thread(target=self.work_on, args=(work, workers > 1), name=f"cms-{n}", daemon=True)
                   for n in range(workers)]
        self.threaded = workers > 1
        for thread in threads:
            thread.start()
        try:
            started = time.monotonic()
            next_wave = started + WAVE_SECONDS
            while True:
                work.wake.wait(max(0.0, next_wave - time.monotonic()))
                work.wake.clear()
                if work.error is not None:
                    break
                all_made = work.all_made.is_set()
                running_low = bool(waiting) and work.released() <= size // 2
                if running_low:
                    size = min(MAX_SLICE, 2 * size)
                if all_made or time.monotonic() >= next_wave:
                    self.wave(work, waiting, size)
                    now = time.monotonic()
                    next_wave = now + wave_interval(work.made, len(rows), now - started)
                    log.info("batch progress: %d/%d creates, %d mails sent (%d side by side)", work.made,
                             len(rows), work.mailed, workers)
                    if all_made:
                        break
                elif running_low:
                    self.supply(work, waiting, size)
        except BaseException as exc:
            work.fail(exc)
            raise
        finally:
            work.close()
            for thread in threads:
                thread.join()
            self.threaded = False
            self.after_waves(work)
        if work.error is not None:
            raise work.error

    def supply(self, work: _Work, waiting: deque, size: int, entries: list[JournalEntry] = ()) -> None:
        """Tops the threads' creates up to `size`: the next waiting ones are recorded as sending (in one journal
        write with `entries`, the wave's), then handed out; the threads ask for more below half of `size`."""
        creates = [waiting.popleft() for _ in range(min(len(waiting), max(0, size - work.released())))]
        sending, subjects = self.sending(creates)
        if entries or sending:
            self.write_entries([*entries, *sending], subjects)
        work.release(creates, low_water=size // 2 if waiting else -1)

    def work_on(self, work: _Work, own_session: bool) -> None:
        """One CMS thread: a create, then a mail if one is waiting (its account is linked), and so on, until the
        batch is done."""
        try:
            if own_session:
                self.start_thread()
            after_create = False
            while (item := work.take(after_create)) is not None:
                kind, value = item
                after_create = kind == "create"
                if kind == "create":
                    self.paced_one(value)
                    work.created()
                else:
                    contact_id, user = value
                    self.pacer.wait(back_off=False)
                    try:
                        self.backend().send_password_mail(user)
                    except CmsError as exc:
                        work.sent(contact_id, user, exc)
                    else:
                        work.sent(contact_id, user, None)
        except BaseException as exc:  # noqa: BLE001 - raised by stream() once every thread has stopped
            work.fail(exc)

    def wave(self, work: _Work, waiting: deque, size: int) -> None:
        """Links of the accounts made since the last wave; one journal write for their entries, the mails
        about to go (`sending`), the mails the threads sent since and the next creates (`supply`); then those
        mails and creates go to the threads."""
        with self._serial:
            linked = self.save_new_links()
            entries = {entry.contact_id: entry for entry in self.unjournaled()}
            due = []
            for contact_id in linked:
                user = self.s.accounts.get(contact_id)
                if user is None:
                    continue  # refused: no link, no mail
                self._mail_decided.add(contact_id)
                if self.mail_due(contact_id, user):
                    entries[contact_id] = self.entry_for(contact_id, user).with_mail(journal.MAIL_SENDING)
                    due.append((contact_id, user))
            entries.update(self.mails_sent(work.take_sent()))
            done = self.completed(entries, {contact_id for contact_id, _ in due})
            self.supply(work, waiting, size, [entry for cid, entry in entries.items() if cid not in done])
            self._journaled.update(cid for cid in entries if cid not in done)
        work.add_mails(due)
        self.record(done)  # after the threads have their work: nothing they need waits for it

    def after_waves(self, work: _Work) -> None:
        """The last mails' ledger; mails handed out but never sent (the batch stopped) are recorded as not
        sent, so the retry sends them. A process on its way out (not an Exception: killed, interrupted)
        writes nothing more, as after a kill: what was sending stays in doubt and is never sent again."""
        if work.error is not None and not isinstance(work.error, Exception):
            return
        entries = self.mails_sent(work.take_sent())
        done = self.completed(entries) if work.error is None else {}
        for contact_id, _user in work.take_unsent():
            entries[contact_id] = self.s.entries[contact_id].with_mail("")
            self._mail_decided.discard(contact_id)
            self.s.results[contact_id]["mail"] = None
        if entries:
            try:
                self.write_entries([entry for cid, entry in entries.items() if cid not in done])
                self.record(done)
            except Exception as exc:  # noqa: BLE001 - the batch's own error (if any) is the one raised
                log.warning("could not record %d password mails in the journal (%s): they are treated as in "
                            "doubt and not sent again", len(entries), exc)
                if work.error is None:
                    raise

    def completed(self, entries: dict[int, JournalEntry], mailing: set[int] = frozenset()) -> dict[int, JournalEntry]:
        """The contacts among `entries` whose attempt is over: a success whose mail is decided (sent, failed, or
        not due), not `mailing` now. Empty when the batch does not record outcomes (`record_done`)."""
        if self.ctx.record_done is None:
            return {}
        return {cid: entry for cid, entry in entries.items()
                if cid in self._mail_decided and cid not in mailing
                and Outcome(self.s.results[cid]["outcome"]) in outcomes.SUCCEEDED}

    def record(self, done: dict[int, JournalEntry]) -> None:
        """The completed attempts' last journal write, which gives each its outcome, then history and the trigger
        take-off (`record_done`); the contacts whose records all landed are marked `recorded` for finalize."""
        if not done:
            return
        pairs = []
        for contact_id, entry in done.items():
            result = self.s.results[contact_id]
            pairs.append((entry, outcomes.activity_for(
                result["outcome"], username=result["username"], uf_id=result["uf_id"], uf_name=result["username"],
                reason=result["reason"], mail_note=result["mail"])))
        with self._serial:
            recorded = self.ctx.record_done(pairs)
        self._journaled.update(done)
        for contact_id in recorded:
            self.s.results[contact_id]["recorded"] = True

    def mails_sent(self, sent: list[tuple[int, CmsUser, CmsError | None]]) -> dict[int, JournalEntry]:
        """Each mail's outcome in its contact's result, and the ledger entries that record it."""
        entries = {}
        for contact_id, _user, exc in sent:
            if exc is None:
                self.s.results[contact_id]["mail"] = outcomes.MAIL_SENT
                entries[contact_id] = self.s.entries[contact_id].with_mail(journal.MAIL_SENT)
            else:
                self.s.results[contact_id]["mail"] = outcomes.mail_failed(exc.message)
                entries[contact_id] = self.s.entries[contact_id].with_mail("")  # none went out
        return entries

    # ------------------------------------------------------------------ the batch's threads (max_concurrency)

    def in_threads(self, items: list, work: Callable, what: str) -> None:
        """`work(item)` for every item on the batch's threads, each thread with its own CMS session; a
        run-level error (refused credentials) stops the rest and is raised."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.ctx.concurrency, thread_name_prefix="cms",
                                            initializer=self.start_thread)
            self.threaded = True
        futures = [self._pool.submit(work, item) for item in items]
        try:
            for n, future in enumerate(as_completed(futures), 1):
                future.result()
                if n % 50 == 0:
                    log.info("batch progress: %d/%d %s (%d side by side)", n, len(items), what,
                             self.ctx.concurrency)
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    def start_thread(self) -> None:
        if self.ctx.open_backend is not None:
            self._local.backend = self.ctx.open_backend()
            with self._serial:
                self._opened.append(self._local.backend)

    def stop_threads(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool, self.threaded = None, False
        for backend in self._opened:
            backend.close()
        self._opened = []

    def create_in_bulk(self, rows: list[dict]) -> list[dict]:
        """Many creates per call (BulkBackend); returns the rows the one-by-one path must finish: those
        whose answer was a conflict or a doubt, which that path resolves with suffixes and look-ups."""
        backend = self.ctx.backend
        size = max(1, int(backend.bulk_size))
        left: list[dict] = []
        for start in range(0, len(rows), size):
            chunk = rows[start:start + size]
            self.pacer.wait()
            try:
                self.held.confirm()  # the locks' session still lives (else LockLost: transient)
                answers = backend.create_users([_new_user(row) for row in chunk])
            except CmsUnavailable as exc:
                self.bulk_call_failed(chunk, exc)
                continue
            self.s.reached_cms = True
            for row, answer in zip(chunk, answers, strict=True):
                cid = row["contact_id"]
                if isinstance(answer, CmsUser):
                    self.s.entries[cid] = self.s.entries[cid].created(answer.uf_id, answer.username)
                    self.s.ours.add(cid)
                    self.linked(row, answer, Outcome.CREATED, outcomes.reason_created())
                elif isinstance(answer, (CmsDuplicateLogin, CmsDuplicateEmail, CmsUnavailable)) or (
                        isinstance(answer, CmsRejected) and answer.status == 500):
                    left.append(row)
                else:
                    self.s.results[cid] = _result(row, Outcome.FAILED, outcomes.cms_rejected(answer.message))
            log.info("batch progress: %d/%d creates sent in bulk", min(start + size, len(rows)), len(rows))
        return left

    def bulk_call_failed(self, chunk: list[dict], exc: CmsUnavailable) -> None:
        """A bulk call died (connection dropped, timeout): any of its creates may have been made. After a
        timeout the call may still be running, so the next try looks (after waiting it out); otherwise
        look now, and leave the rest for the next try, which looks again before it sends anything."""
        for row in chunk:
            self.s.transient[row["contact_id"]] = exc
        if exc.code == "timeout":
            self.timed_out()
            return
        if exc.status == 429 or exc.retry_after is not None:
            self.pause(exc)
            return
        try:
            found = self.ctx.backend.find_users([row["email"] for row in chunk], [])
        except CmsUnavailable:
            return
        by_email = {user.email.strip().lower(): user for user in found}
        for row in chunk:
            user = by_email.get(row["email"].strip().lower())
            if user is not None:
                self.s.reached_cms = True
                self.found(row, user, outcomes.found_after_doubt())

    def this_run_entry(self, contact_id: int) -> JournalEntry:
        """The entry this run keeps for the contact: the one an earlier try wrote, or a new one."""
        known = self.s.entries.get(contact_id)
        if known is not None:
            return known
        for entry in self.journal.get(contact_id, []):
            if entry.status == "Scheduled" and entry.uf_id is None:
                return entry  # an attempt still under way (this run's, or one a dead run left open)
        return JournalEntry(contact_id=contact_id)

    def write_entries(self, entries: list[JournalEntry], subjects: dict[int, str] | None = None) -> None:
        with self._serial:
            written = self.ctx.write_journal(entries, subjects or {})
            for cid, entry in written.items():
                self.s.entries[cid] = entry

    def backend(self) -> CmsBackend:
        """The CMS session of this thread: a creating thread's own, else the batch's."""
        return getattr(self._local, "backend", None) or self.ctx.backend

    def timed_out(self) -> None:
        with self._serial:
            self.ctx.store_timed_out(journal.now_utc())

    def one(self, row: dict) -> None:
        try:
            self.held.confirm()  # the locks' session still lives (else LockLost: transient)
            self.create(row)
        except CmsUnavailable as exc:
            self.s.transient[row["contact_id"]] = exc
            if exc.status == 429 or exc.retry_after is not None:
                self.pause(exc)
        except (CmsAuthError, CmsConfigError):
            raise
        except CmsError as exc:
            self.s.reached_cms = True
            self.s.results[row["contact_id"]] = _result(row, Outcome.FAILED, outcomes.cms_rejected(exc.message))

    def send_mails(self, users: list[CmsUser]) -> dict[int, CmsError]:
        """The password-set mails of these accounts: side by side when the batch has threads (one call for a
        bulk backend); uf_id -> why not, for those the CMS did not send."""
        if isinstance(self.ctx.backend, BulkBackend) or self.ctx.concurrency <= 1 or len(users) <= 1:
            return send_password_mails(self.ctx.backend, users)
        failed: dict[int, CmsError] = {}

        def send(user: CmsUser) -> None:
            self.pacer.wait(back_off=False)
            try:
                self.backend().send_password_mail(user)
            except CmsError as exc:
                failed[user.uf_id] = exc

        self.in_threads(users, send, "mails")
        return failed

    def pause(self, exc: CmsUnavailable) -> None:
        """The CMS asked us to slow down: stop sending for that long (bounded) instead of pressing on."""
        wait = min(MAX_PAUSE, exc.retry_after if exc.retry_after is not None else DEFAULT_PAUSE)
        log.info("the CMS asked to slow down (%s); pausing the batch for %.1f s", exc.message, wait)
        if self.threaded:  # every thread stops: the others wait in the pacer before their next request
            wait = self.pacer.pause(wait)
        self.ctx.sleep(wait)

    def create(self, row: dict) -> None:
        backend = self.backend()
        cid = row["contact_id"]
        base = row.get("username_base") or row["username"]
        username = row["username"]
        taken: set[str] = set()
        retried_500 = False
        for _ in range(USERNAME_TRIES):
            try:
                request = _new_user(row, username)
                user = backend.create_user(**{**vars(request), "roles": list(request.roles)})
                self.s.reached_cms = True
                self.s.entries[cid] = self.s.entries[cid].created(user.uf_id, user.username)
                self.s.ours.add(cid)
                self.linked(row, user, Outcome.CREATED, outcomes.reason_created())
                return
            except CmsDuplicateLogin:
                self.s.reached_cms = True
                taken.add(username.lower())
                # the next suffix of the planned base (jane.doe2, jane.doe3), recorded before it is sent;
                # the refused name leaves the journal: that account is somebody else's
                username = next_candidate(base, taken, backend.rules.max_username_length)
                self.write_entries([self.s.entries[cid].sending([username], journal.now_utc())])
            except (CmsDuplicateEmail, CmsUnavailable) as exc:
                timed_out = isinstance(exc, CmsUnavailable) and exc.code == "timeout"
                if timed_out:
                    self.timed_out()
                if isinstance(exc, CmsUnavailable) and (exc.status == 429 or exc.retry_after is not None):
                    raise  # refused before it was processed: nothing to look for
                # Doubt: the account may exist (ours, with a lost answer, or somebody's made since planning).
                # A create that timed out may still be running: it is not posted again in this try.
                user = backend.find_by_email(row["email"])
                if user is not None:
                    self.s.reached_cms = True
                    self.found(row, user, outcomes.found_after_doubt())
                    return
                if isinstance(exc, CmsUnavailable):
                    raise
                self.s.reached_cms = True
                raise CmsRejected(exc.status, exc.code, outcomes.duplicate_email_not_found()) from exc
            except CmsRejected as exc:
                self.s.reached_cms = True
                if exc.status != 500 or retried_500:
                    raise
                # An unexplained 500: look before trying once more (contract §7).
                retried_500 = True
                user = backend.find_by_email(row["email"])
                if user is not None:
                    self.found(row, user, outcomes.found_after_doubt())
                    return
        self.s.results[cid] = _result(row, Outcome.FAILED, outcomes.username_taken(base, USERNAME_TRIES))

    def linked(self, row: dict, user: CmsUser, outcome: Outcome, reason: str) -> None:
        self.s.accounts[row["contact_id"]] = user
        with self._links_guard:
            self.s.links.append({"contact_id": row["contact_id"], "uf_id": user.uf_id, "uf_name": row["email"]})
        self.s.results[row["contact_id"]] = _result(row, outcome, reason, uf_id=user.uf_id,
                                                    username=user.username)

    # ------------------------------------------------------------------ links

    def write_links(self) -> None:
        with self._serial:
            self.save_new_links()
            made = self.unjournaled()
            if made:
                self.write_entries(made)
                self._journaled.update(entry.contact_id for entry in made)

    def unjournaled(self) -> list[JournalEntry]:
        """The accounts we made (or recognised) whose entry this try has not written: by id, into the journal,
        linked or not, so the next try or run knows them as ours without a look-up, even when CiviCRM
        refused the link just now."""
        return [self.s.entries[cid] for cid in sorted(self.s.ours - self._journaled)]

    def save_new_links(self) -> list[int]:
        """Write the links found since the last write; returns their contacts (refused ones included)."""
        with self._links_guard:
            links, self.s.links = self.s.links, []
        if not links:
            return []
        # Every link, whatever path found its account, gets the plan's check: never an account
        # CiviCRM already links to another contact.
        owners: dict[int, set[int]] = {}
        for row in self.ctx.links_for(sorted({link["uf_id"] for link in links})):
            owners.setdefault(int(row["uf_id"]), set()).add(int(row["contact_id"]))
        safe = []
        for link in links:
            others = owners.get(int(link["uf_id"]), set()) - {link["contact_id"]}
            if others:
                self.refuse(link["contact_id"], outcomes.account_linked_to_other(
                    self.s.results[link["contact_id"]].get("username"), link["uf_id"], min(others)))
            else:
                safe.append(link)
        errors = self.ctx.save_links(safe) if safe else {}
        for contact_id, error in errors.items():
            self.refuse(contact_id, outcomes.link_failed(self.s.results[contact_id].get("username"), error))
        return [link["contact_id"] for link in links]

    def refuse(self, contact_id: int, reason: str) -> None:
        result = self.s.results[contact_id]
        result.update(outcome=str(Outcome.FAILED), reason=reason)
        self.s.accounts.pop(contact_id, None)

    # ------------------------------------------------------------------ mails

    def mail(self) -> None:
        """The CMS's password-set mail, once per account we created, after its link is safe.

        The journal is the ledger, across tries, workers and runs: an account recorded as
        "sending" by a try that died is never mailed again (a second mail would void the first
        link), and one recorded as sent is never mailed again.
        """
        due = [(contact_id, user) for contact_id, user in self.s.accounts.items()
               if contact_id not in self._mail_decided and self.mail_due(contact_id, user)]
        size, start = MAIL_CHUNK * max(1, self.ctx.concurrency), 0
        while start < len(due):
            chunk = due[start:start + size]
            start += len(chunk)
            began = self.pacer.clock()
            self.write_entries([self.entry_for(cid, user).with_mail(journal.MAIL_SENDING) for cid, user in chunk])
            try:
                failed = self.send_mails([user for _, user in chunk])
            except CmsError as exc:  # a bulk call that died: which mails went out is unknown, none is resent
                log.warning("the password mails of %d accounts are in doubt: %s", len(chunk), exc.message)
                for contact_id, _ in chunk:
                    self.s.results[contact_id]["mail"] = outcomes.mail_in_doubt(exc.message)
                continue
            finished = self.mails_sent([(contact_id, user, failed.get(user.uf_id)) for contact_id, user in chunk])
            self.write_entries(list(finished.values()))
            size = next_mail_chunk(len(chunk), self.pacer.clock() - began)

    def mail_due(self, contact_id: int, user: CmsUser) -> bool:
        """Whether the account's password mail is to be sent now; if not, its result says why (when it is
        one we created)."""
        result = self.s.results[contact_id]
        if result["outcome"] != Outcome.CREATED:
            return False
        state = journal.mail_state(self.entries_of(contact_id), user.uf_id)
        if not self.ctx.notify:
            result["mail"] = outcomes.MAIL_OFF
        elif self.by_id[contact_id].get("do_not_email"):
            result["mail"] = outcomes.MAIL_DO_NOT_EMAIL
        elif state == journal.MAIL_SENT:
            result["mail"] = outcomes.MAIL_SENT_EARLIER
        elif state == journal.MAIL_SENDING:
            result["mail"] = outcomes.MAIL_UNKNOWN
        else:
            return True
        return False

    def entries_of(self, contact_id: int) -> list[JournalEntry]:
        """The contact's journal as read at the start, plus what this try has written since."""
        current = self.s.entries.get(contact_id)
        return self.journal.get(contact_id, []) + ([current] if current is not None else [])

    def entry_for(self, contact_id: int, user: CmsUser) -> JournalEntry:
        """The journal entry that holds this account (one is started for accounts without any)."""
        entry = self.s.entries.get(contact_id)
        if entry is None or entry.uf_id != user.uf_id:
            entry = next((e for e in self.journal.get(contact_id, []) if e.uf_id == user.uf_id), None)
        return entry or JournalEntry(contact_id=contact_id).created(user.uf_id, user.username)

    # ------------------------------------------------------------------ the end

    def settle_transient(self) -> None:
        for contact_id in list(self.s.transient):
            if contact_id in self.s.results:  # settled after all (e.g. found by a later look-up)
                del self.s.transient[contact_id]
        for contact_id, result in self.s.results.items():
            result["journal_activity_id"] = getattr(self.s.entries.get(contact_id), "activity_id", None)
        locked = self.settle_locked()
        if not self.s.transient:
            if locked:
                raise BatchIncomplete(f"{locked}; the rest of the batch is done and linked, and the task will retry them")
            return
        first = next(iter(self.s.transient.values()))
        if not self.ctx.final_try or not self.s.reached_cms:
            raise BatchIncomplete(
                f"{len(self.s.transient)} of {len(self.rows)} contacts could not be created because the CMS "
                f"is unavailable ({first.message}){'; ' + locked if locked else ''}; the rest of the batch is "
                "done and linked, and the task will retry them")
        for contact_id, exc in self.s.transient.items():
            self.s.results[contact_id] = _result(self.by_id[contact_id], Outcome.FAILED,
                                                 outcomes.cms_error_after_retries(exc.message))
            self.s.results[contact_id]["journal_activity_id"] = getattr(
                self.s.entries.get(contact_id), "activity_id", None)


    def settle_locked(self) -> str:
        """Contacts whose email another run kept locked: on the last try `deferred` (the next run creates or
        finds the account, no attempt counted); before it, what the retry is for."""
        if not self.s.locked:
            return ""
        if self.ctx.final_try:
            reason = outcomes.email_locked_elsewhere(getattr(self.ctx.lock, "wait_seconds", None))
            for contact_id in self.s.locked:
                self.s.results[contact_id] = _result(self.by_id[contact_id], Outcome.DEFERRED, reason)
            return ""
        return (f"{len(self.s.locked)} of {len(self.rows)} contacts wait for another run or worker creating an "
                "account for their email")


def create_batch(rows: list[dict], ctx: BatchContext) -> list[dict]:
    """Create or link every contact of the batch; one result dict per row, in order."""
    return _Batch(rows, ctx).run()
