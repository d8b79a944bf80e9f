"""The creation lock's connection and store: what a missing or wrong connection does, the in-process
sandbox lock, and, on the real PostgreSQL (127.0.0.1:5432, role postgres, database cmsuser_lock_test),
the advisory locks themselves and the proof that they stop duplicates.

The proof: two runs create the same contacts at once through create_batch against the WordPress emulator
with its duplicate-check window widened. Without the lock they make two accounts for an email; with it,
never. Creates for different emails still run side by side.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time

import pytest

from cms_operators.wordpress.backend import WordPressBackend
from lock_hooks.hook import CreationLockHook
from lock_hooks.store import PostgresLockStore
from pipeline.batch import BatchContext, create_batch
from pipeline.locks import EmailLocks, LockError, LockUnavailable, ProcessLockStore, lock_key
from provisioning import outcomes
from sandbox.real_airflow import PG_HOST, PG_PORT, PG_USER, postgres_available
from tests import real_wordpress as wp_fixtures
from tests.conftest import need_services
from tests.pipeline.test_batch import FakeJournal, FakeUFMatch, batch_of, person

wordpress = wp_fixtures.wordpress
cms_conn = wp_fixtures.cms_conn

DATABASE = "cmsuser_lock_test"  # this tier's own; nothing in it but sessions and their advisory locks
GAP = 0.4  # seconds the emulator keeps between its duplicate checks and the INSERT
JOURNAL_DELAY = 0.3  # seconds CiviCRM takes to store a journal entry


# ------------------------------------------------------------------------------ the connection (no PostgreSQL)


def test_without_the_connection_nothing_can_be_locked_and_the_error_says_what_to_do(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_CMSUSER_LOCK", raising=False)
    hook = CreationLockHook()
    with pytest.raises(LockError) as caught:
        hook.open_store()
    assert not isinstance(caught.value, LockUnavailable)  # configuration: not retried
    message = caught.value.message
    for part in ("no Airflow connection 'cmsuser_lock'", "type postgres", "in_process", "lock_conn_id"):
        assert part in message
    assert hook.test_connection() == (False, message)


def test_a_connection_of_another_type_is_refused(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MY_LOCK", json.dumps({"conn_type": "http", "host": "https://example.org"}))
    with pytest.raises(LockError, match="connection 'my_lock' is of type 'http'; the creation lock needs type postgres"):
        CreationLockHook("my_lock").open_store()


def test_the_in_process_lock_is_only_for_sandboxes_and_says_so_each_time(monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW_CONN_CMSUSER_LOCK",
                       json.dumps({"conn_type": "generic", "extra": {"in_process": "true"}}))
    hook = CreationLockHook()
    store = hook.open_store()
    assert isinstance(store, ProcessLockStore)
    store.close()
    ok, message = hook.test_connection()
    assert ok and "this one Python process only" in message
    assert caplog.text.count("NO protection between workers") == 2


def test_unreachable_postgresql_is_transient_and_names_the_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CMSUSER_LOCK", json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": 9, "login": "nobody", "password": "s3cret-pw",
        "schema": "x", "extra": {"connect_timeout": 2}}))
    with pytest.raises(LockUnavailable) as caught:
        CreationLockHook().open_store()
    assert "connection 'cmsuser_lock'" in caught.value.message and "127.0.0.1:9/x" in caught.value.message
    assert "s3cret-pw" not in caught.value.message


# ------------------------------------------------------------------------------ the real PostgreSQL


@pytest.fixture(scope="module")
def lock_database():
    need_services("creation-lock", postgres_available())
    import psycopg2

    admin = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        admin.close()
    return {"conn_type": "postgres", "host": PG_HOST, "port": PG_PORT, "login": PG_USER, "schema": DATABASE}


@pytest.fixture
def lock_conn(lock_database, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CMSUSER_LOCK", json.dumps(lock_database))
    return CreationLockHook()


def _pid(store: PostgresLockStore) -> int:
    with store.connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def test_sessions_exclude_each_other_per_key_and_release_on_unlock_and_close(lock_conn):
    first, second = lock_conn.open_store(), lock_conn.open_store()
    assert isinstance(first, PostgresLockStore) and "PostgreSQL advisory locks at 127.0.0.1:5432/" in first.description
    try:
        ada, grace = lock_key("ada@example.org"), lock_key("grace@example.org")
        assert first.try_lock([ada, grace]) == {ada, grace}
        assert second.try_lock([ada, grace, lock_key("alan@example.org")]) == {lock_key("alan@example.org")}
        first.unlock([ada])
        assert second.try_lock([ada, grace]) == {ada}
        first.close()  # ends the session: grace is free
        assert second.try_lock([grace]) == {grace}
    finally:
        first.close()
        second.close()


@contextlib.contextmanager
def _sessions(lock_conn, lock_database, driver: str):
    """The holder's store (the hook's psycopg 3 one, or psycopg2's), another run's, and a plain session to end it."""
    import psycopg2

    holder = _psycopg2_store(lock_database) if driver == "psycopg2" else lock_conn.open_store()
    other = lock_conn.open_store()
    killer = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=DATABASE)
    killer.autocommit = True
    try:
        yield holder, other, killer
    finally:
        killer.close()
        holder.close()
        other.close()


def _end_session(killer, pid: int, other: PostgresLockStore, key: int) -> None:
    """PostgreSQL ends session `pid` (pg_terminate_backend), and `other` gets its lock on `key` once it is gone."""
    with killer.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 5
    while other.try_lock([key]) != {key}:
        assert time.monotonic() < deadline, "the ended session's lock was never released"
        time.sleep(0.05)


def _psycopg2_store(lock_database) -> PostgresLockStore:
    import psycopg2

    return PostgresLockStore(psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER,
                                              dbname=lock_database["schema"]), "psycopg2 session")


@pytest.mark.parametrize("driver", ["psycopg 3 (the hook's)", "psycopg2"])
def test_a_dead_session_leaves_no_stale_lock_and_its_holder_learns_it_before_the_next_create(lock_conn, lock_database,
                                                                                            driver):
    """A worker killed mid-batch, or a dropped connection: PostgreSQL ends the session and its locks. The holder's
    confirm finds out, whether it is psycopg 3's protocol Sync (no transaction) or psycopg2's `SELECT 1`."""
    with _sessions(lock_conn, lock_database, driver) as (holder, other, killer):
        holder.max_age = 0.0  # every confirm asks the server (the next tests cover what a recent answer spares)
        # the hook's store confirms with a bare Sync; psycopg2 has no pipeline mode
        assert (holder._libpq is None) == (driver == "psycopg2")
        pid = _pid(holder)
        key = lock_key("ada@example.org")
        assert holder.try_lock([key]) == {key}
        holder.confirm()  # alive: answers
        holder.confirm()
        grace = lock_key("grace@example.org")  # the session is left as it was: its next statement runs
        assert holder.try_lock([grace]) == {grace}
        holder.unlock([grace])
        holder.confirm()
        with killer.cursor() as cur:  # what the holder's session last ran: a Sync runs no statement
            cur.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,))
            last = cur.fetchone()[0]
        assert last == "SELECT 1" if driver == "psycopg2" else last.startswith("SELECT pg_advisory_unlock"), last
        assert other.try_lock([key]) == set()
        _end_session(killer, pid, other, key)
        with pytest.raises(LockUnavailable):
            holder.confirm()


def test_confirms_within_the_max_age_of_an_answer_ask_nothing_and_threads_share_one_round_trip(lock_conn,
                                                                                                monkeypatch):
    from lock_hooks import store as store_module

    asked = []
    real_sync = store_module.sync_once

    def counted(pgconn, timeout=store_module.CONFIRM_TIMEOUT):
        asked.append(threading.get_ident())
        time.sleep(0.05)  # a server slow to answer: the other threads arrive while it is under way
        real_sync(pgconn, timeout)

    monkeypatch.setattr(store_module, "sync_once", counted)
    holder = lock_conn.open_store()
    try:
        assert holder.max_age == store_module.CONFIRM_MAX_AGE
        key = lock_key("ada@example.org")
        holder.max_age = 60.0
        assert holder.try_lock([key]) == {key}  # an answer: the session lived when it was sent
        for _ in range(3):
            holder.confirm()
        assert asked == []

        holder.max_age = 0.0  # too old: the next confirm asks
        holder.confirm()
        assert len(asked) == 1

        holder.max_age = 30.0
        holder._answered_at = float("-inf")  # no answer yet: eight threads confirm at once
        start = threading.Barrier(8)

        def confirm():
            start.wait()
            holder.confirm()

        threads = [threading.Thread(target=confirm) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(asked) == 2, "the threads behind the first round trip take its answer"
    finally:
        holder.close()


@pytest.mark.parametrize("driver", ["psycopg 3 (the hook's)", "psycopg2"])
def test_a_session_the_server_ends_fails_the_next_confirm_however_recent_its_last_answer(lock_conn, lock_database,
                                                                                         driver):
    """pg_terminate_backend (as a shutdown, a crash or idle_session_timeout): PostgreSQL tells the client before it
    lets the locks go, and the next confirm sees that at once instead of trusting the answer before."""
    with _sessions(lock_conn, lock_database, driver) as (holder, other, killer):
        holder.max_age = 3600.0
        pid = _pid(holder)
        key = lock_key("ada@example.org")
        assert holder.try_lock([key]) == {key}
        holder.confirm()
        _end_session(killer, pid, other, key)
        with pytest.raises(LockUnavailable):
            holder.confirm()


def test_a_confirm_the_server_never_answers_ends_in_time_as_unavailable():
    """A server that stopped answering (a network partition, a hung host): the confirm gives up after its timeout
    instead of holding the batch's thread for ever, and the batch counts its locks as lost."""
    import socket

    from psycopg import pq

    from lock_hooks import store

    class Silent:  # a libpq connection whose server never answers: its socket never becomes readable
        def __init__(self, fd):
            self.socket, self.status = fd, pq.ConnStatus.OK
            self.pipeline_status = pq.PipelineStatus.OFF

        def enter_pipeline_mode(self):
            self.pipeline_status = pq.PipelineStatus.ON

        def exit_pipeline_mode(self):
            self.pipeline_status = pq.PipelineStatus.OFF

        def pipeline_sync(self):
            pass

        def flush(self):
            return 0

        def is_busy(self):
            return 1

    ours, theirs = socket.socketpair()
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            store.sync_once(Silent(ours.fileno()), timeout=0.2)
        assert 0.2 <= time.monotonic() - started < 5
        holder = PostgresLockStore.__new__(PostgresLockStore)
        holder.description = "PostgreSQL advisory locks at nowhere"
        assert isinstance(holder._error(TimeoutError("no answer")), LockUnavailable)
    finally:
        ours.close()
        theirs.close()


def test_preflight_check_takes_and_releases_the_probe(lock_conn):
    assert lock_conn.check().startswith("PostgreSQL advisory locks at 127.0.0.1:5432/cmsuser_lock_test")
    assert lock_conn.test_connection()[0] is True


class _GrantAll:
    """The lock switched off: every session gets every key (what a run had before the creation lock)."""

    description = "no lock"

    def try_lock(self, keys):
        return set(keys)

    def unlock(self, keys):
        pass

    def confirm(self):
        pass

    def close(self):
        pass


class _SharedCiviCRM:
    """The UFMatch table and the journal both runs read and write (CiviCRM's, in production). Storing a
    journal entry takes JOURNAL_DELAY, so both runs read the journal before the other's entry lands: no
    re-check can see the other run coming, only the lock."""

    def __init__(self):
        self.ufmatch, self.journal, self.guard = FakeUFMatch(), FakeJournal(), threading.Lock()

    def write(self, entries, subjects):
        time.sleep(JOURNAL_DELAY)
        with self.guard:
            return self.journal.write(entries, subjects)

    def __getattr__(self, name):
        owner = self.ufmatch if hasattr(self.ufmatch, name) else self.journal
        method = getattr(owner, name)

        def locked(*args, **kwargs):
            with self.guard:
                return method(*args, **kwargs)
        return locked


def _run_at_once(batches: list[list[dict]], civicrm: _SharedCiviCRM, locks: EmailLocks) -> tuple[list, float]:
    """Each batch in a thread of its own (a run of its own: its own CMS session), started together."""
    barrier, results, errors = threading.Barrier(len(batches)), [None] * len(batches), []

    def one(index: int, rows: list[dict]) -> None:
        backend = WordPressBackend("cms_default")
        ctx = BatchContext(backend=backend, linked_accounts=civicrm.linked_accounts, save_links=civicrm.save_links,
                           read_journal=civicrm.read, write_journal=civicrm.write, links_for=civicrm.links_for,
                           marker=f"[Airflow run run{index}]", notify=False, lock=locks)
        barrier.wait()
        try:
            results[index] = create_batch(copy.deepcopy(rows), ctx)
        except BaseException as exc:  # reported below, with the thread's name
            errors.append(exc)
        finally:
            backend.close()

    started = time.monotonic()
    threads = [threading.Thread(target=one, args=(i, rows), name=f"run{i}") for i, rows in enumerate(batches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return results, time.monotonic() - started


CONTACTS = [person(10 + n, first, "Example") for n, first in enumerate(["Ann", "Bob", "Cleo", "Dan", "Eve"])]


def _accounts_per_email(wordpress) -> dict[str, int]:
    counts: dict[str, int] = {}
    for user in wordpress.users:
        if user["email"].endswith("@example.org"):
            counts[user["email"]] = counts.get(user["email"], 0) + 1
    return counts


def test_without_the_lock_two_runs_make_duplicates_with_it_never(lock_conn, wordpress, cms_conn):
    """The same five contacts in two runs at once (the nightly and the real-time DAG, say)."""
    rows = batch_of(*CONTACTS)
    wordpress.widen_duplicate_check(GAP)

    # 1. the lock switched off: WordPress's unguarded window lets both runs create each account
    _run_at_once([rows, rows], _SharedCiviCRM(), EmailLocks(_GrantAll, wait_seconds=0))
    unguarded = _accounts_per_email(wordpress)
    assert len(unguarded) == 5
    assert max(unguarded.values()) == 2, f"the test's race never happened, so it proves nothing: {unguarded}"

    # 2. the same, on a clean site, with the creation lock of the connection (PostgreSQL)
    for user in wordpress.users:
        if user["email"].endswith("@example.org"):
            wordpress._delete_user(user["id"])
    civicrm = _SharedCiviCRM()
    results, _ = _run_at_once([rows, rows], civicrm, lock_conn.email_locks(wait_seconds=60))
    assert _accounts_per_email(wordpress) == {c["email"]: 1 for c in CONTACTS}
    accounts = {u["email"]: u["id"] for u in wordpress.users}
    assert {cid: row["uf_id"] for cid, row in civicrm.ufmatch.rows.items()} == {
        c["contact_id"]: accounts[c["email"]] for c in CONTACTS}
    # one run made them; the other waited, read the links and made nothing
    reasons = sorted({r["reason"] for r in results[0]} | {r["reason"] for r in results[1]})
    assert reasons == sorted({outcomes.reason_created(), outcomes.linked_by_earlier_try()})
    assert all(r["outcome"] == "created" for batch in results for r in batch)


def test_creates_for_different_emails_do_not_wait_for_each_other(lock_conn, wordpress, cms_conn):
    wordpress.widen_duplicate_check(GAP)
    first, second = batch_of(*CONTACTS[:2]), batch_of(*CONTACTS[2:4])
    results, seconds = _run_at_once([first, second], _SharedCiviCRM(), lock_conn.email_locks(wait_seconds=60))
    assert [r["outcome"] for batch in results for r in batch] == ["created"] * 4
    # each run's two creates take at least 2 x GAP; one after the other would take 4 x GAP
    assert seconds < 3.5 * GAP + 3 * JOURNAL_DELAY, f"{seconds:.2f} s: the runs waited for each other"
